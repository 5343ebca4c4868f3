"""UNI's architecture (ViT-L/16, random weights) on real her2st tiles: tiles/s through ``pp.embed_tiles`` and bare.

For the GPU measurement of issue 17 (random weights give UNI's speed, not its features). Two steps, because a lent
GPU machine has no data folder:

1. ``prepare`` (here, with ``$PHG2ST_DATA_DIR``): section C2 (spots and scale factors) and its full-resolution H&E
   JPEG (4 MB) into ``DIR``::

       PHG2ST_DATA_DIR=../shared/data .venv/bin/python benchmarks/bench_uni.py prepare .unidata

2. ``run``: ``pp.embed_tiles`` of C2 with the 5 x 5 neighbour windows (each spot's tile and each distinct lattice
   tile once), timed after one warm-up call, and the bare forward pass of the same number of tiles from random
   tensors; the data-loading share is ``1 - bare / pipeline``::

       python benchmarks/bench_uni.py run .unidata --device cuda --precision bf16 --out uni_h200.json
       .venv/bin/python benchmarks/bench_uni.py run .unidata --device cpu --precision fp32 --max-spots 16  # a check

Prints one JSON line per measurement; ``--out`` collects them.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import time
import warnings
from pathlib import Path

SECTION = "C2"


def prepare(out: Path) -> None:
    import phg2st_sc as phg2st
    from phg2st_sc._image import full_resolution_path

    out.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        a = phg2st.datasets.her2st(SECTION)
    image = full_resolution_path(a)
    shutil.copyfile(image, out / f"{SECTION}.jpg")
    a.uns["spatial"][SECTION]["metadata"].pop("source_image_path", None)  # set again by `run`, where the copy lies
    a.write_h5ad(out / f"{SECTION}.h5ad")
    print(f"wrote {out / SECTION}.h5ad and .jpg")


def uni_architecture():
    """ViT-L/16 as UNI builds it (``_encoders._uni``), with random weights."""
    import timm

    return timm.create_model("vit_large_patch16_224", pretrained=False, img_size=224, patch_size=16,
                             init_values=1e-5, num_classes=0, dynamic_img_size=True)  # fmt: skip


def run(folder: Path, device: str, precision: str, batch_size: int, max_spots: int | None) -> list[dict]:
    import anndata as ad
    import torch

    import phg2st_sc as phg2st
    from phg2st_sc._image import image_size
    from phg2st_sc.pp._tiles import plan_tiles

    phg2st.settings.progress = False
    a = ad.read_h5ad(folder / f"{SECTION}.h5ad")
    a.uns["spatial"][SECTION]["metadata"]["source_image_path"] = str((folder / f"{SECTION}.jpg").resolve())
    if max_spots:
        a = a[:max_spots].copy()
    w, h = image_size(folder / f"{SECTION}.jpg")
    plan = plan_tiles(a.obsm["spatial"], (h, w), 224, 5)
    rows = [{"what": "machine", "device": device, "torch": torch.__version__, "cpu": platform.processor(),
             "gpu": torch.cuda.get_device_name(0) if device.startswith("cuda") else None}]  # fmt: skip
    model = uni_architecture()
    # warm-up (CUDA context, kernel selection), then the timed call on a fresh copy
    phg2st.pp.embed_tiles(a.copy(), encoder=model, device=device, precision=precision, batch_size=batch_size)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    t = time.perf_counter()
    phg2st.pp.embed_tiles(a.copy(), encoder=model, device=device, precision=precision, batch_size=batch_size)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    pipeline = time.perf_counter() - t
    tiles = plan.n_passes
    rows.append({"what": "embed_tiles", "spots": a.n_obs, "tiles": tiles, "seconds": round(pipeline, 3),
                 "tiles_per_s": round(tiles / pipeline, 1), "precision": precision, "batch_size": batch_size,
                 "gpu_peak_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2) if device.startswith("cuda") else None})  # fmt: skip
    model = model.to(device).eval()
    x = torch.randn(batch_size, 3, 224, 224, device=device)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    kind = "cuda" if device.startswith("cuda") else "cpu"
    n_batches = max(1, -(-tiles // batch_size))
    with torch.inference_mode(), torch.autocast(kind, dtype=dtype, enabled=dtype is not None):
        model(x)
        if kind == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        for _ in range(n_batches):
            model(x)
        if kind == "cuda":
            torch.cuda.synchronize()
        bare = time.perf_counter() - t
    bare_per_tile = bare / (n_batches * batch_size)
    rows.append({"what": "bare_forward", "tiles_per_s": round(1 / bare_per_tile, 1), "batches": n_batches,
                 "data_loading_share": round(1 - bare_per_tile * tiles / pipeline, 3)})  # fmt: skip
    for r in rows:
        print(json.dumps(r), flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("step", choices=["prepare", "run"])
    parser.add_argument("folder")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--precision", default="bf16", choices=["fp32", "bf16", "fp16"])
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--max-spots", type=int, default=None, help="the first spots only (a quick check)")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    if args.step == "prepare":
        prepare(Path(args.folder))
        return
    rows = run(Path(args.folder), args.device, args.precision, args.batch_size, args.max_spots)
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
