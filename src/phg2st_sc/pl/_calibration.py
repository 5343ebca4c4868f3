"""Calibration of predictive intervals: nominal against empirical coverage."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from phg2st_sc.pl._base import plot_docs, show_or_save

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

COVERAGE_COLUMNS = {0.8: "coverage_80", 0.9: "coverage_90"}


@plot_docs
def calibration(
    results: Any,
    *,
    method: str | None = None,
    protocol: str | None = None,
    prompt_fraction: float | None = None,
    panel_size: float = 3.6,
    show: bool | None = None,
    save: str | os.PathLike | None = None,
    return_fig: bool = False,
) -> Figure | Axes | None:
    """Plot nominal against empirical coverage of the predictive intervals, one line per fold.

    Points on the diagonal are calibrated; below it the intervals are too narrow. Reads the ``coverage_80`` and
    ``coverage_90`` columns that :func:`phg2st_sc.tl.benchmark` gives methods with uncertainty (held-out spots,
    averaged over seeds within a fold).

    Parameters
    ----------
    results
        A :class:`~phg2st_sc.tl.BenchmarkResult` or its ``table``.
    method
        The method to show; needed when several have coverage columns.
    protocol, prompt_fraction
        Which targets and prompt fraction; needed when the table has several.
    panel_size
        Height and width of the figure in inches.
    {figure}

    Returns
    -------
    The Figure with ``return_fig=True``; else the Axes when not shown; else ``None``.

    Examples
    --------
    >>> res = phg2st.tl.benchmark("her2st", methods=["phg2st_adaptive"], out="bench")  # doctest: +SKIP
    >>> phg2st.pl.calibration(res)  # doctest: +SKIP
    """
    import matplotlib.pyplot as plt

    per_fold = _coverage_per_fold(results, method, protocol, prompt_fraction)
    nominal = list(COVERAGE_COLUMNS)
    fig, ax = plt.subplots(figsize=(panel_size * 1.1, panel_size), layout="constrained")
    ax.plot([0.7, 1.0], [0.7, 1.0], color="grey", linestyle="--", linewidth=1, label="calibrated")
    for fold, row in per_fold.iterrows():
        ax.plot(nominal, [row[COVERAGE_COLUMNS[c]] for c in nominal], marker="o", linewidth=1, label=str(fold))
    ax.set_xlabel("nominal coverage")
    ax.set_ylabel("empirical coverage (held-out spots)")
    ax.set_xlim(0.7, 1.0)
    ax.set_ylim(min(0.6, float(np.nanmin(per_fold.to_numpy())) - 0.02), 1.0)
    ax.legend(fontsize=7, frameon=False, title="fold", title_fontsize=7)
    ax.set_title(per_fold.attrs["title"], fontsize=9)
    return show_or_save(fig, ax, show=show, save=save, return_fig=return_fig)


def _coverage_per_fold(
    results: Any, method: str | None, protocol: str | None, prompt_fraction: float | None
) -> pd.DataFrame:
    from phg2st_sc.tl import BenchmarkResult

    table = results.table if isinstance(results, BenchmarkResult) else results
    if not isinstance(table, pd.DataFrame) or "fold" not in table.columns:
        raise TypeError("`results` must be a `tl.benchmark` result or its table (with a 'fold' column).")
    cols = list(COVERAGE_COLUMNS.values())
    if not set(cols) <= set(table.columns):
        raise ValueError("The table has no coverage columns: benchmark a method with uncertainty (phg2st_adaptive).")
    table = table[table["spots"] == "heldout"].dropna(subset=cols)
    for name, value in (("method", method), ("protocol", protocol), ("prompt_fraction", prompt_fraction)):
        if value is not None:
            table = table[table[name] == value]
        choices = sorted(table[name].unique().tolist())
        if len(choices) > 1:
            raise ValueError(f"Several values of `{name}` have coverage ({choices}): choose one with `{name}=`.")
        if not choices:
            raise ValueError(f"No row with coverage for {name}={value!r}.")
    per_fold = table.groupby("fold")[cols].mean()
    row = table.iloc[0]
    per_fold.attrs["title"] = f"{row['method']}, {row['protocol']}, {row['prompt_fraction']:.0%} prompts"
    return per_fold
