"""A whole slide as a tiled TIFF through ``pp.embed_tiles``: tiles/s against the data-loader workers.

A synthetic H&E-like slide (smooth colour fields and noise, 8-bit RGB, 256-pixel tiles, zlib) is written to a
tiled TIFF, which ``embed_tiles`` reads lazily (only the tiles a spot covers are decoded). Spots lie on a square
grid at the tile size (spot tiles only: ``grid_size=0``), so every part of the slide is read about once. For each
number of workers: the call's seconds and tiles/s after a warm-up, and the largest difference of its embeddings
from the first run's. On a GPU this measures whether the reading keeps up with UNI's architecture (ViT-L/16,
random weights) in bf16:

    python benchmarks/bench_tiff_read.py --side 16000 --device cuda --precision bf16 --out tiff_h200.json
    .venv/bin/python benchmarks/bench_tiff_read.py --side 1200 --encoder efficientnet_lite0 --device cpu  # a check

Prints one JSON line per measurement; ``--out`` collects them.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))


def slide(path: Path, side: int, seed: int = 0) -> None:
    """Write a ``side`` x ``side`` RGB tiled TIFF with H&E-like content (compressible, not constant)."""
    import tifffile
    from PIL import Image

    rng = np.random.default_rng(seed)
    coarse = rng.integers(120, 250, (max(side // 512, 2), max(side // 512, 2), 3), dtype=np.uint8)
    base = np.asarray(Image.fromarray(coarse).resize((side, side), Image.Resampling.BILINEAR))
    img = np.empty_like(base)
    for s in range(0, side, 2048):  # noise in row blocks: no second full-size float array
        noise = rng.integers(-12, 13, (min(2048, side - s), side, 3), dtype=np.int16)
        img[s : s + 2048] = np.clip(base[s : s + 2048].astype(np.int16) + noise, 0, 255).astype(np.uint8)
    tifffile.imwrite(path, img, tile=(256, 256), compression="zlib", photometric="rgb", maxworkers=os.cpu_count())


def section(path: Path, side: int, pitch: int):
    """Spots on a square grid of ``pitch`` pixels over the slide, as embed_tiles reads them."""
    from anndata import AnnData

    g = np.arange(pitch // 2, side - pitch // 2, pitch, dtype=float)
    xy = np.column_stack([np.tile(g, len(g)), np.repeat(g, len(g))])
    a = AnnData(np.ones((len(xy), 1), dtype=np.float32))
    a.obsm["spatial"] = xy
    a.uns["spatial"] = {"s": {"images": {}, "scalefactors": {"tissue_hires_scalef": 1.0, "spot_diameter_fullres": 55.0},
                              "metadata": {"source_image_path": str(path), "microns_per_pixel": 0.5}}}  # fmt: skip
    return a


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--side", type=int, default=16000, help="slide side in pixels")
    ap.add_argument("--encoder", default="uni_architecture", help="uni_architecture (random weights) or a name")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--precision", default="bf16")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--workers", type=int, nargs="+", default=[8, 15, 4, 0], help="the first is the reference")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()

    import torch

    import phg2st_sc as phg2st

    phg2st.settings.progress = False
    if args.encoder == "uni_architecture":
        from bench_uni import uni_architecture

        encoder = uni_architecture().eval()
    else:
        encoder = args.encoder
    records = []
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "slide.tif"
        t0 = time.perf_counter()
        slide(path, args.side)
        a = section(path, args.side, 224)
        base = {"side": args.side, "spots": a.n_obs, "tiff_mb": round(path.stat().st_size / 2**20, 1),
                "encoder": args.encoder, "device": args.device, "precision": args.precision, "cpus": os.cpu_count(),
                "gpu": torch.cuda.get_device_name(0) if args.device.startswith("cuda") else None,
                "write_s": round(time.perf_counter() - t0, 1)}  # fmt: skip
        kw = {"encoder": encoder, "tile_size": 224, "grid_size": 0, "device": args.device,
              "precision": args.precision, "batch_size": args.batch_size, "copy": True, "key_added": "X_e"}  # fmt: skip
        phg2st.pp.embed_tiles(a[: args.batch_size].copy(), num_workers=0, **kw)  # warm-up (weights on the device)
        ref = None
        for w in args.workers:
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()
            t = time.perf_counter()
            out = phg2st.pp.embed_tiles(a, num_workers=w, **kw).obsm["X_e"]
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()
            sec = time.perf_counter() - t
            ref = out if ref is None else ref
            rec = {**base, "workers": w, "seconds": round(sec, 2), "tiles_per_s": round(a.n_obs / sec, 1),
                   "max_abs_diff_to_first": float(np.abs(out - ref).max())}  # fmt: skip
            print(json.dumps(rec), flush=True)
            records.append(rec)
    if args.out:
        Path(args.out).write_text(json.dumps(records, indent=1))


if __name__ == "__main__":
    main()
