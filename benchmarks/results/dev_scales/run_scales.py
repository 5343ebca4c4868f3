"""Development run of docs/design.md's ninth round: the kriged components' errors compared at the spots' distance.

With spread prompts (a design) the layer's weights and safeguard read each kriged component's cross-fitted error
scaled by ``_incontext.distance_scales`` (in the moments, not the predictions). On the networks cached by the final
`phg2st benchmark` runs (``--model-cache``), each draw is scored three times, the network's passes shared: the
layer as it was (``current``), with the scaled moments (``scaled``), and with them and the ridge kept
(``scaled_ridge``). Held-out PCC as ``tl.score`` gives it. Not adopted: it needs ``distance_scales.patch`` (beside
it) applied to ``src/phg2st_sc/_model/_incontext.py`` (at commit c386761):

    git apply benchmarks/results/dev_scales/distance_scales.patch
    PHG2ST_DATA_DIR=../shared/data .venv/bin/python benchmarks/results/dev_scales/run_scales.py \
        her2st --model-cache MODELS --out her2st_rows.csv
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

import phg2st_sc as phg2st
from phg2st_sc._model import _incontext
from phg2st_sc.tl._evaluation import draw_prompts

sys.path.insert(0, str(Path(__file__).parents[2]))  # benchmarks/
from dev_incontext import REP, layer_inputs, sections
from diagnose_layer import SECTIONS, cached_fold, held_out_pcc

VARIANTS = {"current": (False, False), "scaled": (True, False), "scaled_ridge": (True, True)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dataset", choices=list(SECTIONS))
    ap.add_argument("--model-cache", type=Path, required=True)
    ap.add_argument("--embedding-cache", type=Path, default=None)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--protocols", nargs="+", default=["heldout", "heldout_smoothed"])
    ap.add_argument("--strategies", nargs="+", default=["variance", "space"])
    ap.add_argument("--fractions", type=float, nargs="+", default=[0.05, 0.1, 0.2])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = ap.parse_args()
    warnings.simplefilter("ignore")
    phg2st.settings.progress = False
    secs = sections(args.dataset, args.embedding_cache or Path(tempfile.gettempdir()) / f"phg2st_cache_{args.dataset}")
    rows = []
    for proto in args.protocols:
        for test in SECTIONS[args.dataset]:
            _, model, a = cached_fold(args.dataset, secs[test], test, proto, args.model_cache)
            for strategy in args.strategies:
                for fraction in args.fractions:
                    for seed in args.seeds:
                        draw_prompts(a, fraction, seed, strategy, REP)
                        prompt = a.obs["phg2st_prompt"].to_numpy(bool)
                        inputs, kwargs = layer_inputs(model, a, prompt)
                        row = {"dataset": args.dataset, "protocol": proto, "fold": test, "strategy": strategy,
                               "fraction": fraction, "seed": seed}  # fmt: skip
                        for name, (scales, ridge) in VARIANTS.items():
                            _incontext.SPREAD_SCALES, _incontext.SPREAD_RIDGE = scales, ridge
                            out, fit = _incontext.adapt(*inputs, **kwargs)
                            out[prompt] = inputs[5]
                            a.layers[name] = out.astype(np.float32)
                            rec = fit.record()
                            row[f"pcc_{name}"] = round(held_out_pcc(a, name), 4)
                            row[f"kept_{name}"] = rec["cv_pcc"]["kept"]
                            if name == "scaled":
                                row["spread_ratio"] = round(rec["cv_pcc"].get("spread_ratio", float("nan")), 3)
                                row |= {f"s_{c}": v for c, v in rec["cv_pcc"].get("distance_scales", {}).items()}
                        rows.append(row)
                        print(row, flush=True)
                        pd.DataFrame(rows).to_csv(args.out, index=False)


if __name__ == "__main__":
    main()
