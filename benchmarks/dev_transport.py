"""Prototype: the layer's weights chosen at the distance of prediction (issue 15/16 development, not a method yet).

For each fold, seed and prompt strategy: the layer as it is; and the same components with each component's
covariance with the truth transported from the prompts (a calibration slope over the cross-fitted predictions,
within folds) to the spots it predicts (times the component's own variance there), the Gram matrix of the
components computed at those spots, and the weights minimising the implied squared error there.

    PHG2ST_DATA_DIR=../shared/data .venv/bin/python benchmarks/dev_transport.py mob --out DIR
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.optimize import nnls

from phg2st_sc._constants import Keys
from phg2st_sc._model import _incontext
from phg2st_sc._utils import as_dense
from phg2st_sc.tl._evaluation import draw_prompts

sys.path.insert(0, str(Path(__file__).parent))
from dev_incontext import REP, dev_arguments, dev_setup, fold_models, layer_inputs

COMP = list(_incontext.COMPONENTS)


def standardised(captured: dict, comps: dict, prompt: np.ndarray) -> tuple[np.ndarray, dict, dict]:
    """Per-gene standardised on the prompts' mean and sd: the prompts' values within folds, and per component its
    cross-fitted predictions within folds and its predictions at the non-prompt spots centred there."""
    cv, y, folds = captured["cv"], captured["y"], captured["folds"]
    mu, sd = y.mean(0), np.where(y.std(0) > 0, y.std(0), 1.0)
    at_prompts, held = {}, {}
    for c in COMP:
        at_prompts[c] = _incontext._within_folds((cv[c] - mu) / sd, folds)
        x = (comps[c][~prompt] - mu) / sd
        held[c] = x - x.mean(0)
    return _incontext._within_folds((y - mu) / sd, folds), at_prompts, held


def transported(captured: dict, comps: dict, prompt: np.ndarray, pooled: bool) -> tuple[dict, dict]:
    """Weights (shared by genes) and each candidate's predicted per-gene PCC at the non-prompt spots."""
    t, at_prompts, h = standardised(captured, comps, prompt)
    beta, var = {}, {}
    for c in COMP:
        a = at_prompts[c]
        den = (a * a).sum(0)
        if pooled:
            beta[c] = np.full(t.shape[1], (a * t).sum() / max(den.sum(), 1e-12))
        else:
            beta[c] = np.where(den > 1e-12, (a * t).sum(0) / np.where(den > 1e-12, den, 1.0), 0.0)
        var[c] = (h[c] ** 2).mean(0)
    b = np.stack([beta[c] * var[c] for c in COMP], 1)  # (genes, components)
    stacked = np.stack([h[c] for c in COMP], 2)
    gram = np.einsum("ngc,ngd->gcd", stacked, stacked) / len(stacked)
    q, r = gram.sum(0), b.sum(0)
    lam = np.linalg.cholesky(q + 1e-9 * np.trace(q) * np.eye(len(COMP)))
    w, _ = nnls(lam.T, np.linalg.solve(lam, r))

    def rho(wv):
        num = b @ wv
        den = np.sqrt(np.maximum(np.einsum("c,gcd,d->g", wv, gram, wv), 1e-12))
        return num / den

    singles = {c: rho(np.eye(len(COMP))[k]) for k, c in enumerate(COMP)}
    singles["combined"] = rho(w) if w.any() else singles["network"]
    return dict(zip(COMP, w, strict=True)), singles


def slopes(captured: dict, comps: dict, prompt: np.ndarray, y_all: np.ndarray) -> dict:
    """Per component: the calibration slope of the truth on the component (pooled over genes, per-gene standardised)
    over the prompts (cross-fitted, within folds) and over the non-prompt spots (reads their values: a diagnosis),
    the PCC the transport predicts there and the PCC there."""
    t, at_prompts, held = standardised(captured, comps, prompt)
    y = captured["y"]
    yh = (y_all[~prompt] - y.mean(0)) / np.where(y.std(0) > 0, y.std(0), 1.0)
    yh = yh - yh.mean(0)
    out = {}
    for c in COMP:
        f, x = at_prompts[c], held[c]
        beta = (f * t).sum() / max((f * f).sum(), 1e-12)
        out[c] = {"beta_prompts": beta, "beta_heldout": (x * yh).sum() / max((x * x).sum(), 1e-12),
                  "predicted_pcc": float(np.mean(beta * x.std(0))), "pcc": float(_incontext._pcc_genes(x, yh).mean()),
                  "cv_pcc": float(_incontext._pcc_genes(f, t).mean())}  # fmt: skip
    return out


