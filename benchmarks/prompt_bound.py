"""How far a kriged prompt field can lift the adaptive variant's network, with what a method cannot know (issue 15).

A diagnosis, not a method: it reads the held-out values. On the networks cached by `phg2st benchmark
--model-cache` (leave one section out), for random prompts (seeds 0-2), it scores on the held-out spots:

- ``layer``: the adaptive variant (the network plus the in-context layer), and ``network``, ``field``: two of
  the layer's components alone;
- ``known_field``: kriging of the prompts with each gene's own kernel chosen by the marginal likelihood of *all*
  the section's spots (as ``design_bound.py``): the best kernel of the layer's family;
- ``shared_weights``: ``network`` and ``known_field`` combined with two non-negative weights shared by the genes,
  fitted on the held-out values (``dev_incontext.oracle_combination``);
- ``per_gene_crossfit``: each gene's own intercept and weights on the two, fitted by least squares on a random
  half of the held-out spots and scored on the other half (and the other way round; PCC within each half,
  averaged; ``network_halves``: the network scored the same way);
- ``per_gene_insample``: each gene's multiple correlation of the two with the held-out values (weights of any sign
  fitted and scored on the same spots: an upper bound with its own optimism, about sqrt(2 / n) for a gene without
  signal over n held-out spots).

(Unlike ``dev_incontext.oracle_combination(per_gene=True)``, the per-gene fits here have an intercept and weights of
any sign, and each half is scored alone: a bound on any linear use of the two, not on the layer's form.)

    PHG2ST_DATA_DIR=../shared/data .venv/bin/python benchmarks/prompt_bound.py her2st --fractions 0.1 0.2 \
        --model-cache models_her2st --embedding-cache DIR --out prompt_bound_her2st.csv
    PHG2ST_DATA_DIR=../shared/data .venv/bin/python benchmarks/prompt_bound.py mob --fractions 0.1 0.2 \
        --model-cache models_mob --embedding-cache DIR --out prompt_bound_mob.csv
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

import phg2st_sc as phg2st
from phg2st_sc._model import _incontext
from phg2st_sc._model._incontext import _pcc_genes as pcc  # per-gene PCC over rows
from phg2st_sc._utils import as_dense, spot_pitch
from phg2st_sc.tl._evaluation import draw_prompts

sys.path.insert(0, str(Path(__file__).parent))
from design_bound import gene_kernels
from dev_incontext import REP, layer_inputs, oracle_combination, sections
from diagnose_layer import SECTIONS, cached_fold

COLUMNS = ("layer", "network", "field", "known_field", "shared_weights", "per_gene_crossfit", "network_halves",
           "per_gene_insample")  # fmt: skip


def known_field(xy: np.ndarray, prompt: np.ndarray, y_all: np.ndarray, ok: np.ndarray, kernels) -> np.ndarray:
    """Kriging of the prompts' values with each gene's kernel from all spots (genes constant over all spots: mean)."""
    y_p = y_all[prompt][:, ok]
    mu, sd = y_p.mean(0), np.where(y_p.std(0) > 0, y_p.std(0), 1.0)
    z = (y_p - mu) / sd
    out = np.tile(y_all.mean(0), (len(xy), 1))
    out[:, ok] = mu + (z.mean(0) + _incontext.krige(xy[prompt], z - z.mean(0), xy, *kernels)) * sd
    return out


def per_gene_crossfit(x: list[np.ndarray], y: np.ndarray, half: np.ndarray) -> float:
    """Mean per-gene PCC of least squares on ``x`` (each (n, genes), with an intercept) fitted on one half."""
    design = np.stack([np.ones_like(y), *x], -1)  # (n, genes, 1 + len(x))
    k = design.shape[-1]
    scores = []
    for part in (half, ~half):
        a, b = design[~part], y[~part]
        gram = np.einsum("ngi,ngj->gij", a, a) + 1e-9 * np.eye(k)
        w = np.linalg.solve(gram, np.einsum("ngi,ng->gi", a, b)[..., None])[..., 0]
        scores.append(pcc(np.einsum("ngi,gi->ng", design[part], w), y[part]).mean())
    return float(np.mean(scores))


def multiple_correlation(p1: np.ndarray, p2: np.ndarray, y: np.ndarray) -> float:
    """Mean over genes of the largest PCC of any linear combination of ``p1`` and ``p2`` with ``y`` (in sample)."""
    r1, r2, r12 = pcc(p1, y), pcc(p2, y), pcc(p1, p2)
    r2_all = (r1**2 + r2**2 - 2 * r1 * r2 * r12) / np.maximum(1 - r12**2, 1e-12)
    return float(np.maximum(np.sqrt(np.clip(r2_all, 0, 1)), np.maximum(np.abs(r1), np.abs(r2))).mean())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dataset", choices=list(SECTIONS))
    ap.add_argument("--model-cache", type=Path, required=True, help="the benchmark's --model-cache folder")
    ap.add_argument("--embedding-cache", type=Path, required=True)
    ap.add_argument("--protocols", nargs="+", default=["heldout", "heldout_smoothed"])
    ap.add_argument("--fractions", type=float, nargs="+", default=[0.1])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    warnings.simplefilter("ignore")
    phg2st.settings.progress = False
    secs = sections(args.dataset, args.embedding_cache)
    rows = []
    for proto in args.protocols:
        for test in SECTIONS[args.dataset]:
            _, model, a = cached_fold(args.dataset, secs[test], test, proto, args.model_cache)
            y_all = as_dense(a.X, dtype=np.float64)
            xy = np.asarray(a.obsm["spatial"], dtype=float)
            xy = xy / spot_pitch(xy)
            ok = y_all.std(0) > 0
            kernels = gene_kernels(xy, y_all)  # each gene's own, from all spots (reads the held-out values)
            for fraction in args.fractions:
                for seed in args.seeds:
                    draw_prompts(a, fraction, seed, "random", REP)
                    prompt = a.obs["phg2st_prompt"].to_numpy(bool)
                    held = np.flatnonzero(~prompt)
                    inputs, kwargs = layer_inputs(model, a, prompt)
                    out, fit = _incontext.adapt(*inputs, keep_components=True, **kwargs)
                    net, field = fit.components["network"], fit.components["field"]
                    known = known_field(xy, prompt, y_all, ok, kernels)
                    shared = oracle_combination({"network": net, "known_field": known}, y_all, ~prompt)
                    y = y_all[held][:, ok]
                    half = np.random.default_rng(seed).permutation(len(held)) < len(held) // 2
                    n_h, k_h = net[held][:, ok], known[held][:, ok]
                    row = {"dataset": args.dataset, "protocol": proto, "fold": test, "fraction": fraction,
                           "seed": seed, "layer": pcc(out[held][:, ok], y).mean(), "network": pcc(n_h, y).mean(),
                           "field": pcc(field[held][:, ok], y).mean(), "known_field": pcc(k_h, y).mean(),
                           "shared_weights": pcc(shared[held][:, ok], y).mean(),
                           "per_gene_crossfit": per_gene_crossfit([n_h, k_h], y, half),
                           "network_halves": np.mean([pcc(n_h[m], y[m]).mean() for m in (half, ~half)]),
                           "per_gene_insample": multiple_correlation(n_h, k_h, y)}  # fmt: skip
                    rows.append({k: round(float(v), 4) if k in COLUMNS else v for k, v in row.items()})
                    print(rows[-1], flush=True)
                    pd.DataFrame(rows).to_csv(args.out, index=False)
    table = pd.DataFrame(rows).groupby(["protocol", "fraction"])[list(COLUMNS)].mean()
    print(table.round(3).to_string())


if __name__ == "__main__":
    main()
