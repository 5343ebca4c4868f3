"""Training curves of a PHG2ST model: losses and validation PCC per epoch, with the selected epoch."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from phg2st_sc.pl._base import plot_docs, show_or_save

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from phg2st_sc._model._model import PHG2ST


def _history(model: Any) -> tuple[pd.DataFrame, dict[str, Any]]:
    # Duck-typed: checking for the PHG2ST class would import torch.
    if isinstance(model, pd.DataFrame):
        history, info = model, {}
    elif isinstance(getattr(model, "history_", None), pd.DataFrame):
        history, info = model.history_, dict(getattr(model, "info", None) or {})
    else:
        raise TypeError(f"Expected a PHG2ST model or its `history_` DataFrame, got {type(model).__name__}.")
    if history.empty:
        raise ValueError(
            "The model has not been trained: its `history_` is empty. Train it first with `phg2st.tl.fit(...)` "
            "(or `model.train(...)`)."
        )
    missing = [c for c in ("epoch", "train_loss") if c not in history.columns]
    if missing:
        raise KeyError(f"The history lacks the columns {missing} (it has {list(history.columns)}).")
    return history.sort_values("epoch", kind="stable").reset_index(drop=True), info


def best_epoch(history: pd.DataFrame, info: dict[str, Any] | None = None) -> int | None:
    """Row of ``history`` of the selected epoch: the best validation PCC (the checkpoint's, when ``info`` has it)."""
    if "val_pcc" not in history.columns:
        return None
    pcc = history["val_pcc"].to_numpy(dtype=float)
    if not np.isfinite(pcc).any():
        return None
    kept = (info or {}).get("best_epoch_val_pcc")
    if kept is not None and np.isfinite(kept):  # the epoch whose weights the model kept
        return int(np.nanargmin(np.abs(pcc - float(kept))))
    return int(np.nanargmax(pcc))


@plot_docs
def training_curves(
    model: PHG2ST | pd.DataFrame,
    *,
    mark_best: bool = True,
    log_loss: bool = False,
    panel_size: float = 3.2,
    show: bool | None = None,
    save: str | os.PathLike | None = None,
    return_fig: bool = False,
) -> Figure | dict[str, Axes] | None:
    """Plot a model's training and validation loss, and its validation PCC, against the epoch.

    The selected epoch (best validation PCC: the weights the model keeps) is marked with a dashed line in every
    panel and a star on the PCC curve. Without a validation set only the training loss is drawn.

    Parameters
    ----------
    model
        A trained :class:`~phg2st_sc.PHG2ST`, or its ``history_`` (one row per epoch: ``epoch``, ``train_loss``,
        and ``val_loss``, ``val_pcc`` when validated).
    mark_best
        Mark the selected epoch.
    log_loss
        Logarithmic loss axis.
    panel_size
        Height and width of one panel in inches.
    {figure}

    Returns
    -------
    The Figure with ``return_fig=True``; else ``{{"loss": Axes, "val_pcc": Axes}}`` (no ``"val_pcc"`` without
    validation) when not shown; else ``None``.

    Examples
    --------
    >>> model = phg2st.tl.fit([a, b, c], use_rep="X_uni")  # doctest: +SKIP
    >>> phg2st.pl.training_curves(model)  # doctest: +SKIP
    """
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    if panel_size <= 0:
        raise ValueError(f"`panel_size` must be positive, got {panel_size}.")
    history, info = _history(model)
    epoch = history["epoch"].to_numpy()
    has_pcc = "val_pcc" in history.columns and history["val_pcc"].notna().any()
    best = best_epoch(history, info) if mark_best else None
    marker = "o" if len(history) <= 30 else None

    panels = ["loss", "val_pcc"] if has_pcc else ["loss"]
    fig, axs = plt.subplots(1, len(panels), figsize=(panel_size * len(panels) * 1.15, panel_size), squeeze=False)
    axes = dict(zip(panels, axs[0], strict=True))
    ax = axes["loss"]
    ax.plot(epoch, history["train_loss"], marker=marker, markersize=3, color="C0", label="train")
    if "val_loss" in history.columns and history["val_loss"].notna().any():
        ax.plot(epoch, history["val_loss"], marker=marker, markersize=3, color="C1", label="validation")
    if log_loss:
        ax.set_yscale("log")
    ax.set_ylabel("loss")
    ax.set_title("loss", fontsize=10)
    if has_pcc:
        ax = axes["val_pcc"]
        ax.plot(epoch, history["val_pcc"], marker=marker, markersize=3, color="C2", label="validation PCC")
        ax.set_ylabel("PCC")
        ax.set_title("validation PCC", fontsize=10)
        if best is not None:
            ax.scatter([epoch[best]], [history["val_pcc"].iloc[best]], marker="*", s=120, color="C3", zorder=3,
                       label=f"selected: {history['val_pcc'].iloc[best]:.3f}")  # fmt: skip
    for ax in axes.values():
        if best is not None:
            ax.axvline(epoch[best], color="0.4", linestyle="--", linewidth=0.8, label=f"epoch {epoch[best]}")
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.legend(loc="best", fontsize=7, frameon=False)
    fig.tight_layout()
    return show_or_save(fig, axes, show=show, save=save, return_fig=return_fig)
