"""`tl.benchmark`: the whole evaluation protocol over folds of sections, for PHG2ST and every baseline."""

from __future__ import annotations

import json
import logging
import os
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import pandas as pd
from anndata import AnnData

from phg2st_sc._constants import Keys
from phg2st_sc._errors import DataNotFoundError, MissingImageWarning
from phg2st_sc._model._config import TRAINING_PROMPTS
from phg2st_sc._settings import settings
from phg2st_sc._validate import check_seed
from phg2st_sc.tl._baselines import IMAGE_METHODS, METHODS
from phg2st_sc.tl._evaluation import LAYER_COLUMNS, UNCERTAINTY_METRICS
from phg2st_sc.tl._protocol import Protocol, get_protocol, prepare_targets

logger = logging.getLogger("phg2st_sc")

#: Named method settings. ``"method"`` is a baseline name or ``"phg2st"``; the rest goes to `tl.baseline` or
#: `tl.fit`. The PHG2ST presets cover the two variants and the ablations of the paper's section 4.3.
METHOD_PRESETS: dict[str, dict[str, Any]] = {
    **{m: {"method": m} for m in METHODS},
    "phg2st": {"method": "phg2st", "variant": "propagated", "prompt_fraction": TRAINING_PROMPTS["propagated"]},
    "phg2st_paper": {"method": "phg2st", "variant": "paper", "prompt_fraction": TRAINING_PROMPTS["paper"]},
    # ablations of the propagated network (without the adaptive variant's in-context layer)
    **{
        f"phg2st_{name}": {
            "method": "phg2st",
            "variant": "propagated",
            "prompt_fraction": TRAINING_PROMPTS["propagated"],
            switch: False,
        }
        for name, switch in (
            ("no_spot_branch", "use_spot_branch"),
            ("no_neighbour_branch", "use_neighbour_branch"),
            ("image_only", "use_prompts"),
            ("prompts_only", "use_image"),
        )
    },  # fmt: skip
    "phg2st_adaptive": {"method": "phg2st", "variant": "adaptive", "prompt_fraction": TRAINING_PROMPTS["adaptive"]},
    # the adaptive variant without the image: a prompts-only network, its layer's ridge on the network's tokens only
    "phg2st_adaptive_prompts_only": {
        "method": "phg2st",
        "variant": "adaptive",
        "prompt_fraction": TRAINING_PROMPTS["adaptive"],
        "use_image": False,
    },  # fmt: skip
    # the adaptive model's network alone (the same trained model: its in-context layer switched off)
    "phg2st_adaptive_network": {
        "method": "phg2st",
        "variant": "adaptive",
        "prompt_fraction": TRAINING_PROMPTS["adaptive"],
        "impute": {"in_context": False},
    },
}
DATASET_PANELS = {"her2st": "her2st_785", "cscc": "cscc_171", "stutility_mob": "top_expressed"}
FOLDS = ("leave_one_patient_out", "leave_one_section_out")
METRICS = ("mae", "ccc", "pcc")


@dataclass
class BenchmarkResult:
    """Result of :func:`benchmark`.

    Attributes
    ----------
    table
        One row per fold, test section, target protocol, prompt fraction, seed, method and scored spots.
    summary
        Mean ± std over folds (after averaging seeds and sections within a fold), per protocol, spots, prompt
        fraction and method.
    protocol
        Everything needed to reproduce the run (also written as ``protocol.json`` next to the results).
    per_gene
        Per-gene metrics (one row per gene and row of ``table``) when asked for.
    """

    table: pd.DataFrame
    summary: pd.DataFrame
    protocol: dict[str, Any]
    per_gene: pd.DataFrame | None = None


def summarise(table: pd.DataFrame) -> pd.DataFrame:
    """Mean over seeds and sections within each fold, then mean and std over folds.

    The accuracy metrics, and the calibration metrics of methods with uncertainty where any row has them.
    """
    keys = ["protocol", "spots", "prompt_fraction", "method"]
    metrics = [*METRICS, *(m for m in UNCERTAINTY_METRICS if m in table and table[m].notna().any())]
    per_fold = table.groupby([*keys, "fold"], sort=False)[metrics].mean()
    agg = per_fold.groupby(level=list(range(len(keys))), sort=False).agg(["mean", "std"])
    out = pd.DataFrame(index=agg.index)
    for m in metrics:
        out[f"{m}_mean"], out[f"{m}_std"] = agg[(m, "mean")], agg[(m, "std")].fillna(0.0)
    out["folds"] = per_fold.groupby(level=list(range(len(keys))), sort=False).size()
    return out.reset_index()


