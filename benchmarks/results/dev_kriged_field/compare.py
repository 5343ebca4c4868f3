"""The thirteenth round's table and its rule's verdict: the kriged-field runs (her2st/, mob/ results.csv beside the
rows this writes) against the recorded rows of the same settings without it.

    .venv/bin/python benchmarks/results/dev_kriged_field/compare.py OUT
(OUT: the folder run.sh wrote; without it, rows.csv beside this file.)
"""

import sys
from pathlib import Path

import pandas as pd

here = Path(__file__).parent
results = Path(__file__).resolve().parents[1]
base = {"her2st": ["her2st_c_random_epyc"], "mob": ["mob_random_epyc", "mob_random_epyc_raw"]}
keys = ["dataset", "fold", "section", "protocol", "prompt_fraction", "seed", "method"]


def rows(folder: Path, dataset: str) -> pd.DataFrame:
    r = pd.read_csv(folder / "results.csv").assign(dataset=dataset)
    r = r[(r.spots == "heldout") & r.method.isin(["phg2st_adaptive", "phg2st_adaptive_network"])]
    return r[r.prompt_fraction.isin([0.1, 0.2])][keys + ["pcc"]]


if len(sys.argv) > 1:
    new = pd.concat([rows(Path(sys.argv[1]) / d, d) for d in ("her2st", "mob")], ignore_index=True)
    new.to_csv(here / "rows.csv", index=False)
new = pd.read_csv(here / "rows.csv")
old = pd.concat([rows(results / f, d) for d, fs in base.items() for f in fs], ignore_index=True)
both = new.merge(old, on=keys, suffixes=("_kriged", "_before"), validate="one_to_one")
assert len(both) == len(new) == 2 * 2 * 2 * 3 * 9, len(both)
per_fold = both.groupby(["dataset", "protocol", "prompt_fraction", "method", "fold"])[
    ["pcc_kriged", "pcc_before"]
].mean()
cells = per_fold.groupby(["dataset", "protocol", "prompt_fraction", "method"]).mean()
cells["change"] = cells.pcc_kriged - cells.pcc_before
print(cells.round(4).to_string())
layer = cells.xs("phg2st_adaptive", level="method")["change"]
verdict = ("the new default" if layer.mean() >= 0.005 and layer.min() >= -0.005
           else "an option" if layer.mean() > 0 else "neither")  # fmt: skip
print(f"adaptive: mean change {layer.mean():+.4f}, lowest cell {layer.min():+.4f} -> {verdict}")
