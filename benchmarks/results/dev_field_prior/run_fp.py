"""Development run (docs/design.md, "A prompt field with the training sections' kernel"; not adopted).

Apply ``field_prior_component.patch`` to commit 9195675 first: it adds a sixth component to the in-context layer,
the prompt field kriged with a fixed kernel ``_incontext.DEV_PRIOR``. The kernel is the median over the dataset's
sections of each section's shared kernel (marginal likelihood over all its spots), an approximation of one fitted
on the training sections (nearly the same on every section). Last argument: ``prior`` (with the component) or
``none`` (the layer as it is, on the same networks). Random prompts, 10 / 20 / 30%, seeds 0-2.

    PHG2ST_DATA_DIR=../shared/data python run_fp.py her2st heldout random OUT models_her2st prior
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
_incontext.DEV_PRIOR = prior if sys.argv[6] == "prior" else None
_b._check_results_folder = lambda *a, **k: None  # dev: the folder holds a seeded embedding cache
kw = {
    "sections": list(names),
    "folds": "leave_one_section_out",
    "methods": ["phg2st_adaptive", "phg2st_adaptive_network"],
    "protocols": [proto],
    "prompt_fractions": [0.1, 0.2, 0.3],
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