def _resolve_methods(methods: Sequence[str] | Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    if isinstance(methods, Mapping):
        out = {str(k): dict(v) for k, v in methods.items()}
    else:
        unknown = [m for m in methods if m not in METHOD_PRESETS]
        if unknown:
            raise ValueError(f"Unknown methods {unknown}; use names from {list(METHOD_PRESETS)} or a mapping.")
        out = {m: dict(METHOD_PRESETS[m]) for m in methods}
    if not out:
        raise ValueError("`methods` is empty.")
    for name, spec in out.items():
        if spec.get("method") not in (*METHODS, "phg2st"):
            raise ValueError(f"Method {name!r}: `method` must be 'phg2st' or one of {list(METHODS)}.")
    return out


def _load(data: Any, sections: Sequence[str] | None, data_dir: Any) -> tuple[str, dict[str, AnnData]]:
    from phg2st_sc import datasets

    readers = {"her2st": (datasets.her2st, datasets.HER2ST_SECTIONS), "cscc": (datasets.cscc, datasets.CSCC_SECTIONS),
               "stutility_mob": (datasets.stutility_mob, datasets.STUTILITY_MOB_SECTIONS)}  # fmt: skip
    if isinstance(data, str) and data in readers:
        reader, known = readers[data]
        wanted = list(sections) if sections is not None else list(known)
        out, missing = {}, []
        for s in wanted:
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", MissingImageWarning)
                    out[s] = reader(s, data_dir=data_dir)
            except DataNotFoundError:
                if sections is not None:
                    raise
                missing.append(s)
        if missing:
            warnings.warn(
                f"{data}: {len(missing)} sections not available and skipped: {missing}.", UserWarning, stacklevel=3
            )
        return data, out
    items = [data] if isinstance(data, (AnnData, str, os.PathLike)) else list(data)
    out = {}
    for i, item in enumerate(items):
        if isinstance(item, (str, os.PathLike)):
            path = Path(item)
            if path.suffix == ".h5ad":
                import anndata as ad

                adatas = [ad.read_h5ad(path)]
            else:
                import spatialdata as sd

                sdata = sd.read_zarr(path)
                adatas = [sdata.tables[k] for k in sdata.tables]
        else:
            adatas = [item.copy()]  # embeddings and hypergraphs are added: never to the caller's object
        for a in adatas:
            name = str(a.obs[Keys.SECTION].iloc[0]) if Keys.SECTION in a.obs else f"section{i}"
            if name in out:
                raise ValueError(f"Two inputs are both section {name!r}; sections must be unique.")
            out[name] = a
    if sections is not None:
        out = {s: out[s] for s in sections}
    return "custom", out


def _folds(folds: Any, sections: dict[str, AnnData]) -> dict[str, list[str]]:
    if isinstance(folds, Mapping):
        out = {str(k): [str(s) for s in v] for k, v in folds.items()}
        unknown = sorted({s for v in out.values() for s in v} - set(sections))
        if unknown:
            raise ValueError(f"Folds name sections that are not loaded: {unknown}.")
        return out
    if folds == "leave_one_section_out":
        return {s: [s] for s in sections}
    if folds == "leave_one_patient_out":
        out: dict[str, list[str]] = {}
        for s, a in sections.items():
            if Keys.PATIENT not in a.obs:
                raise ValueError(
                    f"Section {s} has no `obs['patient']`; use folds='leave_one_section_out' or give folds."
                )
            out.setdefault(str(a.obs[Keys.PATIENT].iloc[0]), []).append(s)
        return out
    raise ValueError(f"`folds` must be one of {list(FOLDS)} or a mapping fold -> test sections, got {folds!r}.")


def benchmark(
    data: str | AnnData | Sequence[AnnData | str | os.PathLike],
    *,
    folds: Literal["leave_one_patient_out", "leave_one_section_out"]
    | Mapping[str, Sequence[str]] = "leave_one_patient_out",
    methods: Sequence[str] | Mapping[str, Mapping[str, Any]] = ("mean", "idw", "gp"),
    protocols: Sequence[str | Protocol] = ("heldout", "heldout_smoothed"),
    prompt_fractions: Sequence[float] = (0.1,),
    prompt_strategy: str = "random",
    seeds: Sequence[int] = (0, 1, 2),
    spots: Sequence[str] = ("heldout", "all"),
    panel: str | Sequence[str] | None = "auto",
    sections: Sequence[str] | None = None,
    encoder: str = "efficientnet_lite0",
    use_rep: str | None = None,
    embed_kwargs: Mapping[str, Any] | None = None,
    fit_kwargs: Mapping[str, Any] | None = None,
    per_gene: bool = False,
    out: str | os.PathLike | None = None,
    data_dir: str | os.PathLike | None = None,
    model_cache: str | os.PathLike | None = None,
) -> BenchmarkResult:
    """Evaluate PHG2ST and the baselines under a named, reproducible protocol over folds of sections.

    For every fold the test sections are held out; PHG2ST trains on the other sections and selects its epoch on
    one of them (``tl.fit``'s ``validation="auto"``), so model selection never sees the test fold. Every test
    section then gets prompts (each fraction, each seed; the same prompts for every method), every method fills
    the rest, and the predictions are scored on held-out and/or all spots. Baselines use the test section's
    prompts only.

    Parameters
    ----------
    data
        ``"her2st"``, ``"cscc"``, ``"stutility_mob"`` (read with the `phg2st.datasets` readers; sections not
        available locally are skipped with a warning), or AnnData objects / ``.h5ad`` / SpatialData ``.zarr`` paths,
        one section each (raw counts in ``.X``, ``obs['section']``, ``obs['patient']`` for patient folds).
    folds
        ``"leave_one_patient_out"``, ``"leave_one_section_out"``, or ``{fold name: [test sections]}``.
    methods
        Names from :data:`METHOD_PRESETS` (baselines, ``"phg2st"``, ``"phg2st_paper"`` and the ablations), or
        ``{label: {"method": name, **settings}}`` to set each method's parameters.
    protocols
        Target protocols (:data:`~phg2st_sc.tl.PROTOCOLS` names or objects); PHG2ST is trained per protocol.
    prompt_fractions
        Fractions of each test section given as prompts.
    prompt_strategy
        ``"random"`` spots, or ``"blocks"``: five contiguous patches, so whole regions of the section have no
        prompt (see :func:`phg2st_sc.tl.select_prompts`); or a design of :func:`phg2st_sc.tl.design_prompts` with
        as many spots: ``"space"``, ``"features"``, ``"variance"`` (single spots) or ``"space_blocks"``,
        ``"features_blocks"``, ``"variance_blocks"`` (five designed blocks).
    seeds
        Prompt draws per fraction.
    spots
        Spots scored: ``"heldout"`` and/or ``"all"``.
    panel
        Gene panel; ``"auto"`` is the dataset's benchmark panel (her2st_785, cscc_171, top_expressed) and all
        shared genes for custom data.
    sections
        Use only these sections.
    encoder
        Tile encoder for image methods (see :func:`phg2st_sc.pp.embed_tiles`).
    use_rep
        Use these image embeddings from ``obsm`` (already computed for every section) instead of embedding tiles.
    embed_kwargs
        Extra arguments of ``embed_tiles`` (e.g. ``weights``, ``mpp``, ``cache_dir``).
    fit_kwargs
        Arguments of ``tl.fit`` applied to every PHG2ST method (e.g. ``hidden``, ``max_epochs``, ``accelerator``).
    per_gene
        Also return (and save) per-gene metrics.
    out
        Folder for the results: ``fold_<name>.csv`` per fold (a rerun skips finished folds), ``results.csv``,
        ``summary.csv`` and ``protocol.json``.
    data_dir
        Dataset folder for the named datasets.
    model_cache
        Folder where trained models are saved and read back by later runs with the same training (same sections,
        protocol, features, panel and settings; e.g. the same folds under other prompt strategies): a run then
        only evaluates.

    Returns
    -------
    :class:`BenchmarkResult` with the tidy ``table``, the ``summary`` and the ``protocol``. ``table`` has one row
    per fold, section, protocol, fraction, seed, method and kind of spots: the metrics; on held-out rows of methods
    with uncertainty ``coverage_80``, ``coverage_90``, ``width_90`` and ``error_ratio``; and for methods with the
    in-context layer what it chose on that draw: ``layer_kept`` (``"combination"`` or the component kept),
    ``spread_ratio``, ``ridge_left_out`` and ``layer_scale`` (see :func:`phg2st_sc.tl.impute`).

    Examples
    --------
    >>> res = phg2st.tl.benchmark("her2st", methods=["mean", "idw", "gp"], out="her2st_lopo")  # doctest: +SKIP
    >>> res.summary  # doctest: +SKIP
    """
    from tqdm.auto import tqdm

    run = _prepare(
        data, folds=folds, methods=methods, protocols=protocols, prompt_fractions=prompt_fractions,
        prompt_strategy=prompt_strategy, seeds=seeds, spots=spots, panel=panel, sections=sections, encoder=encoder,
        use_rep=use_rep, embed_kwargs=embed_kwargs, fit_kwargs=fit_kwargs, per_gene=per_gene, out=out,
        data_dir=data_dir,
    )  # fmt: skip
    run.model_cache = Path(model_cache) if model_cache is not None else None
    tables, genes_tables = [], []
    for fold, test_sections in tqdm(run.folds.items(), desc="benchmark folds", disable=not settings.progress):
        done = _read_fold(run, fold)
        if done is None:
            done = _run_fold(run, fold, test_sections)
            _write_fold(run, fold, *done)
        tables.append(done[0])
        genes_tables += done[1]
    table = pd.concat(tables, ignore_index=True)
    summary = summarise(table)
    if run.out_dir is not None:
        _atomic_write(run.out_dir / "results.csv", table.to_csv(index=False))
        _atomic_write(run.out_dir / "summary.csv", summary.to_csv(index=False))
    per_gene_table = pd.concat(genes_tables, ignore_index=True) if per_gene and genes_tables else None
    return BenchmarkResult(table=table, summary=summary, protocol=run.record, per_gene=per_gene_table)


#: Columns of the result rows, in the order of ``results.csv`` (and of the folds a resumed run reads back).
ROW_COLUMNS = ["fold", "section", "protocol", "prompt_fraction", "seed", "method", "spots", *METRICS, "n_genes",
               "n_genes_skipped", "n_spots", *UNCERTAINTY_METRICS, *LAYER_COLUMNS]  # fmt: skip


@dataclass
class _Run:
    """Everything a benchmark run needs once its inputs are checked and prepared."""

    specs: dict[str, dict[str, Any]]
    protocols: list[Protocol]
    fractions: list[float]
    strategy: str
    seeds: list[int]
    spots: list[str]
    folds: dict[str, list[str]]
    rep: str
    targets: dict[str, dict[str, AnnData]]
    fit_kwargs: dict[str, Any]
    per_gene: bool
    record: dict[str, Any]
    out_dir: Path | None
    model_cache: Path | None = None


def _check_run_settings(protocols, prompt_fractions, prompt_strategy, seeds, spots) -> tuple[list, list, list]:
    protos = [get_protocol(p) for p in protocols]
    if not protos:
        raise ValueError("`protocols` is empty.")
    fractions = [float(f) for f in prompt_fractions]
    if not fractions or any(not 0 < f < 1 for f in fractions):
        raise ValueError(f"`prompt_fractions` must be numbers in (0, 1), got {list(prompt_fractions)}.")
    from phg2st_sc.tl._evaluation import PROMPT_STRATEGIES

    if prompt_strategy not in PROMPT_STRATEGIES:
        raise ValueError(f"`prompt_strategy` must be one of {list(PROMPT_STRATEGIES)}, got {prompt_strategy!r}.")
    seeds = [check_seed(s, "seeds") for s in seeds]
    if not seeds:
        raise ValueError("`seeds` is empty.")
    bad_spots = [s for s in spots if s not in ("heldout", "all")]
    if not spots or bad_spots:
        raise ValueError(f"`spots` must be 'heldout' and/or 'all', got {list(spots)}.")
    return protos, fractions, seeds


def _portable(embed_kwargs: Mapping[str, Any] | None, out: Any) -> dict[str, Any]:
    """``embed_kwargs`` as recorded, with no path of the machine it ran on.

    A cache folder inside the results folder is recorded relative to it, another one by name only (the cache does not
    change the results).
    """
    record = dict(embed_kwargs or {})
    if record.get("cache_dir") is not None:
        cache = Path(record["cache_dir"]).expanduser().resolve()
        root = Path(out).expanduser().resolve() if out is not None else None
        inside = root is not None and cache.is_relative_to(root)
        record["cache_dir"] = str(cache.relative_to(root)) if inside else f"<outside the results folder: {cache.name}>"
    return record


def _resolve_panel(panel: Any, dataset: str, loaded: dict[str, AnnData]) -> Any:
    if panel == "auto":
        panel = DATASET_PANELS.get(dataset)
        if panel is None:
            shared = None
            for a in loaded.values():
                shared = a.var_names if shared is None else shared.intersection(a.var_names, sort=False)
            panel = list(shared)
    if panel == "top_expressed":
        from phg2st_sc.pp import top_expressed_genes

        panel = top_expressed_genes(list(loaded.values()), n_top=1000)
    return panel


def _prepare(data: Any, **kw: Any) -> _Run:
    """Check the settings, load and prepare the sections (features, hypergraphs, targets), record the protocol."""
    specs = _resolve_methods(kw["methods"])
    protos, fractions, seeds = _check_run_settings(
        kw["protocols"], kw["prompt_fractions"], kw["prompt_strategy"], kw["seeds"], kw["spots"]
    )
    dataset, loaded = _load(data, kw["sections"], kw["data_dir"])
    if len(loaded) < 1:
        raise ValueError("No section to benchmark.")
    fold_map = _folds(kw["folds"], loaded)
    needs_model = any(s["method"] == "phg2st" for s in specs.values())
    needs_image = (
        needs_model
        or any(s["method"] in IMAGE_METHODS for s in specs.values())
        or kw["prompt_strategy"].startswith("features")  # designs that read the image features
    )
    if needs_model and len(loaded) < 2:
        raise ValueError("PHG2ST needs training sections besides the test fold.")
    use_rep, encoder = kw["use_rep"], kw["encoder"]
    rep = use_rep if use_rep is not None else Keys.embedding(encoder)
    if use_rep is not None and needs_image:
        lacking = [s for s, a in loaded.items() if use_rep not in a.obsm]
        if lacking:
            raise KeyError(f"`obsm[{use_rep!r}]` is missing in sections {lacking}; run `pp.embed_tiles` first.")
    panel = _resolve_panel(kw["panel"], dataset, loaded)
    record = {
        "dataset": dataset, "sections": list(loaded), "folds": fold_map, "methods": specs,
        "protocols": [asdict(p) for p in protos], "prompt_fractions": fractions,
        "prompt_strategy": kw["prompt_strategy"], "seeds": seeds, "spots": list(kw["spots"]),
        "panel": panel if isinstance(panel, str) else {"custom": len(panel), "genes": list(panel)},
        "encoder": (use_rep or encoder) if needs_image else None, "embed_kwargs": _portable(kw["embed_kwargs"], kw["out"]),
        "fit_kwargs": dict(kw["fit_kwargs"] or {}), "model_selection": "tl.fit validation='auto' on training sections only",
        "package_version": _version(), "date": time.strftime("%Y-%m-%d"),
    }  # fmt: skip
    out_dir = Path(kw["out"]) if kw["out"] is not None else None
    if out_dir is not None:
        _check_results_folder(out_dir, record)
        out_dir.mkdir(parents=True, exist_ok=True)
        _atomic_write(out_dir / "protocol.json", json.dumps(record, indent=1, default=str))
    if needs_image:
        _embed(loaded, rep, encoder, dict(kw["embed_kwargs"] or {}), hypergraph=needs_model)
    targets = {p.name: {s: prepare_targets(a, p, panel=panel) for s, a in loaded.items()} for p in protos}
    return _Run(specs=specs, protocols=protos, fractions=fractions, strategy=kw["prompt_strategy"], seeds=seeds,
                spots=list(kw["spots"]), folds=fold_map, rep=rep, targets=targets,
                fit_kwargs=dict(kw["fit_kwargs"] or {}), per_gene=kw["per_gene"], record=record, out_dir=out_dir)  # fmt: skip


def _embed(loaded: dict[str, AnnData], rep: str, encoder: str, embed_kwargs: dict, *, hypergraph: bool) -> None:
    """Embed the sections that lack ``obsm[rep]`` and build the hypergraphs the model needs."""
    from phg2st_sc._validate import readiness
    from phg2st_sc.pp import build_hypergraph, embed_tiles

    for a in loaded.values():
        if rep not in a.obsm:
            embed_tiles(a, encoder=encoder, **embed_kwargs)
        if hypergraph and readiness(a, rep) is not None:
            build_hypergraph(a, use_rep=rep)


def _read_fold(run: _Run, fold: str) -> tuple[pd.DataFrame, list[pd.DataFrame]] | None:
    """A finished fold's results from the results folder (a resumed run), or ``None``."""
    if run.out_dir is None or not (run.out_dir / f"fold_{fold}.csv").exists():
        return None
    genes = []
    gene_path = run.out_dir / f"per_gene_{fold}.csv.gz"
    if run.per_gene and gene_path.exists():
        genes.append(pd.read_csv(gene_path))
    # (a fold written by an older version has no calibration or layer record: NaN there)
    return pd.read_csv(run.out_dir / f"fold_{fold}.csv").reindex(columns=ROW_COLUMNS), genes


def _trained(run: _Run, proto: Protocol, names: list[str], train: list[AnnData], settings: dict[str, Any]) -> Any:
    """A model trained on ``train`` with ``settings``; from ``run.model_cache`` when one was saved there before.

    The cache key covers everything the training reads: the dataset and training sections, the protocol, the
    features (not the folder of their cache), the gene panel and every training setting.
    """
    import hashlib

    from phg2st_sc._model._model import PHG2ST
    from phg2st_sc.tl._fit import fit, fit_arguments

    arguments = fit_arguments({**run.fit_kwargs, **settings})
    if run.model_cache is None:
        return fit(train, use_rep=run.rep, **arguments)
    what = {"dataset": run.record["dataset"], "train": names, "protocol": asdict(proto), "rep": run.rep,
            "encoder": run.record["encoder"], "embed": _key_embed(run.record), "panel": run.record["panel"],
            "fit": arguments}  # fmt: skip
    defaults = _size_defaults(arguments)
    if defaults:  # the size tl.fit fills in (it changed on 2026-12-05): a model trained with other defaults is no hit
        what["defaults"] = defaults
    digest = hashlib.sha256(json.dumps(what, sort_keys=True, default=repr).encode()).hexdigest()[:16]
    path = run.model_cache / f"{proto.name}_{'+'.join(names)}_{digest}.pt"
    if path.exists():
        logger.info("Benchmark: model for %s read from the cache %s", names, path.name)
        return PHG2ST.load(path)
    model = fit(train, use_rep=run.rep, **arguments)
    run.model_cache.mkdir(parents=True, exist_ok=True)
    model.save(path)
    return model


def _size_defaults(arguments: dict[str, Any]) -> dict[str, Any]:
    """The token size and epoch limit ``tl.fit`` fills in where ``arguments`` leave them out.

    Part of the model-cache key only where they were left out, so keys of explicit settings stay as they were.
    The architecture is resolved as ``tl.fit`` resolves it (``variant`` against ``config``).
    """
    from phg2st_sc._model._config import MAX_EPOCHS, ModelConfig
    from phg2st_sc.tl._fit import _architecture

    arch, _ = _architecture(arguments.get("variant"), arguments.get("config"), {})
    resolved = ModelConfig(**arch)
    out: dict[str, Any] = {}
    if "hidden" not in arch:
        out["hidden"] = resolved.hidden
    if arguments.get("max_epochs") is None:
        out["max_epochs"] = MAX_EPOCHS[resolved.variant]
    return out


def _run_fold(run: _Run, fold: str, test_sections: list[str]) -> tuple[pd.DataFrame, list[pd.DataFrame]]:
    """Train PHG2ST on the fold's training sections (per protocol) and score every method on its test sections."""
    from phg2st_sc.tl._evaluation import baseline_predictor, evaluate_methods, model_predictor

    rows, genes = [], []
    for proto in run.protocols:
        secs = run.targets[proto.name]
        train = [secs[s] for s in secs if s not in test_sections]
        predictors, trained = {}, {}
        for label, spec in run.specs.items():
            if spec["method"] == "phg2st":
                settings = {k: v for k, v in spec.items() if k not in ("method", "impute")}
                key = repr(sorted(settings.items()))  # methods that differ only at impute share one model
                if key not in trained:
                    trained[key] = _trained(run, proto, [s for s in secs if s not in test_sections], train, settings)
                predictors[label] = model_predictor(trained[key], **spec.get("impute", {}))
            else:
                predictors[label] = baseline_predictor(spec, run.rep)
        for section in test_sections:
            work = secs[section].copy()
            for fraction in run.fractions:
                r, g = evaluate_methods(
                    work, predictors, seeds=run.seeds, fraction=fraction, strategy=run.strategy, spots=run.spots,
                    per_gene=run.per_gene, base={"fold": fold, "section": section, "protocol": proto.name},
                    use_rep=run.rep,
                )  # fmt: skip
                rows += r
                genes += g
    base = ["fold", "section", "protocol", "prompt_fraction", "seed", "method"]  # the per-gene tables' order
    genes = [g[[c for c in g.columns if c not in (*base, "spots")] + [*base, "spots"]] for g in genes]
    return pd.DataFrame(rows).reindex(columns=ROW_COLUMNS), genes


def _write_fold(run: _Run, fold: str, table: pd.DataFrame, genes: list[pd.DataFrame]) -> None:
    if run.out_dir is None:
        return
    _atomic_write(run.out_dir / f"fold_{fold}.csv", table.to_csv(index=False))
    if run.per_gene and genes:
        from phg2st_sc._utils import atomic_path

        with atomic_path(run.out_dir / f"per_gene_{fold}.csv.gz") as tmp:
            pd.concat(genes).to_csv(tmp, index=False, compression="gzip")


def _version() -> str:
    from phg2st_sc import __version__

    return __version__


#: Fields of ``protocol.json`` that may differ between a run and its resumption.
_RUN_FIELDS = ("date", "package_version")


def _check_results_folder(out_dir: Path, record: dict) -> None:
    """Refuse a results folder that holds another run's results (a resume would mix them) or files of the user's.

    A folder of this run (same ``protocol.json`` but for the date, the version and the embedding cache's folder) is
    resumed: its finished folds are kept. An empty or absent folder starts a new run.
    """
    if not out_dir.exists():
        return
    if not out_dir.is_dir():
        raise NotADirectoryError(f"`out` {out_dir} is a file; give a folder for the results.")
    existing = out_dir / "protocol.json"
    if not existing.is_file():
        if any(out_dir.iterdir()):
            raise FileExistsError(
                f"`out` {out_dir} holds other files and no protocol.json: it is not a benchmark results folder. "
                "Choose a new or empty folder (nothing was written)."
            )
        return
    try:
        old = json.loads(existing.read_text())
    except (OSError, ValueError) as err:
        raise ValueError(f"{existing} is not readable ({err}); remove the folder to start again.") from err
    old, new = _without_cache(old), _without_cache(json.loads(json.dumps(record, default=str)))
    differ = sorted(k for k in set(old) | set(new) if k not in _RUN_FIELDS and old.get(k) != new.get(k))
    if differ:
        raise ValueError(
            f"`out` {out_dir} holds the results of another benchmark run (its protocol.json differs in {differ}): "
            "resuming would mix the two. Use another folder, or remove this one to start again."
        )


def _key_embed(record: dict) -> dict:
    """The embedding settings in a model cache's key, with the cache's folder named as the command line's default.

    The folder does not change the model; naming it always as the command line did before `--cache-dir` existed
    finds the models it cached then.
    """
    return _without_cache(record)["embed_kwargs"] | {"cache_dir": "embedding_cache"}


def _without_cache(record: dict) -> dict:
    """A protocol record without its embedding cache's folder, which does not change the results."""
    embed = record.get("embed_kwargs")
    if not isinstance(embed, dict) or "cache_dir" not in embed:
        return record
    return record | {"embed_kwargs": {k: v for k, v in embed.items() if k != "cache_dir"}}


def _atomic_write(path: Path, text: str) -> None:
    from phg2st_sc._utils import atomic_path

    with atomic_path(path) as tmp:
        tmp.write_text(text)


__all__ = ["benchmark", "BenchmarkResult", "METHOD_PRESETS", "summarise"]
