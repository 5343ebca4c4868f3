"""The in-context layer: adapt a network's prediction to a new section through that section's own prompts.

Numpy only (no torch). Eight components:

- *regression kriging*: the network's prediction plus simple kriging of its residuals at the prompts; one
  squared-exponential kernel shared by all genes, its length scale and noise ratio chosen per section by the
  marginal likelihood of the prompts' residuals (amplitude profiled out);
- *the prompt field*: the same kriging of the expression itself (the prompts alone), and *the long prompt field*,
  the same with the length scale at least the prompts' median nearest-neighbour distance;
- *inverse-distance weighting* of the prompts (:func:`~phg2st_sc._utils.inverse_distance` with the IDW baseline's
  defaults: the 6 nearest, weights ``d ** -2``), the normalised local average that kriging at a high noise ratio
  is not;
- *in-section ridge*: ridge regression from the network's latent tokens and the image features to expression,
  fitted on the section's prompts (intercept unpenalised, penalty by cross-validation);
- the network's prediction itself, re-centred on the prompts' mean (a per-gene offset);
- *the genes' shared patterns*: the prompts' standardised expression, and the network's standardised residuals at
  the prompts, each reduced to its :data:`LOW_RANK` leading principal components, those kriged with one kernel of
  their own and mapped back through each gene's loadings (:func:`krige_low_rank`; for the residuals, added to the
  network): a pattern that averages hundreds of genes is kriged from far less counting noise than one gene.

A final non-negative combination, one weight per component shared by all genes, is fitted on the components'
cross-fitted predictions at the prompts, and kept unless its best component clearly beats it there (by more than
twice the standard error over genes of the mean gain; that component is then kept alone; with spread prompts, see
below, only on a clear gain over its best component, else that component if it clearly beats the network, else the
network): the prompts are split into :data:`CV_FOLDS` folds (:func:`prompt_folds`,
the same folds as the network's own cross-fitting, ``PHG2ST._cross_fitted``), each fold predicted by every
component refitted on the other folds. So the weights are chosen by the section's own measured spots and never by
the spots it predicts. Where the prompts are spread (a design: :func:`spread_ratio` above :data:`SPREAD_RATIO`),
the left-out prompts lie much farther from the others than the spots to predict from the prompts, the comparison
under-rates the components that read the prompts, the ridge, which does not, is left out, and the safeguard keeps
the burden of proof on the combination (:func:`_safeguard`). The low-rank components are used only where the prompts are
spread as random ones: where they are clustered (blocks: the ratio below :data:`CLUSTER_RATIO`) the folds compare
the components inside the blocks while the spots lie outside them, and on spread designs they cost smoothed targets
(docs/design.md, the twenty-second round and the mends after it). The kept weights are then multiplied by one scale,
shared by the genes (:func:`lad_scale`, within :data:`SCALE_RANGE`): least squares on cross-fitted predictions,
noisier than those made with every prompt, shrinks towards the prompts' mean, and the scale undoes part of that
(never shrinking further); it moves no gene's correlation.

**Within-fold comparison.** Before the weights are fitted, each fold's predictions and values are centred per gene
on the fold's means. A pass that leaves a fold out has its own per-gene level (the other folds' mean, a refitted
intercept, the network's response to the prompts it sees), and that level moves against the left-out values: on
unsmoothed targets with a few dozen prompts, where every component explains a few percent of the variance, it
decides the weights (her2st C3, 18 prompts: the cross-fitted network scored PCC -0.06 over its prompts against
0.14 at the held-out spots). The spots the layer predicts all share one level (the full fit's), and a per-gene
correlation over them cannot see it; the within-fold comparison measures only what it sees. (Leave-one-out in
closed form has the same flaw with one level per prompt, which no centring removes, and centring on the mean of all
prompts instead leaks each prompt's value into its own prediction.)

With ``n_prompts > EXACT_MAX`` the kriging runs on the ``LOCAL_K`` nearest prompts of each spot (hyperparameters
fitted on a subset; neighbouring spots share one system on the union of theirs), so that no dense matrix over all
prompts is formed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.optimize import nnls
from scipy.spatial import cKDTree

from phg2st_sc._utils import (
    centre_scale,
    fold_splits,
    inverse_distance,
    morton_order,
    spot_pitch,
    standardised,
    varying,
)

EXACT_MAX = 3000  # prompts up to which kriging is exact (a p x p matrix)
LOCAL_K = 64  # prompts per spot for local kriging above that (at least: see LOCAL_GROUP)
LOCAL_GROUP = 32  # neighbouring spots that share one local system, on the union of their nearest prompts
FIT_SUBSET = (
    1000  # prompts the kernels are chosen on, above that many (a random subset: 16 eigendecompositions of its size)
)
LENGTH_SCALES = np.geomspace(0.5, 30.0, 16)  # spot pitches
NOISE_RATIOS = np.geomspace(1e-3, 1e2, 16)  # noise variance / signal variance
RIDGE_ALPHAS = np.geomspace(1e-2, 1e5, 15)
COMPONENTS = ("network", "kriging", "field", "field_long", "idw", "ridge", "field_lowrank", "kriging_lowrank")
LOW_RANK = 3  # shared spatial patterns kriged by the low-rank components (docs/design.md, twenty-first round)
CV_FOLDS = 5  # folds of the prompts for the cross-fitted predictions that choose the weights and the penalty
MIN_PROMPTS = 2 * CV_FOLDS  # below this, the network alone (re-centred on the prompts)
SPOT_INPUTS = ("level",)  # what the spot scale reads beside the kriging variance ("features" too: docs/design.md)
LEVEL = "combination"  # the level it reads: the combination's ("network", "units": benchmarks/results/dev_level/)
SPREAD_RATIO = 1.7  # prompts spread above this (:func:`spread_ratio`): the ridge is left out (docs/design.md)
CLUSTER_RATIO = 0.55  # prompts clustered below this (blocks): the low-rank components are left out (docs/design.md)
# (and above SPREAD_RATIO: the low-rank components only where the prompts are spread as random ones)
LOW_RANK_COMPONENTS = ("field_lowrank", "kriging_lowrank")
# the per-gene kriging whose kernel stands for a component without one of its own, when the spread's kernel is chosen
KERNEL_OF = {"field_lowrank": "field", "kriging_lowrank": "kriging", "idw": "field_long"}
EXACT_SVD_FLOPS = 1e9  # p * genes * min(p, genes) up to which the low-rank patterns come from an exact SVD
SCALE_RANGE = (1.0, 2.0)  # the combination's scale (:func:`lad_scale`) is clipped to this: it only undoes shrinkage
MAX_INFLATION = 3.0  # the combination's spread at the spots over its widest component's, above which it is refitted
SCALE_PRIOR = 2.0  # pseudo-prompts of the typical gene's error variance in each gene's scale (uncertainty)
BLOCK = 65536  # spots assembled at a time above this many (compact patches): no (spots x genes) float64 array
FEATURE_BLOCK = 8192  # spots standardised at a time for the ridge's features, above BLOCK spots


@dataclass
class Spread:
    """A calibrated predictive spread: ``std[i, g] = gene_scale[g] * spot_scale[i]``, and split-conformal scores.

    ``spot_scale`` is the square root of the kriging variance of a new observation at each spot (relative to the
    signal variance; larger far from the prompts when the expression is spatially structured) times a factor read
    from the spot's predicted level (:data:`SPOT_INPUTS`, :func:`_fit_spot_model`: a log-linear model of the
    prompts' error sizes; constant where the level does not predict them); ``gene_scale`` the
    root mean square of each gene's cross-fitted errors at the prompts divided by the spot scale there, shrunk
    towards the median gene by :data:`SCALE_PRIOR` pseudo-prompts. ``scores`` are those normalised errors (p x
    genes with any error at the prompts, pooled for the quantiles).
    """

    gene_scale: np.ndarray  # (genes,)
    spot_scale: np.ndarray  # (n,)
    scores: np.ndarray  # (p, genes)

    def _sorted(self) -> np.ndarray:
        if getattr(self, "_flat", None) is None:  # sorted once: every quantile reads the same pooled scores
            self._flat = np.sort(self.scores.ravel())
        return self._flat

    def std(self) -> np.ndarray:
        """The predictive standard deviation, (n, genes) float32."""
        out = np.empty((len(self.spot_scale), len(self.gene_scale)), dtype=np.float32)
        for s in range(0, len(out), BLOCK):  # formed in float64 a block of spots at a time, as one product would be
            out[s : s + BLOCK] = self.spot_scale[s : s + BLOCK, None] * self.gene_scale[None, :]
        return out

    def quantile(self, coverage: float) -> float:
        """The conformal quantile: the pooled scores' order statistic ``ceil((N + 1) coverage)`` of N.

        The finite-sample correction of split conformal prediction; the largest score where that exceeds N.
        """
        flat = self._sorted()
        k = min(int(np.ceil((flat.size + 1) * coverage)), flat.size) - 1
        return float(flat[max(k, 0)])

    def half_width(self, coverage: float) -> np.ndarray:
        """Half the width of the split-conformal interval of nominal ``coverage``, (n, genes) float32."""
        return (self.quantile(coverage) * self.std()).astype(np.float32)


@dataclass
class InContextFit:
    """What the in-context layer chose on a section (recorded in ``uns``)."""

    weights: dict[str, float]
    length_scale: float  # spot pitches (the median over genes)
    noise_ratio: float  # (the median over genes)
    ridge_alpha: float
    cv_pcc: dict[str, Any] = field(default_factory=dict)  # per component and the combination, within folds
    components: dict[str, np.ndarray] | None = None  # each component's prediction (with ``keep_components``)
    spread: Spread | None = None  # the predictive spread (per spot and gene) and its conformal calibration

    def record(self) -> dict[str, Any]:
        return {"weights": self.weights, "length_scale": self.length_scale, "noise_ratio": self.noise_ratio,
                "ridge_alpha": self.ridge_alpha, "cv_pcc": self.cv_pcc}  # fmt: skip


def _sqdist(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Squared distances between the rows of ``a`` (..., n, d) and ``b`` (..., m, d): (..., n, m); batches broadcast.

    Coordinate by coordinate (positions have two): exact at any distance, without the cancellation of the
    ``|a|^2 + |b|^2 - 2ab`` expansion.
    """
    return sum((a[..., :, None, j] - b[..., None, :, j]) ** 2 for j in range(a.shape[-1]))


