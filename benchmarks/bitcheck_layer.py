"""Bit-for-bit check of the in-context layer across two source trees (the memory mends and refactors of 2026-12-06).

Runs ``_incontext.adapt`` (and ``_utils.inverse_distance``, ``Spread.std``) on five synthetic sections (2,000 to
70,000 spots; random and block prompts; with and without kept components) and saves every output to ``OUT.npz``;
run it under each tree with one thread and compare the files bytewise::

    OMP_NUM_THREADS=1 PYTHONPATH=<old tree>/src .venv/bin/python benchmarks/bitcheck_layer.py old
    OMP_NUM_THREADS=1 PYTHONPATH=<new tree>/src .venv/bin/python benchmarks/bitcheck_layer.py new
    .venv/bin/python -c "import numpy as np; a, b = np.load('old.npz'), np.load('new.npz'); print([k for k in a if not np.array_equal(a[k].view(np.uint8), b[k].view(np.uint8))])"
"""

import sys

import numpy as np

from phg2st_sc._model._incontext import adapt
from phg2st_sc._utils import inverse_distance

out = {}
for case, (n, g, frac, keep, clustered) in {
    "small": (2000, 30, 0.1, False, False),
    "keep": (3000, 20, 0.1, True, False),
    "large": (70000, 40, 0.1, False, False),
    "blocks": (4000, 25, 0.1, False, True),
    "large_keep": (68000, 12, 0.05, True, False),
}.items():
    rng = np.random.default_rng(n)
    side = int(np.ceil(np.sqrt(n)))
    xy = np.stack(np.divmod(np.arange(n), side), 1).astype(float)
    basis = np.stack([np.sin(xy[:, 0] / 7 + i) * np.cos(xy[:, 1] / 11 - i) for i in range(4)], 1)
    truth = basis @ rng.normal(size=(4, g)) + 3
    y = truth + rng.normal(scale=0.7, size=(n, g))
    network = (truth + rng.normal(scale=0.5, size=(n, g))).astype(np.float32)
    latent = (basis @ rng.normal(size=(4, 16)) + rng.normal(scale=0.3, size=(n, 16))).astype(np.float32)
    image = rng.normal(size=(n, 24)).astype(np.float32)
    if clustered:
        prompt = (xy[:, 0] < side * 0.3) & (xy[:, 1] < side * 0.35)
    else:
        prompt = rng.random(n) < frac
    pred, fit = adapt(network, latent, image, xy, prompt, y[prompt], keep_components=keep)
    out[f"{case}_pred"] = pred
    out[f"{case}_std"] = fit.spread.std() if fit.spread is not None else np.zeros(1)
    out[f"{case}_w"] = np.array([fit.weights[c] for c in sorted(fit.weights)])
    if keep:
        for c, v in fit.components.items():
            out[f"{case}_comp_{c}"] = v
    out[f"{case}_idw"] = inverse_distance(xy[prompt], y[prompt], xy)
    print(
        case,
        fit.record().get("cv_pcc", {}).get("kept") if isinstance(fit.record(), dict) else "",
        {c: round(v, 3) for c, v in fit.weights.items()},
        flush=True,
    )
np.savez(sys.argv[1], **out)
