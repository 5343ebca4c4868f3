"""The evaluation core: draw prompts, let every method fill the held-out spots, score, one row per result.

``tl.evaluate``, ``tl.benchmark``, the demo and ``benchmarks/bench_accuracy.py`` all go through
:func:`evaluate_methods`, so that every table of the package is made the same way: the same prompts for every
method (drawn once per seed), predictions scored by :func:`~phg2st_sc.tl.score` on the spots asked for.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import pandas as pd
from anndata import AnnData

from phg2st_sc._errors import SmoothedTargetWarning

if TYPE_CHECKING:
    from phg2st_sc._model._model import PHG2ST

#: A method under evaluation: fills ``layer`` of the section from its prompts (``seed`` for its own randomness).
Predictor = Callable[[AnnData, str, int], None]
METRICS = ("mae", "ccc", "pcc")
#: The scratch layer every method writes its predictions to before they are scored.
SCRATCH = "_phg2st_eval"


def baseline_predictor(spec: Mapping[str, Any], use_rep: str | None = None) -> Predictor:
    """A :func:`~phg2st_sc.tl.baseline` method: ``spec`` is ``{"method": name, **settings}``.

    Image methods get ``use_rep`` unless ``spec`` names one.
    """
    from phg2st_sc.tl._baselines import IMAGE_METHODS, baseline

    settings = {k: v for k, v in spec.items() if k != "method"}
    if spec["method"] in IMAGE_METHODS:
        settings.setdefault("use_rep", use_rep)

    def predict(adata: AnnData, layer: str, seed: int) -> None:
        baseline(adata, method=spec["method"], layer_added=layer, seed=seed, **settings)

    return predict


def model_predictor(model: PHG2ST, **impute_kwargs: Any) -> Predictor:
    """A trained PHG2ST model (:func:`~phg2st_sc.tl.impute`; its own seed is unused: inference is deterministic)."""
    from phg2st_sc.tl._fit import impute

    def predict(adata: AnnData, layer: str, seed: int) -> None:
        impute(adata, model, layer_added=layer, **impute_kwargs)

    return predict


def score_rows(
    adata: AnnData, layer: str, base: Mapping[str, Any], spots: Sequence[str], per_gene: bool = False
) -> tuple[list[dict[str, Any]], list[pd.DataFrame]]:
    """Score ``layer`` on each kind of spots: one row each (``base`` plus the metrics), and per-gene tables."""
    from phg2st_sc.tl._metrics import score

    rows, genes = [], []
    for which in spots:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", SmoothedTargetWarning)  # reported by the callers, once
            s = score(adata, layer=layer, spots=which)
        rows.append({
            **base, "spots": which, **{m: float(s.summary[m]) for m in METRICS},
            "n_genes": int(s.summary["n_genes"]), "n_genes_skipped": int(s.summary["n_genes_skipped"]),
            "n_spots": int(s.summary["n_spots"]), "targets_smoothed": bool(s.summary["targets_smoothed"]),
            "note": s.summary["note"],
        })  # fmt: skip
        if per_gene:
            g = s.per_gene.drop(columns="skipped").rename_axis("gene").reset_index()
            genes.append(g.assign(**base, spots=which))
    return rows, genes


def evaluate_methods(
    adata: AnnData,
    methods: Mapping[str, Predictor],
    *,
    seeds: Sequence[int],
    fraction: float,
    strategy: str = "random",
    spots: Sequence[str] = ("heldout",),
    per_gene: bool = False,
    base: Mapping[str, Any] | None = None,
    progress: Callable[[int, str], None] | None = None,
) -> tuple[list[dict[str, Any]], list[pd.DataFrame]]:
    """Every method on one section with the same prompts, for each seed; the section's prompts are overwritten.

    Parameters
    ----------
    adata
        The section, with the targets the methods read and are scored against (modified: prompts and the
        scratch layer are written to it; pass a copy).
    methods
        ``{label: predictor}`` (:func:`baseline_predictor`, :func:`model_predictor`).
    seeds
        Prompt draws; each draw is shared by every method.
    fraction, strategy
        Prompts (:func:`~phg2st_sc.tl.select_prompts`).
    spots
        ``"heldout"`` and/or ``"all"``: which spots are scored.
    per_gene
        Also return the per-gene tables.
    base
        Columns added to every row (section, fold, protocol, ...).
    progress
        Called with ``(seed, label)`` before each method runs.

    Returns
    -------
    The rows (``base``, ``method``, ``seed``, ``prompt_fraction``, ``spots``, the metrics, ``n_genes``,
    ``n_genes_skipped``, ``n_spots``, ``targets_smoothed``, ``note``) and the per-gene tables.
    """
    from phg2st_sc.tl._prompts import select_prompts

    rows: list[dict[str, Any]] = []
    genes: list[pd.DataFrame] = []
    for seed in seeds:
        select_prompts(adata, fraction=fraction, seed=seed, strategy=strategy)
        for label, predict in methods.items():
            if progress is not None:
                progress(seed, label)
            predict(adata, SCRATCH, seed)
            r, g = score_rows(adata, SCRATCH, {**(base or {}), "method": label, "seed": seed,
                                               "prompt_fraction": fraction}, spots, per_gene)  # fmt: skip
            rows += r
            genes += g
    return rows, genes


def summarise_seeds(table: pd.DataFrame) -> pd.DataFrame:
    """Mean ± std over seeds, one row per method (the demo's printed table)."""
    g = table.groupby("method", sort=False)
    out = pd.DataFrame(index=g.size().index)
    for m in METRICS:
        out[m.upper()] = [f"{mu:.3f} ± {sd:.3f}" for mu, sd in zip(g[m].mean(), g[m].std(ddof=0), strict=True)]
    return out
