"""Conversion between AnnData (scanpy/squidpy convention) and SpatialData, and access to the H&E image."""

from __future__ import annotations

import os
import warnings
from pathlib import Path
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

__all__ = ["read_image", "to_spatialdata", "from_spatialdata", "read_spaceranger", "is_spaceranger"]


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


VISIUM_SPOT_UM = (
    55.0  # diameter of a Visium spot (capture area v1/v2), which Space Ranger's scale factors give in pixels
)


def is_spaceranger(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a Space Ranger output folder (``spatial/scalefactors_json.json`` and a filtered matrix)."""
    path = Path(path)
    return (
        path.is_dir()
        and (path / "spatial" / "scalefactors_json.json").is_file()
        and any(path.glob("*filtered_feature_bc_matrix.h5"))
    )


def read_spaceranger(path: str | os.PathLike, *, section: str | None = None) -> SpatialData:
    """Read a Visium Space Ranger output folder through spatialdata-io, ready for :func:`phg2st_sc.pp.embed_tiles`.

    ``spatialdata_io.visium`` reads the filtered counts, the spot positions, the scale factors and the ``hires`` /
    ``lowres`` images (the ``lowres`` thumbnail is dropped when the ``hires`` image is there, so that the store has
    one H&E element); this adds what phg2st-sc reads from a table: ``obs['section']`` and the image's microns per
    pixel in ``uns['spatial'][section]['metadata']``, from the spot diameter (Visium spots are 55 µm), so that
    ``embed_tiles(mpp=...)`` can size tiles physically. Needs the ``io`` extra (``pip install phg2st-sc[io]``).

    Parameters
    ----------
    path
        The folder Space Ranger wrote (``outs/``): ``filtered_feature_bc_matrix.h5`` (or ``<id>_...``),
        ``spatial/tissue_positions.csv`` (or ``tissue_positions_list.csv``), ``spatial/scalefactors_json.json`` and
        the images in ``spatial/``.
    section
        Section name (the shapes element, ``obs['section']`` and the library key); default the folder's name.

    Returns
    -------
    A SpatialData object: spot circles, the ``hires`` image (``<section>_hires_image``) and the table linked to
    the circles.

    Examples
    --------
    >>> sdata = phg2st.io.read_spaceranger("sample/outs", section="sample")  # doctest: +SKIP
    >>> phg2st.pp.embed_tiles(sdata, encoder="efficientnet_lite0")  # doctest: +SKIP
    """
    path = Path(path).expanduser()
    if not is_spaceranger(path):
        raise FileNotFoundError(
            f"{path} is not a Space Ranger output folder: it needs spatial/scalefactors_json.json and "
            "filtered_feature_bc_matrix.h5 (the `outs` folder of `spaceranger count`)."
        )
    try:
        import spatialdata_io
    except ImportError as err:
        raise ImportError("Reading Space Ranger folders needs spatialdata-io: pip install 'phg2st-sc[io]'.") from err
    import json

    name = section or (path.parent.name if path.name == "outs" else path.name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # its notes on the library id and on zarr versions
        sdata = spatialdata_io.visium(path, dataset_id=name)
    lowres = f"{name}_lowres_image"
    if f"{name}_hires_image" in sdata.images and lowres in sdata.images:
        del sdata.images[lowres]  # a thumbnail of the same image: one H&E element, so no image_key is needed
    table = sdata.tables["table"]
    scalefactors = json.loads((path / "spatial" / "scalefactors_json.json").read_text())
    diameter = float(scalefactors.get(Keys.SPOT_DIAMETER, np.nan))
    metadata = {Keys.MPP: VISIUM_SPOT_UM / diameter} if np.isfinite(diameter) and diameter > 0 else {}
    table.obs[Keys.SECTION] = pd.Categorical([name] * table.n_obs)
    info = {Keys.SCALEFACTORS: {k: v for k, v in scalefactors.items() if isinstance(v, int | float)},
            Keys.METADATA: metadata}  # fmt: skip
    table.uns[Keys.SPATIAL] = {name: info}
    return sdata
