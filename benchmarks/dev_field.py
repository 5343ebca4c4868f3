"""Development runs of the prompt field alone (issue 15): kriging from the prompts, no image, on the 30 her2st
sections (counts only; no network, so nothing is trained and no section is ever "seen").

For each section, prompt seed and target protocol: IDW, the Gaussian-process baseline (``tl.baseline('gp')``),
the in-context layer's kriging (shared kernel chosen by marginal likelihood on a grid, exact) and its local form
(each spot's 64 nearest prompts), scored on held-out spots.

    PHG2ST_DATA_DIR=../shared/data .venv/bin/python benchmarks/dev_field.py --out dev_field.csv
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


def kriging(adata, local: bool, per_gene: bool = False) -> np.ndarray:
    prompt = adata.obs[Keys.PROMPT].to_numpy(bool)
    y = as_dense(adata.X, dtype=np.float64)[prompt]
    xy = np.asarray(adata.obsm[Keys.SPATIAL], dtype=float)
    xy = xy / spot_pitch(xy)
    mu, sd = y.mean(0), np.where(y.std(0) > 0, y.std(0), 1.0)
    z = (y - mu) / sd
    ell, eta = _incontext.fit_kernel(xy[prompt], z, per_gene=per_gene)
    if local:
        field = _incontext._krige_local(xy[prompt], z, xy, float(ell[0]), float(eta[0]))
    else:
        field = _incontext.krige(xy[prompt], z, xy, ell, eta)
    return mu + field * sd


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--fraction", type=float, default=0.1)
    ap.add_argument("--sections", nargs="+", default=SECTIONS)
    args = ap.parse_args()
    t0 = time.perf_counter()
    rows = []
    for name in args.sections:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            raw = phg2st.datasets.her2st(name)
        for proto in PROTOCOLS:
            a = phg2st.tl.prepare_targets(raw, proto, panel="her2st_785")
            for seed in args.seeds:
                phg2st.tl.select_prompts(a, fraction=args.fraction, seed=seed)
                preds = {}
                for method in ("idw", "gp"):
                    phg2st.tl.baseline(a, method=method, layer_added="_b", overwrite=True)
                    preds[method] = np.asarray(a.layers["_b"])
                preds["kriging (exact)"] = kriging(a, local=False)
                preds["kriging (local 64)"] = kriging(a, local=True)
                preds["kriging (per gene)"] = kriging(a, local=False, per_gene=True)
                for method, pred in preds.items():
                    a.layers["_p"] = pred.astype(np.float32)
                    s = phg2st.tl.score(a, layer="_p", spots="heldout")
                    rows.append({"section": name, "patient": name[0], "protocol": proto, "seed": seed,
                                 "method": method, "pcc": float(s.summary["pcc"]), "mae": float(s.summary["mae"])})  # fmt: skip
        print(f"{name} done ({time.perf_counter() - t0:.0f} s)", flush=True)
    table = pd.DataFrame(rows)
    table.to_csv(args.out, index=False)
    per = table.groupby(["protocol", "method", "section"], sort=False)["pcc"].mean().reset_index()
    print(per.groupby(["protocol", "method"], sort=False)["pcc"].agg(["mean", "std"]).round(3).to_string())


if __name__ == "__main__":
    main()
