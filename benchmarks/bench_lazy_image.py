"""Peak memory of ``pp.embed_tiles`` on a whole-slide image: decoded whole (JPEG) against read lazily (tiled TIFF).

Stages, each in a fresh process so that its peak resident memory (ru_maxrss) is its own:

- ``jpeg``: her2st C2 (its 9,274 x 9,911 JPEG, decoded whole: JPEG has no tiles to read on their own), every spot.
- ``tiff_lazy``: a synthetic 50,000 x 50,000 RGB pyramidal TIFF (512-pixel tiles, zlib, two reduced levels; written
  tile by tile, so the generator never holds it either), 2,000 spots spread over the whole slide.
- ``tiff_eager``: the obvious alternative on the same file: decode its full-resolution level into memory
  (``tifffile.imread``), the way a JPEG is read, then take the same spots' tiles from the array.

The encoder is ``efficientnet_lite0`` (offline weights) with no neighbour tiles (``grid_size=0``): the point is the
image, not the encoder.

Usage:
    PHG2ST_DATA_DIR=../shared/data .venv/bin/python benchmarks/bench_lazy_image.py --out benchmarks/results/lazy_image.json
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

SIDE = 50_000
TILE = 512
SPOTS = 2_000


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _tile(y0: int, x0: int, step: int) -> np.ndarray:
    """Pixels of the (TILE x TILE) tile at level pixel (y0, x0) of the level ``step`` times reduced: a smooth pattern."""
    yy, xx = np.mgrid[y0 : y0 + TILE, x0 : x0 + TILE].astype(np.float32) * step
    r = 180 + 60 * np.sin(xx / 700.0) * np.cos(yy / 900.0)
    g = 120 + 80 * np.sin((xx + yy) / 1500.0)
    b = 200 + 40 * np.cos(xx / 300.0)
    return np.clip(np.stack([r, g, b], -1), 0, 255).astype(np.uint8)


def write_slide(path: Path) -> None:
    import tifffile

    def tiles(side: int, step: int):
        for y in range(0, side, TILE):
            for x in range(0, side, TILE):
                yield _tile(y, x, step)

    opts = {"tile": (TILE, TILE), "compression": "zlib", "compressionargs": {"level": 1}, "photometric": "rgb",
            "dtype": np.uint8}  # fmt: skip
    with tifffile.TiffWriter(path, bigtiff=True) as w:
        w.write(tiles(SIDE, 1), shape=(SIDE, SIDE, 3), subifds=2, **opts)
        for step in (4, 16):
            side = SIDE // step
            w.write(tiles(side, step), shape=(side, side, 3), subfiletype=1, **opts)


def _slide_adata(path: Path):
    from anndata import AnnData

    coords = np.random.default_rng(0).uniform(200, SIDE - 200, (SPOTS, 2))
    a = AnnData(np.ones((SPOTS, 1), dtype=np.float32))
    a.obsm["spatial"] = coords
    a.uns["spatial"] = {"slide": {"images": {}, "scalefactors": {"tissue_hires_scalef": 1.0, "spot_diameter_fullres": 100.0},
                                  "metadata": {"source_image_path": str(path), "microns_per_pixel": 0.5}}}  # fmt: skip
    return a


def stage(name: str, path: str | None) -> dict:
    import phg2st_sc as phg2st

    phg2st.settings.progress = False
    rec: dict = {"stage": name}
    if name == "jpeg":
        a = phg2st.datasets.her2st("C2")
        rec["image"] = "her2st C2 JPEG, 9,274 x 9,911"
    else:
        a = _slide_adata(Path(path))
        rec["image"] = f"synthetic tiled TIFF, {SIDE:,} x {SIDE:,}, {Path(path).stat().st_size / 2**20:.0f} MiB on disk"
    rec["spots"] = a.n_obs
    rec["rss_before_mib"] = _rss_mib()
    t = time.perf_counter()
    if name == "tiff_eager":
        import tifffile

        from phg2st_sc.pp._tiles import RegionReader

        pixels = tifffile.imread(path, series=0, level=0)
        reader = RegionReader(pixels)
        boxes = np.floor(a.obsm["spatial"] - 112 + 0.5).astype(int)
        tiles = [reader.read(x, y, 224) for x, y in boxes]
        rec["tiles_read"] = len(tiles)
    else:
        phg2st.pp.embed_tiles(a, encoder="efficientnet_lite0", grid_size=0, num_workers=0)
    rec["seconds"] = time.perf_counter() - t
    rec["peak_rss_mib"] = _rss_mib()
    return rec


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stage", choices=["jpeg", "tiff_lazy", "tiff_eager"])
    parser.add_argument("--path", default=None, help="the synthetic TIFF (internal)")
    parser.add_argument("--out", default=None, help="write the results as JSON here")
    args = parser.parse_args()
    if args.stage:
        print(json.dumps(stage(args.stage, args.path)), flush=True)
        return
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "slide.tif"
        t = time.perf_counter()
        write_slide(path)
        print(json.dumps({"wrote": f"{SIDE} x {SIDE} TIFF", "seconds": time.perf_counter() - t}), flush=True)
        for name in ("jpeg", "tiff_lazy", "tiff_eager"):
            cmd = [sys.executable, __file__, "--stage", name, "--path", str(path)]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            rec = json.loads(proc.stdout.strip().splitlines()[-1]) if proc.returncode == 0 else \
                {"stage": name, "error": proc.stderr.strip()[-300:]}  # fmt: skip
            print(json.dumps(rec), flush=True)
            rows.append(rec)
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
