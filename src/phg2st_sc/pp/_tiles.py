"""Tile geometry and pixel access: spot tiles, the neighbour lattice, reading regions with padding.

Pure numpy; the encoder side lives in :mod:`phg2st_sc._model`.

Geometry. A spot tile is the square of ``region`` image pixels centred on the spot. Neighbour tiles come from
one lattice per slide: square cells of ``region`` pixels with the image origin as a corner. A spot's
``grid x grid`` neighbour window is the block of cells centred on the cell that contains the spot, so the
windows of nearby spots share cells and every cell is embedded once. Compared with cutting each spot's window
exactly, the window is shifted by at most half a tile along each axis. A cell whose centre lies outside the image
is masked (index -1) and never embedded; a cell or spot tile partly outside is padded with white.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np

PAD_VALUE = 255  # slide background is white


@dataclass(frozen=True)
class TilePlan:
    """Which image regions to embed for a section.

    Attributes
    ----------
    spot_boxes
        (n, 2) top-left corners (x, y) of the spot tiles; each tile is ``region`` pixels square.
    cells
        (T, 2) lattice cells (column, row) that some spot's window uses and that lie on the image.
    index
        (n, grid * grid) row-major index into ``cells`` of each spot's window; -1 where masked.
    region
        Side of a tile in image pixels.
    grid
        Side of the neighbour window in tiles.
    """

    spot_boxes: np.ndarray
    cells: np.ndarray
    index: np.ndarray
    region: int
    grid: int

    @property
    def cell_boxes(self) -> np.ndarray:
        """(T, 2) top-left corners of the lattice cells."""
        return self.cells * self.region

    @property
    def n_naive(self) -> int:
        """Encoder passes when every spot crops its own tile and window: n * (1 + grid^2)."""
        return len(self.spot_boxes) * (1 + self.grid * self.grid)

    @property
    def n_passes(self) -> int:
        """Encoder passes with the lattice: n spot tiles + T distinct cells."""
        return len(self.spot_boxes) + len(self.cells)


def plan_tiles(coords: np.ndarray, image_shape: tuple[int, int], region: int, grid: int = 5) -> TilePlan:
    """Lay out spot tiles and the shared neighbour lattice.

    Parameters
    ----------
    coords
        (n, 2) spot centres (x, y) in image pixels.
    image_shape
        (height, width) of the image.
    region
        Tile side in image pixels.
    grid
        Neighbour window side in tiles (odd, so that the spot's cell is in the middle).
    """
    if region < 1:
        raise ValueError(f"The tile side must be at least 1 pixel, got {region}.")
    if grid < 1 or grid % 2 == 0:
        raise ValueError(f"`grid_size` must be a positive odd number, got {grid}.")
    coords = np.asarray(coords, dtype=np.float64)
    height, width = image_shape
    spot_boxes = np.floor(coords - region / 2.0 + 0.5).astype(np.int64)
    centre_cell = np.floor(coords / region).astype(np.int64)  # (n, 2): column, row
    half = grid // 2
    offsets = np.stack(np.meshgrid(np.arange(-half, half + 1), np.arange(-half, half + 1), indexing="xy"), -1)
    offsets = offsets.reshape(-1, 2)  # row-major: (dx, dy) with dy the slow axis
    window = centre_cell[:, None, :] + offsets[None, :, :]  # (n, g*g, 2)
    centres = (window + 0.5) * region
    on_image = (centres[..., 0] >= 0) & (centres[..., 0] < width) & (centres[..., 1] >= 0) & (centres[..., 1] < height)
    flat = window[on_image]
    cells, inverse = np.unique(flat, axis=0, return_inverse=True)
    index = np.full(on_image.shape, -1, dtype=np.int64)
    index[on_image] = inverse.ravel()
    return TilePlan(spot_boxes=spot_boxes, cells=cells.astype(np.int64), index=index, region=int(region), grid=grid)


class ImageFile:
    """Loads an image file's pixels when called; picklable, so that spawned data-loader workers can use it."""

    def __init__(self, path: str):
        self.path = str(path)

    def __call__(self) -> Any:
        from phg2st_sc._image import open_tiled_tiff, read_full

        lazy = open_tiled_tiff(self.path)  # a tiled TIFF: regions decoded when read, never the whole slide
        return read_full(self.path) if lazy is None else lazy


class ArrayLoader:
    """Returns a (possibly lazy) array, materialised in memory when it is at most ``max_bytes``; picklable."""

    def __init__(self, array: Any, max_bytes: int):
        self.array, self.max_bytes = array, max_bytes

    def __call__(self) -> Any:
        return np.asarray(self.array) if self.array.nbytes <= self.max_bytes else self.array


class RegionReader:
    """Read square regions of an RGB image, padding the parts outside it with white.

    Parameters
    ----------
    image
        An array-like of shape (height, width, 3) (numpy, or lazy: dask, xarray, zarr), or a callable returning
        one when the pixels are first needed.
    shape
        (height, width), required when ``image`` is a callable.
    channels_first
        The array is (channels, height, width) (SpatialData's ``cyx``).
    scale
        Factor from the array's values to 0-255 (:func:`phg2st_sc._image.pixel_scale`, decided once for the whole
        image); ``None`` for ``uint8`` pixels.
    """

    def __init__(
        self,
        image: Any,
        shape: tuple[int, int] | None = None,
        *,
        channels_first: bool = False,
        scale: float | None = None,
    ):
        self._image = image
        self._loaded = None if callable(image) else image
        self._pid = os.getpid()  # the process that loaded ``_loaded`` (see ``pixels``)
        self.channels_first = channels_first
        self.scale = 1.0 if scale is None else float(scale)
        if shape is None:
            if callable(image):
                raise ValueError("`shape` is required when the image is loaded lazily.")
            shape = tuple(image.shape[1:3]) if channels_first else tuple(image.shape[:2])
        self.shape = (int(shape[0]), int(shape[1]))

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        if callable(self._image):  # workers started by spawning reload the pixels instead of receiving a copy
            state["_loaded"] = None
        return state

    @property
    def pixels(self):
        # a lazy image loaded by our callable holds an open file (a tiled TIFF's handle): a forked data-loader
        # worker opens its own, since reads through a handle shared with the parent and the other workers interleave
        # their seeks and decode each other's bytes (zlib errors, or wrong pixels where nothing is compressed)
        stale = callable(self._image) and not isinstance(self._loaded, np.ndarray) and self._pid != os.getpid()
        if self._loaded is None or stale:
            self._loaded = self._image()
            self._pid = os.getpid()
        return self._loaded

    def read(self, x0: int, y0: int, size: int) -> np.ndarray:
        """The ``size`` x ``size`` x 3 ``uint8`` region with top-left corner (x0, y0)."""
        height, width = self.shape
        out = np.full((size, size, 3), PAD_VALUE, dtype=np.uint8)
        xa, ya = max(x0, 0), max(y0, 0)
        xb, yb = min(x0 + size, width), min(y0 + size, height)
        if xa >= xb or ya >= yb:
            return out
        from phg2st_sc._image import to_rgb8

        if self.channels_first:
            part = np.asarray(self.pixels[:, ya:yb, xa:xb])
        else:
            part = np.asarray(self.pixels[ya:yb, xa:xb])
        out[ya - y0 : yb - y0, xa - x0 : xb - x0] = to_rgb8(part, scale=self.scale, channels_first=self.channels_first)
        return out
