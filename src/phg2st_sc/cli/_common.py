"""What the commands share: reading inputs, writing outputs, a line per section, argument checks."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from phg2st_sc.io import platform_folder

INPUT_SUFFIXES = (".h5ad", ".zarr")
BATCH_NOTES = """\
Every output is written to a temporary path beside it and renamed into place when complete, so an interrupted
run never leaves a partial output; run the same command again to resume (finished outputs are skipped).
Progress: one line per section on stderr, then a summary.
Exit codes: 0 every section done (written now or before), 1 a section failed (the others still ran; the
summary lists it), 2 bad arguments, 130 interrupted (Ctrl-C), 143 terminated (SIGTERM)."""
#: Arguments that hold paths: ``~`` is expanded once, in :func:`expand_paths`, so every later use sees one path.
PATH_ARGUMENTS = ("inputs", "data", "out", "out_dir", "model", "checkpoint_dir", "genes", "cache_dir", "weights",
                  "methods_file")  # fmt: skip


def say(message: str) -> None:
    """A progress line on stderr."""
    print(message, file=sys.stderr, flush=True)


def one_line(err: BaseException) -> str:
    """An exception's message on one line (a ``KeyError``'s without its quotes)."""
    text = str(err.args[0]) if isinstance(err, KeyError) and err.args else str(err)
    return " ".join(text.split()) or type(err).__name__


def stem(path: str | Path) -> str:
    """An input's name without its ``.h5ad`` / ``.zarr`` suffix (its outputs are named after it)."""
    path = Path(path)
    if path.name == "outs" and platform_folder(path):  # Space Ranger's or Xenium's outs/ folder: named after its sample
        return path.resolve().parent.name
    return path.name[: -len(path.suffix)] if path.suffix in INPUT_SUFFIXES else path.name


def check_input(path: str | Path) -> Path:
    """An existing ``.h5ad`` file or ``.zarr`` store, or an error that says what is wrong with it."""
    path = Path(path)
    if platform_folder(path):
        return path
    if path.suffix not in INPUT_SUFFIXES:
        raise ValueError(
            "not a .h5ad file, a SpatialData .zarr store, or a Space Ranger (Visium, Visium HD) or Xenium output folder."
        )
    if not path.exists():
        raise FileNotFoundError("no such file or folder.")
    return path


def read_sections(path: str | Path) -> list:
    """The sections (AnnData) of one input, read as ``phg2st benchmark`` reads its paths."""
    from phg2st_sc.tl._benchmark import _load

    path = check_input(path)
    if platform_folder(path):
        from phg2st_sc.io import from_spatialdata, read_platform_folder

        return [from_spatialdata(read_platform_folder(path, section=stem(path)))]
    try:
        return list(_load([path], None, None)[1].values())
    except Exception as err:
        raise ValueError(f"cannot read it ({one_line(err)}).") from err


def require_ready(table: Any, use_rep: str) -> None:
    """Fail with the fix when a section lacks the embedding or its hypergraph (``_validate.readiness``)."""
    from phg2st_sc._validate import readiness

    missing = readiness(table, use_rep)
    if missing is not None:
        raise ValueError(f"{missing.short}; run `phg2st embed` on it first.")


def write_output(data: Any, out: Path) -> None:
    """Write an AnnData (.h5ad) or SpatialData (.zarr) atomically."""
    from anndata import AnnData

    from phg2st_sc._utils import atomic_path

    with atomic_path(out, store=not isinstance(data, AnnData)) as tmp:
        if isinstance(data, AnnData):
            data.write_h5ad(tmp)
        else:
            data.write(tmp)


def each_input(command: str, inputs: Sequence[str], work: Callable[[Path], tuple[bool, str]]) -> int:
    """Run ``work(path) -> (skipped, message)`` per input with a line each on stderr; failures do not stop the rest."""
    t0 = time.perf_counter()
    written, skipped, failed = 0, 0, []
    for i, item in enumerate(inputs, 1):
        t = time.perf_counter()
        prefix = f"phg2st {command} [{i}/{len(inputs)}] {item}"
        try:
            was_done, message = work(check_input(item))
        except Exception as err:  # noqa: BLE001 - one section's failure must not stop the batch
            failed.append(str(item))
            say(f"{prefix}: FAILED: {one_line(err)}")
            continue
        if was_done:
            skipped += 1
            say(f"{prefix}: skipped, {message}")
        else:
            written += 1
            say(f"{prefix}: {message} ({time.perf_counter() - t:.0f} s)")
    say(f"phg2st {command}: {written} written, {skipped} already done, {len(failed)} failed "
        f"({time.perf_counter() - t0:.0f} s)")  # fmt: skip
    if failed:
        say(f"phg2st {command}: failed inputs: {' '.join(failed)}")
    return 1 if failed else 0


def key_values(items: Sequence[str] | None) -> dict[str, Any]:
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


def fit_settings(items: Sequence[str] | None, **flags: Any) -> dict[str, Any]:
    """``--fit KEY=VALUE`` settings over the command's own flags, each checked (name and value) as tl.fit does."""
    from phg2st_sc.tl._fit import check_fit_settings

    settings = {**{k: v for k, v in flags.items() if v is not None}, **key_values(items)}
    check_fit_settings(**settings)
    return settings


def expand_paths(args: argparse.Namespace) -> None:
    """Expand a leading ``~`` in the path arguments (the shell leaves it alone after ``=``)."""

    def expand(value: str) -> str:
        return str(Path(value).expanduser()) if value.startswith("~") else value

    for name in PATH_ARGUMENTS:
        value = getattr(args, name, None)
        if isinstance(value, str):
            setattr(args, name, expand(value))
        elif isinstance(value, list):
            setattr(args, name, [expand(v) if isinstance(v, str) else v for v in value])


def usage_problem(check: Callable[..., Any], *args: Any) -> str | None:
    """What the package's own ``check(*args)`` refuses (a usage error, found before any input is read), or ``None``.

    The checks of the Python API (``_validate.check_seed``, ``_embed.resolve_device``, ...), their messages
    without the API's backticks.
    """
    try:
        check(*args)
    except (ValueError, TypeError) as err:
        return str(err).replace("`", "")
    return None


def devices(value: str) -> int | str:
    """``--devices``: a count or Lightning's names."""
    return int(value) if value.lstrip("-").isdigit() else value


def batch_parser(
    sub: Any, name: str, summary: str, description: str, epilog: str = BATCH_NOTES
) -> argparse.ArgumentParser:
    """A subcommand parser with the batch commands' layout (description and exit codes kept as written)."""
    return sub.add_parser(name, help=summary, description=description, epilog=epilog,
                          formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip


INPUTS_HELP = (
    ".h5ad files, SpatialData .zarr stores, or Space Ranger (Visium, Visium HD: 8 µm bins) or Xenium output "
    "folders; one section each"
)
