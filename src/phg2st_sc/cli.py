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
ENCODERS = ("efficientnet_lite0", "uni", "resnet50")  # the named encoders of pp.embed_tiles (checked by a test)
INPUT_SUFFIXES = (".h5ad", ".zarr")
PROTOCOL_NAMES = ("heldout", "heldout_smoothed", "official", "paper")  # tl.PROTOCOLS (checked by a test)
RESUME_NOTES = {  # what a rerun after an interrupt does, per command
    "embed": "rerun the same command to resume (finished outputs are skipped)",
    "impute": "rerun the same command to resume (finished outputs are skipped)",
    "fit": "rerun the same command to train again; with --checkpoint-dir it continues from the last complete epoch",
    "benchmark": "rerun the same command to resume (finished folds are kept)",
    "demo": "rerun it to start again (embeddings already computed are reused from the cache)",
}
HYPERGRAPH_KEY = "phg2st"  # pp.build_hypergraph's and tl.fit's default key
BATCH_NOTES = """\
Every output is written to a temporary path beside it and renamed into place when complete, so an interrupted
run never leaves a partial output; run the same command again to resume (finished outputs are skipped).
Progress: one line per section on stderr, then a summary.
Exit codes: 0 every section done (written now or before), 1 a section failed (the others still ran; the
summary lists it), 2 bad arguments."""


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
    embedded = prepare_sections(sections, cache_dir=out / "embedding_cache" if cache_dir is None else cache_dir)
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
    fit.update(_fit_settings(args.fit or []))
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


# -- batch commands: embed, fit, impute ------------------------------------------------------------------------


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _one_line(err: BaseException) -> str:
    text = str(err.args[0]) if isinstance(err, KeyError) and err.args else str(err)  # KeyError quotes its text
    return " ".join(text.split()) or type(err).__name__


def _stem(path: str | Path) -> str:
    path = Path(path)
    return path.name[: -len(path.suffix)] if path.suffix in INPUT_SUFFIXES else path.name


def _check_input(path: str | Path) -> Path:
    """An existing ``.h5ad`` file or ``.zarr`` store, or an error that says what is wrong with it."""
    path = Path(path)
    if path.suffix not in INPUT_SUFFIXES:
        raise ValueError("not a .h5ad file or a SpatialData .zarr store.")
    if not path.exists():
        raise FileNotFoundError("no such file or folder.")
    return path


def _sections(path: str | Path) -> list:
    """The sections (AnnData) of one input, read as ``phg2st benchmark`` reads its paths."""
    from phg2st_sc.tl._benchmark import _load

    path = _check_input(path)
    try:
        return list(_load([path], None, None)[1].values())
    except Exception as err:
        raise ValueError(f"cannot read it ({_one_line(err)}).") from err


def _not_ready(table, use_rep: str) -> str | None:
    """What a section lacks for `fit` / `impute` with the embedding ``use_rep``, or ``None``."""
    if use_rep not in table.obsm:
        return f"no `obsm[{use_rep!r}]`"
    graph = table.uns.get(f"{HYPERGRAPH_KEY}_hypergraph", {}).get("params", {})
    if f"{HYPERGRAPH_KEY}_incidence" not in table.obsp or graph.get("use_rep") != use_rep:
        return f"no hypergraph built from `obsm[{use_rep!r}]`"
    return None


def _require_ready(table, use_rep: str) -> None:
    missing = _not_ready(table, use_rep)
    if missing:
        raise ValueError(f"{missing}; run `phg2st embed` on it first.")


def _write(data, out: Path) -> None:
    """Write an AnnData (.h5ad) or SpatialData (.zarr) atomically."""
    from anndata import AnnData

    from phg2st_sc._utils import atomic_path

    with atomic_path(out, store=not isinstance(data, AnnData)) as tmp:
        if isinstance(data, AnnData):
            data.write_h5ad(tmp)
        else:
            data.write(tmp)