def _loglik(xy: np.ndarray, r: np.ndarray) -> np.ndarray:
    """Profiled log marginal likelihood per gene on the grid: (length scales, noise ratios, genes).

    A gene that is constant over the points (all its values equal, zero or not: the values are taken as centred)
    says nothing about the kernel: its likelihood is 0 on the whole grid (with a zero profiled amplitude the
    log-determinant alone would pull a kernel shared by the genes towards the grid's smallest noise ratio, and a
    constant offset towards its longest length scale). Above :func:`_fit_rows`' count the kernel is fitted on a
    subset of the prompts, where a gene can be constant although it varies over all of them.
    """
    p, g = r.shape
    d2 = _sqdist(xy, xy)
    out = np.zeros((len(LENGTH_SCALES), len(NOISE_RATIOS), g))
    live = np.flatnonzero(varying(r))
    r = r[:, live]
    for i, ell in enumerate(LENGTH_SCALES):
        lam, u = np.linalg.eigh(np.exp(-0.5 * d2 / ell**2))
        proj = (u.T @ r) ** 2  # (p, g): each gene's energy per eigen-direction
        for j, eta in enumerate(NOISE_RATIOS):
            ev = np.maximum(lam, 0.0) + eta
            s2 = np.maximum((proj / ev[:, None]).sum(0) / p, 1e-300)  # profiled amplitude per gene
            out[i, j, live] = -0.5 * p * np.log(s2) - 0.5 * float(np.log(ev).sum())
    return out


def fit_kernel(xy: np.ndarray, r: np.ndarray, per_gene: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Length scales (in ``xy`` units) and noise ratios maximising the marginal likelihood of the residuals ``r``.

    ``r`` (p, genes) is centred and scaled per gene; the signal amplitude is profiled out; the search is a grid
    over :data:`LENGTH_SCALES` x :data:`NOISE_RATIOS` (one eigendecomposition per length scale). One kernel for all
    genes (the likelihood summed over genes), or with ``per_gene`` each gene's own. Returns one value per gene.
    """
    return fit_kernels(xy, [r], per_gene)[0]


def fit_kernels(
    xy: np.ndarray, rs: list[np.ndarray], per_gene: bool = False, floors: list[float] | None = None
) -> list[tuple[np.ndarray, np.ndarray]]:
    """:func:`fit_kernel` for several sets of values at the same points, sharing the eigendecompositions.

    ``floors`` gives each set the shortest length scale it may take (0: any of the grid; above the grid's longest,
    the longest).
    """
    ll = _loglik(xy, np.hstack(rs))  # the likelihood of each gene is its own: sets can share one pass
    ends = np.cumsum([r.shape[1] for r in rs])
    return [_choose(ll[..., e - r.shape[1] : e], per_gene, floor)
            for r, e, floor in zip(rs, ends, floors or [0.0] * len(rs), strict=True)]  # fmt: skip


def _choose(ll: np.ndarray, per_gene: bool, floor: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """The grid's kernel of largest likelihood ``ll`` (length scales, noise ratios, genes), no shorter than ``floor``.

    One value per gene: each gene's own with ``per_gene``, else the best of the likelihood summed over genes.
    """
    g = ll.shape[-1]
    ll = np.where((LENGTH_SCALES < min(floor, LENGTH_SCALES[-1]))[:, None, None], -np.inf, ll)
    if per_gene:
        i, j = np.unravel_index(ll.reshape(-1, g).argmax(0), ll.shape[:2])
    else:
        i, j = np.unravel_index(ll.sum(-1).argmax(), ll.shape[:2])
        i, j = np.full(g, i), np.full(g, j)
    return LENGTH_SCALES[i].astype(float), NOISE_RATIOS[j].astype(float)


def prompt_folds(p: int, order: np.ndarray | None = None) -> list[np.ndarray]:
    """The :data:`CV_FOLDS` folds of ``p`` prompts (indices into the prompts; a fixed random split).

    The split is dealt over the prompts in ``order`` (the indices of the prompts in a canonical order, e.g. by
    name: :func:`canonical_order`), so that the folds do not depend on how the spots are listed; ``None``: the
    listing order.
    """
    return [dealt(f, order) for f in np.array_split(np.random.default_rng(0).permutation(p), CV_FOLDS)]


def spot_rank(names: Sequence[str]) -> np.ndarray:
    """Each spot's rank in the order of its name (the names are unique: ``tl.impute`` checks them).

    What the folds and the fixed random samples are dealt over (:func:`canonical_order`), so that listing a
    section's spots otherwise does not change its prediction.
    """
    names = np.asarray(names, dtype=str)
    rank = np.empty(len(names), dtype=np.int64)
    rank[np.argsort(names, kind="stable")] = np.arange(len(names))
    return rank


def canonical_order(rank: np.ndarray | None, rows: np.ndarray) -> np.ndarray | None:
    """``rows`` (indices of spots) sorted by their canonical ``rank``, as positions into ``rows``; ``None`` without."""
    return None if rank is None else np.argsort(np.asarray(rank)[rows], kind="stable")


def dealt(chosen: np.ndarray, order: np.ndarray | None) -> np.ndarray:
    """A fixed random choice of positions ``chosen``, dealt over ``order`` (:func:`canonical_order`).

    ``None``: as listed. Where ``order`` is the listing order the values are ``chosen``'s: spots listed by name keep
    every fold and sample they had.
    """
    return chosen if order is None else order[chosen]


def _idw_folds(xy_p: np.ndarray, y: np.ndarray, folds: list[np.ndarray]) -> np.ndarray:
    """Each fold's IDW (:func:`~phg2st_sc._utils.inverse_distance`, the baseline's) from the other folds' prompts."""
    return _cross_fit(y.shape, folds, lambda part, rest: inverse_distance(xy_p[rest], y[rest], xy_p[part]))


