"""Replace the rows of some methods in a results folder by those of a newer run on the same folds and prompts.

Usage: ``python benchmarks/merge_rows.py RESULTS NEW [--note TEXT]``. ``RESULTS`` (a ``tl.benchmark`` output folder,
changed in place) keeps its rows of every method that ``NEW`` does not have; the rows of the methods ``NEW`` has
are ``NEW``'s, on ``RESULTS``' draws (fold, section, protocol, fraction, seed, spots): ``NEW`` may hold more draws
(e.g. more fractions), but must hold every draw ``RESULTS`` has of the methods it replaces (else nothing is
written). ``results.csv``, the per-fold files and ``summary.csv`` are written
again, and ``protocol.json`` records the merge (``merged``: the note, and which methods came from the newer run).
Used when only the model's rows change (a change to the in-context layer) and the baselines' code has not.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd

from phg2st_sc.tl import summarise

DRAW = ["fold", "section", "protocol", "prompt_fraction", "seed", "spots"]


def merge(results: Path, new: Path, note: str) -> pd.DataFrame:
    old = pd.read_csv(results / "results.csv")
    fresh = pd.read_csv(new / "results.csv")
    old_draw, fresh_draw = old[DRAW].apply(tuple, axis=1), fresh[DRAW].apply(tuple, axis=1)
    on_old = fresh_draw.isin(set(old_draw))
    fresh, fresh_draw = fresh[on_old], fresh_draw[on_old]
    methods = sorted(fresh.method.unique())
    for m in methods:  # every row of a replaced method must have its newer row
        missing = set(old_draw[old.method == m]) - set(fresh_draw[fresh.method == m])
        if missing:
            raise SystemExit(f"{len(missing)} draws of {m} in {results} are not in {new}: not merged")
    kept = old[~old.method.isin(methods)]
    columns = [*old.columns, *(c for c in fresh.columns if c not in old.columns)]  # newer columns kept
    out = pd.concat([kept.reindex(columns=columns), fresh.reindex(columns=columns)], ignore_index=True)
    rank = {
        c: {v: i for i, v in enumerate(dict.fromkeys([*old[c], *fresh[c]]))} for c in ["fold", "protocol", "method"]
    }
    key = out[["fold", "section", "protocol", "prompt_fraction", "seed", "method"]].copy()
    for c, r in rank.items():
        key[c] = key[c].map(r)
    out = out.loc[key.sort_values(list(key.columns), kind="stable").index]
    out.to_csv(results / "results.csv", index=False)
    for fold, rows in out.groupby("fold", sort=False):
        rows.to_csv(results / f"fold_{fold}.csv", index=False)
    summarise(out).to_csv(results / "summary.csv", index=False)
    record = json.loads((results / "protocol.json").read_text())
    record["merged"] = f"{note}; rows of {', '.join(methods)} from the newer run, the others as they were"
    (results / "protocol.json").write_text(json.dumps(record, indent=1) + "\n")
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("results")
    ap.add_argument("new")
    ap.add_argument("--note", default="")
    args = ap.parse_args()
    out = merge(Path(args.results), Path(args.new), args.note)
    print(f"{len(out)} rows written to {args.results}")


if __name__ == "__main__":
    main()
