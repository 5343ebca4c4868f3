"""The twenty-second round's decision (RULE.md): the adaptive rows of the tables' commands after the change against
the committed rows (the twentieth round's layer, the same networks and draws).

Usage: ``python compare.py BEFORE AFTER``, each a folder holding (or linking) ``her2st_random``, ``her2st_blocks``,
``mob_random``, ``mob_blocks``, ``new_patient`` and ``new_patient_blocks`` results folders (``phg2st benchmark``
and ``../dev_new_patient/run.py`` outputs). Prints each cell (mean held-out PCC over sections and seeds before and
after, the change of PCC, MAE and CCC, the draws that moved), what the layer kept, and the decision.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd

FOLDERS = {("her2st", "random"): "her2st_random", ("her2st", "blocks"): "her2st_blocks",
           ("mob", "random"): "mob_random", ("mob", "blocks"): "mob_blocks",
           ("new_patient", "random"): "new_patient", ("new_patient", "blocks"): "new_patient_blocks"}  # fmt: skip
KEY = ["section", "protocol", "prompt_fraction", "seed"]


def adaptive(folder: Path) -> pd.DataFrame:
    d = pd.read_csv(folder / "results.csv")
    return d[(d.spots == "heldout") & (d.method == "phg2st_adaptive")].set_index(KEY)


def main() -> None:
    before, after = Path(sys.argv[1]), Path(sys.argv[2])
    cells, kept = [], []
    for (group, strategy), name in FOLDERS.items():
        if not (before / name / "results.csv").exists() or not (after / name / "results.csv").exists():
            print(f"missing: {name}")
            continue
        b, a = adaptive(before / name), adaptive(after / name)
        b = b.reindex(a.index)
        for (proto, frac), new in a.groupby(["protocol", "prompt_fraction"]):
            was = b.loc[new.index]
            d = new.pcc - was.pcc
            cells.append({"group": group, "strategy": strategy, "targets": proto, "fraction": frac,
                          "pcc_before": was.pcc.mean(), "pcc_after": new.pcc.mean(), "pcc_change": d.mean(),
                          "mae_change": (new.mae - was.mae).mean(), "ccc_change": (new.ccc - was.ccc).mean(),
                          "draws_moved": int((d.abs() > 0).sum()), "draws": len(new)})  # fmt: skip
            kept.append({"group": group, "strategy": strategy, "targets": proto, "fraction": frac}
                        | new.layer_kept.value_counts().to_dict())  # fmt: skip
    cells = pd.DataFrame(cells)
    pd.set_option("display.width", 250)
    print(cells.round(4).to_string(index=False))
    print()
    print(pd.DataFrame(kept).fillna(0).to_string(index=False))
    random, blocks = cells[cells.strategy == "random"], cells[cells.strategy == "blocks"]
    print(f"\nrandom cells: {len(random)}, mean PCC change {random.pcc_change.mean():+.4f}, lowest "
          f"{random.pcc_change.min():+.4f}, mean MAE change {random.mae_change.mean():+.5f}, mean CCC change "
          f"{random.ccc_change.mean():+.4f}")  # fmt: skip
    print(f"block cells: {len(blocks)}, lowest PCC change {blocks.pcc_change.min():+.4f}, draws moved "
          f"{int(blocks.draws_moved.sum())} of {int(blocks.draws.sum())}")  # fmt: skip
    for group, g in random.groupby("group"):
        print(f"  {group}: mean PCC change {g.pcc_change.mean():+.4f}, MAE {g.mae_change.mean():+.5f}")
    complete = len(blocks) == 6 and set(random.group) == {"her2st", "mob", "new_patient"}
    default = (random.pcc_change.mean() >= 0.002 and random.pcc_change.min() >= -0.003
               and blocks.pcc_change.min() >= -0.005 and random.mae_change.mean() <= 0.0005)  # fmt: skip
    print("decision:", ("default" if default else "not adopted") if complete else "incomplete")


if __name__ == "__main__":
    main()
