"""Gene panels: the published benchmark lists and the top-expressed rule of the official code."""

from __future__ import annotations

from collections.abc import Sequence
from copy import deepcopy
from importlib.resources import files
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from anndata import AnnData
from scipy import sparse

from phg2st_sc._constants import Keys
from phg2st_sc._docs import inject_docs
from phg2st_sc._utils import get_table, write_slots
from phg2st_sc._validate import check_counts, check_nonempty, check_positive_int, check_unique_names

if TYPE_CHECKING:
    from spatialdata import SpatialData

#: Panels shipped with the package: Hist2ST's ``her_hvg_cut_1000`` (785 genes, HER2+) and
#: ``skin_hvg_cut_1000`` (171 genes, cSCC), the gene sets of the PHG2ST paper's tables.
PANELS: dict[str, str] = {"her2st_785": "her2st_785.txt", "cscc_171": "cscc_171.txt"}


def panel_genes(name: str) -> list[str]:
    """Return the gene symbols of a named benchmark panel, in their published order.

    Parameters
    ----------
    name
        ``"her2st_785"`` (HER2+ breast cancer, 785 genes) or ``"cscc_171"`` (cSCC, 171 genes).

    Returns
    -------
    Gene symbols.
    """
    if name not in PANELS:
        raise ValueError(f"Unknown gene panel {name!r}; choose one of {list(PANELS)}, 'top_expressed', or a list.")
    text = files("phg2st_sc").joinpath("_data", "genes", PANELS[name]).read_text()
    return [g.strip() for g in text.splitlines() if g.strip()]


def top_expressed_genes(
    adatas: AnnData | Sequence[AnnData],
    *,
    n_top: int = 1000,
    min_fraction: float = 0.1,
    layer: str | None = None,
) -> list[str]:
    """Rank genes shared by all sections by total counts, keeping those detected in enough spots.

    This is the gene rule of the official PHG2ST code: genes present in every section, detected (count > 0) in
    at least ``min_fraction`` of all spots, ordered by their total count over all spots; the first ``n_top``.

    Parameters
    ----------
    adatas
        One section or several, with raw counts: finite, non-negative integers of any numeric dtype (``uint8``
        and other integer types are summed without overflow), unique gene names.
    n_top
        How many genes to return (fewer if fewer qualify).
    min_fraction
        Minimum fraction of spots, pooled over the sections, in which a gene is detected.
    layer
        Layer with the counts; ``None`` uses ``.X``.

    Returns
    -------
    Gene names, most expressed first.
    """
    adatas = [adatas] if isinstance(adatas, AnnData) else list(adatas)
    if not adatas:
        raise ValueError("`adatas` is empty.")
    n_top = check_positive_int(n_top, "n_top")
    if not 0 <= min_fraction <= 1:
        raise ValueError(f"`min_fraction` must be in [0, 1], got {min_fraction}.")
    for i, a in enumerate(adatas):
        if not isinstance(a, AnnData):
            raise TypeError(f"`adatas` must be AnnData objects; item {i} is a {type(a).__name__}.")
        check_unique_names(a, obs=False)
        if layer is not None and layer not in a.layers:
            raise KeyError(f"No layer {layer!r} with counts in `adata.layers` (it has {list(a.layers)}).")
        where = "adata.X" if layer is None else f"adata.layers[{layer!r}]"
        check_counts(
            a.X if layer is None else a.layers[layer],
            where if len(adatas) == 1 else f"{where} of section {i}",
            fix="The rule ranks raw counts: name their layer with `layer=`.",
        )
    shared = adatas[0].var_names
    for a in adatas[1:]:
        shared = shared.intersection(a.var_names, sort=False)
    if len(shared) == 0:
        raise ValueError("The sections share no gene.")
    total = np.zeros(len(shared))
    detected = np.zeros(len(shared))
    n_spots = 0
    for a in adatas:
        x = a[:, shared].X if layer is None else a[:, shared].layers[layer]
        x = sparse.csr_matrix(x, dtype=np.float64)
        total += np.asarray(x.sum(axis=0)).ravel()
        detected += np.asarray((x > 0).sum(axis=0)).ravel()
        n_spots += a.n_obs
    ok = detected >= min_fraction * n_spots
    order = np.argsort(-total, kind="stable")
    return [shared[i] for i in order if ok[i]][:n_top]


