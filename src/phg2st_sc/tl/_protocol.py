"""Named evaluation protocols and the single-section evaluation harness."""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from copy import deepcopy
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd
from anndata import AnnData
from scipy import sparse

from phg2st_sc._constants import Keys
from phg2st_sc._docs import inject_docs
from phg2st_sc._errors import SmoothedTargetWarning
from phg2st_sc._settings import settings
from phg2st_sc._utils import get_table, keeping_threads, write_slots
from phg2st_sc._validate import (
    check_choice,
    check_counts,
    check_fraction,
    check_nonempty,
    check_seed,
    check_unique_names,
    get_array_coordinates,
)

from ._baselines import METHODS
from ._metrics import SMOOTH_NOTE

if TYPE_CHECKING:
    from spatialdata import SpatialData

    from phg2st_sc._model._model import PHG2ST


@dataclass(frozen=True)
class Protocol:
    """How targets are made and which spots are scored.

    Attributes
    ----------
    name
        Registry name (see :data:`PROTOCOLS`).
    target_sum
        ``sc.pp.normalize_total`` target; ``None`` skips library-size normalisation.
    log1p
        Apply ``sc.pp.log1p`` (natural log) after normalising.
    smooth
        Apply the 3x3 array smoothing of the official code (:func:`phg2st_sc.pp.smooth`) to the expression that
        methods see and that they are scored against.
    prompt_fraction
        Fraction of spots given as prompts.
    spots
        ``"heldout"`` or ``"all"`` spots scored.
    description
        What the protocol is and where it comes from.
    """

    name: str
    target_sum: float | None = 1e4
    log1p: bool = True
    smooth: bool = False
    prompt_fraction: float = 0.1
    spots: Literal["heldout", "all"] = "heldout"
    description: str = ""


#: The named protocols. ``"heldout"`` is the honest default; the others reproduce published settings.
PROTOCOLS: dict[str, Protocol] = {
    p.name: p
    for p in (
        Protocol(
            "heldout",
            description="normalize_total(1e4) + log1p, unsmoothed targets, 10% random prompts, held-out spots scored",
        ),
        Protocol(
            "heldout_smoothed",
            smooth=True,
            description="as 'heldout' but with the official code's 3x3 smoothing of inputs and targets",
        ),
        Protocol(
            "official",
            smooth=True,
            spots="all",
            description="as the official PHG2ST code scores: 3x3-smoothed targets, all spots (prompts included)",
        ),
        Protocol(
            "paper",
            target_sum=1e6,
            description="normalisation as the paper states it (counts per million, natural log), unsmoothed, held-out spots",
        ),
    )
}


def get_protocol(protocol: str | Protocol | PHG2ST) -> Protocol:
    """Return a :class:`Protocol` from its name (or itself, or the one a trained model recorded).

    Parameters
    ----------
    protocol
        A name from :data:`PROTOCOLS`, a :class:`Protocol`, or a :class:`~phg2st_sc.PHG2ST` model trained on
        targets of :func:`prepare_targets` (its recorded protocol).

    Returns
    -------
    The protocol.
    """
    if isinstance(protocol, Protocol):
        return protocol
    if type(protocol).__name__ == "PHG2ST":
        return _model_protocol(protocol)
    if protocol not in PROTOCOLS:
        raise ValueError(f"Unknown protocol {protocol!r}; choose one of {list(PROTOCOLS)} or pass a `Protocol`.")
    return PROTOCOLS[protocol]


def _model_protocol(model: PHG2ST) -> Protocol:
    """The protocol a model's training targets were made with, from ``model.info['normalization']``."""
    import dataclasses

    norm = dict(model.info.get("normalization") or {})
    if "protocol" not in norm:
        raise ValueError(
            "This model was trained on expression normalised outside `tl.prepare_targets` (it recorded no protocol): "
            "normalise the data as its training data were, then subset the genes with "
            "`phg2st.pp.select_genes(adata, model.genes)`."
        )
    fields = {f.name for f in dataclasses.fields(Protocol)} - {"name", "description"}
    recipe = {k: v for k, v in norm.items() if k in fields}
    if recipe.get("target_sum") is not None and recipe["target_sum"] < 0:  # recorded as -1: no normalize_total
        recipe["target_sum"] = None
    return Protocol(str(norm["protocol"]), **recipe, description="the protocol recorded by the model")


