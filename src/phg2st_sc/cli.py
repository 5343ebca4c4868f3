"""Command-line interface: ``phg2st <command>``."""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

DEMO_GENES = ("KRT8", "COL3A1", "IGKC")  # luminal keratin, stromal collagen, immunoglobulin (in the 785 panel)
REP = "X_efficientnet_lite0"
BASELINES = ("mean", "idw", "gp", "feature_knn", "ridge", "stack")
# Fixed in advance for a 2-core CPU (not tuned on the demo section): tl.fit's defaults with smaller tokens and
# fewer epochs; validation "auto": the last training section (C6) selects the epoch.
DEMO_FIT = {"use_rep": REP, "hidden": 128, "max_epochs": 100, "patience": 20, "accelerator": "cpu"}
DEMO_PROMPTS = {"propagated": (0.05, 0.3), "paper": 0.3}


def _summarise(table):
    """Mean ± std over seeds, one row per method."""
    import pandas as pd

    g = table.groupby("method", sort=False)
    out = pd.DataFrame(index=g.size().index)
    for m in ("mae", "ccc", "pcc"):
        out[m.upper()] = [f"{mu:.3f} ± {sd:.3f}" for mu, sd in zip(g[m].mean(), g[m].std(ddof=0), strict=True)]
    return out


def prepare_sections(sections, *, cache_dir=None, encoder: str = "efficientnet_lite0"):
    """Read her2st sections, embed their tiles (cached) and build their hypergraphs: the inputs of the model."""
    import phg2st_sc as phg2st

    out = {}
    for section in sections:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", phg2st.MissingImageWarning)
            adata = phg2st.datasets.her2st(section)
        phg2st.pp.embed_tiles(adata, encoder=encoder, cache_dir=cache_dir)
        phg2st.pp.build_hypergraph(adata, use_rep=f"X_{encoder}")
        out[section] = adata
    return out


def compare_methods(target, models, *, baselines, use_rep, seeds, fraction=0.1, spots=("heldout",)):
    """Score trained models and baselines on one section with the same prompt draws.

    Returns a tidy table: method, seed, prompt fraction, spots scored, PCC, CCC, MAE.
    """
    import pandas as pd

    import phg2st_sc as phg2st

    target = target.copy()
    rows = []
    for seed in seeds:
        phg2st.tl.select_prompts(target, fraction=fraction, seed=seed)
        layers = {}
        for name, model in models.items():
            phg2st.tl.impute(target, model, layer_added=f"pred_{len(layers)}")
            layers[name] = f"pred_{len(layers)}"
        for method in baselines:
            rep = use_rep if method in ("feature_knn", "ridge", "stack") else None
            phg2st.tl.baseline(target, method=method, use_rep=rep, layer_added=f"pred_{len(layers)}", seed=seed)
            layers[method] = f"pred_{len(layers)}"
        for name, layer in layers.items():
            for which in spots:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", phg2st.SmoothedTargetWarning)
                    sm = phg2st.tl.score(target, layer=layer, spots=which).summary
                rows.append({"method": name, "seed": seed, "prompt_fraction": fraction, "spots": which,
                             "pcc": sm["pcc"], "ccc": sm["ccc"], "mae": sm["mae"], "n_spots": sm["n_spots"]})  # fmt: skip
    return pd.DataFrame(rows), target


