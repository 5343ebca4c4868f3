"""``phg2st benchmark``: :func:`phg2st_sc.tl.benchmark` over folds of sections, resumable, with a printed summary."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from phg2st_sc._constants import ENCODER_NAMES

from ._common import fit_settings

DATASETS = ("her2st", "cscc", "stutility_mob")
FOLDS = ("leave_one_patient_out", "leave_one_section_out")


def add_parser(sub: Any) -> argparse.ArgumentParser:
    """Add the command's parser to ``sub`` (the ``phg2st`` subparsers) and return it."""
    from phg2st_sc.tl._evaluation import PROMPT_STRATEGIES
    from phg2st_sc.tl._protocol import PROTOCOLS

    p = sub.add_parser(
        "benchmark",
        help="evaluate PHG2ST and baselines over folds of sections (resumable; results, summary and protocol in --out)",
    )
    p.add_argument("data", nargs="+", help=f"{', '.join(DATASETS)}, or .h5ad / .zarr paths (one section each)")
    p.add_argument("--out", required=True, help="results folder (finished folds are kept and skipped on rerun)")
    p.add_argument(
        "--model-cache",
        default=None,
        help="folder of trained models reused by later runs with the same training (e.g. other prompt strategies)",
    )
    p.add_argument("--folds", default=FOLDS[0], choices=FOLDS, help="which sections are held out together")
    p.add_argument("--methods", nargs="+", default=["mean", "idw", "gp"], help="names of tl.METHOD_PRESETS")
    p.add_argument("--methods-file", default=None,
                   help="JSON file {label: {method: name, setting: value}} (overrides --methods)")  # fmt: skip
    p.add_argument("--protocols", nargs="+", default=["heldout", "heldout_smoothed"], choices=list(PROTOCOLS),
                   help="target protocols (tl.PROTOCOLS)")  # fmt: skip
    p.add_argument("--fractions", type=float, nargs="+", default=[0.1], help="prompt fractions")
    p.add_argument(
        "--strategy",
        default="random",
        choices=list(PROMPT_STRATEGIES),
        help="where the prompts are: random spots or five random blocks, or a tl.design_prompts design of as many "
        "spots (space, features, variance; *_blocks: five designed blocks)",
    )
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="prompt draws (default: 0 1 2)")
    p.add_argument("--spots", nargs="+", default=["heldout", "all"], choices=["heldout", "all"],
                   help="spots scored")  # fmt: skip
    p.add_argument("--sections", nargs="+", default=None, help="only these sections")
    p.add_argument("--panel", default="auto", help="gene panel name (default: the dataset's)")
    p.add_argument("--encoder", default=ENCODER_NAMES[0], choices=ENCODER_NAMES, help="tile encoder")
    p.add_argument("--weights", default=None, help="encoder weights file (UNI, ResNet-50)")
    p.add_argument("--mpp", type=float, default=None, help="microns per pixel seen by the encoder")
    p.add_argument("--cache-dir", default=None,
                   help="tile embedding cache (default: OUT/embedding_cache); one folder shared by runs on the same "
                   "images embeds them once")  # fmt: skip
    p.add_argument("--hidden", type=int, default=None, help="PHG2ST token size")
    p.add_argument("--max-epochs", type=int, default=None, help="PHG2ST's epoch limit")
    p.add_argument("--fit", nargs="+", metavar="KEY=VALUE",
                   help="more tl.fit settings for every PHG2ST method, e.g. attention_window=64")  # fmt: skip
    p.add_argument("--use-rep", default=None, help="obsm key of embeddings already in the inputs (skip embedding)")
    p.add_argument("--per-gene", action="store_true", help="also write per-gene metrics")
    return p


def check(args: argparse.Namespace) -> str | None:
    """Problems found before any work (a usage error)."""
    from phg2st_sc._utils import check_writable

    fit_settings(args.fit, hidden=args.hidden, max_epochs=args.max_epochs)
    check_writable(args.out)
    out = Path(args.out).expanduser().resolve()
    if args.cache_dir is not None and not Path(args.cache_dir).expanduser().resolve().is_relative_to(out):
        check_writable(args.cache_dir)  # (a folder inside `out` is not made here: `out` would no longer look new)
    return None


def run(args: argparse.Namespace) -> int:
    """Run :func:`phg2st_sc.tl.benchmark` and print the summary."""
    import phg2st_sc as phg2st

    data = args.data[0] if len(args.data) == 1 and args.data[0] in DATASETS else args.data
    embed = {k: v for k, v in {"weights": args.weights, "mpp": args.mpp}.items() if v is not None}
    embed["cache_dir"] = str(Path(args.cache_dir) if args.cache_dir is not None else Path(args.out) / "embedding_cache")
    fit = fit_settings(args.fit, hidden=args.hidden, max_epochs=args.max_epochs)
    methods = args.methods
    if args.methods_file:
        methods = json.loads(Path(args.methods_file).read_text())
        if not isinstance(methods, dict):
            raise ValueError(f"{args.methods_file} must hold a JSON object: label -> {{'method': ..., settings}}.")
    res = phg2st.tl.benchmark(
        data, folds=args.folds, methods=methods, protocols=args.protocols, prompt_fractions=args.fractions,
        prompt_strategy=args.strategy, seeds=args.seeds, spots=args.spots, sections=args.sections, panel=args.panel,
        encoder=args.encoder, use_rep=args.use_rep, embed_kwargs=embed, fit_kwargs=fit, per_gene=args.per_gene,
        out=args.out, model_cache=args.model_cache,
    )  # fmt: skip
    s = res.summary
    for m in ("mae", "ccc", "pcc"):
        s[m.upper()] = [f"{a:.3f} ± {b:.3f}" for a, b in zip(s[f"{m}_mean"], s[f"{m}_std"], strict=True)]
    cols = ["protocol", "spots", "prompt_fraction", "method", "MAE", "CCC", "PCC", "folds"]
    print(s[cols].to_string(index=False))
    print(f"Results, summary and protocol written to {args.out}.")
    return 0
