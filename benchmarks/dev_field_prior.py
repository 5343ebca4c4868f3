"""Development runs of a prompt field whose kernel comes from other patients (issue 15), on the 30 her2st sections.

Counts only, prompts only, leave one patient out. Random prompts can leave a section's kernel unidentified (the
marginal likelihood of a few dozen prompts picks the shortest length scale, where neighbouring prompts look
uncorrelated). The question: is kriging with a kernel fitted on whole sections of the *other* patients (each
section's shared kernel by marginal likelihood over all its spots; the median length scale and noise ratio over
those sections, per target protocol) a better prompt field than the layer's own (kernel from the prompts: the
plain field and the long field, whose length scale is at least the prompts' spacing) and than the baselines
(IDW, the Gaussian-process baseline), scored on held-out spots?

    PHG2ST_DATA_DIR=../shared/data .venv/bin/python benchmarks/dev_field_prior.py --out dev_field_prior.csv
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np
import pandas as pd

import phg2st_sc as phg2st
from phg2st_sc._constants import Keys
from phg2st_sc._model import _incontext
from phg2st_sc._utils import as_dense, spot_pitch

SECTIONS = [f"{p}{i}" for p in "ACD" for i in range(1, 7)] + [f"{p}{i}" for p in "EFGH" for i in range(1, 4)]
PROTOCOLS = ("heldout", "heldout_smoothed")


def positions(adata) -> np.ndarray:
    xy = np.asarray(adata.obsm[Keys.SPATIAL], dtype=float)
    return xy / spot_pitch(xy)


def standardised(y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    mu, sd = y.mean(0), np.where(y.std(0) > 0, y.std(0), 1.0)
    return (y - mu) / sd, mu, sd


def section_kernel(adata) -> tuple[float, float]:
    """The section's shared kernel by the marginal likelihood of all its spots."""
    z, _, _ = standardised(as_dense(adata.X, dtype=np.float64))
    ell, eta = _incontext.fit_kernel(positions(adata), z)
    return float(ell[0]), float(eta[0])


def field(adata, kernel: tuple[float, float] | str) -> np.ndarray:
    """Kriging of the prompts' expression around their mean: with ``kernel``, or ``"ml"`` / ``"long"`` (the layer's)."""
    prompt = adata.obs[Keys.PROMPT].to_numpy(bool)
    xy = positions(adata)
    z, mu, sd = standardised(as_dense(adata.X, dtype=np.float64)[prompt])
    if kernel == "ml":
        ell, eta = _incontext.fit_kernel(xy[prompt], z)
    elif kernel == "long":
        ll = _incontext._loglik(xy[prompt], z)
        ell, eta = _incontext._choose(ll, False, floor=spot_pitch(xy[prompt]))
    else:
        ell, eta = kernel
    return mu + _incontext.krige(xy[prompt], z, xy, ell, eta) * sd


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--fractions", type=float, nargs="+", default=[0.1, 0.2])
    args = ap.parse_args()
    t0 = time.perf_counter()
    targets = {}
    for name in SECTIONS:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            raw = phg2st.datasets.her2st(name)
        for proto in PROTOCOLS:
            targets[name, proto] = phg2st.tl.prepare_targets(raw, proto, panel="her2st_785")
    kernels = {key: section_kernel(a) for key, a in targets.items()}
    print(f"kernels fitted ({time.perf_counter() - t0:.0f} s)", flush=True)
    rows = []
    for (name, proto), a in targets.items():
        others = [k for (s, p), k in kernels.items() if p == proto and s[0] != name[0]]
        prior = (float(np.median([k[0] for k in others])), float(np.median([k[1] for k in others])))
        for fraction in args.fractions:
            for seed in args.seeds:
                phg2st.tl.select_prompts(a, fraction=fraction, seed=seed)
                preds = {}
                for method in ("idw", "gp"):
                    phg2st.tl.baseline(a, method=method, layer_added="_b", overwrite=True)
                    preds[method] = np.asarray(a.layers["_b"])
                preds["field (prompts' kernel)"] = field(a, "ml")
                preds["long field (prompts' kernel)"] = field(a, "long")
                preds["field (other patients' kernel)"] = field(a, prior)
                for method, pred in preds.items():
                    a.layers["_p"] = pred.astype(np.float32)
                    s = phg2st.tl.score(a, layer="_p", spots="heldout")
                    rows.append({"section": name, "patient": name[0], "protocol": proto, "fraction": fraction,
                                 "seed": seed, "method": method, "pcc": float(s.summary["pcc"]),
                                 "mae": float(s.summary["mae"]), "prior_length_scale": prior[0],
                                 "prior_noise_ratio": prior[1]})  # fmt: skip
        print(f"{name} {proto} done ({time.perf_counter() - t0:.0f} s)", flush=True)
    table = pd.DataFrame(rows)
    table.to_csv(args.out, index=False, float_format="%.5f")
    per = table.groupby(["protocol", "fraction", "method", "section"], sort=False)["pcc"].mean().reset_index()
    print(per.groupby(["protocol", "fraction", "method"], sort=False)["pcc"].agg(["mean", "std"]).round(3).to_string())


if __name__ == "__main__":
    main()
