"""The twentieth round's decision (RULE.md) from the rows before (the nineteenth round's layer) and after.

Usage: ``python compare.py BEFORE AFTER`` (folders with ``{her2st,mob,new_patient}_{random,blocks}/results.csv``;
``before/`` holds the nineteenth round's rows of the tables, ``after/`` this round's). Prints each cell's mean
held-out MAE, CCC and PCC change of the adaptive variant, the coverage per group and the decision.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd

GROUPS = ["her2st", "mob", "new_patient"]
METRICS = ["mae", "ccc", "pcc", "coverage_80", "coverage_90"]


def adaptive(folder: Path, name: str) -> pd.DataFrame:
    d = pd.read_csv(folder / name / "results.csv")
    d = d[(d.spots == "heldout") & (d.method == "phg2st_adaptive")]
    return d.set_index(["protocol", "prompt_fraction", "section", "seed"]).sort_index()


def main() -> None:
    before, after = Path(sys.argv[1]), Path(sys.argv[2])
    cells, coverage = [], {}
    for group in GROUPS:
        for strategy in ["random", "blocks"]:
            b, a = adaptive(before, f"{group}_{strategy}"), adaptive(after, f"{group}_{strategy}")
            change = a[METRICS] - b[METRICS].reindex(a.index)  # per draw
            for (proto, frac), cell in change.groupby(level=["protocol", "prompt_fraction"]):
                row = {"group": group, "strategy": strategy, "targets": proto, "fraction": frac, "draws": len(cell)}
                row |= {f"{m}_before": b.loc[(proto, frac), m].mean() for m in ["mae", "ccc"]}
                row |= {f"d_{m}": cell[m].mean() for m in METRICS}
                row["max_abs_d_pcc"] = cell["pcc"].abs().max()
                row["scale_after"] = a.loc[(proto, frac), "layer_scale"].median()
                cells.append(row)
            if strategy == "random":
                for level, nominal in (("coverage_80", 0.8), ("coverage_90", 0.9)):
                    was = b.groupby(level=["protocol", "prompt_fraction"])[level].mean().mean()
                    now = a.groupby(level=["protocol", "prompt_fraction"])[level].mean().mean()
                    coverage[f"{group} {level}"] = 100 * (abs(now - nominal) - abs(was - nominal))
    cells = pd.DataFrame(cells)
    pd.set_option("display.width", 250)
    print(cells.round(4).to_string(index=False))
    random = cells[cells.strategy == "random"]
    print("\ncoverage: points further from nominal (random cells, mean over cells):")
    print({k: round(float(v), 2) for k, v in coverage.items()})
    checks = {
        "mean MAE change over the random cells <= 0": random.d_mae.mean() <= 0,
        "mean CCC change over the random cells >= 0": random.d_ccc.mean() >= 0,
        "no cell MAE above +0.001": cells.d_mae.max() <= 0.001,
        "PCC within 0.0005 in every cell": cells.max_abs_d_pcc.max() < 0.0005,
        "coverage no more than 1 point further": max(coverage.values()) <= 1.0,
    }
    print(f"\nrandom cells: MAE {random.d_mae.mean():+.5f}, CCC {random.d_ccc.mean():+.5f}")
    for k, v in checks.items():
        print(f"{'pass' if v else 'FAIL'}: {k}")
    print("decision:", "default" if all(checks.values()) else "not built")


if __name__ == "__main__":
    main()
