"""The table of docs/benchmarks.md, "Option: several networks averaged", and the round's rule applied to it.

Reads the probe's rows (``probe_her2st.csv``, ``probe_mob.csv``, beside this file): per dataset, target and fraction
the mean held-out PCC of one network and of the three averaged, alone and under the in-context layer, the layer's
change and on how many draws it fell; then the mean change over the 8 cells and the lowest cell (docs/design.md,
"Several networks averaged": the default at >= +0.005 with no cell below -0.005, an option above 0).

    .venv/bin/python benchmarks/results/dev_ensemble/summary.py
"""

from pathlib import Path

import pandas as pd

here = Path(__file__).parent
changes = []
for name, label in (("her2st", "her2st"), ("mob", "MOB")):
    rows = pd.read_csv(here / f"probe_{name}.csv").assign(change=lambda t: t.layer_avg - t.layer0)
    for (protocol, fraction), t in rows.groupby(["protocol", "fraction"]):
        targets = "unsmoothed" if protocol == "heldout" else "3x3 smoothed"
        changes.append(t.change.mean())
        print(f"| {label} | {targets} | {fraction:.0%} | {t.net0.mean():.4f} | {t.net_avg.mean():.4f} | "
              f"{t.layer0.mean():.4f} | {t.layer_avg.mean():.4f} | {t.change.mean():+.4f} | "
              f"{(t.change < -1e-4).sum()} of {len(t)} |")  # fmt: skip
mean, low = sum(changes) / len(changes), min(changes)
verdict = "the default" if mean >= 0.005 and low >= -0.005 else "an option" if mean > 0 else "neither"
print(f"mean change over the {len(changes)} cells {mean:+.4f}, lowest {low:+.4f}: {verdict}")
