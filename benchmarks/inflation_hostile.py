"""The hostile case behind the in-context layer's inflation check: prompts of pure noise on a synthetic section.

600 spots, 30 genes, a network of noise, expression of noise (rng 0), 10 / 12 / 20 / 40 random prompts, six trials;
prints the weights the layer kept, the spread of its held-out predictions against the network's and the values', and
the held-out squared error against the prompts' mean. Before the check (fadf3a7), trial 0 with 12 prompts gave the
field a weight of 19,799 and a squared error of 1,308 (1.07 for the mean)::

    .venv/bin/python benchmarks/inflation_hostile.py
"""

import numpy as np

from phg2st_sc._model import _incontext as ic

rng = np.random.default_rng(0)
for trial in range(6):
    n, g = 600, 30
    xy = rng.uniform(0, 25, size=(n, 2))
    net = rng.normal(size=(n, g)).astype(np.float32) * 0.3 + 1.0
    y = rng.normal(size=(n, g)) + 1.0  # pure noise, no relation to the network or space
    for p in (10, 12, 20, 40):
        prompt = np.zeros(n, bool)
        prompt[rng.choice(n, p, replace=False)] = True
        out, fit = ic.adapt(net, rng.normal(size=(n, 4)), None, xy, prompt, y[prompt])
        w = {c: round(v, 2) for c, v in fit.weights.items() if v}
        held = ~prompt
        print(
            trial,
            p,
            fit.record()["cv_pcc"]["kept"],
            w,
            "sd out/net/y",
            round(float(out[held].std(0).mean()), 3),
            round(float(net[held].std(0).mean()), 3),
            round(float(y[held].std(0).mean()), 3),
            "mse",
            round(float(((out[held] - y[held]) ** 2).mean()), 3),
            "mse mean",
            round(float(((y[prompt].mean(0) - y[held]) ** 2).mean()), 3),
        )
