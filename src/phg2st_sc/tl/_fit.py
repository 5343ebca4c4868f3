"""`tl.fit` and `tl.impute`: train the PHG2ST model on sections and fill a section from its prompts."""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from anndata import AnnData
from scipy import sparse

from phg2st_sc._constants import Keys
from phg2st_sc._docs import inject_docs
from phg2st_sc._model._config import ModelConfig
from phg2st_sc._model._inputs import input_record
from phg2st_sc._settings import settings
from phg2st_sc._utils import _is_spatialdata, as_dense, check_slots, get_table, spot_pitch, write_slots
from phg2st_sc._validate import (
    check_gene_list,
    check_nonempty,
    check_positive_int,
    check_positive_real,
    check_seed,
    check_trainer_kwargs,
    check_unique_names,
    get_prompt_mask,
)
from phg2st_sc.tl._metrics import prompt_fingerprint

if TYPE_CHECKING:
    from spatialdata import SpatialData

    from phg2st_sc._model._model import PHG2ST

logger = logging.getLogger("phg2st_sc")


def _slides(data: Any, table_key: str | None) -> list[AnnData]:
    """A list of per-section AnnData from AnnData / SpatialData / lists of them."""
    items = data if isinstance(data, (list, tuple)) else [data]
    out: list[AnnData] = []
    for item in items:
        if _is_spatialdata(item) and table_key is None:
            out += [item.tables[k] for k in item.tables]
        else:
            out.append(get_table(item, table_key))
    if not out:
        raise ValueError("No section to use: pass an AnnData, a SpatialData with tables, or a list of them.")
    for a in out:
        check_nonempty(a)
        check_unique_names(a)
        if Keys.SECTION in a.obs and a.obs[Keys.SECTION].nunique() > 1:
            raise ValueError(
                "An AnnData holds several sections (`obs['section']`); pass one AnnData per section, e.g. "
                "`[adata[adata.obs['section'] == s].copy() for s in adata.obs['section'].unique()]`."
            )
    for i, a in enumerate(out):
        for j in range(i):
            if _same_section(out[j], a):
                raise ValueError(
                    f"Sections {j} and {i} of the input are the same section (the same spots at the same "
                    "coordinates): give each section once."
                )
    return out


def check_fit_settings(**settings: Any) -> None:
    """Check :func:`fit`'s settings that need no data, before any work (``phg2st fit`` checks ``--fit`` with it).

    Architecture settings may come as ``config`` or flat (:data:`~phg2st_sc._model._config.ARCHITECTURE`); settings
    that are neither :func:`fit`'s own nor architecture fields must be ``lightning.Trainer`` parameters (a typo is
    refused with a suggestion).
    """
    from phg2st_sc._model._config import ARCHITECTURE, architecture

    own = [*_fit_parameters(), *ARCHITECTURE]
    check_trainer_kwargs({k: v for k, v in settings.items() if k not in own}, own=own)
    checks = {
        "prompt_fraction": lambda v: v is None or _check_fraction(v, "prompt_fraction"),
        "validation": _check_validation,
        "max_epochs": lambda v: v is None or check_positive_int(v, "max_epochs"),
        "lr": lambda v: check_positive_real(v, "lr"),
        "step_size": lambda v: check_positive_int(v, "step_size"),
        "gamma": lambda v: check_positive_real(v, "gamma", maximum=1.0),
        "patience": lambda v: check_positive_int(v, "patience", minimum=0),
        "seed": check_seed,
        "n_networks": lambda v: check_positive_int(v, "n_networks"),
    }
    for key, check in checks.items():
        if key in settings:
            check(settings[key])
    several = int(settings.get("n_networks") or 1) > 1
    if several and "seed" in settings:  # the last network's seed must be valid too
        check_seed(int(settings["seed"]) + int(settings["n_networks"]) - 1, "seed + n_networks - 1")
    flat = {k: settings[k] for k in ARCHITECTURE if k in settings and settings[k] is not None}
    architecture(settings.get("config"), **flat)  # checks every architecture value
    if several and (settings.get("checkpoint_dir") is not None or settings.get("resume")):
        raise ValueError(
            "`checkpoint_dir` and `resume` keep one network's training state: train with `n_networks=1`, or without "
            "checkpoints."
        )
    if several and (settings.get("callbacks") or settings.get("logger") not in (None, False)):
        raise ValueError(
            "`callbacks` and `logger` keep one training run's state, and `n_networks` trains one run per network: "
            "train with `n_networks=1` to pass them."
        )
    if settings.get("checkpoint_dir") is not None and settings.get("enable_checkpointing") is False:
        raise ValueError(
            "`checkpoint_dir` asks for checkpoints and `enable_checkpointing=False` forbids them: drop one."
        )


