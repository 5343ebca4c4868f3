"""Conversion between AnnData (scanpy/squidpy convention) and SpatialData, and access to the H&E image."""

from __future__ import annotations

import os
import warnings
from copy import deepcopy
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

__all__ = [
    "read_image",
    "to_spatialdata",
    "from_spatialdata",
    "read_spaceranger",
    "is_spaceranger",
    "read_visium_hd",
    "is_visium_hd",
    "read_xenium",
    "is_xenium",
    "platform_folder",
    "read_platform_folder",
]


def read_image(
    adata: AnnData | str | os.PathLike, library_id: str | None = None, *, max_size: int | None = None
) -> np.ndarray:
    """Read a section's H&E image from disk.

    Parameters
    ----------
    adata
        AnnData from a `phg2st.datasets` reader (the image path is in
        ``uns['spatial'][library_id]['metadata']['source_image_path']``), or the path of an image file.
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
    if isinstance(adata, (str, os.PathLike)):
        path = Path(adata)
        if not path.is_file():
            raise FileNotFoundError(f"No image file at {path}.")
    elif isinstance(adata, AnnData):
        path = full_resolution_path(adata, library_id)
    else:
        raise TypeError(f"`adata` must be an AnnData or the path of an image file, got {type(adata).__name__}.")
    return read_full(path) if max_size is None else read_downscaled(path, max_size)[0]


def to_spatialdata(
    adata: AnnData,
    *,
    library_id: str | None = None,
    image: bool = True,
    scale_factors: tuple[int, ...] = (2, 2, 2, 2),
    copy: bool = True,
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
    copy
        The table is a copy of ``adata``. With ``False``, it shares ``adata``'s expression, layers, embeddings and
        graphs (only ``obs`` and ``uns`` are copied): no second copy of a large slide in memory (about 7 GB for
        600,000 bins with 400 genes, 1,024-d features and uncertainty layers), but an array edited in place in one
        changes in the other. For writing a large slide straight to disk.

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
    if not isinstance(copy, bool):
        raise TypeError(f"`copy` must be True or False, got {copy!r}.")
    if copy:
        table = adata.copy()
    else:  # the same arrays, in a new AnnData whose obs (which the table model extends) and uns are its own
        table = AnnData(
            X=adata.X, obs=adata.obs.copy(), var=adata.var.copy(), uns=deepcopy(dict(adata.uns)),
            obsm=dict(adata.obsm), varm=dict(adata.varm), obsp=dict(adata.obsp), varp=dict(adata.varp),
            layers=dict(adata.layers),
        )  # fmt: skip
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

    if not isinstance(sdata, sd.SpatialData):
        raise TypeError(
            f"`sdata` must be a SpatialData object, got {type(sdata).__name__}"
            + (" (an AnnData is already what this function returns)." if isinstance(sdata, AnnData) else ".")
        )
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
    transforms = sd.transformations.get_transformation(shapes, get_all=True)
    cs = (
        SpatialDataKeys.COORDINATE_SYSTEM if SpatialDataKeys.COORDINATE_SYSTEM in transforms else next(iter(transforms))
    )
    instance = table.obs[instance_key].to_numpy()
    lib = str(table.obs[Keys.SECTION].iloc[0]) if Keys.SECTION in table.obs else shapes_key
    # obsm['spatial'] is in the spots element's own coordinates (the readers' convention); when the table has
    # none, the centres are taken in `cs` and the spots' transformation is then the identity.
    if Keys.SPATIAL in adata.obsm:
        geometries, spots_to_cs = shapes.loc[instance], _affine(transforms[cs])
    else:
        geometries, spots_to_cs = sd.transform(shapes, to_coordinate_system=cs).loc[instance], np.eye(3)
        centres = geometries.geometry.centroid
        adata.obsm[Keys.SPATIAL] = np.column_stack([centres.x.to_numpy(), centres.y.to_numpy()])
    spatial = dict(adata.uns.get(Keys.SPATIAL, {}))
    info = dict(spatial.get(lib, {}))
    scalefactors = dict(info.get(Keys.SCALEFACTORS, {}))
    recorded = float(scalefactors.get(Keys.SPOT_DIAMETER, np.nan))
    if not (np.isfinite(recorded) and recorded > 0):  # from the shapes, in their own coordinates
        scalefactors[Keys.SPOT_DIAMETER] = _spot_diameter(geometries)
    images = dict(info.get(Keys.IMAGES, {}))
    image_keys = list(sdata.images) if image_key is None else [image_key]
    if image_key is None and len(image_keys) > 1:
        warnings.warn(f"Several image elements {image_keys}; using {image_keys[0]!r} (choose with `image_key=`).",
                      UserWarning, stacklevel=2)  # fmt: skip
    if image_keys and Keys.HIRES not in images:
        hires, scalef = _hires_from_element(sdata, image_keys[0], cs, spots_to_cs, adata.obsm[Keys.SPATIAL])
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


def _affine(transform: Any) -> np.ndarray:
    return transform.to_affine_matrix(input_axes=("x", "y"), output_axes=("x", "y"))


def _spot_diameter(geometries: Any) -> float:
    """Median spot diameter of circles (twice the radius) or polygons (the side of a square of the same area)."""
    if "radius" in geometries:
        return float(2 * np.median(geometries["radius"]))
    area = geometries.geometry.area.to_numpy()
    return float(np.sqrt(np.median(area))) if len(area) and np.median(area) > 0 else float("nan")


def _hires_from_element(
    sdata: SpatialData, image_key: str, cs: str, spots_to_cs: np.ndarray, coords: np.ndarray
) -> tuple[np.ndarray | None, float]:
    """A ``hires`` image for scanpy's convention (``hires pixel = scalef * obsm['spatial']``) and its ``scalef``.

    The pyramid level nearest to HIRES_MAX_SIZE is used as it is when it maps to the spots' coordinates by a scale
    alone (Visium, phg2st's own stores); otherwise (a rotated or shifted alignment, as a post-Xenium H&E has) it is
    resampled onto the spots' coordinate frame, so that the picture lies under the spots.
    """
    from scipy import ndimage
    from spatialdata.transformations import get_transformation

    element = sdata.images[image_key]
    levels = image_levels(element)
    full = levels[0]
    best = min(levels, key=lambda lvl: abs(max(lvl.sizes["y"], lvl.sizes["x"]) - HIRES_MAX_SIZE))
    transforms = get_transformation(element, get_all=True)
    if cs not in transforms:
        return None, 1.0
    level_scale = best.sizes["x"] / full.sizes["x"]
    # spots' coordinates -> pixels of the chosen level
    to_level = np.diag([level_scale, level_scale, 1.0]) @ np.linalg.inv(_affine(transforms[cs])) @ spots_to_cs
    pixels = to_rgb8(np.asarray(best.transpose("c", "y", "x").values), channels_first=True,
                     what=f"image element {image_key!r}")  # fmt: skip
    linear, shift = to_level[:2, :2], to_level[:2, 2]
    scale = float(np.sqrt(abs(np.linalg.det(linear))))
    if np.allclose(linear, scale * np.eye(2), rtol=1e-6, atol=1e-9 * scale) and np.all(np.abs(shift) < 0.5):
        return pixels, scale
    # Resample: hires covers the spots' coordinates from 0 to their extent (plus a margin), HIRES_MAX_SIZE at most.
    extent = np.nanmax(np.asarray(coords, float), axis=0) * 1.02
    scalef = min(scale, HIRES_MAX_SIZE / float(max(extent)))
    height, width = (np.ceil(extent[::-1] * scalef)).astype(int)
    q = to_level @ np.diag([1.0 / scalef, 1.0 / scalef, 1.0])  # hires (x, y) -> level (x, y)
    matrix, offset = np.array([[q[1, 1], q[1, 0]], [q[0, 1], q[0, 0]]]), np.array([q[1, 2], q[0, 2]])
    hires = np.stack(
        [ndimage.affine_transform(pixels[..., c], matrix, offset, output_shape=(height, width), order=1, cval=255)
         for c in range(pixels.shape[-1])], axis=-1,
    )  # fmt: skip
    return hires.astype(np.uint8), scalef


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


def is_visium_hd(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a Visium HD Space Ranger output folder (``feature_slice.h5`` and ``binned_outputs/``)."""
    path = Path(path)
    return path.is_dir() and any(path.glob("*feature_slice.h5")) and (path / "binned_outputs").is_dir()


def is_xenium(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a Xenium output folder (``experiment.xenium`` and the cell-feature matrix)."""
    path = Path(path)
    return path.is_dir() and (path / "experiment.xenium").is_file() and (path / "cell_feature_matrix.h5").is_file()


def _spatialdata_io(what: str) -> Any:
    try:
        import spatialdata_io
    except ImportError as err:
        raise ImportError(f"Reading {what} needs spatialdata-io: pip install 'phg2st-sc[io]'.") from err
    return spatialdata_io


def _section_name(path: Path, section: str | None) -> str:
    return section or (path.parent.name if path.name == "outs" else path.name)


def read_visium_hd(path: str | os.PathLike, *, bin_size: int = 8, section: str | None = None) -> SpatialData:
    """Read one bin size of a Visium HD Space Ranger output folder through spatialdata-io, ready for phg2st-sc.

    ``spatialdata_io.visium_hd`` reads the bins' counts and positions, the scale factors and the images; this keeps
    the ``bin_size`` table (renamed ``"table"``) and its square bins, the full-resolution microscope image (the
    ``hires`` / ``lowres`` downscales are dropped when it is there, so that the store has one H&E element), and adds
    ``obs['section']``, the bin side as the spot diameter and ``bin_size_um`` in
    ``uns['spatial'][section]['scalefactors']`` (bins then plot as squares of their true size and the bin pitch is
    the spot pitch of the hypergraph), and the image's microns per pixel in ``['metadata']``.

    Tiles are sized physically, whatever the bin: pass ``mpp=0.5`` to :func:`phg2st_sc.pp.embed_tiles` (UNI's
    training resolution; a 224 px tile then covers 112 µm, 14 bins of 8 µm, and the 5x5 neighbour window 560 µm).
    A tile of one 8 µm bin (16 px at 0.5 µm per pixel, blown up to 224) would show the encoder no tissue structure.
    Needs the ``io`` extra (``pip install phg2st-sc[io]``).

    Parameters
    ----------
    path
        The folder Space Ranger wrote (``outs/``): ``feature_slice.h5``, ``spatial/`` and
        ``binned_outputs/square_<bin>um/`` (``filtered_feature_bc_matrix.h5``, ``spatial/tissue_positions.parquet``,
        ``spatial/scalefactors_json.json``), the full-resolution image in ``microscope_image/`` when it was kept.
    bin_size
        Bin side in µm: 2, 8 (the usual choice) or 16, among those in ``binned_outputs/``.
    section
        Section name (element names, ``obs['section']``, the library key); default the folder's name.

    Returns
    -------
    A SpatialData object: the bins (``<section>_square_<bin>um``, squares), the H&E (``<section>_full_image``, or
    ``<section>_hires_image`` without the microscope image) and ``tables['table']`` linked to the bins.

    Examples
    --------
    >>> sdata = phg2st.io.read_visium_hd("sample/outs", bin_size=8)  # doctest: +SKIP
    >>> phg2st.pp.embed_tiles(sdata, encoder="uni", mpp=0.5)  # doctest: +SKIP
    """
    path = Path(path).expanduser()
    if not is_visium_hd(path):
        raise FileNotFoundError(
            f"{path} is not a Visium HD Space Ranger output folder: it needs feature_slice.h5 and binned_outputs/ "
            "(the `outs` folder of `spaceranger count` on a Visium HD slide)."
        )
    folder = f"square_{int(bin_size):03d}um"
    available = sorted(p.name for p in (path / "binned_outputs").glob("square_*um") if p.is_dir())
    if isinstance(bin_size, bool) or folder not in available:
        raise ValueError(f"`bin_size` {bin_size!r} µm is not in this output; it has {available}.")
    spatialdata_io = _spatialdata_io("Visium HD folders")
    import json

    name = _section_name(path, section)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # its notes on the default of load_segmentations_only and on zarr versions
        sdata = spatialdata_io.visium_hd(path, dataset_id=name, bin_size=int(bin_size), load_segmentations_only=False,
                                         bins_as_squares=True, annotate_table_by_labels=False)  # fmt: skip
    full, hires, lowres = (f"{name}_{kind}_image" for kind in ("full", "hires", "lowres"))
    for key in [hires, lowres] if full in sdata.images else [lowres] if hires in sdata.images else []:
        del sdata.images[key]
    for key in [k for k in sdata.tables if k != folder]:
        del sdata.tables[key]
    table = sdata.tables[folder]
    del sdata.tables[folder]
    scalefactors = json.loads((path / "binned_outputs" / folder / "spatial" / "scalefactors_json.json").read_text())
    mpp = float(scalefactors.get("microns_per_pixel", np.nan))
    table.obs[Keys.SECTION] = pd.Categorical([name] * table.n_obs)
    kept = (Keys.SPOT_DIAMETER, Keys.BIN_SIZE, "microns_per_pixel")  # not the scales of the dropped downscales
    info = {Keys.SCALEFACTORS: {k: float(scalefactors[k]) for k in kept if k in scalefactors},
            Keys.METADATA: {Keys.MPP: mpp} if np.isfinite(mpp) and mpp > 0 else {}}  # fmt: skip
    table.uns[Keys.SPATIAL] = {name: info}
    sdata.tables[SpatialDataKeys.TABLE] = table
    return sdata


def read_xenium(
    path: str | os.PathLike,
    *,
    he_image: str | os.PathLike | None = None,
    alignment: str | os.PathLike | None = None,
    section: str | None = None,
) -> SpatialData:
    """Read a Xenium output folder and its post-Xenium H&E through spatialdata-io: cells become spots.

    ``spatialdata_io.xenium`` reads the cell-feature matrix, the cell centroids (µm) and the aligned H&E
    (``*he_image.ome.tif`` with its ``*he_imagealignment.csv``, the affine map from H&E pixels to Xenium pixels);
    this keeps the cells as circles of their area (``cell_circles``, the table linked to them), the H&E as the one
    image element (``he_image``; the morphology stains, boundaries, labels and transcripts are not read), and adds
    ``obs['section']``, the median cell diameter and the scale in ``uns['spatial'][section]``: ``microns_per_pixel``
    is that of the spots' coordinates (1: the centroids are in µm; it is what tile sizing reads) and
    ``he_microns_per_pixel`` the H&E's (from the alignment and Xenium's pixel size). :func:`phg2st_sc.pp.embed_tiles` then finds each cell on the H&E
    through the alignment, rotation included; pass ``mpp=0.5`` so tiles cover 112 µm of tissue around each cell.
    Needs the ``io`` extra (``pip install phg2st-sc[io]``).

    Parameters
    ----------
    path
        The Xenium output folder: ``experiment.xenium``, ``cells.parquet``, ``cell_feature_matrix.h5``,
        ``cells.zarr.zip``, and the H&E when it was placed there.
    he_image
        The H&E image file when it is not ``<path>/*he_image.ome.tif`` (an OME-TIFF, RGB).
    alignment
        Its alignment CSV (3 x 3, H&E pixels to Xenium pixels), with ``he_image``; without one the image is taken
        as already aligned (its pixels are Xenium's).
    section
        Section name (``obs['section']`` and the library key); default the folder's name.

    Returns
    -------
    A SpatialData object: ``shapes['cell_circles']``, ``images['he_image']`` and ``tables['table']`` linked to the
    circles (``obsm['spatial']`` in µm).

    Examples
    --------
    >>> sdata = phg2st.io.read_xenium("xenium_run/outs")  # doctest: +SKIP
    >>> phg2st.pp.embed_tiles(sdata, encoder="uni", mpp=0.5)  # doctest: +SKIP
    """
    path = Path(path).expanduser()
    if not is_xenium(path):
        raise FileNotFoundError(
            f"{path} is not a Xenium output folder: it needs experiment.xenium and cell_feature_matrix.h5."
        )
    if alignment is not None and he_image is None:
        raise ValueError("`alignment` is the alignment of `he_image`: give both.")
    spatialdata_io = _spatialdata_io("Xenium folders")
    import json

    name = _section_name(path, section)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # its notes on versions and on zarr
        sdata = spatialdata_io.xenium(
            path, cells_boundaries=False, nucleus_boundaries=False, cells_as_circles=True, cells_labels=False,
            nucleus_labels=False, transcripts=False, morphology_mip=False, morphology_focus=False,
            aligned_images=he_image is None,
        )  # fmt: skip
        if he_image is not None:
            he_image = Path(he_image).expanduser()
            if not he_image.is_file():
                raise FileNotFoundError(f"No H&E image file {he_image}.")
            sdata.images["he_image"] = spatialdata_io.xenium_aligned_image(
                he_image, None if alignment is None else Path(alignment).expanduser(), c_coords=["r", "g", "b"]
            )
    if "he_image" not in sdata.images:
        raise FileNotFoundError(
            f"No post-Xenium H&E in {path} (a file ending in he_image.ome.tif): give it with `he_image=` (and its "
            "alignment CSV with `alignment=`)."
        )
    for key in [k for k in sdata.images if k != "he_image"]:
        del sdata.images[key]
    specs = json.loads((path / "experiment.xenium").read_text())
    pixel_um = float(specs.get("pixel_size", 0.2125))
    from spatialdata.transformations import get_transformation

    he_to_xenium = _affine(get_transformation(sdata.images["he_image"], "global"))
    mpp = pixel_um * float(np.sqrt(abs(np.linalg.det(he_to_xenium[:2, :2]))))
    table = sdata.tables[SpatialDataKeys.TABLE]
    table.obs[Keys.SECTION] = pd.Categorical([name] * table.n_obs)
    diameter = _spot_diameter(sdata.shapes["cell_circles"])  # µm, the unit of the centroids
    table.uns[Keys.SPATIAL] = {name: {Keys.SCALEFACTORS: {Keys.SPOT_DIAMETER: diameter},
                                      Keys.METADATA: {Keys.MPP: 1.0, "he_microns_per_pixel": mpp,
                                                      "xenium_pixel_size_um": pixel_um}}}  # fmt: skip
    return sdata


_FOLDER_READERS = {
    "Visium HD": (is_visium_hd, read_visium_hd),
    "Space Ranger (Visium)": (is_spaceranger, read_spaceranger),
    "Xenium": (is_xenium, read_xenium),
}  # fmt: skip  (HD first: its outs/ also has scale factors)


def platform_folder(path: str | os.PathLike) -> str | None:
    """Which platform's output folder ``path`` is (``"Space Ranger (Visium)"``, ``"Visium HD"``, ``"Xenium"``), or None."""
    return next((kind for kind, (test, _) in _FOLDER_READERS.items() if test(path)), None)


def read_platform_folder(path: str | os.PathLike, *, section: str | None = None) -> SpatialData:
    """Read a Space Ranger (Visium or Visium HD, 8 µm bins) or Xenium output folder with its reader above."""
    kind = platform_folder(path)
    if kind is None:
        raise FileNotFoundError(f"{path} is not a Space Ranger, Visium HD or Xenium output folder.")
    return _FOLDER_READERS[kind][1](path, section=section)
