"""Development run (issue 15): the kernel family of the in-context layer's kriging, on the prompt field alone.

The layer kriges with a squared-exponential kernel (a very smooth field). Expression at ST resolution is rough, and
on unsmoothed targets inverse-distance weighting beat that kriging (``dev_field.py``: 0.043 against 0.026). This
script asks whether a rougher kernel of the Matérn family does better, with everything else as the layer does it:
per-gene standardised prompts, one kernel shared by all genes, length scale and noise ratio on the layer's grid by
the profiled marginal likelihood, exact simple kriging around the prompts' mean. Then other ways to choose the
kernel: the leave-one-prompt-out error, a floor on the length scale at the prompts' median nearest-neighbour
distance, and the better of the likelihood's and the floored kernel by their cross-fitted PCC on the prompts. On the 30 her2st sections (counts
only; no network, nothing trained), 10% random prompts, seeds 0-2, held-out spots, unsmoothed and 3 x 3 smoothed
targets of the her2st_785 panel; IDW beside them as the reference.

    PHG2ST_DATA_DIR=../shared/data .venv/bin/python benchmarks/dev_kernel.py --out dev_kernel.csv
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np
import pandas as pd

import phg2st_sc as phg2st
from phg2st_sc._constants import Keys
from phg2st_sc._model import _incontext as ic
from phg2st_sc._utils import as_dense, spot_pitch

SECTIONS = [f"{p}{i}" for p in "ACD" for i in range(1, 7)] + [f"{p}{i}" for p in "EFGH" for i in range(1, 4)]
PROTOCOLS = ("heldout", "heldout_smoothed")
FAMILIES = ("squared exponential", "matern 5/2", "matern 3/2", "matern 1/2")
LOO_FAMILIES = ("squared exponential", "matern 3/2")  # the kernel chosen by leave-one-prompt-out error instead


def correlation(d2: np.ndarray, ell: float, family: str) -> np.ndarray:
    """Kernel correlation at squared distances ``d2`` for length scale ``ell``."""
    if family == "squared exponential":
        return np.exp(-0.5 * d2 / ell**2)
    d = np.sqrt(d2) / ell
    if family == "matern 5/2":
        return (1 + np.sqrt(5) * d + 5 / 3 * d**2) * np.exp(-np.sqrt(5) * d)
    if family == "matern 3/2":
        return (1 + np.sqrt(3) * d) * np.exp(-np.sqrt(3) * d)
    return np.exp(-d)


def fit(
    xy: np.ndarray, z: np.ndarray, family: str, criterion: str = "likelihood", min_ell: float = 0.0
) -> tuple[float, float]:
    """The layer's grid search (``_incontext._loglik``) with another kernel family; one kernel for all genes.

    ``criterion``: the profiled marginal likelihood summed over genes (the layer's), or ``"loo"``: the
    leave-one-prompt-out squared error summed over the standardised genes, in closed form (``[K^-1 z]_i /
    [K^-1]_ii``), which scores each kernel by how well it predicts a prompt from the others.
    """
    p = len(xy)
    d2 = ic._sqdist(xy, xy)
    best = (-np.inf, 0.0, 0.0)
    for ell in ic.LENGTH_SCALES[ic.LENGTH_SCALES >= min(min_ell, ic.LENGTH_SCALES[-1])]:
        lam, u = np.linalg.eigh(correlation(d2, ell, family))
        proj = (u.T @ z) ** 2
        for eta in ic.NOISE_RATIOS:
            ev = np.maximum(lam, 0.0) + eta
            if criterion == "loo":
                k_inv = (u / ev) @ u.T
                score = -float((((k_inv @ z) / np.diag(k_inv)[:, None]) ** 2).sum())
            else:
                s2 = np.maximum((proj / ev[:, None]).sum(0) / p, 1e-300)
                score = float((-0.5 * p * np.log(s2) - 0.5 * np.log(ev).sum()).sum())
            if score > best[0]:
                best = (score, float(ell), float(eta))
    return best[1], best[2]


def field(adata, family: str, criterion: str = "likelihood", spaced: bool = False) -> tuple[np.ndarray, float, float]:
    prompt = adata.obs[Keys.PROMPT].to_numpy(bool)
    y = as_dense(adata.X, dtype=np.float64)[prompt]
    xy = np.asarray(adata.obsm[Keys.SPATIAL], dtype=float)
    xy = xy / spot_pitch(xy)
    mu, sd = y.mean(0), np.where(y.std(0) > 0, y.std(0), 1.0)
    z = (y - mu) / sd
    zc = z - z.mean(0)
    min_ell = 0.0
    if spaced:  # length scales of at least the prompts' median nearest-neighbour distance
        from scipy.spatial import cKDTree

        min_ell = float(np.median(cKDTree(xy[prompt]).query(xy[prompt], k=2)[0][:, 1]))
    ell, eta = fit(xy[prompt], zc, family, criterion, min_ell)
    k = correlation(ic._sqdist(xy[prompt], xy[prompt]), ell, family) + eta * np.eye(prompt.sum())
    pred = z.mean(0) + correlation(ic._sqdist(xy, xy[prompt]), ell, family) @ np.linalg.solve(k, zc)
    return mu + pred * sd, ell, eta


def selected(adata) -> tuple[np.ndarray, float, float]:
    """The likelihood's kernel or the one with length scales of at least the prompt spacing, whichever predicts the
    prompts better: 5-fold cross-fitted, compared within folds by the mean per-gene PCC (as the layer compares its
    components; ``_incontext``), the prompts alone deciding."""
    from scipy.spatial import cKDTree

    prompt = adata.obs[Keys.PROMPT].to_numpy(bool)
    y = as_dense(adata.X, dtype=np.float64)[prompt]
    xy = np.asarray(adata.obsm[Keys.SPATIAL], dtype=float)
    xy = xy / spot_pitch(xy)
    sd = np.where(y.std(0) > 0, y.std(0), 1.0)
    z = (y - y.mean(0)) / sd
    zc, xy_p = z - z.mean(0), xy[prompt]
    spacing = float(np.median(cKDTree(xy_p).query(xy_p, k=2)[0][:, 1]))
    folds = ic.prompt_folds(len(z))
    best, cvs, kernels = None, {}, {}
    for min_ell in (0.0, spacing):
        ell, eta = fit(xy_p, zc, "squared exponential", "likelihood", min_ell)
        cv = ic._krige_folds(xy_p, z, ell, eta, folds)
        cvs[min_ell], kernels[min_ell] = cv, (ell, eta)
        score = float(ic._pcc_genes(ic._within_folds(cv, folds), ic._within_folds(z, folds)).mean())
        if best is None or score > best[0]:
            best = (score, min_ell)
    chosen = field(adata, "squared exponential", spaced=best[1] > 0)
    # both, weighted as the layer weighs its components (non-negative least squares within folds)
    w = ic.combine({str(k): v for k, v in cvs.items()}, z, folds)
    both = z.mean(0) + sum(w[str(k)] * ic.krige(xy_p, zc, xy, *kernels[k]) for k in cvs)
    return chosen, (y.mean(0) + both * sd, np.nan, np.nan)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--sections", nargs="+", default=SECTIONS)
    args = ap.parse_args()
    phg2st.settings.progress = False
    t0, rows = time.perf_counter(), []
    for name in args.sections:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            raw = phg2st.datasets.her2st(name)
            for proto in PROTOCOLS:
                a = phg2st.tl.prepare_targets(raw, proto, panel="her2st_785")
                for seed in args.seeds:
                    phg2st.tl.select_prompts(a, fraction=0.1, seed=seed)
                    phg2st.tl.baseline(a, method="idw", layer_added="_b", overwrite=True)
                    preds = {"idw": (np.asarray(a.layers["_b"]), np.nan, np.nan)}
                    for family in FAMILIES:
                        preds[family] = field(a, family)
                    for family in LOO_FAMILIES:
                        preds[f"{family}, loo"] = field(a, family, "loo")
                    preds["squared exponential, ell >= prompt spacing"] = field(a, "squared exponential", spaced=True)
                    chosen, both = selected(a)
                    preds["squared exponential, either, chosen on the prompts"] = chosen
                    preds["squared exponential, both, weighted on the prompts"] = both
                    for method, (pred, ell, eta) in preds.items():
                        a.layers["_p"] = np.asarray(pred, dtype=np.float32)
                        s = phg2st.tl.score(a, layer="_p", spots="heldout")
                        rows.append({"section": name, "patient": name[0], "protocol": proto, "seed": seed,
                                     "method": method, "pcc": float(s.summary["pcc"]), "mae": float(s.summary["mae"]),
                                     "length_scale": ell, "noise_ratio": eta})  # fmt: skip
        print(f"{name} done ({time.perf_counter() - t0:.0f} s)", flush=True)
    table = pd.DataFrame(rows)
    table.to_csv(args.out, index=False)
    per = table.groupby(["protocol", "method", "section"], sort=False)["pcc"].mean().reset_index()
    print(per.groupby(["protocol", "method"], sort=False)["pcc"].agg(["mean", "std"]).round(3).to_string())
    # paired against the layer's kernel (squared exponential), per section: how often and by how much it wins
    wide = per.pivot_table(index=["protocol", "section"], columns="method", values="pcc")
    for proto in PROTOCOLS:
        w = wide.loc[proto]
        for family in [
            *FAMILIES[1:],
            *(f"{f}, loo" for f in LOO_FAMILIES),
            "squared exponential, ell >= prompt spacing",
        ]:
            gain = w[family] - w["squared exponential"]
            print(f"{proto}: {family} - squared exponential = {gain.mean():+.4f} (sections won {int((gain > 0).sum())}/"
                  f"{len(gain)})")  # fmt: skip


if __name__ == "__main__":
    main()
