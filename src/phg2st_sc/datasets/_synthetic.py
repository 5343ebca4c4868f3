"""Synthetic slides with everything the model needs, for scale benchmarks and fast tests."""

from __future__ import annotations

from typing import Literal

import numpy as np
import pandas as pd
from anndata import AnnData
from scipy import sparse

from phg2st_sc._constants import Keys
from phg2st_sc.pp._tiles import plan_tiles

REP = Keys.embedding("synthetic")  # the representation key of the synthetic features

# centre-to-centre distance and spot diameter in µm
LAYOUTS = {"st": (200.0, 100.0), "visium": (100.0, 55.0), "visium_hd": (16.0, 16.0)}
_BIOLOGY_SEED = 20261125  # fixes how fields map to features and genes, shared by all sections
MPP = 0.5  # pixel size of the virtual image (µm per pixel)
_BLOCK = 65536  # rows generated at a time


def _smooth_fields(xy_um: np.ndarray, n_fields: int, rng: np.random.Generator, scale_um: float) -> np.ndarray:
    """Random smooth fields (sums of random Fourier features at tissue scales) evaluated at ``xy_um``."""
    n_waves = 24
    freq = rng.normal(size=(n_fields, n_waves, 2)) / scale_um
    phase = rng.uniform(0, 2 * np.pi, size=(n_fields, n_waves))
    out = np.cos(np.einsum("nc,fwc->nfw", xy_um, freq) + phase).sum(-1) / np.sqrt(n_waves)
    return out.astype(np.float32)


