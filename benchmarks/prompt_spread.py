"""How far the layer's left-out prompts are from the other folds' prompts, against the spots it predicts (a diagnosis).

For each section of the development folds (her2st C2-C6, MOB1-4) and prompt fraction: the ratio of the mean distance
from a prompt to the nearest prompt of the other cross-fitting folds (``_incontext.prompt_folds``) to the mean
distance from a non-prompt spot to its nearest prompt (``_incontext.spread_ratio``), over random draws (seeds
0-29), the kriging-variance design and space-filling designs (seeds 0-2), random blocks and designed blocks; the
median-based ratio beside it (on the layer's sample of spots to predict). Coordinates only: no expression, no model.
Sections with fewer prompts than the layer needs are skipped.

    PHG2ST_DATA_DIR=../shared/data .venv/bin/python benchmarks/prompt_spread.py
"""

from __future__ import annotations

import warnings

import numpy as np

import phg2st_sc as phg2st
from phg2st_sc._constants import Keys
from phg2st_sc._model._incontext import MIN_PROMPTS, mean_ratio, prompt_folds, spread_distances
from phg2st_sc.tl._evaluation import draw_prompts

DRAWS = {"random": range(30), "variance": [0], "space": range(3), "blocks": range(3), "variance_blocks": [0],
         "space_blocks": range(3)}  # fmt: skip
FRACTIONS = (0.05, 0.1, 0.2, 0.3)


def ratios(xy: np.ndarray, prompt: np.ndarray) -> tuple[float, float]:
    """(mean ratio, as ``spread_ratio``; median ratio) of the folds' distance to the prediction distance."""
    folds = prompt_folds(int(prompt.sum()))
    d_cv, d_q = spread_distances(xy, prompt, folds)
    return mean_ratio(d_cv, d_q), float(np.median(d_cv) / np.median(d_q))


def main() -> None:
    warnings.simplefilter("ignore")
    phg2st.settings.progress = False
    secs = {s: phg2st.datasets.her2st(s) for s in ("C2", "C3", "C4", "C5", "C6")}
    secs |= {s: phg2st.datasets.stutility_mob(s) for s in ("MOB1", "MOB2", "MOB3", "MOB4")}
    rows = []
    for name, a in secs.items():
        xy = np.asarray(a.obsm[Keys.SPATIAL], dtype=float)
        for frac in FRACTIONS:
            for strategy, seeds in DRAWS.items():
                for seed in seeds:
                    draw_prompts(a, frac, seed, strategy)
                    prompt = a.obs[Keys.PROMPT].to_numpy(bool)
                    if prompt.sum() >= MIN_PROMPTS:
                        rows.append((strategy, frac, name, seed, *ratios(xy, prompt)))
    for strategy in DRAWS:
        for frac in FRACTIONS:
            r = np.array([x[4:] for x in rows if x[0] == strategy and x[1] == frac])
            if len(r):
                print(f"{strategy:8s} {frac:4.0%} draws {len(r):3d}: mean ratio {r[:, 0].min():.2f}-{r[:, 0].max():.2f}, "
                      f"median ratio {r[:, 1].min():.2f}-{r[:, 1].max():.2f}")  # fmt: skip


if __name__ == "__main__":
    main()
