"""Conversion between AnnData (scanpy/squidpy convention) and SpatialData, and access to the H&E image."""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from anndata import AnnData

from ._constants import Keys, SpatialDataKeys
from ._errors import MissingImageError
from ._image import HIRES_MAX_SIZE, full_resolution_path, hires_image, library_info, read_downscaled, read_full, to_rgb8
from ._utils import get_table
from ._validate import check_nonempty, check_unique_names, get_coordinates

if TYPE_CHECKING:
    from spatialdata import SpatialData

__all__ = ["read_image", "to_spatialdata", "from_spatialdata"]


def read_image(adata: AnnData, library_id: str | None = None, *, max_size: int | None = None) -> np.ndarray:
    """Read a section's H&E image from disk.

    Parameters
    ----------
    adata
        AnnData from a `phg2st.datasets` reader (the image path is in
        ``uns['spatial'][library_id]['metadata']['source_image_path']``).
    library_id
        Section; may be omitted when ``uns['spatial']`` holds one.
    max_size
        Shrink the image so that its longer side has this many pixels; ``None`` reads full resolution.

    Returns
    -------
    The RGB image, ``uint8`` array of shape (height, width, 3).

    Raises
    ------
    MissingImageError
        When the section has no full-resolution image.
    """
    path = full_resolution_path(adata, library_id)
    return read_full(path) if max_size is None else read_downscaled(path, max_size)[0]


def to_spatialdata(
    adata: AnnData,
    *,
    library_id: str | None = None,
    image: bool = True,
    scale_factors: tuple[int, ...] = (2, 2, 2, 2),
) -> SpatialData:
    """Convert a section's AnnData into a SpatialData object.

    The spots become circles of the true spot diameter in full-resolution pixel coordinates (coordinate system
    ``"global"``), the H&E becomes a multiscale image element, and the AnnData becomes a table linked to the
    circles (``region_key='region'``, ``instance_key='spot_index'``).

    Parameters
    ----------
    adata
        One section with ``obsm['spatial']`` and ``uns['spatial'][library_id]``.
    library_id
        Section; may be omitted when ``uns['spatial']`` holds one.
    image
        Include the image: the full-resolution file when available, otherwise the ``hires`` copy (scaled back
        to full-resolution coordinates), otherwise none.
    scale_factors
        Downscaling steps of the multiscale image pyramid.

    Returns
    -------
    SpatialData with ``images['<library_id>_image']`` (when ``image``), ``shapes['<library_id>_spots']`` and
    ``tables['table']``; the table keeps every slot of ``adata``.

    Examples
    --------
    >>> sdata = phg2st.io.to_spatialdata(phg2st.datasets.her2st("C2"))  # doctest: +SKIP
    """
    from spatialdata import SpatialData
    from spatialdata.models import Image2DModel, ShapesModel, TableModel
    from spatialdata.transformations import Identity, Scale

    if not isinstance(adata, AnnData):
        raise TypeError(f"Expected an AnnData, got {type(adata).__name__}.")
    check_nonempty(adata)
    check_unique_names(adata)
    coords = get_coordinates(adata)
    lib, info = library_info(adata, library_id)
    diameter = float(info.get(Keys.SCALEFACTORS, {}).get(Keys.SPOT_DIAMETER, np.nan))
    if not np.isfinite(diameter) or diameter <= 0:
        raise ValueError(f"`adata.uns['spatial'][{lib!r}]['scalefactors']['spot_diameter_fullres']` must be positive.")

    cs = SpatialDataKeys.COORDINATE_SYSTEM
    images = {}
    if image:
        try:
            pixels, transform = read_image(adata, lib), Identity()
        except MissingImageError:
            hires, scalef = hires_image(info, lib)  # uint8 RGB, whatever the stored dtype (scanpy: float in [0, 1])
            pixels, transform = None, None
            if hires is not None:
                pixels, transform = hires, Scale([1.0 / scalef, 1.0 / scalef], axes=("y", "x"))
        if pixels is not None:
            images[SpatialDataKeys.image(lib)] = Image2DModel.parse(
                np.moveaxis(pixels, -1, 0),
                dims=("c", "y", "x"),
                c_coords=["r", "g", "b"],
                scale_factors=list(scale_factors),
                transformations={cs: transform},
            )

    shapes_key = SpatialDataKeys.shapes(lib)
    shapes = ShapesModel.parse(
        coords,
        geometry=0,
        radius=np.full(len(coords), diameter / 2.0),
        index=pd.RangeIndex(adata.n_obs),
        transformations={cs: Identity()},
    )
    table = adata.copy()
    table.obs[SpatialDataKeys.REGION_KEY] = pd.Categorical([shapes_key] * adata.n_obs)
    table.obs[SpatialDataKeys.INSTANCE_KEY] = np.arange(adata.n_obs)
    table = TableModel.parse(
        table,
        region=shapes_key,
        region_key=SpatialDataKeys.REGION_KEY,
        instance_key=SpatialDataKeys.INSTANCE_KEY,
    )
    return SpatialData(images=images, shapes={shapes_key: shapes}, tables={SpatialDataKeys.TABLE: table})


