"""Format-faithful Visium HD and Xenium output folders with real H&E pixels from a her2st image.

No Visium HD or Xenium data can be fetched here, so these write the files spatialdata-io's ``visium_hd`` and
``xenium`` readers read, in their layouts and formats, with small synthetic content on a crop of a real
her2st H&E (full resolution, about 0.69 µm per pixel):

- ``make_visium_hd(folder, adata)``: Space Ranger (HD) ``outs/``: ``feature_slice.h5`` (its ``metadata_json``
  attribute with the ``hd_layout_json`` the reader parses), ``spatial/scalefactors_json.json`` and the
  ``tissue_hires_image.png`` / ``tissue_lowres_image.png`` downscales, the microscope image in
  ``microscope_image/``, and ``binned_outputs/square_008um`` and ``square_016um``, each with
  ``filtered_feature_bc_matrix.h5`` (10x HDF5, only the bins under tissue), ``spatial/tissue_positions.parquet``
  (every bin, Space Ranger's six columns) and ``spatial/scalefactors_json.json`` (with ``bin_size_um`` and
  ``microns_per_pixel``).
- ``make_xenium(folder, adata)``: Xenium Onboard Analysis 2.x ``outs/``: ``experiment.xenium``,
  ``cells.parquet`` (centroids in µm), ``cell_feature_matrix.h5``, ``cells.zarr.zip`` (cell ids as the uint32
  prefix/suffix pairs, ``polygon_sets``, ``cell_summary``) and a post-Xenium H&E ``*he_image.ome.tif`` with its
  ``*he_imagealignment.csv`` (an affine map from H&E pixels to Xenium morphology pixels of 0.2125 µm, here a
  scale, a 4° rotation and a shift, as the alignment of a real post-Xenium H&E has).

Counts follow the H&E: each gene's rate is a smooth function of the tissue's darkness around the bin or cell
(so an image model has signal to learn) times a per-gene level, Poisson-sampled with a fixed seed.
"""

from __future__ import annotations

import json
import shutil
import zipfile
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import scipy.sparse as sp
from PIL import Image

XENIUM_PIXEL_UM = 0.2125  # Xenium morphology image pixel size


