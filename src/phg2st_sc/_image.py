"""Access to the H&E image of a section: a downscaled copy in memory, the full resolution on disk."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
from anndata import AnnData

from ._constants import Keys
from ._errors import MissingImageError

HIRES_MAX_SIZE = 2000


def _open(path: str | os.PathLike):
    from PIL import Image

    Image.MAX_IMAGE_PIXELS = None  # whole-slide JPEGs exceed Pillow's decompression-bomb limit
    return Image.open(path)


#: Pillow modes whose pixels are not 8-bit: read as arrays and scaled by :func:`to_rgb8` (Pillow's own conversion
#: to RGB clips them, so that a 16-bit greyscale image becomes all white).
_HIGH_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")


def pixel_scale(dtype: Any, vmin: float, vmax: float, what: str = "the image") -> float:
    """The factor that maps an image's values to 0-255, from its dtype and its range.

    ``uint8`` is unchanged and booleans give 0/255. Wider integers are scaled by the bit depth their values use:
    up to 255 they are 8-bit data in a wider type (unchanged), up to 65535 16-bit (65535 -> 255), above that 32-bit
    (a brightfield H&E is mostly near-white background, so its maximum tells the depth). Floats in [0, 1] are
    multiplied by 255 and floats in (1, 255] kept as they are. Negative values, floats above 255 and NaN are
    refused: no scaling of them is right for an H&E image.
    """
    dtype = np.dtype(dtype)
    if dtype.kind == "b":
        return 255.0
    if dtype.kind not in "iuf":
        raise TypeError(f"{what} has pixels of dtype {dtype}; an H&E image holds numbers (uint8 RGB, ideally).")
    if not (np.isfinite(vmin) and np.isfinite(vmax)):
        raise ValueError(f"{what} contains NaN or infinite pixel values.")
    if vmin < 0:
        raise ValueError(f"{what} has negative pixel values (down to {vmin:g}); an H&E image has none.")
    if dtype.kind in "iu":
        for bits in (8, 16, 32, 64):
            if vmax <= 2**bits - 1 or bits >= 8 * dtype.itemsize:
                return 255.0 / (2**bits - 1)
    return _float_scale(vmax, what)


def _float_scale(vmax: float, what: str) -> float:
    if vmax <= 1.0:
        return 255.0
    if vmax <= 255.0:
        return 1.0
    raise ValueError(
        f"{what} has float pixels up to {vmax:g}: scale them to [0, 1] or [0, 255] first (or convert to uint8)."
    )


def to_rgb8(
    pixels: Any, *, scale: float | None = None, channels_first: bool = False, what: str = "the image"
) -> np.ndarray:
    """Any image array as (height, width, 3) ``uint8`` RGB, the one conversion every reader of pixels uses.

    Grey (2-D, or one channel) is replicated into three channels; grey + alpha and RGBA lose their alpha channel
    (it is dropped, not composited); more than four channels is refused (not an H&E image). Values are mapped to
    0-255 by ``scale`` (:func:`pixel_scale` of the array when not given), rounded and clipped.

    Parameters
    ----------
    pixels
        (height, width), (height, width, channels), or (channels, height, width) with ``channels_first``.
    scale
        Factor to 0-255, decided once for a whole image (a region of it must not pick its own).
    channels_first
        The channel axis comes first (SpatialData's ``cyx``).
    what
        What the image is, for messages.
    """
    arr = np.asarray(pixels)
    if arr.ndim == 3 and channels_first:
        arr = np.moveaxis(arr, 0, -1)
    if arr.ndim == 2:
        arr = arr[..., None]
    if arr.ndim != 3 or not 1 <= arr.shape[-1] <= 4:
        raise ValueError(
            f"{what} has shape {np.shape(pixels)}: an H&E image is (height, width) grey or (height, width, 3/4) "
            "RGB(A) (channels first for SpatialData). Select its colour channels first."
        )
    channels = arr.shape[-1]
    if channels <= 2:  # grey, or grey + alpha
        arr = np.repeat(arr[..., :1], 3, axis=-1)
    else:
        arr = arr[..., :3]
    if scale is None:
        scale = pixel_scale(
            arr.dtype, float(arr.min()) if arr.size else 0.0, float(arr.max()) if arr.size else 0.0, what
        )
    if arr.dtype == np.uint8 and scale == 1.0:
        return np.ascontiguousarray(arr)
    out = np.rint(arr.astype(np.float32) * np.float32(scale))
    return np.clip(out, 0, 255).astype(np.uint8)


def _pil_rgb(im: Any, what: str) -> np.ndarray:
    """A Pillow image as ``uint8`` RGB: 8-bit modes through Pillow, high-bit ones through :func:`to_rgb8`."""
    if im.mode not in _HIGH_BIT_MODES:
        return np.asarray(im.convert("RGB"), dtype=np.uint8)
    return to_rgb8(np.asarray(im), what=what)


def image_size(path: str | os.PathLike) -> tuple[int, int]:
    """Return (width, height) of an image file without decoding its pixels."""
    lazy = open_tiled_tiff(path)
    if lazy is not None:  # BigTIFF included, which Pillow may not open
        return int(lazy.shape[1]), int(lazy.shape[0])
    with _open(path) as im:
        return im.size


_TIFF_SUFFIXES = (".tif", ".tiff", ".btf", ".svs")


def open_tiled_tiff(path: str | os.PathLike) -> Any | None:
    """The full-resolution level of a tiled 8-bit RGB(A) TIFF as a lazy array, or ``None`` for any other file.

    The array (height, width, channels) is a zarr view of the file (through tifffile): reading a region decodes
    only the tiles it covers, so a whole-slide image is never held in memory (pyramidal TIFFs, OME-TIFF, SVS).
    Other images (JPEG, PNG, striped or high-bit TIFFs) are decoded whole by :func:`read_full`.
    """
    if Path(path).suffix.lower() not in _TIFF_SUFFIXES:
        return None
    import tifffile
    import zarr

    try:
        tif = tifffile.TiffFile(path)  # kept open by the zarr view it returns
    except (tifffile.TiffFileError, ValueError):
        return None
    level = tif.series[0].levels[0] if tif.series else None
    rgb8 = level is not None and level.dtype == np.uint8 and level.axes == "YXS" and level.shape[-1] in (3, 4)
    if not (rgb8 and level.keyframe.is_tiled):
        tif.close()
        return None
    return zarr.open(tif.aszarr(series=0, level=0), mode="r")


def read_downscaled(path: str | os.PathLike, max_size: int = HIRES_MAX_SIZE) -> tuple[np.ndarray, float]:
    """Read an image shrunk so that its longer side is ``max_size`` pixels.

    JPEGs are decoded at a reduced DCT scale first, which is several times faster than decoding the full image.

    Returns
    -------
    The RGB image as ``uint8`` (height, width, 3) and the scale factor from full-resolution pixels to it.
    """
    from PIL import Image

    with _open(path) as im:
        width, height = im.size
        scale = min(1.0, max_size / max(width, height))
        target = (max(1, round(width * scale)), max(1, round(height * scale)))
        im.draft("RGB", target)  # no-op for formats other than JPEG
        rgb = im.convert("RGB") if im.mode not in _HIGH_BIT_MODES else Image.fromarray(_pil_rgb(im, str(path)))
        small = rgb.resize(target, Image.Resampling.LANCZOS)
        return np.asarray(small, dtype=np.uint8), target[0] / width


def read_full(path: str | os.PathLike) -> np.ndarray:
    """Read a whole image at full resolution as ``uint8`` (height, width, 3) RGB (see :func:`to_rgb8`)."""
    with _open(path) as im:
        return _pil_rgb(im, str(path))


def hires_image(info: dict[str, Any], library_id: str) -> tuple[np.ndarray | None, float]:
    """A section's ``hires`` image as ``uint8`` RGB and its ``tissue_hires_scalef``, checked.

    Returns ``(None, 1.0)`` when the section has no ``hires`` image. A ``hires`` image without a positive, finite
    scale factor is refused: its pixels could not be placed on the spots.
    """
    hires = info.get(Keys.IMAGES, {}).get(Keys.HIRES)
    if hires is None:
        return None, 1.0
    scalef = info.get(Keys.SCALEFACTORS, {}).get(Keys.HIRES_SCALEF)
    where = f"`uns['spatial'][{library_id!r}]['scalefactors']['{Keys.HIRES_SCALEF}']`"
    try:
        value = float(scalef)
    except (TypeError, ValueError):
        value = float("nan")
    if scalef is None or isinstance(scalef, bool) or not np.isfinite(value) or value <= 0:
        raise ValueError(
            f"{where} is {'missing' if scalef is None else repr(scalef)}: the `hires` image needs it, the size of the "
            "hires image over the full-resolution image (e.g. 2000 / 9274). Set it, or remove the hires image."
        )
    return to_rgb8(hires, what=f"`uns['spatial'][{library_id!r}]['images']['hires']`"), value


def library_ids(adata: AnnData) -> list[str]:
    """Sections described in ``adata.uns['spatial']``."""
    return list(adata.uns.get(Keys.SPATIAL, {}).keys())


def resolve_library_id(adata: AnnData, library_id: str | None) -> str:
    """Pick the section to use from ``adata.uns['spatial']``."""
    libs = library_ids(adata)
    if library_id is not None:
        if library_id not in libs:
            raise KeyError(f"No section {library_id!r} in `adata.uns['spatial']` (it has {libs}).")
        return library_id
    if len(libs) == 1:
        return libs[0]
    if not libs:
        raise KeyError(
            "`adata.uns['spatial']` is missing: there is no image information. Read the data with a "
            "`phg2st.datasets` reader or `sc.read_visium`, which set it."
        )
    raise ValueError(f"`adata.uns['spatial']` holds several sections {libs}; choose one with `library_id=`.")


def library_info(adata: AnnData, library_id: str | None = None) -> tuple[str, dict[str, Any]]:
    """Return ``(library_id, adata.uns['spatial'][library_id])``."""
    lib = resolve_library_id(adata, library_id)
    return lib, adata.uns[Keys.SPATIAL][lib]


def full_resolution_path(adata: AnnData, library_id: str | None = None) -> Path:
    """Path of a section's full-resolution image, checked to exist.

    Raises
    ------
    MissingImageError
        When the section was loaded without an image, or the file has moved.
    """
    lib, info = library_info(adata, library_id)
    meta = info.get(Keys.METADATA, {})
    path = meta.get(Keys.IMAGE_PATH)
    if not path:
        note = meta.get(Keys.IMAGE_NOTE, "")
        raise MissingImageError(
            f"Section {lib!r} has no full-resolution H&E image{': ' + note if note else ''}. This step needs the "
            "image: load a section that has one, or set "
            f"`adata.uns['spatial'][{lib!r}]['metadata']['{Keys.IMAGE_PATH}']` to the path of its H&E image."
        )
    path = Path(path)
    if not path.is_file():
        raise MissingImageError(
            f"The H&E image of section {lib!r} is not at {path} any more. Point "
            f"`adata.uns['spatial'][{lib!r}]['metadata']['{Keys.IMAGE_PATH}']` to the file, or re-read the section."
        )
    return path
