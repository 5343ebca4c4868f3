"""The PHG2ST spot hypergraph (paper, eq. 2) and the neighbour-tile sub-hypergraphs, vectorised.

Combined distance of spots i and j::

    I(i, j) = Norm_f(||f_i - f_j||) + Norm_p(||p_i - p_j||)

with ``Norm_x(d) = d / s_x`` and ``s_x`` the mean distance from a spot to its k-th nearest neighbour in that
space (features f, positions p). The paper does not define Norm; this choice makes one "typical neighbour
step" in feature space weigh as much as one in space, whatever the units, the tissue size or the feature
dimension (a min-max scaling by the largest pairwise distance would let the tissue's size set the balance).
``s_p`` is exact; ``s_f`` is the mean over a fixed random sample of spots (exact kNN against all spots), drawn
from the spots in a canonical order (by position, then features) so that the order of the spots does not change
the hypergraph: permuting the spots permutes the result.

Each spot j's hyperedge is j and its k nearest spots under I (the official code instead adds the single most
dissimilar spot, which the paper does not describe; it is not reproduced). The search is exact without an
n x n matrix: candidates are the spatially nearest spots, and a spot whose k-th best combined distance exceeds
``r_c / s_p`` (r_c: distance to its farthest candidate, a lower bound on I for every non-candidate) is searched
again with twice as many candidates, until none is left. Candidate distances come from float32 dot products (BLAS);
those that rounding could move into a spot's k nearest are recomputed exactly, so that the hyperedges and the
stored distances are those of an exact search (identical features are at distance 0).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from anndata import AnnData
from scipy import sparse
from scipy.spatial import cKDTree

from phg2st_sc._constants import Keys
from phg2st_sc._docs import inject_docs
from phg2st_sc._utils import check_slots, get_table, morton_order, write_slots
from phg2st_sc._validate import (
    check_nonempty,
    check_positive_int,
    check_seed,
    check_unique_names,
    get_coordinates,
    get_representation,
)

if TYPE_CHECKING:
    from spatialdata import SpatialData

CHUNK = 2048  # spots per block of tile sub-hypergraphs (bounds memory at CHUNK * grid^2 * d)
BLOCK = 64  # spots per block of candidate distances (a compact patch)
SCALE_SAMPLE = 512


def _sq_norms(x: np.ndarray) -> np.ndarray:
    return np.einsum("nd,nd->n", x, x)


def _canonical_order(f: np.ndarray, p: np.ndarray) -> np.ndarray:
    """The spots sorted by position, ties (spots at one position) by their features.

    The same spots given in any order give the same sequence of spots.
    """
    order = np.lexsort((p[:, 1], p[:, 0]))
    sorted_p = p[order]
    if (sorted_p[1:] == sorted_p[:-1]).all(axis=1).any():
        order = np.lexsort((*f.T[::-1], p[:, 1], p[:, 0]))
    return order


def _feature_scale(
    f: np.ndarray, k: int, rng: np.random.Generator, canonical: np.ndarray | None, norms: np.ndarray
) -> float:
    """Mean distance to the k-th nearest neighbour in feature space, over a sample of query spots.

    The sample is drawn from the spots in ``canonical`` order, so that it holds the same spots whatever their order;
    ``norms`` are the squared norms of ``f``'s rows.
    """
    n = len(f)
    q = canonical[rng.choice(n, size=SCALE_SAMPLE, replace=False)] if n > SCALE_SAMPLE else np.arange(n)
    fq = f[q]
    kth = np.empty(len(q))
    for s in range(0, len(q), 256):
        block = fq[s : s + 256]
        d2 = _sq_norms(block)[:, None] + norms[None, :] - 2.0 * block @ f.T
        d2[np.arange(len(block)), q[s : s + 256]] = np.inf  # exclude self
        kth[s : s + 256] = np.sqrt(np.maximum(np.partition(d2, k - 1, axis=1)[:, k - 1], 0.0))
    scale = float(kth.mean())
    return scale if scale > 0 else 1.0


def _candidate_distances(
    f: np.ndarray, sq: np.ndarray, p: np.ndarray, rows: np.ndarray, cand: np.ndarray, sf: float, sp: float
) -> np.ndarray:
    """Combined distances I(rows[i], cand[i, c]).

    Rows are taken along a Z-order curve, in blocks of ``BLOCK``: a block is a compact patch whose candidates are
    mostly shared, so its feature dot products come from one small matrix product with the union of its
    candidates (BLAS; about 3x the needed products at 32 candidates) instead of a gather of ``len(rows) * c``
    feature vectors. Memory is bounded by the block, not by n.
    """
    out = np.empty(cand.shape, dtype=np.float64)
    unit = float(np.median(np.linalg.norm(p[cand[:, min(1, cand.shape[1] - 1)]] - p[rows], axis=1))) or 1.0
    order = morton_order(p[rows], unit)
    for s in range(0, len(rows), BLOCK):
        sel = order[s : s + BLOCK]
        r, c = rows[sel], cand[sel]
        union, pos = np.unique(c, return_inverse=True)
        dots = f[r] @ f[union].T  # (block, |union|)
        dots = np.take_along_axis(dots, pos.reshape(c.shape), axis=1)
        df = np.sqrt(np.maximum(sq[r][:, None] + sq[c] - 2.0 * dots, 0.0))
        dp = np.linalg.norm(p[c] - p[r][:, None, :], axis=-1)
        out[sel] = df / sf + dp / sp
    return out


def _refine(raw: np.ndarray, sq: np.ndarray, p: np.ndarray, rows: np.ndarray, cand: np.ndarray, comb: np.ndarray,
            k: int, sf: float, sp: float) -> np.ndarray:  # fmt: skip
    """Recompute exactly the candidate distances that float32 rounding could move into a row's k nearest.

    ``comb`` comes back with exact distances (feature differences, summed in float64) at every candidate that the
    float32 dot-product distances cannot rule out. The squared feature distance ``|f_i|^2 + |f_j|^2 - 2 f_i.f_j``
    in float32 is off by at most ``e = (d + 2) eps32 (|f_i|^2 + |f_j|^2)``, so the distance by at most ``sqrt(e)``
    (large relative to very close pairs: identical features get a distance of about ``3e-4 |f|``). A candidate
    further than twice that bound beyond a row's k-th smallest value cannot be among its k nearest; the others are
    recomputed exactly.
    """
    d = raw.shape[1]
    gamma = (d + 2) * float(np.finfo(np.float32).eps)
    slack = 2.0 * np.sqrt(gamma * (sq[rows] + sq[cand].max(axis=1))) / sf
    kth = np.partition(comb, k - 1, axis=1)[:, k - 1]
    hit_r, hit_c = np.nonzero(comb <= (kth + slack + 1e-9 * kth)[:, None])
    out = comb.copy()
    step = max(1, 2**22 // max(d, 1))  # pairs per chunk: at most 4M feature differences (16 MB)
    for s in range(0, len(hit_r), step):
        i, j = hit_r[s : s + step], hit_c[s : s + step]
        a, b = rows[i], cand[i, j]
        diff = raw[a] - raw[b]  # exact for close values (Sterbenz), else within float32 rounding of the difference
        df = np.sqrt(np.einsum("nd,nd->n", diff, diff, dtype=np.float64))
        out[i, j] = df / sf + np.linalg.norm(p[b] - p[a], axis=1) / sp
    return out


def spot_hyperedges(
    features: np.ndarray, coords: np.ndarray, k: int, *, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, dict[str, float]]:
    """The k nearest spots of every spot under the combined distance I (exact).

    Returns
    -------
    ``members`` (n, k) int, ``dist`` (n, k) the combined distances (ascending), and the two scales.
    """
    raw = np.asarray(features, dtype=np.float32)
    f = np.ascontiguousarray(raw - raw.mean(axis=0))  # centring keeps dot-product distances precise in float32
    sq = _sq_norms(f).astype(np.float64)
    p = np.asarray(coords, dtype=np.float64)
    n = len(f)
    if n < k + 1:
        raise ValueError(f"A hypergraph with k={k} needs more than {k} spots, got {n}.")
    tree = cKDTree(p)
    dk, _ = tree.query(p, k=k + 1)
    sp = float(dk[:, k].mean()) or 1.0
    canonical = _canonical_order(raw, p) if n > SCALE_SAMPLE else None
    sf = _feature_scale(f, k, np.random.default_rng(seed), canonical, sq)

    members = np.empty((n, k), dtype=np.int64)
    dist = np.empty((n, k), dtype=np.float64)
    todo = np.arange(n)
    c = min(n, max(8 * k, 32))
    rounds = 0
    while len(todo):
        rounds += 1
        rc, cand = tree.query(p[todo], k=c)
        cand = cand.reshape(len(todo), c)
        rc = rc.reshape(len(todo), c)
        comb = _candidate_distances(f, sq, p, todo, cand, sf, sp)
        comb[cand == todo[:, None]] = np.inf  # a spot is not its own neighbour
        comb = _refine(raw, sq, p, todo, cand, comb, k, sf, sp)
        order = np.argsort(comb, axis=1, kind="stable")[:, :k]
        best = np.take_along_axis(comb, order, axis=1)
        exact = (c >= n) | (rc[:, -1] / sp >= best[:, -1])
        done = todo[exact]
        members[done] = np.take_along_axis(cand, order, axis=1)[exact]
        dist[done] = best[exact]
        todo = todo[~exact]
        c = min(n, 2 * c)
    return members, dist, {"feature_scale": sf, "position_scale": sp, "search_rounds": rounds}


def neighbour_hyperedges(tiles: np.ndarray, index: np.ndarray, k: int) -> np.ndarray:
    """Per spot, each tile's k nearest other tiles of the same window by feature distance.

    Parameters
    ----------
    tiles
        (T, d) tile embeddings.
    index
        (n, g) index of each spot's window tiles into ``tiles``; -1 for masked tiles.
    k
        Neighbours per tile.

    Returns
    -------
    (n, g, k) int8 window positions of each tile's neighbours, nearest first; -1 for masked tiles and where a
    window has fewer than k other valid tiles.
    """
    # Spots in one lattice cell share their window (dozens per cell on binned slides): each distinct window once.
    windows, inverse = np.unique(np.asarray(index), axis=0, return_inverse=True)
    return _window_neighbours(tiles, windows, k)[inverse.reshape(-1)]


def _window_neighbours(tiles: np.ndarray, index: np.ndarray, k: int) -> np.ndarray:
    """:func:`neighbour_hyperedges` for windows given once each."""
    n, g = index.shape
    out = np.full((n, g, k), -1, dtype=np.int8)
    kk = min(k, g - 1)
    tiles = np.asarray(tiles, dtype=np.float32)
    for s in range(0, n, CHUNK):
        idx = index[s : s + CHUNK]
        valid = idx >= 0
        emb = tiles[np.where(valid, idx, 0)]  # (b, g, d)
        sq = np.einsum("bgd,bgd->bg", emb, emb)
        d2 = sq[:, :, None] + sq[:, None, :] - 2.0 * np.matmul(emb, emb.transpose(0, 2, 1))
        d2[~valid[:, None, :].repeat(g, axis=1)] = np.inf  # masked targets
        d2[:, np.arange(g), np.arange(g)] = np.inf  # not itself
        nearest = np.argsort(d2, axis=2, kind="stable")[:, :, :kk]
        ok = np.isfinite(np.take_along_axis(d2, nearest, axis=2)) & valid[:, :, None]
        out[s : s + CHUNK, :, :kk] = np.where(ok, nearest, -1).astype(np.int8)
    return out


@inject_docs
def build_hypergraph(
    adata: AnnData | SpatialData,
    *,
    use_rep: str = "X_uni",
    k: int = 4,
    neighbour_k: int | None = None,
    spatial_key: str = Keys.SPATIAL,
    seed: int = 0,
    key_added: str = "phg2st",
    table_key: str | None = None,
    overwrite: bool = False,
    copy: bool = False,
) -> AnnData | None:
    """Build the PHG2ST spot hypergraph and, when neighbour tiles exist, the per-spot tile sub-hypergraphs.

    Spot hypergraph (paper, eq. 2): the hyperedge of spot j holds j and its ``k`` nearest spots under
    ``I(i, j) = ||f_i - f_j|| / s_f + ||p_i - p_j|| / s_p``, with f the image features ``obsm[use_rep]``, p the
    positions and ``s_f``, ``s_p`` the mean distances to the k-th nearest neighbour in each space (the paper's
    Norm, which it leaves undefined). The search is exact and needs no n x n matrix (see the module notes).

    Neighbour sub-hypergraphs: inside each spot's window of tiles (from :func:`embed_tiles`), every tile's
    hyperedge holds the tile and its ``neighbour_k`` nearest valid tiles by feature distance.

    Parameters
    ----------
    {adata}
    use_rep
        ``obsm`` key of the spot features (``embed_tiles``' ``key_added``), of any real dtype (``float16`` is
        upcast to ``float32``). Its neighbour tiles, if stored, are used for the sub-hypergraphs.
    k
        Neighbours per spot hyperedge (the paper uses 4).
    neighbour_k
        Neighbours per tile hyperedge; defaults to ``k``.
    spatial_key
        ``obsm`` key with spot coordinates.
    seed
        Seed of the sample that estimates the feature scale.
    key_added
        Prefix of the written slots.
    {table_key}
    {overwrite}
    {copy}

    Returns
    -------
    {returns_copy}

    ``.obsp['{{key_added}}_incidence']``
        n x n sparse incidence H: column j is the hyperedge of spot j; ``H[j, j] = 1`` and
        ``H[i, j] = exp(-(I(i, j) / τ)^2)`` for its k neighbours i, with τ the mean of I over all neighbour pairs
        (the probabilistic incidence of HGNN). Each column has exactly k + 1 entries.
    ``.obsp['{{key_added}}_distances']``
        n x n sparse, ``I(i, j)`` at the same neighbour positions (the diagonal is not stored).
    ``.obsm['{{key_added}}_neighbour_hyperedges']``
        (n, grid^2, neighbour_k) int8: for each tile of a spot's window, the window positions of its nearest
        tiles (-1 for masked tiles). Written only when ``obsm[use_rep + '_neighbours']`` exists.
    ``.uns['{{key_added}}_hypergraph']['params']``
        ``use_rep``, ``k``, ``neighbour_k``, the two scales, τ and the number of search rounds.

    Examples
    --------
    >>> phg2st.pp.embed_tiles(adata, encoder="efficientnet_lite0")  # doctest: +SKIP
    >>> phg2st.pp.build_hypergraph(adata, use_rep="X_efficientnet_lite0")  # doctest: +SKIP
    """
    table = get_table(adata, table_key)
    check_nonempty(table)
    check_unique_names(table, var=False)
    k = check_positive_int(k, "k")
    neighbour_k = k if neighbour_k is None else check_positive_int(neighbour_k, "neighbour_k")
    if neighbour_k > 127:
        raise ValueError("`neighbour_k` must be below 128.")
    seed = check_seed(seed)
    slots = {("obsp", Keys.incidence(key_added)): "key_added", ("obsp", Keys.distances(key_added)): "key_added",
             ("obsm", Keys.neighbour_hyperedges(key_added)): "key_added", ("uns", Keys.hypergraph(key_added)): "key_added"}  # fmt: skip
    check_slots(table, slots, overwrite=overwrite, writer="pp.build_hypergraph")
    features = get_representation(table, use_rep, dtype=np.float32)
    coords = get_coordinates(table, spatial_key)
    if table.n_obs <= k:
        raise ValueError(f"`k={k}` needs more than {k} spots; the data has {table.n_obs}.")
    index_key = Keys.tile_index(use_rep)
    tiles = None
    if index_key in table.obsm:
        index = np.asarray(table.obsm[index_key])
        stored = table.uns.get(use_rep, {}).get("tile_embeddings") if isinstance(table.uns.get(use_rep), dict) else None
        if stored is None:
            raise KeyError(
                f"`obsm[{index_key!r}]` exists but `uns[{use_rep!r}]['tile_embeddings']` does not; re-run embed_tiles."
            )
        tiles = np.asarray(stored)
        if index.shape[0] != table.n_obs or index.max(initial=-1) >= len(tiles):
            raise ValueError(f"`obsm[{index_key!r}]` does not match the stored tiles; re-run embed_tiles.")

    members, dist, info = spot_hyperedges(features, coords, k, seed=seed)
    n = table.n_obs
    tau = float(dist.mean()) or 1.0
    cols = np.repeat(np.arange(n), k)
    rows = members.ravel()
    weights = np.exp(-((dist.ravel() / tau) ** 2))
    incidence = sparse.csr_matrix(
        (
            np.concatenate([np.ones(n), weights]),
            (np.concatenate([np.arange(n), rows]), np.concatenate([np.arange(n), cols])),
        ),
        shape=(n, n),
    )
    distances = sparse.csr_matrix((dist.ravel(), (rows, cols)), shape=(n, n))
    params: dict[str, Any] = {"use_rep": use_rep, "k": k, "neighbour_k": neighbour_k, "spatial_key": spatial_key,
                              "tau": tau, "seed": seed, **info}  # fmt: skip
    writes: dict[tuple[str, str], Any] = {
        ("obsp", Keys.incidence(key_added)): incidence,
        ("obsp", Keys.distances(key_added)): distances,
    }
    if tiles is not None:
        writes[("obsm", Keys.neighbour_hyperedges(key_added))] = neighbour_hyperedges(tiles, index, neighbour_k)
    writes[("uns", Keys.hypergraph(key_added))] = {"params": params}
    return write_slots(table, writes, copy=copy, overwrite=overwrite, names=slots, writer="pp.build_hypergraph")