@contextmanager
def without_ridge() -> Iterator[None]:
    """The layer's combination and safeguard without the ridge (its weight 0), within the block."""
    combine, safeguard = _incontext.combine, _incontext._safeguard

    def drop(cv: dict) -> dict:
        return {c: v for c, v in cv.items() if c != "ridge"}

    _incontext.combine = lambda cv, target, folds, **k: combine(drop(cv), target, folds, **k) | {"ridge": 0.0}
    _incontext._safeguard = lambda w, cv, y, folds, **k: (
        lambda out: (out[0] | {"ridge": 0.0}, out[1]))(safeguard(drop(w), drop(cv), y, folds, **k))  # fmt: skip
    try:
        yield
    finally:
        _incontext.combine, _incontext._safeguard = combine, safeguard


def choose(w: dict, pred: dict) -> dict:
    """The safeguard on predicted scores: combination if clearly above the best single, else that if clearly above
    the network, else the network."""
    best = max(COMP, key=lambda c: pred[c].mean())
    if _incontext._clearly_better(pred["combined"], pred[best]):
        return w
    if best != "network" and not _incontext._clearly_better(pred[best], pred["network"]):
        best = "network"
    return {c: float(c == best) for c in COMP}


def main() -> None:
    ap = dev_arguments(__doc__)
    ap.add_argument("--fractions", type=float, nargs="+", default=[0.1])
    ap.add_argument("--strategies", nargs="+", default=["random", "variance"])
    ap.add_argument("--sections", nargs="*", default=None)
    ap.add_argument("--no-ridge", action="store_true", help="also the layer without its ridge component")
    ap.add_argument("--slopes", action="store_true", help="print each component's calibration slopes (diagnosis)")
    args = ap.parse_args()
    t0 = time.perf_counter()
    out, secs = dev_setup(args)
    rows = []
    captured: dict = {}
    keep = _incontext._safeguard

    def spy(w, cv, y, folds):
        captured.update(cv=cv, y=y, folds=folds)
        return keep(w, cv, y, folds)

    _incontext._safeguard = spy
    for proto, test, targets, model in fold_models(secs, args.dataset, args.protocols, out / "models"):
        if args.sections and test not in args.sections:
            continue
        a = targets[test].copy()
        y_all = as_dense(a.X, dtype=np.float64)
        for strategy in args.strategies:
            for frac in args.fractions:
                for seed in args.seeds:
                    draw_prompts(a, frac, seed, strategy, REP)
                    prompt = a.obs[Keys.PROMPT].to_numpy(bool)
                    if prompt.sum() < _incontext.MIN_PROMPTS:  # the layer keeps the network: no components
                        continue
                    inputs, kwargs = layer_inputs(model, a, prompt)
                    y = inputs[5]
                    outp, fit = _incontext.adapt(*inputs, keep_components=True, **kwargs)
                    comps = fit.components
                    preds = {"layer": outp.astype(float), **{f"c:{c}": comps[c] for c in COMP}}
                    for pooled in (False, True):
                        w, pr = transported(captured, comps, prompt, pooled)
                        mu = y.mean(0)
                        tag = "pooled" if pooled else "gene"
                        preds[f"transport_{tag}"] = mu + sum(w[c] * (comps[c] - mu) for c in COMP)
                        ws = choose(w, pr)
                        preds[f"transport_{tag}_safe"] = mu + sum(ws[c] * (comps[c] - mu) for c in COMP)
                        if pooled:
                            wsp, wp = ws, w
                    if args.slopes:
                        for c, v in slopes(captured, comps, prompt, y_all).items():
                            print(f"  {c:10s} " + " ".join(f"{k} {x:.3f}" for k, x in v.items()))
                    if args.no_ridge:  # the layer with the ridge left out of the combination and of the safeguard
                        with without_ridge():
                            preds["layer_no_ridge"], _ = _incontext.adapt(*inputs, **kwargs)
                    held = ~prompt
                    base = {"protocol": proto, "section": test, "strategy": strategy, "fraction": frac, "seed": seed}
                    for m, p in preds.items():
                        pcc = _incontext._pcc_genes(p[held], y_all[held])
                        keepg = y_all[held].std(0) > 0
                        rows.append({**base, "method": m, "pcc": float(pcc[keepg].mean())})
                    print(f"{proto} {test} {strategy} {frac} {seed}: "
                          + " ".join(f"{r['method']} {r['pcc']:.3f}" for r in rows[-len(preds):])
                          + f" | layer w {({k: round(v, 2) for k, v in fit.weights.items()})}"
                          + f" | pooled w {({k: round(v, 2) for k, v in wp.items()})} safe {({k: round(v, 2) for k, v in wsp.items()})}",
                          flush=True)  # fmt: skip
    table = pd.DataFrame(rows)
    table.to_csv(out / "rows.csv", index=False)
    per = table.groupby(["protocol", "strategy", "fraction", "method", "section"], sort=False)["pcc"].mean()
    print(
        per.groupby(["protocol", "strategy", "fraction", "method"], sort=False)
        .mean()
        .unstack("method")
        .round(3)
        .T.to_string()
    )
    print(f"done in {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
