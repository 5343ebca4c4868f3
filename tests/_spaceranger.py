"""A format-faithful Space Ranger (Visium) output folder built from real her2st pixels and counts.

``make_spaceranger(folder, adata)`` writes what ``spaceranger count`` leaves in ``outs/`` and spatialdata-io's
``visium`` reader reads: ``filtered_feature_bc_matrix.h5`` (10x HDF5, feature-barcode matrix v3: a genes x
barcodes CSC matrix with its features group and the ``library_ids`` attribute), ``spatial/tissue_positions.csv``
(Space Ranger >= 2.0 columns, with header), ``spatial/scalefactors_json.json`` and the ``tissue_hires_image.png`` /
``tissue_lowres_image.png`` downscales. The "full-resolution" image is a crop of the section's real H&E; spots,
counts and genes are the section's own (a subset).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp
from _platforms import write_10x_h5
from PIL import Image

HIRES_SCALEF, LOWRES_SCALEF = 0.5, 0.125


def make_spaceranger(folder: Path, adata, *, n_spots: int = 60, n_genes: int = 40, library_id: str = "S1") -> Path:
    """Write a Space Ranger ``outs`` folder for the ``n_spots`` spots nearest the centre of ``adata`` (her2st)."""
    lib = next(iter(adata.uns["spatial"]))
    info = adata.uns["spatial"][lib]
    image = np.asarray(info["images"]["hires"])
    image = (image * 255).astype(np.uint8) if image.dtype != np.uint8 else image
    scalef = info["scalefactors"]["tissue_hires_scalef"]
    xy = np.asarray(adata.obsm["spatial"], float) * scalef  # spot centres in the pixels of that image
    keep = np.argsort(((xy - np.median(xy, 0)) ** 2).sum(1))[:n_spots]
    diameter = float(info["scalefactors"]["spot_diameter_fullres"]) * scalef
    lo = np.floor(xy[keep].min(0) - diameter).astype(int).clip(0)
    hi = np.ceil(xy[keep].max(0) + diameter).astype(int)
    full = image[lo[1] : hi[1], lo[0] : hi[0], :3]  # the crop is the "full-resolution" image
    pos = xy[keep] - lo
    counts = adata.X[keep][:, :n_genes]
    counts = sp.csr_matrix(np.rint(counts.toarray() if sp.issparse(counts) else counts).astype(np.int32))
    barcodes = [f"{''.join(np.random.default_rng(i).choice(list('ACGT'), 16))}-1" for i in range(n_spots)]
    genes = list(adata.var_names[:n_genes])

    outs = Path(folder)
    (outs / "spatial").mkdir(parents=True, exist_ok=True)
    write_10x_h5(outs / "filtered_feature_bc_matrix.h5", counts, barcodes, genes, "spaceranger-2.1.0",
                 library_id=library_id, chemistry_description=b"Spatial 3' v1")  # fmt: skip
    rows, cols = np.divmod(np.arange(n_spots), 10)
    pd.DataFrame(
        {"barcode": barcodes, "in_tissue": 1, "array_row": rows, "array_col": cols,
         "pxl_row_in_fullres": np.rint(pos[:, 1]).astype(int), "pxl_col_in_fullres": np.rint(pos[:, 0]).astype(int)}
    ).to_csv(outs / "spatial" / "tissue_positions.csv", index=False)  # fmt: skip
    json.dump({"spot_diameter_fullres": diameter, "fiducial_diameter_fullres": 1.6 * diameter,
               "tissue_hires_scalef": HIRES_SCALEF, "tissue_lowres_scalef": LOWRES_SCALEF},
              open(outs / "spatial" / "scalefactors_json.json", "w"))  # fmt: skip
    pil = Image.fromarray(full)
    for name, s in (("tissue_hires_image.png", HIRES_SCALEF), ("tissue_lowres_image.png", LOWRES_SCALEF)):
        pil.resize((max(1, round(full.shape[1] * s)), max(1, round(full.shape[0] * s)))).save(outs / "spatial" / name)
    return outs
