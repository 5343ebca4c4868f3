"""What the nineteenth round saw before its rule (RULE.md, "Seen before this rule"): the layer without a scale,
its prediction rescaled after the fact, ``mu + s (prediction - mu)``, scored on the held-out spots.

her2st C2-C6 and MOB1-4 leave one section out, random prompts at 10% and 20%, seeds 0-2, both targets, on the
networks the tables read (``phg2st benchmark --model-cache``; tl.fit's default training prompts). For each draw:
held-out PCC, CCC and MAE at every scale of ``GRID``, and the scale a per-draw choice on a grid would take from
the prompts' cross-fitted absolute errors. The layer runs with its scale held at one (the layer before the
nineteenth round); what the scale would read is captured on the way::

    PHG2ST_DATA_DIR=../shared/data python rescale.py her2st --model-cache models_her2st \\
        --embedding-cache EMB --out rescale_her2st.jsonl
    PHG2ST_DATA_DIR=../shared/data python rescale.py mob --model-cache models_mob --embedding-cache EMB \\
        --out rescale_mob.jsonl
    python rescale.py summary rescale_her2st.jsonl rescale_mob.jsonl
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path

import numpy as np

GRID = (0.6, 0.8, 0.9, 1.0, 1.1, 1.2, 1.35, 1.5, 1.75, 2.0, 2.5)
BENCHMARKS = Path(__file__).resolve().parents[2]


def run(dataset: str, model_cache: Path, embedding_cache: Path, out: Path) -> None:
    import phg2st_sc as phg2st
    from phg2st_sc._constants import Keys
    from phg2st_sc._model import _incontext
    from phg2st_sc._model._config import TRAINING_PROMPTS
    from phg2st_sc._utils import as_dense
    from phg2st_sc.tl._evaluation import draw_prompts

    sys.path.insert(0, str(BENCHMARKS))
    import diagnose_layer
    from dev_incontext import REP, sections

    load = diagnose_layer.PHG2ST.load
    default = list(np.atleast_1d(TRAINING_PROMPTS["adaptive"]))

    def only_default(path):  # the cache may also hold networks trained with other prompts (dev_training_prompts)
        model = load(path)
        if list(np.atleast_1d(model.training.get("prompt_fraction"))) != default:
            model.config = dict(model.config, variant="other")
        return model

    seen = []
    diagnose_layer.PHG2ST.load = only_default
    _incontext.lad_scale = lambda r, d: seen.append((r, d)) or 1.0  # the layer before the scale
    warnings.simplefilter("ignore")
    secs = sections(dataset, embedding_cache)
    with open(out, "w") as f:
        for protocol in ("heldout", "heldout_smoothed"):
            for name in diagnose_layer.SECTIONS[dataset]:
                _, model, a = diagnose_layer.cached_fold(dataset, secs[name], name, protocol, model_cache)
                for fraction in (0.1, 0.2):
                    for seed in (0, 1, 2):
                        draw_prompts(a, fraction, seed, "random", REP)
                        seen.clear()
                        phg2st.tl.impute(a, model, layer_added="adapted", overwrite=True, uncertainty=False)
                        r, d = seen[0]
                        pick = GRID[int(np.argmin([np.abs(r - s * d).sum() for s in GRID]))]
                        prompt = a.obs[Keys.PROMPT].to_numpy(bool)
                        mu = as_dense(a.X, dtype=np.float64)[prompt].mean(0)
                        pred = np.asarray(a.layers["adapted"], dtype=np.float64)
                        held = {}
                        for s in GRID:
                            a.layers["scaled"] = (mu + s * (pred - mu)).astype(np.float32)
                            m = phg2st.tl.score(a, layer="scaled").summary
                            held[s] = [float(m["pcc"]), float(m["ccc"]), float(m["mae"])]
                        row = {"dataset": dataset, "protocol": protocol, "section": name, "fraction": fraction,
                               "seed": seed, "pick": pick, "held": held}  # fmt: skip
                        f.write(json.dumps(row) + "\n")


def summary(paths: list[Path]) -> None:
    import pandas as pd

    rows = [json.loads(line) for p in paths for line in p.read_text().splitlines()]
    curve = pd.DataFrame([{"dataset": r["dataset"], "protocol": r["protocol"], "fraction": r["fraction"], "s": float(s),
                           "ccc": v[1], "mae": v[2]} for r in rows for s, v in r["held"].items()])  # fmt: skip
    cell = ["dataset", "protocol", "fraction"]
    table = curve.groupby([*cell, "s"])[["ccc", "mae"]].mean().unstack("s")
    pd.set_option("display.width", 250)
    print("held-out CCC by scale (mean over sections and seeds)")
    print(table["ccc"].round(3).to_string())
    print("\nheld-out MAE by scale")
    print(table["mae"].round(4).to_string())
    print("\nthe scale of lowest mean MAE per cell:", table["mae"].idxmin(axis=1).to_dict())
    picked = pd.DataFrame([{"dataset": r["dataset"], "protocol": r["protocol"], "fraction": r["fraction"],
                            "d_mae": r["held"][str(r["pick"])][2] - r["held"]["1.0"][2],
                            "d_ccc": r["held"][str(r["pick"])][1] - r["held"]["1.0"][1]} for r in rows])  # fmt: skip
    print("\nthe per-draw choice from the prompts' cross-fitted absolute errors, against scale 1 (mean per cell)")
    print(picked.groupby(cell)[["d_mae", "d_ccc"]].mean().round(4).to_string())


def main() -> None:
    if sys.argv[1:2] == ["summary"]:
        summary([Path(p) for p in sys.argv[2:]])
        return
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dataset", choices=["her2st", "mob"])
    ap.add_argument("--model-cache", type=Path, required=True)
    ap.add_argument("--embedding-cache", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    run(args.dataset, args.model_cache, args.embedding_cache, args.out)


if __name__ == "__main__":
    main()
