"""``phg2st impute``: predict every input's expression from its prompts with a saved model."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from phg2st_sc._constants import Keys

from ._common import (
    INPUTS_HELP,
    batch_parser,
    each_input,
    read_sections,
    require_ready,
    say,
    stem,
    usage_problem,
    write_output,
)

DESCRIPTION = """\
Predict expression at every spot of each section from its image and its prompt spots with a model saved by
`phg2st fit`, and write OUT_DIR/<name>.h5ad (for a .zarr input, OUT_DIR/<name>.zarr: the store with its
table replaced by the output table, still linked to its shapes). Inputs are sections embedded by `phg2st embed` with the
model's encoder. Their expression is prepared as the model's training targets were: raw counts in .X are
normalised with the model's recorded protocol and restricted to its genes; an input already prepared
(uns['phg2st_targets'] of tl.prepare_targets) is used as it is when it matches the model, and fails
otherwise; a model trained with `--protocol none` takes .X as it is. The output holds the model's genes
with the prepared expression in .X, the prompts in obs (phg2st_prompt, or --prompt-key), the predictions
in layers[LAYER] (prompt spots keep their measured values) and obsm['X_phg2st']."""


def add_parser(sub: Any) -> argparse.ArgumentParser:
    """Add the command's parser to ``sub`` (the ``phg2st`` subparsers) and return it."""
    p = batch_parser(sub, "impute", "predict each section's expression from its prompt spots with a saved model",
                     DESCRIPTION)  # fmt: skip
    p.add_argument("inputs", nargs="+", metavar="IN", help=INPUTS_HELP)
    p.add_argument("--model", required=True, metavar="MODEL.pt", help="model written by `phg2st fit`")
    p.add_argument("--out-dir", required=True, help="output folder")
    prompts = p.add_mutually_exclusive_group()
    prompts.add_argument("--prompt-fraction", type=float, default=0.1,
                         help="draw this fraction of spots as prompts (default: 0.1)")  # fmt: skip
    prompts.add_argument("--prompt-key", default=None, metavar="COL",
                         help="boolean obs column marking the measured prompt spots instead")  # fmt: skip
    p.add_argument("--seed", type=int, default=0, help="seed of the prompt draw (default: 0)")
    p.add_argument("--strategy", default="random", choices=["random", "blocks"], help="where drawn prompts lie")
    p.add_argument("--layer-added", default=Keys.PHG2ST, metavar="LAYER", help="layer of the predictions")
    p.add_argument("--device", default="cpu",
                   help="torch device of the forward pass: cpu, cuda, cuda:1, mps or auto (default: cpu)")  # fmt: skip
    p.add_argument("--overwrite", action="store_true",
                   help="impute again where the output exists (and replace slots phg2st-sc did not write)")  # fmt: skip
    return p


def check(args: argparse.Namespace) -> str | None:
    """Problems found before any work (a usage error): the model file, the output folder, outputs over inputs."""
    from phg2st_sc._model._embed import resolve_device
    from phg2st_sc._utils import check_writable
    from phg2st_sc._validate import check_fraction, check_seed

    if not Path(args.model).is_file():
        return f"no model file at {args.model}."
    settings = [(check_seed, args.seed, "--seed"), (resolve_device, args.device)]  # shared by every input
    if args.prompt_key is None:
        settings.insert(0, (check_fraction, args.prompt_fraction, "--prompt-fraction"))
    for setting in settings:
        problem = usage_problem(*setting)
        if problem:
            return problem
    check_writable(args.out_dir)
    outputs = {str(_output(args, p).resolve()) for p in args.inputs}
    clash = [p for p in args.inputs if str(Path(p).resolve()) in outputs]
    if clash:
        return f"{clash} would be replaced by its own output in --out-dir {args.out_dir}; write the predictions to " \
               "another folder."  # fmt: skip
    return None


def run(args: argparse.Namespace) -> int:
    """Run the command; return its exit code."""
    import phg2st_sc as phg2st

    model = phg2st.PHG2ST.load(args.model)
    say(f"phg2st impute: {model!r}")
    return each_input("impute", args.inputs, lambda path: _impute_one(path, args, model))


def _output(args: argparse.Namespace, path: str | Path) -> Path:
    """OUT_DIR/<name>.h5ad for an .h5ad input, OUT_DIR/<name>.zarr (a SpatialData store) for a .zarr one."""
    return Path(args.out_dir) / f"{stem(path)}{'.zarr' if Path(path).suffix == '.zarr' else '.h5ad'}"


def _as_store(source: Path, work: Any) -> Any:
    """The input store with its table replaced by ``work`` (prepared and imputed), still linked to its shapes.

    ``work`` holds the model's genes; the table's region and instance columns and its SpatialData attributes come
    back from the input table (matched by spot name); the H&E copy that the scanpy convention keeps in ``uns`` is
    left out (the store has the image element).
    """
    import spatialdata as sd
    from spatialdata.models import TableModel, get_table_keys

    from phg2st_sc._utils import get_table

    sdata = sd.read_zarr(source)
    name = next(k for k, v in sdata.tables.items() if v is get_table(sdata))
    original = sdata.tables[name]
    region, region_key, instance_key = get_table_keys(original)
    table = work.copy()
    table.uns.pop("spatialdata_attrs", None)  # set again below, from the input table
    for col in (region_key, instance_key):
        table.obs[col] = original.obs[col].reindex(table.obs_names).to_numpy()
    for info in table.uns.get(Keys.SPATIAL, {}).values():
        info.pop(Keys.IMAGES, None)
    sdata.tables[name] = TableModel.parse(table, region=region, region_key=region_key, instance_key=instance_key)
    return sdata


def _impute_one(path: Path, args: argparse.Namespace, model: Any) -> tuple[bool, str]:
    import phg2st_sc as phg2st
    from phg2st_sc.tl._protocol import model_input

    out = _output(args, path)
    if out.exists() and not args.overwrite:
        return True, f"{out} exists"
    sections = read_sections(path)
    if len(sections) != 1:
        raise ValueError(f"it holds {len(sections)} tables; give one section per input.")
    require_ready(sections[0], model.info["use_rep"])
    work = model_input(sections[0], model)
    key = args.prompt_key or Keys.PROMPT
    if not args.prompt_key:
        phg2st.tl.select_prompts(work, fraction=args.prompt_fraction, seed=args.seed, strategy=args.strategy,
                                 overwrite=args.overwrite)  # fmt: skip
    phg2st.tl.impute(work, model, prompt_key=key, layer_added=args.layer_added, device=args.device,
                     overwrite=args.overwrite)  # fmt: skip
    write_output(_as_store(path, work) if out.suffix == ".zarr" else work, out)
    return False, f"{work.n_obs} spots, {int(work.obs[key].sum())} prompts, {work.n_vars} genes -> {out}"