def fit_arguments(settings: dict[str, Any]) -> dict[str, Any]:
    """``settings`` as :func:`fit` takes them: flat architecture fields (other than ``variant``) moved into ``config``.

    For callers with flat settings: ``tl.benchmark``'s ``fit_kwargs`` and ``phg2st fit --fit``.
    """
    from phg2st_sc._model._config import ARCHITECTURE, architecture

    flat = {k: v for k, v in settings.items() if k in ARCHITECTURE and k != "variant"}
    if not flat:
        return dict(settings)
    out = {k: v for k, v in settings.items() if k not in flat}
    out["config"] = architecture(settings.get("config"), **flat)
    return out


def _check_validation(value: Any) -> None:
    if isinstance(value, str) and value != "auto":
        raise ValueError(f"`validation` must be 'auto', a fraction, a list of sections or None, got {value!r}.")
    if isinstance(value, bool):
        raise TypeError("`validation` must be 'auto', a fraction, a list of sections or None, got a boolean.")
    if isinstance(value, (int, float)) and not 0 < value < 1:
        raise ValueError(f"`validation` as a fraction must be in (0, 1), got {value}.")


def _fit_parameters() -> list[str]:
    """tl.fit's own parameters (read once from the function itself: a test may replace the module's `fit`)."""
    global _FIT_PARAMETERS
    if _FIT_PARAMETERS is None:
        import inspect

        _FIT_PARAMETERS = [p for p in inspect.signature(_FIT).parameters if p != "trainer_kwargs"]
    return list(_FIT_PARAMETERS)


_FIT_PARAMETERS: list[str] | None = None


def _same_section(a: AnnData, b: AnnData) -> bool:
    """The same object, or a copy of the same section (same spot names at the same coordinates)."""
    if a is b:
        return True
    if a.n_obs != b.n_obs or set(a.obs_names) != set(b.obs_names):
        return False
    order = b.obs_names.get_indexer(a.obs_names)  # Visium barcodes repeat across sections: compare positions too
    xy_a, xy_b = a.obsm.get(Keys.SPATIAL), b.obsm.get(Keys.SPATIAL)
    if xy_a is not None and xy_b is not None and not np.array_equal(np.asarray(xy_a), np.asarray(xy_b)[order]):
        return False
    if a.n_vars != b.n_vars or not a.var_names.equals(b.var_names) or a.X is None or b.X is None:
        return a.X is None and b.X is None and a.var_names.equals(b.var_names)
    x_a, x_b = a.X, b.X[order]  # and the measurements: simulated sections share names and layouts
    if sparse.issparse(x_a) or sparse.issparse(x_b):
        return bool((sparse.csr_matrix(x_a) != sparse.csr_matrix(x_b)).nnz == 0)
    return bool(np.array_equal(np.asarray(x_a), np.asarray(x_b), equal_nan=True))


def _name(a: AnnData, i: int) -> str:
    return str(a.obs[Keys.SECTION].iloc[0]) if Keys.SECTION in a.obs else f"slide{i}"


def _check_fraction(value: Any, name: str) -> float | tuple[float, float]:
    if isinstance(value, (tuple, list)):
        if len(value) != 2 or not 0 < value[0] <= value[1] < 1:
            raise ValueError(f"`{name}` as a range must be (low, high) with 0 < low <= high < 1, got {value}.")
        return (float(value[0]), float(value[1]))
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < 1:
        raise ValueError(f"`{name}` must be a number in (0, 1) or a (low, high) range, got {value!r}.")
    return float(value)


