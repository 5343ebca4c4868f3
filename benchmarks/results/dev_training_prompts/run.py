"""`tl.fit`'s default training prompts against those every adaptive figure was measured with.

`tl.fit(prompt_fraction=0.3)` was the default for every variant, while the benchmark, the demo and the CLI train the
adaptive and propagated variants with a fraction drawn per step from (0.05, 0.3) (docs/design.md: it covers the 10%
used at test time). A user calling `tl.fit` with its defaults got another model than the one measured. This run
trains both on the same folds and scores them on the same prompt draws.

Usage: ``PHG2ST_DATA_DIR=../shared/data python run.py {her2st,mob} --out DIR``
"""

from __future__ import annotations

import argparse

import phg2st_sc as phg2st

METHODS = {
    "adaptive_range": {"method": "phg2st", "variant": "adaptive", "prompt_fraction": (0.05, 0.3)},
    "adaptive_fixed30": {"method": "phg2st", "variant": "adaptive", "prompt_fraction": 0.3},
}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("dataset", choices=["her2st", "mob"])
    ap.add_argument("--out", required=True)
    ap.add_argument("--cache-dir", default=None, help="tile embedding cache")
    args = ap.parse_args()
    kw = {"sections": ["C2", "C3", "C4", "C5", "C6"]} if args.dataset == "her2st" else {}
    embed = {"cache_dir": args.cache_dir} if args.cache_dir else {}
    if args.dataset == "mob":
        embed["mpp"] = 0.9
    res = phg2st.tl.benchmark(
        "her2st" if args.dataset == "her2st" else "stutility_mob", folds="leave_one_section_out",
        methods={**METHODS, "gp": {"method": "gp"}, "stack": {"method": "stack"}}, prompt_fractions=[0.1],
        seeds=[0, 1, 2], spots=["heldout"], fit_kwargs={"hidden": 128, "max_epochs": 100}, embed_kwargs=embed,
        out=args.out, model_cache=f"{args.out}/models", **kw,
    )  # fmt: skip
    print(res.summary.to_string())


if __name__ == "__main__":
    main()
