"""Tile embeddings of every spot and of its neighbour window, each image tile embedded once."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from anndata import AnnData

from phg2st_sc._constants import Keys
from phg2st_sc._docs import inject_docs
from phg2st_sc._image import full_resolution_path, image_size, library_info, pixel_scale
from phg2st_sc._settings import settings
from phg2st_sc._utils import _is_spatialdata, check_slots, get_table, write_slots
from phg2st_sc._validate import (
    check_inside_image,
    check_nonempty,
    check_positive_int,
    check_unique_names,
    get_coordinates,
)
from phg2st_sc.pp._tiles import ArrayLoader, ImageFile, RegionReader, TilePlan, plan_tiles

if TYPE_CHECKING:
    from spatialdata import SpatialData
    from torch import nn

logger = logging.getLogger("phg2st_sc")

IN_MEMORY_BYTES = 4 * 1024**3


def _anndata_source(adata: AnnData, library_id: str | None, spatial_key: str) -> dict[str, Any]:
    path = full_resolution_path(adata, library_id)
    lib, info = library_info(adata, library_id)
    width, height = image_size(path)
    st = path.stat()
    return {
        "reader": RegionReader(ImageFile(path), (height, width)),
        "coords": get_coordinates(adata, spatial_key),
        "px_per_unit": 1.0,
        "mpp": info.get(Keys.METADATA, {}).get(Keys.MPP),
        "source": f"{path.resolve()}:{st.st_size}:{int(st.st_mtime)}",
        "library_id": lib,
    }


def _spatialdata_source(sdata: SpatialData, table: AnnData, image_key: str | None, spatial_key: str) -> dict[str, Any]:
    import hashlib

    from spatialdata.transformations import get_transformation

    images = list(sdata.images)
    if image_key is None:
        if len(images) != 1:
            raise ValueError(f"Choose the H&E with `image_key=`: this SpatialData has image elements {images}.")
        image_key = images[0]
    if image_key not in sdata.images:
        raise KeyError(f"No image element {image_key!r}; this SpatialData has {images}.")
    from phg2st_sc.io import image_levels

    element = sdata.images[image_key]
    levels = image_levels(element)
    full, smallest = levels[0], levels[-1]
    spots_key, spot_transforms = _spots_element(sdata, table)
    transforms = get_transformation(element, get_all=True)
    shared = [cs for cs in transforms if cs in spot_transforms]
    if not shared:
        raise ValueError(
            f"The image {image_key!r} (coordinate systems {sorted(transforms)}) and the spots {spots_key!r} (coordinate "
            f"systems {sorted(spot_transforms)}) share no coordinate system, so nothing says where the spots lie on "
            "the image. Add a transformation that links them (`spatialdata.transformations.set_transformation`)."
        )
    cs = "global" if "global" in shared else shared[0]

    def affine(transform) -> np.ndarray:
        return transform.to_affine_matrix(input_axes=("x", "y"), output_axes=("x", "y"))

    # obsm[spatial_key] holds the spots in their element's own coordinates: to the shared system, then to image pixels
    to_pixels = np.linalg.inv(affine(transforms[cs])) @ affine(spot_transforms[cs])
    coords = get_coordinates(table, spatial_key) @ to_pixels[:2, :2].T + to_pixels[:2, 2]
    dtype = full.dtype
    if dtype != np.uint8 and dtype.kind != "b":  # the range sets the scale (and negative values are refused)
        low, high = float(smallest.min()), float(smallest.max())  # the smallest level: cheap to read whole
    else:
        low, high = 0.0, 0.0
    scale = pixel_scale(dtype, low, high, f"Image element {image_key!r}")
    n_channels = int(full.sizes.get("c", 1))
    if not 1 <= n_channels <= 4:
        raise ValueError(
            f"Image element {image_key!r} has {n_channels} channels: an H&E image has 3 (RGB), or 1 (grey) or 4 "
            "(RGBA). Give the H&E with `image_key=`."
        )
    mpp = None
    for info in table.uns.get(Keys.SPATIAL, {}).values():
        mpp = info.get(Keys.METADATA, {}).get(Keys.MPP, mpp)
    thumb = hashlib.sha256(np.ascontiguousarray(np.asarray(smallest.values)).tobytes()).hexdigest()[:16]
    # Slides that fit comfortably in memory are read once (dask slicing costs ~10 ms per tile); larger ones lazily.
    loader = ArrayLoader(full.data, IN_MEMORY_BYTES)
    return {
        "reader": RegionReader(loader, (full.sizes["y"], full.sizes["x"]), channels_first=True, scale=scale),
        "coords": coords,
        "px_per_unit": float(np.sqrt(abs(np.linalg.det(to_pixels[:2, :2])))),
        "mpp": mpp,
        "source": f"{getattr(sdata, 'path', None)}:{image_key}:{full.shape}:{thumb}",
        "library_id": image_key,
    }


def _spots_element(sdata: SpatialData, table: AnnData) -> tuple[str, dict[str, Any]]:
    """The element a SpatialData table annotates (the spots) and its transformations, or an error saying why not."""
    from spatialdata.models import get_table_keys
    from spatialdata.transformations import get_transformation

    try:
        regions = get_table_keys(table)[0]
    except ValueError:
        regions = None
    regions = [regions] if isinstance(regions, str) else list(regions or [])
    if len(regions) != 1:
        raise ValueError(
            "The table must annotate one spots element (circles or points), so that the coordinate system of "
            f"`obsm['spatial']` is known; it annotates {regions or 'none'}. Link it with "
            "`spatialdata.models.TableModel.parse(table, region=..., region_key=..., instance_key=...)`."
        )
    key = regions[0]
    for kind in ("shapes", "points", "labels"):
        elements = getattr(sdata, kind)
        if key in elements:
            return key, get_transformation(elements[key], get_all=True)
    raise KeyError(f"The table annotates {key!r}, which is not an element of this SpatialData.")


@inject_docs
def embed_tiles(
    adata: AnnData | SpatialData,
    *,
    encoder: str | nn.Module | Callable = "uni",
    weights: str | os.PathLike | None = None,
    tile_size: int = 224,
    mpp: float | None = None,
    grid_size: int = 5,
    batch_size: int = 64,
    device: str = "auto",
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto",
    num_workers: int | None = None,
    cache_dir: str | os.PathLike | None = None,
    library_id: str | None = None,
    image_key: str | None = None,
    spatial_key: str = Keys.SPATIAL,
    key_added: str | None = None,
    table_key: str | None = None,
    overwrite: bool = False,
    copy: bool = False,
) -> AnnData | None:
    """Embed each spot's tile and its neighbour window with an image encoder, every image tile once.

    PHG2ST (section 3.2.1 of the paper) uses a 224 px tile centred on each spot and the 25 tiles of the 5x5 grid
    of a 1120 px window centred on it. Neighbouring spots' windows overlap, so the neighbour tiles are laid on
    one lattice per slide (cells of ``tile_size`` pixels from the image origin) and each spot's window is the
    ``grid_size x grid_size`` block of cells around the cell holding the spot (shifted from the exact window
    by at most half a tile). Each lattice cell is embedded once: about ``n + T`` encoder passes for ``n`` spots
    and ``T`` distinct cells instead of ``n * (1 + grid_size^2)``. Cells whose centre is off the image are
    masked; tiles partly off the image are padded with white.

    Whole-slide images are read region by region where the format allows: a tiled (pyramidal) 8-bit RGB TIFF,
    OME-TIFF or SVS is opened lazily and only the tiles the spots use are decoded; a SpatialData image is read
    from its (dask) array. Other files (JPEG, PNG, striped TIFF) are decoded whole, once.

    Parameters
    ----------
    {adata}
        AnnData needs the image path of a `phg2st.datasets` reader; SpatialData uses its (multiscale) image.
    encoder
        ``"uni"`` (ViT-L/16 with UNI's weights, 1024-d), ``"efficientnet_lite0"`` (ImageNet weights shipped with
        the package, offline, 1280-d), ``"resnet50"`` (local weights, 2048-d), or any ``torch.nn.Module`` /
        callable mapping ImageNet-normalised (B, 3, 224, 224) batches to (B, d). A module is run in eval mode
        on ``device`` and handed back as it came: on its own device, each submodule's train/eval flag unchanged.
    weights
        Weights file of a named encoder (``.safetensors`` or a torch state dict, loaded with
        ``weights_only=True`` and strict key matching). For UNI it defaults to ``$PHG2ST_UNI_WEIGHTS``;
        ``"hf-hub:MahmoodLab/uni"`` downloads them for users with access.
    tile_size
        Tile side in image pixels (full resolution) when ``mpp`` is not given. Tiles are resampled to the encoder's
        input size (224 for the named encoders; ``tile_size`` for a module or callable).
    mpp
        Microns per pixel the encoder should see (UNI-style models were trained at 0.5): a tile then covers
        ``tile_size * mpp`` microns of the image. Needs the image's microns per pixel (the readers record it).
    grid_size
        Side of the neighbour window in tiles (odd); 0 embeds the spot tiles only.
    batch_size
        Tiles per encoder call.
    device
        ``"auto"`` (CUDA, then MPS, then CPU), or a torch device string.
    precision
        ``"auto"`` uses bf16 autocast where the hardware runs it natively (CUDA, CPUs with AVX512-BF16/AMX) and
        fp32 elsewhere; bf16 changes features by a few percent. ``"fp32"`` is plain float32 on a GPU too (TF32
        off for the call).
    num_workers
        Data-loader worker processes; ``None`` uses none on the CPU and up to 8 with a GPU.
    cache_dir
        Folder of a resumable cache: embeddings are saved batch by batch, and a rerun (after an interruption, or
        on another slide list) takes finished batches from it instead of recomputing them.
    library_id
        Section in ``uns['spatial']`` whose image to use (AnnData input).
    image_key
        Image element to use (SpatialData input); may be omitted when there is one.
    spatial_key
        ``obsm`` key with spot centres (full-resolution pixels, or the SpatialData coordinate system).
    key_added
        Slot name; defaults to ``"X_<encoder name>"`` (``"X_uni"``).
    {table_key}
    {overwrite}
    {copy}

    Returns
    -------
    {returns_copy}

    ``.obsm['{{key_added}}']``
        (n, d) float32 embeddings of the spot tiles.
    ``.obsm['{{key_added}}_neighbours']``
        (n, grid_size^2) int32 row-major index of each spot's window cells into the tile table; -1 where
        masked (only with ``grid_size > 0``). :func:`neighbour_embeddings` returns the (n, 25, d) view.
    ``.uns['{{key_added}}']['params']``
        Encoder, tile geometry, device, precision, and the encoder passes against the naive count; beside it
        ``tile_embeddings`` (T, d) and ``tile_cells`` (T, 2) lattice (column, row) of the cells.

    Examples
    --------
    >>> phg2st.pp.embed_tiles(adata, encoder="efficientnet_lite0")  # doctest: +SKIP
    >>> adata.obsm["X_efficientnet_lite0"].shape  # doctest: +SKIP
    """
    from phg2st_sc._model._embed import embed_regions
    from phg2st_sc._model._encoders import get_encoder

    table = get_table(adata, table_key)
    check_nonempty(table)
    check_unique_names(table, var=False)
    tile_size = check_positive_int(tile_size, "tile_size", minimum=8)
    batch_size = check_positive_int(batch_size, "batch_size")
    if (
        isinstance(grid_size, bool)
        or not isinstance(grid_size, int)
        or grid_size < 0
        or (grid_size and grid_size % 2 == 0)
    ):
        raise ValueError(f"`grid_size` must be 0 or a positive odd integer, got {grid_size!r}.")
    if mpp is not None and (not np.isfinite(mpp) or mpp <= 0):
        raise ValueError(f"`mpp` must be a positive number of microns per pixel, got {mpp}.")
    src = _image_source(adata, table, image_key, library_id, spatial_key)
    coords, reader = src["coords"], src["reader"]
    height, width = reader.shape
    region = _region_px(src, tile_size, mpp)

    def slots_of(key: str) -> dict[tuple[str, str], str]:
        return {("obsm", key): "key_added", ("obsm", Keys.tile_index(key)): "key_added", ("uns", key): "key_added"}

    if key_added is not None:  # checked before the encoder is loaded
        check_slots(table, slots_of(key_added), overwrite=overwrite, writer="pp.embed_tiles")
    enc = get_encoder(encoder, weights, input_size=tile_size)
    key_added = Keys.embedding(enc.name) if key_added is None else key_added
    slots = slots_of(key_added)
    check_slots(table, slots, overwrite=overwrite, writer="pp.embed_tiles")

    plan: TilePlan = plan_tiles(coords, (height, width), region, grid_size if grid_size else 1)
    boxes = plan.spot_boxes if not grid_size else np.concatenate([plan.spot_boxes, plan.cell_boxes])
    emb, record = embed_regions(
        reader,
        boxes,
        region,
        enc,
        batch_size=batch_size,
        device=device,
        precision=precision,
        num_workers=num_workers,
        cache_dir=cache_dir,
        cache_key={"source": src["source"]},
        progress=settings.progress,
    )
    params = {
        "encoder": enc.name, "encoder_fingerprint": enc.fingerprint or "", "weights": "" if weights is None else str(weights),
        "dim": enc.dim, "tile_size": tile_size, "input_size": enc.input_size, "mpp": -1.0 if mpp is None else float(mpp),
        "region_px": int(region), "grid_size": grid_size, "spot_tiles": table.n_obs,
        "neighbour_tiles": len(plan.cells) if grid_size else 0, "tiles_embedded": len(boxes),
        "naive_crops": table.n_obs * (1 + grid_size * grid_size), "encoder_passes_this_run": record["encoder_passes"],
        "batches_from_cache": record["batches_from_cache"], "device": record["device"],
        "precision": record["precision"], "library_id": str(src["library_id"]),
    }  # fmt: skip
    logger.info(
        "Embedded %d tiles for %d spots with %s (naive per-spot crops: %d, %.1fx more).",
        len(boxes), table.n_obs, enc.name, params["naive_crops"], params["naive_crops"] / len(boxes),
    )  # fmt: skip
    writes = _embedding_writes(table.n_obs, emb, plan, key_added, params)
    return write_slots(table, writes, copy=copy, overwrite=overwrite, names=slots, writer="pp.embed_tiles")


def _image_source(
    adata: Any, table: AnnData, image_key: str | None, library_id: str | None, spatial_key: str
) -> dict[str, Any]:
    """The section's image reader and spot coordinates in its pixels (every spot checked to lie on the image)."""
    if _is_spatialdata(adata):
        src = _spatialdata_source(adata, table, image_key, spatial_key)
        hint = "check the coordinate transformations of the image element and of the spots"
    else:
        if image_key is not None:
            raise ValueError("`image_key` is for SpatialData input; AnnData uses `library_id`.")
        src = _anndata_source(table, library_id, spatial_key)
        hint = (
            f"if the image file is a downscaled copy, point `uns['spatial'][{src['library_id']!r}]['metadata']"
            "['source_image_path']` at the full-resolution image; if the coordinates are at another resolution, "
            "convert them to full-resolution pixels (e.g. divide hires-image coordinates by `tissue_hires_scalef`)"
        )
    height, width = src["reader"].shape
    check_inside_image(src["coords"], width, height, hint=hint, spatial_key=spatial_key)
    return src


