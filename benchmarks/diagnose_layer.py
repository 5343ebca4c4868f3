"""What the in-context layer kept on one section, per prompt seed, with its held-out PCC (a diagnosis).

Reads a network trained by `phg2st benchmark --model-cache DIR` on the other C sections and, for each seed, prints
the layer's weights, each component's cross-fitted PCC over the prompts (`uns[layer]['params']['in_context']`) and
the held-out PCC of the adapted prediction and of the network alone:

    PHG2ST_DATA_DIR=../shared/data .venv/bin/python benchmarks/diagnose_layer.py C6 --protocol heldout \
        --strategy blocks --model-cache models_her2st --embedding-cache her2st_c_adaptive_blocks/embedding_cache

(The diagnosis of her2st C6 with prompts in blocks in docs/design.md, "the network as the fallback".) MOB sections
(``--dataset mob``, networks of ``phg2st benchmark stutility_mob``) and designed prompts (``--strategy variance``,
any of the benchmark's strategies) too:

    PHG2ST_DATA_DIR=../shared/data .venv/bin/python benchmarks/diagnose_layer.py MOB2 --dataset mob \
        --protocol heldout_smoothed --strategy variance --model-cache models_mob \
        --embedding-cache DIR
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

import numpy as np

import phg2st_sc as phg2st
from phg2st_sc._constants import Keys
from phg2st_sc._model import _incontext
from phg2st_sc._model._model import PHG2ST
from phg2st_sc._utils import as_dense
from phg2st_sc.tl._evaluation import PROMPT_STRATEGIES, draw_prompts
from phg2st_sc.tl._protocol import get_protocol, prepare_targets

sys.path.insert(0, str(Path(__file__).parent))
from dev_incontext import REP, oracle_combination, sections

SECTIONS = {"her2st": ("C2", "C3", "C4", "C5", "C6"), "mob": ("MOB1", "MOB2", "MOB3", "MOB4")}


def cached_fold(dataset: str, section, test: str, protocol: str, model_cache: Path) -> tuple[Path, PHG2ST, object]:
    """The network `phg2st benchmark --model-cache` trained on the other sections, and ``section`` (the test
    section, embedded) with that protocol's targets, its genes in the network's order (the benchmark's MOB panel
    keeps another order than the reader's)."""
    train = "+".join(s for s in SECTIONS[dataset] if s != test)
    found = {p: PHG2ST.load(p) for p in sorted(model_cache.glob(f"{protocol}_{train}_*.pt"))}
    # the adaptive variant's networks (a cache may hold the ablations' too: image only, prompts only, paper)
    adaptive = [p for p, m in found.items() if m.config["variant"] == "adaptive" and m.config["use_image"]
                and m.config["use_prompts"]]  # fmt: skip
    if len(adaptive) != 1:
        raise FileNotFoundError(f"{len(adaptive)} adaptive networks for {protocol} {train} in {model_cache}: need one.")
    path, model = adaptive[0], found[adaptive[0]]
    a = prepare_targets(section, get_protocol(protocol), panel="her2st_785" if dataset == "her2st" else None)
    return path, model, a[:, list(model.genes)].copy()


def oracle_pcc(a, components: dict[str, np.ndarray]) -> float:
    """Held-out PCC of ``dev_incontext.oracle_combination`` over these components: the layer's form with its
    weights fitted on the held-out values themselves (a bound on any choice of weights, not a method)."""
    held = ~a.obs[Keys.PROMPT].to_numpy(bool)
    a.layers["oracle"] = oracle_combination(components, as_dense(a.X, dtype=np.float64), held).astype(np.float32)
    return held_out_pcc(a, "oracle")


def held_out_pcc(a, layer: str) -> float:
    """Mean per-gene PCC over the held-out spots (``tl.score``)."""
    return float(phg2st.tl.score(a, layer=layer).summary["pcc"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("section", choices=[s for names in SECTIONS.values() for s in names])
    parser.add_argument("--dataset", default="her2st", choices=list(SECTIONS))
    parser.add_argument("--protocol", default="heldout", choices=["heldout", "heldout_smoothed"])
    parser.add_argument("--strategy", default="random", choices=list(PROMPT_STRATEGIES))
    parser.add_argument("--fraction", type=float, default=0.1)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--model-cache", type=Path, required=True, help="the benchmark's --model-cache folder")
    parser.add_argument("--embedding-cache", type=Path, required=True, help="a benchmark's embedding_cache folder")
    parser.add_argument(
        "--oracle",
        action="store_true",
        help="also the bound of weights fitted on the held-out values, over the components given to --force",
    )
    parser.add_argument("--force", nargs="*", default=[], choices=list(_incontext.COMPONENTS),
                        help="also score the layer forced to keep each of these components alone")  # fmt: skip
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    if args.section not in SECTIONS[args.dataset]:
        parser.error(f"{args.section} is not a section of {args.dataset}")
    section = sections(args.dataset, args.embedding_cache)[args.section]
    path, model, a = cached_fold(args.dataset, section, args.section, args.protocol, args.model_cache)
    print(f"{args.section} {args.protocol} {args.strategy} {args.fraction:.0%}, network {path.name}")
    for seed in args.seeds:
        draw_prompts(a, args.fraction, seed, args.strategy, REP)  # as `phg2st benchmark` draws them
        phg2st.tl.impute(a, model, layer_added="adapted", overwrite=True, uncertainty=False)
        phg2st.tl.impute(a, model, layer_added="network", overwrite=True, in_context=False)
        rec = a.uns["adapted"]["params"]["in_context"]
        weights = {k: round(v, 2) for k, v in rec["weights"].items()}
        cv = {k: (round(v, 3) if isinstance(v, float) else v) for k, v in rec["cv_pcc"].items()}
        forced, kept = {}, {}
        for component in args.force:  # the safeguard's choice replaced by this component alone (a diagnosis)
            keep = _incontext._safeguard
            _incontext._safeguard = lambda w, cv, y, folds, c=component, keep=keep: (
                {k: float(k == c) for k in cv}, keep(w, cv, y, folds)[1])  # fmt: skip
            try:
                phg2st.tl.impute(a, model, layer_added="forced", overwrite=True, uncertainty=False)
            finally:
                _incontext._safeguard = keep
            forced[component] = round(held_out_pcc(a, "forced"), 3)
            kept[component] = np.asarray(a.layers["forced"], dtype=np.float64)
        if args.oracle:
            forced["oracle"] = round(oracle_pcc(a, kept), 3)
        print(f"seed {seed}: held-out PCC adapted {held_out_pcc(a, 'adapted'):.3f}, network "
              f"{held_out_pcc(a, 'network'):.3f}" + (f", forced {forced}" if forced else "") + f"; weights {weights}; "
              f"cross-fitted PCC over the prompts {cv}")  # fmt: skip


if __name__ == "__main__":
    main()
