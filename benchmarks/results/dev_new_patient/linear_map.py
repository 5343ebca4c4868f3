"""Does any image-to-expression map learned on patient C carry over to patient A? A linear one, as a reference.

A ridge from the tile features (the 2000-px copies of ``run.py``, the same embedding) to each gene, fitted on
patient C's spots and scored on every spot of A1 and A2; beside it the same ridge within C, leave one section out, and within A (fitted on the other A section).
The features standardised over all training spots (``global``) or over each section's own (``section``, as
``ModelConfig.section_norm``). Mean over genes of the per-gene PCC; no prompt is read.

Usage: ``PHG2ST_DATA_DIR=../shared/data python linear_map.py --out DIR`` (``DIR`` as for ``run.py``: its images and
tile cache are reused).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from run import MPP, A, C, at_2000px

import phg2st_sc as phg2st
from phg2st_sc._utils import as_dense

ALPHAS = (1.0, 100.0, 10_000.0)


def pcc(pred: np.ndarray, target: np.ndarray) -> float:
    p, t = pred - pred.mean(0), target - target.mean(0)
    d = np.sqrt((p**2).sum(0) * (t**2).sum(0))
    ok = d > 0
    return float(((p * t).sum(0)[ok] / d[ok]).mean())


def ridge(x: list[np.ndarray], y: list[np.ndarray], alpha: float):
    """Standardised inputs, centred outputs; returns a predictor."""
    xs, ys = np.vstack(x), np.vstack(y)
    m, s = xs.mean(0), xs.std(0) + 1e-8
    z = (xs - m) / s
    w = np.linalg.solve(z.T @ z + alpha * np.eye(z.shape[1]), z.T @ (ys - ys.mean(0)))
    return lambda new: ((new - m) / s) @ w


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    out = Path(ap.parse_args().out)
    (out / "images").mkdir(parents=True, exist_ok=True)
    sections = {}
    for name in C + A:
        a = at_2000px(name, out / "images")
        phg2st.pp.embed_tiles(a, encoder="efficientnet_lite0", mpp=MPP, cache_dir=out / "tiles", key_added="X")
        sections[name] = a
    print(
        "protocol, features, alpha: A1, A2 (trained on C2-C6) | C2-C6 leave one section out | A1, A2 (trained on the other)"
    )
    for protocol in ("heldout", "heldout_smoothed"):
        x, y = {}, {}
        for name, a in sections.items():
            w = phg2st.tl.prepare_targets(a, protocol, panel="her2st_785")
            x[name], y[name] = np.asarray(w.obsm["X"], dtype=np.float64), as_dense(w.X).astype(np.float64)
        for norm in ("global", "section"):
            f = {k: (v - v.mean(0)) / (v.std(0) + 1e-8) if norm == "section" else v for k, v in x.items()}
            for alpha in ALPHAS:
                fit = ridge([f[s] for s in C], [y[s] for s in C], alpha)
                new = [pcc(fit(f[s]), y[s]) for s in A]
                within = []
                for test in C:
                    fit_c = ridge([f[s] for s in C if s != test], [y[s] for s in C if s != test], alpha)
                    within.append(pcc(fit_c(f[test]), y[test]))
                other = [pcc(ridge([f[o]], [y[o]], alpha)(f[s]), y[s]) for s, o in zip(A, A[::-1], strict=True)]
                print(f"{protocol:16s} {norm:7s} {alpha:8g}: {new[0]:.3f}, {new[1]:.3f} | {np.mean(within):.3f} | "
                      f"{other[0]:.3f}, {other[1]:.3f}")  # fmt: skip


if __name__ == "__main__":
    main()
