"""The twenty-first round's decision (RULE.md) from the rows of ``../dev_idw_component/run.py`` before and after.

Usage: ``python compare.py BEFORE AFTER`` (folders with ``{her2st,mob,new_patient}_{random,blocks}/results.csv``;
a missing folder is reported and left out). Prints each cell (the adaptive variant's mean held-out PCC and MAE
over sections and seeds, before and after; IDW, GP and the stack after), what the layer kept after the change, the
group means and the decision.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd

GROUPS = ["her2st", "mob", "new_patient"]


def rows(folder: Path, group: str, strategy: str) -> pd.DataFrame | None:
    path = folder / f"{group}_{strategy}" / "results.csv"
    if not path.exists():
        print(f"missing: {path.parent.name} in {folder.name}")
        return None
    d = pd.read_csv(path)
    return d[d.spots == "heldout"]


def main() -> None:
    before, after = Path(sys.argv[1]), Path(sys.argv[2])
    cells, kept = [], []
    for group in GROUPS:
        for strategy in ["random", "blocks"]:
            b, a = rows(before, group, strategy), rows(after, group, strategy)
            if a is None or b is None:
                continue
            for (proto, frac), cell in a.groupby(["protocol", "prompt_fraction"]):
                old = b[(b.protocol == proto) & (b.prompt_fraction == frac)]
                new = cell[cell.method == "phg2st_adaptive"].set_index(["section", "seed"])
                was = old[old.method == "phg2st_adaptive"].set_index(["section", "seed"]).reindex(new.index)
                other = {m: cell[cell.method == m].pcc.mean() for m in ["idw", "gp", "stack"]}
                cells.append({"group": group, "strategy": strategy, "targets": proto, "fraction": frac,
                              "pcc_before": was.pcc.mean(), "pcc_after": new.pcc.mean(),
                              "pcc_change": (new.pcc - was.pcc).mean(), "mae_change": (new.mae - was.mae).mean(),
                              "ccc_change": (new.ccc - was.ccc).mean(),
                              "draws_moved": int(((new.pcc - was.pcc).abs() > 1e-4).sum()), "draws": len(new)}
                             | other)  # fmt: skip
                kept.append({"group": group, "strategy": strategy, "targets": proto, "fraction": frac}
                            | new.layer_kept.value_counts().to_dict())  # fmt: skip
    cells = pd.DataFrame(cells)
    pd.set_option("display.width", 250)
    print(cells.round(4).to_string(index=False))
    print()
    print(pd.DataFrame(kept).fillna(0).to_string(index=False))
    random = cells[cells.strategy == "random"].groupby("group")[["pcc_change", "mae_change"]].mean()
    blocks = cells[cells.strategy == "blocks"].pcc_change
    print("\ngroup means (random cells):")
    print(random.round(4).to_string())
    pcc = random.pcc_change
    print(f"mean of group means {pcc.mean():+.4f}; lowest group {pcc.min():+.4f}; lowest block "
          f"{blocks.min() if len(blocks) else float('nan'):+.4f}; highest group MAE {random.mae_change.max():+.4f}")  # fmt: skip
    complete = len(random) == len(GROUPS) and len(blocks) == 2 * len(GROUPS)
    default = (
        pcc.mean() >= 0.002 and pcc.min() >= -0.003 and blocks.min() >= -0.005 and random.mae_change.max() <= 0.002
    )
    print("decision:", ("default" if default else "not adopted") if complete else "incomplete")


if __name__ == "__main__":
    main()
