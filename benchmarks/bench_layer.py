"""The in-context layer alone on a large synthetic section, and the low-rank patterns' two SVD paths (a timing).

``_incontext.adapt`` on ``--n`` spots with ``--prompts`` random prompts and ``--genes`` genes (a shared spatial
pattern under noise; the network a weaker copy of it), its wall time and held-out PCC (50 genes); then
``_incontext.low_rank`` of a ``--svd`` prompts x genes matrix through the exact SVD (``EXACT_SVD_FLOPS`` set to
infinity) and through the randomised one (set to 0), their times and the largest difference of the rank-3
reconstructions. Run it on two trees one after the other to compare code (docs/benchmarks.md, "After the genes'
shared patterns")::

    PYTHONPATH=<tree>/src .venv/bin/python benchmarks/bench_layer.py --n 100000 --prompts 10000 --genes 300
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from phg2st_sc._model import _incontext as ic


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--prompts", type=int, default=10_000)
    ap.add_argument("--genes", type=int, default=300)
    ap.add_argument("--svd", type=int, nargs=2, default=[60_000, 400], metavar=("P", "GENES"))
    args = ap.parse_args()
    n, p, g = args.n, args.prompts, args.genes
    rng = np.random.default_rng(0)
    xy = rng.uniform(0, np.sqrt(n), size=(n, 2))
    shared = np.sin(xy[:, :1] / 6.0 + rng.uniform(0, 3, size=g)) + np.cos(xy[:, 1:] / 7.0)
    y = (shared + rng.normal(size=(n, g))).astype(np.float32)
    net = (shared * 0.5 + rng.normal(size=(n, g)) * 0.3).astype(np.float32)
    latent = rng.normal(size=(n, 16)).astype(np.float32)
    prompt = np.zeros(n, dtype=bool)
    prompt[rng.choice(n, p, replace=False)] = True
    t = time.perf_counter()
    out, fit = ic.adapt(net, latent, None, xy, prompt, y[prompt].astype(np.float64))
    dt = time.perf_counter() - t
    held = ~prompt
    pcc = np.mean([np.corrcoef(out[held, j], y[held, j])[0, 1] for j in range(0, g, max(1, g // 50))])
    kept = {k: round(v, 2) for k, v in fit.weights.items() if v}
    print(f"adapt: n={n} prompts={p} genes={g}: {dt:.1f} s, held-out PCC {pcc:.4f}, weights {kept}")
    if not hasattr(ic, "low_rank"):  # a tree before the low-rank patterns
        return
    a = rng.normal(size=(args.svd[0], 3)) @ rng.normal(size=(3, args.svd[1])) * 3 + rng.normal(size=args.svd)
    ic.EXACT_SVD_FLOPS = float("inf")  # the exact SVD whatever the size
    t = time.perf_counter()
    exact = ic.low_rank(a, 3)
    t_exact = time.perf_counter() - t
    ic.EXACT_SVD_FLOPS = 0
    t = time.perf_counter()
    fast = ic.low_rank(a, 3)
    t_fast = time.perf_counter() - t
    diff = np.abs(exact[1] @ exact[2] - fast[1] @ fast[2]).max()
    print(f"low_rank {args.svd[0]} x {args.svd[1]}: exact {t_exact:.2f} s, randomised {t_fast:.2f} s, "
          f"largest difference of the reconstructions {diff:.1e}")  # fmt: skip


if __name__ == "__main__":
    main()
