"""The package's ``n_networks`` path against the probe (``probe.py``), on the probe's own networks.

For each fold and target: the cached network (training seed 0) with the probe's networks of seeds 1 and 2 as its
``members``, through ``PHG2ST.predict`` (the layer, and ``network_only``), random prompts at 10% and 20%, seeds 0-2;
prints each draw's held-out PCC beside the probe's ``layer_avg`` and ``net_avg`` and the largest difference.

    PHG2ST_DATA_DIR=../shared/data .venv/bin/python benchmarks/results/dev_ensemble/check_package.py her2st \
        models_her2st OUT_MODELS TILES benchmarks/results/dev_ensemble/probe_her2st.csv
"""

import sys
import warnings
from pathlib import Path

import pandas as pd

import phg2st_sc as phg2st
from phg2st_sc._model._model import PHG2ST

sys.path.insert(0, str(Path(__file__).parents[2]))
from dev_incontext import random_draws, sections
from diagnose_layer import SECTIONS, cached_fold

warnings.simplefilter("ignore")
phg2st.settings.progress = False
ds, cache, own, tiles, probe = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3]), Path(sys.argv[4]), sys.argv[5]
secs = sections(ds, tiles)
ref = pd.read_csv(probe).set_index(["protocol", "fold", "fraction", "seed"])
rows = []
for proto in ref.index.unique("protocol"):
    for test in SECTIONS[ds]:
        _, model, a = cached_fold(ds, secs[test], test, proto, cache)
        model.members = [PHG2ST.load(own / f"{proto}_{test}_s{s}.pt").module for s in (1, 2)]
        for fraction, seed, prompt, score in random_draws(a, ref.index.unique("fraction")):
            r = ref.loc[(proto, test, fraction, seed)]
            rows.append({"protocol": proto, "fold": test, "fraction": fraction, "seed": seed,
                         "layer": round(score(model.predict(a, prompt)[0]), 4), "probe_layer_avg": r.layer_avg,
                         "network": round(score(model.predict(a, prompt, network_only=True)[0]), 4),
                         "probe_net_avg": r.net_avg})  # fmt: skip
            print(rows[-1], flush=True)
table = pd.DataFrame(rows)
diff = max((table.layer - table.probe_layer_avg).abs().max(), (table.network - table.probe_net_avg).abs().max())
print(f"{len(table)} draws; largest difference from the probe (4 decimals): {diff:.4f}")
