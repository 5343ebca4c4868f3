"""Development runs of the spread's spot scale (issue 16): what it reads beside the kriging variance.

Leave one section out on her2st C2-C6 or MOB1-4, the propagated network under the in-context layer (the adaptive
variant's), trained once per fold and target and kept in ``OUT/models`` (the names of ``dev_incontext.py``, so
its networks can be reused). For each prompt seed the layer runs once per choice of the spot scale's inputs
(``_incontext.SPOT_INPUTS``: none, i.e. the kriging standard deviation alone; the predicted level; the features'
principal components; both; the level read from the network's prediction or in the targets' units,
``_incontext.LEVEL``; ``--choices`` runs some of them); the predictions are the same, only the spread differs. Scored on held-out spots as
``phg2st benchmark`` scores it (``tl._evaluation.uncertainty_metrics``: coverage of the 80% and 90% intervals, the
90% interval's width, the error ratio of the 20% least against the 20% most certain spots), with the error ratio
of a ranking by the held-out spots' true library sizes beside them (a reference that reads their counts, not a
method).

    PHG2ST_DATA_DIR=../shared/data .venv/bin/python benchmarks/dev_spread.py her2st --out dev_spread_her2st
    PHG2ST_DATA_DIR=../shared/data .venv/bin/python benchmarks/dev_spread.py mob --out dev_spread_mob
    PHG2ST_DATA_DIR=../shared/data .venv/bin/python benchmarks/dev_spread.py mob --choices level \
        "network's level" "level in the targets' units" --out dev_level_mob
"""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
from dev_incontext import REP, dev_arguments, dev_setup, fold_models

from phg2st_sc._constants import Keys
from phg2st_sc._model import _incontext
from phg2st_sc._utils import as_dense, spot_pitch
from phg2st_sc.tl._evaluation import draw_prompts

CHOICES = {  # what the spot scale reads, and where the level is read from (``_incontext.LEVEL``)
    "kriging sd alone": ((), "combination"),
    "level": (("level",), "combination"),
    "features": (("features",), "combination"),
    "level + features": (("level", "features"), "combination"),
    "network's level": (("level",), "network"),
    "level in the targets' units": (("level",), "units"),
}


def error_ratio(per_spot_error: np.ndarray, rank_by: np.ndarray) -> float:
    """Mean error of the 20% of spots ranked highest by ``rank_by`` over that of the 20% ranked lowest."""
    order = np.argsort(rank_by)
    k = max(len(order) // 5, 1)
    return float(per_spot_error[order[-k:]].mean() / per_spot_error[order[:k]].mean())


def held_out_metrics(y: np.ndarray, out: np.ndarray, spread, held: np.ndarray, library: np.ndarray) -> dict:
    """The benchmark's uncertainty metrics on the held-out spots (the formulas of ``uncertainty_metrics``), and
    the error ratio of a ranking by the spots' own library sizes, smallest first (a reference: it reads the held-out
    spots' counts, which no method has)."""
    err, std = np.abs(y[held] - out[held]), spread.std()[held].astype(np.float64)
    row = {f"coverage_{int(100 * c)}": float((err <= spread.quantile(c) * std).mean()) for c in (0.8, 0.9)}
    row["width_90"] = float(2.0 * spread.quantile(0.9) * std.mean())
    row["error_ratio"] = error_ratio(err.mean(1), std.mean(1))
    row["library_bound"] = error_ratio(err.mean(1), -np.log(np.maximum(library[held], 1.0)))
    return row


def main() -> None:
    ap = dev_arguments(__doc__)
    ap.add_argument("--fractions", type=float, nargs="+", default=[0.1])
    ap.add_argument("--choices", nargs="+", choices=list(CHOICES), default=list(CHOICES), help="spot scales run")
    args = ap.parse_args()
    choices = args.choices
    t0 = time.perf_counter()
    out, secs = dev_setup(args)
    rows = []
    for proto, test, targets, model in fold_models(secs, args.dataset, args.protocols, out / "models"):
        for fraction in args.fractions:
            for seed in args.seeds:
                a = targets[test].copy()
                draw_prompts(a, fraction, seed, args.strategy, REP)
                prompt = a.obs[Keys.PROMPT].to_numpy(bool)
                import torch

                net, latent = model.predict(a, prompt, network_only=True)
                with torch.inference_mode():
                    oof, tokens = model._cross_fitted(model.tensors(a, prompt=prompt), prompt, "cpu", (net, latent))
                y = as_dense(a.X, dtype=np.float64)
                library = np.asarray(secs[test][a.obs_names].X.sum(1), dtype=float).ravel()
                xy = np.asarray(a.obsm[Keys.SPATIAL], dtype=float)
                for name in choices:
                    _incontext.SPOT_INPUTS, _incontext.LEVEL = CHOICES[name]
                    pred, fit = _incontext.adapt(net.astype(float), latent, np.asarray(a.obsm[REP], float),
                                                 xy / spot_pitch(xy), prompt, y[prompt], network_at_prompts=oof,
                                                 latent_at_prompts=tokens)  # fmt: skip
                    r = held_out_metrics(y, pred.astype(np.float64), fit.spread, ~prompt, library)
                    rows.append({"protocol": proto, "section": test, "fraction": fraction, "seed": seed,
                                 "spot_scale": name, **r})  # fmt: skip
        last = pd.DataFrame(rows[-len(choices) * len(args.seeds) * len(args.fractions) :])
        print(f"{proto} {test}:", last.groupby("spot_scale", sort=False)[["coverage_80", "error_ratio"]]
              .mean().round(3).to_dict("index"), flush=True)  # fmt: skip
    table = pd.DataFrame(rows)
    table.to_csv(out / "rows.csv", index=False)
    per = table.groupby(["protocol", "fraction", "spot_scale", "section"], sort=False).mean(numeric_only=True)
    per = per.drop(columns="seed").reset_index()
    g = per.groupby(["protocol", "fraction", "spot_scale"], sort=False)
    summary = g[["coverage_80", "coverage_90", "width_90", "error_ratio", "library_bound"]].mean().round(3)
    summary["coverage_80_min"] = g["coverage_80"].min().round(3)
    summary["error_ratio_min"] = g["error_ratio"].min().round(3)
    print(summary.to_string())
    print(f"done in {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