def demo(
    section: str = "C2", out: str | Path = "demo_output", seeds: Sequence[int] = (0, 1, 2), epochs: int | None = None
) -> int:
    """Run the demo: embed C2-C6, train PHG2ST on the other sections, impute ``section`` from 10% prompts."""
    import matplotlib

    matplotlib.use("Agg")
    import pandas as pd

    import phg2st_sc as phg2st
    from phg2st_sc.tl._metrics import SMOOTH_NOTE

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    sections = ["C2", "C3", "C4", "C5", "C6"]
    if section not in sections:
        raise ValueError(f"The demo imputes one of the sections with images, {sections}; got {section!r}.")
    train = [s for s in sections if s != section]
    print(f"phg2st-sc {phg2st.__version__} demo: impute her2st {section} from 10% prompts; train on {train[:-1]}, "
          f"select the epoch on {train[-1]}")  # fmt: skip
    print(f"  data: {phg2st.settings.data_dir}; image features: efficientnet_lite0 (ImageNet weights, offline)")
    embedded = prepare_sections(sections, cache_dir=out / "embedding_cache")
    p = embedded[section].uns[REP]["params"]
    print(f"  {section}: {embedded[section].n_obs} spots; {p['tiles_embedded']} tiles embedded ({p['spot_tiles']} spot + "
          f"{p['neighbour_tiles']} shared neighbour tiles; naive per-spot crops: {p['naive_crops']}) on "
          f"{p['device']} in {p['precision']}; embeddings and hypergraphs ready after {time.perf_counter() - t0:.0f} s")  # fmt: skip

    phg2st.settings.progress = False
    tables, figure_data = [], None
    for protocol in ("heldout", "heldout_smoothed"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", phg2st.SmoothedTargetWarning)
            targets = {s: phg2st.tl.prepare_targets(a, protocol, panel="her2st_785") for s, a in embedded.items()}
        models = {}
        for variant in ("propagated", "paper"):
            t = time.perf_counter()
            fit_kwargs = {**DEMO_FIT, **({"max_epochs": epochs} if epochs else {})}
            model = phg2st.tl.fit([targets[s] for s in train], variant=variant, prompt_fraction=DEMO_PROMPTS[variant],
                                  **fit_kwargs)  # fmt: skip
            models[f"PHG2ST {variant}"] = model
            print(f"  [{protocol}] trained {variant!r} in {time.perf_counter() - t:.0f} s "
                  f"({model.info['epochs_trained']} epochs, validation PCC {model.info['best_epoch_val_pcc']:.3f})")  # fmt: skip
        table, imputed = compare_methods(targets[section], models, baselines=BASELINES, use_rep=REP, seeds=seeds)
        table.insert(0, "protocol", protocol)
        tables.append(table)
        proto = phg2st.tl.PROTOCOLS[protocol]
        print(f"\nProtocol {protocol!r}: {proto.description}")
        print(f"  {imputed.n_obs - int(imputed.obs['phg2st_prompt'].sum())} held-out spots of {section}, 785 genes, "
              f"seeds {list(seeds)}; mean ± std over seeds")  # fmt: skip
        print(_summarise(table).to_string())
        if proto.smooth:
            print(f"  NOTE: {SMOOTH_NOTE}")
        if protocol == "heldout":
            figure_data = (targets[section], models)
    tidy = pd.concat(tables, ignore_index=True)
    tidy.to_csv(out / f"her2st_{section}_phg2st.csv", index=False)

    work, models = figure_data
    work = work.copy()
    phg2st.tl.select_prompts(work, fraction=0.1, seed=seeds[0])
    phg2st.tl.baseline(work, method="stack", use_rep=REP)
    phg2st.tl.impute(work, models["PHG2ST paper"], layer_added="phg2st_paper")
    phg2st.tl.impute(work, models["PHG2ST propagated"], layer_added="phg2st")
    fig_path = out / f"her2st_{section}_genes.png"
    phg2st.pl.spatial(work, list(DEMO_GENES), layers=(None, "baseline_stack", "phg2st_paper", "phg2st"), save=fig_path)
    print(f"\nWrote {out / f'her2st_{section}_phg2st.csv'} and {fig_path} in {time.perf_counter() - t0:.0f} s.")
    return 0


def _key_values(items: Sequence[str] | None) -> dict[str, Any]:
    """Parse ``KEY=VALUE`` options; values are read as JSON where they parse (numbers, true/false, lists)."""
    out: dict[str, Any] = {}
    for item in items or ():
        key, sep, value = item.partition("=")
        if not sep or not key.isidentifier():
            raise ValueError(f"Expected KEY=VALUE, got {item!r}.")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def run_benchmark(args: argparse.Namespace) -> int:
    """``phg2st benchmark``: run :func:`phg2st_sc.tl.benchmark` and print the summary."""
    import phg2st_sc as phg2st

    data = args.data[0] if len(args.data) == 1 and args.data[0] in ("her2st", "cscc", "stutility_mob") else args.data
    embed = {k: v for k, v in {"weights": args.weights, "mpp": args.mpp}.items() if v is not None}
    embed["cache_dir"] = str(Path(args.out) / "embedding_cache")
    fit = {k: v for k, v in {"hidden": args.hidden, "max_epochs": args.max_epochs}.items() if v is not None}
    fit.update(_key_values(args.fit))
    methods = args.methods
    if args.methods_file:
        methods = json.loads(Path(args.methods_file).read_text())
        if not isinstance(methods, dict):
            raise ValueError(f"{args.methods_file} must hold a JSON object: label -> {{'method': ..., settings}}.")
    res = phg2st.tl.benchmark(
        data, folds=args.folds, methods=methods, protocols=args.protocols, prompt_fractions=args.fractions, prompt_strategy=args.strategy,
        seeds=args.seeds, spots=args.spots, sections=args.sections, panel=args.panel, encoder=args.encoder,
        use_rep=args.use_rep, embed_kwargs=embed, fit_kwargs=fit, per_gene=args.per_gene, out=args.out,
    )  # fmt: skip
    s = res.summary
    for m in ("mae", "ccc", "pcc"):
        s[m.upper()] = [f"{a:.3f} ± {b:.3f}" for a, b in zip(s[f"{m}_mean"], s[f"{m}_std"], strict=True)]
    cols = ["protocol", "spots", "prompt_fraction", "method", "MAE", "CCC", "PCC", "folds"]
    print(s[cols].to_string(index=False))
    print(f"Results, summary and protocol written to {args.out}.")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``phg2st`` command."""
    parser = argparse.ArgumentParser(prog="phg2st", description="PHG2ST spatial expression prediction tools.")
    sub = parser.add_subparsers(dest="command", required=True)
    p_demo = sub.add_parser(
        "demo",
        help="train PHG2ST on her2st C2-C6 but one, impute it from 10%% prompts, compare (needs $PHG2ST_DATA_DIR)",
    )
    p_demo.add_argument("--section", default="C2", help="her2st section (default: C2)")
    p_demo.add_argument("--out", default="demo_output", help="output folder (default: demo_output)")
    p_demo.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="prompt seeds (default: 0 1 2)")
    p_demo.add_argument("--epochs", type=int, default=None, help="cap the training epochs (a quick run, not a result)")
    p_bench = sub.add_parser(
        "benchmark",
        help="evaluate PHG2ST and baselines over folds of sections (resumable; results, summary and protocol in --out)",
    )
    p_bench.add_argument(
        "data", nargs="+", help="her2st, cscc, stutility_mob, or .h5ad / .zarr paths (one section each)"
    )
    p_bench.add_argument("--out", required=True, help="results folder (finished folds are kept and skipped on rerun)")
    p_bench.add_argument(
        "--folds", default="leave_one_patient_out", choices=["leave_one_patient_out", "leave_one_section_out"]
    )
    p_bench.add_argument("--methods", nargs="+", default=["mean", "idw", "gp"], help="names of tl.METHOD_PRESETS")
    p_bench.add_argument(
        "--methods-file", default=None, help="JSON file {label: {method: name, setting: value}} (overrides --methods)"
    )
    p_bench.add_argument("--protocols", nargs="+", default=["heldout", "heldout_smoothed"])
    p_bench.add_argument("--fractions", type=float, nargs="+", default=[0.1], help="prompt fractions")
    p_bench.add_argument("--strategy", default="random", choices=["random", "blocks"], help="where the prompts are")
    p_bench.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p_bench.add_argument("--spots", nargs="+", default=["heldout", "all"], choices=["heldout", "all"])
    p_bench.add_argument("--sections", nargs="+", default=None, help="only these sections")
    p_bench.add_argument("--panel", default="auto", help="gene panel name (default: the dataset's)")
    p_bench.add_argument("--encoder", default="efficientnet_lite0")
    p_bench.add_argument("--weights", default=None, help="encoder weights file (UNI, ResNet-50)")
    p_bench.add_argument("--mpp", type=float, default=None, help="microns per pixel seen by the encoder")
    p_bench.add_argument("--hidden", type=int, default=None, help="PHG2ST token size")
    p_bench.add_argument("--max-epochs", type=int, default=None)
    p_bench.add_argument(
        "--fit",
        nargs="+",
        metavar="KEY=VALUE",
        help="more tl.fit settings for every PHG2ST method, e.g. attention_window=64",
    )
    p_bench.add_argument(
        "--use-rep", default=None, help="obsm key of embeddings already in the inputs (skip embedding)"
    )
    p_bench.add_argument("--per-gene", action="store_true")
    args = parser.parse_args(argv)
    try:
        if args.command == "demo":
            return demo(args.section, args.out, args.seeds, args.epochs)
        if args.command == "benchmark":
            return run_benchmark(args)
    except Exception as err:  # noqa: BLE001 - the CLI reports any failure as a message and an exit code
        print(f"phg2st {args.command}: error: {err}", file=sys.stderr)
        return 1
    return 2  # pragma: no cover - argparse rejects unknown commands


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