def _each_input(command: str, inputs: Sequence[str], work) -> int:
    """Run ``work(path) -> (skipped, message)`` per input with a line each on stderr; failures do not stop the rest."""
    t0 = time.perf_counter()
    written, skipped, failed = 0, 0, []
    for i, item in enumerate(inputs, 1):
        t = time.perf_counter()
        prefix = f"phg2st {command} [{i}/{len(inputs)}] {item}"
        try:
            was_done, message = work(_check_input(item))
        except Exception as err:  # noqa: BLE001 - one section's failure must not stop the batch
            failed.append(str(item))
            _say(f"{prefix}: FAILED: {_one_line(err)}")
            continue
        if was_done:
            skipped += 1
            _say(f"{prefix}: skipped, {message}")
        else:
            written += 1
            _say(f"{prefix}: {message} ({time.perf_counter() - t:.0f} s)")
    _say(f"phg2st {command}: {written} written, {skipped} already done, {len(failed)} failed "
         f"({time.perf_counter() - t0:.0f} s)")  # fmt: skip
    if failed:
        _say(f"phg2st {command}: failed inputs: {' '.join(failed)}")
    return 1 if failed else 0


def _embed_one(path: Path, args: argparse.Namespace) -> tuple[bool, str]:
    import anndata as ad

    import phg2st_sc as phg2st
    from phg2st_sc._utils import get_table

    out = Path(args.out_dir) / path.name
    key = f"X_{args.encoder}"
    resume = out.exists() and not args.overwrite
    # An earlier output holds the input plus what was added to it (e.g. another encoder's embedding): extend it.
    source = out if resume else path
    if source.suffix == ".h5ad":
        data = ad.read_h5ad(source)
    else:
        import spatialdata as sd

        data = sd.read_zarr(source)  # the whole store: the image is needed, and written with the output
    table = get_table(data, args.table_key)
    has_embedding = key in table.obsm
    if resume and has_embedding:
        _check_same_embedding(table, key, args, out)
    if resume and has_embedding and (args.no_hypergraph or _not_ready(table, key) is None):
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
    _write(data, out)
    return False, f"{table.n_obs} spots, {', '.join(done) or 'nothing to add'} -> {out}"


def _check_same_embedding(table, key: str, args: argparse.Namespace, out: Path) -> None:
    """Refuse to resume from an output embedded with other settings (it would be skipped as done)."""

    def path(p) -> str:
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


def run_embed(args: argparse.Namespace) -> int:
    """``phg2st embed``: tile embeddings and hypergraph of every input, one output each."""
    return _each_input("embed", args.inputs, lambda path: _embed_one(path, args))


def _read_genes(path: str) -> list[str]:
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


def run_fit(args: argparse.Namespace) -> int:
    """``phg2st fit``: prepare the targets of the inputs, train PHG2ST on them and save the model."""
    import phg2st_sc as phg2st

    out = Path(args.out).expanduser()
    if out.exists() and not args.overwrite:
        _say(f"phg2st fit: {out} exists; skipping (pass --overwrite to train again).")
        return 0
    t0 = time.perf_counter()
    slides = []
    for i, path in enumerate(args.inputs, 1):
        try:
            sections = _sections(path)
            for a in sections:
                _require_ready(a, args.use_rep)
        except Exception as err:
            raise ValueError(f"{path}: {_one_line(err)}") from err
        slides += sections
        _say(f"phg2st fit [{i}/{len(args.inputs)}] {path}: {sum(a.n_obs for a in sections)} spots")
    panel = _read_genes(args.genes) if args.genes else args.panel
    if args.protocol == "none":  # .X holds the user's own normalisation; only the genes are chosen
        genes = phg2st.pp.panel_genes(panel) if isinstance(panel, str) else panel
        targets = slides
    else:
        genes = None
        targets = [phg2st.tl.prepare_targets(a, args.protocol, panel=panel) for a in slides]
    kwargs = {"variant": args.variant, "prompt_fraction": DEMO_PROMPTS[args.variant], "seed": args.seed,
              "accelerator": args.accelerator, "devices": args.devices}  # fmt: skip
    kwargs.update({k: v for k, v in {"hidden": args.hidden, "max_epochs": args.max_epochs}.items() if v is not None})
    kwargs.update(_fit_settings(args.fit or []))
    if args.checkpoint_dir is not None:
        kwargs.update(checkpoint_dir=args.checkpoint_dir, resume=True)
        if (Path(args.checkpoint_dir) / "last.ckpt").is_file():
            _say(f"phg2st fit: resuming from {Path(args.checkpoint_dir) / 'last.ckpt'}")
    _say(f"phg2st fit: training {args.variant!r} on {len(targets)} sections (targets: {args.protocol})")
    model = phg2st.tl.fit(targets, use_rep=args.use_rep, genes=genes, **kwargs)
    model.save(out, overwrite=True)  # atomic
    val = model.info.get("best_epoch_val_pcc")
    _say(f"phg2st fit: {len(model.genes)} genes, {model.info['epochs_trained']} epochs"
         + (f", validation PCC {val:.3f}" if val is not None else "")
         + f" ({time.perf_counter() - t0:.0f} s) -> {out}")  # fmt: skip
    return 0


