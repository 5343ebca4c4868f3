"""Sixteenth round: the adaptive variant's network at tl.fit's default size against the benchmarks' (RULE.md).

Usage: ``PHG2ST_DATA_DIR=../shared/data python run.py {her2st,mob} --out DIR``
"""

from __future__ import annotations

import argparse

import phg2st_sc as phg2st

ADAPTIVE = {"method": "phg2st", "variant": "adaptive", "prompt_fraction": (0.05, 0.3)}
METHODS = {
    "adaptive_128": ADAPTIVE | {"hidden": 128, "max_epochs": 100},  # the benchmarks' network
    "adaptive_256": ADAPTIVE | {"hidden": 256, "max_epochs": 200},  # tl.fit's defaults
}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("dataset", choices=["her2st", "mob"])
    ap.add_argument("--out", required=True)
    ap.add_argument("--cache-dir", default=None, help="tile embedding cache")
    args = ap.parse_args()
    kw = {"sections": ["C2", "C3", "C4", "C5", "C6"]} if args.dataset == "her2st" else {}
    embed = {"cache_dir": args.cache_dir} if args.cache_dir else {}
    methods = METHODS
    if args.dataset == "mob":  # its (128, 100) rows: ../dev_training_prompts/mob (adaptive_range)
        embed["mpp"] = 0.9
        methods = {"adaptive_256": METHODS["adaptive_256"]}
    res = phg2st.tl.benchmark(
        "her2st" if args.dataset == "her2st" else "stutility_mob", folds="leave_one_section_out",
        methods=methods, prompt_fractions=[0.1], seeds=[0, 1, 2], spots=["heldout"], embed_kwargs=embed,
        out=args.out, model_cache=f"{args.out}/models", **kw,
    )  # fmt: skip
    print(res.summary.to_string())


if __name__ == "__main__":
    main()
