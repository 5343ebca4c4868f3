"""What a prompt design can add to a kriged prompt field, under each section's own Gaussian-process fit (issue 16).

A diagnosis of the design tables, not a method: it reads every spot's expression to fit the kernels. For each
section and target protocol, each gene's squared-exponential kernel (length scale and noise ratio, on the layer's
grid: ``_incontext.LENGTH_SCALES`` x ``NOISE_RATIOS``) is chosen by the marginal likelihood of all the section's
spots. For a set of prompts, simple kriging with the gene's kernel then has an expected correlation with the
measured values at the other spots of

    sqrt(mean_q s_q / (1 + eta)),   s_q = k_q^T (K + eta I)^-1 k_q

(the prediction's variance and its covariance with the value are both ``s_q`` in units of the signal variance;
``eta`` the noise ratio), averaged over genes. This "GP-implied PCC" is computed for random prompts (seeds 0-2)
and for the designs of ``tl.design_prompts`` (``space``, ``variance``; seeds 0-2, as the benchmark draws them) at
each fraction, and printed beside the difference the benchmark measured for the GP baseline and for the adaptive
variant (from the results folders, when given).

    .venv/bin/python benchmarks/design_bound.py check   # the formula against simulated data (seconds)
    PHG2ST_DATA_DIR=../shared/data .venv/bin/python benchmarks/design_bound.py mob \
        --results benchmarks/results/mob_random_epyc benchmarks/results/mob_variance benchmarks/results/mob_space
"""

from __future__ import annotations

import argparse
import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

import phg2st_sc as phg2st
from phg2st_sc._model import _incontext
from phg2st_sc._utils import as_dense, spot_pitch
from phg2st_sc.tl._benchmark import _resolve_panel
from phg2st_sc.tl._evaluation import draw_prompts

SECTIONS = {"her2st": ("C2", "C3", "C4", "C5", "C6"), "mob": ("MOB1", "MOB2", "MOB3", "MOB4")}
DATASETS = {"her2st": "her2st", "mob": "stutility_mob"}  # tl.benchmark's names
TARGETS = {"heldout": "unsmoothed", "heldout_smoothed": "3x3 smoothed"}


def load(dataset: str, name: str):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return phg2st.datasets.her2st(name) if dataset == "her2st" else phg2st.datasets.stutility_mob(name)


def gene_kernels(xy: np.ndarray, y: np.ndarray, per_gene: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Each gene's kernel by the marginal likelihood of all spots (genes constant there are dropped); with
    ``per_gene=False`` the one kernel of the likelihood summed over the genes (repeated for each)."""
    sd = y.std(0)
    z = (y[:, sd > 0] - y[:, sd > 0].mean(0)) / sd[sd > 0]
    return _incontext.fit_kernel(xy, z, per_gene=per_gene)


def implied_pcc(xy: np.ndarray, prompt: np.ndarray, ell: np.ndarray, eta: np.ndarray) -> float:
    """The genes' mean GP-implied PCC of simple kriging from ``prompt`` at the other spots."""
    q = np.setdiff1d(np.arange(len(xy)), prompt)
    out = []
    for key in sorted(set(zip(ell.tolist(), eta.tolist(), strict=True))):
        n = int(((ell == key[0]) & (eta == key[1])).sum())
        s = 1.0 + key[1] - _incontext.kriging_variance(xy[prompt], xy[q], *key)  # explained signal variance
        out += [np.sqrt(max(s.mean(), 0.0) / (1.0 + key[1]))] * n
    return float(np.mean(out))


def check(seed: int = 1, genes: int = 400) -> None:
    """The implied PCC against the realised one on simulated data with a known kernel (``--check``).

    A Gaussian-process field with each of two kernels on a 30 x 30 lattice of spots, plus noise, ``genes`` draws;
    100 random prompts against a regular lattice of 100 prompts (every third spot in each direction); simple
    kriging with the true kernel, per-gene PCC at the other spots.
    """
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(np.arange(30), np.arange(30)), -1).reshape(-1, 2).astype(float)
    lattice = np.flatnonzero((grid[:, 0] % 3 == 1) & (grid[:, 1] % 3 == 1))
    for ell, eta in ((2.0, 0.2), (2.0, 5.0)):
        chol = np.linalg.cholesky(np.exp(-0.5 * _incontext._sqdist(grid, grid) / ell**2) + 1e-8 * np.eye(len(grid)))
        y = chol @ rng.normal(size=(len(grid), genes))
        y += np.sqrt(eta) * rng.normal(size=y.shape)
        out = {}
        for name, prompt in (("random", rng.choice(len(grid), len(lattice), replace=False)), ("lattice", lattice)):
            q = np.setdiff1d(np.arange(len(grid)), prompt)
            pred = _incontext.krige(grid[prompt], y[prompt], grid[q], ell, eta)
            realised = float(np.mean([np.corrcoef(pred[:, j], y[q, j])[0, 1] for j in range(genes)]))
            out[name] = (realised, implied_pcc(grid, prompt, np.full(genes, ell), np.full(genes, eta)))
        print(f"length scale {ell}, noise ratio {eta}: " + ", ".join(
            f"{k} realised {v[0]:.3f} implied {v[1]:.3f}" for k, v in out.items())
            + f"; lattice - random realised {out['lattice'][0] - out['random'][0]:+.3f}, implied "
            f"{out['lattice'][1] - out['random'][1]:+.3f}")  # fmt: skip