def _model_targets(adata, model):
    """The section's expression prepared as the model's training targets were (see ``phg2st impute --help``).

    Raw counts are prepared with the model's recorded protocol; a section already prepared, or a model trained on
    the user's own normalisation, is only restricted to the model's genes. ``tl.impute`` then checks the result
    against the model (:meth:`PHG2ST.check_input`), as it does in Python.
    """
    import phg2st_sc as phg2st
    from phg2st_sc._constants import Keys

    expected = model.info.get("normalization", {})
    if "protocol" in expected and Keys.TARGETS_UNS not in adata.uns:
        return phg2st.tl.prepare_targets(adata, model)
    return phg2st.pp.select_genes(adata, model.genes, copy=True)


def _impute_one(path: Path, args: argparse.Namespace, model) -> tuple[bool, str]:
    import phg2st_sc as phg2st
    from phg2st_sc._constants import Keys

    out = Path(args.out_dir) / f"{_stem(path)}.h5ad"
    if out.exists() and not args.overwrite:
        return True, f"{out} exists"
    sections = _sections(path)
    if len(sections) != 1:
        raise ValueError(f"it holds {len(sections)} tables; give one section per input.")
    _require_ready(sections[0], model.info["use_rep"])
    work = _model_targets(sections[0], model)
    key = args.prompt_key or Keys.PROMPT
    if not args.prompt_key:
        phg2st.tl.select_prompts(work, fraction=args.prompt_fraction, seed=args.seed, strategy=args.strategy,
                                 overwrite=args.overwrite)  # fmt: skip
    phg2st.tl.impute(work, model, prompt_key=key, layer_added=args.layer_added, device=args.device,
                     overwrite=args.overwrite)  # fmt: skip
    _write(work, out)
    return False, f"{work.n_obs} spots, {int(work.obs[key].sum())} prompts, {work.n_vars} genes -> {out}"


def run_impute(args: argparse.Namespace) -> int:
    """``phg2st impute``: predict every input's expression from its prompts with a saved model."""
    import phg2st_sc as phg2st

    model = phg2st.PHG2ST.load(args.model)
    _say(f"phg2st impute: {model!r}")
    return _each_input("impute", args.inputs, lambda path: _impute_one(path, args, model))


#: Arguments that hold paths: ``~`` is expanded once, here, so that every later use sees the same path.
PATH_ARGUMENTS = ("inputs", "data", "out", "out_dir", "model", "checkpoint_dir", "genes", "cache_dir", "weights",
                  "methods_file")  # fmt: skip


def _expand_paths(args: argparse.Namespace) -> None:
    def expand(value: str) -> str:
        return str(Path(value).expanduser()) if value.startswith("~") else value

    for name in PATH_ARGUMENTS:
        value = getattr(args, name, None)
        if isinstance(value, str):
            setattr(args, name, expand(value))
        elif isinstance(value, list):
            setattr(args, name, [expand(v) if isinstance(v, str) else v for v in value])


