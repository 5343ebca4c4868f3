"""``phg2st embed``: tile embeddings and hypergraph of every input, one output each."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from phg2st_sc._constants import ENCODER_NAMES, Keys

from ._common import INPUTS_HELP, batch_parser, each_input, platform_folder, stem, usage_problem, write_output

DESCRIPTION = """\
Embed the H&E tiles of each section (spot tiles and their neighbour windows: pp.embed_tiles) and build
its hypergraph (pp.build_hypergraph), which `phg2st fit` and `phg2st impute` need. Each input (.h5ad with
the image path its reader recorded, or a SpatialData .zarr store with its image) gives OUT_DIR/<same name>;
a Space Ranger output folder (Visium; Visium HD, its 8 µm bins) or a Xenium output folder with its post-Xenium
H&E (cells as spots), read with spatialdata-io (pip install 'phg2st-sc[io]'), gives OUT_DIR/<sample>.zarr, a
SpatialData store. Each output holds the input plus obsm['X_<encoder>'], the neighbour tiles and the
hypergraph. For Visium HD and Xenium pass --mpp 0.5, so that tiles cover 112 µm of tissue. An output that has them
already is skipped; one that lacks them (another encoder, --no-hypergraph) is extended. OUT_DIR may be the
inputs' own folder: each input is then replaced, atomically, by its embedded version."""


def add_parser(sub: Any) -> argparse.ArgumentParser:
    """Add the command's parser to ``sub`` (the ``phg2st`` subparsers) and return it."""
    p = batch_parser(sub, "embed", "embed the H&E tiles and build the hypergraph of each section (input of fit and "
                     "impute)", DESCRIPTION)  # fmt: skip
    p.add_argument("inputs", nargs="+", metavar="IN", help=INPUTS_HELP)
    p.add_argument("--out-dir", required=True, help="output folder")
    p.add_argument("--encoder", default=ENCODER_NAMES[0], choices=ENCODER_NAMES,
                   help="tile encoder (default: efficientnet_lite0, offline; uni and resnet50 need --weights)")  # fmt: skip
    p.add_argument("--weights", default=None, help="encoder weights file (UNI: default $PHG2ST_UNI_WEIGHTS)")
    p.add_argument("--mpp", type=float, default=None, help="microns per pixel seen by the encoder")
    p.add_argument("--batch-size", type=int, default=None, help="tiles per encoder call (default: 64)")
    p.add_argument("--device", default="auto", help="auto (CUDA, MPS, CPU) or a torch device (default: auto)")
    p.add_argument("--cache-dir", default=None,
                   help="resumable tile cache: a rerun after an interruption inside a slide reuses its batches")  # fmt: skip
    p.add_argument("--image-key", default=None, help="image element of .zarr inputs (if several)")
    p.add_argument("--table-key", default=None, help="table of .zarr inputs (if several)")
    p.add_argument("--no-hypergraph", action="store_true", help="embed only")
    p.add_argument("--overwrite", action="store_true",
                   help="embed again, even where the output is complete (and replace slots phg2st-sc did not write)")  # fmt: skip
    return p


def check(args: argparse.Namespace) -> str | None:
    """Problems found before any work (a usage error)."""
    from phg2st_sc._model._embed import resolve_device
    from phg2st_sc._utils import check_writable

    problem = usage_problem(resolve_device, args.device)
    if problem:
        return problem
    check_writable(args.out_dir)
    return None


def run(args: argparse.Namespace) -> int:
    """Run the command; return its exit code."""
    return each_input("embed", args.inputs, lambda path: _embed_one(path, args))


def _read(source: Path) -> Any:
    if platform_folder(source):  # read through spatialdata-io; embedded, it is written as a .zarr store
        from phg2st_sc.io import read_platform_folder

        return read_platform_folder(source, section=stem(source))
    if source.suffix == ".h5ad":
        import anndata as ad

        return ad.read_h5ad(source)
    import spatialdata as sd

    return sd.read_zarr(source)  # the whole store: the image is needed, and written with the output


def _embed_one(path: Path, args: argparse.Namespace) -> tuple[bool, str]:
    import phg2st_sc as phg2st
    from phg2st_sc._utils import get_table
    from phg2st_sc._validate import readiness

    out = Path(args.out_dir) / (f"{stem(path)}.zarr" if platform_folder(path) else path.name)
    key = Keys.embedding(args.encoder)
    resume = out.exists() and not args.overwrite
    # An earlier output holds the input plus what was added to it (e.g. another encoder's embedding): extend it.
    data = _read(out if resume else path)
    table = get_table(data, args.table_key)
    has_embedding = key in table.obsm
    if resume and has_embedding:
        _check_same_embedding(table, key, args, out)
    if resume and has_embedding and (args.no_hypergraph or readiness(table, key) is None):
        return True, f"{out} has `obsm[{key!r}]`" + ("" if args.no_hypergraph else " and its hypergraph")
    done = []
    if args.overwrite or not has_embedding:
        options = {"batch_size": args.batch_size, "mpp": args.mpp, "cache_dir": args.cache_dir}
        phg2st.pp.embed_tiles(data, encoder=args.encoder, weights=args.weights, device=args.device,
                              table_key=args.table_key, image_key=args.image_key, overwrite=args.overwrite,
                              **{k: v for k, v in options.items() if v is not None})  # fmt: skip
        p = get_table(data, args.table_key).uns[key]["params"]
        done.append(f"{p['tiles_embedded']} tiles embedded on {p['device']}")
    if not args.no_hypergraph:
        phg2st.pp.build_hypergraph(data, use_rep=key, table_key=args.table_key, overwrite=args.overwrite)
        done.append("hypergraph built")
    write_output(data, out)
    return False, f"{table.n_obs} spots, {', '.join(done) or 'nothing to add'} -> {out}"


def _check_same_embedding(table: Any, key: str, args: argparse.Namespace, out: Path) -> None:
    """Refuse to resume from an output embedded with other settings (it would be skipped as done)."""

    def path(p: Any) -> str:
        return str(Path(p).expanduser().resolve()) if p else ""

    params = table.uns.get(key, {}).get("params", {}) if isinstance(table.uns.get(key), dict) else {}
    recorded = {"mpp": params.get("mpp"), "weights": path(params.get("weights"))}
    recorded = {k: v for k, v in recorded.items() if k in params}
    asked = {"mpp": -1.0 if args.mpp is None else float(args.mpp), "weights": path(args.weights)}
    differ = {k: (recorded[k], v) for k, v in asked.items() if k in recorded and recorded[k] != v}
    if differ:
        said = ", ".join(f"{k}={old!r} there, {new!r} asked" for k, (old, new) in differ.items())
        raise ValueError(
            f"{out} holds `obsm[{key!r}]` embedded with other settings ({said}); pass --overwrite to embed again "
            "with the new settings, or write to another --out-dir."
        )
