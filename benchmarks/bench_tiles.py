"""Tile embedding benchmarks: encoder passes (lattice vs naive) and encoder throughput on this machine.

Usage: PHG2ST_DATA_DIR=../shared/data .venv/bin/python benchmarks/bench_tiles.py [--tiles 256] [--bf16]
Prints markdown tables (docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import os
import platform
import time
import warnings

import numpy as np
import torch

import phg2st_sc as phg2st
from phg2st_sc._image import full_resolution_path, image_size, read_full
from phg2st_sc._model._embed import embed_regions, resolve_precision
from phg2st_sc._model._encoders import get_encoder
from phg2st_sc.pp._tiles import RegionReader, plan_tiles


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    return f"{os.cpu_count()} cores ({cpu}), torch {torch.__version__}, {torch.get_num_threads()} threads"


def passes_table() -> None:
    print("| section | spots | naive crops n x 26 | lattice passes n + T | ratio |")
    print("|---|---|---|---|---|")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for section in ("C2", "C3", "C4", "C5", "C6"):
            a = phg2st.datasets.her2st(section)
            w, h = image_size(full_resolution_path(a))
            plan = plan_tiles(a.obsm["spatial"], (h, w), 224, 5)
            print(f"| {section} | {a.n_obs} | {plan.n_naive} | {plan.n_passes} | {plan.n_naive / plan.n_passes:.1f}x |")


def throughput(n_tiles: int, precisions: list[str], batch_size: int = 32) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        a = phg2st.datasets.her2st("C2")
    path = full_resolution_path(a)
    w, h = image_size(path)
    plan = plan_tiles(a.obsm["spatial"], (h, w), 224, 5)
    boxes = np.concatenate([plan.spot_boxes, plan.cell_boxes])[:n_tiles]
    enc = get_encoder("efficientnet_lite0")
    print(
        "| precision | pipeline tiles/s (C2 tiles, decode + crop + encode) | bare forward tiles/s (random tensors) | data loading share |"
    )
    print("|---|---|---|---|")
    for prec in precisions:
        reader = RegionReader(read_full(path))  # image decoded before timing, as the pipeline does once per slide
        embed_regions(reader, boxes[:batch_size], 224, enc, batch_size=batch_size, precision=prec, progress=False)
        t = time.perf_counter()
        embed_regions(reader, boxes, 224, enc, batch_size=batch_size, precision=prec, progress=False)
        pipeline = time.perf_counter() - t
        model = enc.model.to(memory_format=torch.channels_last)
        x = torch.randn(batch_size, 3, 224, 224).contiguous(memory_format=torch.channels_last)
        dtype = torch.bfloat16 if prec == "bf16" else None
        with torch.inference_mode(), torch.autocast("cpu", dtype=dtype, enabled=dtype is not None):
            model(x)
            t = time.perf_counter()
            for _ in range(len(boxes) // batch_size):
                model(x)
            bare = (time.perf_counter() - t) / ((len(boxes) // batch_size) * batch_size) * len(boxes)
        print(f"| {prec} | {len(boxes) / pipeline:.1f} | {len(boxes) / bare:.1f} | {1 - bare / pipeline:.0%} |")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--tiles", type=int, default=256)
    parser.add_argument("--bf16", action="store_true", help="also time bf16 autocast (slow where the CPU lacks bf16)")
    args = parser.parse_args()
    phg2st.settings.progress = False
    print(f"Machine: {machine()}; auto precision here: {resolve_precision('auto', torch.device('cpu'))}\n")
    passes_table()
    print()
    throughput(args.tiles, ["fp32", "bf16"] if args.bf16 else ["fp32"])
