"""Probe for a next round: does averaging networks trained with other seeds lift the network and the layer?

A development probe on her2st C2-C6 (leave one section out), not a method of the package. For each fold: the
adaptive network the final runs cached (`--model-cache`, training seed 0) and networks trained with the same
settings and training seeds 1..K-1 (kept in OUT_MODELS). For random prompts, seeds 0-2, held-out spots, mean PCC over
genes: each network alone (``net0``...), their average (``net_avg``), the in-context layer on network 0
(``layer0``, as the package does it) and on the average (``layer_avg``: the networks' predictions and cross-fitted
passes averaged, their tokens side by side for the ridge; ``layer_avg_lat0``: network 0's tokens only).

    PHG2ST_DATA_DIR=../shared/data .venv/bin/python benchmarks/results/dev_ensemble/probe.py her2st \
        heldout,heldout_smoothed 0.1,0.2 3 models_her2st OUT_MODELS TILES benchmarks/results/dev_ensemble/probe_her2st.csv
"""

import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

import phg2st_sc as phg2st
from phg2st_sc._model import _incontext as ic
from phg2st_sc._model._model import PHG2ST
from phg2st_sc.tl._fit import fit, fit_arguments
from phg2st_sc.tl._protocol import get_protocol, prepare_targets

sys.path.insert(0, str(Path(__file__).parents[2]))
from dev_incontext import REP, layer_inputs, random_draws, sections
from diagnose_layer import SECTIONS, cached_fold

warnings.simplefilter("ignore")
phg2st.settings.progress = False
ds, protocols, fractions, k = (
    sys.argv[1],
    sys.argv[2].split(","),
    [float(f) for f in sys.argv[3].split(",")],
    int(sys.argv[4]),
)
cache, own, tiles, out = Path(sys.argv[5]), Path(sys.argv[6]), Path(sys.argv[7]), Path(sys.argv[8])
own.mkdir(parents=True, exist_ok=True)
secs = sections(ds, tiles)
panel = "her2st_785" if ds == "her2st" else None
rows = []
for proto in protocols:
    for test in SECTIONS[ds]:
        _, first, a = cached_fold(ds, secs[test], test, proto, cache)
        members = [first]
        for seed in range(1, k):
            path = own / f"{proto}_{test}_s{seed}.pt"
            if not path.exists():
                t0 = time.time()
                train = [prepare_targets(secs[s], get_protocol(proto), panel=panel)[:, list(first.genes)].copy()
                         for s in SECTIONS[ds] if s != test]  # fmt: skip
                settings = {"hidden": 128, "max_epochs": 100, "variant": "adaptive", "prompt_fraction": [0.05, 0.3]}
                fit(train, use_rep=REP, seed=seed, **fit_arguments(settings)).save(path)
                print(f"trained {proto} {test} seed {seed} in {time.time() - t0:.0f}s", flush=True)
            members.append(PHG2ST.load(path))
        for fraction, seed, prompt, score in random_draws(a, fractions):
            inputs = [layer_inputs(m, a, prompt) for m in members]
            row = {"protocol": proto, "fold": test, "fraction": fraction, "seed": seed}
            row |= {f"net{i}": score(x[0][0]) for i, x in enumerate(inputs)}
            net = np.mean([x[0][0] for x in inputs], 0)
            row["net_avg"] = score(net)
            row["layer0"] = score(ic.adapt(*inputs[0][0], **inputs[0][1])[0])
            (_, latent0, *rest), kw0 = inputs[0]
            oof = None if kw0["network_at_prompts"] is None else np.mean(
                [x[1]["network_at_prompts"] for x in inputs], 0)  # fmt: skip
            tokens = None if kw0["latent_at_prompts"] is None else np.hstack(
                [x[1]["latent_at_prompts"] for x in inputs])  # fmt: skip
            latent = np.hstack([x[0][1] for x in inputs])
            row["layer_avg"] = score(ic.adapt(net, latent, *rest, network_at_prompts=oof, latent_at_prompts=tokens)[0])
            row["layer_avg_lat0"] = score(ic.adapt(net, latent0, *rest, network_at_prompts=oof,
                                                   latent_at_prompts=kw0["latent_at_prompts"])[0])  # fmt: skip
            rows.append({c: round(v, 4) if isinstance(v, float) else v for c, v in row.items()})
            print(rows[-1], flush=True)
            pd.DataFrame(rows).to_csv(out, index=False)
table = pd.DataFrame(rows)
print(
    table.groupby(["protocol", "fraction"])[[c for c in table.columns if c.startswith(("net", "layer"))]]
    .mean()
    .round(4)
)
