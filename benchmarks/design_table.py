"""Print the prompt-design tables of docs/benchmarks.md from `phg2st benchmark` results folders.

One row per prompt fraction and target protocol, one column per folder (random prompts first, then the designs).
A cell: held-out PCC of the adaptive variant (the default), mean ± std over the folds, and in brackets its network
alone and the best baseline of the row (GP, IDW, stack, ridge or image kNN). Below it, each design's difference to
the first folder (random), per row.

Usage: .venv/bin/python benchmarks/design_table.py RANDOM_DIR DESIGN_DIR [DESIGN_DIR ...] [--fractions 0.05 0.1 0.2]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

BASELINES = {"gp": "GP", "idw": "IDW", "stack": "stack", "ridge": "ridge", "feature_knn": "kNN"}
TARGETS = {"heldout": "unsmoothed", "heldout_smoothed": "3x3 smoothed"}


def held_out(folder: Path) -> pd.DataFrame:
    """The folder's summary, held-out spots only, indexed by (protocol, fraction, method)."""
    s = pd.read_csv(folder / "summary.csv")
    s = s[s["spots"] == "heldout"].copy()
    s["prompt_fraction"] = s["prompt_fraction"].round(3)
    return s.set_index(["protocol", "prompt_fraction", "method"])


def cell(s: pd.DataFrame, protocol: str, fraction: float) -> str:
    """``adaptive ± std (network; best baseline)`` for one row of one folder."""
    a = s.loc[(protocol, fraction, "phg2st_adaptive")]
    net = s.loc[(protocol, fraction, "phg2st_adaptive_network"), "pcc_mean"]
    base = {k: s.loc[(protocol, fraction, k), "pcc_mean"] for k in BASELINES if (protocol, fraction, k) in s.index}
    best = max(base, key=base.get)
    return f"{a['pcc_mean']:.3f} ± {a['pcc_std']:.3f} ({net:.3f}; {BASELINES[best]} {base[best]:.3f})"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("folders", type=Path, nargs="+")
    parser.add_argument("--fractions", type=float, nargs="+", default=None)
    args = parser.parse_args()
    runs = [held_out(f) for f in args.folders]
    names = [f.name for f in args.folders]
    names = [f"{f.parent.name}/{f.name}" if names.count(f.name) > 1 else f.name for f in args.folders]
    fractions = args.fractions or sorted(runs[1].index.get_level_values("prompt_fraction").unique())
    print("| prompts | targets | " + " | ".join(names) + " |")
    print("|---" * (2 + len(runs)) + "|")
    gains = []
    protocols = set.intersection(*(set(s.index.get_level_values("protocol")) for s in runs))
    for protocol, target in ((p, t) for p, t in TARGETS.items() if p in protocols):
        for fraction in fractions:
            row = [cell(s, protocol, round(fraction, 3)) for s in runs]
            print(f"| {fraction:.0%} | {target} | " + " | ".join(row) + " |")
            ref = runs[0].loc[(protocol, round(fraction, 3), "phg2st_adaptive"), "pcc_mean"]
            gains.append(
                f"{fraction:.0%} {target}: "
                + ", ".join(
                    f"{name} {s.loc[(protocol, round(fraction, 3), 'phg2st_adaptive'), 'pcc_mean'] - ref:+.3f}"
                    for name, s in zip(names[1:], runs[1:], strict=True)
                )
            )
    print(f"\nagainst {names[0]}:\n" + "\n".join(gains))


if __name__ == "__main__":
    main()
