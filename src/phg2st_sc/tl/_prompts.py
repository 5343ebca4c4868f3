"""Choosing the measured ("prompt") spots of a section."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Literal

import numpy as np
from anndata import AnnData

from phg2st_sc._constants import Keys
from phg2st_sc._docs import inject_docs
from phg2st_sc._utils import check_slots, get_table, write_slots
from phg2st_sc._validate import (
    check_choice,
    check_fraction,
    check_nonempty,
    check_positive_int,
    check_seed,
    check_unique_names,
    get_coordinates,
)

if TYPE_CHECKING:
    from spatialdata import SpatialData

STRATEGIES = ("random", "blocks")


def n_prompts_for(n_obs: int, fraction: float) -> int:
    """Number of prompt spots for a fraction: ``round(fraction * n_obs)``, at least 1 and at most ``n_obs - 1``."""
    return int(min(max(1, round(fraction * n_obs)), n_obs - 1))


def _random_prompts(n_obs: int, n: int, rng: np.random.Generator) -> np.ndarray:
    mask = np.zeros(n_obs, dtype=bool)
    mask[rng.choice(n_obs, size=n, replace=False)] = True
    return mask


def _block_prompts(coords: np.ndarray, n: int, n_blocks: int, rng: np.random.Generator) -> np.ndarray:
    """Grow ``n_blocks`` spatially contiguous patches from random seeds until ``n`` spots are chosen."""
    mask = np.zeros(len(coords), dtype=bool)
    sizes = np.full(n_blocks, n // n_blocks)
    sizes[: n % n_blocks] += 1
    for size in sizes[sizes > 0]:
        free = np.flatnonzero(~mask)
        seed = rng.choice(free)
        d = np.linalg.norm(coords[free] - coords[seed], axis=1)
        mask[free[np.argsort(d, kind="stable")[:size]]] = True
    return mask


@inject_docs
def select_prompts(
    adata: AnnData | SpatialData,
    *,
    fraction: float = 0.1,
    n_prompts: int | None = None,
    strategy: Literal["random", "blocks"] = "random",
    n_blocks: int = 5,
    mask: Sequence[bool] | np.ndarray | None = None,
    seed: int = 0,
    spatial_key: str = Keys.SPATIAL,
    key_added: str = Keys.PROMPT,
    table_key: str | None = None,
    overwrite: bool = False,
    copy: bool = False,
) -> AnnData | None:
    """Mark the spots whose measured expression is given to a method (the "prompts").

    The PHG2ST task measures expression at a small fraction of a section's spots (10% at test time) and predicts
    the rest. Every other spot is *held out* and is what an honest evaluation scores. Only measured spots can be
    prompts: virtual spots (``obs['phg2st_virtual']`` of :func:`phg2st_sc.pp.virtual_spots`) are never chosen,
    and fractions count measured spots.

    Parameters
    ----------
    {adata}
    fraction
        Fraction of spots to mark; the count is ``round(fraction * n_spots)``, at least 1 and leaving at least one
        spot held out.
    n_prompts
        Exact number of prompt spots instead of ``fraction``.
    strategy
        ``"random"``: a uniform random subset. ``"blocks"``: ``n_blocks`` spatially contiguous patches (a few
        regions profiled, the rest of the tissue unmeasured).
    n_blocks
        Number of patches for ``strategy="blocks"``.
    mask
        A boolean array of length ``n_spots`` giving the prompts directly; overrides the other options.
    seed
        Seed of the random generator: the same seed gives the same spots.
    spatial_key
        ``obsm`` key with spot coordinates (for ``"blocks"``).
    key_added
        ``obs`` column to write.
    {table_key}
    {overwrite}
    {copy}

    Returns
    -------
    {returns_copy}

    ``.obs['{{key_added}}']``
        Boolean, ``True`` for prompt spots (so that ``adata[adata.obs['phg2st_prompt']]`` and ``.sum()`` work).
        ``sc.pl.spatial`` colours it directly; squidpy's ``spatial_scatter`` reads a boolean column as colours and
        fails, so give it a categorical copy: ``adata.obs['prompt'] = adata.obs['phg2st_prompt'].astype('category')``.
    ``.uns['{{key_added}}']['params']``
        Strategy, seed, number and fraction of prompts.

    Examples
    --------
    >>> phg2st.tl.select_prompts(adata, fraction=0.1, seed=0)  # doctest: +SKIP
    >>> adata.obs["phg2st_prompt"].sum()  # doctest: +SKIP
    >>> adata.obs["prompt"] = adata.obs["phg2st_prompt"].astype("category")  # doctest: +SKIP
    >>> sq.pl.spatial_scatter(adata, color="prompt")  # doctest: +SKIP
    """
    adata = get_table(adata, table_key)
    check_nonempty(adata)
    check_unique_names(adata, var=False)
    if adata.n_obs < 2:
        raise ValueError("A section needs at least 2 spots: one prompt and one held-out spot.")
    measured = (
        ~adata.obs[Keys.VIRTUAL].to_numpy(dtype=bool) if Keys.VIRTUAL in adata.obs else np.ones(adata.n_obs, bool)
    )
    n_measured = int(measured.sum())
    if n_measured < 2 and mask is None:
        raise ValueError(
            f"The section has {n_measured} measured spots (the others are virtual): at least 2 are needed."
        )
    seed = check_seed(seed)
    slots = {("obs", key_added): "key_added", ("uns", key_added): "key_added"}
    check_slots(adata, slots, overwrite=overwrite, writer="tl.select_prompts")
    if mask is not None:
        chosen = np.asarray(mask)
        if chosen.dtype != bool:
            raise TypeError(f"`mask` must be boolean, got dtype {chosen.dtype}.")
        if chosen.shape != (adata.n_obs,):
            raise ValueError(f"`mask` must have length {adata.n_obs} (one entry per spot), got shape {chosen.shape}.")
        if not chosen.any():
            raise ValueError("`mask` marks no spot as a prompt.")
        if chosen.all():
            raise ValueError("`mask` marks every spot as a prompt; leave some spots to predict.")
        if (chosen & ~measured).any():
            raise ValueError(
                f"`mask` marks {int((chosen & ~measured).sum())} virtual spots (`obs[{Keys.VIRTUAL!r}]`) as prompts; "
                "virtual spots have no measured expression to give."
            )
        strategy_used = "mask"
    else:
        check_choice(strategy, "strategy", STRATEGIES)
        if n_prompts is not None:
            n = check_positive_int(n_prompts, "n_prompts")
            if n >= n_measured:
                raise ValueError(f"`n_prompts={n}` leaves no held-out spot among {n_measured} measured spots.")
        else:
            n = n_prompts_for(n_measured, check_fraction(fraction))
        rng = np.random.default_rng(seed)
        chosen = np.zeros(adata.n_obs, dtype=bool)
        if strategy == "random":
            chosen[measured] = _random_prompts(n_measured, n, rng)
        else:
            n_blocks = check_positive_int(n_blocks, "n_blocks")
            coords = get_coordinates(adata, spatial_key)[measured]
            chosen[measured] = _block_prompts(coords, n, min(n_blocks, n), rng)
        strategy_used = strategy
    params = {
        "strategy": strategy_used,
        "seed": int(seed),
        "n_prompts": int(chosen.sum()),
        "fraction": float(chosen.sum() / n_measured) if n_measured else 0.0,
    }
    writes = {("obs", key_added): chosen, ("uns", key_added): {"params": params}}
    return write_slots(adata, writes, copy=copy, overwrite=overwrite, names=slots, writer="tl.select_prompts")
