"""Would a component that reads the image features beside the prompts add to the in-context layer? (issue 15)

The bound of ``prompt_bound.py`` closes the kriging family; this closes the histology side of the prompts. For each
draw (leave one section out on her2st C2-C6 or MOB1-4, random prompts, the development networks of
``dev_incontext.py`` kept in ``OUT/models``) the layer runs once with its components kept, and candidate components
are made from the same prompts:

- ``knn``: the mean of the k = round(sqrt(p)) prompts nearest in feature space (at least 3);
- ``feature_nw``: a Nadaraya-Watson average of the prompts with a Gaussian kernel in feature space;
- ``product_nw``: the same with a kernel in space (one prompt spacing) times the kernel in feature space;
- ``network_product_nw``: the network (re-centred on the prompts) plus that average of its residuals at the prompts.

Each from two feature spaces: the layer's ridge features (``_incontext._features``: the network's tokens, the
prompts' cross-fitted, and the image features; ``_layer``) and the image features alone (``_image``). The feature
kernel's variance is a quarter of the median squared distance from a spot to a prompt in that space (not tuned: an
exploration before this script took the prompts' distances to each other, with the same outcome). Scored on the held-out spots (mean PCC over the genes that vary there): the layer, each
candidate alone, and the layer's form (non-negative weights shared by the genes on per-gene standardised
components) with the weights fitted on the held-out values (``dev_incontext.oracle_combination``), over the layer's
eight components (``oracle``) and over them plus one candidate (``oracle+NAME``). The oracle reads the held-out
values: a bound of what the candidate could add to the combination, not a method.

    PHG2ST_DATA_DIR=../shared/data .venv/bin/python benchmarks/dev_feature_components.py her2st --out DIR
    PHG2ST_DATA_DIR=../shared/data .venv/bin/python benchmarks/dev_feature_components.py mob --out DIR
"""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
from dev_incontext import dev_arguments, fold_draws, oracle_combination

from phg2st_sc._model import _incontext
from phg2st_sc._utils import spot_pitch


def _sqdist(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.maximum((a * a).sum(1)[:, None] + (b * b).sum(1)[None] - 2.0 * a @ b.T, 0.0)


def _average(weights: np.ndarray, values: np.ndarray) -> np.ndarray:
    return (weights @ values) / np.maximum(weights.sum(1, keepdims=True), 1e-300)


def candidates(feats: np.ndarray, xy: np.ndarray, prompt: np.ndarray, y_p: np.ndarray, network: np.ndarray,
               at_prompts: np.ndarray) -> dict[str, np.ndarray]:  # fmt: skip
    """The candidate components from one feature space (spots x features), each (spots, genes)."""
    p = int(prompt.sum())
    d_f = _sqdist(feats, feats[prompt])
    k = max(3, round(np.sqrt(p)))
    nearest = np.argsort(d_f, axis=1, kind="stable")[:, :k]
    w_f = np.exp(-d_f / (2.0 * 0.25 * np.median(d_f)))
    pitch = spot_pitch(xy[prompt])  # the prompts' median spacing
    w_xy = np.exp(-_sqdist(xy, xy[prompt]) / (2.0 * pitch**2))
    offset = y_p.mean(0) - at_prompts.mean(0)
    resid = y_p - (at_prompts + offset)
    return {
        "knn": y_p[nearest].mean(1),
        "feature_nw": _average(w_f, y_p),
        "product_nw": _average(w_f * w_xy, y_p),
        "network_product_nw": network + offset + _average(w_f * w_xy, resid),
    }


def main() -> None:
    ap = dev_arguments(__doc__)
    ap.add_argument("--fractions", type=float, nargs="+", default=[0.1, 0.2])
    args = ap.parse_args()
    t0 = time.perf_counter()
    out, folds = fold_draws(args, args.fractions)
    rows = []
    for proto, test, _, _, y, draws in folds:
        for fraction, seed, prompt, score, (net, latent, image, xy, _, y_p), kw in draws:
            pred, fit = _incontext.adapt(net, latent, image, xy, prompt, y_p, keep_components=True, **kw)
            base = dict(fit.components)
            tokens = latent.copy()
            if kw["latent_at_prompts"] is not None:  # the ridge's features: the prompts' tokens cross-fitted
                tokens[prompt] = kw["latent_at_prompts"]
            at_p = net[prompt] if kw["network_at_prompts"] is None else kw["network_at_prompts"]
            new = {}
            for space, feats in (
                ("layer", _incontext._features(tokens, image)),
                ("image", _incontext._features(image, None)),
            ):
                new |= {f"{c}_{space}": v for c, v in candidates(feats, xy, prompt, y_p, net, at_p).items()}  # fmt: skip
            row = {"protocol": proto, "section": test, "fraction": fraction, "seed": seed,
                   "layer": score(pred.astype(np.float64)), "network": score(base["network"]),
                   "oracle": score(oracle_combination(base, y, ~prompt))}  # fmt: skip
            for name, value in new.items():
                row[name] = score(value)
                row[f"oracle+{name}"] = score(oracle_combination(base | {name: value}, y, ~prompt))
            rows.append(row)
        done = pd.DataFrame(rows[-len(args.fractions) * len(args.seeds) :])
        best = max((c for c in done.columns if c.startswith("oracle+")), key=lambda c: done[c].mean())
        print(f"{proto} {test}: layer {done['layer'].mean():.3f}, oracle {done['oracle'].mean():.3f}, "
              f"best with a candidate {done[best].mean():.3f} ({best})", flush=True)  # fmt: skip
    table = pd.DataFrame(rows)
    table.to_csv(out / "rows.csv", index=False)
    per = table.groupby(["protocol", "fraction", "section"]).mean(numeric_only=True).drop(columns="seed")
    summary = per.groupby(["protocol", "fraction"]).mean().T
    with pd.option_context("display.width", 200):
        print(summary.round(3).to_string())
    gains = summary.loc[[c for c in summary.index if c.startswith("oracle+")]] - summary.loc["oracle"]
    print("largest gain of the oracle from one candidate per cell:\n" + gains.max().round(4).to_string())
    print(f"done in {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
