"""How often genes constant over the prompts moved the prompt field's kernel before the fix (a record, not a method).

For every draw of the benchmark's folds (her2st C2-C6 and MOB1-4, both targets, random, block and designed prompts,
seeds 0-2), the prompt field's shared kernel as the in-context layer chooses it (`_incontext._choose` over the
grid, also with the floor at the prompts' spacing) with and without the log-determinant that each gene constant
over the prompts added to the summed likelihood before the fix. No network is read: the field's kernel depends on
the prompts' values only. Writes one row per draw (`constant_nonzero`: genes constant over the prompts at a value
other than 0, which the reconstruction of "before" does not cover).

    PHG2ST_DATA_DIR=../shared/data .venv/bin/python benchmarks/results/dev_constant_genes/check_kernels.py her2st \
        --embedding-cache DIR --out kernels_her2st.csv
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

import phg2st_sc as phg2st
from phg2st_sc._model import _incontext as ic
from phg2st_sc._utils import as_dense, centre_scale, spot_pitch
from phg2st_sc.tl._benchmark import _resolve_panel
from phg2st_sc.tl._evaluation import draw_prompts
from phg2st_sc.tl._protocol import prepare_targets

sys.path.insert(0, str(Path(__file__).parents[2]))
from dev_incontext import REP, sections

DESIGNS = ("space", "variance", "features")
STRATEGIES = {"random": (0.05, 0.07, 0.1, 0.2, 0.3), "blocks": (0.1,), **dict.fromkeys(DESIGNS, (0.05, 0.07, 0.1, 0.2)),
              **{f"{s}_blocks": (0.1,) for s in DESIGNS}}  # fmt: skip


def logdet(xy: np.ndarray) -> np.ndarray:
    """-0.5 sum log(lambda + eta) on the grid: what each constant gene added to the summed likelihood before."""
    d2 = ic._sqdist(xy, xy)
    out = np.empty((len(ic.LENGTH_SCALES), len(ic.NOISE_RATIOS)))
    for i, ell in enumerate(ic.LENGTH_SCALES):
        lam = np.maximum(np.linalg.eigvalsh(np.exp(-0.5 * d2 / ell**2)), 0.0)
        out[i] = [-0.5 * np.log(lam + eta).sum() for eta in ic.NOISE_RATIOS]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dataset", choices=["her2st", "mob"])
    ap.add_argument("--embedding-cache", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    warnings.simplefilter("ignore")
    phg2st.settings.progress = False
    secs = sections(args.dataset, args.embedding_cache)
    name = "her2st" if args.dataset == "her2st" else "stutility_mob"
    panel = _resolve_panel("auto", name, secs)
    rows = []
    for section, adata in secs.items():
        for proto in ("heldout", "heldout_smoothed"):
            a = prepare_targets(adata, proto, panel=panel)
            xy = np.asarray(a.obsm["spatial"], float)
            xy /= spot_pitch(xy)
            y_all = as_dense(a.X, dtype=np.float64)
            for strategy, fractions in STRATEGIES.items():
                for fraction in fractions:
                    for seed in (0, 1, 2):
                        draw_prompts(a, fraction, seed, strategy, REP)
                        prompt = a.obs["phg2st_prompt"].to_numpy(bool)
                        y = y_all[prompt]
                        mu, sd = centre_scale(y)
                        z = (y - mu) / sd
                        sub = ic._fit_rows(len(z))
                        xy_p = xy[prompt][sub]
                        const = np.ptp(y, axis=0) == 0
                        n_const = int(const.sum())
                        ll = ic._loglik(xy_p, z[sub])  # constant genes: 0 on the whole grid
                        before = ll.sum(-1) + n_const * logdet(xy_p)
                        floor = spot_pitch(xy[prompt])
                        row = {"dataset": args.dataset, "section": section, "protocol": proto, "strategy": strategy,
                               "fraction": fraction, "seed": seed, "prompts": int(prompt.sum()),
                               "constant_genes": n_const, "constant_nonzero": int((const & (y[0] != 0)).sum())}  # fmt: skip
                        for tag, lo in (("", 0.0), ("_long", floor)):  # the layer's choice, from the summed ll
                            for when, total in (("before", before[..., None]), ("after", ll)):
                                ell, eta = ic._choose(total, per_gene=False, floor=lo)
                                row[f"ell{tag}_{when}"], row[f"eta{tag}_{when}"] = float(ell[0]), float(eta[0])
                        rows.append(row)
            print(section, proto, flush=True)
    df = pd.DataFrame(rows)
    for tag in ("", "_long"):
        df[f"moved{tag}"] = (df[f"ell{tag}_before"] != df[f"ell{tag}_after"]) | (
            df[f"eta{tag}_before"] != df[f"eta{tag}_after"])  # fmt: skip
    df.to_csv(args.out, index=False)
    print(df.groupby(["protocol", "strategy"])[["moved", "moved_long"]].sum().to_string())


if __name__ == "__main__":
    main()
