"""The nineteenth round's decision (RULE.md) from the rows of ``../dev_idw_component/run.py`` before and after.

Usage: ``python compare.py BEFORE AFTER`` (folders with ``{new_patient,her2st,mob}_{random,blocks}/results.csv``;
BEFORE is ``../dev_combination_first/after``). Prints each cell's mean held-out MAE, CCC and PCC of the adaptive
variant before and after, the coverage of the random cells, the group means and the decision. (The scales the
layer chose are not in these rows: the ``layer_scale`` column came later.)
"""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd

GROUPS = ["her2st", "mob", "new_patient"]
METRICS = ["mae", "ccc", "pcc", "coverage_80", "coverage_90"]


def adaptive(folder: Path, group: str, strategy: str) -> pd.DataFrame:
    d = pd.read_csv(folder / f"{group}_{strategy}" / "results.csv")
    d = d[(d.spots == "heldout") & (d.method == "phg2st_adaptive")]
    return d.set_index(["protocol", "prompt_fraction", "section", "seed"]).sort_index()


def main() -> None:
    before, after = Path(sys.argv[1]), Path(sys.argv[2])
    cells = []
    for group in GROUPS:
        for strategy in ["random", "blocks"]:
            b, a = adaptive(before, group, strategy), adaptive(after, group, strategy)
            change = a[METRICS] - b[METRICS].reindex(a.index)  # per draw
            for (proto, frac), cell in change.groupby(level=["protocol", "prompt_fraction"]):
                row = {"group": group, "strategy": strategy, "targets": proto, "fraction": frac, "draws": len(cell)}
                row |= {f"{m}_before": b.loc[(proto, frac), m].mean() for m in ["mae", "ccc"]}
                row |= {f"d_{m}": cell[m].mean() for m in METRICS}
                row["max_abs_d_pcc"] = cell["pcc"].abs().max()
                cells.append(row)
    cells = pd.DataFrame(cells)
    pd.set_option("display.width", 250)
    print(cells.round(4).to_string(index=False))
    random = cells[cells.strategy == "random"].copy()
    g = random.groupby("group")[["d_mae", "d_ccc"]].mean()
    print("\ngroup means (random cells):")
    print(g.round(4).to_string())
    # coverage: how much further from nominal each group's mean coverage moved (points)
    cov = {}
    for group in GROUPS:
        for level, nominal in (("coverage_80", 0.8), ("coverage_90", 0.9)):
            was = _coverage(before, group, level)
            now = _coverage(after, group, level)
            cov[(group, level)] = 100 * (abs(now - nominal) - abs(was - nominal))
    print("\ncoverage: points further from nominal (random cells, mean over cells):")
    print({f"{k[0]} {k[1]}": round(v, 2) for k, v in cov.items()})
    checks = {
        "mean MAE of group means <= -0.0005": g.d_mae.mean() <= -0.0005,
        "no group MAE above +0.0005": g.d_mae.max() <= 0.0005,
        "no cell MAE above +0.001": cells.d_mae.max() <= 0.001,
        "mean CCC of group means >= +0.005": g.d_ccc.mean() >= 0.005,
        "PCC within 0.0005 in every cell": cells.max_abs_d_pcc.max() < 0.0005,
        "coverage no more than 1 point further": max(cov.values()) <= 1.0,
    }
    print(f"\nmean of group means: MAE {g.d_mae.mean():+.4f}, CCC {g.d_ccc.mean():+.4f}")
    for k, v in checks.items():
        print(f"{'pass' if v else 'FAIL'}: {k}")
    print("decision:", "default" if all(checks.values()) else "not built")


def _coverage(folder: Path, group: str, level: str) -> float:
    """A group's mean coverage over its random cells (the mean of the cells' means)."""
    d = adaptive(folder, group, "random")
    return float(d.groupby(level=["protocol", "prompt_fraction"])[level].mean().mean())


if __name__ == "__main__":
    main()
