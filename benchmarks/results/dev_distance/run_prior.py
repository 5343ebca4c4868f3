"""Development run of docs/design.md's sixth round (not adopted): the distance shrink under one kernel per protocol.

Apply ``distance_shrink.patch`` to commit 2de5092 first (it adds ``_incontext.DEV_PRIOR``). The kernel is the median
over the dataset's sections of each section's shared kernel (marginal likelihood over all its spots), an
approximation of a kernel fitted on the training sections (her2st C2-C6, unsmoothed: length scales 1.49-1.96
pitches, noise ratios 10 and 21.5, median 21.5; smoothed: 1.96 pitches and 0.1 on every section).

    PHG2ST_DATA_DIR=../shared/data python run_prior.py her2st heldout variance OUT models_her2st
"""

import sys
import warnings

import numpy as np

import phg2st_sc as phg2st
import phg2st_sc.tl._benchmark as _b
from phg2st_sc._model import _incontext
from phg2st_sc._utils import as_dense, spot_pitch

dataset, proto, strategy, out, cache = sys.argv[1:6]
names = ("C2", "C3", "C4", "C5", "C6") if dataset == "her2st" else ("MOB1", "MOB2", "MOB3", "MOB4")
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    secs = {n: (phg2st.datasets.her2st(n) if dataset == "her2st" else phg2st.datasets.stutility_mob(n)) for n in names}
panel = "her2st_785" if dataset == "her2st" else phg2st.pp.top_expressed_genes(list(secs.values()), n_top=1000)
ells, etas = [], []
for a in secs.values():
    t = phg2st.tl.prepare_targets(a, proto, panel=panel)
    xy = np.asarray(t.obsm["spatial"], float)
    xy = xy / spot_pitch(xy)
    y = as_dense(t.X, dtype=np.float64)
    sd = y.std(0)
    z = (y[:, sd > 0] - y[:, sd > 0].mean(0)) / sd[sd > 0]
    l, e = _incontext.fit_kernel(xy, z)
    ells.append(l[0])
    etas.append(e[0])
prior = (float(np.median(ells)), float(np.median(etas)))
print("prior kernel", prior, ells, etas, flush=True)
_incontext.DEV_PRIOR = prior
_b._check_results_folder = lambda *a, **k: None  # dev: the folder holds a seeded embedding cache
kw = {
    "sections": list(names),
    "folds": "leave_one_section_out",
    "methods": ["phg2st_adaptive", "phg2st_adaptive_network"],
    "protocols": [proto],
    "prompt_fractions": [0.05, 0.1, 0.2],
    "prompt_strategy": strategy,
    "seeds": [0, 1, 2],
    "fit_kwargs": {"hidden": 128, "max_epochs": 100},
    "out": out,
    "model_cache": cache,
    "embed_kwargs": {"mpp": 0.9, "cache_dir": out + "/embedding_cache"}
    if dataset == "mob"
    else {"cache_dir": out + "/embedding_cache"},
}
phg2st.tl.benchmark("her2st" if dataset == "her2st" else "stutility_mob", **kw)
print("DONE", flush=True)
