"""Virtual spots: a lattice over the whole tissue of the image, so predictions reach regions never profiled."""

from __future__ import annotations

import warnings
from copy import deepcopy
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from anndata import AnnData
from scipy import sparse

from phg2st_sc._constants import Keys, SpatialDataKeys
from phg2st_sc._docs import inject_docs
from phg2st_sc._utils import _is_spatialdata, carry_written, get_table, spot_pitch
from phg2st_sc._validate import check_inside_image, check_nonempty, check_unique_names, get_coordinates

if TYPE_CHECKING:
    from spatialdata import SpatialData

VIRTUAL = Keys.VIRTUAL


def otsu_tissue_mask(image: np.ndarray) -> np.ndarray:
    """Tissue pixels of an H&E image: Otsu's threshold on the HSV saturation, then small specks and holes removed.

    Stained tissue is saturated (pink, purple) while glass and background are grey or white, so saturation
    separates them better than brightness does.
    """
    from scipy import ndimage as ndi
    from skimage.color import rgb2hsv
    from skimage.filters import threshold_otsu

    from phg2st_sc._image import to_rgb8

    img = np.asarray(image)
    if img.ndim != 3 or img.shape[2] < 3:
        raise ValueError(f"Expected an RGB image (height, width, 3), got shape {img.shape}.")
    rgb = to_rgb8(img, what="the image").astype(np.float32) / 255.0  # any dtype, scaled by its range
    sat = rgb2hsv(rgb)[..., 1]
    if float(sat.max() - sat.min()) < 1e-6:
        return np.zeros(sat.shape, dtype=bool)
    mask = sat > threshold_otsu(sat)
    radius = max(1, round(min(mask.shape) / 500))
    yy, xx = np.mgrid[-radius : radius + 1, -radius : radius + 1]
    disk = xx**2 + yy**2 <= radius**2
    mask = ndi.binary_opening(ndi.binary_closing(mask, structure=disk), structure=disk)
    area = mask.shape[0] * mask.shape[1]
    mask = _drop_small(mask, max(16, area // 2000))  # specks of dust or stain
    return ~_drop_small(~mask, max(16, area // 500))  # small holes inside the tissue


def _drop_small(mask: np.ndarray, min_size: int) -> np.ndarray:
    """``mask`` without its connected components smaller than ``min_size`` pixels."""
    from scipy import ndimage as ndi

    labels, _ = ndi.label(mask)
    sizes = np.bincount(labels.ravel())
    keep = sizes >= min_size
    keep[0] = False
    return keep[labels]


def _overview(adata: AnnData, library_id: str | None) -> tuple[np.ndarray, float]:
    """A downscaled image of the section and the factor from full-resolution pixels to it.

    The full-resolution file is preferred when recorded (the app images of some readers are edited for display);
    otherwise the ``hires`` image (for SpatialData input, the one `io.from_spatialdata` took from the pyramid).
    """
    from phg2st_sc._image import full_resolution_path, hires_image, library_info, read_downscaled

    lib, info = library_info(adata, library_id)
    if info.get(Keys.METADATA, {}).get(Keys.IMAGE_PATH):
        return read_downscaled(full_resolution_path(adata, library_id))
    hires, scalef = hires_image(info, lib)
    if hires is None:
        raise ValueError("The section has no image to find the tissue in; pass `tissue_mask=`.")
    return hires, scalef


def _image_extent(adata: AnnData, library_id: str | None) -> tuple[float, float, float, str]:
    """The (width, height) of the section's full-resolution image, read without decoding it.

    Also returns the uncertainty of that size in pixels and the section's name; fails when the section has no image.
    """
    from phg2st_sc._image import full_resolution_path, hires_image, image_size, library_info

    lib, info = library_info(adata, library_id)
    if info.get(Keys.METADATA, {}).get(Keys.IMAGE_PATH):
        width, height = image_size(full_resolution_path(adata, library_id))
        return float(width), float(height), 0.0, lib
    hires, scalef = hires_image(info, lib)
    if hires is None:
        raise ValueError(
            f"Section {lib!r} has no image to find the tissue in (neither a full-resolution file nor a `hires` "
            "image in `uns['spatial']`); load the section with its H&E image."
        )
    shape = np.shape(hires)
    return shape[1] / scalef, shape[0] / scalef, 1.0 / scalef, lib


@inject_docs
def virtual_spots(
    adata: AnnData | SpatialData,
    *,
    spacing: float | None = None,
    tissue_mask: np.ndarray | None = None,
    include_measured: bool = True,
    min_tissue: float = 0.5,
    library_id: str | None = None,
    table_key: str | None = None,
    image_key: str | None = None,
) -> AnnData | SpatialData:
    """Place virtual spots on a square lattice over all the tissue of the image, measured or not.

    Spatial transcriptomics profiles a part of a slide; the image shows all of it. Virtual spots are positions on
    the tissue with no measurement: embedded and predicted like array spots (``pp.embed_tiles``,
    ``pp.build_hypergraph``, ``tl.impute``), they give expression over the whole section. Tissue is found with
    Otsu's threshold on the saturation of a downscaled image (stained tissue is saturated, glass is not), unless a
    mask is given. Lattice points closer than half a spacing to a measured spot are left out, so the measured
    spots keep their place in the result.

    Parameters
    ----------
    {adata}
    spacing
        Distance between virtual spots in full-resolution pixels; defaults to the measured spots' pitch.
    tissue_mask
        Boolean (height, width) mask of tissue over the whole image, at any resolution (it is scaled to the
        image); ``None`` detects the tissue.
    include_measured
        Keep the measured spots (with their expression and prompts) in the result. Without them, the result holds
        the virtual spots only (predict with prompts from another object is not possible: keep them to impute).
    min_tissue
        Fraction of a virtual spot's footprint (a disk of the measured spot size, or half the spacing) that must
        be tissue.
    library_id
        Section in ``uns['spatial']`` when there are several.
    {table_key}
    image_key
        SpatialData image element (when there are several).

    Returns
    -------
    A new object (the input is not modified). For AnnData input, an AnnData with the measured spots first, then the
    virtual ones:

    ``.X``
        Measured spots' expression; ``NaN`` for virtual spots (dense ``float32``). Other layers are not carried.
    ``.obs['phg2st_virtual']``
        ``True`` for virtual spots. ``obs['phg2st_prompt']`` (if present) is ``False`` for them, ``section`` and
        ``patient`` are copied.
    ``.obsm['spatial']``
        Coordinates in full-resolution pixels.
    ``.uns['spatial']``, ``.uns['phg2st_virtual']['params']``
        The image information of the input; spacing, spot counts and the tissue fraction.

    For SpatialData input, a new SpatialData with the same images, the spots as circles
    (``'<section>_virtual_spots'``) and this table (``'table_virtual'``) annotating them.

    Examples
    --------
    >>> whole = phg2st.pp.virtual_spots(adata)  # doctest: +SKIP
    >>> phg2st.pp.embed_tiles(whole, encoder="efficientnet_lite0")  # doctest: +SKIP
    """
    sdata = adata if _is_spatialdata(adata) else None
    if sdata is not None:
        from phg2st_sc.io import from_spatialdata

        table = from_spatialdata(sdata, table_key=table_key, image_key=image_key)
    else:
        table = get_table(adata, table_key)
    check_nonempty(table)
    check_unique_names(table, var=False)
    coords = get_coordinates(table)
    if not 0 < min_tissue <= 1:
        raise ValueError(f"`min_tissue` must be in (0, 1], got {min_tissue}.")
    if spacing is None:
        if table.n_obs < 2:
            raise ValueError("With fewer than two measured spots the pitch is undefined; give `spacing=`.")
        spacing = spot_pitch(coords)
    if not np.isfinite(spacing) or spacing <= 0:
        raise ValueError(f"`spacing` must be a positive number of pixels, got {spacing}.")
    width, height, slack, lib = _image_extent(table, library_id)  # from the header: all checks before reading it
    _check_lattice_memory(width, height, spacing, table.n_vars)
    scalef = table.uns[Keys.SPATIAL][lib].get(Keys.SCALEFACTORS, {}).get(Keys.HIRES_SCALEF)
    hint = (
        "coordinates in the pixels of the `hires` image must be divided by "
        f"`uns['spatial'][{lib!r}]['scalefactors']['tissue_hires_scalef']` ({scalef}); if the image file is a "
        "downscaled copy, point `metadata['source_image_path']` at the full-resolution image"
    )
    check_inside_image(coords, width, height, hint=hint, slack=slack)
    if tissue_mask is not None:
        mask = np.asarray(tissue_mask)
        if mask.ndim != 2:
            raise ValueError(f"`tissue_mask` must be a 2-D (height, width) array, got shape {mask.shape}.")
        if mask.dtype != bool:
            if not np.isin(np.unique(mask), [0, 1]).all():
                raise ValueError("`tissue_mask` must be boolean (or 0/1).")
            mask = mask.astype(bool)
        _check_aspect(mask, height, width)

    overview, scalef = _overview(table, library_id)
    full_h, full_w = overview.shape[0] / scalef, overview.shape[1] / scalef
    if tissue_mask is None:
        mask = otsu_tissue_mask(overview)
        mask_scale = scalef
        method = "otsu_saturation"
    else:
        mask_scale = mask.shape[1] / full_w
        method = "given"
    if not mask.any():
        raise ValueError("No tissue found in the image; pass `tissue_mask=` to mark it.")

    # lattice aligned with the measured spots, over the whole image
    x0, y0 = coords[0] % spacing
    xs = np.arange(x0, full_w, spacing)
    ys = np.arange(y0, full_h, spacing)
    grid = np.stack(np.meshgrid(xs, ys), -1).reshape(-1, 2)
    diameter = _spot_diameter(table, library_id)
    radius = 0.5 * (diameter if diameter and np.isfinite(diameter) else spacing / 2)
    keep = _tissue_fraction(mask, grid * mask_scale, radius * mask_scale) >= min_tissue
    grid = grid[keep]
    if include_measured and len(grid):
        from scipy.spatial import cKDTree

        d, _ = cKDTree(coords).query(grid, k=1)
        grid = grid[d >= spacing / 2]
    if len(grid) == 0:
        warnings.warn("No tissue beyond the measured spots: no virtual spot was added.", UserWarning, stacklevel=2)

    out = _combine(table, grid, include_measured)
    out.uns[VIRTUAL] = {"params": {"spacing": float(spacing), "tissue_mask": method, "min_tissue": float(min_tissue),
                                   "n_measured": int(table.n_obs if include_measured else 0),
                                   "n_virtual": len(grid), "tissue_fraction": float(mask.mean())}}  # fmt: skip
    if sdata is None:
        return out
    return _to_spatialdata(sdata, out, radius)


#: Bytes per lattice point while placing virtual spots (coordinates, the tissue stencil of 21 samples with its
#: indices), before the expression matrix of the kept ones.
LATTICE_BYTES = 1100


def _check_lattice_memory(width: float, height: float, spacing: float, n_genes: int) -> None:
    """Refuse a lattice that would not fit in memory (a spacing far below the spot pitch), before building it."""
    from phg2st_sc._utils import check_memory

    n = (int(width // spacing) + 1) * (int(height // spacing) + 1)
    check_memory(
        n * (LATTICE_BYTES + 4 * n_genes),
        f"A lattice of {n:,} virtual spots ({spacing:.3g} px apart over a {width:.0f} x {height:.0f} px image, "
        f"{n_genes} genes)",
        "give a larger `spacing=` (the measured spots' pitch is the default), or select fewer genes first",
    )


def _check_aspect(mask: np.ndarray, full_h: float, full_w: float) -> None:
    mask_scale = mask.shape[1] / full_w
    if abs(mask.shape[0] / full_h - mask_scale) > 0.02 * mask_scale + 1 / full_h:
        raise ValueError(
            f"`tissue_mask` of shape {mask.shape} does not have the image's aspect ratio ({full_h:.0f} x "
            f"{full_w:.0f} pixels at full resolution)."
        )


def _spot_diameter(adata: AnnData, library_id: str | None) -> float | None:
    from phg2st_sc._image import library_info

    try:
        _, info = library_info(adata, library_id)
    except (KeyError, ValueError):
        return None
    value = info.get(Keys.SCALEFACTORS, {}).get(Keys.SPOT_DIAMETER)
    return float(value) if value is not None else None


def _tissue_fraction(mask: np.ndarray, centres: np.ndarray, radius: float) -> np.ndarray:
    """Fraction of tissue pixels in a disk around each centre (mask pixel units), by sampling a small stencil."""
    r = max(radius, 0.5)
    offsets = np.array([(dx, dy) for dx in np.linspace(-r, r, 5) for dy in np.linspace(-r, r, 5)
                        if dx * dx + dy * dy <= r * r + 1e-9])  # fmt: skip
    pts = np.rint(centres[:, None, :] + offsets[None]).astype(np.int64)
    inside = (pts[..., 0] >= 0) & (pts[..., 0] < mask.shape[1]) & (pts[..., 1] >= 0) & (pts[..., 1] < mask.shape[0])
    px = np.clip(pts[..., 0], 0, mask.shape[1] - 1)
    py = np.clip(pts[..., 1], 0, mask.shape[0] - 1)
    return (mask[py, px] & inside).mean(axis=1)


def _combine(table: AnnData, grid: np.ndarray, include_measured: bool) -> AnnData:
    n_v = len(grid)
    measured = table if include_measured else table[:0]
    x = measured.X.toarray() if sparse.issparse(measured.X) else np.asarray(measured.X)
    x = np.vstack([x.astype(np.float32), np.full((n_v, table.n_vars), np.nan, dtype=np.float32)])
    names = [*map(str, measured.obs_names), *(f"virtual_{i}" for i in range(n_v))]
    obs = pd.DataFrame(index=pd.Index(names))
    obs[VIRTUAL] = np.r_[np.zeros(measured.n_obs, dtype=bool), np.ones(n_v, dtype=bool)]
    for col in (Keys.SECTION, Keys.PATIENT):
        if col in table.obs:
            value = table.obs[col].iloc[0]
            obs[col] = pd.Categorical([*measured.obs[col].astype(str), *[str(value)] * n_v])
    if Keys.PROMPT in table.obs:
        obs[Keys.PROMPT] = np.r_[measured.obs[Keys.PROMPT].to_numpy(dtype=bool), np.zeros(n_v, dtype=bool)]
    out = AnnData(X=x, obs=obs, var=table.var[[]].copy())
    out.obsm[Keys.SPATIAL] = np.vstack([np.asarray(measured.obsm[Keys.SPATIAL], dtype=np.float64), grid])
    for key in (Keys.SPATIAL, Keys.TARGETS_UNS, Keys.GENES_UNS, Keys.PROMPT, "log1p"):
        if key in table.uns:
            out.uns[key] = deepcopy(table.uns[key])
    carry_written(table, out)  # the prompt column stays phg2st-sc's own: select_prompts may redraw it
    return out


def _to_spatialdata(sdata: Any, table: AnnData, radius: float) -> Any:
    import geopandas as gpd
    from shapely.geometry import Point
    from spatialdata import SpatialData
    from spatialdata.models import ShapesModel, TableModel
    from spatialdata.transformations import Identity

    section = str(table.obs[Keys.SECTION].iloc[0]) if Keys.SECTION in table.obs else "section"
    shapes_key = f"{section}_virtual_spots"
    xy = table.obsm[Keys.SPATIAL]
    gdf = gpd.GeoDataFrame({"radius": np.full(len(xy), radius)}, geometry=[Point(x, y) for x, y in xy])
    shapes = ShapesModel.parse(gdf, transformations={SpatialDataKeys.COORDINATE_SYSTEM: Identity()})
    t = table.copy()
    t.obs[SpatialDataKeys.REGION_KEY] = pd.Categorical([shapes_key] * t.n_obs)
    t.obs[SpatialDataKeys.INSTANCE_KEY] = np.arange(t.n_obs)
    t = TableModel.parse(t, region=shapes_key, region_key=SpatialDataKeys.REGION_KEY,
                         instance_key=SpatialDataKeys.INSTANCE_KEY)  # fmt: skip
    return SpatialData(images=dict(sdata.images), shapes={shapes_key: shapes}, tables={"table_virtual": t})


__all__ = ["virtual_spots", "otsu_tissue_mask", "VIRTUAL"]