def _he_crop(adata, size_px: int) -> tuple[np.ndarray, float]:
    """A ``size_px`` square of the section's full-resolution H&E, centred on its spots, and its µm per pixel."""
    lib = next(iter(adata.uns["spatial"]))
    meta = adata.uns["spatial"][lib]["metadata"]
    centre = np.median(np.asarray(adata.obsm["spatial"], float), axis=0).astype(int)
    box = (*(centre - size_px // 2), *(centre - size_px // 2 + size_px))
    with Image.open(meta["source_image_path"]) as im:
        crop = np.asarray(im.convert("RGB").crop(box))
    return crop, float(meta["microns_per_pixel"])


def _rates(darkness: np.ndarray, n_genes: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    slope, level = rng.normal(0, 2.0, n_genes), rng.normal(0.5, 0.7, n_genes)
    z = (darkness - darkness.mean()) / (darkness.std() + 1e-9)
    return np.exp(np.clip(np.outer(z, slope) + level, -4, 4))


def _darkness(image: np.ndarray, xy_px: np.ndarray, radius_px: float) -> np.ndarray:
    """Mean darkness (1 - grey level) of the image in a square of ``radius_px`` around each point."""
    grey = 1.0 - image.mean(axis=2) / 255.0
    ii = np.pad(grey, ((1, 0), (1, 0))).cumsum(0).cumsum(1)
    h, w = grey.shape
    r = max(1, round(radius_px))
    x0 = np.clip(np.rint(xy_px[:, 0]).astype(int) - r, 0, w)
    x1 = np.clip(np.rint(xy_px[:, 0]).astype(int) + r, 0, w)
    y0 = np.clip(np.rint(xy_px[:, 1]).astype(int) - r, 0, h)
    y1 = np.clip(np.rint(xy_px[:, 1]).astype(int) + r, 0, h)
    area = np.maximum((x1 - x0) * (y1 - y0), 1)
    return (ii[y1, x1] - ii[y0, x1] - ii[y1, x0] + ii[y0, x0]) / area


def write_10x_h5(path: Path, counts: sp.spmatrix, barcodes: list[str], genes: list[str], version: str,
                 library_id: str = "S1", **attrs: bytes) -> None:  # fmt: skip
    """A 10x feature-barcode matrix HDF5 (v3): genes x barcodes CSC with its features group (``attrs``: more
    file attributes, e.g. Space Ranger's ``chemistry_description``)."""
    csc = sp.csr_matrix(counts).T.tocsc()
    with h5py.File(path, "w") as f:
        f.attrs["library_ids"] = np.array([library_id.encode()])
        f.attrs["software_version"] = version.encode()
        for key, value in attrs.items():
            f.attrs[key] = value
        m = f.create_group("matrix")
        m.create_dataset("barcodes", data=np.array([b.encode() for b in barcodes]))
        m.create_dataset("data", data=csc.data.astype(np.int32))
        m.create_dataset("indices", data=csc.indices.astype(np.int64))
        m.create_dataset("indptr", data=csc.indptr.astype(np.int64))
        m.create_dataset("shape", data=np.array(csc.shape, dtype=np.int32))
        feats = m.create_group("features")
        feats.create_dataset("_all_tag_keys", data=np.array([b"genome"]))
        feats.create_dataset("feature_type", data=np.array([b"Gene Expression"] * len(genes)))
        feats.create_dataset("genome", data=np.array([b"GRCh38"] * len(genes)))
        feats.create_dataset("id", data=np.array([f"ENSG{i:011d}".encode() for i in range(len(genes))]))
        feats.create_dataset("name", data=np.array([g.encode() for g in genes]))


def make_visium_hd(folder: Path, adata, *, size_px: int = 320, n_genes: int = 30, bins=(8, 16)) -> Path:
    """Write a Visium HD Space Ranger ``outs`` folder on a ``size_px`` crop of ``adata``'s H&E (her2st)."""
    outs = Path(folder)
    image, mpp = _he_crop(adata, size_px)
    genes = list(adata.var_names[:n_genes])
    (outs / "spatial").mkdir(parents=True, exist_ok=True)
    (outs / "microscope_image").mkdir(exist_ok=True)
    Image.fromarray(image).save(outs / "microscope_image" / "tissue_image.tif")
    hires_scalef, lowres_scalef = 0.5, 0.125
    pil = Image.fromarray(image)
    for name, s in (("tissue_hires_image.png", hires_scalef), ("tissue_lowres_image.png", lowres_scalef)):
        pil.resize((round(size_px * s), round(size_px * s))).save(outs / "spatial" / name)
    common = {"tissue_hires_scalef": hires_scalef, "tissue_lowres_scalef": lowres_scalef,
              "regist_target_img_scalef": hires_scalef, "microns_per_pixel": mpp}  # fmt: skip
    json.dump(common | {"spot_diameter_fullres": 2.0 / mpp, "bin_size_um": 2.0, "fiducial_diameter_fullres": 0.0},
              open(outs / "spatial" / "scalefactors_json.json", "w"))  # fmt: skip
    layout = {"file_format": "1.0", "transform": [1, 0, 0, 0, 1, 0, 0, 0, 1], "num_rows": 3350, "num_cols": 3350}
    with h5py.File(outs / "feature_slice.h5", "w") as f:
        f.attrs["metadata_json"] = json.dumps({"hd_layout_json": json.dumps(layout), "sample_id": "S1"})
    for k, bin_um in enumerate(bins):
        pitch = bin_um / mpp
        n = int(size_px // pitch)
        rows, cols = np.divmod(np.arange(n * n), n)
        xy = np.column_stack([(cols + 0.5) * pitch, (rows + 0.5) * pitch])
        dark = _darkness(image, xy, pitch / 2)
        in_tissue = (dark > np.quantile(dark, 0.05)).astype(int)  # the palest bins are "background"
        name = f"square_{bin_um:03d}um"
        barcodes = [f"s_{bin_um:03d}um_{r:05d}_{c:05d}-1" for r, c in zip(rows, cols, strict=True)]
        folder_bin = outs / "binned_outputs" / name
        (folder_bin / "spatial").mkdir(parents=True, exist_ok=True)
        keep = np.flatnonzero(in_tissue)
        counts = np.random.default_rng(k).poisson(_rates(dark[keep], n_genes, seed=7) * (bin_um / 8) ** 2)
        write_10x_h5(folder_bin / "filtered_feature_bc_matrix.h5", sp.csr_matrix(counts),
                      [barcodes[i] for i in keep], genes, "spaceranger-3.0.0")  # fmt: skip
        pd.DataFrame({"barcode": barcodes, "in_tissue": in_tissue, "array_row": rows, "array_col": cols,
                      "pxl_row_in_fullres": xy[:, 1], "pxl_col_in_fullres": xy[:, 0]}
                     ).to_parquet(folder_bin / "spatial" / "tissue_positions.parquet", index=False)  # fmt: skip
        json.dump(common | {"spot_diameter_fullres": pitch, "bin_size_um": float(bin_um)},
                  open(folder_bin / "spatial" / "scalefactors_json.json", "w"))  # fmt: skip
    return outs


def make_xenium(folder: Path, adata, *, size_px: int = 320, n_genes: int = 30, cell_pitch_um: float = 15.0,
                rotation_deg: float = 4.0) -> Path:  # fmt: skip
    """Write a Xenium ``outs`` folder whose post-Xenium H&E is a ``size_px`` crop of ``adata``'s H&E (her2st).

    Returns the folder; the cells' true H&E pixel positions are in ``cells_he_px.npy`` beside it (for tests).
    """
    import tifffile
    import zarr
    from spatialdata_io.readers.xenium import prefix_suffix_uint32_from_cell_id_str

    outs = Path(folder)
    outs.mkdir(parents=True, exist_ok=True)
    image, mpp = _he_crop(adata, size_px)
    genes = list(adata.var_names[:n_genes])
    rng = np.random.default_rng(3)
    # cells on a jittered lattice inside the H&E (one cell pitch from its border), in H&E pixels
    pitch = cell_pitch_um / mpp
    grid = np.arange(pitch, size_px - pitch, pitch)
    he_xy = np.array([(x, y) for y in grid for x in grid]) + rng.uniform(-0.25, 0.25, (len(grid) ** 2, 2)) * pitch
    n = len(he_xy)
    # H&E pixel -> morphology pixel: scale, rotation, shift (what an alignment file holds)
    s, t = mpp / XENIUM_PIXEL_UM, np.deg2rad(rotation_deg)
    alignment = np.array([[s * np.cos(t), -s * np.sin(t), 850.0], [s * np.sin(t), s * np.cos(t), 420.0], [0, 0, 1]])
    morph_px = he_xy @ alignment[:2, :2].T + alignment[:2, 2]
    um = morph_px * XENIUM_PIXEL_UM  # the centroids Xenium reports, in µm
    dark = _darkness(image, he_xy, pitch / 2)
    counts = rng.poisson(_rates(dark, n_genes, seed=11))

    cell_ids = [f"{''.join(rng.choice(list('abcdefghijklmnop'), 8))}-1" for _ in range(n)]
    prefix, suffix = prefix_suffix_uint32_from_cell_id_str(np.array(cell_ids))
    area = rng.uniform(60, 140, n)
    pd.DataFrame({"cell_id": cell_ids, "x_centroid": um[:, 0], "y_centroid": um[:, 1],
                  "transcript_counts": counts.sum(1), "control_probe_counts": 0, "control_codeword_counts": 0,
                  "unassigned_codeword_counts": 0, "total_counts": counts.sum(1), "cell_area": area,
                  "nucleus_area": area / 3, "segmentation_method": "Segmented by boundary stain"}
                 ).to_parquet(outs / "cells.parquet", index=False)  # fmt: skip
    write_10x_h5(outs / "cell_feature_matrix.h5", sp.csr_matrix(counts), cell_ids, genes, "xenium-2.0.0.10")
    staging = outs / "cells.zarr"  # written as a folder, then zipped (stored) as Xenium ships it
    root = zarr.open_group(zarr.storage.LocalStore(staging), mode="w", zarr_format=2)
    root.create_array("cell_id", data=np.column_stack([prefix, suffix]).astype(np.uint32))
    for mask in (0, 1):
        root.create_array(f"polygon_sets/{mask}/cell_index", data=np.arange(n, dtype=np.uint32))
    summary = np.column_stack([um, area, um, area / 3, np.zeros(n)])
    cs = root.create_array("cell_summary", data=summary.astype(np.float64))
    cs.attrs["column_names"] = ["cell_centroid_x", "cell_centroid_y", "cell_area", "nucleus_centroid_x",
                                "nucleus_centroid_y", "nucleus_area", "z_level"]  # fmt: skip
    with zipfile.ZipFile(outs / "cells.zarr.zip", "w", zipfile.ZIP_STORED) as zf:
        for file in sorted(p for p in staging.rglob("*") if p.is_file()):
            zf.write(file, file.relative_to(staging).as_posix())
    shutil.rmtree(staging)
    json.dump({"analysis_sw_version": "xenium-2.0.0.10", "pixel_size": XENIUM_PIXEL_UM, "run_name": "fixture",
               "region_name": "S1", "panel_name": "her2st genes"}, open(outs / "experiment.xenium", "w"))  # fmt: skip
    tifffile.imwrite(outs / "S1_he_image.ome.tif", image, photometric="rgb", ome=True)
    pd.DataFrame(alignment).to_csv(outs / "S1_he_imagealignment.csv", header=False, index=False)
    np.save(outs.parent / "cells_he_px.npy", he_xy)
    return outs
