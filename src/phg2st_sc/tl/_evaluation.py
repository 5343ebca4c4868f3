"""The evaluation core: draw prompts, let every method fill the held-out spots, score, one row per result.

``tl.evaluate``, ``tl.benchmark``, the demo and ``benchmarks/bench_accuracy.py`` all go through
:func:`evaluate_methods`, so that every table of the package is made the same way: the same prompts for every
method (drawn once per seed), predictions scored by :func:`~phg2st_sc.tl.score` on the spots asked for.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from anndata import AnnData

from phg2st_sc._constants import Keys
from phg2st_sc._errors import SmoothedTargetWarning
from phg2st_sc._utils import as_dense

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


#: Calibration metrics of a prediction with uncertainty (held-out spots; NaN for methods without).
UNCERTAINTY_METRICS = ("coverage_80", "coverage_90", "width_90", "error_ratio")


def _params(adata: AnnData, layer: str) -> dict[str, Any]:
    """``uns[layer]['params']`` as the method wrote it (empty when it wrote none)."""
    entry = adata.uns.get(layer)
    return entry.get("params", {}) if isinstance(entry, dict) else {}


def uncertainty_metrics(adata: AnnData, layer: str) -> dict[str, float]:
    """Coverage of the nominal 80% and 90% intervals, the 90% interval's mean width, and the error ratio.

    On held-out spots (not prompts, not virtual), from ``layers[layer + '_std']`` and the conformal quantiles in
    ``uns[layer]['params']['uncertainty']``; the error ratio is the mean absolute error of the 20% of spots with
    the largest mean standard deviation over that of the 20% with the smallest. NaN without uncertainty.
    """
    std_key = Keys.uncertainty(layer, "std")
    params = _params(adata, layer)
    if std_key not in adata.layers or "uncertainty" not in params:
        return dict.fromkeys(UNCERTAINTY_METRICS, float("nan"))
    held = ~adata.obs[Keys.PROMPT].to_numpy(bool)
    if Keys.VIRTUAL in adata.obs:
        held &= ~adata.obs[Keys.VIRTUAL].to_numpy(bool)
    truth = as_dense(adata.X[held], dtype=np.float64)
    pred = np.asarray(adata.layers[layer][held], dtype=np.float64)
    std = np.asarray(adata.layers[std_key][held], dtype=np.float64)
    q = params["uncertainty"]["quantiles"]
    err = np.abs(truth - pred)
    ok = np.isfinite(err)
    out = {f"coverage_{int(round(100 * float(level)))}": float((err <= float(q[level]) * std)[ok].mean())
           for level in q if float(level) in (0.8, 0.9)}  # fmt: skip
    out["width_90"] = float(2.0 * float(q["0.9"]) * std[ok].mean())
    per_spot_std, per_spot_err = std.mean(1), np.nanmean(err, axis=1)
    order = np.argsort(per_spot_std)
    k = max(len(order) // 5, 1)
    low = per_spot_err[order[:k]].mean()
    out["error_ratio"] = float(per_spot_err[order[-k:]].mean() / low) if low > 0 else float("nan")
    return out


#: What the in-context layer chose on each draw (rows of methods with the layer; NaN for the others): the
#: component or combination it kept, the prompts' spread ratio, whether the ridge was left out for it and the scale
#: of the kept weights.
LAYER_COLUMNS = ("layer_kept", "spread_ratio", "ridge_left_out", "layer_scale")


def layer_choice(adata: AnnData, layer: str) -> dict[str, Any]:
    """:data:`LAYER_COLUMNS` from ``uns[layer]['params']['in_context']`` (written by ``tl.impute``'s layer)."""
    record = _params(adata, layer).get("in_context")
    scores = record.get("cv_pcc", {}) if isinstance(record, dict) else {}
    # (NaN, not "", for what is missing: a results file read back gives the same table)
    return {"layer_kept": scores.get("kept", np.nan), "spread_ratio": float(scores.get("spread_ratio", np.nan)),
            "ridge_left_out": scores.get("ridge_left_out", np.nan), "layer_scale": float(scores.get("scale", np.nan))}  # fmt: skip


#: How a benchmark's prompts are placed: at random (spots or five blocks) or designed (tl.design_prompts, spots or
#: five blocks, the same number of spots).
PROMPT_STRATEGIES = ("random", "blocks", "space", "features", "variance", "space_blocks", "features_blocks",
                     "variance_blocks")  # fmt: skip


def draw_prompts(adata: AnnData, fraction: float, seed: int, strategy: str, use_rep: str | None = None) -> None:
    """Mark ``round(fraction * n)`` prompts of ``strategy`` (:data:`PROMPT_STRATEGIES`) in ``obs``."""
    from phg2st_sc.tl._design import design_prompts
    from phg2st_sc.tl._prompts import n_prompts_for, select_prompts

    if strategy in ("random", "blocks"):
        select_prompts(adata, fraction=fraction, seed=seed, strategy=strategy)
        return
    name, _, blocks = strategy.partition("_")
    n = n_prompts_for(adata.n_obs, fraction)
    design = design_prompts(adata, budget=n, strategy=name, shape="blocks" if blocks else "spots",
                            block_size=int(np.ceil(n / 5)), use_rep=use_rep, seed=seed, copy=True)  # fmt: skip
    select_prompts(adata, mask=design.obs["phg2st_design"].to_numpy(bool))


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
    use_rep: str | None = None,
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
        Prompts: :func:`~phg2st_sc.tl.select_prompts` (``"random"``, ``"blocks"``) or a design of
        :func:`~phg2st_sc.tl.design_prompts` of the same size (see :data:`PROMPT_STRATEGIES`).
    spots
        ``"heldout"`` and/or ``"all"``: which spots are scored.
    per_gene
        Also return the per-gene tables.
    base
        Columns added to every row (section, fold, protocol, ...).
    progress
        Called with ``(seed, label)`` before each method runs.
    use_rep
        Image features of the ``"features"`` designs.

    Returns
    -------
    The rows (``base``, ``method``, ``seed``, ``prompt_fraction``, ``spots``, the metrics, ``n_genes``,
    ``n_genes_skipped``, ``n_spots``, ``targets_smoothed``, ``note``, the calibration metrics on held-out rows,
    :data:`LAYER_COLUMNS`) and the per-gene tables.
    """
    rows: list[dict[str, Any]] = []
    genes: list[pd.DataFrame] = []
    for seed in seeds:
        draw_prompts(adata, fraction, seed, strategy, use_rep)
        for label, predict in methods.items():
            if progress is not None:
                progress(seed, label)
            for part in ("std", "lo", "hi"):  # a previous method's uncertainty and record are not this one's
                adata.layers.pop(Keys.uncertainty(SCRATCH, part), None)
            adata.uns.pop(SCRATCH, None)
            predict(adata, SCRATCH, seed)
            r, g = score_rows(adata, SCRATCH, {**(base or {}), "method": label, "seed": seed,
                                               "prompt_fraction": fraction}, spots, per_gene)  # fmt: skip
            calibration, choice = uncertainty_metrics(adata, SCRATCH), layer_choice(adata, SCRATCH)
            r = [{**row, **choice, **(calibration if row["spots"] == "heldout" else {})} for row in r]
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