@inject_docs
def fit(
    adatas: AnnData | SpatialData | Sequence[AnnData | SpatialData],
    *,
    variant: Literal["adaptive", "propagated", "paper"] | None = None,
    config: ModelConfig | Mapping[str, Any] | None = None,
    genes: Sequence[str] | None = None,
    layer: str | None = None,
    use_rep: str = "X_uni",
    hypergraph_key: str = "phg2st",
    prompt_fraction: float | tuple[float, float] | None = None,
    validation: Literal["auto"] | float | Sequence[AnnData] | None = "auto",
    max_epochs: int | None = None,
    lr: float = 1e-4,
    step_size: int = 50,
    gamma: float = 0.9,
    patience: int = 20,
    seed: int = 0,
    n_networks: int = 1,
    accelerator: str = "auto",
    checkpoint_dir: str | os.PathLike | None = None,
    resume: bool | str | os.PathLike = False,
    table_key: str | None = None,
    **trainer_kwargs: Any,
) -> PHG2ST:
    """Train a PHG2ST model on sections with measured expression.

    Each training step takes one section, draws a fresh random prompt mask (``prompt_fraction`` of its spots,
    or a fraction drawn from a range), gives the model the prompts' expression and the whole section's image
    features and hypergraphs, and scores the predictions on the spots that were not prompts (the loss of eq. 7-10
    of the paper, restricted to non-prompt spots, so copying prompts earns nothing). Adam with StepLR.
    Model selection and early stopping use the validation PCC on held-out spots, never on data to be scored later.

    Parameters
    ----------
    adatas
        Training sections: AnnData (one section each) or SpatialData (every table, or ``table_key``), alone or in
        a list. Each needs ``obsm[use_rep]`` (and its neighbour tiles) from :func:`phg2st_sc.pp.embed_tiles`, the
        hypergraphs of :func:`phg2st_sc.pp.build_hypergraph`, ``obsm['spatial']`` and normalised expression
        (e.g. from :func:`phg2st_sc.tl.prepare_targets`).
    variant
        ``"adaptive"`` (the default; chosen by the development protocol's rule, docs/benchmarks.md: never below
        its network on her2st and MOB, random and block prompts, raw and smoothed targets): the ``"propagated"``
        network (every spot attends to its nearest prompts and refines the interpolated prompt field), its
        prediction adapted to each section through the section's own prompts when imputing (regression kriging of the network's cross-fitted residuals with a
        kernel fitted per section, the kriging of the prompts alone with that kernel and with one no shorter than the prompts' spacing, inverse-distance weighting, a ridge on the network's latent tokens and the
        image features, the kriging of the genes' 3 leading shared patterns (of the expression and of the residuals), and a non-negative combination of these and the network chosen on 5-fold cross-fitted
        predictions at the prompts, kept only where it clearly beats its best component; see the design notes and
        the benchmarks). ``"propagated"``: that network alone. ``"paper"``: the published design, where a prompt informs only itself (see
        the design notes). A shortcut for ``config``'s field of that name.
    config
        The architecture: a :class:`~phg2st_sc.tl.ModelConfig` or a dict of some of its fields (token size, heads,
        depths, dropout, attention window, and the switches for ablations: no spot branch, no neighbour branch,
        image only with ``use_prompts=False``, prompts only with ``use_image=False``); ``None`` keeps the defaults.
        Architecture fields given directly as keywords (``hidden=128``, as before) still work, with a
        ``DeprecationWarning``.
    genes
        Genes to predict; defaults to those shared by all sections, in the first section's order.
    layer
        Expression layer; ``None`` uses ``.X``.
    use_rep
        ``obsm`` key of the tile embeddings.
    hypergraph_key
        ``key_added`` of :func:`phg2st_sc.pp.build_hypergraph`.
    prompt_fraction
        Fraction of spots given as prompts in training, or a ``(low, high)`` range sampled per step. ``None`` (the
        default): the variant's, the setting of every benchmark figure: ``(0.05, 0.3)`` for ``"adaptive"`` and
        ``"propagated"`` (it covers the 10% used at test time), ``0.3`` for ``"paper"`` (the paper's).
    validation
        ``"auto"``: with three or more sections the last one is held out as the validation section, otherwise
        10% of each section's spots. A number: that fraction of each training section's spots held out of
        training (never prompts, never in the loss). A list of sections: held out entirely. ``None``: no
        validation, the last epoch is kept. Validation prompts are 10% of the other spots, fixed. Prefer held-out
        sections: spots held out of a training section sit next to training spots (and, with smoothed targets,
        share their values), which rewards memorising the section rather than generalising to new ones.
    max_epochs
        Upper bound of epochs (one epoch = every training section once). ``None`` (the default): the variant's,
        the setting of every accuracy figure of the adaptive variant: 100 for ``"adaptive"`` and ``"propagated"``,
        200 for ``"paper"`` (the paper's).
    lr, step_size, gamma
        Adam learning rate and its StepLR schedule (multiplied by ``gamma`` every ``step_size`` epochs).
    patience
        Epochs without a better validation PCC before stopping.
    seed
        Seeds weights, prompt draws and the validation split: the same seed gives the same model on the CPU.
    n_networks
        Networks to train, with seeds ``seed``, ``seed + 1``, ...; each is the model that ``fit`` with that seed
        returns, and their predictions (and, for the in-context layer, their cross-fitted predictions at the
        prompts) are averaged, the latent tokens taken from the first. Training and prediction take ``n_networks``
        times as long (the networks are trained one after another, each as ``fit`` would; several ``devices`` are
        not tested with it). Measured on her2st C2-C6 and MOB1-4, leave one section out, random prompts at 10% and
        20%, both targets (docs/benchmarks.md, "Option: several networks averaged"): three networks add +0.0025 PCC
        to the adaptive variant on average over the 8 cells, -0.0013 to +0.0058 per cell, so it is an option, not
        the default. Not with ``checkpoint_dir``, ``resume``, ``callbacks`` or ``logger``.
    accelerator
        Lightning's ``"auto"``, ``"cpu"``, ``"gpu"``, ``"mps"``. Several ``devices`` (a ``lightning.Trainer``
        keyword, below) or ``num_nodes`` run data-parallel (``strategy="ddp"``), one section per step and process.
    checkpoint_dir
        Folder for training checkpoints: after every epoch a complete checkpoint (weights, optimiser and schedule,
        random generators, history) is written atomically to ``last.ckpt`` and, with a validation set, the best
        epoch's to ``best-epoch=N.ckpt``. They stay there after training. ``None`` keeps them in a temporary folder.
        With several nodes it must be a folder that every node sees.
    resume
        Continue an interrupted run: ``True`` resumes from ``checkpoint_dir/last.ckpt`` when it exists and starts
        afresh otherwise (so a cluster job can always pass it); a path resumes from that checkpoint file, and the
        run goes on in its folder. Pass the same sections and arguments as the interrupted call (checked, data
        included; ``max_epochs``, ``patience`` and the accelerator may change): in one process the resumed run ends
        with the same weights as one that was never interrupted (with several processes, DDP, each process's
        dropout draws are not restored exactly). A run that early stopping had ended stays ended. The folder may be
        moved or copied between runs. Checkpoints are read with ``weights_only=True``.
    {table_key}
    **trainer_kwargs
        Passed to ``lightning.Trainer`` (e.g. ``devices``, ``strategy``, ``num_nodes``, ``precision``); ``callbacks`` are added
        to the package's own (history, checkpoints, early stopping).

    Returns
    -------
    The trained :class:`phg2st_sc.PHG2ST`, with ``history_`` (loss and validation PCC per epoch of the first network)
    and, with ``n_networks > 1``, the further networks in ``members`` and ``training['networks']`` (each one's seed,
    epochs and best validation PCC).

    Raises
    ------
    TrainingDivergedError
        The loss or the weights became NaN or infinite (the message names the learning rate); no model is returned.
    KeyboardInterrupt
        On Ctrl-C, after Lightning has shut down (no model is returned; with ``checkpoint_dir`` the last complete
        epoch's checkpoint stays, and ``resume=True`` continues from it).

    Examples
    --------
    >>> model = phg2st.tl.fit([c3, c4, c5, c6], use_rep="X_efficientnet_lite0", max_epochs=100)  # doctest: +SKIP
    """
    from phg2st_sc._model import _training
    from phg2st_sc._model._config import MAX_EPOCHS, TRAINING_PROMPTS, InputSpec
    from phg2st_sc._model._inputs import library_size
    from phg2st_sc._model._model import PHG2ST

    slides = _slides(adatas, table_key)
    arch, trainer_kwargs = _architecture(variant, config, trainer_kwargs)
    variant = ModelConfig(**arch).variant
    prompt_fraction = TRAINING_PROMPTS[variant] if prompt_fraction is None else prompt_fraction
    max_epochs = MAX_EPOCHS[variant] if max_epochs is None else max_epochs
    devices = trainer_kwargs.pop("devices", "auto")
    checkpoint_dir, resume_from = _training.resume_path(checkpoint_dir, resume)
    optimiser = {"lr": lr, "step_size": step_size, "gamma": gamma}
    check_fit_settings(prompt_fraction=prompt_fraction, validation=validation, max_epochs=max_epochs, patience=patience,
                       seed=seed, n_networks=n_networks, checkpoint_dir=checkpoint_dir, resume=resume, **optimiser,
                       **trainer_kwargs)  # fmt: skip
    fraction = _check_fraction(prompt_fraction, "prompt_fraction")
    seed, max_epochs, patience = int(seed), int(max_epochs), int(patience)  # numpy ints
    optimiser["step_size"] = int(step_size)
    genes = _shared_genes(slides) if genes is None else check_gene_list(genes)
    if use_rep not in slides[0].obsm:
        raise KeyError(
            f"`adata.obsm[{use_rep!r}]` is missing: embed the tiles first (`phg2st.pp.embed_tiles`) or name the "
            f"embedding with `use_rep=` (has {list(slides[0].obsm)})."
        )
    record = input_record(slides[0], use_rep)
    spec = InputSpec(genes=genes, use_rep=use_rep, hypergraph_key=hypergraph_key, layer=layer,
                     normalization=record["normalization"], embedding=record["embedding"])  # fmt: skip
    import torch

    torch.manual_seed(seed)  # the initial weights
    features = int(np.asarray(slides[0].obsm[use_rep]).shape[1])
    model = PHG2ST(ModelConfig(n_genes=len(genes), feature_dim=features, **arch), genes, spec)
    tensors = [model.tensors(a, name=_name(a, i)) for i, a in enumerate(slides)]  # validates every section first
    small = [s.name for s in tensors if s.n < 10]
    if small:
        raise ValueError(f"Sections {small} have fewer than 10 spots: too few to draw prompts and score the rest.")
    spec.spot_pitch = float(np.median([spot_pitch(np.asarray(a.obsm[Keys.SPATIAL], dtype=float)) for a in slides]))
    norm = spec.normalization  # the scale of the targets, which impute compares its prompts' with
    norm["library_size"] = library_size(
        np.concatenate([s.y.numpy() for s in tensors]), bool(norm.get("log1p")), norm.get("log1p_base")
    )
    held_out = None
    if validation is not None and not isinstance(validation, (str, int, float)):
        held_out = [model.tensors(a, name=_name(a, i)) for i, a in enumerate(_held_out(validation, slides, table_key))]
    tensors, val_items, mode = _training.split_validation(tensors, validation, held_out, np.random.default_rng(seed))
    _training.init_head_bias(model, tensors)
    recorded = list(fraction) if isinstance(fraction, tuple) else fraction  # as a saved and loaded model has it
    model.training.update({"variant": model.config["variant"], "prompt_fraction": recorded, "validation": mode,
                           "seed": seed, "lr": lr, "max_epochs": max_epochs,
                           "training_sections": [s.name for s in tensors]})  # fmt: skip
    _training.check_training_memory(model, tensors, accelerator)
    fingerprint = _training.run_fingerprint(model, tensors, val_items, trainer_kwargs, **optimiser)
    if resume_from is not None:
        _training.check_resumable(resume_from, fingerprint)
    logger.info("Training PHG2ST (%s) on %d sections, %d genes; validation: %s.", model.config["variant"],
                len(tensors), len(genes), mode)  # fmt: skip
    n_networks = int(n_networks)
    if n_networks > 1:
        logger.info("Training network 1 of %d (seed %d).", n_networks, seed)
    model.train(
        tensors, val_items, prompt_fraction=fraction, max_epochs=max_epochs, **optimiser, patience=patience,
        seed=seed, accelerator=accelerator, devices=devices, progress=settings.progress,
        checkpoint_dir=checkpoint_dir, resume_from=resume_from, fingerprint=fingerprint, **trainer_kwargs,
    )  # fmt: skip
    if n_networks > 1:
        runs = [_network_record(model.training, seed)]
        for extra in range(seed + 1, seed + n_networks):
            logger.info("Training network %d of %d (seed %d).", extra - seed + 1, n_networks, extra)
            member = fit(
                slides, config=arch, genes=genes, layer=layer, use_rep=use_rep, hypergraph_key=hypergraph_key,
                prompt_fraction=prompt_fraction, validation=validation, max_epochs=max_epochs, lr=lr,
                step_size=step_size, gamma=gamma, patience=patience, seed=extra, accelerator=accelerator,
                table_key=table_key, devices=devices, **trainer_kwargs,
            )  # fmt: skip
            model.members.append(member.module)
            runs.append(_network_record(member.training, extra))
        model.training["networks"] = runs
    return model