def model_input(adata: AnnData, model: PHG2ST) -> AnnData:
    """A new AnnData of one section as ``model`` expects it (what ``phg2st impute`` does before imputing).

    Raw counts are prepared with the model's recorded protocol and genes (:func:`prepare_targets` with the model);
    a section already prepared (``uns['phg2st_targets']``), or any section for a model of the user's own
    normalisation, is only restricted to the model's genes. :func:`~phg2st_sc.tl.impute` then checks the result
    against the model, so a section prepared another way fails there, with the fix.
    """
    from phg2st_sc.pp import select_genes

    if "protocol" in model.info.get("normalization", {}) and Keys.TARGETS_UNS not in adata.uns:
        return prepare_targets(adata, model)
    return select_genes(adata, model.genes, copy=True)


def _check_counts(adata: AnnData) -> None:
    check_counts(
        adata.X,
        "adata.X",
        fix="The protocol normalises them itself: put the counts in `.X` (e.g. `adata.X = adata.layers['counts']`).",
    )


@inject_docs
def prepare_targets(
    adata: AnnData | SpatialData,
    protocol: str | Protocol | PHG2ST,
    *,
    panel: str | Sequence[str] | None = None,
    table_key: str | None = None,
) -> AnnData:
    """Return a new AnnData whose ``.X`` holds the protocol's targets, made from raw counts.

    Parameters
    ----------
    adata
        One section with raw counts in ``.X`` (AnnData, or SpatialData with ``table_key``): finite, non-negative
        integers of any numeric dtype (``uint8`` and other integer types are converted to ``float32`` before any
        arithmetic, so they cannot overflow), unique spot and gene names. Not modified.
    protocol
        Protocol name or object, or a trained :class:`~phg2st_sc.PHG2ST`: its training targets' protocol, and its
        genes as the default ``panel`` (the input :func:`impute` expects: ``tl.prepare_targets(adata, model)``).
    panel
        Gene panel (see :func:`phg2st_sc.pp.select_genes`); ``None`` keeps all genes (a model's genes when
        ``protocol`` is a model). Its genes must all be in the data (checked before any work).
    {table_key}

    Returns
    -------
    A new AnnData with ``.obs``, ``.obsm``, ``.obsp`` and ``.uns`` of the input (embeddings and hypergraphs
    carry over) and, in ``.X``, the panel's genes
    normalised as the protocol says (library sizes over all genes, then the panel), smoothed if it says so
    (``uns['phg2st_smooth']`` is then set); ``uns['phg2st_targets']['params']`` records the protocol and panel,
    so that a model trained on these targets can check what it is applied to.
    """
    import scanpy as sc

    from phg2st_sc.pp import select_genes, smooth
    from phg2st_sc.pp._genes import resolve_panel

    adata = get_table(adata, table_key)
    model_panel = None
    if type(protocol).__name__ == "PHG2ST":
        model_panel = protocol.info.get("normalization", {}).get("panel")
        panel = list(protocol.genes) if panel is None else panel
    protocol = get_protocol(protocol)
    check_nonempty(adata)
    check_unique_names(adata)
    _check_counts(adata)
    if protocol.smooth:
        get_array_coordinates(adata)
    if panel is not None and panel != "top_expressed":
        resolve_panel(adata, panel)  # absent genes fail here, before normalising
    panel_name = panel
    if panel == "top_expressed":  # ranked on raw counts, as the rule says, before any normalisation
        from phg2st_sc.pp import top_expressed_genes

        panel = top_expressed_genes(adata, n_top=1000)
    # Library sizes come from every measured gene, before the panel is taken (scanpy practice; it also makes a
    # gene's target independent of which other genes are in the panel).
    work = AnnData(
        # copies, always: normalize_total and log1p work in place, and the user's counts must stay as they are
        X=sparse.csr_matrix(adata.X, dtype=np.float32, copy=True)
        if sparse.issparse(adata.X)
        else np.array(adata.X, dtype=np.float32, copy=True),
        obs=adata.obs.copy(),
        var=adata.var.copy(),
        # the user's embeddings and graphs, not yet copies: normalising reads X only, and each is copied once below
        # (by the panel's subset, or here), not twice (a large slide's features are gigabytes)
        obsm=dict(adata.obsm),
        obsp=dict(adata.obsp),
        uns=deepcopy(dict(adata.uns)),
    )
    with keeping_threads():  # scanpy's numba kernels would change torch's thread count
        if protocol.target_sum is not None:
            sc.pp.normalize_total(work, target_sum=protocol.target_sum)
        if protocol.log1p:
            sc.pp.log1p(work)
    if panel is not None:
        work = select_genes(work, panel, copy=True)
    else:
        for slot in (work.obsm, work.obsp):
            for k in list(slot):
                slot[k] = slot[k].copy()
    if protocol.smooth:
        smooth(work, layer_added=Keys.SMOOTHED)
        work.X = work.layers.pop(Keys.SMOOTHED)
        work.uns[Keys.SMOOTH_UNS]["params"]["layer_added"] = "X"
    params = {k: v for k, v in asdict(protocol).items() if k not in ("description",)}
    params["target_sum"] = -1.0 if params["target_sum"] is None else float(params["target_sum"])
    params["panel"] = "all" if panel_name is None else (panel_name if isinstance(panel_name, str) else "custom")
    if model_panel is not None and not isinstance(panel_name, str):  # the model's genes: record its panel's name
        params["panel"] = str(model_panel)
    params["protocol"] = params.pop("name")
    write_slots(work, {("uns", Keys.TARGETS_UNS): {"params": params}}, copy=False, writer="tl.prepare_targets")
    return work


