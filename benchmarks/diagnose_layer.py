"""What the in-context layer kept on one her2st section, per prompt seed, with its held-out PCC (a diagnosis).

Reads a network trained by `phg2st benchmark --model-cache DIR` on the other C sections and, for each seed, prints
the layer's weights, each component's cross-fitted PCC over the prompts (`uns[layer]['params']['in_context']`) and
the held-out PCC of the adapted prediction and of the network alone:

    PHG2ST_DATA_DIR=../shared/data .venv/bin/python benchmarks/diagnose_layer.py C6 --protocol heldout \
        --strategy blocks --model-cache models_her2st --embedding-cache her2st_c_adaptive_blocks/embedding_cache

(The diagnosis of her2st C6 with prompts in blocks in docs/design.md, "the network as the fallback".)
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

import phg2st_sc as phg2st
from phg2st_sc._model._model import PHG2ST
from phg2st_sc.tl._protocol import get_protocol, prepare_targets

sys.path.insert(0, str(Path(__file__).parent))
from dev_incontext import sections

SECTIONS = ("C2", "C3", "C4", "C5", "C6")


def held_out_pcc(a, layer: str) -> float:
    """Mean per-gene PCC over the held-out spots (``tl.score``)."""
    return float(phg2st.tl.score(a, layer=layer).summary["pcc"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("section", choices=SECTIONS)
    parser.add_argument("--protocol", default="heldout", choices=["heldout", "heldout_smoothed"])
    parser.add_argument("--strategy", default="random", choices=["random", "blocks"])
    parser.add_argument("--fraction", type=float, default=0.1)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--model-cache", type=Path, required=True, help="the benchmark's --model-cache folder")
    parser.add_argument("--embedding-cache", type=Path, required=True, help="a benchmark's embedding_cache folder")
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    train = "+".join(s for s in SECTIONS if s != args.section)
    path = next(args.model_cache.glob(f"{args.protocol}_{train}_*.pt"))
    model = PHG2ST.load(path)
    a = prepare_targets(sections("her2st", args.embedding_cache)[args.section], get_protocol(args.protocol),
                        panel="her2st_785")  # fmt: skip
    print(f"{args.section} {args.protocol} {args.strategy} {args.fraction:.0%}, network {path.name}")
    for seed in args.seeds:
        phg2st.tl.select_prompts(a, fraction=args.fraction, seed=seed, strategy=args.strategy, overwrite=True)
        phg2st.tl.impute(a, model, layer_added="adapted", overwrite=True, uncertainty=False)
        phg2st.tl.impute(a, model, layer_added="network", overwrite=True, in_context=False)
        rec = a.uns["adapted"]["params"]["in_context"]
        weights = {k: round(v, 2) for k, v in rec["weights"].items()}
        cv = {k: (round(v, 3) if isinstance(v, float) else v) for k, v in rec["cv_pcc"].items()}
        print(f"seed {seed}: held-out PCC adapted {held_out_pcc(a, 'adapted'):.3f}, network "
              f"{held_out_pcc(a, 'network'):.3f}; weights {weights}; cross-fitted PCC over the prompts {cv}")  # fmt: skip


if __name__ == "__main__":
    main()
