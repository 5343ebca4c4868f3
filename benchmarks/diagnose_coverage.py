"""Why the intervals under-cover at few prompts (a diagnosis, issue 16): the shared level error and the rest.

For each section and prompt seed, the adaptive variant's 80% coverage on held-out spots, and the same with each
gene's mean normalised error over the held-out spots removed (the level error that all of them share: the full
fit's per-gene offset, which the within-fold errors at the prompts cannot show); the mean square of that level
(about 1/p for p prompts if it is the offset's error alone) and the variance of the normalised errors around it
(about 1 if the prompts' cross-fitted errors are the held-out errors' size). Networks of ``dev_spread.py`` or
``dev_incontext.py --network propagated`` (``OUT/models``; trained there when absent):

    PHG2ST_DATA_DIR=../shared/data .venv/bin/python benchmarks/diagnose_coverage.py mob --out dev_spread_mob \
        --sections MOB2 MOB3 --fraction 0.05 --protocols heldout
"""

from __future__ import annotations

import time

import numpy as np
from dev_incontext import REP, dev_arguments, dev_setup, fold_models

from phg2st_sc._constants import Keys
from phg2st_sc._model import _incontext
from phg2st_sc._utils import as_dense, spot_pitch
from phg2st_sc.tl._evaluation import draw_prompts


def main() -> None:
    ap = dev_arguments(__doc__)
    ap.add_argument("--fraction", type=float, default=0.05)
    ap.add_argument("--sections", nargs="+", default=None, help="only these test sections")
    args = ap.parse_args()
    import torch

    t0 = time.perf_counter()
    out, secs = dev_setup(args)
    for proto, test, targets, model in fold_models(secs, args.dataset, args.protocols, out / "models"):
        if args.sections and test not in args.sections:
            continue
        for seed in args.seeds:
            a = targets[test].copy()
            draw_prompts(a, args.fraction, seed, args.strategy, REP)
            prompt = a.obs[Keys.PROMPT].to_numpy(bool)
            net, latent = model.predict(a, prompt, network_only=True)
            with torch.inference_mode():
                oof, tokens = model._cross_fitted(model.tensors(a, prompt=prompt), prompt, "cpu", (net, latent))
            y = as_dense(a.X, dtype=np.float64)
            xy = np.asarray(a.obsm[Keys.SPATIAL], dtype=float)
            pred, fit = _incontext.adapt(net.astype(float), latent, np.asarray(a.obsm[REP], float),
                                         xy / spot_pitch(xy), prompt, y[prompt], network_at_prompts=oof,
                                         latent_at_prompts=tokens)  # fmt: skip
            held = ~prompt
            z = (y - pred)[held] / np.maximum(fit.spread.std()[held], 1e-12)
            level = z.mean(0)  # each gene's mean normalised error over the held-out spots
            q = fit.spread.quantile(0.8)
            print(f"{proto} {test} seed {seed}, {prompt.sum()} prompts: coverage 80% {(np.abs(z) <= q).mean():.3f}, "
                  f"without the level error {(np.abs(z - level) <= q).mean():.3f}; mean square level "
                  f"{(level**2).mean():.3f} (1/p {1 / prompt.sum():.3f}), variance around it "
                  f"{(z - level).var(0).mean():.3f}", flush=True)  # fmt: skip
    print(f"done in {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
