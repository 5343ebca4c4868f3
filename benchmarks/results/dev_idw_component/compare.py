"""The seventeenth round's decision (RULE.md) from the rows of ``run.py`` before and after the change.

Usage: ``python compare.py BEFORE AFTER`` (folders with ``{new_patient,her2st,mob}_{random,blocks}/results.csv``).
Prints each cell (the adaptive variant before and after, IDW, GP, the stack; mean held-out PCC over sections and
seeds), the components the layer kept after the change, the group means and the decision.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd

GROUPS = ["her2st", "mob", "new_patient"]


def rows(folder: Path, group: str, strategy: str) -> pd.DataFrame:
    d = pd.read_csv(folder / f"{group}_{strategy}" / "results.csv")
    return d[d.spots == "heldout"]


def main() -> None:
    before, after = Path(sys.argv[1]), Path(sys.argv[2])
    cells, kept = [], []
    for group in GROUPS:
        for strategy in ["random", "blocks"]:
            b, a = rows(before, group, strategy), rows(after, group, strategy)
            for (proto, frac), cell in a.groupby(["protocol", "prompt_fraction"]):
                old = b[(b.protocol == proto) & (b.prompt_fraction == frac)]
                mean = {m: cell[cell.method == m].pcc.mean() for m in ["idw", "gp", "stack"]}
                new = cell[cell.method == "phg2st_adaptive"].set_index(["section", "seed"]).pcc
                was = old[old.method == "phg2st_adaptive"].set_index(["section", "seed"]).pcc
                change = new - was.reindex(new.index)  # per draw
                cells.append({"group": group, "strategy": strategy, "targets": proto, "fraction": frac,
                              "before": was.mean(), "after": new.mean(), "change": change.mean(),
                              "draws_moved": int((change.abs() > 1e-4).sum()), "draws": len(new)} | mean)  # fmt: skip
                k = cell[cell.method == "phg2st_adaptive"].layer_kept.value_counts().to_dict()
                kept.append({"group": group, "strategy": strategy, "targets": proto, "fraction": frac} | k)
    cells = pd.DataFrame(cells)
    pd.set_option("display.width", 200)
    print(cells.round(4).to_string(index=False))
    print()
    print(pd.DataFrame(kept).fillna(0).to_string(index=False))
    random = cells[cells.strategy == "random"].groupby("group").change.mean()
    blocks = cells[cells.strategy == "blocks"].change
    print("\ngroup means (random cells):", random.round(4).to_dict())
    print(
        f"mean of group means {random.mean():+.4f}; lowest group {random.min():+.4f}; lowest block {blocks.min():+.4f}"
    )
    default = random.mean() >= 0.002 and random.min() >= -0.003 and blocks.min() >= -0.005
    print("decision:", "default" if default else "not built")


if __name__ == "__main__":
    main()
