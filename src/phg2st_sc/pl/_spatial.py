"""Measured, predicted and error maps of genes on the H&E."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
from anndata import AnnData

from phg2st_sc._constants import Keys
from phg2st_sc._utils import as_dense
from phg2st_sc._validate import boolean_column, check_positive_real
from phg2st_sc.pl._base import (
    as_anndata,
    check_genes_layers,
    error_limit,
    layer_label,
    plot_docs,
    section_view,
    show_or_save,
    value_limits,
)

if TYPE_CHECKING:
    from matplotlib.figure import Figure
    from spatialdata import SpatialData


def _prompt_outline(adata: AnnData, prompt_key: str) -> np.ndarray:
    """The spots to outline: ``obs[prompt_key]``, which must exist and be boolean (or 0/1)."""
    if prompt_key not in adata.obs:
        raise KeyError(f"`prompt_key={prompt_key!r}` is not an `obs` column (pass None to outline no spot).")
    return boolean_column(adata, prompt_key, "a prompt spot to outline")


def _values(adata: AnnData, layer: str | None, cols: np.ndarray) -> np.ndarray:
    x = adata.X if layer is None else adata.layers[layer]
    return as_dense(x[:, cols])


@plot_docs
def spatial(
    adata: AnnData | SpatialData,
    genes: str | Sequence[str],
    *,
    layers: Sequence[str | None] = (None,),
    error: bool = True,
    uncertainty: bool = False,
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

    Spots are drawn at their true size over the ``hires`` image: circles, or squares for Visium HD bins (scale
    factors with ``bin_size_um``, or a square lattice without a recorded spot diameter). Measured and predicted
    panels of a gene share one colour scale; error panels (prediction minus measured) use a diverging scale
    centred on 0. Prompt spots (measured values given to the method) are outlined in black; spots without a value (NaN, such as
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
    uncertainty
        Add a panel of the predictive standard deviation (``layers[layer + '_std']`` from
        :func:`~phg2st_sc.tl.impute`) for every layer after the first that has one; an error if none has.
    prompt_key
        Boolean ``obs`` column of prompt spots to outline; ``None``, or the default column where it is absent,
        outlines nothing. Another name must be a boolean column of ``obs``.
    {section}
    cmap, error_cmap
        Colour maps of expression and of errors.
    vmax_percentile
        Upper end of each gene's colour scale, as a percentile of its values over the panels.
    panel_size
        Height and width of one panel in inches.
    {table_key}
    {figure}

    Returns
    -------
    The Figure with ``return_fig=True``; else the 2-D array of Axes (genes x panels) when not shown; else ``None``.

    Examples
    --------
    >>> phg2st.pl.spatial(adata, ["ERBB2", "KRT19"], layers=(None, "baseline_idw"))  # doctest: +SKIP
    """
    import matplotlib.pyplot as plt
    from matplotlib.colors import Normalize, TwoSlopeNorm

    adata = as_anndata(adata, table_key)
    for name, value in (("spot_scale", spot_scale), ("panel_size", panel_size)):
        check_positive_real(value, name)
    genes, layers = check_genes_layers(adata, genes, layers, vmax_percentile)

    view = section_view(adata, library_id, image=image, spot_scale=spot_scale)
    prompts = None
    if prompt_key is not None and (prompt_key in adata.obs or prompt_key != Keys.PROMPT):
        prompts = _prompt_outline(adata, prompt_key)

    cols = adata.var_names.get_indexer(genes)
    values = {layer: _values(adata, layer, cols) for layer in layers}
    panels: list[tuple[str, str | None]] = [("value", layer) for layer in layers]
    if error:
        panels += [("error", layer) for layer in layers[1:]]
    if uncertainty:
        with_std = [
            layer for layer in layers[1:] if layer is not None and Keys.uncertainty(layer, "std") in adata.layers
        ]
        if not with_std:
            raise ValueError(
                "`uncertainty=True` but no layer after the first has a standard deviation (`layers[<layer>_std]`): "
                "impute with the adaptive variant and `uncertainty=True` first."
            )
        panels += [("std", layer) for layer in with_std]
        values |= {f"{layer}:std": _values(adata, Keys.uncertainty(layer, "std"), cols) for layer in with_std}

    fig, axes = plt.subplots(
        len(genes), len(panels), figsize=(panel_size * len(panels) * 1.15, panel_size * len(genes)), squeeze=False
    )
    for gi, gene in enumerate(genes):
        # unmeasured spots (NaN) are drawn grey, outside the scale
        norm = Normalize(*value_limits([values[layer][:, gi] for layer in layers], vmax_percentile))
        for pi, (kind, layer) in enumerate(panels):
            ax = axes[gi, pi]
            if kind == "value":
                c, cm, nrm, label = values[layer][:, gi], cmap, norm, layer_label(layer)
            elif kind == "std":
                c = values[f"{layer}:std"][:, gi]
                cm, nrm, label = "magma", Normalize(0.0, max(float(np.nanmax(c)), 1e-12)), f"{layer_label(layer)} std"
            else:
                c = values[layer][:, gi] - values[layers[0]][:, gi]
                lim = error_limit(c)
                cm, nrm, label = (
                    error_cmap,
                    TwoSlopeNorm(0.0, -lim, lim),
                    f"{layer_label(layer)} − {layer_label(layers[0])}",
                )
            view.draw_image(ax)
            cmap_ = plt.get_cmap(cm).with_extremes(bad="lightgray")
            spots = view.spots(ax, array=np.asarray(c, dtype=float), cmap=cmap_, norm=nrm, linewidths=0)
            if prompts is not None and prompts.any():
                view.spots(ax, prompts, facecolors="none", edgecolors="black", linewidths=0.8)
            view.frame(ax)
            ax.set_title(f"{gene}: {label}", fontsize=9)
            fig.colorbar(spots, ax=ax, fraction=0.046, pad=0.02)
    if prompts is not None and prompts.any():
        outline = "black rings" if view.shape == "circle" else "black outlines"
        fig.suptitle(f"{view.library_id}: {outline} = {int(prompts.sum())} prompt spots", fontsize=10)
    fig.tight_layout()
    return show_or_save(fig, axes, show=show, save=save, return_fig=return_fig)