def _cross_fit(
    shape: tuple[int, ...], folds: list[np.ndarray], predict: Callable[[np.ndarray, np.ndarray], np.ndarray]
) -> np.ndarray:
    """An array of ``shape`` (float64; one row per prompt) whose rows of each fold are ``predict(part, rest)``.

    ``part`` is the fold's prompts and ``rest`` the other folds' (:func:`~phg2st_sc._utils.fold_splits`): the
    layer's cross-fitted kriging, IDW, kriging variance and prompt distances (the ridge's penalty search splits
    once for all its penalties).
    """
    cv = np.empty(shape)
    for part, rest in fold_splits(shape[0], folds):
        cv[part] = predict(part, rest)
    return cv


def krige(
    xy_p: np.ndarray, r: np.ndarray, xy_q: np.ndarray, ell: Any, eta: Any, systems: dict | None = None
) -> np.ndarray:
    """Simple kriging (zero mean) of the residuals ``r`` (p, genes) at ``xy_q``.

    ``ell`` and ``eta`` are numbers or one per gene; genes that share them are kriged together. Exact up to
    :data:`EXACT_MAX` prompts, else from each query's :data:`LOCAL_K` nearest prompts (with their systems kept in
    ``systems``, when given, for the next call at the same points: see :func:`_local_systems`).
    """
    g = r.shape[1]
    ell, eta = np.broadcast_to(np.asarray(ell, float), g), np.broadcast_to(np.asarray(eta, float), g)
    out = np.empty((len(xy_q), g))
    for key in sorted(set(zip(ell.tolist(), eta.tolist(), strict=True))):
        cols = np.flatnonzero((ell == key[0]) & (eta == key[1]))
        out[:, cols] = _krige_one(xy_p, r[:, cols], xy_q, *key, systems)
    return out


