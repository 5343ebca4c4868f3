"""Time and peak memory at Visium / Visium HD scale on synthetic slides, with the naive way side by side.

Stages, each in a fresh Python process so its peak resident memory (ru_maxrss) is its own:

- ``hypergraph``: ``pp.build_hypergraph`` (spot hypergraph and the neighbour-tile sub-hypergraphs).
- ``hypergraph_naive``: the same spot hypergraph built the obvious way, a Python loop over spots that computes
  each spot's distances to every spot in both spaces and keeps the k smallest (same result, checked).
- ``spot_branch``: forward and backward of the slide-level transformer alone, windowed or full attention.
- ``epoch``: one training epoch of ``tl.fit`` on one section (``validation=None``, one step = the whole slide),
  with the default settings (windowed attention above 1024 spots).
- ``impute``: ``tl.impute`` of a slide from 10% prompts with a model trained on a small slide of the same kind.
- ``tiles``: encoder passes for the neighbour windows, once per distinct lattice tile (the project) against once
  per spot and window position (the naive way), counted exactly; time at the measured encoder throughput.

Usage:
    .venv/bin/python benchmarks/bench_scale.py --out benchmarks/results/scale.csv
    .venv/bin/python benchmarks/bench_scale.py --stage impute --n 100000 --layout visium_hd --genes 800
    python benchmarks/bench_scale.py --stage epoch --n 10000 --accelerator gpu   # on a machine with a GPU
    .venv/bin/python benchmarks/bench_scale.py --stage impute --n 100000 --profile impute_100k.txt

With ``--profile FILE``, the timed call of the stage runs under cProfile and FILE gets the functions with the
largest cumulative time (the seconds include the profiler's overhead: read the shares).

Synthetic slides come from ``phg2st.datasets.synthetic`` (1024-d features like UNI, 5 x 5 neighbour windows).
Prints one JSON line per stage; with ``--out`` all stages run and a CSV plus a markdown table are written.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import io
import json
import os
import pstats
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

FEATURES = 1024
HIDDEN = 256  # the token size the documented figures were measured with (tl.fit's default until 2026-12-05)
GRID = 5
TILES_PER_S = 42.0  # efficientnet_lite0, fp32, this CPU, whole pipeline (benchmarks/bench_tiles.py)


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _slide(n: int, genes: int, layout: str, seed: int = 0, section: str = "S"):
    import phg2st_sc as phg2st

    return phg2st.datasets.synthetic(n, genes, layout=layout, n_features=FEATURES, grid_size=GRID, seed=seed,
                                     section=section)  # fmt: skip


def _targets(a):
    """``tl.prepare_targets(a, "heldout")``; where scanpy is not installed (a bare GPU image), the same arithmetic
    (counts scaled to 10,000 per spot, then log1p) in numpy, with the slots the model reads."""
    import phg2st_sc as phg2st

    try:
        import scanpy  # noqa: F401
    except ImportError:
        from scipy import sparse

        out = a.copy()
        x = out.X.toarray() if sparse.issparse(out.X) else np.asarray(out.X, dtype=np.float64)
        out.X = np.log1p(x / np.maximum(x.sum(1, keepdims=True), 1e-12) * 1e4).astype(np.float32)
        return out
    return phg2st.tl.prepare_targets(a, "heldout")


def naive_hypergraph(a, k: int = 4) -> np.ndarray:
    """Per-spot loop: distances from each spot to all spots, normalised like the project, k smallest kept."""
    f = np.asarray(a.obsm["X_synthetic"], dtype=np.float32)
    p = np.asarray(a.obsm["spatial"], dtype=np.float64)
    n = len(f)
    kth_f, kth_p = np.empty(n), np.empty(n)
    for i in range(n):  # first pass: the mean distance to the k-th neighbour in each space (the Norm)
        kth_f[i] = np.partition(np.linalg.norm(f - f[i], axis=1), k)[k]
        kth_p[i] = np.partition(np.linalg.norm(p - p[i], axis=1), k)[k]
    s_f, s_p = kth_f.mean(), kth_p.mean()
    out = np.empty((n, k), dtype=np.int64)
    for i in range(n):
        d = np.linalg.norm(f - f[i], axis=1) / s_f + np.linalg.norm(p - p[i], axis=1) / s_p
        d[i] = np.inf
        nn = np.argpartition(d, k)[:k]
        out[i] = nn[np.argsort(d[nn], kind="stable")]
    return out


@contextlib.contextmanager
def _profiled(path: str | None, top: int = 60):
    """cProfile around the block; the ``top`` functions by cumulative time written to ``path`` (if given)."""
    if not path:
        yield
        return
    prof = cProfile.Profile()
    prof.enable()
    try:
        yield
    finally:
        prof.disable()
        buf = io.StringIO()
        pstats.Stats(prof, stream=buf).sort_stats("cumulative").print_stats(top)
        Path(path).write_text(buf.getvalue())


def stage(args) -> dict:
    import pandas as pd

    import phg2st_sc as phg2st

    phg2st.settings.progress = False
    rec = {"stage": args.stage, "n_spots": args.n, "layout": args.layout, "genes": args.genes}
    if args.stage == "tiles":
        a = phg2st.datasets.synthetic(args.n, 1, layout=args.layout, n_features=1, grid_size=GRID)
        # the project: each spot's own tile plus each distinct lattice tile once; naive: the spot's tile and its
        # 25 window tiles cropped and embedded for every spot
        project = args.n + len(a.uns["X_synthetic"]["tile_embeddings"])
        naive = args.n * (GRID * GRID + 1)
        return {**rec, "project_passes": project, "naive_passes": naive, "ratio": naive / project,
                "project_s_est": project / TILES_PER_S, "naive_s_est": naive / TILES_PER_S}  # fmt: skip
    a = _slide(args.n, args.genes, args.layout)
    rec["rss_before_mib"] = _rss_mib()
    if args.stage == "hypergraph":
        t = time.perf_counter()
        with _profiled(args.profile):
            phg2st.pp.build_hypergraph(a, use_rep="X_synthetic", k=4)
        rec["seconds"] = time.perf_counter() - t
    elif args.stage == "hypergraph_naive":
        t = time.perf_counter()
        edges = naive_hypergraph(a, k=4)
        rec["seconds"] = time.perf_counter() - t
        phg2st.pp.build_hypergraph(a, use_rep="X_synthetic", k=4)
        inc = a.obsp["phg2st_incidence"].tocsc()
        same = 0
        for j in range(a.n_obs):  # hyperedge j = j and its k nearest
            members = set(inc.indices[inc.indptr[j] : inc.indptr[j + 1]]) - {j}
            same += members == set(edges[j])
        rec["agreement"] = same / a.n_obs
    elif args.stage == "epoch":
        phg2st.pp.build_hypergraph(a, use_rep="X_synthetic", k=4)
        work = _targets(a)
        del a
        rec["rss_before_mib"] = _rss_mib()
        window = 10**9 if args.full_attention else 1024
        rec["attention"] = "full" if args.full_attention else "windows of 1024"
        t = time.perf_counter()
        with _profiled(args.profile):
            model = phg2st.tl.fit(work, use_rep="X_synthetic", max_epochs=1, validation=None,
                                  accelerator=args.accelerator, config={"attention_window": window, "hidden": HIDDEN})  # fmt: skip
        rec["seconds"] = time.perf_counter() - t
        rec["epoch_seconds"] = float(pd.DataFrame(model.history_)["seconds"].iloc[-1])
    elif args.stage == "spot_branch":
        from phg2st_sc._model._config import ModelConfig
        from phg2st_sc._model._data import slide_batch
        from phg2st_sc._model._model import PHG2ST

        phg2st.pp.build_hypergraph(a, use_rep="X_synthetic", k=4)
        work = _targets(a)
        del a
        window = 10**9 if args.full_attention else 1024
        rec["attention"] = "full" if args.full_attention else "windows of 1024"
        cfg = ModelConfig(
            n_genes=work.n_vars,
            feature_dim=FEATURES,
            attention_window=window,
            use_neighbour_branch=False,
            hidden=HIDDEN,
        )
        model = PHG2ST(cfg, list(work.var_names), {"use_rep": "X_synthetic", "hypergraph_key": "phg2st", "layer": None})
        prompt = np.zeros(work.n_obs, dtype=bool)
        prompt[::10] = True
        batch = slide_batch(model.tensors(work), prompt, ~prompt, cfg.prompt_k)
        module = model.module.train()
        rec["rss_before_mib"] = _rss_mib()
        t = time.perf_counter()
        module.spot_tokens(batch).square().mean().backward()  # the slide-level transformer, forward and backward
        rec["seconds"] = time.perf_counter() - t
        rec["full_attention_matrix_gib"] = work.n_obs**2 * cfg.heads * 4 / 2**30
    elif args.stage == "impute":
        with tempfile.TemporaryDirectory() as tmp:
            small = _slide(1000, args.genes, args.layout, seed=1, section="train")
            phg2st.pp.build_hypergraph(small, use_rep="X_synthetic", k=4)
            small = _targets(small)
            model = phg2st.tl.fit(small, use_rep="X_synthetic", max_epochs=1, validation=None, accelerator="cpu",
                                  config={"hidden": HIDDEN})  # fmt: skip
            path = Path(tmp) / "model.pt"
            model.save(path)
            del model, small
            phg2st.pp.build_hypergraph(a, use_rep="X_synthetic", k=4)
            work = _targets(a)
            del a
            phg2st.tl.select_prompts(work, fraction=0.1, seed=0)
            model = phg2st.PHG2ST.load(path)
            rec["rss_before_mib"] = _rss_mib()
            t = time.perf_counter()
            with _profiled(args.profile):
                phg2st.tl.impute(work, model, device="cuda" if args.accelerator == "gpu" else "cpu")
            rec["seconds"] = time.perf_counter() - t
            rec["finite"] = bool(np.isfinite(work.layers["phg2st"]).all())
    rec["peak_rss_mib"] = _rss_mib()
    if args.accelerator == "gpu":
        import torch

        rec["accelerator"] = torch.cuda.get_device_name(0)
        rec["peak_gpu_mib"] = torch.cuda.max_memory_allocated() / 2**20
    return rec


PLAN = [
    *[("hypergraph", n, lay, 400, False) for lay in ("visium", "visium_hd") for n in (1000, 10000, 100000)],
    *[("hypergraph_naive", n, "visium", 400, False) for n in (1000, 10000)],
    *[("tiles", n, lay, 1, False) for lay in ("visium", "visium_hd") for n in (1000, 10000, 100000)],
    *[("epoch", n, "visium_hd", 400, False) for n in (1000, 10000)],
    *[("spot_branch", n, "visium_hd", 400, full) for n in (1000, 10000) for full in (False, True)],
    ("spot_branch", 100000, "visium_hd", 400, False),
    *[("impute", n, lay, 400, False) for lay in ("visium", "visium_hd") for n in (1000, 10000, 100000)],
    ("impute", 100000, "visium_hd", 800, False),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--stage", choices=["hypergraph", "hypergraph_naive", "epoch", "spot_branch", "impute", "tiles"]
    )
    parser.add_argument("--n", type=int, default=10000)
    parser.add_argument("--layout", default="visium_hd", choices=["visium", "visium_hd", "st"])
    parser.add_argument("--genes", type=int, default=400)
    parser.add_argument("--full-attention", action="store_true")
    parser.add_argument("--accelerator", default="cpu", choices=["cpu", "gpu"],
                        help="device of the epoch and impute stages (default: cpu)")  # fmt: skip
    parser.add_argument("--out", default=None, help="run every stage and write this CSV (and a .md table)")
    parser.add_argument("--profile", default=None, metavar="FILE",
                        help="profile the stage's timed call (hypergraph, epoch, impute); top functions to FILE")  # fmt: skip
    args = parser.parse_args()
    if args.stage:
        print(json.dumps(stage(args)), flush=True)
        return
    if not args.out:
        parser.error("give --stage or --out")
    import pandas as pd

    rows = []
    for name, n, layout, genes, full in PLAN:
        cmd = [sys.executable, __file__, "--stage", name, "--n", str(n), "--layout", layout, "--genes", str(genes)]
        cmd += ["--full-attention"] if full else []
        proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONWARNINGS": "ignore"})
        if proc.returncode != 0:
            rec = {"stage": name, "n_spots": n, "layout": layout, "genes": genes, "error": proc.stderr.strip()[-300:]}
        else:
            rec = json.loads(proc.stdout.strip().splitlines()[-1])
        print(json.dumps(rec), flush=True)
        rows.append(rec)
        pd.DataFrame(rows).to_csv(args.out, index=False)
    table = pd.DataFrame(rows)
    Path(args.out).with_suffix(".md").write_text(table.to_markdown(index=False, floatfmt=".3g"))


if __name__ == "__main__":
    main()
