"""``phg2st demo``: train PHG2ST on her2st C2-C6 but one, impute it from 10% prompts, compare with every baseline."""

from __future__ import annotations

import argparse
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from phg2st_sc._constants import Keys
from phg2st_sc._model._config import TRAINING_PROMPTS

DEMO_GENES = ("KRT8", "COL3A1", "IGKC")  # luminal keratin, stromal collagen, immunoglobulin (in the 785 panel)
ENCODER = "efficientnet_lite0"
REP = Keys.embedding(ENCODER)
SECTIONS = ("C2", "C3", "C4", "C5", "C6")
# Fixed in advance for a 2-core CPU (not tuned on the demo section), and since 2026-12-05 tl.fit's defaults too (the
# sixteenth round, docs/design.md); validation "auto": the last training section (C6) selects the epoch.
DEMO_FIT = {"use_rep": REP, "config": {"hidden": 128}, "max_epochs": 100, "patience": 20, "accelerator": "cpu"}


def add_parser(sub: Any) -> argparse.ArgumentParser:
    """Add the command's parser to ``sub`` (the ``phg2st`` subparsers) and return it."""
    p = sub.add_parser(
        "demo",
        help="train PHG2ST on her2st C2-C6 but one, impute it from 10%% prompts, compare (data from $PHG2ST_DATA_DIR, "
        "else downloaded once into the cache, checksummed)",
    )
    p.add_argument("--section", default="C2", help="her2st section (default: C2)")
    p.add_argument("--out", default="demo_output", help="output folder (default: demo_output)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="prompt seeds (default: 0 1 2)")
    p.add_argument("--epochs", type=int, default=None, help="cap the training epochs (a quick run, not a result)")
    p.add_argument("--cache-dir", default=None, help="tile embedding cache (default: OUT/embedding_cache)")
    return p


def check(args: argparse.Namespace) -> str | None:
    """Problems found before any work (a usage error, exit 2), or ``None``."""
    return None


def run(args: argparse.Namespace) -> int:
    """Run the command; return its exit code."""
    return demo(args.section, args.out, args.seeds, args.epochs, args.cache_dir)


def prepare_sections(sections: Sequence[str], *, cache_dir: Any = None, encoder: str = ENCODER) -> dict[str, Any]:
    """Read her2st sections, embed their tiles (cached) and build their hypergraphs: the inputs of the model."""
    import phg2st_sc as phg2st

    out = {}
    for section in sections:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", phg2st.MissingImageWarning)
            adata = phg2st.datasets.her2st(section)
        phg2st.pp.embed_tiles(adata, encoder=encoder, cache_dir=cache_dir)
        phg2st.pp.build_hypergraph(adata, use_rep=Keys.embedding(encoder))
        out[section] = adata
    return out


def demo(
    section: str = "C2",
    out: str | Path = "demo_output",
    seeds: Sequence[int] = (0, 1, 2),
    epochs: int | None = None,
    cache_dir: str | Path | None = None,
) -> int:
    """Run the demo: embed C2-C6, train PHG2ST on the other sections, impute ``section`` from 10% prompts."""
    import matplotlib

    matplotlib.use("Agg")
    import pandas as pd

    import phg2st_sc as phg2st

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    if section not in SECTIONS:
        raise ValueError(f"The demo imputes one of the sections with images, {list(SECTIONS)}; got {section!r}.")
    train = [s for s in SECTIONS if s != section]
    print(f"phg2st-sc {phg2st.__version__} demo: impute her2st {section} from 10% prompts; train on {train[:-1]}, "
          f"select the epoch on {train[-1]}")  # fmt: skip
    data = phg2st.settings.data_dir or f"downloaded (checksummed) into {phg2st.settings.cache_dir}"
    print(f"  data: {data}; image features: {ENCODER} (ImageNet weights, offline)")
    embedded = prepare_sections(SECTIONS, cache_dir=out / "embedding_cache" if cache_dir is None else cache_dir)
    p = embedded[section].uns[REP]["params"]
    print(f"  {section}: {embedded[section].n_obs} spots; {p['tiles_embedded']} tiles embedded ({p['spot_tiles']} spot + "
          f"{p['neighbour_tiles']} shared neighbour tiles; naive per-spot crops: {p['naive_crops']}) on "
          f"{p['device']} in {p['precision']}; embeddings and hypergraphs ready after {time.perf_counter() - t0:.0f} s")  # fmt: skip
    phg2st.settings.progress = False
    tables, figure_data = [], None
    for protocol in ("heldout", "heldout_smoothed"):
        table, targets, models = _run_protocol(protocol, embedded, section, train, seeds, epochs)
        tables.append(table)
        if protocol == "heldout":
            figure_data = (targets[section], models)
    pd.concat(tables, ignore_index=True).to_csv(out / f"her2st_{section}_phg2st.csv", index=False)
    fig_path = _figure(*figure_data, seed=seeds[0], path=out / f"her2st_{section}_genes.png")
    print(f"\nWrote {out / f'her2st_{section}_phg2st.csv'} and {fig_path} in {time.perf_counter() - t0:.0f} s.")
    return 0


def _run_protocol(protocol: str, embedded: dict, section: str, train: list[str], seeds: Sequence[int],
                  epochs: int | None) -> tuple[Any, dict, dict]:  # fmt: skip
    """Targets, the three trained variants, and the scores of every method on ``section`` (printed)."""
    import pandas as pd

    import phg2st_sc as phg2st
    from phg2st_sc.tl._evaluation import baseline_predictor, evaluate_methods, model_predictor, summarise_seeds
    from phg2st_sc.tl._metrics import SMOOTH_NOTE

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", phg2st.SmoothedTargetWarning)
        targets = {s: phg2st.tl.prepare_targets(a, protocol, panel="her2st_785") for s, a in embedded.items()}
    models = {}
    for variant in TRAINING_PROMPTS:
        t = time.perf_counter()
        fit_kwargs = {**DEMO_FIT, **({"max_epochs": epochs} if epochs else {})}
        model = phg2st.tl.fit([targets[s] for s in train], variant=variant, prompt_fraction=TRAINING_PROMPTS[variant],
                              **fit_kwargs)  # fmt: skip
        models[f"PHG2ST {variant}"] = model
        print(f"  [{protocol}] trained {variant!r} in {time.perf_counter() - t:.0f} s "
              f"({model.info['epochs_trained']} epochs, validation PCC {model.info['best_epoch_val_pcc']:.3f})")  # fmt: skip
    predictors = {name: model_predictor(m) for name, m in models.items()}
    predictors.update({m: baseline_predictor({"method": m}, REP) for m in phg2st.tl.METHODS})
    work = targets[section].copy()
    rows, _ = evaluate_methods(work, predictors, seeds=seeds, fraction=0.1, spots=("heldout",))
    table = pd.DataFrame(rows)[["method", "seed", "prompt_fraction", "spots", "pcc", "ccc", "mae", "n_spots"]]
    table.insert(0, "protocol", protocol)
    proto = phg2st.tl.PROTOCOLS[protocol]
    print(f"\nProtocol {protocol!r}: {proto.description}")
    print(f"  {work.n_obs - int(work.obs['phg2st_prompt'].sum())} held-out spots of {section}, 785 genes, "
          f"seeds {list(seeds)}; mean ± std over seeds")  # fmt: skip
    print(summarise_seeds(table).to_string())
    if proto.smooth:
        print(f"  NOTE: {SMOOTH_NOTE}")
    return table, targets, models


def _figure(target: Any, models: dict, *, seed: int, path: Path) -> Path:
    """Three genes of the section: measured, the stack baseline and the three variants, on the H&E."""
    import phg2st_sc as phg2st

    work = target.copy()
    phg2st.tl.select_prompts(work, fraction=0.1, seed=seed)
    phg2st.tl.baseline(work, method="stack", use_rep=REP)
    phg2st.tl.impute(work, models["PHG2ST paper"], layer_added="phg2st_paper")
    phg2st.tl.impute(work, models["PHG2ST propagated"], layer_added="phg2st_propagated")
    phg2st.tl.impute(work, models["PHG2ST adaptive"], layer_added="phg2st")
    layers = (None, "baseline_stack", "phg2st_paper", "phg2st_propagated", "phg2st")
    phg2st.pl.spatial(work, list(DEMO_GENES), layers=layers, save=path)
    return path
