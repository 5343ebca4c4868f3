"""Per-gene PCC, CCC and MAE (REFERENCE section 4) and the held-out scoring of a prediction layer."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np
import pandas as pd
from anndata import AnnData

from phg2st_sc._constants import Keys
from phg2st_sc._docs import inject_docs
from phg2st_sc._errors import SmoothedTargetWarning
from phg2st_sc._utils import as_dense, get_table
from phg2st_sc._validate import check_choice, check_nonempty, check_unique_names, get_matrix, get_prompt_mask

if TYPE_CHECKING:
    from spatialdata import SpatialData

SPOTS = ("heldout", "all")


def gene_metrics(truth: np.ndarray, pred: np.ndarray) -> pd.DataFrame:
    """PCC, CCC and MAE of each gene (column) across spots (rows).

    Definitions, with population moments over the spots of one section:

    - PCC: ``cov(p, t) / (sd(p) sd(t))``; 0 when the prediction is constant (it carries no ranking).
    - CCC (Lin): ``2 cov(p, t) / (var(p) + var(t) + (mean(p) - mean(t))^2)``.
    - MAE: ``mean(|p - t|)``.

    A gene whose truth is constant over the spots has no defined correlation; all three metrics are NaN for it
    and ``skipped`` is True, so that the summary averages over the same genes for every metric.

    Parameters
    ----------
    truth
        Measured values, spots x genes: an array or a SciPy sparse matrix (``adata.X``, a layer).
    pred
        Predictions of the same shape (array or sparse).

    Returns
    -------
    One row per gene (column of ``truth``): ``pcc``, ``ccc``, ``mae``, ``skipped``.
    """
    truth = as_dense(truth, what="`truth`")
    pred = as_dense(pred, what="`pred`")
    if truth.shape != pred.shape or truth.ndim != 2:
        raise ValueError(f"`truth` and `pred` must be 2-D arrays of equal shape, got {truth.shape} and {pred.shape}.")
    if truth.shape[0] < 2:
        raise ValueError("At least 2 spots are needed to compute correlations.")
    for name, arr in (("truth", truth), ("pred", pred)):
        if not np.isfinite(arr).all():
            raise ValueError(
                f"`{name}` contains {int((~np.isfinite(arr)).sum())} NaN or infinite values; drop the spots without "
                "measurements or predictions first."
            )
    mt, mp = truth.mean(axis=0), pred.mean(axis=0)
    dt, dp = truth - mt, pred - mp
    vt, vp = (dt**2).mean(axis=0), (dp**2).mean(axis=0)
    cov = (dt * dp).mean(axis=0)
    # Relative tolerance: a column of identical floats can have a tiny non-zero variance from rounding.
    scale_t = np.maximum(np.abs(mt), 1.0) ** 2
    scale_p = np.maximum(np.abs(mp), 1.0) ** 2
    skipped = vt <= 1e-24 * scale_t
    const_pred = vp <= 1e-24 * scale_p
    with np.errstate(divide="ignore", invalid="ignore"):
        pcc = np.where(const_pred, 0.0, cov / np.sqrt(vt * vp))
        ccc = 2 * cov / (vt + vp + (mt - mp) ** 2)
    mae = np.abs(pred - truth).mean(axis=0)
    pcc = np.clip(pcc, -1.0, 1.0)
    for arr in (pcc, ccc, mae):
        arr[skipped] = np.nan
    return pd.DataFrame({"pcc": pcc, "ccc": ccc, "mae": mae, "skipped": skipped})


@dataclass(frozen=True)
class Scores:
    """Result of :func:`score`.

    Attributes
    ----------
    per_gene
        One row per gene: ``pcc``, ``ccc``, ``mae`` and ``skipped`` (truth constant over the scored spots).
    summary
        Means over the genes that were not skipped, the counts of genes and spots, what was scored, and
        ``targets_smoothed`` with a ``note`` when the truth was 3x3-smoothed.
    """

    per_gene: pd.DataFrame
    summary: pd.Series

    def __repr__(self) -> str:
        s = self.summary
        text = (
            f"Scores({s['layer']} vs {s['truth_layer']}, {s['spots']} spots (n={s['n_spots']}), "
            f"{s['n_genes']} genes scored, {s['n_genes_skipped']} skipped: "
            f"PCC {s['pcc']:.3f}, CCC {s['ccc']:.3f}, MAE {s['mae']:.3f}"
        )
        flags = [w for w in ("targets", "inputs") if s.get(f"{w}_smoothed")]
        return text + (f", {' and '.join(flags)} SMOOTHED)" if flags else ")")


def is_smoothed(adata: AnnData, layer: str | None) -> bool:
    """Whether ``layer`` (``None``: ``.X``) was written by :func:`phg2st_sc.pp.smooth`."""
    params = adata.uns.get(Keys.SMOOTH_UNS, {}).get("params", {})
    return params.get("layer_added") == ("X" if layer is None else layer)


SMOOTH_NOTE = (
    "3x3 smoothing mixes neighbouring spots: a held-out spot's smoothed target includes its prompt neighbours' "
    "measured values, and a smoothed prompt includes its held-out neighbours' values; both flatter spatial "
    "interpolation; report unsmoothed targets and inputs beside these"
)


def prompt_fingerprint(mask: np.ndarray) -> str:
    """A short hash of a prompt mask, stored with predictions so that scores can check they still match."""
    import hashlib

    return hashlib.sha256(np.packbits(np.asarray(mask, dtype=bool)).tobytes()).hexdigest()[:16]


@inject_docs
def score(
    adata: AnnData | SpatialData,
    *,
    layer: str,
    truth_layer: str | None = None,
    prompt_key: str = Keys.PROMPT,
    spots: Literal["heldout", "all"] = "heldout",
    table_key: str | None = None,
) -> Scores:
    """Score a prediction layer against the measured expression, gene by gene.

    Metrics follow the evaluation protocol of the PHG2ST benchmark (per gene across the spots of a section, then
    averaged over genes): see :func:`gene_metrics` for the definitions. Genes constant in the truth are skipped and
    counted. By default only held-out spots are scored: prompt spots carry their own measured values and would
    inflate every method alike.

    Parameters
    ----------
    {adata} Not modified.
    layer
        Layer with the predictions.
    truth_layer
        Layer with the measured values; ``None`` uses ``.X``. If it, or the layer the predictions were made from,
        was produced by :func:`phg2st_sc.pp.smooth`, the summary says so (``targets_smoothed``,
        ``inputs_smoothed``) and a :class:`~phg2st_sc.SmoothedTargetWarning` is issued. Predictions made from
        other prompts than the current ``obs[prompt_key]`` are refused.
    prompt_key
        Boolean ``obs`` column marking the prompt spots.
    spots
        ``"heldout"`` (spots not in ``prompt_key``) or ``"all"`` (as the official PHG2ST code scores). Spots
        without any measurement (all ``NaN``, e.g. from :func:`phg2st_sc.pp.virtual_spots`) are never scored.
    {table_key}

    Returns
    -------
    :class:`Scores` with ``per_gene`` (indexed by gene) and ``summary``.

    Examples
    --------
    >>> s = phg2st.tl.score(adata, layer="baseline_idw")  # doctest: +SKIP
    >>> s.summary[["pcc", "ccc", "mae"]]  # doctest: +SKIP
    """
    adata = get_table(adata, table_key)
    check_nonempty(adata)
    check_unique_names(adata)
    check_choice(spots, "spots", SPOTS)
    if layer not in adata.layers:
        raise KeyError(f"No layer {layer!r} with predictions in `adata.layers` (it has {list(adata.layers)}).")
    pred = get_matrix(adata, layer)
    truth = get_matrix(adata, truth_layer, unmeasured_rows=True)
    prompts = get_prompt_mask(adata, prompt_key)
    if spots == "heldout" and prompts.all():
        raise ValueError(
            f"`adata.obs[{prompt_key!r}]` marks every spot as a prompt: no held-out spot is left to score. Redraw the "
            "prompts (`phg2st.tl.select_prompts`) and predict again, or score `spots='all'`."
        )
    made = adata.uns.get(layer, {}).get("params", {}) if isinstance(adata.uns.get(layer), dict) else {}
    if made.get("prompts") and made["prompts"] != prompt_fingerprint(prompts):
        raise ValueError(
            f"`adata.layers[{layer!r}]` was predicted from other prompts than `adata.obs[{prompt_key!r}]` marks now "
            "(the prompts were redrawn afterwards); predict again before scoring, or the old prompts would be "
            "scored as held-out spots with their measured values."
        )
    inputs_smoothed = "layer" in made and is_smoothed(adata, None if made["layer"] == "X" else made["layer"])
    rows = ~prompts if spots == "heldout" else np.ones(adata.n_obs, dtype=bool)
    rows &= ~np.isnan(truth).all(axis=1)  # spots without measurements (virtual spots) have nothing to score
    if rows.sum() < 2:
        raise ValueError(f"Only {int(rows.sum())} spot(s) to score with `spots={spots!r}`; at least 2 are needed.")
    per_gene = gene_metrics(truth[rows], pred[rows])
    per_gene.index = adata.var_names.copy()
    smoothed = is_smoothed(adata, truth_layer)
    flagged = smoothed or inputs_smoothed
    scored = ~per_gene["skipped"].to_numpy()
    summary = pd.Series(
        {
            "pcc": float(per_gene["pcc"][scored].mean()) if scored.any() else np.nan,
            "ccc": float(per_gene["ccc"][scored].mean()) if scored.any() else np.nan,
            "mae": float(per_gene["mae"][scored].mean()) if scored.any() else np.nan,
            "n_genes": int(scored.sum()),
            "n_genes_skipped": int((~scored).sum()),
            "n_spots": int(rows.sum()),
            "spots": spots,
            "layer": layer,
            "truth_layer": "X" if truth_layer is None else truth_layer,
            "targets_smoothed": smoothed,
            "inputs_smoothed": inputs_smoothed,
            "note": SMOOTH_NOTE if flagged else "",
        },
        dtype=object,
    )
    if flagged:
        what = " and ".join(w for w, f in (("targets", smoothed), ("inputs", inputs_smoothed)) if f)
        warnings.warn(f"Scoring with smoothed {what}: {SMOOTH_NOTE}.", SmoothedTargetWarning, stacklevel=2)
    return Scores(per_gene=per_gene, summary=summary)