def from_spatialdata(
    sdata: SpatialData,
    *,
    table_key: str | None = None,
    image_key: str | None = None,
) -> AnnData:
    """Return a SpatialData table as an AnnData in the scanpy/squidpy convention.

    ``obsm['spatial']`` is taken from the centres of the shapes the table annotates (unless present), the spot
    diameter from the circle radii, and, unless the table already carries one, ``uns['spatial'][library_id]``
    gets a ``hires`` image from the pyramid level of the image element nearest to 2000 px, so that
    `sc.pl.spatial` and :func:`phg2st_sc.pl.spatial` work on the result.

    Parameters
    ----------
    sdata
        A SpatialData object with a table linked to circle shapes.
    table_key
        Which table; may be omitted when there is one.
    image_key
        Which image element to use for ``hires``; may be omitted when there is at most one.

    Returns
    -------
    A new AnnData (the SpatialData object is not modified).
    """
    import spatialdata as sd
    from spatialdata.models import get_table_keys

    table = get_table(sdata, table_key)
    adata = table.copy()
    regions, region_key, instance_key = get_table_keys(table)
    regions = [regions] if isinstance(regions, str) else list(regions)
    if len(regions) != 1:
        raise ValueError(f"The table annotates several regions {regions}; split it per section first.")
    shapes_key = regions[0]
    if shapes_key not in sdata.shapes:
        raise KeyError(f"The table annotates {shapes_key!r}, which is not a shapes element of this SpatialData.")
    shapes = sdata.shapes[shapes_key]
    cs = SpatialDataKeys.COORDINATE_SYSTEM
    if cs not in sd.transformations.get_transformation(shapes, get_all=True):
        cs = next(iter(sd.transformations.get_transformation(shapes, get_all=True)))
    shapes_cs = sd.transform(shapes, to_coordinate_system=cs)
    instance = table.obs[instance_key].to_numpy()
    geom = shapes_cs.loc[instance]
    lib = str(table.obs[Keys.SECTION].iloc[0]) if Keys.SECTION in table.obs else shapes_key
    if Keys.SPATIAL not in adata.obsm:
        adata.obsm[Keys.SPATIAL] = np.column_stack([geom.geometry.x.to_numpy(), geom.geometry.y.to_numpy()])
    diameter = float(2 * np.median(geom["radius"])) if "radius" in geom else float("nan")

    spatial = dict(adata.uns.get(Keys.SPATIAL, {}))
    info = dict(spatial.get(lib, {}))
    scalefactors = dict(info.get(Keys.SCALEFACTORS, {}))
    scalefactors[Keys.SPOT_DIAMETER] = diameter
    images = dict(info.get(Keys.IMAGES, {}))
    image_keys = list(sdata.images) if image_key is None else [image_key]
    if image_key is None and len(image_keys) > 1:
        warnings.warn(f"Several image elements {image_keys}; using {image_keys[0]!r} (choose with `image_key=`).",
                      UserWarning, stacklevel=2)  # fmt: skip
    if image_keys and Keys.HIRES not in images:
        hires, scalef = _hires_from_element(sdata, image_keys[0], cs)
        if hires is not None:
            images[Keys.HIRES] = hires
            scalefactors[Keys.HIRES_SCALEF] = scalef
    info.update({Keys.IMAGES: images, Keys.SCALEFACTORS: scalefactors, Keys.METADATA: info.get(Keys.METADATA, {})})
    spatial[lib] = info
    adata.uns[Keys.SPATIAL] = spatial
    for col in (SpatialDataKeys.REGION_KEY, SpatialDataKeys.INSTANCE_KEY):
        if col in adata.obs and col in (region_key, instance_key):
            del adata.obs[col]
    if "spatialdata_attrs" in adata.uns:
        del adata.uns["spatialdata_attrs"]
    return adata


def _hires_from_element(sdata: SpatialData, image_key: str, cs: str) -> tuple[np.ndarray | None, float]:
    """Pick the pyramid level nearest to HIRES_MAX_SIZE and return it with its scale to ``cs`` coordinates."""
    from spatialdata.transformations import get_transformation

    element = sdata.images[image_key]
    levels = image_levels(element)
    full = levels[0]
    best = min(levels, key=lambda lvl: abs(max(lvl.sizes["y"], lvl.sizes["x"]) - HIRES_MAX_SIZE))
    transforms = get_transformation(element, get_all=True)
    if cs not in transforms:
        return None, 1.0
    # Map two image corners to the coordinate system to get the element's scale to global pixels.
    affine = transforms[cs].to_affine_matrix(input_axes=("x", "y"), output_axes=("x", "y"))
    to_global = float(np.sqrt(abs(np.linalg.det(affine[:2, :2]))))
    level_scale = best.sizes["x"] / full.sizes["x"]
    pixels = np.asarray(best.transpose("c", "y", "x").values)
    return to_rgb8(pixels, channels_first=True, what=f"image element {image_key!r}"), level_scale / to_global


def image_levels(element: Any) -> list[Any]:
    """The resolution levels of a SpatialData image element (full resolution first) as ``cyx`` DataArrays."""
    if hasattr(element, "keys"):  # multiscale: a DataTree with scale0, scale1, ...
        return [element[k]["image"] for k in element.keys()]
    return [element]