def _check_args(args: argparse.Namespace) -> str | None:
    """What is wrong with the arguments, found before any work (a usage error, exit 2), or ``None``."""
    from phg2st_sc._utils import check_replaceable, check_writable

    inputs = getattr(args, "inputs", None) or []
    resolved = [str(Path(p).expanduser().resolve()) for p in inputs]
    twice = sorted({p for p, r in zip(inputs, resolved, strict=True) if resolved.count(r) > 1})
    if twice:
        return f"{twice} listed twice; give each input once."
    if args.command in ("embed", "impute"):
        stems = [_stem(p) for p in inputs]
        repeated = sorted({s for s in stems if stems.count(s) > 1})
        if repeated:
            return f"several inputs are named {repeated}; each needs its own output name."
    try:
        if args.command == "benchmark" and args.fit:
            _fit_settings(args.fit)
        if args.command == "fit":
            from phg2st_sc.tl._fit import check_fit_settings

            flags = {"seed": args.seed, "variant": args.variant, "hidden": args.hidden, "max_epochs": args.max_epochs}
            check_fit_settings(**{**{k: v for k, v in flags.items() if v is not None}, **_key_values(args.fit or [])})
            if args.genes:
                _read_genes(args.genes)
            out = Path(args.out).expanduser()
            check_replaceable(out)  # never a folder; its parent writable
            if out.exists() and args.overwrite:
                from phg2st_sc._model._model import is_model_file

                if not is_model_file(out):
                    return f"{out} exists and is not a phg2st-sc model file: --overwrite replaces only a model file."
        elif args.command == "impute":
            if not Path(args.model).expanduser().is_file():
                return f"no model file at {args.model}."
            check_writable(args.out_dir)
            outputs = {str((Path(args.out_dir) / f"{_stem(p)}.h5ad").resolve()) for p in inputs}
            clash = [p for p, r in zip(inputs, resolved, strict=True) if r in outputs]
            if clash:
                return (f"{clash} would be replaced by its own output in --out-dir {args.out_dir}; write the "
                        "predictions to another folder.")  # fmt: skip
        elif args.command == "embed":
            check_writable(args.out_dir)
        elif args.command == "benchmark":
            check_writable(args.out)
    except (OSError, ValueError, TypeError) as err:
        return _one_line(err)
    return None


def _fit_settings(items: Sequence[str]) -> dict[str, Any]:
    """``--fit KEY=VALUE`` settings, each checked (name and value) as tl.fit checks its own, before any work."""
    from phg2st_sc.tl._fit import check_fit_settings

    settings = _key_values(items)
    check_fit_settings(**settings)
    return settings


def _devices(value: str) -> int | str:
    return int(value) if value.lstrip("-").isdigit() else value