@inject_docs
def evaluate(
    adata: AnnData | SpatialData,
    *,
    methods: Sequence[str] = ("mean", "idw", "gp"),
    protocol: str | Protocol = "heldout",
    panel: str | Sequence[str] | None = None,
    seeds: Sequence[int] = (0, 1, 2),
    use_rep: str | None = None,
    method_kwargs: Mapping[str, Mapping[str, Any]] | None = None,
    table_key: str | None = None,
) -> pd.DataFrame:
    """Evaluate baselines on one section under a named protocol.

    For each seed, prompts are drawn (:func:`select_prompts`), every method fills the held-out spots
    (:func:`baseline`) and the result is scored (:func:`score`). Targets are made from the raw counts in ``.X``
    as the protocol says; the input object is never modified.

    Parameters
    ----------
    adata
        One section with raw counts in ``.X`` (AnnData, or SpatialData with ``table_key``).
    methods
        Baseline methods (see :func:`baseline`). Image methods need ``use_rep``.
    protocol
        A name from :data:`PROTOCOLS` or a :class:`Protocol`.
    panel
        Gene panel (see :func:`phg2st_sc.pp.select_genes`); ``None`` keeps all genes.
    seeds
        Prompt draws; results are reported per seed.
    use_rep
        ``obsm`` key with image features for the image methods.
    method_kwargs
        Extra arguments per method, e.g. ``{{"idw": {{"k": 8}}}}``.
    {table_key}

    Returns
    -------
    A tidy table, one row per method and seed: ``section``, ``method``, ``seed``, ``protocol``, ``pcc``,
    ``ccc``, ``mae``, ``n_genes``, ``n_genes_skipped``, ``n_spots``, ``targets_smoothed``, ``note``.

    Examples
    --------
    >>> table = phg2st.tl.evaluate(adata, methods=["mean", "idw"], panel="her2st_785")  # doctest: +SKIP
    >>> table.groupby("method")[["pcc", "ccc", "mae"]].mean()  # doctest: +SKIP
    """
    adata = get_table(adata, table_key)
    proto = get_protocol(protocol)
    check_fraction(proto.prompt_fraction, "protocol.prompt_fraction")
    check_choice(proto.spots, "protocol.spots", ("heldout", "all"))
    methods = list(methods)
    if not methods:
        raise ValueError("`methods` is empty.")
    for m in methods:
        check_choice(m, "methods", METHODS)
    seeds = [check_seed(s, "seeds") for s in seeds]
    if not seeds:
        raise ValueError("`seeds` is empty.")
    method_kwargs = dict(method_kwargs or {})
    unknown = set(method_kwargs) - set(methods)
    if unknown:
        raise ValueError(f"`method_kwargs` names methods that are not run: {sorted(unknown)}.")

    from tqdm.auto import tqdm

    from ._evaluation import baseline_predictor, evaluate_methods

    work = prepare_targets(adata, proto, panel=panel)
    section = str(work.obs[Keys.SECTION].iloc[0]) if Keys.SECTION in work.obs else ""
    predictors = {m: baseline_predictor({"method": m, **method_kwargs.get(m, {})}, use_rep) for m in methods}
    bar = tqdm(total=len(seeds) * len(methods), desc=f"evaluate {section}", disable=not settings.progress, leave=False)

    def advance(seed: int, method: str) -> None:
        bar.set_postfix(seed=seed, method=method)
        bar.update()

    rows, _ = evaluate_methods(work, predictors, seeds=seeds, fraction=proto.prompt_fraction, spots=[proto.spots],
                               base={"section": section, "protocol": proto.name}, progress=advance)  # fmt: skip
    bar.close()
    columns = ["section", "method", "seed", "protocol", "pcc", "ccc", "mae", "n_genes", "n_genes_skipped", "n_spots",
               "targets_smoothed", "note"]  # fmt: skip
    if proto.smooth:
        warnings.warn(f"Protocol {proto.name!r}: {SMOOTH_NOTE}.", SmoothedTargetWarning, stacklevel=2)
    table = pd.DataFrame(rows)[columns]
    table.attrs["protocol"] = asdict(proto)
    return table
