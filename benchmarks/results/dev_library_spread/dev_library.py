"""Twelfth round (docs/design.md; not adopted): the spread's spot scale reading each spot's library size predicted
from the prompts' measured library sizes, beside the predicted level (``benchmarks/dev_spread.py``'s runs).

Each spot's log library size (total counts over all genes) is predicted from the prompts' (simple kriging with the
layer's likelihood-chosen kernel, and a ridge on the layer's features, combined by non-negative least squares on
their cross-fitted predictions; cross-fitted at the prompts, so that the spot model is fitted on what it reads at
the other spots). Choices: "level" (the package), "library", "level + library"; the predictions are the layer's in
every case, only the spread differs. Scored as ``dev_spread.py`` scores it. 10% random prompts, seeds 0-2, both
targets; the networks of ``benchmarks/dev_transport.py``'s runs (``OUT/models``; trained there when absent).

    PHG2ST_DATA_DIR=../shared/data .venv/bin/python benchmarks/results/dev_library_spread/dev_library.py her2st \
        --out OUT_HER2ST --models DEV_TRANSPORT_HER2ST/models
    (and ``mob`` with the MOB networks; 3 and 8 minutes on the 2-core development machine, each beside another
    run; rows.csv in OUT is rows_her2st.csv / rows_mob.csv here, which summary.py reads)
"""

import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # benchmarks/
from dev_incontext import REP, dev_arguments, dev_setup, fold_models, layer_inputs
from dev_spread import held_out_metrics

from phg2st_sc._constants import Keys
from phg2st_sc._model import _incontext as ic
from phg2st_sc._utils import as_dense
from phg2st_sc.tl._evaluation import draw_prompts

orig = ic._spot_inputs


def lib_pred(xy, feats, prompt, t):
    folds = ic.prompt_folds(prompt.sum())
    t = t[:, None]
    mu, sd = t.mean(0), t.std(0)
    z = (t - mu) / sd
    ell, eta = ic.fit_kernel(xy[prompt], z)
    kr, kr_cv = ic.krige_cv(xy[prompt], z, xy, ell, eta, folds)
    rg, rg_cv, _ = ic.ridge_cv(feats[prompt], z, feats, folds)
    w = ic.combine({"k": kr_cv, "r": rg_cv}, z, folds)
    return (w["k"] * kr + w["r"] * rg)[:, 0], (w["k"] * kr_cv + w["r"] * rg_cv)[:, 0]


CHOICES = {"level": ("level",), "library": ("library",), "level + library": ("level", "library")}

ap = dev_arguments(__doc__)
ap.add_argument("--models", required=True)
args = ap.parse_args()
t0 = time.perf_counter()
out, secs = dev_setup(args)
rows = []
for proto, test, targets, model in fold_models(secs, args.dataset, args.protocols, Path(args.models)):
    for seed in args.seeds:
        a = targets[test].copy()
        draw_prompts(a, 0.1, seed, args.strategy, REP)
        prompt = a.obs[Keys.PROMPT].to_numpy(bool)
        layer_args, layer_kw = layer_inputs(model, a, prompt)  # what the adaptive variant passes to the layer
        _, latent, image, xy, _, _ = layer_args
        y = as_dense(a.X, dtype=np.float64)
        library = np.asarray(secs[test][a.obs_names].X.sum(1), dtype=float).ravel()
        loglib = np.log(np.maximum(library, 1.0))
        lat = latent.copy()
        lat[prompt] = layer_kw["latent_at_prompts"]
        feats = ic._features(lat, image)
        lp_all, lp_cv = lib_pred(xy, feats, prompt, loglib[prompt])
        n, p = len(xy), int(prompt.sum())
        for name, inputs in CHOICES.items():
            # the layer asks for the inputs at the prompts (p rows) and then at every spot (one block: n rows)
            def si(level, f, inputs=inputs, n=n, p=p, lp_cv=lp_cv, lp_all=lp_all):
                lib = lp_cv if len(level) == p else lp_all
                assert len(level) in (n, p) and n != p
                parts = {"level": level[:, None], "library": lib[:, None]}
                return np.hstack([parts[k] for k in inputs])

            ic._spot_inputs = si
            pred, fit = ic.adapt(*layer_args, **layer_kw)
            r = held_out_metrics(y, pred.astype(np.float64), fit.spread, ~prompt, library)
            r["lib_corr"] = float(np.corrcoef(lp_all[~prompt], loglib[~prompt])[0, 1])
            rows.append({"protocol": proto, "section": test, "seed": seed, "spot_scale": name, **r})
        ic._spot_inputs = orig
    last = pd.DataFrame(rows[-len(CHOICES) * len(args.seeds) :])
    print(
        f"{proto} {test}:",
        last.groupby("spot_scale", sort=False)[["coverage_80", "error_ratio", "library_bound", "lib_corr"]]
        .mean()
        .round(3)
        .to_dict("index"),
        flush=True,
    )
table = pd.DataFrame(rows)
table.to_csv(out / "rows.csv", index=False)
per = (
    table.groupby(["protocol", "spot_scale", "section"], sort=False)
    .mean(numeric_only=True)
    .drop(columns="seed")
    .reset_index()
)
g = per.groupby(["protocol", "spot_scale"], sort=False)
s = g[["coverage_80", "coverage_90", "width_90", "error_ratio", "library_bound", "lib_corr"]].mean().round(3)
s["cov80_min"] = g["coverage_80"].min().round(3)
s["cov80_max"] = g["coverage_80"].max().round(3)
s["ratio_min"] = g["error_ratio"].min().round(3)
print(s.to_string())
print(f"done in {time.perf_counter() - t0:.0f} s")