def resolve_panel(
    adata: AnnData,
    panel: str | Sequence[str],
    *,
    n_top: int = 1000,
    min_fraction: float = 0.1,
    fill_missing: bool = False,
) -> tuple[str, list[str], pd.Index]:
    """The panel's name, its genes, and those of its genes absent from ``adata``.

    Fails on duplicated gene names and (unless ``fill_missing``) on absent genes; ``adata`` is not modified.
    """
    check_unique_names(adata, obs=False)
    if isinstance(panel, str):
        name = panel
        genes = (
            top_expressed_genes(adata, n_top=n_top, min_fraction=min_fraction)
            if panel == "top_expressed"
            else panel_genes(panel)
        )
    else:
        name = "custom"
        genes = [str(g) for g in panel]
        if not genes:
            raise ValueError("`panel` is an empty list.")
    if len(set(genes)) != len(genes):
        raise ValueError("The panel lists some genes twice.")
    missing = pd.Index(genes).difference(adata.var_names)
    if len(missing) and not fill_missing:
        raise ValueError(
            f"{len(missing)} of the {len(genes)} genes of panel {name!r} are absent from the data "
            f"(e.g. {missing[:5].tolist()}). Pass `fill_missing=True, copy=True` to add them as zeros, or use "
            "another panel."
        )
    return name, genes, missing


@inject_docs
def select_genes(
    adata: AnnData | SpatialData,
    panel: str | Sequence[str],
    *,
    n_top: int = 1000,
    min_fraction: float = 0.1,
    fill_missing: bool = False,
    table_key: str | None = None,
    copy: bool = False,
) -> AnnData | None:
    """Restrict the data to a gene panel, in the panel's order.

    Parameters
    ----------
    {adata}
    panel
        ``"her2st_785"`` or ``"cscc_171"`` (the paper's panels), ``"top_expressed"`` (the official code's rule,
        see :func:`top_expressed_genes`, computed on this object), or a list of gene names.
    n_top, min_fraction
        Parameters of ``"top_expressed"``.
    fill_missing
        Add panel genes absent from the data as all-zero columns (needs ``copy=True``, since it changes
        the gene axis). By default absent genes are an error.
    {table_key}
    copy
        Return a subset copy instead of subsetting in place.

    Returns
    -------
    ``None``, or the new AnnData with ``copy=True``. The gene axis is subset and reordered, and

    ``.uns['phg2st_genes']['params']``
        Panel name, number of genes and of genes filled with zeros.

    Examples
    --------
    >>> phg2st.pp.select_genes(adata, "her2st_785")  # doctest: +SKIP
    """
    adata = get_table(adata, table_key)
    check_nonempty(adata)
    name, genes, missing = resolve_panel(
        adata, panel, n_top=n_top, min_fraction=min_fraction, fill_missing=fill_missing
    )
    if len(missing) and not copy:
        raise ValueError(
            "Adding absent genes as zeros changes the gene axis: pass `copy=True` with `fill_missing=True`."
        )
    params = {"panel": name, "n_genes": len(genes), "n_filled_with_zeros": len(missing)}

    if not len(missing):
        idx = adata.var_names.get_indexer(genes)
        if copy:
            out = adata[:, idx].copy()
            write_slots(out, {("uns", Keys.GENES_UNS): {"params": params}}, copy=False, writer="pp.select_genes")
            return out
        before = {key: (key in adata.uns, adata.uns.get(key)) for key in (Keys.GENES_UNS, Keys.WRITTEN_UNS)}
        write_slots(adata, {("uns", Keys.GENES_UNS): {"params": params}}, copy=False, writer="pp.select_genes")
        try:
            adata._inplace_subset_var(idx)  # last: the record is undone if the subset fails
        except BaseException:
            for key, (had, old) in before.items():
                if had:
                    adata.uns[key] = old
                else:
                    adata.uns.pop(key, None)
            raise
        return None
    return _with_zero_genes(adata, genes, params)


def _with_zero_genes(adata: AnnData, genes: list[str], params: dict) -> AnnData:
    present = [g for g in genes if g in adata.var_names]
    sub = adata[:, present]
    col = pd.Index(present).get_indexer(genes)  # -1 where absent
    n = adata.n_obs

    def expand(m):
        m = sparse.csr_matrix(m) if not sparse.issparse(m) else m.tocsr()
        pick = sparse.csr_matrix((np.ones((col >= 0).sum()), (col[col >= 0], np.flatnonzero(col >= 0))),
                                 shape=(len(present), len(genes)))  # fmt: skip
        out = (m @ pick).astype(m.dtype)
        return out if sparse.issparse(adata.X) else out.toarray()

    var = pd.DataFrame(index=pd.Index(genes, dtype=str))
    out = AnnData(
        X=expand(sub.X) if sub.X is not None else sparse.csr_matrix((n, len(genes))),
        obs=adata.obs.copy(),
        var=var,
        obsm={k: v.copy() for k, v in adata.obsm.items()},
        obsp={k: v.copy() for k, v in adata.obsp.items()},
        uns=deepcopy(dict(adata.uns)),
        layers={k: expand(v) for k, v in sub.layers.items()},
    )
    write_slots(out, {("uns", Keys.GENES_UNS): {"params": params}}, copy=False, writer="pp.select_genes")
    return out