def _region_px(src: dict[str, Any], tile_size: int, mpp: float | None) -> int:
    """Image pixels a tile covers: ``tile_size`` coordinate units, or ``tile_size`` pixels at ``mpp``."""
    if mpp is None:
        region = round(tile_size * src["px_per_unit"])
    else:
        if not src["mpp"]:
            raise ValueError("`mpp` needs the image's microns per pixel, which is not recorded for this section.")
        region = round(tile_size * mpp / float(src["mpp"]) * src["px_per_unit"])
    if region < 8:
        raise ValueError(f"A tile would cover only {region} image pixels; use a larger `tile_size` or `mpp`.")
    return region


def _embedding_writes(
    n: int, emb: np.ndarray, plan: TilePlan, key: str, params: dict[str, Any]
) -> dict[tuple[str, str], Any]:
    """The slots of an embedding: spot features, the neighbour-tile index and tiles (with a grid), the record."""
    uns: dict[str, Any] = {"params": params}
    writes: dict[tuple[str, str], Any] = {("obsm", key): emb[:n]}
    if params["grid_size"]:
        uns["tile_embeddings"] = emb[n:]
        uns["tile_cells"] = plan.cells.astype(np.int32)
        writes[("obsm", Keys.tile_index(key))] = plan.index.astype(np.int32)
    else:  # a previous run's neighbour index would point at tiles that are no longer stored
        writes[("obsm", Keys.tile_index(key))] = None
    writes[("uns", key)] = uns
    return writes


