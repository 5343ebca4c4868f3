"""``phg2st fit``: prepare the targets of the inputs, train PHG2ST on them and save the model."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from phg2st_sc._model._config import TRAINING_PROMPTS

from ._common import INPUTS_HELP, batch_parser, devices, fit_settings, one_line, read_sections, require_ready, say
from .demo import REP

DESCRIPTION = """\
Train PHG2ST on sections embedded by `phg2st embed` and save the model to OUT (written atomically).
Targets: the raw counts in .X are normalised as --protocol says and restricted to --panel or --genes
(tl.prepare_targets); --protocol none takes .X as it is (your own normalisation). The model records the
protocol and genes, and `phg2st impute` prepares its inputs the same way. Validation (tl.fit's "auto"):
with three or more inputs the last one selects the epoch, otherwise 10% of each section's spots.
Resume: if OUT exists, nothing is done (exit 0); --overwrite trains again. With --checkpoint-dir, a complete
checkpoint is written after every epoch and a rerun of the same command continues an interrupted training
from its last epoch (same result as an uninterrupted run); --overwrite then still continues the run in DIR
(give a new DIR to train from scratch)."""
EXIT_CODES = ("Exit codes: 0 trained (or OUT already there), 1 an input could not be used or training failed, "
              "2 bad arguments, 130 interrupted (Ctrl-C), 143 terminated (SIGTERM).")  # fmt: skip


def add_parser(sub: Any) -> argparse.ArgumentParser:
    """Add the command's parser to ``sub`` (the ``phg2st`` subparsers) and return it."""
    from phg2st_sc.tl._protocol import PROTOCOLS

    p = batch_parser(sub, "fit", "train PHG2ST on embedded sections and save the model", DESCRIPTION, EXIT_CODES)
    p.add_argument("inputs", nargs="+", metavar="IN", help=f"training sections: {INPUTS_HELP}")
    p.add_argument("--out", required=True, metavar="MODEL.pt", help="model file to write")
    p.add_argument("--use-rep", default=REP, help=f"obsm key of the tile embeddings (default: {REP})")
    genes = p.add_mutually_exclusive_group()
    genes.add_argument("--panel", default=None, help="gene panel: her2st_785, cscc_171, top_expressed (default: "
                       "all genes shared by the inputs)")  # fmt: skip
    genes.add_argument("--genes", default=None, metavar="FILE", help="genes to predict, one a line")
    p.add_argument("--protocol", default="heldout", choices=[*PROTOCOLS, "none"],
                   help="target normalisation (tl.PROTOCOLS; default: heldout, i.e. normalize_total 1e4 + log1p); "
                   "none: .X as it is")  # fmt: skip
    p.add_argument("--variant", default="adaptive", choices=list(TRAINING_PROMPTS),
                   help="model variant (default: adaptive; see tl.fit)")  # fmt: skip
    p.add_argument("--max-epochs", type=int, default=None, help="default: tl.fit's (100; 200 for --variant paper)")
    p.add_argument("--hidden", type=int, default=None, help="token size (default: tl.fit's 128)")
    p.add_argument("--seed", type=int, default=0, help="seed of the weights, prompts and split (default: 0)")
    p.add_argument("--accelerator", default="auto", help="auto, cpu, gpu, mps (Lightning)")
    p.add_argument("--devices", type=devices, default="auto", help="device count or list (Lightning)")
    p.add_argument("--fit", nargs="+", metavar="KEY=VALUE",
                   help="more tl.fit settings, values read as JSON, e.g. patience=10 prompt_fraction=0.2")  # fmt: skip
    p.add_argument("--checkpoint-dir", default=None, metavar="DIR",
                   help="write a checkpoint after every epoch and resume from DIR/last.ckpt when it exists")  # fmt: skip
    p.add_argument("--overwrite", action="store_true", help="train again even if OUT exists (a model file only)")
    return p


def _settings(args: argparse.Namespace) -> dict[str, Any]:
    flags = {"variant": args.variant, "seed": args.seed,  # training prompts: tl.fit's default, the variant's
             "accelerator": args.accelerator, "devices": args.devices, "hidden": args.hidden,
             "max_epochs": args.max_epochs, "checkpoint_dir": args.checkpoint_dir}  # fmt: skip
    return fit_settings(args.fit, **flags)


def check(args: argparse.Namespace) -> str | None:
    """Problems found before any work (a usage error): settings, the genes file, the output."""
    from phg2st_sc._model._model import is_model_file
    from phg2st_sc._utils import check_replaceable

    _settings(args)
    if args.genes:
        read_genes(args.genes)
    out = Path(args.out)
    check_replaceable(out)  # never a folder; its parent writable
    if out.exists() and args.overwrite and not is_model_file(out):
        return f"{out} exists and is not a phg2st-sc model file: --overwrite replaces only a model file."
    return None


def read_genes(path: str | Path) -> list[str]:
    """Gene names from a text file, one a line (``#`` comments, blank lines, a byte-order mark and CRLF allowed)."""
    try:
        text = Path(path).expanduser().read_text(encoding="utf-8-sig")
    except FileNotFoundError as err:
        raise FileNotFoundError(f"no genes file at {path}.") from err
    except UnicodeDecodeError as err:
        raise ValueError(f"{path} is not a UTF-8 text file of gene names.") from err
    genes = []
    for number, line in enumerate(text.splitlines(), 1):
        name = line.strip()
        if not name or name.startswith("#"):
            continue
        if len(name.split()) > 1:
            raise ValueError(f"{path}, line {number}: {name!r} holds several fields; write one gene name a line.")
        genes.append(name)
    if not genes:
        raise ValueError(f"{path} lists no gene (one gene name a line).")
    twice = sorted({g for g in genes if genes.count(g) > 1})
    if twice:
        raise ValueError(f"{path} lists some genes twice: {twice[:5]}.")
    return genes


def _targets(slides: list, args: argparse.Namespace) -> tuple[list, list[str] | None]:
    """The training targets (prepared with ``--protocol``) and the genes, for tl.fit."""
    import phg2st_sc as phg2st

    panel = read_genes(args.genes) if args.genes else args.panel
    if args.protocol == "none":  # .X holds the user's own normalisation; only the genes are chosen
        return slides, (phg2st.pp.panel_genes(panel) if isinstance(panel, str) else panel)
    return [phg2st.tl.prepare_targets(a, args.protocol, panel=panel) for a in slides], None


def run(args: argparse.Namespace) -> int:
    """Read and check every input, prepare the targets, train, save."""
    import phg2st_sc as phg2st
    from phg2st_sc.tl._fit import fit_arguments

    out = Path(args.out)
    if out.exists() and not args.overwrite:
        say(f"phg2st fit: {out} exists; skipping (pass --overwrite to train again).")
        return 0
    t0 = time.perf_counter()
    slides = []
    for i, path in enumerate(args.inputs, 1):
        try:
            sections = read_sections(path)
            for a in sections:
                require_ready(a, args.use_rep)
        except Exception as err:
            raise ValueError(f"{path}: {one_line(err)}") from err
        slides += sections
        say(f"phg2st fit [{i}/{len(args.inputs)}] {path}: {sum(a.n_obs for a in sections)} spots")
    targets, genes = _targets(slides, args)
    kwargs = _settings(args)
    if args.checkpoint_dir is not None:
        kwargs.update(checkpoint_dir=args.checkpoint_dir, resume=True)
        if (Path(args.checkpoint_dir) / "last.ckpt").is_file():
            say(f"phg2st fit: resuming from {Path(args.checkpoint_dir) / 'last.ckpt'}")
    say(f"phg2st fit: training {args.variant!r} on {len(targets)} sections (targets: {args.protocol})")
    model = phg2st.tl.fit(targets, use_rep=args.use_rep, genes=genes, **fit_arguments(kwargs))
    model.save(out, overwrite=True)  # atomic; an existing file was checked to be a model file
    runs = model.info.get("networks") or [model.info]  # one record per network (several with n_networks)
    epochs = "/".join(str(r["epochs_trained"]) for r in runs)
    vals = [r.get("best_epoch_val_pcc") for r in runs]
    say(f"phg2st fit: {len(model.genes)} genes, " + (f"{len(runs)} networks, " if len(runs) > 1 else "")
        + f"{epochs} epochs" + (", validation PCC " + "/".join(f"{v:.3f}" for v in vals) if None not in vals else "")
        + f" ({time.perf_counter() - t0:.0f} s) -> {out}")  # fmt: skip
    return 0
