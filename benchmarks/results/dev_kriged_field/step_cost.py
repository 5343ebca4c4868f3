"""What ModelConfig.kriged_field adds to a training step: the kriging of one prompt draw (seconds), on synthetic
lattices of a her2st-like (300 spots, 785 genes) and a MOB-like section (1,300 spots, 1,000 genes).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/results/dev_kriged_field/step_cost.py
"""

import time

import numpy as np

from phg2st_sc._model._data import kriged_prompts

rng = np.random.default_rng(0)
for n, g in [(300, 785), (1300, 1000)]:
    side = int(np.sqrt(n)) + 1
    pos = np.stack(np.meshgrid(np.arange(side), np.arange(side)), -1).reshape(-1, 2)[:n].astype(np.float32)
    y = rng.random((n, g)).astype(np.float32)
    for frac in (0.05, 0.3):
        p = np.zeros(n, bool)
        p[rng.choice(n, int(frac * n), replace=False)] = True
        t = time.perf_counter()
        kriged_prompts(pos, y, p)
        print(f"{n} spots, {g} genes, {frac:.0%} prompts: {time.perf_counter() - t:.3f} s")