@inject_docs
def neighbour_embeddings(
    adata: AnnData | SpatialData,
    key: str = "X_uni",
    *,
    table_key: str | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The (n, grid^2, d) neighbour-tile embeddings of every spot, and their mask.

    :func:`embed_tiles` stores each distinct tile once (``uns[key]['tile_embeddings']``) and an index per spot
    (``obsm[key + '_neighbours']``); this gathers the dense view. Masked tiles (off the image) are zero.

    Parameters
    ----------
    {adata}
    key
        ``key_added`` of :func:`embed_tiles`.
    {table_key}

    Returns
    -------
    The float32 array (n, grid^2, d) and the boolean mask (n, grid^2), True where a tile exists.
    """
    table = get_table(adata, table_key)
    index_key = Keys.tile_index(key)
    if index_key not in table.obsm or key not in table.uns or "tile_embeddings" not in table.uns[key]:
        raise KeyError(
            f"No neighbour tiles under {key!r}: run `phg2st.pp.embed_tiles(adata, key_added={key!r})` with grid_size > 0."
        )
    index = np.asarray(table.obsm[index_key])
    tiles = np.asarray(table.uns[key]["tile_embeddings"], dtype=np.float32)
    mask = index >= 0
    if index.max(initial=-1) >= len(tiles):
        raise ValueError(f"`obsm[{index_key!r}]` points past the {len(tiles)} stored tiles; re-run embed_tiles.")
    out = np.zeros((*index.shape, tiles.shape[1]), dtype=np.float32)
    out[mask] = tiles[index[mask]]
    return out, mask
