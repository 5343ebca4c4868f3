"""Seventeenth round: the in-context layer with and without inverse-distance weighting as a component (RULE.md).

Scores the adaptive variant on networks read from earlier rounds' model caches (none is trained here: a run that
would train one stops), so that the layer's code is the only difference between a run on the commit before the
change and one after it.

Usage (``CACHE``: the folder the earlier round wrote its models and tile embeddings to)::

    PHG2ST_DATA_DIR=../shared/data python run.py her2st --cache CACHE --tiles TILES --out DIR [--strategy blocks]
    PHG2ST_DATA_DIR=../shared/data python run.py mob --cache CACHE --tiles TILES --out DIR [--strategy blocks]
    PHG2ST_DATA_DIR=../shared/data python run.py new_patient --cache CACHE --out DIR [--strategy blocks]

``her2st`` and ``mob``: leave one section out (C2-C6; MOB1-4), the networks of ``../dev_training_prompts``
(``CACHE/models``, tiles in ``TILES``). ``new_patient``: A1 and A2 at 2000 px, trained on C2-C6 at 2000 px, the
networks, image copies and tiles of ``../dev_new_patient`` (``CACHE`` = its ``--out``).
"""

from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path

import phg2st_sc as phg2st

HERE = Path(__file__).resolve().parent
ADAPTIVE = {"method": "phg2st", "variant": "adaptive", "prompt_fraction": (0.05, 0.3)}  # tl.fit's default prompts
METHODS = {"phg2st_adaptive": ADAPTIVE, "idw": {"method": "idw"}, "gp": {"method": "gp"}, "stack": {"method": "stack"}}
FIT = {"hidden": 128, "max_epochs": 100}


def _new_patient_reader():
    spec = importlib.util.spec_from_file_location("dev_new_patient_run", HERE.parent / "dev_new_patient" / "run.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _no_training(*args, **kwargs):
    raise RuntimeError("a network is missing from the model cache; this round trains none")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("dataset", choices=["her2st", "mob", "new_patient"])
    ap.add_argument("--cache", required=True, help="the earlier round's folder with models/ (and tiles/, images/)")
    ap.add_argument("--tiles", default=None, help="tile embedding cache (her2st, mob)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--strategy", default="random")
    ap.add_argument("--fractions", type=float, nargs="+", default=None)
    args = ap.parse_args()
    cache = Path(args.cache)
    fractions = args.fractions or ([0.1, 0.2] if args.strategy == "random" else [0.1])
    import phg2st_sc.tl._fit as fit_module

    fit_module.fit = _no_training  # the benchmark reads tl.fit from this module when the cache misses
    common = {"methods": METHODS, "seeds": [0, 1, 2], "prompt_fractions": fractions, "spots": ["heldout"],
              "fit_kwargs": FIT, "model_cache": cache / "models", "prompt_strategy": args.strategy,
              "out": args.out}  # fmt: skip
    if args.dataset == "new_patient":
        np_run = _new_patient_reader()
        adatas = [np_run.at_2000px(s, cache / "images") for s in np_run.C + np_run.A]
        res = phg2st.tl.benchmark(adatas, folds={"A": np_run.A}, panel="her2st_785",
                                  embed_kwargs={"mpp": np_run.MPP, "cache_dir": str(cache / "tiles")}, **common)  # fmt: skip
    else:
        embed = {"cache_dir": args.tiles} if args.tiles else {}
        kw = {"sections": ["C2", "C3", "C4", "C5", "C6"]} if args.dataset == "her2st" else {}
        if args.dataset == "mob":
            embed["mpp"] = 0.9
        res = phg2st.tl.benchmark("her2st" if args.dataset == "her2st" else "stutility_mob",
                                  folds="leave_one_section_out", embed_kwargs=embed, **kw, **common)  # fmt: skip
    print(res.summary.to_string())


if __name__ == "__main__":
    main()
