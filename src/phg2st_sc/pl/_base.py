"""Pieces shared by the plots: the AnnData behind an input, a section's H&E and spot geometry, finishing a figure."""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
from anndata import AnnData

from phg2st_sc._constants import Keys
from phg2st_sc._docs import DOCS
from phg2st_sc._image import hires_image, library_info
from phg2st_sc._utils import _is_spatialdata, spot_pitch
from phg2st_sc._validate import check_nonempty, check_unique_names, get_coordinates

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.collections import Collection
    from matplotlib.figure import Figure
    from spatialdata import SpatialData

F = TypeVar("F", bound=Callable)

#: Parameter text shared by the plots' docstrings, filled in by :func:`plot_docs` (with that of ``phg2st_sc._docs``).
PLOT_DOCS = {
    "section": (
        "library_id\n    Section whose image to draw; may be omitted when there is one.\n"
        "image\n    Draw the H&E under the spots (when the section has one).\n"
        "spot_scale\n    Multiplier of the drawn spot diameter."
    ),
    "figure": (
        "show\n    Show the figure; by default it is shown unless ``save`` or ``return_fig`` is given.\n"
        "save\n    Write the figure to this path (format from the extension).\n"
        "return_fig\n    Return the Figure instead of the axes."
    ),
}


def plot_docs(func: F) -> F:
    """Fill the shared parameter text (``{figure}``, ``{section}``, ``{table_key}``, ...) into ``func``'s docstring."""
    func.__doc__ = inspect.cleandoc(func.__doc__).format(**DOCS, **PLOT_DOCS)
    return func


def as_anndata(data: AnnData | SpatialData, table_key: str | None = None) -> AnnData:
    """The AnnData to plot: ``data`` itself, or a SpatialData table in the scanpy convention (a new object).

    Fails on an object without spots or genes.
    """
    if _is_spatialdata(data):
        from phg2st_sc.io import from_spatialdata

        data = from_spatialdata(data, table_key=table_key)
    elif not isinstance(data, AnnData):
        raise TypeError(f"Expected an AnnData or a SpatialData object, got {type(data).__name__}.")
    check_nonempty(data)
    return data


@dataclass(frozen=True)
class SectionView:
    """Where a section's spots are drawn: over its ``hires`` image when there is one, else in full-resolution pixels.

    Attributes
    ----------
    library_id
        The section.
    image
        The ``hires`` image, or ``None``.
    xy
        Spot centres in the pixels of ``image`` (n, 2).
    diameter
        Drawn spot diameter (the side of a square bin) in the same pixels.
    shape
        ``"circle"`` (Visium, ST spots) or ``"square"`` (Visium HD bins): see :func:`spot_shape`.
    """

    library_id: str
    image: np.ndarray | None
    xy: np.ndarray
    diameter: float
    shape: str = "circle"

    def draw_image(self, ax: Axes) -> None:
        """Draw the H&E (if any) with pixel coordinates matching ``xy``."""
        if self.image is not None:
            ax.imshow(self.image, extent=(0, self.image.shape[1], self.image.shape[0], 0))

    def spots(self, ax: Axes, mask: np.ndarray | None = None, **kwargs: Any) -> Collection:
        """Add the spots (all, or those in ``mask``) to ``ax`` at their true size and shape; ``kwargs`` style them."""
        from matplotlib.collections import EllipseCollection, PolyCollection

        offsets = self.xy if mask is None else self.xy[mask]
        d = self.diameter
        if self.shape == "square":
            corners = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]], dtype=float) * (d / 2)
            spots = PolyCollection(offsets[:, None, :] + corners[None], **kwargs)
        else:
            spots = EllipseCollection(
                widths=d, heights=d, angles=0, units="xy", offsets=offsets, offset_transform=ax.transData, **kwargs
            )
        ax.add_collection(spots)
        return spots

    def frame(self, ax: Axes) -> None:
        """Fit the axes to the spots, y pointing down as in the image, no ticks."""
        lo, hi = self.xy.min(axis=0) - self.diameter, self.xy.max(axis=0) + self.diameter
        ax.set_xlim(lo[0], hi[0])
        ax.set_ylim(hi[1], lo[1])
        ax.set_aspect("equal")
        ax.set_xticks([])
        ax.set_yticks([])


def section_view(adata: AnnData, library_id: str | None, *, image: bool, spot_scale: float) -> SectionView:
    """The :class:`SectionView` of ``adata``'s section ``library_id`` (may be omitted when there is one)."""
    coords = get_coordinates(adata)
    lib, info = library_info(adata, library_id)
    sf = info.get(Keys.SCALEFACTORS, {})
    hires, scalef = hires_image(info, lib) if image else (None, 1.0)
    diameter = float(sf.get(Keys.SPOT_DIAMETER, np.nan))
    recorded = np.isfinite(diameter) and diameter > 0
    pitch = None if recorded else spot_pitch(coords)  # not recorded (or NaN, as in some HD tables): the pitch
    shape = spot_shape(coords, sf, pitch)
    diameter = diameter if recorded else pitch
    return SectionView(
        library_id=lib,
        image=hires,
        xy=coords * scalef,
        diameter=diameter * scalef * spot_scale,
        shape=shape,
    )