def _add_batch_commands(sub) -> dict[str, argparse.ArgumentParser]:
    """The ``embed``, ``fit`` and ``impute`` subcommands."""

    def command(name: str, summary: str, description: str, epilog: str = BATCH_NOTES) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=summary, description=description, epilog=epilog,
                              formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip

    inputs_help = ".h5ad files or SpatialData .zarr stores, one section each"
    p_embed = command(
        "embed",
        "embed the H&E tiles and build the hypergraph of each section (input of fit and impute)",
        """\
Embed the H&E tiles of each section (spot tiles and their neighbour windows: pp.embed_tiles) and build
its hypergraph (pp.build_hypergraph), which `phg2st fit` and `phg2st impute` need. Each input (.h5ad with
the image path its reader recorded, or a SpatialData .zarr store with its image) gives OUT_DIR/<same name>:
the input plus obsm['X_<encoder>'], the neighbour tiles and the hypergraph. An output that has them
already is skipped; one that lacks them (another encoder, --no-hypergraph) is extended. OUT_DIR may be the
inputs' own folder: each input is then replaced, atomically, by its embedded version.""",
    )
    p_embed.add_argument("inputs", nargs="+", metavar="IN", help=inputs_help)
    p_embed.add_argument("--out-dir", required=True, help="output folder")
    p_embed.add_argument("--encoder", default="efficientnet_lite0", choices=ENCODERS,
                         help="tile encoder (default: efficientnet_lite0, offline; uni and resnet50 need --weights)")  # fmt: skip
    p_embed.add_argument("--weights", default=None, help="encoder weights file (UNI: default $PHG2ST_UNI_WEIGHTS)")
    p_embed.add_argument("--mpp", type=float, default=None, help="microns per pixel seen by the encoder")
    p_embed.add_argument("--batch-size", type=int, default=None, help="tiles per encoder call (default: 64)")
    p_embed.add_argument("--device", default="auto", help="auto (CUDA, MPS, CPU) or a torch device (default: auto)")
    p_embed.add_argument("--cache-dir", default=None,
                         help="resumable tile cache: a rerun after an interruption inside a slide reuses its batches")  # fmt: skip
    p_embed.add_argument("--image-key", default=None, help="image element of .zarr inputs (if several)")
    p_embed.add_argument("--table-key", default=None, help="table of .zarr inputs (if several)")
    p_embed.add_argument("--no-hypergraph", action="store_true", help="embed only")
    p_embed.add_argument("--overwrite", action="store_true", help="embed again, even where the output is complete")

    p_fit = command(
        "fit",
        "train PHG2ST on embedded sections and save the model",
        """\
Train PHG2ST on sections embedded by `phg2st embed` and save the model to OUT (written atomically).
Targets: the raw counts in .X are normalised as --protocol says and restricted to --panel or --genes
(tl.prepare_targets); --protocol none takes .X as it is (your own normalisation). The model records the
protocol and genes, and `phg2st impute` prepares its inputs the same way. Validation (tl.fit's "auto"):
with three or more inputs the last one selects the epoch, otherwise 10% of each section's spots.
Resume: if OUT exists, nothing is done (exit 0); --overwrite trains again. With --checkpoint-dir, a complete
checkpoint is written after every epoch and a rerun of the same command continues an interrupted training
from its last epoch (same result as an uninterrupted run); --overwrite then still continues the run in DIR
(give a new DIR to train from scratch).""",
        "Exit codes: 0 trained (or OUT already there), 1 an input could not be used or training failed, "
        "2 bad arguments.",
    )
    p_fit.add_argument("inputs", nargs="+", metavar="IN", help=f"training sections: {inputs_help}")
    p_fit.add_argument("--out", required=True, metavar="MODEL.pt", help="model file to write")
    p_fit.add_argument("--use-rep", default=REP, help=f"obsm key of the tile embeddings (default: {REP})")
    genes = p_fit.add_mutually_exclusive_group()
    genes.add_argument("--panel", default=None, help="gene panel: her2st_785, cscc_171, top_expressed (default: "
                       "all genes shared by the inputs)")  # fmt: skip
    genes.add_argument("--genes", default=None, metavar="FILE", help="genes to predict, one a line")
    p_fit.add_argument("--protocol", default="heldout", choices=[*PROTOCOL_NAMES, "none"],
                       help="target normalisation (tl.PROTOCOLS; default: heldout, i.e. normalize_total 1e4 + log1p); "
                       "none: .X as it is")  # fmt: skip
    p_fit.add_argument("--variant", default="propagated", choices=["propagated", "paper"])
    p_fit.add_argument("--max-epochs", type=int, default=None, help="default: tl.fit's 200")
    p_fit.add_argument("--hidden", type=int, default=None, help="token size (default: tl.fit's 256)")
    p_fit.add_argument("--seed", type=int, default=0)
    p_fit.add_argument("--accelerator", default="auto", help="auto, cpu, gpu, mps (Lightning)")
    p_fit.add_argument("--devices", type=_devices, default="auto", help="device count or list (Lightning)")
    p_fit.add_argument("--fit", nargs="+", metavar="KEY=VALUE",
                       help="more tl.fit settings, values read as JSON, e.g. patience=10 prompt_fraction=0.2")  # fmt: skip
    p_fit.add_argument("--checkpoint-dir", default=None, metavar="DIR",
                       help="write a checkpoint after every epoch and resume from DIR/last.ckpt when it exists")  # fmt: skip
    p_fit.add_argument("--overwrite", action="store_true", help="train again even if OUT exists")

    p_impute = command(
        "impute",
        "predict each section's expression from its prompt spots with a saved model",
        """\
Predict expression at every spot of each section from its image and its prompt spots with a model saved by
`phg2st fit`, and write OUT_DIR/<name>.h5ad. Inputs are sections embedded by `phg2st embed` with the
model's encoder. Their expression is prepared as the model's training targets were: raw counts in .X are
normalised with the model's recorded protocol and restricted to its genes; an input already prepared
(uns['phg2st_targets'] of tl.prepare_targets) is used as it is when it matches the model, and fails
otherwise; a model trained with `--protocol none` takes .X as it is. The output holds the model's genes
with the prepared expression in .X, the prompts in obs (phg2st_prompt, or --prompt-key), the predictions
in layers[LAYER] (prompt spots keep their measured values) and obsm['X_phg2st'].""",
    )
    p_impute.add_argument("inputs", nargs="+", metavar="IN", help=inputs_help)
    p_impute.add_argument("--model", required=True, metavar="MODEL.pt", help="model written by `phg2st fit`")
    p_impute.add_argument("--out-dir", required=True, help="output folder")
    prompts = p_impute.add_mutually_exclusive_group()
    prompts.add_argument("--prompt-fraction", type=float, default=0.1,
                         help="draw this fraction of spots as prompts (default: 0.1)")  # fmt: skip
    prompts.add_argument("--prompt-key", default=None, metavar="COL",
                         help="boolean obs column marking the measured prompt spots instead")  # fmt: skip
    p_impute.add_argument("--seed", type=int, default=0, help="seed of the prompt draw (default: 0)")
    p_impute.add_argument("--strategy", default="random", choices=["random", "blocks"], help="where drawn prompts lie")
    p_impute.add_argument("--layer-added", default="phg2st", metavar="LAYER", help="layer of the predictions")
    p_impute.add_argument("--device", default="cpu", help="torch device of the forward pass (default: cpu)")
    p_impute.add_argument("--overwrite", action="store_true", help="impute again where the output exists")
    for p in (p_embed, p_fit, p_impute):
        p.add_argument("--no-progress", action="store_true", help="no progress bars (the lines per section stay)")
    return {"embed": p_embed, "fit": p_fit, "impute": p_impute}


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
    p_demo.add_argument("--cache-dir", default=None, help="tile embedding cache (default: OUT/embedding_cache)")
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
    batch = _add_batch_commands(sub)
    args = parser.parse_args(argv)
    _expand_paths(args)
    problem = _check_args(args)
    if problem:
        (batch.get(args.command) or {"benchmark": p_bench, "demo": p_demo}[args.command]).error(problem)
    from phg2st_sc._errors import TrainingTerminated
    from phg2st_sc._settings import settings

    progress = settings.progress
    settings.progress = progress and not getattr(args, "no_progress", False)
    try:
        if args.command == "demo":
            return demo(args.section, args.out, args.seeds, args.epochs, args.cache_dir)
        if args.command == "benchmark":
            return run_benchmark(args)
        return {"embed": run_embed, "fit": run_fit, "impute": run_impute}[args.command](args)
    except KeyboardInterrupt:
        print(f"phg2st {args.command}: interrupted (Ctrl-C); {RESUME_NOTES[args.command]}.", file=sys.stderr)
        return 130  # the shells' convention: 128 + SIGINT
    except TrainingTerminated:
        print(f"phg2st {args.command}: terminated (SIGTERM); {RESUME_NOTES[args.command]}.", file=sys.stderr)
        return 143  # 128 + SIGTERM
    except Exception as err:  # noqa: BLE001 - the CLI reports any failure as a message and an exit code
        print(f"phg2st {args.command}: error: {_one_line(err)}", file=sys.stderr)
        return 1
    finally:
        settings.progress = progress


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
