"""The 3x3 array-neighbourhood smoothing of the official PHG2ST code."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from anndata import AnnData
from scipy import sparse

from phg2st_sc._constants import Keys
from phg2st_sc._docs import inject_docs
from phg2st_sc._utils import check_slots, get_table, write_slots
from phg2st_sc._validate import (
    check_nonempty,
    check_positive_int,
    check_unique_names,
    get_array_coordinates,
    get_matrix,
)

if TYPE_CHECKING:
    from spatialdata import SpatialData


def array_neighbourhood(adata: AnnData, radius: int = 1) -> sparse.csr_matrix:
    """Row-normalised operator averaging each spot with the spots within ``radius`` array steps.

    Spot j is a neighbour of spot i when ``|row_i - row_j| <= radius`` and ``|col_i - col_j| <= radius``
    (i included). Built with one hash join per offset, without a loop over spots.
    """
    rc = get_array_coordinates(adata)
    n = len(rc)
    index = pd.MultiIndex.from_arrays([rc[:, 0], rc[:, 1]])
    if not index.is_unique:
        raise ValueError(
            "Several spots share the same (array_row, array_col); smoothing on the array needs one spot per position."
        )
    rows, cols = [], []
    for dr in range(-radius, radius + 1):
        for dc in range(-radius, radius + 1):
            target = pd.MultiIndex.from_arrays([rc[:, 0] + dr, rc[:, 1] + dc])
            j = index.get_indexer(target)
            hit = j >= 0
            rows.append(np.flatnonzero(hit))
            cols.append(j[hit])
    r, c = np.concatenate(rows), np.concatenate(cols)
    w = sparse.csr_matrix((np.ones(len(r)), (r, c)), shape=(n, n))
    deg = np.asarray(w.sum(axis=1)).ravel()
    return sparse.diags(1.0 / deg) @ w


@inject_docs
def smooth(
    adata: AnnData | SpatialData,
    *,
    layer: str | None = None,
    layer_added: str = Keys.SMOOTHED,
    radius: int = 1,
    table_key: str | None = None,
    overwrite: bool = False,
    copy: bool = False,
) -> AnnData | None:
    """Replace each spot's expression with the mean over its array neighbourhood.

    The official PHG2ST code smooths its targets this way after ``normalize_total(1e4)`` and ``log1p``: each
    spot becomes the mean of the spots with ``|Δrow| <= 1`` and ``|Δcol| <= 1`` on the array grid, itself
    included. Note that smoothing mixes neighbouring spots, so a held-out spot's smoothed target contains
    its measured neighbours' values: :func:`phg2st_sc.tl.score` reports when targets are smoothed.

    Parameters
    ----------
    adata
        AnnData with integer ``obs['array_row']`` and ``obs['array_col']`` (legacy ST square grid), or SpatialData
        with ``table_key``.
    layer
        Layer to smooth; ``None`` uses ``.X``.
    layer_added
        Layer to write the smoothed values to.
    radius
        Neighbourhood half-width in array steps (1 gives the 3x3 window).
    {table_key}
    {overwrite}
    {copy}

    Returns
    -------
    {returns_copy}

    ``.layers['{{layer_added}}']``
        Smoothed expression (dense float32).
    ``.uns['phg2st_smooth']['params']``
        ``layer``, ``layer_added`` and ``radius``, so that scores can say their targets were smoothed.

    Examples
    --------
    >>> sc.pp.normalize_total(adata, target_sum=1e4)  # doctest: +SKIP
    >>> sc.pp.log1p(adata)  # doctest: +SKIP
    >>> phg2st.pp.smooth(adata)  # doctest: +SKIP
    """
    adata = get_table(adata, table_key)
    check_nonempty(adata)
    check_unique_names(adata, var=False)
    radius = check_positive_int(radius, "radius")
    if not isinstance(layer_added, str) or not layer_added:
        raise TypeError("`layer_added` must be a non-empty string.")
    slots = {("layers", layer_added): "layer_added", ("uns", Keys.SMOOTH_UNS): None}
    check_slots(adata, slots, overwrite=overwrite, writer="pp.smooth")
    x = get_matrix(adata, layer)
    op = array_neighbourhood(adata, radius)
    smoothed = np.asarray(op @ x, dtype=np.float32)
    params = {"layer": "X" if layer is None else layer, "layer_added": layer_added, "radius": radius}
    writes = {("layers", layer_added): smoothed, ("uns", Keys.SMOOTH_UNS): {"params": params}}
    return write_slots(adata, writes, copy=copy, overwrite=overwrite, names=slots, writer="pp.smooth")
