"""Local kriging against exact kriging, and systems shared by groups of spots against one system per spot.

The in-context layer kriges from each spot's nearest prompts above ``EXACT_MAX`` prompts (``_incontext.
_local_systems``): groups of ``LOCAL_GROUP`` neighbouring spots share one system on the union of their
``LOCAL_K`` nearest prompts. The form before solved one system per spot on its own ``LOCAL_K`` nearest prompts
(reimplemented here as the comparison).

1. Accuracy, where the exact form fits: Gaussian random fields (random Fourier features of a squared-exponential
   kernel, length scales 2, 5 and 10 spot pitches, noise variance 0.1 of the signal's) on a jittered 150 x 150 grid
   (22,500 spots), 10% random prompts (2,250: exact fits), the kernel fitted on the prompts as the layer does
   (``fit_kernel``); held-out PCC per field of the exact, per-spot local and grouped local kriging.
2. Time: kriging (20 fields) and its variance at every spot of a 316 x 316 grid (99,856 spots) from 10% prompts
   (about 10,000), with one kernel: per-spot systems against grouped systems, in the same process.

Usage:
    .venv/bin/python benchmarks/bench_local_kriging.py --out benchmarks/results/local_kriging.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from scipy.spatial import cKDTree

from phg2st_sc._model import _incontext as ic

FIELDS = 20
NOISE = 0.1


def grid(side: int, rng: np.random.Generator) -> np.ndarray:
    g = np.stack(np.meshgrid(np.arange(side), np.arange(side)), -1).reshape(-1, 2).astype(np.float64)
    return g + rng.normal(0.0, 0.05, g.shape)


def fields(xy: np.ndarray, ell: float, rng: np.random.Generator, n_features: int = 1000) -> np.ndarray:
    """``FIELDS`` draws of a zero-mean Gaussian field with a squared-exponential kernel of length ``ell``, plus noise."""
    w = rng.normal(0.0, 1.0 / ell, (FIELDS, n_features, 2))
    b = rng.uniform(0.0, 2 * np.pi, (FIELDS, n_features))
    a = rng.normal(0.0, np.sqrt(2.0 / n_features), (FIELDS, n_features))
    f = np.stack([np.cos(xy @ w[i].T + b[i]) @ a[i] for i in range(FIELDS)], 1)
    return f + rng.normal(0.0, np.sqrt(NOISE), f.shape)


def per_spot_systems(xy_p: np.ndarray, xy_q: np.ndarray, ell: float, eta: float):
    """The form before: one system per query on its own ``LOCAL_K`` nearest prompts (weights and kq)."""
    k = min(ic.LOCAL_K, len(xy_p))
    _, idx = cKDTree(xy_p).query(xy_q, k=k)
    idx = idx.reshape(len(xy_q), k)
    for s in range(0, len(xy_q), 2048):
        nb = idx[s : s + 2048]
        pts = xy_p[nb]
        kk = np.exp(-0.5 * ic._sqdist(pts, pts) / ell**2) + eta * np.eye(k)
        kq = np.exp(-0.5 * ((pts - xy_q[s : s + 2048, None, :]) ** 2).sum(-1) / ell**2)
        yield slice(s, s + 2048), nb, np.linalg.solve(kk, kq[..., None])[..., 0], kq


def per_spot_krige(xy_p, r, xy_q, ell, eta) -> tuple[np.ndarray, np.ndarray]:
    out, var = np.empty((len(xy_q), r.shape[1])), np.empty(len(xy_q))
    for sl, nb, w, kq in per_spot_systems(xy_p, xy_q, ell, eta):
        out[sl] = np.einsum("ck,ckg->cg", w, r[nb])
        var[sl] = 1.0 + eta - (kq * w).sum(-1)
    return out, np.maximum(var, eta)


def grouped_krige(xy_p, r, xy_q, ell, eta) -> tuple[np.ndarray, np.ndarray]:
    systems: dict = {}
    exact_max, ic.EXACT_MAX = ic.EXACT_MAX, 0
    try:
        return ic.krige(xy_p, r, xy_q, ell, eta, systems), ic.kriging_variance(xy_p, xy_q, ell, eta, systems)
    finally:
        ic.EXACT_MAX = exact_max


def pcc(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.mean([np.corrcoef(a[:, g], b[:, g])[0, 1] for g in range(a.shape[1])]))


def accuracy(rng: np.random.Generator) -> list[dict]:
    xy = grid(150, rng)
    prompt = rng.random(len(xy)) < 0.1
    rows = []
    for ell_true in (2.0, 5.0, 10.0):
        y = fields(xy, ell_true, rng)
        yp = y[prompt]
        mu = yp.mean(0)
        sub = ic._fit_rows(int(prompt.sum()))  # the prompts the layer fits its kernel on
        ells, etas = ic.fit_kernel(xy[prompt][sub], (yp - mu)[sub])
        ell, eta = float(ells[0]), float(etas[0])
        held = ~prompt
        exact = mu + ic.krige(xy[prompt], yp - mu, xy[held], ell, eta)
        spot = mu + per_spot_krige(xy[prompt], yp - mu, xy[held], ell, eta)[0]
        group = mu + grouped_krige(xy[prompt], yp - mu, xy[held], ell, eta)[0]
        row = {"true_length_scale": ell_true, "fitted_length_scale": ell, "fitted_noise_ratio": eta,
               "prompts": int(prompt.sum()), "exact_pcc": pcc(exact, y[held]), "per_spot_pcc": pcc(spot, y[held]),
               "grouped_pcc": pcc(group, y[held])}  # fmt: skip
        row["per_spot_minus_exact"] = row["per_spot_pcc"] - row["exact_pcc"]
        row["grouped_minus_exact"] = row["grouped_pcc"] - row["exact_pcc"]
        print(json.dumps(row), flush=True)
        rows.append(row)
    return rows


def timing(rng: np.random.Generator) -> dict:
    xy = grid(316, rng)
    prompt = rng.random(len(xy)) < 0.1
    y = fields(xy, 5.0, rng)
    r = y[prompt] - y[prompt].mean(0)
    out = {"spots": len(xy), "prompts": int(prompt.sum()), "fields": FIELDS, "length_scale": 5.0, "noise_ratio": NOISE}
    for name, fn in (("per_spot", per_spot_krige), ("grouped", grouped_krige)):
        t = time.perf_counter()
        pred, var = fn(xy[prompt], r, xy, 5.0, NOISE)
        out[f"{name}_seconds"] = time.perf_counter() - t
        out[f"{name}_pred"], out[f"{name}_var"] = pred, var
    out["max_abs_difference_prediction"] = float(np.abs(out.pop("per_spot_pred") - out.pop("grouped_pred")).max())
    out["max_abs_difference_variance"] = float(np.abs(out.pop("per_spot_var") - out.pop("grouped_var")).max())
    print(json.dumps(out), flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=None, help="write the results as JSON here")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    res = {"accuracy": accuracy(rng), "timing": timing(rng), "local_k": ic.LOCAL_K, "local_group": ic.LOCAL_GROUP}
    if args.out:
        Path(args.out).write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
