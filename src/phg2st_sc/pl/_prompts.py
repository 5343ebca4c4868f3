"""Where the prompt spots are, on the H&E."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import numpy as np
from anndata import AnnData

from phg2st_sc._constants import Keys
from phg2st_sc._validate import get_prompt_mask
from phg2st_sc.pl._base import as_anndata, plot_docs, section_view, show_or_save, unmeasured_rows

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure
    from spatialdata import SpatialData


@plot_docs
def prompts(
    adata: AnnData | SpatialData,
    *,
    prompt_key: str = Keys.PROMPT,
    order_key: str | None = None,
    max_labels: int = 60,
    library_id: str | None = None,
    image: bool = True,
    spot_scale: float = 1.0,
    prompt_color: str = "#d62728",
    heldout_color: str = "#1f77b4",
    unmeasured_color: str = "gray",
    panel_size: float = 4.0,
    table_key: str | None = None,
    show: bool | None = None,
    save: str | os.PathLike | None = None,
    return_fig: bool = False,
) -> Figure | Axes | None:
    """Plot where the prompt spots are: every spot as a circle of its true size over the H&E, coloured by its role.

    Prompt spots (whose measured expression is given to the method) are drawn in ``prompt_color``, the other
    measured spots (held out: to be predicted and scored) in ``heldout_color``, and spots without any measurement
    (all-``NaN`` ``.X``, such as the virtual spots of :func:`phg2st_sc.pp.virtual_spots`) in ``unmeasured_color``.
    The legend counts each group.

    Parameters
    ----------
    adata
        AnnData with ``obsm['spatial']`` and ``uns['spatial']``, or SpatialData with ``table_key``. Not modified.
    prompt_key
        Boolean ``obs`` column of the prompt spots, as written by :func:`phg2st_sc.tl.select_prompts` (or a
        design of :func:`phg2st_sc.tl.design_prompts`, e.g. ``"phg2st_design"``).
    order_key
        Integer ``obs`` column of the order in which the prompts were chosen (``-1`` elsewhere; e.g.
        ``"phg2st_design_order"``): each prompt is labelled with its rank (the first ``max_labels`` of them).
    max_labels
        Most rank labels drawn with ``order_key``.
    {section}
    prompt_color, heldout_color, unmeasured_color
        Colours of prompt, held-out and unmeasured spots.
    panel_size
        Height of the figure in inches.
    {table_key}
    {figure}

    Returns
    -------
    The Figure with ``return_fig=True``; else the Axes when not shown; else ``None``.

    Examples
    --------
    >>> phg2st.tl.select_prompts(adata, fraction=0.1, seed=0)  # doctest: +SKIP
    >>> phg2st.pl.prompts(adata)  # doctest: +SKIP
    """
    import matplotlib.pyplot as plt
    from matplotlib.colors import to_rgba
    from matplotlib.lines import Line2D

    if spot_scale <= 0 or panel_size <= 0:
        raise ValueError(f"`spot_scale` and `panel_size` must be positive, got {spot_scale} and {panel_size}.")
    for name, colour in (("prompt_color", prompt_color), ("heldout_color", heldout_color),
                         ("unmeasured_color", unmeasured_color)):  # fmt: skip
        try:
            to_rgba(colour)
        except ValueError as err:
            raise ValueError(f"`{name}={colour!r}` is not a Matplotlib colour.") from err
    adata = as_anndata(adata, table_key)
    prompt = get_prompt_mask(adata, prompt_key)
    order = None if order_key is None else _order(adata, order_key)
    unmeasured = unmeasured_rows(adata.X) & ~prompt
    heldout = ~prompt & ~unmeasured
    view = section_view(adata, library_id, image=image, spot_scale=spot_scale)

    fig, ax = plt.subplots(figsize=(panel_size * 1.5, panel_size), layout="constrained")  # room for the legend
    view.draw_image(ax)
    handles = []
    groups = (("unmeasured", unmeasured, unmeasured_color, 0.6), ("held out", heldout, heldout_color, 0.55),
              ("prompt", prompt, prompt_color, 0.95))  # fmt: skip
    for label, mask, colour, alpha in groups:  # prompts last: on top
        if not mask.any():
            continue
        view.spots(ax, mask, facecolors=to_rgba(colour, alpha), edgecolors="none", linewidths=0, label=label)
        handles.append(
            Line2D(
                [],
                [],
                linestyle="none",
                marker="o",
                markersize=7,
                markerfacecolor=to_rgba(colour, alpha),
                markeredgecolor="none",
                label=f"{label} ({int(mask.sum())})",
            )  # fmt: skip
        )
    if order is not None:
        _label_order(ax, view.xy, prompt, order, max_labels)
    view.frame(ax)
    measured = int((~unmeasured).sum())
    n_prompts = int(prompt.sum())
    share = f" ({100 * n_prompts / measured:.0f}%)" if measured else ""
    ax.set_title(f"{view.library_id}: {n_prompts} prompts of {measured} measured spots{share}", fontsize=10)
    fig.legend(handles=handles[::-1], loc="outside right upper", frameon=False, fontsize=8)
    return show_or_save(fig, ax, show=show, save=save, return_fig=return_fig)


def _order(adata: AnnData, key: str) -> np.ndarray:
    if key not in adata.obs:
        raise KeyError(f"`order_key={key!r}` is not an `obs` column (tl.design_prompts writes '<key_added>_order').")
    order = np.asarray(adata.obs[key])
    if not np.issubdtype(order.dtype, np.integer):
        raise TypeError(f"`obs[{key!r}]` must hold integer ranks (-1 where not chosen), got {order.dtype}.")
    return order


def _label_order(ax: Axes, xy: np.ndarray, prompt: np.ndarray, order: np.ndarray, max_labels: int) -> None:
    """Each prompt's rank written on it (the first ``max_labels``)."""
    ranked = np.flatnonzero(prompt & (order >= 0))
    for i in ranked[np.argsort(order[ranked], kind="stable")][:max_labels]:
        ax.annotate(str(int(order[i])), xy[i], ha="center", va="center", fontsize=6, color="white", weight="bold")
