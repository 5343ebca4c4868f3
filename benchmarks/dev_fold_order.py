"""How much the adaptive layer's result depends on the order in which the spots are listed.

The layer compares its components on cross-fitted predictions over five folds of the prompts
(``_incontext.prompt_folds``: a fixed random split of the prompts' indices), so listing the same spots in another
order gives other folds, and possibly other weights and another safeguard decision. The network itself does not
depend on the order. (Since 2026-12-06 ``tl.impute`` deals the folds over the spots' names, so that a user's order
no longer matters; this script calls the layer without the names, so each order here is another split.) Leave one section out on her2st C2-C6 or MOB1-4, random prompts at 10%, seeds 0-2, the
development networks of ``dev_incontext.py`` kept in ``OUT/models``: for each draw the layer runs on the spots as the
reader lists them (``original``, the order of every benchmark table) and on ``--orders`` random orders of the same
spots (``order_k``; the network's prediction, tokens, cross-fitted passes, features and coordinates permuted alike),
each scored on the held-out spots in the original order (mean PCC over the genes that vary there), with the network
alone beside them (``network``). A reordered section is the AnnData indexed by the order (``adata[order]``: its
hypergraph and features follow), passed through the network again, so that its cross-fitted passes use the new
folds too: what a user who sorts the spots otherwise gets. ``--bagged`` also scores the mean of the predictions
over the original and the first 2, 4 and all orders (``bagged_3``, ``bagged_5``, ...): what averaging the layer over
several fold splits would give.

    PHG2ST_DATA_DIR=../shared/data .venv/bin/python benchmarks/dev_fold_order.py her2st --out DIR
    PHG2ST_DATA_DIR=../shared/data .venv/bin/python benchmarks/dev_fold_order.py mob --out DIR
"""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
from dev_incontext import dev_arguments, fold_draws, layer_inputs

from phg2st_sc._model import _incontext


def main() -> None:
    ap = dev_arguments(__doc__)
    ap.add_argument("--orders", type=int, default=8, help="random orders of the spots per draw")
    ap.add_argument("--bagged", action="store_true", help="also score predictions averaged over the orders")
    args = ap.parse_args()
    t0 = time.perf_counter()
    out, folds = fold_draws(args, [0.1])
    rows = []
    for proto, test, model, a, _, draws in folds:
        for fraction, seed, prompt, score, inputs, kwargs in draws:
            pred, fit = _incontext.adapt(*inputs, **kwargs)
            row = {"protocol": proto, "section": test, "fraction": fraction, "seed": seed,
                   "network": score(inputs[0]), "original": score(pred.astype(np.float64)),
                   "original_kept": fit.cv_pcc.get("kept")}  # fmt: skip
            preds = [pred.astype(np.float64)]
            for k in range(args.orders):
                order = np.random.default_rng(100 + k).permutation(a.n_obs)
                b = a[order].copy()
                inputs_k, kwargs_k = layer_inputs(model, b, prompt[order])
                pred_k, fit_k = _incontext.adapt(*inputs_k, **kwargs_k)
                back = np.empty(pred_k.shape)
                back[order] = pred_k
                preds.append(back)
                row[f"order_{k}"], row[f"order_{k}_kept"] = score(back), fit_k.cv_pcc.get("kept")
            if args.bagged:
                for m in sorted({3, 5, args.orders + 1}):
                    row[f"bagged_{m}"] = score(np.mean(preds[:m], axis=0))
            rows.append(row)
        done = pd.DataFrame(rows[-len(args.seeds) :])
        orders = done[[f"order_{k}" for k in range(args.orders)]]
        print(f"{proto} {test}: network {done['network'].mean():.4f}, original {done['original'].mean():.4f}, "
              f"other orders {orders.to_numpy().mean():.4f} ({orders.mean().min():.4f}-{orders.mean().max():.4f})",
              flush=True)  # fmt: skip
    table = pd.DataFrame(rows)
    table.to_csv(out / "rows.csv", index=False)
    cols = [f"order_{k}" for k in range(args.orders)]
    table["orders_mean"] = table[cols].mean(1)
    table["range"] = table[cols + ["original"]].max(1) - table[cols + ["original"]].min(1)
    table["rank_of_original"] = (table[cols].to_numpy() > table[["original"]].to_numpy()).sum(1)  # 0: the best
    per = table.groupby(["protocol", "section"]).mean(numeric_only=True).drop(columns=["seed", "fraction"])
    bagged = [c for c in table.columns if c.startswith("bagged_")]
    summary = per.groupby("protocol")[["network", "original", "orders_mean", *cols, "range", *bagged]].mean()
    with pd.option_context("display.width", 200):
        print(summary.T.round(4).to_string())
    for proto, g in table.groupby("protocol"):
        print(f"{proto}: original minus the other orders' mean {(g['original'] - g['orders_mean']).mean():+.4f} "
              f"(per draw sd {(g['original'] - g['orders_mean']).std():.4f}, {len(g)} draws); the original above "
              f"the orders' mean on {(g['original'] > g['orders_mean']).sum()} draws; largest range in one draw "
              f"{g['range'].max():.4f}; cells where the original beats all {args.orders} orders: "
              f"{(summary.loc[proto, 'original'] > summary.loc[proto, cols]).all()}")  # fmt: skip
    print(f"done in {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
