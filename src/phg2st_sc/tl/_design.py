"""Choosing which spots to measure (prompt design) from the image and the spot layout alone."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Literal

import numpy as np
from anndata import AnnData

from phg2st_sc._constants import Keys
from phg2st_sc._docs import inject_docs
from phg2st_sc._utils import check_slots, get_table, spot_pitch, standardised, write_slots
from phg2st_sc._validate import (
    check_choice,
    check_nonempty,
    check_positive_int,
    check_seed,
    get_coordinates,
    get_representation,
)

if TYPE_CHECKING:
    from spatialdata import SpatialData

DESIGNS = ("space", "features", "variance")
SHAPES = ("spots", "blocks")
VARIANCE_MAX_SPOTS = 8_000  # the "variance" design keeps an n x n posterior covariance
N_BLOCK_CANDIDATES = 200  # block centres scored per step


@inject_docs
def design_prompts(
    adata: AnnData | SpatialData,
    *,
    budget: int | float,
    strategy: Literal["space", "features", "variance"] = "space",
    shape: Literal["spots", "blocks"] = "spots",
    block_size: int = 20,
    existing: str | Sequence[bool] | np.ndarray | None = None,
    use_rep: str | None = None,
    length_scale: float = 2.0,
    noise_ratio: float = 0.1,
    seed: int = 0,
    spatial_key: str = Keys.SPATIAL,
    key_added: str = "phg2st_design",
    table_key: str | None = None,
    overwrite: bool = False,
    copy: bool = False,
) -> AnnData | None:
    """Choose the spots to measure, before any of the section's expression is known.

    Uses the spot layout and, for ``strategy="features"``, the image features; never the expression. With
    ``existing`` prompts, the next spots to add. Virtual spots (:func:`phg2st_sc.pp.virtual_spots`) may be chosen:
    a design says where to measure, and the count of virtual spots chosen is recorded.

    Parameters
    ----------
    {adata}
    budget
        Spots to choose: a count (int >= 1) or a fraction of the section's spots (float in (0, 1)).
    strategy
        ``"space"``: farthest-point sampling of the tissue (each new spot the farthest from those chosen or
        measured). ``"features"``: k-centres in image-feature space (each new spot the least like those chosen:
        cover the histology's diversity; needs ``use_rep``). ``"variance"``: greedy reduction of the total
        predictive variance of kriging with a squared-exponential kernel of ``length_scale`` spot pitches and
        ``noise_ratio`` (at most 8,000 spots).
    shape
        ``"spots"``: single spots. ``"blocks"``: contiguous capture regions of ``block_size`` spots each (the
        nearest free spots around a centre), placed one after another by the strategy; the last block is smaller
        when the budget is not a multiple of ``block_size``.
    block_size
        Spots per block for ``shape="blocks"``.
    existing
        Spots already measured: a boolean ``obs`` column or mask. They are never chosen again and count as
        covered.
    use_rep
        ``obsm`` key of image features for ``strategy="features"`` (e.g. from :func:`phg2st_sc.pp.embed_tiles`).
    length_scale, noise_ratio
        Kernel of the ``"variance"`` design, in spot pitches and as noise / signal variance.
    seed
        The first spot (or block) when nothing is measured yet is drawn with this seed; the rest is deterministic.
    spatial_key
        ``obsm`` key with spot coordinates.
    key_added
        ``obs`` column to write.
    {table_key}
    {overwrite}
    {copy}

    Returns
    -------
    {returns_copy}

    ``.obs['{{key_added}}']``
        Boolean, ``True`` for the spots chosen (not the ``existing`` ones); for squidpy's ``spatial_scatter``, plot a
        categorical copy (``.astype('category')``, as for :func:`select_prompts`).
    ``.obs['{{key_added}}_order']``
        The order in which they were chosen (0, 1, ...; for blocks, the block's rank); -1 elsewhere.
    ``.uns['{{key_added}}']['params']``
        Strategy, shape, block size, seed, number chosen and how many of them are virtual spots.

    Examples
    --------
    >>> phg2st.tl.design_prompts(adata, budget=0.1, strategy="space")  # doctest: +SKIP
    >>> phg2st.tl.select_prompts(adata, mask=adata.obs["phg2st_design"].to_numpy())  # doctest: +SKIP
    """
    table = get_table(adata, table_key)
    check_nonempty(table)
    check_choice(strategy, "strategy", DESIGNS)
    check_choice(shape, "shape", SHAPES)
    seed = check_seed(seed)
    if not isinstance(key_added, str) or not key_added:
        raise TypeError(f"`key_added` must be a non-empty string, got {key_added!r}.")
    done = _existing_mask(table, existing)
    n_free = int((~done).sum())
    n = _budget(budget, table.n_obs, n_free)
    if shape == "blocks":
        block_size = check_positive_int(block_size, "block_size")
    xy = get_coordinates(table, spatial_key)
    xy = xy / spot_pitch(xy)
    feats = _design_features(table, use_rep) if strategy == "features" else None
    for name, value in (("length_scale", length_scale), ("noise_ratio", noise_ratio)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not np.isfinite(value) or value <= 0:
            raise ValueError(f"`{name}` must be a positive number, got {value!r}.")
    if strategy == "variance" and table.n_obs > VARIANCE_MAX_SPOTS:
        raise ValueError(
            f"`strategy='variance'` keeps an n x n covariance and is limited to {VARIANCE_MAX_SPOTS} spots (this "
            f"section has {table.n_obs}); `strategy='space'` is its equivalent for a stationary kernel."
        )
    slots = {
        ("obs", key_added): "key_added",
        ("obs", f"{key_added}_order"): "key_added",
        ("uns", key_added): "key_added",
    }
    check_slots(table, slots, overwrite=overwrite, writer="tl.design_prompts")
    gain = _gain_function(strategy, xy, feats, done, float(length_scale), float(noise_ratio))
    rng = np.random.default_rng(seed)
    order = (
        _choose_spots(gain, done, n, rng) if shape == "spots" else _choose_blocks(gain, xy, done, n, block_size, rng)
    )
    chosen = order >= 0
    virtual = table.obs[Keys.VIRTUAL].to_numpy(bool) if Keys.VIRTUAL in table.obs else np.zeros(table.n_obs, bool)
    params = {
        "strategy": strategy, "shape": shape, "block_size": int(block_size) if shape == "blocks" else None,
        "seed": int(seed), "n_chosen": int(chosen.sum()), "n_virtual_chosen": int((chosen & virtual).sum()),
        "n_existing": int(done.sum()), "use_rep": use_rep, "length_scale": float(length_scale),
    }  # fmt: skip
    writes = {("obs", key_added): chosen, ("obs", f"{key_added}_order"): order, ("uns", key_added): {"params": params}}
    return write_slots(table, writes, copy=copy, overwrite=overwrite, names=slots, writer="tl.design_prompts")


def _existing_mask(table: AnnData, existing: str | Sequence[bool] | np.ndarray | None) -> np.ndarray:
    if existing is None:
        return np.zeros(table.n_obs, dtype=bool)
    if isinstance(existing, str):
        if existing not in table.obs:
            raise KeyError(f"`existing={existing!r}` is not an `obs` column.")
        values = table.obs[existing]
        if values.isna().any() or values.dtype != bool:
            raise TypeError(f"`obs[{existing!r}]` must be a boolean column without missing values, got {values.dtype}.")
        return values.to_numpy(bool)
    mask = np.asarray(existing)
    if mask.dtype != bool or mask.shape != (table.n_obs,):
        raise TypeError(f"`existing` must be a boolean mask of length {table.n_obs}, got {mask.dtype} {mask.shape}.")
    return mask.copy()


def _budget(budget: int | float, n_obs: int, n_free: int) -> int:
    if isinstance(budget, bool) or not isinstance(budget, (int, float, np.integer, np.floating)):
        raise TypeError(f"`budget` must be a count or a fraction, got {budget!r}.")
    if isinstance(budget, (int, np.integer)):
        n = int(budget)
    elif 0.0 < float(budget) < 1.0:
        n = max(1, int(round(float(budget) * n_obs)))
    else:
        raise ValueError(f"`budget` as a fraction must be in (0, 1), got {budget!r}; give a count as an int.")
    if n < 1:
        raise ValueError(f"`budget` must choose at least one spot, got {budget!r}.")
    if n > n_free:
        raise ValueError(f"`budget` asks for {n} spots but only {n_free} are not measured yet.")
    return n


def _design_features(table: AnnData, use_rep: str | None) -> np.ndarray:
    if use_rep is None:
        raise ValueError("`strategy='features'` needs `use_rep`, the `obsm` key of image features.")
    x = get_representation(table, use_rep)
    x = standardised(x)
    u, s, _ = np.linalg.svd(x, full_matrices=False)
    k = min(32, x.shape[1])
    return u[:, :k] * s[:k]


def _gain_function(
    strategy: str, xy: np.ndarray, feats: np.ndarray | None, done: np.ndarray, ell: float, eta: float
) -> _Gain:
    if strategy == "variance":
        return _VarianceGain(xy, done, ell, eta)
    return _DistanceGain(xy if strategy == "space" else feats, done)


class _Gain:
    """What a design maximises: ``gain(block)`` for a candidate set of spots; ``add(block)`` commits it."""

    def gain(self, block: np.ndarray) -> float:  # pragma: no cover - interface
        raise NotImplementedError

    def spot_gains(self) -> np.ndarray:  # pragma: no cover - interface
        raise NotImplementedError

    def add(self, block: np.ndarray) -> None:  # pragma: no cover - interface
        raise NotImplementedError


class _DistanceGain(_Gain):
    """Farthest-point / k-centres: the distance of each spot to the nearest chosen or measured one."""

    def __init__(self, points: np.ndarray, done: np.ndarray):
        self.points = points
        self.dist = np.full(len(points), np.inf)
        if done.any():
            for s in range(0, len(points), 4096):  # nearest measured spot, in chunks
                self.dist[s : s + 4096] = _nearest(points[s : s + 4096], points[done])

    def spot_gains(self) -> np.ndarray:
        return self.dist

    def gain(self, block: np.ndarray) -> float:
        return float(np.minimum(self.dist[block], 1e12).mean())

    def add(self, block: np.ndarray) -> None:
        self.dist = np.minimum(self.dist, _nearest(self.points, self.points[block]))


class _VarianceGain(_Gain):
    """Greedy reduction of the summed kriging variance: the posterior covariance, updated block by block."""

    def __init__(self, xy: np.ndarray, done: np.ndarray, ell: float, eta: float):
        from scipy.spatial.distance import cdist

        self.cov, self.eta = np.exp(-0.5 * cdist(xy, xy, "sqeuclidean") / ell**2), eta
        if done.any():
            self.add(np.flatnonzero(done))

    def spot_gains(self) -> np.ndarray:
        return (self.cov**2).sum(0) / (np.diag(self.cov) + self.eta)

    def gain(self, block: np.ndarray) -> float:
        c = self.cov[:, block]
        return float(np.trace(np.linalg.solve(self.cov[np.ix_(block, block)] + self.eta * np.eye(len(block)), c.T @ c)))

    def add(self, block: np.ndarray) -> None:
        c = self.cov[:, block]
        self.cov -= c @ np.linalg.solve(self.cov[np.ix_(block, block)] + self.eta * np.eye(len(block)), c.T)


def _nearest(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    from scipy.spatial import cKDTree

    return cKDTree(b).query(a, k=1)[0]


def _choose_spots(gain: _Gain, done: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    order = np.full(len(done), -1, dtype=np.int64)
    free = ~done
    for step in range(n):
        scores = np.where(free, gain.spot_gains(), -np.inf)
        if step == 0 and not done.any() and isinstance(gain, _DistanceGain):
            pick = int(rng.choice(np.flatnonzero(free)))  # farthest-point sampling needs a start
        else:
            pick = int(np.argmax(scores))
        order[pick], free[pick] = step, False
        gain.add(np.array([pick]))
    return order


def _choose_blocks(
    gain: _Gain, xy: np.ndarray, done: np.ndarray, n: int, size: int, rng: np.random.Generator
) -> np.ndarray:
    from scipy.spatial import cKDTree

    order = np.full(len(done), -1, dtype=np.int64)
    free = ~done
    rank = 0
    while (order >= 0).sum() < n:
        take = min(size, n - int((order >= 0).sum()))
        where = np.flatnonzero(free)
        tree = cKDTree(xy[where])
        centres = where if len(where) <= N_BLOCK_CANDIDATES else rng.choice(where, N_BLOCK_CANDIDATES, replace=False)
        blocks = [where[np.atleast_1d(tree.query(xy[c], k=take)[1])] for c in centres]
        first = rank == 0 and not done.any() and isinstance(gain, _DistanceGain)
        best = int(rng.integers(len(blocks))) if first else int(np.argmax([gain.gain(b) for b in blocks]))
        block = blocks[best]
        order[block], free[block] = rank, False
        gain.add(block)
        rank += 1
    return order