def _network_record(training: dict[str, Any], seed: int) -> dict[str, Any]:
    """One network's seed, epochs trained and best validation PCC (``training['networks']``)."""
    return {"seed": seed, "epochs_trained": training.get("epochs_trained"),
            "best_epoch_val_pcc": training.get("best_epoch_val_pcc")}  # fmt: skip


def _architecture(
    variant: str | None, config: ModelConfig | Mapping[str, Any] | None, kwargs: dict[str, Any]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The architecture fields from ``variant``, ``config`` and deprecated flat keywords; the Trainer's keywords."""
    from phg2st_sc._model._config import ARCHITECTURE, architecture

    flat = {k: kwargs[k] for k in ARCHITECTURE if k in kwargs}
    if flat:
        warnings.warn(
            f"Architecture settings as keywords of `tl.fit` ({sorted(flat)}) are deprecated: pass "
            f"`config={flat!r}` (or a `phg2st.tl.ModelConfig`). They will be removed in the next release.",
            DeprecationWarning, stacklevel=3,
        )  # fmt: skip
    if variant is not None:
        given = architecture(config).get("variant") if config is not None else None
        if given is not None and given != variant:
            raise ValueError(f"`variant={variant!r}` contradicts `config`'s variant {given!r}: give one.")
        flat.setdefault("variant", variant)
    arch = architecture(config, **flat)
    return arch, {k: v for k, v in kwargs.items() if k not in flat}


def _shared_genes(slides: list[AnnData]) -> list[str]:
    shared = slides[0].var_names
    for a in slides[1:]:
        shared = shared.intersection(a.var_names, sort=False)
    if shared.empty:
        raise ValueError("The training sections share no gene.")
    return list(shared)


def _held_out(validation: Any, slides: list[AnnData], table_key: str | None) -> list[AnnData]:
    """The sections given for validation, none of which may be a training section."""
    held_out = _slides(validation, table_key)
    for a in held_out:
        if any(_same_section(a, t) for t in slides):
            raise ValueError("A validation section is also a training section; hold out a different section.")
    return held_out


@inject_docs
def impute(
    adata: AnnData | SpatialData,
    model: PHG2ST,
    *,
    prompt_key: str = Keys.PROMPT,
    layer_added: str = Keys.PHG2ST,
    keep_prompts: bool = True,
    latent_key: str = "X_phg2st",
    in_context: bool = True,
    uncertainty: bool | None = None,
    coverage: float = 0.9,
    device: str = "cpu",
    table_key: str | None = None,
    overwrite: bool = False,
    copy: bool = False,
) -> AnnData | None:
    """Predict expression at every spot of a section from its image and its prompt spots.

    The spots marked in ``obs[prompt_key]`` are the prompts: their measured values (read from the layer the model
    was trained on) are given to the model; every spot gets a prediction. The other spots' expression is never
    read and may be missing (NaN). Works on sections and patients the model never saw.

    Before predicting, the section is checked against what the model recorded of its training data
    (:meth:`phg2st_sc.PHG2ST.check_input`): expression prepared with the same normalisation (made by
    ``tl.prepare_targets(adata, model)`` from raw counts) and features from the same encoder and tile geometry.
    A mismatch raises :class:`~phg2st_sc.InputMismatchError` naming the fix; predictions that are not finite
    raise :class:`~phg2st_sc.TrainingDivergedError`. Nothing is written in either case.

    Parameters
    ----------
    {adata}
        Its genes must be the model's (``phg2st.pp.select_genes(adata, model.genes)``), with the same
        normalisation, embedding and hypergraph slots as in training.
    model
        A trained :class:`phg2st_sc.PHG2ST`.
    prompt_key
        Boolean ``obs`` column marking the measured prompt spots.
    layer_added
        Layer to write the predictions to.
    keep_prompts
        Prompt spots keep their measured values (otherwise they get the model's prediction too).
    latent_key
        ``obsm`` key of the fused latent tokens.
    in_context
        For the ``"adaptive"`` variant: adapt the image network to this section through its prompts (regression
        kriging of the network's residuals, an in-section ridge and their combination, all fitted on the prompts;
        the choice is recorded in ``uns``; its cross-fitting folds are dealt over the spots' names, so that the order
        in which the spots are listed changes nothing but rounding). Where the prompts are spread far more evenly
        than a random draw (a
        design of :func:`~phg2st_sc.tl.design_prompts`), the ridge is left out of the combination (see the design
        notes). ``False`` gives the network alone (an ablation). Other variants ignore it.
    uncertainty
        Write a predictive standard deviation and split-conformal intervals per spot and gene, calibrated on this
        section's prompts (their cross-fitted errors; see the design notes). A gene's standard deviation is its
        scale times the spot's: the kriging standard deviation (larger far from the prompts) times a factor read
        from the spot's predicted level (spots predicted low across their genes, often few counts, are noisier on
        unsmoothed targets). Needs the ``"adaptive"`` variant with
        ``in_context`` and at least 10 prompts. ``None`` (the default): where that holds; ``True``: required (an
        error otherwise, nothing written); ``False``: never. The intervals assume the prompts are a random sample
        of the spots; for prompts in blocks they are not calibrated.
    coverage
        Nominal coverage of the intervals, in (0, 1).
    device
        Torch device for the forward pass: ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"``, or ``"auto"`` (CUDA, then
        MPS, then the CPU). A device this machine does not have raises ``ValueError`` before any work.
    {table_key}
    {overwrite}
    {copy}

    Returns
    -------
    {returns_copy}

    ``.layers['{{layer_added}}']``
        Predicted expression (float32), genes in ``var`` order.
    ``.obsm['X_phg2st']``
        (n, hidden) latent representation (under ``latent_key``).
    ``.uns['{{layer_added}}']['params']``
        Model variant, prompt key and count, whether prompts kept their values, the number of networks averaged
        (``n_networks``, :func:`fit`'s); for the adaptive variant,
        ``in_context``: the combination weights, kernel and ridge penalty chosen on this section's prompts, the
        cross-fitted PCC of each component and of the combination over the prompts (``cv_pcc``) and what was kept
        (``cv_pcc['kept']``: ``"combination"`` or one component; ``cv_pcc['inflating']``: the components left out for
        inflating the combination at the spots, comma-separated, where any; the cross-fitted PCCs are then those of
        the refit), the prompts' spread (``cv_pcc['spread_ratio']``),
        whether the ridge was left out for it (``cv_pcc['ridge_left_out']``) and the one scale of the kept weights,
        shared by the genes (``cv_pcc['scale']``: the least-absolute-deviations slope of the prompts on the kept
        combination's cross-fitted prediction, within 1-2; the weights given include it; absent with too few prompts
        for the layer, where the network alone is used); with uncertainty,
        ``uncertainty``: the coverage and the conformal quantiles at 50, 80, 90 and 95% (``quantiles``; an interval of that coverage is the
        prediction ± quantile x standard deviation).
    ``.layers['{{layer_added}}_std']``, ``.layers['{{layer_added}}_lo']``, ``.layers['{{layer_added}}_hi']``
        With uncertainty: the predictive standard deviation and the interval's bounds (float32); at prompts that
        keep their measured values, 0 and the value itself.
    ``.obs['{{layer_added}}_std_mean']``
        With uncertainty: each spot's mean standard deviation over genes.

    Examples
    --------
    >>> phg2st.tl.select_prompts(c2, fraction=0.1)  # doctest: +SKIP
    >>> phg2st.tl.impute(c2, model)  # doctest: +SKIP
    """
    from phg2st_sc._model._model import PHG2ST

    table = get_table(adata, table_key)
    check_nonempty(table)
    check_unique_names(table)
    if not isinstance(model, PHG2ST):
        raise TypeError(f"`model` must be a trained phg2st_sc.PHG2ST, got {type(model).__name__}.")
    model.check_input(table)  # how the data were prepared; the prompt values' scale is checked below
    prompts = get_prompt_mask(table, prompt_key)
    if prompts.all():
        raise ValueError(f"`adata.obs[{prompt_key!r}]` marks every spot as a prompt: nothing is left to predict.")
    missing = [g for g in model.genes if g not in table.var_names]
    if missing:
        raise ValueError(
            f"{len(missing)} of the model's {len(model.genes)} genes are absent from the data (e.g. {missing[:5]}); "
            "the model was trained for other genes."
        )
    if table.n_vars != len(model.genes):
        raise ValueError(
            f"The data has {table.n_vars} genes and the model predicts {len(model.genes)}: subset first with "
            "`phg2st.pp.select_genes(adata, model.genes)` (a layer must cover every gene of `var`)."
        )
    for name, key in (("layer_added", layer_added), ("latent_key", latent_key)):
        if not isinstance(key, str) or not key:
            raise TypeError(f"`{name}` must be a non-empty string, got {key!r}.")
    slots = {
        ("layers", layer_added): "layer_added",
        ("obsm", latent_key): "latent_key",
        ("uns", layer_added): "layer_added",
    }
    want = _check_uncertainty(model, uncertainty, coverage, in_context, int(prompts.sum()))
    if want:
        slots |= {(slot, Keys.uncertainty(layer_added, part)): "layer_added"
                  for slot, part in (("layers", "std"), ("layers", "lo"), ("layers", "hi"), ("obs", "std_mean"))}  # fmt: skip
    check_slots(table, slots, overwrite=overwrite, writer="tl.impute")
    model.check_input(table, prompts)
    pred, latent = model.predict(table, prompts, device=device, network_only=not in_context)
    order = [model.genes.index(g) for g in table.var_names]
    if order != list(range(len(order))):  # (a slide's prediction is large: no copy when the genes are in order)
        pred = pred[:, order]
    if keep_prompts:  # the values the model read (its layer, float32), at the prompts only; genes in `var` order
        values = table.X if model.input.layer is None else table.layers[model.input.layer]
        pred[prompts] = as_dense(values[np.flatnonzero(prompts)], dtype=np.float32)
    params = {"variant": model.config["variant"], "prompt_key": prompt_key, "n_prompts": int(prompts.sum()),
              "keep_prompts": keep_prompts, "use_rep": model.input.use_rep,
              "layer": model.input.layer or "X", "prompts": prompt_fingerprint(prompts),
              "n_networks": 1 + len(model.members)}  # fmt: skip
    if model.in_context_ is not None:
        params["in_context"] = model.in_context_
    writes = {
        ("layers", layer_added): np.asarray(pred, dtype=np.float32),
        ("obsm", latent_key): latent,
        ("uns", layer_added): {"params": params},
    }
    if want:
        if model.spread_ is None:  # (checked above; a guard against a layer that chose not to calibrate)
            raise RuntimeError("The in-context layer returned no spread; nothing was written.")
        writes |= _uncertainty_slots(
            model.spread_, pred, order, prompts if keep_prompts else None, layer_added, coverage
        )
        params["uncertainty"] = {
            "coverage": coverage, "method": "split conformal on 5-fold cross-fitted prompt errors",
            "quantiles": {str(level): model.spread_.quantile(level) for level in QUANTILE_LEVELS},
        }  # fmt: skip
    return write_slots(table, writes, copy=copy, overwrite=overwrite, names=slots, writer="tl.impute")


#: Coverage levels whose conformal quantiles ``tl.impute`` records (interval = prediction ± quantile x std).
QUANTILE_LEVELS = (0.5, 0.8, 0.9, 0.95)


def _check_uncertainty(model: Any, uncertainty: bool | None, coverage: float, in_context: bool, n_prompts: int) -> bool:
    """Whether ``tl.impute`` writes uncertainty; raises where it was required and cannot be given."""
    from phg2st_sc._model._incontext import MIN_PROMPTS

    if uncertainty not in (None, True, False):
        raise TypeError(f"`uncertainty` must be True, False or None, got {uncertainty!r}.")
    if isinstance(coverage, bool) or not isinstance(coverage, (int, float)) or not 0.0 < float(coverage) < 1.0:
        raise ValueError(f"`coverage` must be a number strictly between 0 and 1, got {coverage!r}.")
    reasons = []
    if model.config["variant"] != "adaptive":
        reasons.append(f"the model's variant is {model.config['variant']!r} (uncertainty needs 'adaptive')")
    if not in_context:
        reasons.append("`in_context=False`")
    if n_prompts < MIN_PROMPTS:
        reasons.append(f"{n_prompts} prompts (at least {MIN_PROMPTS} are needed to calibrate)")
    if uncertainty and reasons:
        raise ValueError("`uncertainty=True` cannot be given here: " + "; ".join(reasons) + ". Nothing was written.")
    return uncertainty is not False and not reasons


def _uncertainty_slots(
    spread: Any, pred: np.ndarray, order: list[int], prompts: np.ndarray | None, layer: str, coverage: float
) -> dict[tuple[str, str], Any]:
    """The standard deviation, interval bounds and per-spot summary, genes in ``var`` order."""
    std = spread.std()
    if order != list(range(len(order))):
        std = std[:, order]
    if prompts is not None:  # measured values are what is given there
        std[prompts] = 0.0
    q = spread.quantile(coverage)  # the half width is q x std (Spread.half_width), formed in place for each bound
    lo, hi = std * np.float32(-q), std * np.float32(q)
    lo += pred
    hi += pred
    return {
        ("layers", Keys.uncertainty(layer, "std")): std,
        ("layers", Keys.uncertainty(layer, "lo")): lo,
        ("layers", Keys.uncertainty(layer, "hi")): hi,
        ("obs", Keys.uncertainty(layer, "std_mean")): std.mean(1),
    }


_FIT = fit  # the function itself, for `_fit_parameters`