def synthetic(
    n_spots: int = 1000,
    n_genes: int = 200,
    *,
    layout: Literal["visium", "visium_hd", "st"] = "visium",
    n_features: int = 64,
    grid_size: int = 5,
    seed: int = 0,
    section: str = "synthetic",
    bin_size_um: float | None = None,
) -> AnnData:
    """A synthetic section: spots on a realistic grid, image features, neighbour tiles and expression.

    Tissue is a few smooth latent fields (cell-type abundances) over the slide. Image features of spots and of
    224 px neighbour tiles (0.5 µm per pixel) are noisy linear read-outs of the fields at their centres; expression
    is Poisson counts whose rates depend on the same fields. So expression has spatial structure tied to the
    features, as in tissue, and every slot of the real pipeline is present (no image file).

    Parameters
    ----------
    n_spots
        Number of spots (the grid is about square).
    n_genes
        Number of genes.
    layout
        ``"visium"`` (hexagonal, 100 µm pitch, 55 µm spots), ``"visium_hd"`` (square 16 µm bins) or ``"st"``
        (square, 200 µm pitch, 100 µm spots).
    n_features
        Size of the image features.
    grid_size
        Neighbour window side in tiles (odd); 0 for spot features only.
    seed
        Random seed of the tissue (its fields), the feature noise and the counts. How tissue maps to features and
        genes does not depend on it, so sections with different seeds share their biology (train on some,
        predict another).
    section
        Section name, in ``obs['section']`` and ``obs['patient']`` and as the library key in ``uns['spatial']``.
    bin_size_um
        For ``"visium_hd"`` only: the bin size (pitch) in µm, 16 when ``None`` (Space Ranger bins at 2, 8 or 16 µm; a
        whole 6.5 mm capture area holds about 660,000 bins of 8 µm).

    Returns
    -------
    AnnData with raw counts in ``.X`` (sparse) and ``layers['log1p']`` (normalised to 1e4, log1p),
    ``obs['array_row']``, ``obs['array_col']``, ``obs['section']``, ``obs['patient']``, ``obsm['spatial']``
    (pixels at 0.5 µm), ``obsm['X_synthetic']`` and, with ``grid_size > 0``, ``obsm['X_synthetic_neighbours']``
    and ``uns['X_synthetic']`` (tile embeddings and cells, as written by :func:`phg2st_sc.pp.embed_tiles`), and
    ``uns['spatial'][section]`` (scale factors, with Space Ranger's ``bin_size_um`` for ``"visium_hd"``, and microns per
    pixel; no image).

    Examples
    --------
    >>> adata = phg2st.datasets.synthetic(10_000, 400, layout="visium_hd")  # doctest: +SKIP
    """
    if layout not in LAYOUTS:
        raise ValueError(f"Unknown layout {layout!r}; choose one of {list(LAYOUTS)}.")
    if n_spots < 2 or n_genes < 1 or n_features < 1:
        raise ValueError("`n_spots` must be at least 2, `n_genes` and `n_features` at least 1.")
    pitch_um, diameter_um = LAYOUTS[layout]
    if bin_size_um is not None:
        if layout != "visium_hd":
            raise ValueError(f"`bin_size_um` applies to the 'visium_hd' layout only, not {layout!r}.")
        if isinstance(bin_size_um, bool) or not isinstance(bin_size_um, (int, float)) or not 0 < bin_size_um <= 100:
            raise ValueError(f"`bin_size_um` must be a number in (0, 100] µm, got {bin_size_um!r}.")
        pitch_um = diameter_um = float(bin_size_um)
    rng = np.random.default_rng(seed)
    side = int(np.ceil(np.sqrt(n_spots)))
    rows, cols = np.divmod(np.arange(n_spots), side)
    if layout == "visium":  # hexagonal: odd rows shifted by half a pitch, rows sqrt(3)/2 apart
        xy_um = np.column_stack([(cols + 0.5 * (rows % 2)) * pitch_um, rows * pitch_um * np.sqrt(3) / 2])
    else:
        xy_um = np.column_stack([cols * pitch_um, rows * pitch_um]).astype(float)
    margin = 3 * 224 * MPP
    xy_um += margin
    n_fields = 6
    extent = xy_um.max(axis=0) + margin
    scale = max(300.0, float(extent.max()) / 6)  # structures of a few hundred µm to a sixth of the slide
    fields = _smooth_fields(xy_um, n_fields, rng, scale)
    biology = np.random.default_rng(_BIOLOGY_SEED)  # the same genes and features on every synthetic section
    read_out = biology.normal(size=(n_fields, n_features)).astype(np.float32)
    loadings = biology.normal(scale=0.8, size=(n_fields, n_genes))
    level = biology.normal(loc=-0.5, scale=1.0, size=n_genes)
    # in row blocks (the same random stream as one call), so that a slide of many spots never holds its noise or
    # rates in float64 at once
    feats = fields @ read_out
    for s in range(0, n_spots, _BLOCK):
        feats[s : s + _BLOCK] += rng.normal(scale=0.5, size=(len(feats[s : s + _BLOCK]), n_features)).astype(np.float32)
    counts = np.empty((n_spots, n_genes), dtype=np.float32)
    for s in range(0, n_spots, _BLOCK):
        counts[s : s + _BLOCK] = rng.poisson(np.exp(np.clip(fields[s : s + _BLOCK] @ loadings + level, -6, 6)))

    xy_px = xy_um / MPP
    adata = AnnData(X=sparse.csr_matrix(counts))
    adata.var_names = pd.Index([f"gene{i}" for i in range(n_genes)])
    adata.obs_names = pd.Index([f"{section}_{i}" for i in range(n_spots)])
    adata.obs[Keys.ARRAY_ROW] = rows
    adata.obs[Keys.ARRAY_COL] = cols
    adata.obs[Keys.SECTION] = pd.Categorical([section] * n_spots)
    adata.obs[Keys.PATIENT] = pd.Categorical([section] * n_spots)
    adata.obsm[Keys.SPATIAL] = xy_px
    adata.obsm[REP] = feats
    total = counts.sum(axis=1, keepdims=True)
    adata.layers["log1p"] = np.log1p(counts / np.maximum(total, 1) * 1e4).astype(np.float32)
    height, width = (extent / MPP).astype(int)[::-1]
    uns_rep = {"params": {"encoder": "synthetic", "dim": n_features, "grid_size": grid_size, "tile_size": 224}}
    if grid_size:
        plan = plan_tiles(xy_px, (height, width), 224, grid_size)
        centres_um = (plan.cells + 0.5) * 224 * MPP
        tile_fields = _smooth_fields_at(centres_um, xy_um, fields)
        uns_rep["tile_embeddings"] = tile_fields @ read_out + rng.normal(
            scale=0.5, size=(len(plan.cells), n_features)
        ).astype(np.float32)
        uns_rep["tile_cells"] = plan.cells.astype(np.int32)
        adata.obsm[Keys.tile_index(REP)] = plan.index.astype(np.int32)
    adata.uns[REP] = uns_rep
    scalefactors = {Keys.HIRES_SCALEF: 1.0, Keys.SPOT_DIAMETER: diameter_um / MPP}
    if layout == "visium_hd":  # Space Ranger's scale factors of a binned output
        scalefactors |= {Keys.BIN_SIZE: pitch_um, Keys.MPP: MPP}
    adata.uns[Keys.SPATIAL] = {
        section: {
            Keys.IMAGES: {},
            Keys.SCALEFACTORS: scalefactors,
            Keys.METADATA: {Keys.MPP: MPP, "layout": layout, "spot_pitch_px": pitch_um / MPP},
        }
    }
    return adata


def _smooth_fields_at(points_um: np.ndarray, xy_um: np.ndarray, fields: np.ndarray) -> np.ndarray:
    """The fields at arbitrary points, from the nearest spot (tiles inherit the tissue around them)."""
    from scipy.spatial import cKDTree

    _, j = cKDTree(xy_um).query(points_um, k=1)
    return fields[j]
