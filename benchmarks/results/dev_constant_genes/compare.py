"""Per-draw rows of the adaptive variant before and after the fix (held-out spots), and the change per table cell.

python compare.py BEFORE AFTER   # the two folders of run.sh's benchmark runs, one per dataset_strategy
"""

import sys
from pathlib import Path

import pandas as pd

KEYS = ["fold", "section", "protocol", "prompt_fraction", "seed"]
METRICS = ["pcc", "mae", "coverage_80", "coverage_90", "width_90", "error_ratio", "layer_kept"]
here = Path(__file__).parent
before, after = Path(sys.argv[1]), Path(sys.argv[2])
rows = []
for path in sorted(after.glob("*/results.csv")):
    a, b = pd.read_csv(path), pd.read_csv(before / path.parent.name / "results.csv")
    m = b.merge(a, on=[*KEYS, "method", "spots"], suffixes=("_before", "_after"))
    m = m[m.spots == "heldout"]
    m.insert(0, "table", path.parent.name)
    rows.append(m[["table", *KEYS] + [f"{c}_{w}" for c in METRICS for w in ("before", "after")]])
draws = pd.concat(rows)
draws.round(6).to_csv(here / "draws.csv", index=False)
draws["change"] = draws.pcc_after - draws.pcc_before
cells = draws.groupby(["table", "protocol", "prompt_fraction"]).agg(
    draws=("change", "size"), moved=("change", lambda d: int((d.abs() > 1e-9).sum())),
    pcc_before=("pcc_before", "mean"), pcc_after=("pcc_after", "mean"), mean_change=("change", "mean"),
    largest_change=("change", lambda d: d.iloc[d.abs().argmax()]), coverage_80_before=("coverage_80_before", "mean"),
    coverage_80_after=("coverage_80_after", "mean"), error_ratio_before=("error_ratio_before", "mean"),
    error_ratio_after=("error_ratio_after", "mean"),
)  # fmt: skip
cells.round(4).to_csv(here / "cells.csv")
print(cells.round(4).to_string())
print(
    f"{len(draws)} draws, {int((draws.change.abs() > 1e-9).sum())} moved; largest |change| per draw "
    f"{draws.change.abs().max():.4f}, per cell {cells.mean_change.abs().max():.4f}"
)
