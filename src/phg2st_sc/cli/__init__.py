"""Command-line interface: ``phg2st <command>``, one module per command with its parser.

Each command module has ``add_parser(subparsers)``, ``check(args)`` (problems found before any work: a usage
error, exit 2) and ``run(args)`` (the exit code). :func:`main` adds the checks every command shares and turns
interrupts and failures into exit codes.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from phg2st_sc._constants import ENCODER_NAMES as ENCODERS
from phg2st_sc.tl._protocol import PROTOCOLS

from . import benchmark, demo, embed, fit, impute
from ._common import expand_paths, one_line, stem
from .demo import DEMO_FIT, prepare_sections

COMMANDS = {"demo": demo, "benchmark": benchmark, "embed": embed, "fit": fit, "impute": impute}
PROTOCOL_NAMES = tuple(PROTOCOLS)
RESUME_NOTES = {  # what a rerun after an interrupt does, per command
    "embed": "rerun the same command to resume (finished outputs are skipped)",
    "impute": "rerun the same command to resume (finished outputs are skipped)",
    "fit": "rerun the same command to train again; with --checkpoint-dir it continues from the last complete epoch",
    "benchmark": "rerun the same command to resume (finished folds are kept)",
    "demo": "rerun it to start again (embeddings already computed are reused from the cache)",
}
BATCH = ("embed", "fit", "impute")


def parser() -> tuple[argparse.ArgumentParser, dict[str, argparse.ArgumentParser]]:
    """The ``phg2st`` parser and each command's."""
    from phg2st_sc import __version__

    top = argparse.ArgumentParser(prog="phg2st", description="PHG2ST spatial expression prediction tools.")
    top.add_argument("--version", action="version", version=f"%(prog)s {__version__} (phg2st-sc)",
                     help="print the installed version and exit")  # fmt: skip
    sub = top.add_subparsers(dest="command", required=True)
    commands = {name: module.add_parser(sub) for name, module in COMMANDS.items()}
    for name in BATCH:
        commands[name].add_argument("--no-progress", action="store_true",
                                    help="no progress bars (the lines per section stay)")  # fmt: skip
    return top, commands


def _shared_checks(args: argparse.Namespace) -> str | None:
    """The checks of every batch command: each input once, and one output name per input."""
    inputs = getattr(args, "inputs", None) or []
    resolved = [str(Path(p).resolve()) for p in inputs]
    twice = sorted({p for p, r in zip(inputs, resolved, strict=True) if resolved.count(r) > 1})
    if twice:
        return f"{twice} listed twice; give each input once."
    if args.command in ("embed", "impute"):
        stems = [stem(p) for p in inputs]
        repeated = sorted({s for s in stems if stems.count(s) > 1})
        if repeated:
            return f"several inputs are named {repeated}; each needs its own output name."
    return None


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``phg2st`` command."""
    from phg2st_sc._errors import TrainingTerminated
    from phg2st_sc._settings import settings

    top, commands = parser()
    args = top.parse_args(argv)
    expand_paths(args)
    try:
        problem = _shared_checks(args) or COMMANDS[args.command].check(args)
    except (OSError, ValueError, TypeError) as err:
        problem = one_line(err)
    if problem:
        commands[args.command].error(problem)
    progress = settings.progress
    settings.progress = progress and not getattr(args, "no_progress", False)
    try:
        return COMMANDS[args.command].run(args)
    except KeyboardInterrupt:
        print(f"phg2st {args.command}: interrupted (Ctrl-C); {RESUME_NOTES[args.command]}.", file=sys.stderr)
        return 130  # the shells' convention: 128 + SIGINT
    except TrainingTerminated:
        print(f"phg2st {args.command}: terminated (SIGTERM); {RESUME_NOTES[args.command]}.", file=sys.stderr)
        return 143  # 128 + SIGTERM
    except Exception as err:  # noqa: BLE001 - the CLI reports any failure as a message and an exit code
        print(f"phg2st {args.command}: error: {one_line(err)}", file=sys.stderr)
        return 1
    finally:
        settings.progress = progress


__all__ = ["main", "COMMANDS", "ENCODERS", "PROTOCOL_NAMES", "DEMO_FIT", "prepare_sections"]
