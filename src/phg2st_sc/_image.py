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


def image_size(path: str | os.PathLike) -> tuple[int, int]:
    """Return (width, height) of an image file without decoding its pixels."""
    with _open(path) as im:
        return im.size


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
        small = im.convert("RGB").resize(target, Image.Resampling.LANCZOS)
        return np.asarray(small, dtype=np.uint8), target[0] / width


def read_full(path: str | os.PathLike) -> np.ndarray:
    """Read a whole image at full resolution as ``uint8`` (height, width, 3)."""
    with _open(path) as im:
        return np.asarray(im.convert("RGB"), dtype=np.uint8)


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
