"""Measured, predicted and error maps of genes on the H&E."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
from anndata import AnnData

from phg2st_sc._constants import Keys
from phg2st_sc._image import library_info
from phg2st_sc._utils import _is_spatialdata, as_dense
from phg2st_sc._validate import get_coordinates

if TYPE_CHECKING:
    from matplotlib.figure import Figure
    from spatialdata import SpatialData


def _layer_label(layer: str | None) -> str:
    return "measured" if layer is None else layer


def _values(adata: AnnData, layer: str | None, cols: np.ndarray) -> np.ndarray:
    x = adata.X if layer is None else adata.layers[layer]
    return as_dense(x[:, cols])


def spatial(
    adata: AnnData | SpatialData,
    genes: str | Sequence[str],
    *,
    layers: Sequence[str | None] = (None,),
    error: bool = True,
    prompt_key: str | None = Keys.PROMPT,
    library_id: str | None = None,
    image: bool = True,
    spot_scale: float = 1.0,
    cmap: str = "viridis",
    error_cmap: str = "RdBu_r",
    vmax_percentile: float = 99.0,
    panel_size: float = 3.2,
    table_key: str | None = None,
    show: bool | None = None,
    save: str | os.PathLike | None = None,
    return_fig: bool = False,
) -> Figure | np.ndarray | None:
    """Plot genes on the H&E: one row per gene, one panel per layer, plus prediction errors.

    Spots are drawn as circles of their true diameter over the ``hires`` image. Measured and predicted panels of
    a gene share one colour scale; error panels (prediction minus measured) use a diverging scale centred on 0.
    Prompt spots (measured values given to the method) are outlined in black; spots without a value (NaN, such as
    the measurements of virtual spots) are light grey.

    Parameters
    ----------
    adata
        AnnData with ``obsm['spatial']`` and ``uns['spatial']``, or SpatialData with ``table_key``.
    genes
        One gene or several (``var_names``).
    layers
        What to show for each gene. The first entry is the reference, usually ``None`` (``.X``, "measured");
        the others are predictions, e.g. ``(None, "baseline_idw", "phg2st")``.
    error
        Add an error panel (layer minus reference) for every layer after the first.
    prompt_key
        Boolean ``obs`` column of prompt spots to outline; ``None`` or a missing column outlines nothing.
    library_id
        Section whose image to draw; may be omitted when there is one.
    image
        Draw the H&E under the spots (when the section has one).
    spot_scale
        Multiplier of the drawn spot diameter.
    cmap, error_cmap
        Colour maps of expression and of errors.
    vmax_percentile
        Upper end of each gene's colour scale, as a percentile of its values over the panels.
    panel_size
        Height and width of one panel in inches.
    table_key
        Table of a SpatialData input.
    show
        Show the figure; by default it is shown unless ``save`` or ``return_fig`` is given.
    save
        Write the figure to this path (format from the extension).
    return_fig
        Return the Figure instead of the axes.

    Returns
    -------
    The Figure with ``return_fig=True``; else the 2-D array of Axes (genes x panels) when not shown; else ``None``.

    Examples
    --------
    >>> phg2st.pl.spatial(adata, ["ERBB2", "KRT19"], layers=(None, "baseline_idw"))  # doctest: +SKIP
    """
    import matplotlib.pyplot as plt
    from matplotlib.collections import EllipseCollection
    from matplotlib.colors import Normalize, TwoSlopeNorm

    if _is_spatialdata(adata):
        from phg2st_sc.io import from_spatialdata

        adata = from_spatialdata(adata, table_key=table_key)
    elif not isinstance(adata, AnnData):
        raise TypeError(f"Expected an AnnData or a SpatialData object, got {type(adata).__name__}.")
    genes = [genes] if isinstance(genes, str) else list(genes)
    if not genes:
        raise ValueError("`genes` is empty.")
    absent = [g for g in genes if g not in adata.var_names]
    if absent:
        raise KeyError(f"Genes not in `adata.var_names`: {absent}.")
    layers = list(layers)
    if not layers:
        raise ValueError("`layers` is empty.")
    for layer in layers:
        if layer is not None and layer not in adata.layers:
            raise KeyError(f"No layer {layer!r} in `adata.layers` (it has {list(adata.layers)}).")
    if not 0 < vmax_percentile <= 100:
        raise ValueError(f"`vmax_percentile` must be in (0, 100], got {vmax_percentile}.")

    coords = get_coordinates(adata)
    lib, info = library_info(adata, library_id)
    sf = info.get(Keys.SCALEFACTORS, {})
    hires = info.get(Keys.IMAGES, {}).get(Keys.HIRES) if image else None
    scalef = float(sf.get(Keys.HIRES_SCALEF, 1.0)) if hires is not None else 1.0
    diameter = float(sf.get(Keys.SPOT_DIAMETER, np.nan))
    if not np.isfinite(diameter):
        diameter = float(np.median(np.diff(np.sort(coords[:, 0])))) or 1.0
    xy = coords * scalef
    d = diameter * scalef * spot_scale
    prompts = None
    if prompt_key is not None and prompt_key in adata.obs:
        prompts = adata.obs[prompt_key].to_numpy().astype(bool)

    cols = adata.var_names.get_indexer(genes)
    values = {layer: _values(adata, layer, cols) for layer in layers}
    panels: list[tuple[str, str | None]] = [("value", layer) for layer in layers]
    if error:
        panels += [("error", layer) for layer in layers[1:]]

    lo, hi = xy.min(axis=0) - d, xy.max(axis=0) + d
    fig, axes = plt.subplots(
        len(genes), len(panels), figsize=(panel_size * len(panels) * 1.15, panel_size * len(genes)), squeeze=False
    )
    for gi, gene in enumerate(genes):
        stacked = np.concatenate([values[layer][:, gi] for layer in layers])
        stacked = stacked[np.isfinite(stacked)]  # unmeasured spots (NaN) are drawn grey, outside the scale
        vmin = float(stacked.min()) if stacked.size else 0.0
        vmax = float(np.percentile(stacked, vmax_percentile)) if stacked.size else 1.0
        norm = Normalize(vmin=vmin, vmax=vmax if vmax > vmin else vmin + 1.0)
        for pi, (kind, layer) in enumerate(panels):
            ax = axes[gi, pi]
            if kind == "value":
                c, cm, nrm, label = values[layer][:, gi], cmap, norm, _layer_label(layer)
            else:
                c = values[layer][:, gi] - values[layers[0]][:, gi]
                finite = np.abs(c[np.isfinite(c)])
                lim = float(finite.max()) if finite.size and finite.max() > 0 else 1.0
                cm, nrm, label = (
                    error_cmap,
                    TwoSlopeNorm(0.0, -lim, lim),
                    f"{_layer_label(layer)} − {_layer_label(layers[0])}",
                )
            if hires is not None:
                img = np.asarray(hires)
                ax.imshow(img, extent=(0, img.shape[1], img.shape[0], 0))
            spots = EllipseCollection(
                widths=d, heights=d, angles=0, units="xy", offsets=xy, offset_transform=ax.transData,
                array=np.asarray(c, dtype=float), cmap=plt.get_cmap(cm).with_extremes(bad="lightgray"), norm=nrm,
                linewidths=0,
            )  # fmt: skip
            ax.add_collection(spots)
            if prompts is not None and prompts.any():
                ring = EllipseCollection(
                    widths=d, heights=d, angles=0, units="xy", offsets=xy[prompts], offset_transform=ax.transData,
                    facecolors="none", edgecolors="black", linewidths=0.8,
                )  # fmt: skip
                ax.add_collection(ring)
            ax.set_xlim(lo[0], hi[0])
            ax.set_ylim(hi[1], lo[1])
            ax.set_aspect("equal")
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(f"{gene}: {label}", fontsize=9)
            fig.colorbar(spots, ax=ax, fraction=0.046, pad=0.02)
    if prompts is not None and prompts.any():
        fig.suptitle(f"{lib}: black rings = {int(prompts.sum())} prompt spots", fontsize=10)
    fig.tight_layout()
    if save is not None:
        fig.savefig(save, dpi=150, bbox_inches="tight")
    if show is None:
        show = save is None and not return_fig
    if show:
        plt.show()
        return None
    return fig if return_fig else axes