def measured(folders: list[Path]) -> pd.DataFrame:
    """Held-out PCC of GP and the adaptive variant per results folder's strategy, protocol and fraction."""
    rows = []
    for f in folders:
        strategy = json.loads((f / "protocol.json").read_text())["prompt_strategy"]
        s = pd.read_csv(f / "summary.csv")
        s = s[(s["spots"] == "heldout") & s["method"].isin(["gp", "phg2st_adaptive"])]
        rows += [{"strategy": strategy, "protocol": r.protocol, "fraction": round(r.prompt_fraction, 3),
                  "method": r.method, "pcc": r.pcc_mean} for r in s.itertuples()]  # fmt: skip
    return pd.DataFrame(rows).pivot_table(index=["protocol", "fraction", "method"], columns="strategy", values="pcc")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dataset", choices=[*SECTIONS, "check"], help="or 'check': the formula on simulated data")
    ap.add_argument("--fractions", type=float, nargs="+", default=[0.05, 0.1, 0.2])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--strategies", nargs="+", default=["random", "variance", "space"])
    ap.add_argument("--results", type=Path, nargs="*", default=[])
    ap.add_argument("--out", type=Path, default=None, help="CSV of the per-section rows")
    args = ap.parse_args()
    if args.dataset == "check":
        check()
        return
    loaded = {name: load(args.dataset, name) for name in SECTIONS[args.dataset]}
    panel = _resolve_panel("auto", DATASETS[args.dataset], loaded)  # the benchmark's panel of the dataset
    rows = []
    for name, raw in loaded.items():
        for proto in TARGETS:
            a = phg2st.tl.prepare_targets(raw, proto, panel=panel)
            xy = np.asarray(a.obsm["spatial"], dtype=np.float64)
            xy = xy / spot_pitch(xy)
            ell, eta = gene_kernels(xy, as_dense(a.X, dtype=np.float64))
            for fraction in args.fractions:
                for strategy in args.strategies:
                    for seed in args.seeds:
                        draw_prompts(a, fraction, seed, strategy)
                        prompt = np.flatnonzero(a.obs["phg2st_prompt"].to_numpy(bool))
                        rows.append({"section": name, "protocol": proto, "fraction": fraction, "strategy": strategy,
                                     "seed": seed, "implied_pcc": implied_pcc(xy, prompt, ell, eta),
                                     "median_length_scale": float(np.median(ell)),
                                     "median_noise_ratio": float(np.median(eta))})  # fmt: skip
            print(name, proto, f"median kernel: {np.median(ell):.2f} pitches, noise ratio {np.median(eta):.3g}",
                  flush=True)  # fmt: skip
    table = pd.DataFrame(rows)
    if args.out is not None:
        table.to_csv(args.out, index=False, float_format="%.4f")
    implied = table.groupby(["protocol", "fraction", "strategy"])["implied_pcc"].mean().unstack("strategy")
    seen = measured(args.results) if args.results else None
    designs = [s for s in args.strategies if s != "random"]
    print("\n| targets | prompts | GP-implied PCC, random | " + " | ".join(
        f"{d} - random: implied / GP measured / adaptive measured" for d in designs) + " |")  # fmt: skip
    print("|---" * (3 + len(designs)) + "|")
    for (proto, fraction), r in implied.iterrows():
        cells = []
        for d in designs:
            cell = f"{r[d] - r['random']:+.3f}"
            for method in ("gp", "phg2st_adaptive"):
                key = (proto, round(fraction, 3), method)
                ok = seen is not None and key in seen.index and {d, "random"} <= set(seen.columns)
                cell += f" / {seen.loc[key, d] - seen.loc[key, 'random']:+.3f}" if ok else " / -"
            cells.append(cell)
        print(f"| {TARGETS[proto]} | {fraction:.0%} | {r['random']:.3f} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
