"""The twelfth round's table and its rule's verdict (RULE.md), from rows_her2st.csv and rows_mob.csv beside this file.

.venv/bin/python benchmarks/results/dev_library_spread/summary.py
"""

from pathlib import Path

import pandas as pd

here = Path(__file__).parent
rows = pd.concat([pd.read_csv(here / f"rows_{d}.csv").assign(dataset=d) for d in ("her2st", "mob")], ignore_index=True)
per_fold = rows.groupby(["dataset", "protocol", "spot_scale", "section"]).mean(numeric_only=True).reset_index()
cells = per_fold.groupby(["dataset", "protocol", "spot_scale"])
table = cells[["error_ratio", "coverage_80", "library_bound", "lib_corr"]].mean()
table["coverage_80_min"] = cells["coverage_80"].min()
table["coverage_80_max"] = cells["coverage_80"].max()
print(table.round(3).to_string())
ratio = table["error_ratio"].unstack("spot_scale")
ok_level = (table["coverage_80_min"] >= 0.77) & (table["coverage_80_max"] <= 0.83)
for cand in ("library", "level + library"):
    gain = ratio[cand] - ratio["level"]
    cov = ok_level.xs(cand, level="spot_scale") | ~ok_level.xs("level", level="spot_scale")
    adopt = gain.mean() >= 0.05 and gain.min() >= -0.02 and bool(cov.all())
    print(
        f"{cand}: mean gain {gain.mean():+.4f}, lowest cell {gain.min():+.4f}, coverage kept {bool(cov.all())}"
        f" -> {'adopt' if adopt else 'not adopted'}"
    )