def spot_shape(coords: np.ndarray, scalefactors: dict, pitch: float | None = None) -> str:
    """``"square"`` for square bins, else ``"circle"``.

    Square when the scale factors carry Space Ranger's ``bin_size_um`` (Visium HD), or when no spot diameter is
    recorded and the spots sit on an axis-aligned square lattice (each spot's nearest neighbours one pitch away
    along x or y: binned tables without scale factors).
    """
    if Keys.BIN_SIZE in scalefactors:
        return "square"
    recorded = float(scalefactors.get(Keys.SPOT_DIAMETER, np.nan))
    if (np.isfinite(recorded) and recorded > 0) or len(coords) < 4:
        return "circle"
    from scipy.spatial import cKDTree

    pitch = spot_pitch(coords) if pitch is None else pitch  # given by a caller that computed it already
    pairs = cKDTree(coords).query_pairs(1.05 * pitch, output_type="ndarray")  # every neighbour one pitch away
    if not len(pairs):
        return "circle"
    step = np.abs(coords[pairs[:, 0]] - coords[pairs[:, 1]])
    axis_aligned = np.minimum(step[:, 0], step[:, 1]) < 0.05 * pitch  # a hexagonal lattice: 2 of 6 are
    return "square" if axis_aligned.mean() > 0.9 else "circle"


def layer_label(layer: str | None) -> str:
    """How a value layer is named in titles and legends: ``None`` (``.X``) is "measured"."""
    return "measured" if layer is None else layer


def check_genes_layers(
    adata: AnnData, genes: str | Sequence[str], layers: Sequence[str | None], vmax_percentile: float
) -> tuple[list[str], list[str | None]]:
    """Validate the genes and value layers to draw (before anything is drawn); return them as lists."""
    genes = [genes] if isinstance(genes, str) else list(genes)
    if not genes:
        raise ValueError("`genes` is empty.")
    check_unique_names(adata, obs=False)  # genes are looked up by name
    absent = [g for g in genes if g not in adata.var_names]
    if absent:
        raise KeyError(f"Genes not in `adata.var_names`: {absent[:10]}{' ...' if len(absent) > 10 else ''}.")
    layers = list(layers)
    if not layers:
        raise ValueError("`layers` is empty.")
    for layer in layers:
        if layer is not None and layer not in adata.layers:
            raise KeyError(
                f"No layer {layer!r} in `adata.layers` (it has {list(adata.layers)}); run `phg2st.tl.impute` or "
                "`phg2st.tl.baseline` first, or name the layers to show."
            )
    if len({layer_label(layer) for layer in layers}) != len(layers):
        raise ValueError(f"`layers` repeats a layer: {layers}.")
    if not 0 < vmax_percentile <= 100:
        raise ValueError(f"`vmax_percentile` must be in (0, 100], got {vmax_percentile}.")
    return genes, layers


def value_limits(values: Sequence[np.ndarray], vmax_percentile: float) -> tuple[float, float]:
    """One colour scale for measured and predicted values: their minimum to a percentile; NaN (unmeasured) left out."""
    stacked = np.concatenate([np.asarray(v, dtype=float).ravel() for v in values])
    stacked = stacked[np.isfinite(stacked)]
    if not stacked.size:
        return 0.0, 1.0
    vmin, vmax = float(stacked.min()), float(np.percentile(stacked, vmax_percentile))
    return vmin, vmax if vmax > vmin else vmin + 1.0


def error_limit(error: np.ndarray) -> float:
    """Half-width of a symmetric error colour scale: the largest finite absolute error (1 when there is none)."""
    finite = np.abs(error[np.isfinite(error)])
    return float(finite.max()) if finite.size and finite.max() > 0 else 1.0


def unmeasured_rows(x: Any) -> np.ndarray:
    """Boolean mask of the rows of ``x`` (dense or sparse) that are entirely ``NaN``: spots without measurements."""
    if x is None or x.shape[1] == 0:
        return np.zeros(0 if x is None else x.shape[0], dtype=bool)
    if hasattr(x, "tocsr"):
        from scipy import sparse

        x = x.tocsr()
        nan = sparse.csr_matrix((np.isnan(x.data).astype(np.int64), x.indices, x.indptr), shape=x.shape)
        return np.asarray(nan.sum(axis=1)).ravel() == x.shape[1]
    return np.isnan(np.asarray(x, dtype=np.float64)).all(axis=1)


def show_or_save(
    fig: Figure, axes: Any, *, show: bool | None, save: str | os.PathLike | None, return_fig: bool
) -> Figure | Any | None:
    """Save and/or show a finished figure; return what the plotting function promises.

    The figure is shown unless ``save`` or ``return_fig`` is given (or ``show`` says otherwise); a shown figure
    returns ``None``, else the Figure with ``return_fig`` and ``axes`` without.
    """
    import matplotlib.pyplot as plt

    if save is not None:
        fig.savefig(save, dpi=150, bbox_inches="tight")
    if show is None:
        show = save is None and not return_fig
    if show:
        plt.show()
        return None
    return fig if return_fig else axes