def krige_cv(
    xy_p: np.ndarray,
    r: np.ndarray,
    xy_q: np.ndarray,
    ell: Any,
    eta: Any,
    folds: list[np.ndarray],
    systems: dict | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Kriging of ``r`` around its mean at ``xy_q``, and its cross-fitted predictions at the prompts.

    Each fold is predicted from the other folds, their mean included (the kernel is given, not refitted).
    ``systems`` as in :func:`krige`.
    """
    mean = r.mean(0)
    return mean + krige(xy_p, r - mean, xy_q, ell, eta, systems), _krige_folds(xy_p, r, ell, eta, folds, systems)


def _krige_folds(
    xy_p: np.ndarray, r: np.ndarray, ell: Any, eta: Any, folds: list[np.ndarray], systems: dict | None = None
) -> np.ndarray:
    """The cross-fitted part of :func:`krige_cv`: each fold kriged around the mean of the other folds from them."""

    def predict(part: np.ndarray, rest: np.ndarray) -> np.ndarray:
        m = r[rest].mean(0)
        return m + krige(xy_p[rest], r[rest] - m, xy_p[part], ell, eta, systems)

    return _cross_fit(r.shape, folds, predict)


def low_rank(r: np.ndarray, rank: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The mean of ``r`` (p, genes), the scores (p, k) and the basis (k, genes) of its ``rank`` leading patterns.

    The principal components of the centred values; ``k`` is ``rank`` or fewer where the values have fewer
    non-zero singular values. An exact SVD up to :data:`EXACT_SVD_FLOPS` (``p * genes * min(p, genes)``; every
    benchmark section), above it a randomised one (:func:`_leading_svd`), so that a slide with tens of thousands
    of prompts and genes costs ``p * genes * (rank + 10)`` per iteration instead.
    """
    mean = r.mean(0)
    centred = r - mean
    p, g = centred.shape
    if p * g * min(p, g) <= EXACT_SVD_FLOPS:
        u, s, vt = np.linalg.svd(centred, full_matrices=False)
    else:
        u, s, vt = _leading_svd(centred, rank)
    k = int(min(rank, (s > 1e-10 * s[0]).sum())) if s.size and s[0] > 0 else 0
    return mean, u[:, :k] * s[:k], vt[:k]


def _leading_svd(a: np.ndarray, rank: int, oversample: int = 10, iterations: int = 4):
    """The ``rank`` leading singular triplets of ``a`` by randomised subspace iteration (a fixed seed).

    ``rank + oversample`` random directions, ``iterations`` power iterations re-orthonormalised each time, then the
    exact SVD of the small projection: for the leading few components of a large matrix, equal to the exact SVD's
    up to rounding where their singular values are separated from the rest (tested).
    """
    width = min(rank + oversample, *a.shape)
    q, _ = np.linalg.qr(a @ np.random.default_rng(0).standard_normal((a.shape[1], width)))
    for _ in range(iterations):
        q, _ = np.linalg.qr(a.T @ q)
        q, _ = np.linalg.qr(a @ q)
    ub, s, vt = np.linalg.svd(q.T @ a, full_matrices=False)
    return (q @ ub)[:, :rank], s[:rank], vt[:rank]


def krige_low_rank(
    xy_p: np.ndarray, r: np.ndarray, xy_q: np.ndarray, rank: int, ell: float, eta: float, systems: dict | None = None
) -> np.ndarray:
    """Kriging of the ``rank`` leading patterns of ``r`` (p, genes) around its mean, at ``xy_q``: (nq, genes).

    The genes' shared spatial patterns (:func:`low_rank`) are kriged with one kernel, and each gene is its mean plus
    its loadings times the kriged patterns: on noisy targets the patterns, which average many genes, are kriged
    from far less noise than any gene alone.
    """
    return _krige_patterns(xy_p, low_rank(r, rank), xy_q, ell, eta, systems)


def _krige_patterns(xy_p: np.ndarray, patterns: tuple, xy_q: np.ndarray, ell: float, eta: float, systems: dict | None):
    """:func:`krige_low_rank` from the patterns :func:`low_rank` returned (found once, kriged block by block)."""
    mean, t, basis = patterns
    if not len(basis):
        return np.repeat(mean[None, :], len(xy_q), axis=0)
    return mean + krige(xy_p, t, xy_q, ell, eta, systems) @ basis


def _krige_low_rank_folds(
    xy_p: np.ndarray, r: np.ndarray, rank: int, ell: float, eta: float, folds: list[np.ndarray], systems: dict | None
) -> np.ndarray:
    """:func:`krige_low_rank` cross-fitted: each fold from the other folds' patterns, found without it."""
    return _cross_fit(
        r.shape, folds, lambda part, rest: krige_low_rank(xy_p[rest], r[rest], xy_p[part], rank, ell, eta, systems)
    )


def _low_rank_kernel(xy_p: np.ndarray, patterns: tuple, sub: np.ndarray) -> tuple[float, float]:
    """One kernel for the scores of ``patterns`` (:func:`low_rank`), each standardised, by marginal likelihood.

    Chosen on the prompts ``sub`` (:func:`_fit_rows`), as the layer's other kernels are.
    """
    _, t, _ = patterns
    if not t.shape[1]:
        return float(LENGTH_SCALES[0]), float(NOISE_RATIOS[-1])
    t = t / np.where(t.std(0) > 0, t.std(0), 1.0)
    ell, eta = _choose(_loglik(xy_p[sub], on_fit_rows(t, sub)), per_gene=False)
    return float(ell[0]), float(eta[0])


def _krige_one(
    xy_p: np.ndarray, r: np.ndarray, xy_q: np.ndarray, ell: float, eta: float, systems: dict | None
) -> np.ndarray:
    if len(xy_p) > EXACT_MAX:
        return _krige_local(xy_p, r, xy_q, ell, eta, systems)
    k = np.exp(-0.5 * _sqdist(xy_p, xy_p) / ell**2) + eta * np.eye(len(xy_p))
    alpha = np.linalg.solve(k, r)
    out = np.empty((len(xy_q), r.shape[1]))
    for s in range(0, len(xy_q), 4096):
        out[s : s + 4096] = np.exp(-0.5 * _sqdist(xy_q[s : s + 4096], xy_p) / ell**2) @ alpha
    return out


def _local_systems(xy_p: np.ndarray, xy_q: np.ndarray, ell: float, eta: float, systems: dict | None = None):
    """Per batch of b groups of queries: queries (b, G) (-1: padding), prompts (b, m), weights and kq (b, G, m).

    The local form of :func:`krige` and :func:`kriging_variance`: each query is kriged from at least its
    :data:`LOCAL_K` nearest prompts. Groups of :data:`LOCAL_GROUP` queries, consecutive along a Z-order curve
    (compact patches), share one system on the union of their nearest prompts (about 100 prompts for 32 spots at
    10% prompts), solved for all of them at once: a system per group instead of one per query, and each query
    sees a superset of its own neighbours (closer to the exact form). Groups are batched by union size; padded
    entries have zero weight. With ``systems`` (a dict owned by the caller, e.g. one :func:`adapt` call), the
    systems of one kernel at one set of points are solved once and kept there for the next call (kriging and its
    variance at the same spots).
    """
    key = None
    if systems is not None:
        key = (float(ell), float(eta), xy_p.shape, xy_q.shape, xy_p.tobytes(), xy_q.tobytes())
        if key in systems:
            yield from systems[key]
            return
    nq, p = len(xy_q), len(xy_p)
    if nq == 0:
        return
    k = min(LOCAL_K, p)
    _, idx = cKDTree(xy_p).query(xy_q, k=k)
    idx = idx.reshape(nq, k)
    n_groups = -(-nq // LOCAL_GROUP)
    queries = np.full(n_groups * LOCAL_GROUP, -1)
    queries[:nq] = morton_order(xy_q)
    queries = queries.reshape(n_groups, LOCAL_GROUP)  # -1: padding of the last group
    filled = np.where(queries >= 0, queries, queries[-1, 0])  # padding: the last group's first query again
    union = np.sort(idx[filled].reshape(n_groups, -1), axis=1)
    repeated = np.zeros(union.shape, dtype=bool)
    repeated[:, 1:] = union[:, 1:] == union[:, :-1]
    union[repeated] = p  # each group's distinct prompts first, then p (none)
    union.sort(axis=1)
    size = union.shape[1] - repeated.sum(1)
    by_size = np.argsort(size, kind="stable")
    found = []
    step = max(1, 2048 // LOCAL_GROUP)
    for s in range(0, n_groups, step):
        grp = by_size[s : s + step]
        m = int(size[grp].max())
        u = union[grp, :m]
        valid = u < p
        u = np.where(valid, u, 0)
        pts = xy_p[u]  # (b, m, 2)
        kk = np.exp(-0.5 * _sqdist(pts, pts) / ell**2) * (valid[:, :, None] & valid[:, None, :])
        kk += np.where(valid, eta, 1.0)[:, :, None] * np.eye(m)  # padding: an identity block, zero weight
        q = queries[grp]  # (b, G)
        kq = np.exp(-0.5 * _sqdist(xy_q[q], pts) / ell**2) * valid[:, None, :]  # (b, G, m)
        w = np.linalg.solve(kk, np.swapaxes(kq, 1, 2))  # (b, m, G)
        item = (q, u, np.swapaxes(w, 1, 2), kq)
        found.append(item)
        yield item
    if key is not None:
        systems[key] = found


def _krige_local(
    xy_p: np.ndarray, r: np.ndarray, xy_q: np.ndarray, ell: float, eta: float, systems: dict | None = None
) -> np.ndarray:
    """Kriging from each query's nearest prompts (:func:`_local_systems`)."""
    out = np.empty((len(xy_q), r.shape[1]))
    for q, u, w, _ in _local_systems(xy_p, xy_q, ell, eta, systems):
        real = q >= 0
        out[q[real]] = np.matmul(w, r[u])[real]  # each group's weights times its prompts' residuals (BLAS)
    return out


def kriging_variance(
    xy_p: np.ndarray, xy_q: np.ndarray, ell: float, eta: float, systems: dict | None = None
) -> np.ndarray:
    """Variance of a new noisy observation at ``xy_q`` given the prompts, relative to the signal variance: (nq,).

    ``1 + eta - k_q^T (K + eta I)^-1 k_q`` (at least ``eta``), exact up to :data:`EXACT_MAX` prompts, else from
    each query's :data:`LOCAL_K` nearest prompts (``systems`` as in :func:`krige`).
    """
    out = np.empty(len(xy_q))
    if len(xy_p) <= EXACT_MAX:
        k_inv = np.linalg.inv(np.exp(-0.5 * _sqdist(xy_p, xy_p) / ell**2) + eta * np.eye(len(xy_p)))
        for s in range(0, len(xy_q), 4096):
            kq = np.exp(-0.5 * _sqdist(xy_q[s : s + 4096], xy_p) / ell**2)
            out[s : s + 4096] = 1.0 + eta - ((kq @ k_inv) * kq).sum(1)  # a matrix product (BLAS), not a 3-way loop
        return np.maximum(out, eta)
    for q, _, w, kq in _local_systems(xy_p, xy_q, ell, eta, systems):
        real = q >= 0
        out[q[real]] = 1.0 + eta - (kq * w).sum(-1)[real]
    return np.maximum(out, eta)


def _cv_kriging_sd(
    xy_p: np.ndarray, folds: list[np.ndarray], ell: float, eta: float, systems: dict | None
) -> np.ndarray:
    """The kriging standard deviation at each prompt from the other folds (as its cross-fitted error was made)."""
    return np.sqrt(
        _cross_fit((len(xy_p),), folds, lambda part, rest: kriging_variance(xy_p[rest], xy_p[part], ell, eta, systems))
    )


def _calibrate_spread(errors: np.ndarray, u_cv: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The spread's gene scale and conformal scores from the prompts' cross-fitted ``errors`` (p, genes).

    ``u_cv`` is the spot scale at each prompt, made without that prompt's fold (as its error was). Exchangeable
    prompts and spots (random prompts) make the conformal intervals valid on average over spots and genes; prompts
    placed in blocks are not exchangeable with the spots they leave out.
    """
    raw = ((errors / u_cv[:, None]) ** 2).mean(0)
    # shrunk towards the typical gene: a gene never expressed at the few prompts has no error there, but may be
    # expressed elsewhere (without this its interval would have zero width, and its zero scores would pull the
    # pooled quantile down for every gene)
    typical = float(np.median(raw[raw > 0])) if (raw > 0).any() else 1.0
    gene_scale = np.sqrt((len(errors) * raw + SCALE_PRIOR * typical) / (len(errors) + SCALE_PRIOR))
    informative = raw > 0  # genes with no error at any prompt say nothing about the spread of the others
    scores = np.abs(errors[:, informative]) / (u_cv[:, None] * gene_scale[None, informative])
    if not scores.size:
        scores = np.zeros((1, 1))
    return gene_scale, scores


def _level(dev: np.ndarray, net: np.ndarray | None, mu: np.ndarray, sd: np.ndarray) -> np.ndarray:
    """Each spot's predicted level, which the spot scale reads (:data:`LEVEL` says from what).

    ``dev`` is the combination's deviation from the prompts' mean ``mu`` and ``net`` the network's prediction
    (spots x genes; read only for ``"network"``, so that the default forms no deviation of it). The mean over
    genes, in units of the prompts' standard deviation (``"combination"``, ``"network"``) or in the targets'
    (``"units"``).
    """
    if LEVEL == "network":
        return ((net - mu) / sd).mean(1)
    if LEVEL == "units":
        return dev.mean(1)
    return (dev / sd).mean(1)


def _spot_inputs(level: np.ndarray, feats: np.ndarray) -> np.ndarray | None:
    """What the spot scale reads at some spots (:data:`SPOT_INPUTS`): the predicted level, the features' PCs."""
    parts = {"level": level[:, None], "features": feats}
    return np.hstack([parts[k] for k in SPOT_INPUTS]) if SPOT_INPUTS else None


def _fit_spot_model(
    x_p: np.ndarray | None, errors: np.ndarray, u_cv: np.ndarray, folds: list[np.ndarray]
) -> tuple[tuple | None, np.ndarray]:
    """A log-linear model of each spot's error size beyond the kriging variance, fitted on the prompts.

    The target at each prompt is the log of its mean absolute cross-fitted error over genes (each gene's errors in
    units of their root mean square), divided by its kriging standard deviation ``u_cv``; a ridge (penalty by
    cross-validation, :func:`_ridge_penalty`; a large penalty makes the factor constant) maps the standardised
    inputs ``x_p`` to it. Returns the model (``None``: no inputs or no errors) and its factor at each prompt,
    cross-fitted (the prompt's fold left out), so that the conformal scores stay out of sample.
    """
    ones = np.ones(len(u_cv))
    rms = np.sqrt((errors**2).mean(0))
    if x_p is None or not (rms > 0).any():
        return None, ones
    size = (np.abs(errors[:, rms > 0]) / rms[rms > 0]).mean(1) / u_cv
    if not (size > 0).any():
        return None, ones
    t = np.log(np.maximum(size, 1e-3 * np.median(size[size > 0])))[:, None]
    centre, sd = centre_scale(x_p)
    z = (x_p - centre) / sd
    cv, alpha = _ridge_penalty(z, t, folds)
    mu_x, beta, mu_y = _ridge(z, t, alpha)
    return (centre, sd, mu_x, beta[:, 0], float(mu_y[0]), float(t.min()), float(t.max())), np.exp(cv[:, 0])


def _spot_factor(model: tuple | None, x: np.ndarray | None) -> np.ndarray | float:
    """The spot scale's factor at spots with inputs ``x`` (1 without a model), within the range seen at the prompts."""
    if model is None or x is None:
        return 1.0
    centre, sd, mu_x, beta, mu_y, lo, hi = model
    return np.exp(np.clip(mu_y + ((x - centre) / sd - mu_x) @ beta, lo, hi))


def _ridge(x: np.ndarray, y: np.ndarray, alpha: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Ridge with an unpenalised intercept: (feature mean, slopes, intercept)."""
    mu_x, mu_y = x.mean(0), y.mean(0)
    xc = x - mu_x
    beta = np.linalg.solve(xc.T @ xc + alpha * np.eye(x.shape[1]), xc.T @ (y - mu_y))
    return mu_x, beta, mu_y


def ridge_cv(
    f_p: np.ndarray, y: np.ndarray, f_q: np.ndarray, folds: list[np.ndarray]
) -> tuple[np.ndarray, np.ndarray, float]:
    """Ridge from features to ``y``: predictions at ``f_q``, cross-fitted predictions at the prompts, penalty.

    The penalty minimises the cross-fitted squared error, within folds (:func:`_within_folds`) and summed over
    standardised genes; each fold is predicted by a ridge refitted, intercept included, on the other folds.
    """
    cv, alpha = _ridge_penalty(f_p, y, folds)
    mu_x, beta, mu_y = _ridge(f_p, y, alpha)
    return mu_y + (f_q - mu_x) @ beta, cv, alpha


def _ridge_penalty(f_p: np.ndarray, y: np.ndarray, folds: list[np.ndarray]) -> tuple[np.ndarray, float]:
    """:func:`ridge_cv`'s cross-fitted predictions at the prompts and its penalty."""
    sd = centre_scale(y)[1]
    best = (np.inf, RIDGE_ALPHAS[0], None)
    splits = fold_splits(len(y), folds)
    for alpha in RIDGE_ALPHAS:
        cv = np.empty_like(y, dtype=float)
        for part, rest in splits:
            mu_x, beta, mu_y = _ridge(f_p[rest], y[rest], alpha)
            cv[part] = mu_y + (f_p[part] - mu_x) @ beta
        err = float((_within_folds((y - cv) / sd, folds) ** 2).sum())
        if err < best[0]:
            best = (err, alpha, cv)
    _, alpha, cv = best
    return cv, float(alpha)


def _within_folds(v: np.ndarray, folds: list[np.ndarray]) -> np.ndarray:
    """``v`` (p, genes) centred per gene on each fold's mean."""
    out = np.array(v, dtype=float)
    for part in folds:
        out[part] -= out[part].mean(0)
    return out


def _pcc_genes(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-gene PCC over rows (0 where either is constant)."""
    a, b = a - a.mean(0), b - b.mean(0)
    den = np.sqrt((a * a).sum(0) * (b * b).sum(0))
    return np.where(den > 0, (a * b).sum(0) / np.where(den > 0, den, 1.0), 0.0)


def _features(latent: np.ndarray, image: np.ndarray | None, n_pcs: int = 32) -> np.ndarray:
    """Standardised latent tokens and image features, reduced to principal components over all spots.

    Through the (d, d) Gram matrix in float32, so that a slide of many spots costs one pass over its features.
    """
    parts = [latent] if image is None else [latent, image]
    if len(latent) <= BLOCK:
        z = np.concatenate([standardised(np.asarray(p, dtype=np.float32)) for p in parts], axis=1)
        lam, v = np.linalg.eigh((z.T @ z).astype(np.float64))
        top = v[:, ::-1][:, : min(n_pcs, z.shape[1])]
        return (z @ top.astype(np.float32)).astype(np.float64)
    # a large slide: the same in blocks of spots (column moments accumulated in float64, the Gram matrix from float32
    # blocks), so that no standardised copy of all its features exists at once
    n, blocks = len(latent), [slice(s, s + FEATURE_BLOCK) for s in range(0, len(latent), FEATURE_BLOCK)]
    total, squares = np.zeros(sum(p.shape[1] for p in parts)), np.zeros(sum(p.shape[1] for p in parts))
    for b in blocks:
        x = np.concatenate([np.asarray(p[b], dtype=np.float64) for p in parts], axis=1)
        total += x.sum(0)
        squares += np.einsum("ij,ij->j", x, x)
    mean = total / n
    sd = np.sqrt(np.maximum(squares / n - mean**2, 0.0))
    mean, scale = mean.astype(np.float32), (1.0 / np.where(sd > 0, sd, 1.0)).astype(np.float32)

    def block(b: slice) -> np.ndarray:
        x = np.concatenate([np.asarray(p[b], dtype=np.float32) for p in parts], axis=1)
        x -= mean
        x *= scale
        return x

    gram = np.zeros((len(mean), len(mean)))
    for b in blocks:
        z = block(b)
        gram += z.T @ z
    lam, v = np.linalg.eigh(gram)
    top = v[:, ::-1][:, : min(n_pcs, len(mean))].astype(np.float32)
    out = np.empty((n, top.shape[1]))
    for b in blocks:
        out[b] = block(b) @ top
    return out


def adapt(
    network: np.ndarray,
    latent: np.ndarray,
    image: np.ndarray | None,
    xy: np.ndarray,
    prompt: np.ndarray,
    y_prompt: np.ndarray,
    per_gene: bool = False,
    network_at_prompts: np.ndarray | None = None,
    keep_components: bool = False,
    latent_at_prompts: np.ndarray | None = None,
    spot_rank: np.ndarray | None = None,
) -> tuple[np.ndarray, InContextFit]:
    """The in-context prediction at every spot (n, genes) and what was fitted.

    ``network`` (n, genes) is the network's prediction given all prompts; ``xy`` in spot pitches; ``y_prompt``
    (p, genes) the measured expression at ``prompt``. The residuals and the weights need the network's prediction
    at each prompt made without that prompt's value: ``network[prompt]`` for a network that does not read the
    prompts, else ``network_at_prompts``, cross-fitted on the folds of :func:`prompt_folds`. The same holds for the
    latent tokens the ridge reads (``latent_at_prompts``, from the same passes): a token at a prompt computed with
    that prompt's own value in the input encodes the value, so a ridge fitted on such tokens learns a map that the
    other spots' tokens cannot use. With ``keep_components``, each component's prediction is kept in the result's
    ``components`` (for ablations; n x genes each, float64). ``spot_rank`` (n,) ranks the spots in a canonical
    order (:class:`~phg2st_sc.PHG2ST` ranks them by name): the folds and the fixed random samples are dealt in that
    order, so that listing the spots otherwise changes nothing but rounding; ``None``: the listing order (the
    network's cross-fitted passes must have used the same folds).

    The prediction is float32; ``network`` may be float32 (it is read one block of spots at a time). Everything is
    fitted on the prompts first; then each block of at most :data:`BLOCK` spots gets its components, their
    combination and its kriging variance, so that a slide of many spots holds no (spots x genes) array in float64.
    """
    mu, sd = centre_scale(y_prompt)  # a gene constant over the prompts: its value, and z = 0 exactly
    at_prompts = np.asarray(network[prompt] if network_at_prompts is None else network_at_prompts, dtype=np.float64)
    offset = mu - at_prompts.mean(0)  # per-gene offset from the prompts
    at_prompts = at_prompts + offset
    if len(y_prompt) < MIN_PROMPTS:  # too few to fit a kernel, a ridge and their weights: the network, re-centred
        return (network + offset).astype(np.float32), InContextFit({c: float(c == "network") for c in COMPONENTS}, float("nan"),
                                 float("nan"), float("nan"), {"note": f"fewer than {MIN_PROMPTS} prompts: the network alone", "kept": "network"})  # fmt: skip
    order = canonical_order(spot_rank, np.flatnonzero(prompt))  # the prompts in the canonical order
    folds = prompt_folds(len(y_prompt), order)
    resid = (y_prompt - at_prompts) / sd
    xy_p = xy[prompt]
    sub = _fit_rows(len(xy_p), order)  # the prompts the kernels are chosen on
    z = (y_prompt - mu) / sd  # the prompts alone: kriging of the expression (the prompt field)
    # the prompt field twice: with the likelihood's kernel, and with one no shorter than the prompts' spacing (the
    # likelihood picks the shortest length scale where neighbouring prompts look uncorrelated, and its kriging is
    # then nearly the prompts' mean; the longer kernel averages the nearby prompts as IDW does: docs/design.md)
    # (one likelihood pass for the residuals and the expression; the expression's kernel chosen twice from it)
    g = resid.shape[1]
    ll = _loglik(xy_p[sub], np.hstack([resid[sub] - resid[sub].mean(0), on_fit_rows(z, sub)]))
    (ell, eta), (ell_y, eta_y) = _choose(ll[..., :g], per_gene), _choose(ll[..., g:], per_gene)
    ell_l, eta_l = _choose(ll[..., g:], per_gene, floor=spot_pitch(xy_p))  # the prompts' median spacing
    same = np.array_equal(ell_l, ell_y) and np.array_equal(eta_l, eta_y)  # the floor changed nothing
    systems: dict = {}  # local kriging systems at the prompts, solved once per kernel and fold within this call
    field_cv = _krige_folds(xy_p, resid, ell, eta, folds, systems)
    plain_cv = _krige_folds(xy_p, z, ell_y, eta_y, folds, systems)
    long_cv = plain_cv if same else _krige_folds(xy_p, z, ell_l, eta_l, folds, systems)
    if latent_at_prompts is not None:
        latent = latent.copy()
        latent[prompt] = latent_at_prompts
    feats = _features(latent, image)
    del latent  # (this call's copy, where the prompts' tokens were replaced)
    ridge_cv_p, alpha = _ridge_penalty(feats[prompt], y_prompt, folds)
    cv = {"network": at_prompts, "kriging": at_prompts + field_cv * sd, "field": mu + plain_cv * sd,
          "field_long": mu + long_cv * sd, "idw": _idw_folds(xy_p, y_prompt, folds), "ridge": ridge_cv_p}  # fmt: skip
    # spread prompts (a design): the folds compare the components one design spacing from the prompts, where the
    # components that read the prompts look weaker than where they predict; the ridge, which does not, is left out
    ratio = spread_ratio(xy, prompt, folds, spot_rank)
    spread, clustered = ratio > SPREAD_RATIO, ratio < CLUSTER_RATIO
    names = [
        c
        for c in COMPONENTS
        if (c != "ridge" or not spread) and (c not in LOW_RANK_COMPONENTS or not (clustered or spread))
    ]
    # the genes' shared spatial patterns, of the expression and of the network's residuals (twenty-first to
    # twenty-third rounds); only where the prompts are spread as random ones: with clustered prompts (blocks) the
    # folds compare them inside the blocks while the spots lie outside, and on spread designs they cost smoothed
    # targets up to 0.025 (docs/design.md)
    lr_kernels, patterns = {}, {}
    if not (clustered or spread):
        patterns = {"field_lowrank": low_rank(z, LOW_RANK), "kriging_lowrank": low_rank(resid, LOW_RANK)}
        lr_kernels = {c: _low_rank_kernel(xy_p, patterns[c], sub) for c in LOW_RANK_COMPONENTS}
        cv["field_lowrank"] = mu + sd * _krige_low_rank_folds(
            xy_p, z, LOW_RANK, *lr_kernels["field_lowrank"], folds, systems)  # fmt: skip
        cv["kriging_lowrank"] = at_prompts + sd * _krige_low_rank_folds(
            xy_p, resid, LOW_RANK, *lr_kernels["kriging_lowrank"], folds, systems)  # fmt: skip

    def fit_weights(kept: list[str], cv: dict[str, np.ndarray]) -> tuple[dict[str, float], dict[str, Any]]:
        """The weights of every component (0 outside ``kept``) and the safeguard's scores.

        From the cross-fitted predictions ``cv``, passed rather than read from the call, which frees them later.
        """
        if not kept:  # (every component left out by the inflation check below)
            return {c: float(c == "network") for c in COMPONENTS}, {"kept": "network"}
        fitted = combine({c: cv[c] for c in kept}, (y_prompt - mu) / sd, folds, standardise=(mu, sd))
        fitted, found = _safeguard(fitted, {c: cv[c] for c in kept}, y_prompt, folds, spread=spread)
        return {c: fitted.get(c, 0.0) for c in COMPONENTS}, found

    w, scores = fit_weights(names, cv)
    ridge_fit = _ridge(feats[prompt], y_prompt, alpha) if keep_components or "ridge" in names else None
    mean_r, mean_z = resid.mean(0), z.mean(0)

    def components(rows: np.ndarray, wanted: Any, local: dict):
        """``(name, prediction)`` at the spots ``rows`` for the components in ``wanted``, in COMPONENTS order."""
        xy_b = xy[rows]
        net_b = np.asarray(network[rows], dtype=np.float64) + offset
        field_b = None  # the field, kept for the long field where their kernels agree
        for c in COMPONENTS:
            if c not in wanted or (c in LOW_RANK_COMPONENTS and not lr_kernels):
                continue
            if c == "network":
                value = net_b
            elif c == "kriging":
                value = net_b + (mean_r + krige(xy_p, resid - mean_r, xy_b, ell, eta, local)) * sd
            elif c == "field" or (c == "field_long" and not (same and field_b is not None)):
                e, t = (ell_y, eta_y) if c == "field" else (ell_l, eta_l)
                value = mu + (mean_z + krige(xy_p, z - mean_z, xy_b, e, t, local)) * sd
            elif c == "field_long":
                value = field_b
            elif c == "idw":
                value = inverse_distance(xy_p, y_prompt, xy_b)
            elif c == "ridge":
                value = ridge_fit[2] + (feats[rows] - ridge_fit[0]) @ ridge_fit[1]
            else:  # the low-rank components: the patterns kriged, mapped back through the loadings
                value = sd * _krige_patterns(xy_p, patterns[c], xy_b, *lr_kernels[c], local)
                value += mu if c == "field_lowrank" else net_b
            if c == "field":
                field_b = value
            yield c, value
            del value

    # a weight fitted where a component barely varies (its cross-fitted predictions nearly the folds' means: a field
    # with the largest noise ratio, few prompts of noise) can multiply what it does vary at the spots many times:
    # the weights are checked at a fixed sample of the spots to predict, and the component that inflates the
    # combination most is left out and the weights fitted again until it is not inflated (docs/design.md)
    sample = _check_sample(xy, prompt)
    at_sample = dict(components(sample, names, {})) if len(sample) else {}
    dropped: list[str] = []
    while len(dropped) < len(names) and (worst := _inflating(at_sample, w, mu, sd)) is not None:
        dropped.append(worst)
        w, scores = fit_weights([c for c in names if c not in dropped], cv)
    if dropped:
        scores["inflating"] = ",".join(dropped)
    # one scale for the kept weights, shared by the genes (every gene's PCC unchanged): least squares on cross-fitted
    # predictions shrinks towards the prompts' mean; the scale is chosen on the prompts' absolute errors
    scale = lad_scale(y_prompt[sub] - mu, sum(w[c] * (cv[c][sub] - mu) for c in names))
    w = {c: scale * v for c, v in w.items()}
    scores |= {"spread_ratio": ratio, "ridge_left_out": "ridge" not in names, "scale": scale}
    # the spread's kernel is a gene's (the low-rank kernels are the patterns', whose noise is averaged over genes):
    # a low-rank component's weight counts towards its per-gene counterpart, IDW's towards the IDW-like field
    kernels = {"kriging": (ell, eta), "field": (ell_y, eta_y), "field_long": (ell_l, eta_l)}
    weight = {c: w[c] + sum(w[e] for e, base in KERNEL_OF.items() if base == c) for c in kernels}
    kernel = kernels[max(kernels, key=weight.get)]  # the kriging that weighs most (ties: regression kriging)
    # compared within folds as the weights were (a pass's level is an artefact of leaving its fold out), each fold's
    # centred errors rescaled by sqrt(m / (m - 1)) so that their variance is that of an error, not of its deviation
    combined_cv = sum(w[c] * (cv[c] - mu) for c in names)  # the combination's cross-fitted prediction - mu
    errors = _within_folds(y_prompt - mu - combined_cv, folds)
    for part in folds:
        errors[part] *= np.sqrt(len(part) / max(len(part) - 1, 1))
    ell_s, eta_s = float(np.median(kernel[0])), float(np.median(kernel[1]))
    # the spot scale: the kriging standard deviation times a factor read from the predicted level and the features
    # (fitted on the prompts' cross-fitted errors; constant when they do not predict the error's size)
    u_cv = _cv_kriging_sd(xy_p, folds, ell_s, eta_s, systems)
    level_p = _level(combined_cv, cv["network"], mu, sd)  # taken as at the spots: mu + sum w (. - mu)
    spot_model, factor_cv = _fit_spot_model(_spot_inputs(level_p, feats[prompt]), errors, u_cv, folds)
    gene_scale, conformal = _calibrate_spread(errors, u_cv * factor_cv)
    # every spot's prediction, one compact block of spots at a time (one block up to BLOCK spots); the components
    # without weight are not computed
    out = np.empty(network.shape, dtype=np.float32)
    spot_var = np.empty(len(xy))
    kept = {c: np.empty(network.shape) for c in cv} if keep_components else None  # (low-rank: not when clustered)
    # the prompts' cross-fitted (prompts x genes) arrays are not needed below: freed before the spots' blocks
    del cv, field_cv, plain_cv, long_cv, ridge_cv_p, combined_cv, errors
    for rows in _blocks(xy):
        local: dict = {}  # this block's systems: the kriging and its variance share them
        # the combination mu + sum_c w_c (component_c - mu), summed in COMPONENTS order as each component is made
        # (the same additions as one sum over all of them) and each dropped once added: a block holds the running
        # sum and one or two components, not all eight
        total: Any = 0
        wanted = [c for c in COMPONENTS if c == "network" or keep_components or w[c]]
        net = None  # (held only where the level is the network's: one more block x genes array)
        for c, value in components(rows, wanted, local):
            total = total + w[c] * (value - mu)
            if c == "network" and LEVEL == "network":
                net = value
            if kept is not None:
                kept[c][rows] = value
            del value
        out[rows] = mu + total
        del total
        factor = _spot_factor(spot_model, _spot_inputs(_level(out[rows] - mu, net, mu, sd), feats[rows]))
        del net
        spot_var[rows] = kriging_variance(xy_p, xy[rows], ell_s, eta_s, local) * factor**2
    sp = Spread(gene_scale, np.sqrt(spot_var), conformal)
    return out, InContextFit(w, float(np.median(ell)), float(np.median(eta)), alpha, scores, kept, sp)


def _check_sample(xy: np.ndarray, prompt: np.ndarray) -> np.ndarray:
    """The spots the inflation check reads: every spot to predict up to :data:`FIT_SUBSET`, else compact patches.

    Above that, :data:`FIT_SUBSET` // :data:`LOCAL_GROUP` runs of :data:`LOCAL_GROUP` consecutive spots along a
    Z-order curve, evenly spaced over it (sorted): patches share their nearest prompts as a block's spots do, where
    scattered spots would each bring their own (at 60,000 prompts, about 2,000 prompts per local system instead of
    100).
    """
    rest = np.flatnonzero(~prompt)
    if len(rest) <= FIT_SUBSET:
        return rest
    order = rest[morton_order(xy[rest])]
    runs = FIT_SUBSET // LOCAL_GROUP
    starts = np.linspace(0, len(order) - LOCAL_GROUP, runs).astype(int)
    return np.sort(order[(starts[:, None] + np.arange(LOCAL_GROUP)).ravel()])


def inflation(
    at: dict[str, np.ndarray], w: dict[str, float], mu: np.ndarray, sd: np.ndarray
) -> tuple[float, dict[str, float]]:
    """How far the combination spreads at some spots beyond its components, and each one's weighted spread there.

    ``at`` holds each component's prediction at a sample of the spots to predict. In units of the prompts' standard
    deviation per gene, a spread is each gene's standard deviation over those spots, averaged over genes. The
    ratio is the combination's spread over the largest of its weighted components' spreads and of the prompts' (1).
    A non-negative combination spreads no wider than the sum of its weights times its widest component, but that sum
    says little: a component that barely varies anywhere can take a weight of hundreds and move nothing
    (``benchmarks/dev_weight_sum.py``), so the spreads themselves are compared. 0 and no component where no weight
    is given.
    """
    weighted = [c for c in at if w.get(c, 0.0)]
    if not weighted:
        return 0.0, {}
    spread = {c: float(((at[c] - mu) / sd).std(0).mean()) for c in weighted}
    combined = float(sum(w[c] * ((at[c] - mu) / sd) for c in weighted).std(0).mean())
    ratio = combined / max(1.0, *spread.values()) if np.isfinite(combined) else 0.0
    return ratio, {c: w[c] * spread[c] for c in weighted}


def _inflating(at: dict[str, np.ndarray], w: dict[str, float], mu: np.ndarray, sd: np.ndarray) -> str | None:
    """The component to leave out: the largest weighted spread where :func:`inflation` exceeds the bound.

    ``None`` where the ratio is at most :data:`MAX_INFLATION`.
    """
    ratio, weighted = inflation(at, w, mu, sd)
    return max(weighted, key=weighted.get) if ratio > MAX_INFLATION else None


def mean_ratio(d_cv: np.ndarray, d_q: np.ndarray) -> float:
    """:func:`spread_ratio` from its two sets of distances (:func:`spread_distances`); 1 without spots to predict."""
    return float(d_cv.mean() / max(d_q.mean(), 1e-12)) if len(d_q) else 1.0


def spread_ratio(xy: np.ndarray, prompt: np.ndarray, folds: list[np.ndarray], rank: np.ndarray | None = None) -> float:
    """The mean distance from a fold's prompts to the other folds' over that from a spot to predict to a prompt.

    How much farther the cross-fitting's left-out prompts lie from the rest than the spots it predicts.

    0.58-1.64 over 930 random draws of her2st C2-C6 and MOB1-4 at 5-30%, 1.76-2.42 for the variance and
    space-filling designs at 5-20%, below 1 for prompts in blocks (``benchmarks/prompt_spread.py``).
    """
    return mean_ratio(*spread_distances(xy, prompt, folds, rank))


def spread_distances(
    xy: np.ndarray, prompt: np.ndarray, folds: list[np.ndarray], rank: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """The distances :func:`spread_ratio` compares.

    Each prompt's distance to the nearest prompt of the other folds (in the order the folds index the prompts), and
    each spot to predict's distance to its nearest prompt: all the other spots, or a fixed random sample of
    :data:`FIT_SUBSET` of them (dealt over the spots in the order of their ``rank``, where given).
    """
    mask = np.zeros(len(xy), dtype=bool)
    mask[prompt] = True
    xy_p, rest = xy[prompt], np.flatnonzero(~mask)
    d_cv = _cross_fit((len(xy_p),), folds, lambda part, rest: cKDTree(xy_p[rest]).query(xy_p[part])[0])
    d_q = (
        cKDTree(xy_p).query(xy[rest[_fit_rows(len(rest), canonical_order(rank, rest))]])[0]
        if len(rest)
        else np.empty(0)
    )
    return d_cv, d_q


def _blocks(xy: np.ndarray) -> list[np.ndarray]:
    """The spots in blocks of at most :data:`BLOCK`: all of them in order, or compact patches along a Z-order curve."""
    if len(xy) <= BLOCK:
        return [np.arange(len(xy))]
    order = morton_order(xy)
    return [order[s : s + BLOCK] for s in range(0, len(xy), BLOCK)]


def _clearly_better(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether per-gene scores ``a`` beat ``b`` by more than twice the standard error of the mean gain."""
    gain = a - b
    return len(gain) > 1 and bool(gain.mean() > 2.0 * gain.std(ddof=1) / np.sqrt(len(gain)))


def _safeguard(
    w: dict[str, float], cv: dict[str, np.ndarray], y: np.ndarray, folds: list[np.ndarray], spread: bool = False
) -> tuple[dict[str, float], dict[str, Any]]:
    """The combination unless its best component clearly beats it; then that component alone.

    Clearly: the mean over genes of the per-gene, within-fold PCC gain exceeds twice its standard error. The burden
    of proof is on the single component: with a few dozen prompts on unsmoothed targets, the per-gene PCC over folds
    of a handful of prompts is noisy, and a test that kept the combination only on a clear gain over its best
    component kept a single component on noise (on a patient the network never saw, the likelihood-kernel prompt
    field, 0.02 held out where IDW and the combination score 0.04: the eighteenth round, docs/design.md).

    With ``spread`` prompts (a design: :func:`spread_ratio` above :data:`SPREAD_RATIO`) the comparison itself is
    biased (the left-out prompts lie a design spacing from the others, the spots to predict half of one) and the
    burden stays on the combination: it is kept only on a clear gain over its best component, else that component
    if it clearly beats the network, else the network (the rule before the eighteenth round; with it reversed,
    her2st's space-filling design at 10% lost 0.03 unsmoothed against its network). Returns the weights kept and
    the cross-fitted PCC of each component and of the combination (with what was kept).
    """
    target = _within_folds(y, folds)
    per_gene = {c: _pcc_genes(_within_folds(cv[c], folds), target) for c in cv}
    per_gene["combined"] = _pcc_genes(_within_folds(sum(w[c] * cv[c] for c in cv), folds), target)
    scores: dict[str, Any] = {c: float(v.mean()) for c, v in per_gene.items()}
    best = max(cv, key=lambda c: scores[c])
    if spread:  # the burden on the combination, and the network as the fallback
        if _clearly_better(per_gene["combined"], per_gene[best]):
            return w, scores | {"kept": "combination"}
        if best != "network" and "network" in cv and not _clearly_better(per_gene[best], per_gene["network"]):
            best = "network"
    elif not _clearly_better(per_gene[best], per_gene["combined"]):
        return w, scores | {"kept": "combination"}
    return {c: float(c == best) for c in cv}, scores | {"kept": best}


def lad_scale(r: np.ndarray, d: np.ndarray) -> float:
    """The scale ``s`` in :data:`SCALE_RANGE` that minimises ``sum |r - s d|`` over every entry (pooled over genes).

    ``r`` is the prompts' deviations from their mean and ``d`` the kept combination's cross-fitted deviations, both
    (prompts, genes) in the targets' units. The least-absolute-deviations slope through the origin: the median of
    the ratios ``r / d`` weighted by ``|d|`` (float64; entries that are not finite are left out). 1 where ``d``
    is zero throughout.
    """
    r, d = np.ravel(r).astype(np.float64), np.ravel(d).astype(np.float64)
    keep = np.isfinite(r) & np.isfinite(d) & (d != 0)
    if not keep.any():
        return 1.0
    ratio, weight = r[keep] / d[keep], np.abs(d[keep])
    order = np.argsort(ratio, kind="stable")
    cum = np.cumsum(weight[order])
    s = float(ratio[order][np.searchsorted(cum, 0.5 * cum[-1])])
    return float(np.clip(s, *SCALE_RANGE)) if np.isfinite(s) else 1.0


def combine(
    cv: dict[str, np.ndarray],
    target: np.ndarray,
    folds: list[np.ndarray],
    standardise: tuple[np.ndarray, np.ndarray] | None = None,
) -> dict[str, float]:
    """Non-negative weights, one per component, from cross-fitted predictions compared within folds.

    ``cv`` maps each component to its cross-fitted predictions (p, genes) and ``target`` is the measured values,
    both standardised per gene (or ``cv`` in the targets' units and ``standardise`` their per-gene mean and
    standard deviation, applied one component at a time); a per-fold, per-gene constant added to a component
    changes nothing. If no component earns a weight, regression kriging alone.

    The least-squares design (p x genes rows, one column per component) is filled one column at a time: on a
    slide of 60,000 prompts and 400 genes each column is 190 MB, and the solver copies the design once more.
    """
    names = list(cv)
    design = np.empty((target.size, len(names)))
    for j, c in enumerate(names):
        design[:, j] = _within_folds(cv[c] if standardise is None else (cv[c] - standardise[0]) / standardise[1],
                                     folds).ravel()  # fmt: skip
    w, _ = nnls(design, _within_folds(target, folds).ravel())
    del design
    if not w.any():
        fallback = next((c for c in ("kriging", "network") if c in names), names[0])  # (one may have been left out)
        w = np.array([float(c == fallback) for c in names])
    return dict(zip(names, map(float, w), strict=True))


def on_fit_rows(z: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Values ``z`` (centred over all their rows) at the rows a kernel is chosen on, centred over those rows.

    ``z`` itself where ``rows`` are all of them (:func:`_fit_rows` below :data:`FIT_SUBSET`), so that the values
    are the same bits whether or not a subset is taken.
    """
    return z if len(rows) == len(z) else z[rows] - z[rows].mean(0)


def _fit_rows(n: int, order: np.ndarray | None = None) -> np.ndarray:
    """All ``n`` rows, or :data:`FIT_SUBSET` of them in a fixed random choice.

    The choice is dealt over ``order``, as in :func:`prompt_folds`.
    """
    if n <= FIT_SUBSET:
        return np.arange(n)
    return dealt(np.random.default_rng(0).permutation(n)[:FIT_SUBSET], order)
