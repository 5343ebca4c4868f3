"""Match the GP rows made again with the fixed code (run.sh) with every recorded results folder that has GP rows.

A recorded draw is compared only where the mean of its prompts (the ``mean`` rows: MAE and PCC) is reproduced within
1e-6, i.e. the prompts are those of the record (designs made by older code are not; runs on another machine differ
by about 1e-9 in the float32 sums). Writes ``draws.csv`` (one row per recorded
GP draw and spots scored) and ``cells.csv`` (per record, targets and fraction: the mean held-out PCC before and after, over the draws compared)
and prints the largest changes.

Usage: ``compare.py RERUN_FOLDER RESULTS_FOLDER --out FOLDER``
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd

DRAW = ["dataset", "strategy", "section", "protocol", "prompt_fraction", "seed", "spots"]


def _rows(folder: Path) -> pd.DataFrame:
    protocol = json.loads((folder / "protocol.json").read_text())
    rows = pd.read_csv(folder / "results.csv")
    rows["dataset"] = protocol["dataset"]
    rows["strategy"] = protocol.get("prompt_strategy") or "random"
    return rows[rows.method.isin(["mean", "gp"])]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("rerun")
    p.add_argument("results")
    p.add_argument("--out", required=True)
    args = p.parse_args()
    rerun = pd.concat([_rows(f.parent) for f in sorted(Path(args.rerun).glob("*/results.csv"))])
    rerun = rerun.drop_duplicates(DRAW + ["method"]).set_index(DRAW + ["method"])
    draws = []
    for f in sorted(Path(args.results).glob("*/results.csv")):
        if not (f.parent / "protocol.json").exists():
            continue
        rec = _rows(f.parent)
        if not (rec.method == "gp").any():
            continue
        rec = rec.set_index(DRAW + ["method"])
        gp, mean = rec.xs("gp", level="method"), rec.xs("mean", level="method")
        found = gp.index.isin(rerun.xs("gp", level="method").index)
        same = np.zeros(len(gp), dtype=bool)
        new_mean = rerun.xs("mean", level="method").reindex(mean.index)
        ok = (np.abs(new_mean.pcc - mean.pcc) < 1e-6) & (np.abs(new_mean.mae - mean.mae) < 1e-6)
        same[found] = ok.reindex(gp.index[found]).fillna(False).to_numpy()
        after = rerun.xs("gp", level="method").reindex(gp.index)
        draws.append(
            pd.DataFrame(
                {
                    "record": f.parent.name,
                    **{k: gp.index.get_level_values(k) for k in DRAW},
                    "rerun": found,
                    "same_draw": same,
                    "pcc_before": gp.pcc.to_numpy(),
                    "pcc_after": np.where(same, after.pcc, np.nan),
                    "mae_before": gp.mae.to_numpy(),
                    "mae_after": np.where(same, after.mae, np.nan),
                }
            )
        )
    draws = pd.concat(draws, ignore_index=True)
    draws["dpcc"] = draws.pcc_after - draws.pcc_before
    out = Path(args.out)
    draws.to_csv(out / "draws.csv", index=False)
    held = draws[draws.spots == "heldout"].assign(compared_before=lambda d: d.pcc_before.where(d.same_draw))
    cells = (
        held.groupby(["record", "protocol", "prompt_fraction"])
        .agg(
            draws=("dpcc", "size"),
            same_draw=("same_draw", "sum"),
            pcc_before=("compared_before", "mean"),
            pcc_after=("pcc_after", "mean"),
            largest_draw_change=("dpcc", lambda d: d.abs().max()),
        )
        .reset_index()
    )
    cells["change"] = cells.pcc_after - cells.pcc_before
    cells.to_csv(out / "cells.csv", index=False)
    compared = draws[draws.same_draw]
    print(f"{len(draws)} recorded GP draws x spots; rerun {draws.rerun.sum()}, the same prompts {len(compared)}")
    print(f"moved by > 1e-6 PCC: {(compared.dpcc.abs() > 1e-6).sum()}; largest {compared.dpcc.abs().max():.4f}")
    print("cells not compared (prompts not reproduced):")
    print(cells[cells.same_draw < cells.draws][["record", "protocol", "prompt_fraction", "draws", "same_draw"]])
    print("largest cell changes:")
    print(cells.reindex(cells.change.abs().sort_values(ascending=False).index).head(12).round(4).to_string())
    # the figures docs/benchmarks.md quotes: distinct draws (records share them), held-out spots
    draw = [k for k in DRAW if k != "spots"]
    distinct = compared[compared.spots == "heldout"].drop_duplicates(draw)
    plain = distinct[distinct.strategy.isin(["random", "blocks"])]
    plain_cells = cells[cells.record.isin(set(plain.record)) & (cells.same_draw > 0)]
    print(f"distinct draws compared: {len(distinct)}; random and blocks: {len(plain)}, of which moved by > 1e-4: "
          f"{(plain.dpcc.abs() > 1e-4).sum()}, largest {plain.dpcc.abs().max():.4f}; largest change of a cell of "
          f"their records: {plain_cells.change.abs().max():.6f}")  # fmt: skip
    big = distinct[distinct.dpcc.abs() > 0.01]
    print(f"draws moved by > 0.01: {len(big)}, by strategy and prompt seed:")
    print(big.groupby(["dataset", "strategy", "seed"]).size().to_string())


if __name__ == "__main__":
    main()
