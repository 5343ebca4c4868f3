"""build_hypergraph time and peak memory on synthetic slides, against a dense n x n search.

Usage: .venv/bin/python benchmarks/bench_hypergraph.py [--dim 1024] [--sizes 1000 10000 100000]
Spots on a Visium-like hexagonal grid (100 µm pitch in pixels of 0.5 µm), features = a smooth spatial signal plus
noise. Prints a markdown table (docs/benchmarks.md).

``--windows`` instead times the neighbour-tile sub-hypergraphs (the 5 x 5 windows of 224 px tiles at 0.5 µm per
pixel, 1024-d tile features) of ``datasets.synthetic`` slides, Visium and Visium HD (16 µm bins) layouts, two ways
in one run: a search per spot (the code before the change) and each distinct window once (spots of one lattice
cell share their window), and checks that both give the same hyperedges.
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


def windows(sizes: list[int]) -> None:
    from phg2st_sc.pp._hypergraph import _window_neighbours, neighbour_hyperedges

    print("| layout | spots | tiles | distinct windows | per spot s | distinct windows s | speed-up |")
    print("|---|---|---|---|---|---|---|")
    for layout in ("visium", "visium_hd"):
        for n in sizes:
            a = phg2st.datasets.synthetic(n, 2, layout=layout, n_features=8, grid_size=5, seed=0)
            index = a.obsm["X_synthetic_neighbours"]
            tiles = np.random.default_rng(0).normal(size=(index.max() + 1, 1024)).astype(np.float32)
            t0 = time.perf_counter()
            before = _window_neighbours(tiles, index, 4)
            t1 = time.perf_counter()
            after = neighbour_hyperedges(tiles, index, 4)
            t2 = time.perf_counter()
            assert np.array_equal(before, after)
            n_windows = len(np.unique(index, axis=0))
            print(f"| {layout} | {n:,} | {len(tiles):,} | {n_windows:,} | {t1 - t0:.2f} | {t2 - t1:.2f} | "
                  f"{(t1 - t0) / (t2 - t1):.1f}x |")  # fmt: skip


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--windows", action="store_true", help="time the neighbour-tile sub-hypergraphs")
    parser.add_argument("--dim", type=int, default=1024)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10_000, 100_000])
    parser.add_argument("--dense-max", type=int, default=10_000)
    args = parser.parse_args()
    if args.windows:
        windows(args.sizes)
        raise SystemExit
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
