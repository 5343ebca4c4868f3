"""Leave-one-section-out accuracy on the her2st sections with images: PHG2ST (both variants) vs every baseline.

For each test section T of C2-C6: the model trains on three of the other four sections and selects its epoch
on the fourth (the section after T, cyclically: C2 -> C3, ..., C6 -> C2); T is never seen before scoring.
Hyperparameters are fixed in advance (below), not tuned on any of these sections. Prompts: 10% of T's spots,
random, seeds 0, 1, 2 (the same prompts for every method). Scores on held-out spots and on all spots, for
unsmoothed and 3x3-smoothed targets. Ablations (unsmoothed targets, propagated variant): no spot branch, no
neighbour branch, no prompts (image only), no image (prompts only); prompt ratio at inference 5/10/20/30%.

Usage: PHG2ST_DATA_DIR=../shared/data .venv/bin/python benchmarks/bench_accuracy.py --out bench_results [--quick]
Resumable: finished folds are read back from --out.
"""

from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path

import pandas as pd

import phg2st_sc as phg2st
from phg2st_sc.cli import prepare_sections
from phg2st_sc.tl._evaluation import baseline_predictor, evaluate_methods, model_predictor

SECTIONS = ["C2", "C3", "C4", "C5", "C6"]
BASELINES = ["mean", "idw", "gp", "feature_knn", "ridge", "stack"]
REP = "X_efficientnet_lite0"
# Fixed in advance: the defaults of tl.fit (the paper's optimiser and epochs), with a smaller token size for a CPU.
FIT = {"use_rep": REP, "config": {"hidden": 128}, "max_epochs": 200, "patience": 20, "lr": 1e-4, "accelerator": "cpu"}
PROMPT_TRAIN = {"propagated": (0.05, 0.3), "paper": 0.3}
ABLATIONS = {
    "no spot branch": {"use_spot_branch": False},
    "no neighbour branch": {"use_neighbour_branch": False},
    "no prompts (image only)": {"use_prompts": False},
    "no image (prompts only)": {"use_image": False},
}


def run_fold(test, targets, seeds, ablations, fractions):
    train = [s for s in SECTIONS if s != test]
    val = SECTIONS[(SECTIONS.index(test) + 1) % len(SECTIONS)]
    fit_on = [s for s in train if s != val]
    rows, log = [], []
    for protocol, secs in targets.items():
        models = {}
        for variant in ("propagated", "paper"):
            t = time.perf_counter()
            models[variant] = phg2st.tl.fit([secs[s] for s in fit_on], validation=[secs[val]], variant=variant,
                                            prompt_fraction=PROMPT_TRAIN[variant], **FIT)  # fmt: skip
            log.append({"test": test, "protocol": protocol, "model": variant, "fit_s": time.perf_counter() - t,
                        "epochs": models[variant].info["epochs_trained"],
                        "val_pcc": models[variant].info.get("best_epoch_val_pcc")})  # fmt: skip
        if protocol == "heldout" and ablations:
            for name, switch in ABLATIONS.items():
                t = time.perf_counter()
                models[name] = phg2st.tl.fit([secs[s] for s in fit_on], validation=[secs[val]], variant="propagated",
                                             prompt_fraction=PROMPT_TRAIN["propagated"],
                                             **{**FIT, "config": {**FIT["config"], **switch}})  # fmt: skip
                log.append({"test": test, "protocol": protocol, "model": name, "fit_s": time.perf_counter() - t,
                            "epochs": models[name].info["epochs_trained"],
                            "val_pcc": models[name].info.get("best_epoch_val_pcc")})  # fmt: skip
        target = secs[test].copy()
        for fraction in fractions if protocol == "heldout" else [0.1]:
            # every method at 10% prompts; the two variants alone at the other fractions
            predictors = {f"PHG2ST {name}": model_predictor(model) for name, model in models.items()
                          if fraction == 0.1 or name in ("propagated", "paper")}  # fmt: skip
            if fraction == 0.1:
                predictors.update({m: baseline_predictor({"method": m}, REP) for m in BASELINES})
            r, _ = evaluate_methods(target, predictors, seeds=seeds, fraction=fraction, spots=("heldout", "all"),
                                    base={"test": test, "protocol": protocol})  # fmt: skip
            rows += r
    columns = ["test", "protocol", "method", "seed", "prompt_fraction", "spots", "pcc", "ccc", "mae", "n_genes"]
    return pd.DataFrame(rows)[columns], pd.DataFrame(log)


def summary(table: pd.DataFrame) -> pd.DataFrame:
    """Mean over seeds within a fold, then mean ± std over the folds."""
    per_fold = table.groupby(["protocol", "spots", "prompt_fraction", "method", "test"])[["mae", "ccc", "pcc"]].mean()
    agg = per_fold.groupby(level=[0, 1, 2, 3]).agg(["mean", "std"])
    out = pd.DataFrame(index=agg.index)
    for m in ("mae", "ccc", "pcc"):
        out[m.upper()] = [f"{a:.3f} ± {b:.3f}" for a, b in zip(agg[(m, "mean")], agg[(m, "std")], strict=True)]
    out["folds"] = per_fold.groupby(level=[0, 1, 2, 3]).size()
    return out


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default="bench_results")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--tests", nargs="+", default=SECTIONS)
    parser.add_argument("--no-ablations", action="store_true")
    parser.add_argument("--quick", action="store_true", help="10 epochs, one seed (a smoke run, not a result)")
    args = parser.parse_args()
    if args.quick:
        FIT["max_epochs"], args.seeds = 10, [0]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    phg2st.settings.progress = False
    warnings.filterwarnings("ignore", category=UserWarning)
    embedded = prepare_sections(SECTIONS, cache_dir=out / "embedding_cache")
    targets = {p: {s: phg2st.tl.prepare_targets(a, p, panel="her2st_785") for s, a in embedded.items()}
               for p in ("heldout", "heldout_smoothed")}  # fmt: skip
    fractions = [0.05, 0.1, 0.2, 0.3]
    for test in args.tests:
        path = out / f"fold_{test}.csv"
        if path.exists():
            continue
        t = time.perf_counter()
        rows, log = run_fold(test, targets, args.seeds, not args.no_ablations, fractions)
        rows.to_csv(path, index=False)
        log.to_csv(out / f"fits_{test}.csv", index=False)
        print(f"fold {test}: {time.perf_counter() - t:.0f} s", flush=True)
    table = pd.concat([pd.read_csv(p) for p in sorted(out.glob("fold_*.csv"))], ignore_index=True)
    table.to_csv(out / "results.csv", index=False)
    s = summary(table)
    s.to_csv(out / "summary.csv")
    print(s.to_string())
