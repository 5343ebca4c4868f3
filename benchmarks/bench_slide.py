"""A whole Visium HD slide at 8 µm end to end on this machine: time and memory of each step (issue 17).

A synthetic slide of ``--n`` bins (``phg2st.datasets.synthetic``, ``layout="visium_hd"``, 8 µm bins, 1024-d spot
and tile features like UNI's, 5 x 5 neighbour windows, ``--genes`` genes) goes through the pipeline a user runs
once the tiles are embedded:

1. ``pp.build_hypergraph`` (the spot hypergraph and the window sub-hypergraphs);
2. ``tl.prepare_targets`` (the model's normalisation) and ``tl.select_prompts`` (10% random prompts);
3. ``tl.impute`` with the default (adaptive) model, uncertainty included, trained beforehand (``tl.fit``) on
   ``--crops`` crops of ``--crop-n`` bins cut from other slides of the same kind (other seeds);
4. the AnnData written to ``.h5ad``, and as a SpatialData zarr store (``io.to_spatialdata(..., image=False,
   copy=False)``).

Making the slide and training the model (in a child process, which saves it; the pipeline loads it) are timed too
but are not part of the pipeline's figure. A thread samples
the process's resident memory every 20 ms, so each step gets its own peak (the process's peak is the largest);
``--profile DIR`` writes a cProfile of the impute and the writes there.

Usage:
    .venv/bin/python benchmarks/bench_slide.py --out benchmarks/results/slide_hd_600k.json
    .venv/bin/python benchmarks/bench_slide.py --n 100000 --out /tmp/slide_100k.json   # a smaller rehearsal
    python benchmarks/bench_slide.py --device cuda --no-zarr --out slide_hd_600k_h200.json   # on a GPU machine
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import gc
import io
import json
import os
import platform
import pstats
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

FEATURES = 1024
GRID = 5
HIDDEN = 256  # the token size the documented figures were measured with (tl.fit's default until 2026-12-05)


class Memory:
    """Peak resident memory of this process per labelled step, sampled by a background thread."""

    def __init__(self, interval: float = 0.02):
        self.interval, self.peak, self._stop = interval, 0, threading.Event()
        self._page = os.sysconf("SC_PAGE_SIZE")
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def rss(self) -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * self._page

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.rss())
            time.sleep(self.interval)

    def reset(self) -> None:
        self.peak = self.rss()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


@contextlib.contextmanager
def step(name: str, record: list, memory: Memory, profile_dir: str | None = None):
    """Time one step and its peak resident memory; print and append a row to ``record``.

    Python's cyclic garbage collector runs first: an AnnData is in a reference cycle (its layers and obsm hold their
    parent), so one a step replaced (``prepare_targets`` returns a new one) is freed only when the collector runs,
    and whether that fell inside ``impute`` moved its peak by 3.4 GiB between two runs of the same code (13.15 and
    16.56 GiB). Collected before each step, the figures are the steps' own.
    """
    gc.collect()
    memory.reset()
    before = memory.rss()
    prof = cProfile.Profile() if profile_dir else None
    t = time.perf_counter()
    if prof:
        prof.enable()
    try:
        yield
    finally:
        if prof:
            prof.disable()
            buf = io.StringIO()
            pstats.Stats(prof, stream=buf).sort_stats("cumulative").print_stats(50)
            Path(profile_dir, f"{name}.txt").write_text(buf.getvalue())
        seconds = time.perf_counter() - t
        row = {"step": name, "seconds": round(seconds, 2), "rss_before_gib": round(before / 2**30, 2),
               "peak_rss_gib": round(max(memory.peak, memory.rss()) / 2**30, 2)}  # fmt: skip
        record.append(row)
        print(json.dumps(row), flush=True)


def slide(n: int, genes: int, seed: int, section: str, bin_um: float):
    import phg2st_sc as phg2st

    return phg2st.datasets.synthetic(n, genes, layout="visium_hd", n_features=FEATURES, grid_size=GRID, seed=seed,
                                     section=section, bin_size_um=bin_um)  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=600_000, help="bins of the slide (default 600,000)")
    parser.add_argument("--genes", type=int, default=400)
    parser.add_argument("--bin-um", type=float, default=8.0)
    parser.add_argument("--crops", type=int, default=2, help="training crops (sections of --crop-n bins)")
    parser.add_argument("--crop-n", type=int, default=10_000)
    parser.add_argument("--epochs", type=int, default=2, help="training epochs (the model's speed, not its accuracy)")
    parser.add_argument("--out", default=None, help="JSON file of the steps (printed as they finish anyway)")
    parser.add_argument("--workdir", default=None, help="where the h5ad and zarr go (default: a temporary folder)")
    parser.add_argument("--profile", default=None, metavar="DIR", help="cProfile of impute and the writes to DIR")
    parser.add_argument("--device", default="cpu", help="torch device of the training and the impute (cpu, cuda)")
    parser.add_argument(
        "--no-zarr", action="store_true", help="skip the SpatialData write (where spatialdata is not installed)"
    )
    parser.add_argument("--train-only", default=None, metavar="MODEL", help=argparse.SUPPRESS)
    args = parser.parse_args()

    import torch

    import phg2st_sc as phg2st

    phg2st.settings.progress = False
    memory, steps = Memory(), []
    if args.profile:
        Path(args.profile).mkdir(parents=True, exist_ok=True)
    if args.train_only:  # the child process: train on the crops and save the model
        with step("train crops: make, hypergraph, targets", steps, memory):
            crops = []
            for i in range(args.crops):
                c = slide(args.crop_n, args.genes, 100 + i, f"crop{i}", args.bin_um)
                phg2st.pp.build_hypergraph(c, use_rep="X_synthetic")
                crops.append(phg2st.tl.prepare_targets(c, "heldout"))
        with step("train: tl.fit", steps, memory):
            model = phg2st.tl.fit(crops, use_rep="X_synthetic", max_epochs=args.epochs, validation=None,
                                  accelerator="gpu" if args.device.startswith("cuda") else "cpu",
                                  config={"hidden": HIDDEN})  # fmt: skip
        model.save(args.train_only)
        memory.stop()
        Path(args.train_only + ".json").write_text(json.dumps(steps))
        return
    work = Path(args.workdir or tempfile.mkdtemp(prefix="phg2st_slide_"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        # trained in a child process, as a user would train once and impute many slides: what training leaves in
        # a process's heap is not counted against the pipeline
        model_path = str(work / "model.pt")
        child = [sys.executable, __file__, "--train-only", model_path, "--genes", str(args.genes), "--bin-um",
                 str(args.bin_um), "--crops", str(args.crops), "--crop-n", str(args.crop_n), "--epochs", str(args.epochs),
                 "--device", args.device]  # fmt: skip
        subprocess.run(child, check=True)
        steps += json.loads(Path(model_path + ".json").read_text())
        model = phg2st.PHG2ST.load(model_path)
        with step("make the slide (synthetic)", steps, memory):
            a = slide(args.n, args.genes, 0, "slide", args.bin_um)
        n_tiles = len(a.uns["X_synthetic"]["tile_embeddings"])
        t0 = time.perf_counter()
        with step("pp.build_hypergraph", steps, memory):
            phg2st.pp.build_hypergraph(a, use_rep="X_synthetic")
        with step("tl.prepare_targets + tl.select_prompts", steps, memory):
            a = phg2st.tl.prepare_targets(a, model)  # a new AnnData (the counts stay as they were); the old one goes
            phg2st.tl.select_prompts(a, fraction=0.1, seed=0)
        with step("tl.impute", steps, memory, args.profile):
            phg2st.tl.impute(a, model, device=args.device)
        with step("write h5ad", steps, memory, args.profile):
            a.write_h5ad(work / "slide.h5ad")
        if not args.no_zarr:
            with step("write SpatialData zarr", steps, memory, args.profile):
                phg2st.io.to_spatialdata(a, image=False, copy=False).write(work / "slide.zarr")
        pipeline = time.perf_counter() - t0
        finite = bool(np.isfinite(a.layers["phg2st"]).all())
        sizes = {p.name: sum(f.stat().st_size for f in p.rglob("*") if f.is_file()) if p.is_dir() else p.stat().st_size
                 for p in (work / "slide.h5ad", work / "slide.zarr") if p.exists()}  # fmt: skip
    finally:
        memory.stop()
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)
    result = {
        "n_bins": args.n, "bin_um": args.bin_um, "genes": args.genes, "features": FEATURES,
        "tiles": n_tiles, "prompts": int(a.obs["phg2st_prompt"].sum()), "layers": sorted(a.layers),
        "pipeline_seconds": round(pipeline, 1),
        "pipeline_peak_rss_gib": max(s["peak_rss_gib"] for s in steps[3:]),
        "finite": finite, "file_gib": {k: round(v / 2**30, 2) for k, v in sizes.items()},
        "steps": steps, "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "torch_threads": torch.get_num_threads(), "device": args.device, "train": {"crops": args.crops, "crop_n": args.crop_n,
                                                           "epochs": args.epochs},
    }  # fmt: skip
    print(json.dumps({k: v for k, v in result.items() if k != "steps"}, indent=1))
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
