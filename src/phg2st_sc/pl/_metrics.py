"""Methods' accuracy side by side: one method against another gene by gene, per-gene distributions, folds."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd

from phg2st_sc._validate import check_choice
from phg2st_sc.pl._base import plot_docs, show_or_save

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from phg2st_sc.tl import BenchmarkResult, Scores

METRICS = ("pcc", "ccc", "mae")
PANELS = ("scatter", "distribution", "folds")
LABELS = {"pcc": "PCC", "ccc": "CCC", "mae": "MAE"}
#: Benchmark settings that must have a single value in what is plotted (``spots`` defaults to ``"heldout"``).
SETTINGS = ("protocol", "spots", "prompt_fraction")


def _from_input(results: Any) -> tuple[pd.DataFrame | None, pd.DataFrame | None]:
    """Split the input into a per-gene table (``method``, ``gene``, metrics) and a benchmark table (``fold``, ...)."""
    from phg2st_sc.tl import BenchmarkResult, Scores

    if isinstance(results, BenchmarkResult):
        return results.per_gene, results.table
    if isinstance(results, pd.DataFrame):
        if "gene" in results.columns:
            return results, None
        if "fold" in results.columns:
            return None, results
        raise ValueError(
            "A DataFrame must be a `tl.benchmark` table (columns 'fold', 'method' and the metrics) or its per-gene "
            f"table (columns 'gene', 'method' and the metrics); got columns {list(results.columns)}."
        )
    if isinstance(results, Scores):
        raise TypeError(
            "Give the scores of the methods to compare as a dict {method name: Scores}, e.g. "
            "{'phg2st': tl.score(adata, layer='phg2st'), 'idw': tl.score(adata, layer='baseline_idw')}."
        )
    if isinstance(results, Mapping):
        bad = [str(k) for k, v in results.items() if not isinstance(v, Scores)]
        if bad or not results:
            raise TypeError(
                f"Expected a non-empty dict {{method name: tl.Scores}}; these values are not Scores: {bad}."
            )
        frames = [
            s.per_gene[list(METRICS)].rename_axis("gene").reset_index().assign(method=str(name))
            for name, s in results.items()
        ]
        return pd.concat(frames, ignore_index=True), None
    raise TypeError(
        "Expected a dict {method name: tl.Scores}, a tl.BenchmarkResult or its `table` / `per_gene` DataFrame, got "
        f"{type(results).__name__}."
    )


def _subset(df: pd.DataFrame, subset: Mapping[str, Any], metric: str, *, index: str) -> pd.DataFrame:
    """Rows of ``df`` matching ``subset`` (one setting each), averaged into ``index`` x method of ``metric``."""
    missing = [c for c in (index, "method", metric) if c not in df.columns]
    if missing:
        raise KeyError(f"The table lacks the columns {missing} (it has {list(df.columns)}).")
    for col, value in subset.items():
        if col not in df.columns:
            raise KeyError(f"`subset` names {col!r}, which is not a column of the table (it has {list(df.columns)}).")
        wanted = list(value) if isinstance(value, (list, tuple, set)) else [value]
        available = df[col].unique().tolist()
        df = df[df[col].isin(wanted)]
        if df.empty:
            raise ValueError(f"No row has {col} in {wanted}; the table has {available}.")
    if (
        "spots" not in subset
        and "spots" in df.columns
        and df["spots"].nunique() > 1
        and (df["spots"] == "heldout").any()
    ):
        df = df[df["spots"] == "heldout"]
    for col in SETTINGS:
        if col in df.columns and df[col].nunique() > 1:
            raise ValueError(
                f"The table mixes several {col} values {df[col].unique().tolist()}; choose one with "
                f"`subset={{{col!r}: ...}}`."
            )
    return df.groupby([index, "method"], sort=False)[metric].mean().unstack("method")


def _pick(methods: list[str], method: str | None, baseline: str | None) -> tuple[str, str | None]:
    if method is None:
        method = "phg2st" if "phg2st" in methods else methods[0]
    for name, what in ((method, "method"), (baseline, "baseline")):
        if name is not None and name not in methods:
            raise KeyError(f"No {what} {name!r} in the results; they have {methods}.")
    if baseline == method:
        raise ValueError(f"`baseline` and `method` are both {method!r}; compare two different methods.")
    if baseline is None:
        others = [m for m in methods if m != method]
        baseline = others[0] if others else None
    return method, baseline


def _scatter(ax: Axes, genes: pd.DataFrame, method: str, baseline: str, metric: str, higher_better: bool) -> None:
    pair = genes[[baseline, method]].dropna()
    if pair.empty:
        raise ValueError(f"No gene has a {metric} for both {method!r} and {baseline!r}.")
    x, y = pair[baseline].to_numpy(), pair[method].to_numpy()
    ax.scatter(x, y, s=8, alpha=0.6, color="C0", linewidths=0)
    lo, hi = float(min(x.min(), y.min())), float(max(x.max(), y.max()))
    pad = 0.04 * (hi - lo or 1.0)
    lims = (lo - pad, hi + pad)
    ax.plot(lims, lims, color="0.3", linestyle="--", linewidth=0.8, label="y = x")
    ax.set_xlim(lims)
    ax.set_ylim(lims)
    ax.set_aspect("equal")
    above, below = int((y > x).sum()), int((y < x).sum())
    top, bottom = (method, baseline) if higher_better else (baseline, method)
    ax.text(0.03, 0.97, f"{top} better: {above}", transform=ax.transAxes, fontsize=8, va="top", ha="left")
    ax.text(0.97, 0.03, f"{bottom} better: {below}", transform=ax.transAxes, fontsize=8, va="bottom", ha="right")
    ax.set_xlabel(f"{baseline} {LABELS[metric]}")
    ax.set_ylabel(f"{method} {LABELS[metric]}")
    ax.set_title(f"{LABELS[metric]} per gene ({len(pair)} genes)", fontsize=10)


def _categories(ax: Axes, methods: list[str]) -> np.ndarray:
    pos = np.arange(len(methods))
    ax.set_xticks(pos, methods, rotation=30, ha="right")
    ax.set_xlim(-0.6, len(methods) - 0.4)
    return pos


def _distribution(ax: Axes, genes: pd.DataFrame, methods: list[str], metric: str, style: str, colours: dict) -> None:
    data = [genes[m].dropna().to_numpy() for m in methods]
    empty = [m for m, d in zip(methods, data, strict=True) if d.size == 0]
    if empty:
        raise ValueError(f"Methods {empty} have no per-gene {metric} to show.")
    pos = np.arange(len(methods))
    if style == "box":
        parts = ax.boxplot(data, positions=pos, widths=0.6, patch_artist=True, medianprops={"color": "black"},
                           flierprops={"markersize": 2, "alpha": 0.5})  # fmt: skip
        bodies = parts["boxes"]
    else:
        parts = ax.violinplot(data, positions=pos, widths=0.8, showextrema=False, showmedians=True)
        parts["cmedians"].set_color("black")
        bodies = parts["bodies"]
    _categories(ax, methods)  # after drawing: boxplot sets its own tick labels
    for body, m in zip(bodies, methods, strict=True):
        body.set_facecolor(colours[m])
        body.set_alpha(0.7)
    means = [float(d.mean()) for d in data]
    ax.scatter(pos, means, marker="D", s=16, color="white", edgecolors="black", zorder=3, label="mean")
    ax.set_ylabel(LABELS[metric])
    ax.set_title(f"{LABELS[metric]} of {len(genes)} genes", fontsize=10)
    ax.legend(loc="best", fontsize=7, frameon=False)


def _folds(ax: Axes, folds: pd.DataFrame, methods: list[str], metric: str, colours: dict) -> None:
    pos = _categories(ax, methods)
    values = folds.reindex(columns=methods)
    for _, row in values.iterrows():  # one fold's methods joined: a paired comparison
        ax.plot(pos, row.to_numpy(dtype=float), color="0.8", linewidth=0.7, zorder=1)
    for i, m in enumerate(methods):
        ax.scatter(np.full(len(values), i), values[m], s=16, color=colours[m], zorder=2)
    means = values.mean().to_numpy(dtype=float)
    ax.hlines(means, pos - 0.3, pos + 0.3, colors="black", linewidth=1.5, zorder=3, label="mean of folds")
    ax.set_ylabel(LABELS[metric])
    ax.set_title(f"{LABELS[metric]} per fold ({len(values)} folds)", fontsize=10)
    ax.legend(loc="best", fontsize=7, frameon=False)


@plot_docs
def metrics(
    results: Mapping[str, Scores] | BenchmarkResult | pd.DataFrame,
    *,
    metric: Literal["pcc", "ccc", "mae"] = "pcc",
    method: str | None = None,
    baseline: str | None = None,
    kind: str | Sequence[str] | None = None,
    distribution: Literal["box", "violin"] = "box",
    subset: Mapping[str, Any] | None = None,
    panel_size: float = 3.2,
    show: bool | None = None,
    save: str | os.PathLike | None = None,
    return_fig: bool = False,
) -> Figure | dict[str, Axes] | None:
    """Compare methods' accuracy: one method against another gene by gene, per-gene distributions and folds.

    Panels, from left to right, as far as the input provides them:

    - ``"scatter"``: each gene's metric with ``method`` (y) against ``baseline`` (x), the diagonal, and how many
      genes each method gets better (for MAE, lower is better);
    - ``"distribution"``: the per-gene metric of every method (box or violin, diamond = mean);
    - ``"folds"``: the metric of every method in every fold of a benchmark (points; a fold's methods joined by a
      grey line; bar = mean of folds).

    Methods are ordered from best to worst by their mean. Benchmark rows of several sections and seeds are averaged
    within a fold (``"folds"``) or within a gene (``"scatter"``, ``"distribution"``), as
    :func:`phg2st_sc.tl.summarise` does.

    Parameters
    ----------
    results
        ``{{method name: Scores}}`` from :func:`phg2st_sc.tl.score` (per-gene panels), a
        :class:`~phg2st_sc.tl.BenchmarkResult` (the folds panel, and per-gene panels when run with
        ``per_gene=True``), or its ``table`` or ``per_gene`` DataFrame.
    metric
        ``"pcc"``, ``"ccc"`` or ``"mae"``.
    method
        The method on the y axis of the scatter; default ``"phg2st"`` when present, else the best method.
    baseline
        The method on the x axis of the scatter; default the best other method.
    kind
        Panels to draw, among ``"scatter"``, ``"distribution"`` and ``"folds"``; default all that the input
        provides.
    distribution
        ``"box"`` or ``"violin"``.
    subset
        Benchmark rows to keep, ``{{column: value or list}}``, e.g. ``{{"protocol": "heldout"}}``. What is plotted must
        have one ``protocol``, ``spots`` and ``prompt_fraction``; ``spots`` defaults to ``"heldout"``.
    panel_size
        Height of the figure and width of the scatter panel, in inches.
    {figure}

    Returns
    -------
    The Figure with ``return_fig=True``; else ``{{panel name: Axes}}`` when not shown; else ``None``.

    Examples
    --------
    >>> scores = {{m: phg2st.tl.score(adata, layer=m) for m in ("phg2st", "baseline_idw")}}  # doctest: +SKIP
    >>> phg2st.pl.metrics(scores)  # doctest: +SKIP
    >>> phg2st.pl.metrics(
    ...     phg2st.tl.benchmark("her2st", per_gene=True), subset={{"protocol": "heldout"}}
    ... )  # doctest: +SKIP
    """
    import matplotlib.pyplot as plt

    check_choice(metric, "metric", METRICS)
    check_choice(distribution, "distribution", ("box", "violin"))
    if panel_size <= 0:
        raise ValueError(f"`panel_size` must be positive, got {panel_size}.")
    per_gene, table = _from_input(results)
    subset = dict(subset or {})
    genes = _subset(per_gene, subset, metric, index="gene") if per_gene is not None else None
    folds = _subset(table, subset, metric, index="fold") if table is not None else None
    higher_better = metric != "mae"
    means = (genes if genes is not None else folds).mean()
    methods = [str(m) for m in means.sort_values(ascending=not higher_better, kind="stable").index]
    method, baseline = _pick(methods, method, baseline)

    available = {
        "scatter": (genes is not None and baseline is not None, "per-gene metrics of two methods"),
        "distribution": (genes is not None, "per-gene metrics (Scores, or `tl.benchmark(..., per_gene=True)`)"),
        "folds": (folds is not None, "a `tl.benchmark` result or table"),
    }
    if kind is None:
        panels = [p for p in PANELS if available[p][0]]
    else:
        panels = [kind] if isinstance(kind, str) else list(kind)
        if not panels:
            raise ValueError("`kind` is empty.")
        for p in panels:
            check_choice(p, "kind", PANELS)
            if not available[p][0]:
                raise ValueError(f"The {p!r} panel needs {available[p][1]}, which the input does not provide.")

    palette = plt.get_cmap("tab10")
    colours = {m: palette(i % 10) for i, m in enumerate(methods)}
    wide = max(panel_size, 0.45 * len(methods) + 1.2)
    widths = [panel_size if p == "scatter" else wide for p in panels]
    fig, axs = plt.subplots(
        1, len(panels), figsize=(sum(widths) * 1.1, panel_size), gridspec_kw={"width_ratios": widths}, squeeze=False
    )
    axes = dict(zip(panels, axs[0], strict=True))
    try:
        for p, ax in axes.items():
            if p == "scatter":
                _scatter(ax, genes, method, baseline, metric, higher_better)
            elif p == "distribution":
                _distribution(ax, genes, methods, metric, distribution, colours)
            else:
                _folds(ax, folds, methods, metric, colours)
    except Exception:
        plt.close(fig)  # no half-drawn figure left behind
        raise
    fig.tight_layout()
    return show_or_save(fig, axes, show=show, save=save, return_fig=return_fig)
