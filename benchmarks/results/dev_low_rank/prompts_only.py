"""What the twenty-first round saw before its rule (RULE.md): low-rank kriging of the prompts alone, no network.

The 30 her2st sections (counts only), random prompts, seeds 0-2, both targets, held-out PCC and MAE: the layer's
per-gene prompt field (one kernel by marginal likelihood, exact kriging), IDW and the GP baseline, and the prompts'
leading ``r`` principal components kriged with one kernel of their own and mapped back through the loadings
(``_incontext.krige_low_rank``) at several ranks; the rank chosen per draw by 5-fold cross-validation on the
prompts; rank 3 with the genes' kernel instead of the patterns' own; rank 3 plus per-gene kriging of the
remainder::

    PHG2ST_DATA_DIR=../shared/data python prompts_only.py --fraction 0.1 --out prompts_only_10.csv
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
RANKS = (1, 2, 3, 5, 8, 12)


def kriging(xy_p: np.ndarray, z: np.ndarray, xy: np.ndarray) -> np.ndarray:
    m = z.mean(0)
    ell, eta = ic.fit_kernel(xy_p, z - m)
    return m + ic.krige(xy_p, z - m, xy, ell, eta)


def low_rank(xy_p: np.ndarray, z: np.ndarray, xy: np.ndarray, rank: int, genes_kernel: bool = False) -> np.ndarray:
    if genes_kernel:
        ell, eta = ic.fit_kernel(xy_p, z - z.mean(0))
        kernel = (float(ell[0]), float(eta[0]))
    else:
        kernel = ic._low_rank_kernel(xy_p, ic.low_rank(z, rank), np.arange(len(z)))
    return ic.krige_low_rank(xy_p, z, xy, rank, *kernel)


def low_rank_and_rest(xy_p: np.ndarray, z: np.ndarray, xy: np.ndarray, rank: int) -> np.ndarray:
    mean, t, basis = ic.low_rank(z, rank)
    rest = z - mean - t @ basis
    return low_rank(xy_p, z, xy, rank) + kriging(xy_p, rest, xy)


def cv_rank(xy_p: np.ndarray, z: np.ndarray) -> int:
    err = dict.fromkeys(RANKS, 0.0)
    for part in ic.prompt_folds(len(z)):
        rest = np.setdiff1d(np.arange(len(z)), part)
        for r in RANKS:
            err[r] += float(((low_rank(xy_p[rest], z[rest], xy_p[part], r) - z[part]) ** 2).sum())
    return min(err, key=err.get)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--fraction", type=float, default=0.1)
    ap.add_argument("--sections", nargs="+", default=SECTIONS)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    warnings.simplefilter("ignore")
    rows, t0 = [], time.perf_counter()
    for name in args.sections:
        raw = phg2st.datasets.her2st(name)
        for proto in ("heldout", "heldout_smoothed"):
            a = phg2st.tl.prepare_targets(raw, proto, panel="her2st_785")
            xy = np.asarray(a.obsm[Keys.SPATIAL], dtype=float)
            xy = xy / spot_pitch(xy)
            for seed in (0, 1, 2):
                phg2st.tl.select_prompts(a, fraction=args.fraction, seed=seed)
                prompt = a.obs[Keys.PROMPT].to_numpy(bool)
                y = as_dense(a.X, dtype=np.float64)[prompt]
                mu, sd = y.mean(0), np.where(y.std(0) > 0, y.std(0), 1.0)
                z, xy_p = (y - mu) / sd, xy[prompt]
                preds = {"kriging (per gene)": kriging(xy_p, z, xy)}
                for method in ("idw", "gp"):
                    phg2st.tl.baseline(a, method=method, layer_added="_b", overwrite=True)
                    preds[method] = (np.asarray(a.layers["_b"], dtype=np.float64) - mu) / sd
                for r in RANKS:
                    preds[f"low rank {r}"] = low_rank(xy_p, z, xy, r)
                rank = cv_rank(xy_p, z)
                preds["low rank (cross-validated)"] = preds[f"low rank {rank}"]
                preds["low rank 3, the genes' kernel"] = low_rank(xy_p, z, xy, 3, genes_kernel=True)
                preds["low rank 3 + kriging of the rest"] = low_rank_and_rest(xy_p, z, xy, 3)
                for method, pred in preds.items():
                    a.layers["_p"] = (mu + pred * sd).astype(np.float32)
                    s = phg2st.tl.score(a, layer="_p", spots="heldout").summary
                    rows.append({"section": name, "protocol": proto, "seed": seed, "method": method,
                                 "pcc": float(s["pcc"]), "mae": float(s["mae"]), "cv_rank": rank})  # fmt: skip
        print(f"{name} ({time.perf_counter() - t0:.0f} s)", flush=True)
    table = pd.DataFrame(rows)
    table.to_csv(args.out, index=False)
    print(table.groupby(["protocol", "method"], sort=False)[["pcc", "mae"]].mean().round(4).to_string())


if __name__ == "__main__":
    main()
