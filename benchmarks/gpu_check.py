"""PHG2ST on a GPU: the demo's training and imputation on CUDA beside the CPU, determinism and resume on CUDA.

Two steps, because the GPU machine has no access to the data folder:

1. ``prepare`` (here, with ``$PHG2ST_DATA_DIR``): C2-C6 with the demo's inputs (efficientnet_lite0 embeddings,
   hypergraphs, ``heldout`` targets of the her2st_785 panel), written to ``DIR/C*.h5ad``::

       .venv/bin/python benchmarks/gpu_check.py prepare .gpudata --cache-dir ~/.cache/phg2st/embeddings

2. ``run`` (on the GPU machine): for each device, tl.fit with the demo's settings on C3-C5 (C6 selects the
   epoch), tl.impute of C2 from 10% prompts (seed 0), held-out PCC, seconds per epoch; then on CUDA two identical
   runs (are they bit-identical?) and a run checkpointed after 3 epochs and resumed to 6 against 6 in one go::

       python benchmarks/gpu_check.py run .gpudata --out results.json

Prints one JSON line per measurement; ``--out`` collects them.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

SECTIONS = ("C2", "C3", "C4", "C5", "C6")
REP = "X_efficientnet_lite0"


def prepare(out: Path, cache_dir: str | None) -> None:
    import phg2st_sc as phg2st
    from phg2st_sc.cli import prepare_sections

    out.mkdir(parents=True, exist_ok=True)
    embedded = prepare_sections(list(SECTIONS), cache_dir=cache_dir)
    for s, a in embedded.items():
        t = phg2st.tl.prepare_targets(a, "heldout", panel="her2st_785")
        t.uns.pop("spatial", None)  # the H&E is not needed to train and impute from embeddings
        t.write_h5ad(out / f"{s}.h5ad", compression="gzip")
        print(s, t.shape, (out / f"{s}.h5ad").stat().st_size // 2**20, "MiB")


def _emit(rows: list, **row) -> None:
    rows.append(row)
    print(json.dumps(row), flush=True)


def run(data: Path, out: str | None, epochs: int) -> None:
    import anndata as ad
    import numpy as np
    import torch

    import phg2st_sc as phg2st
    from phg2st_sc._model._config import TRAINING_PROMPTS
    from phg2st_sc.cli import DEMO_FIT

    phg2st.settings.progress = False
    rows: list = []
    _emit(rows, what="machine", torch=torch.__version__, cuda=torch.cuda.is_available(),
          gpu=torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
          cpu_threads=torch.get_num_threads())  # fmt: skip
    sec = {s: ad.read_h5ad(data / f"{s}.h5ad") for s in SECTIONS}
    train = [sec[s] for s in ("C3", "C4", "C5", "C6")]
    fit_kw = {**DEMO_FIT, "max_epochs": epochs, "prompt_fraction": TRAINING_PROMPTS["propagated"]}
    for accel in ("gpu", "cpu") if torch.cuda.is_available() else ("cpu",):
        t0 = time.perf_counter()
        model = phg2st.tl.fit(train, **{**fit_kw, "accelerator": accel})
        fit_s = time.perf_counter() - t0
        c2 = sec["C2"].copy()
        phg2st.tl.select_prompts(c2, fraction=0.1, seed=0)
        device = "cuda" if accel == "gpu" else "cpu"
        t1 = time.perf_counter()
        phg2st.tl.impute(c2, model, device=device)
        impute_s = time.perf_counter() - t1
        score = phg2st.tl.score(c2, layer="phg2st").summary
        h = model.history_
        _emit(rows, what="demo_fit_impute", accelerator=accel, epochs=int(len(h)), fit_s=round(fit_s, 1),
              s_per_epoch=round(float(h["seconds"].median()), 3), best_val_pcc=model.info.get("best_epoch_val_pcc"),
              impute_s=round(impute_s, 2), c2_heldout_pcc=round(float(score["pcc"]), 4))  # fmt: skip
    if not torch.cuda.is_available():
        return _write(rows, out)
    # determinism on CUDA (Lightning's deterministic=True), and resume after 3 of 6 epochs
    short = {**fit_kw, "accelerator": "gpu", "max_epochs": 6, "validation": None}
    m1 = phg2st.tl.fit(train, **short)
    m2 = phg2st.tl.fit(train, **short)
    diff = max(float((a - b).abs().max()) for a, b in
               zip(m1.module.state_dict().values(), m2.module.state_dict().values(), strict=True))  # fmt: skip
    _emit(rows, what="cuda_two_runs_same_seed", max_abs_weight_difference=diff)
    with tempfile.TemporaryDirectory() as tmp:
        phg2st.tl.fit(train, **{**short, "max_epochs": 3}, checkpoint_dir=tmp)
        m3 = phg2st.tl.fit(train, **short, checkpoint_dir=tmp, resume=True)
    diff = max(float((a - b).abs().max()) for a, b in
               zip(m1.module.state_dict().values(), m3.module.state_dict().values(), strict=True))  # fmt: skip
    _emit(rows, what="cuda_resumed_vs_uninterrupted", max_abs_weight_difference=diff,
          history_equal=bool(np.array_equal(m1.history_["train_loss"], m3.history_["train_loss"])))  # fmt: skip
    return _write(rows, out)


def _write(rows: list, out: str | None) -> None:
    if out:
        Path(out).write_text(json.dumps(rows, indent=1))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("prepare")
    p.add_argument("out", type=Path)
    p.add_argument("--cache-dir", default=None)
    r = sub.add_parser("run")
    r.add_argument("data", type=Path)
    r.add_argument("--out", default=None)
    r.add_argument("--epochs", type=int, default=100, help="max epochs of the demo fit (default: the demo's 100)")
    args = parser.parse_args(argv)
    if args.cmd == "prepare":
        prepare(args.out, args.cache_dir)
    else:
        run(args.data, args.out, args.epochs)


if __name__ == "__main__":
    sys.exit(main())
