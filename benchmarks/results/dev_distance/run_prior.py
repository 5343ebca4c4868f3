"""Development runs of docs/design.md's sixth and seventh rounds (not adopted): the layer with a fixed kernel.

The kernel is the median over the dataset's sections of each section's shared kernel (marginal likelihood over all
its spots), an approximation of one fitted on the training sections (her2st C2-C6, unsmoothed: length scales
1.49-1.96 pitches, noise ratios 10 and 21.5, median 21.5; smoothed: 1.96 pitches and 0.1 on every section). It is
handed to the layer as ``_incontext.DEV_PRIOR``, which only exists with one of the patches applied (to commit
2de5092 or later, where ``_incontext.py`` is unchanged):

- sixth round, ``distance_shrink.patch`` (this folder): the kriged components compared at the spots' distance;
- seventh round, ``../dev_field_prior/field_prior_component.patch``: a sixth component, the prompt field with that
  kernel.

Arguments: dataset, protocol, prompt strategy, results folder, model cache, then optionally ``prior`` (default) or
``none`` (``DEV_PRIOR`` left unset: the layer as it is, on the same networks) and the prompt fractions (default
0.05 0.1 0.2). ``TILES`` in the environment: a tile embedding cache shared with other runs (default
``OUT/embedding_cache``).

    PHG2ST_DATA_DIR=../shared/data python run_prior.py her2st heldout variance OUT models_her2st
    PHG2ST_DATA_DIR=../shared/data python run_prior.py her2st heldout random OUT models_her2st none 0.1 0.2 0.3
"""

import os
import sys
from pathlib import Path

import numpy as np

import phg2st_sc as phg2st
from phg2st_sc._model import _incontext
from phg2st_sc._utils import as_dense, spot_pitch
from phg2st_sc.tl._benchmark import _resolve_panel

sys.path.insert(0, str(Path(__file__).parents[2]))  # benchmarks/
from design_bound import DATASETS, SECTIONS, gene_kernels, load

dataset, proto, strategy, out, cache = sys.argv[1:6]
names = SECTIONS[dataset]
secs = {n: load(dataset, n) for n in names}
panel = _resolve_panel("auto", DATASETS[dataset], secs)  # the benchmark's panel of the dataset
ells, etas = [], []
for a in secs.values():
    t = phg2st.tl.prepare_targets(a, proto, panel=panel)
    xy = np.asarray(t.obsm["spatial"], float)
    l, e = gene_kernels(xy / spot_pitch(xy), as_dense(t.X, dtype=np.float64), per_gene=False)
    ells.append(l[0])
    etas.append(e[0])
prior = (float(np.median(ells)), float(np.median(etas)))
print("prior kernel", prior, ells, etas, flush=True)
_incontext.DEV_PRIOR = prior if (sys.argv[6:7] or ["prior"])[0] == "prior" else None
tiles = os.environ.get("TILES", out + "/embedding_cache")
kw = {
    "sections": list(names),
    "folds": "leave_one_section_out",
    "methods": ["phg2st_adaptive", "phg2st_adaptive_network"],
    "protocols": [proto],
    "prompt_fractions": [float(f) for f in sys.argv[7:]] or [0.05, 0.1, 0.2],
    "prompt_strategy": strategy,
    "seeds": [0, 1, 2],
    "fit_kwargs": {"hidden": 128, "max_epochs": 100},
    "out": out,
    "model_cache": cache,
    "embed_kwargs": {"cache_dir": tiles} | ({"mpp": 0.9} if dataset == "mob" else {}),
}
phg2st.tl.benchmark(DATASETS[dataset], **kw)
print("DONE", flush=True)
