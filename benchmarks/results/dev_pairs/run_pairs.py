"""Development run of docs/design.md's eighth round (not adopted): designs with a share of the budget in close pairs.

The benchmark's variance and space-filling designs replaced by the same design with ``PAIRS`` (default 0.2) of the
budget spent on partners: each the nearest free spot of a design prompt drawn at random (seeded). The layer and
the networks as they are (the cached networks of the final runs).

    PHG2ST_DATA_DIR=../shared/data python run_pairs.py her2st variance OUT models_her2st
    PHG2ST_DATA_DIR=../shared/data python run_pairs.py mob variance OUT models_mob

``TILES`` in the environment: a tile embedding cache shared with other runs (default ``OUT/embedding_cache``).
"""

import os
import sys

import numpy as np
from scipy.spatial import cKDTree

import phg2st_sc as phg2st
import phg2st_sc.tl._evaluation as _ev
from phg2st_sc._utils import spot_pitch

PAIRS = float(os.environ.get("PAIRS", "0.2"))
original = _ev.draw_prompts


def draw(adata, fraction, seed, strategy, use_rep=None):
    if strategy not in ("variance", "space"):
        return original(adata, fraction, seed, strategy, use_rep)
    from phg2st_sc.tl._design import design_prompts
    from phg2st_sc.tl._prompts import n_prompts_for, select_prompts

    n = n_prompts_for(adata.n_obs, fraction)
    m = int(round(PAIRS * n))
    design = design_prompts(adata, budget=n - m, strategy=strategy, seed=seed, copy=True)
    mask = design.obs["phg2st_design"].to_numpy(bool).copy()
    xy = np.asarray(adata.obsm["spatial"], float)
    xy = xy / spot_pitch(xy)
    rng = np.random.default_rng(seed)
    for c in rng.choice(np.flatnonzero(mask), m, replace=False):
        free = np.flatnonzero(~mask)
        j = free[cKDTree(xy[free]).query(xy[c])[1]]
        mask[j] = True
    assert mask.sum() == n
    select_prompts(adata, mask=mask)


_ev.draw_prompts = draw
dataset, strategy, out, cache = sys.argv[1:5]
tiles = os.environ.get("TILES", out + "/embedding_cache")
names = ("C2", "C3", "C4", "C5", "C6") if dataset == "her2st" else ("MOB1", "MOB2", "MOB3", "MOB4")
emb = {"cache_dir": tiles} | ({"mpp": 0.9} if dataset == "mob" else {})
phg2st.tl.benchmark(
    "her2st" if dataset == "her2st" else "stutility_mob",
    sections=list(names),
    folds="leave_one_section_out",
    methods=["phg2st_adaptive", "phg2st_adaptive_network"],
    prompt_fractions=[0.1, 0.2],
    prompt_strategy=strategy,
    seeds=[0, 1, 2],
    fit_kwargs={"hidden": 128, "max_epochs": 100},
    out=out,
    model_cache=cache,
    embed_kwargs=emb,
)
print("DONE", flush=True)
