"""build_hypergraph time and peak memory on synthetic slides, against a dense n x n search.

Usage: .venv/bin/python benchmarks/bench_hypergraph.py [--dim 1024] [--sizes 1000 10000 100000]
Spots on a Visium-like hexagonal grid (100 µm pitch in pixels of 0.5 µm), features = a smooth spatial signal plus
noise. Prints a markdown table (docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import time
import tracemalloc

import numpy as np
from anndata import AnnData
from scipy.spatial.distance import cdist

import phg2st_sc as phg2st


def synthetic(n: int, dim: int, seed: int = 0) -> AnnData:
    rng = np.random.default_rng(seed)
    side = int(np.ceil(np.sqrt(n)))
    rows, cols = np.divmod(np.arange(n), side)
    xy = np.column_stack([cols * 200.0 + (rows % 2) * 100.0, rows * 173.2])
    signal = np.column_stack([np.sin(xy[:, 0] / 2000), np.cos(xy[:, 1] / 3000)])
    feats = (rng.normal(size=(n, dim)) + signal @ rng.normal(size=(2, dim)) * 2).astype(np.float32)
    a = AnnData(np.zeros((n, 1), dtype=np.float32))
    a.obsm["spatial"], a.obsm["X_f"] = xy, feats
    return a


def dense(a: AnnData, k: int) -> np.ndarray:
    """The obvious alternative: full n x n feature and position distance matrices."""
    f, p = a.obsm["X_f"], a.obsm["spatial"]
    df, dp = cdist(f, f), cdist(p, p)
    df /= np.sort(df, axis=1)[:, k].mean()
    dp /= np.sort(dp, axis=1)[:, k].mean()
    comb = df + dp
    np.fill_diagonal(comb, np.inf)
    return np.argpartition(comb, k, axis=1)[:, :k]


def measure(fn) -> tuple[float, float]:
    tracemalloc.start()
    t = time.perf_counter()
    fn()
    elapsed = time.perf_counter() - t
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return elapsed, peak / 2**20


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--dim", type=int, default=1024)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10_000, 100_000])
    parser.add_argument("--dense-max", type=int, default=10_000)
    args = parser.parse_args()
    print(f"features: {args.dim}-d float32, k = 4\n")
    print("| spots | build_hypergraph s | peak MiB | dense n x n search s | dense peak MiB |")
    print("|---|---|---|---|---|")
    for n in args.sizes:
        a = synthetic(n, args.dim)
        t, mem = measure(lambda a=a: phg2st.pp.build_hypergraph(a, use_rep="X_f"))
        if n <= args.dense_max:
            td, memd = measure(lambda a=a: dense(a, 4))
            extra = f"{td:.2f} | {memd:.0f}"
        else:
            extra = f"not run (needs {3 * n * n * 8 / 2**30:.0f} GiB) | -"
        print(f"| {n:,} | {t:.2f} | {mem:.0f} | {extra} |")
