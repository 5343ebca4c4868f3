"""`tl.fit` and `tl.impute`: train the PHG2ST model on sections and fill a section from its prompts."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from anndata import AnnData
from scipy import sparse

from phg2st_sc._constants import Keys
from phg2st_sc._docs import inject_docs
from phg2st_sc._model._inputs import input_record
from phg2st_sc._settings import settings
from phg2st_sc._utils import _is_spatialdata, check_slots, finish, get_table
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

VAL_PROMPT_FRACTION = 0.1  # validation prompts at the test-time fraction


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


#: The architecture settings among tl.fit's arguments (the fields of ModelConfig that the data do not decide).
ARCHITECTURE = ("variant", "hidden", "heads", "spot_depth", "neighbour_depth", "dropout", "use_spot_branch",
                "use_neighbour_branch", "use_prompts", "use_image", "attention_window")  # fmt: skip


def check_fit_settings(**settings: Any) -> None:
    """Check :func:`fit`'s settings that need no data, before any work (``phg2st fit`` checks ``--fit`` with it).

    Settings that are not :func:`fit`'s own must be ``lightning.Trainer`` parameters; a typo is refused with a
    suggestion.
    """
    from phg2st_sc._model._module import ModelConfig

    own = _fit_parameters()
    check_trainer_kwargs({k: v for k, v in settings.items() if k not in own}, own=own)
    checks = {
        "prompt_fraction": lambda v: _check_fraction(v, "prompt_fraction"),
        "validation": _check_validation,
        "max_epochs": lambda v: check_positive_int(v, "max_epochs"),
        "lr": lambda v: check_positive_real(v, "lr"),
        "step_size": lambda v: check_positive_int(v, "step_size"),
        "gamma": lambda v: check_positive_real(v, "gamma", maximum=1.0),
        "patience": lambda v: check_positive_int(v, "patience", minimum=0),
        "seed": check_seed,
    }
    for key, check in checks.items():
        if key in settings:
            check(settings[key])
    arch = {k: settings[k] for k in ARCHITECTURE if k in settings}
    ModelConfig(n_genes=1, feature_dim=1, **arch)  # checks every architecture value
    if "use_image" in arch or "use_prompts" in arch:
        if not arch.get("use_image", True) and not arch.get("use_prompts", True):
            raise ValueError("With neither the image nor the prompts the model has no input.")
        if arch.get("variant", "propagated") == "paper" and not arch.get("use_image", True):
            raise ValueError("The paper's variant reads the prompts only through the image branches; `use_image=False` "
                             "leaves it without input. Use `variant='propagated'` for a prompts-only model.")  # fmt: skip
    if settings.get("checkpoint_dir") is not None and settings.get("enable_checkpointing") is False:
        raise ValueError(
            "`checkpoint_dir` asks for checkpoints and `enable_checkpointing=False` forbids them: drop one."
        )


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
    variant: Literal["propagated", "paper"] = "propagated",
    genes: Sequence[str] | None = None,
    layer: str | None = None,
    use_rep: str = "X_uni",
    hypergraph_key: str = "phg2st",
    prompt_fraction: float | tuple[float, float] = 0.3,
    validation: Literal["auto"] | float | Sequence[AnnData] | None = "auto",
    max_epochs: int = 200,
    lr: float = 1e-4,
    step_size: int = 50,
    gamma: float = 0.9,
    patience: int = 20,
    hidden: int = 256,
    heads: int = 4,
    spot_depth: int = 2,
    neighbour_depth: int = 1,
    dropout: float = 0.1,
    use_spot_branch: bool = True,
    use_neighbour_branch: bool = True,
    use_prompts: bool = True,
    use_image: bool = True,
    attention_window: int = 1024,
    seed: int = 0,
    accelerator: str = "auto",
    devices: int | str | Sequence[int] = "auto",
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
        ``"propagated"`` (default): every spot attends to its nearest prompts and refines the interpolated prompt
        field. ``"paper"``: the published design, where a prompt informs only itself (see the design notes).
    genes
        Genes to predict; defaults to those shared by all sections, in the first section's order.
    layer
        Expression layer; ``None`` uses ``.X``.
    use_rep
        ``obsm`` key of the tile embeddings.
    hypergraph_key
        ``key_added`` of :func:`phg2st_sc.pp.build_hypergraph`.
    prompt_fraction
        Fraction of spots given as prompts in training, or a ``(low, high)`` range sampled per step.
    validation
        ``"auto"``: with three or more sections the last one is held out as the validation section, otherwise
        10% of each section's spots. A number: that fraction of each training section's spots held out of
        training (never prompts, never in the loss). A list of sections: held out entirely. ``None``: no
        validation, the last epoch is kept. Validation prompts are 10% of the other spots, fixed. Prefer held-out
        sections: spots held out of a training section sit next to training spots (and, with smoothed targets,
        share their values), which rewards memorising the section rather than generalising to new ones.
    max_epochs
        Upper bound of epochs (one epoch = every training section once).
    lr, step_size, gamma
        Adam learning rate and its StepLR schedule (multiplied by ``gamma`` every ``step_size`` epochs).
    patience
        Epochs without a better validation PCC before stopping.
    hidden, heads, spot_depth, neighbour_depth, dropout
        Token size, attention heads, transformer blocks of the spot and neighbour branches, dropout.
    use_spot_branch, use_neighbour_branch, use_prompts, use_image
        Switch parts off for ablations (no spot branch, no neighbour branch, image only, prompts only).
    attention_window
        Sections with more spots than this run the spot transformer within spatial windows of this many spots
        (alternating row and column bands), so memory grows linearly with the number of spots instead of
        quadratically; smaller sections get full attention. See the benchmarks page for its effect on accuracy.
    seed
        Seeds weights, prompt draws and the validation split: the same seed gives the same model on the CPU.
    accelerator, devices
        Lightning's ``"auto"``, ``"cpu"``, ``"gpu"``, ``"mps"``, and device counts; several devices or
        ``num_nodes`` run data-parallel (``strategy="ddp"``), one section per step and process.
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
        Passed to ``lightning.Trainer`` (e.g. ``strategy``, ``num_nodes``, ``precision``); ``callbacks`` are added
        to the package's own (history, checkpoints, early stopping).

    Returns
    -------
    The trained :class:`phg2st_sc.PHG2ST`, with ``history_`` (loss and validation PCC per epoch).

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
    from phg2st_sc._model._inputs import library_size
    from phg2st_sc._model._model import PHG2ST
    from phg2st_sc._model._module import ModelConfig

    slides = _slides(adatas, table_key)
    checkpoint_dir, resume_from = _resume_path(checkpoint_dir, resume)
    check_fit_settings(
        variant=variant, prompt_fraction=prompt_fraction, validation=validation, max_epochs=max_epochs, lr=lr,
        step_size=step_size, gamma=gamma, patience=patience, seed=seed, hidden=hidden, heads=heads,
        spot_depth=spot_depth, neighbour_depth=neighbour_depth, dropout=dropout, use_spot_branch=use_spot_branch,
        use_neighbour_branch=use_neighbour_branch, use_prompts=use_prompts, use_image=use_image,
        attention_window=attention_window, checkpoint_dir=checkpoint_dir, **trainer_kwargs,
    )  # fmt: skip
    fraction = _check_fraction(prompt_fraction, "prompt_fraction")
    seed, max_epochs, step_size, patience = int(seed), int(max_epochs), int(step_size), int(patience)  # numpy ints
    if genes is None:
        shared = slides[0].var_names
        for a in slides[1:]:
            shared = shared.intersection(a.var_names, sort=False)
        genes = list(shared)
        if not genes:
            raise ValueError("The training sections share no gene.")
    else:
        genes = check_gene_list(genes)
    first = slides[0]
    if use_rep not in first.obsm:
        raise KeyError(
            f"`adata.obsm[{use_rep!r}]` is missing: embed the tiles first (`phg2st.pp.embed_tiles`) or name the "
            f"embedding with `use_rep=` (has {list(first.obsm)})."
        )
    config = ModelConfig(
        n_genes=len(genes), feature_dim=int(np.asarray(first.obsm[use_rep]).shape[1]), variant=variant, hidden=hidden,
        heads=heads, spot_depth=spot_depth, neighbour_depth=neighbour_depth, dropout=dropout,
        use_spot_branch=use_spot_branch, use_neighbour_branch=use_neighbour_branch, use_prompts=use_prompts,
        use_image=use_image, attention_window=attention_window,
    )  # fmt: skip
    info = {"use_rep": use_rep, "hypergraph_key": hypergraph_key, "layer": layer, **input_record(first, use_rep)}
    import torch

    torch.manual_seed(seed)  # the initial weights
    model = PHG2ST(config, genes, info)
    tensors = [model.slide(a, name=_name(a, i)) for i, a in enumerate(slides)]  # validates every section first
    small = [s.name for s in tensors if s.n < 10]
    if small:
        raise ValueError(f"Sections {small} have fewer than 10 spots: too few to draw prompts and score the rest.")
    norm = model.info["normalization"]  # the scale of the targets, which impute compares its prompts' with
    norm["library_size"] = library_size(
        np.concatenate([s.y.numpy() for s in tensors]), bool(norm.get("log1p")), norm.get("log1p_base")
    )

    rng = np.random.default_rng(seed)
    if isinstance(validation, str):  # "auto" (checked above)
        if len(slides) >= 3:
            validation, slides, tensors = [slides[-1]], slides[:-1], tensors[:-1]
        else:
            validation = 0.1
    val_items = None
    if isinstance(validation, (int, float)) and not isinstance(validation, bool):
        if not 0 < validation < 1:
            raise ValueError(f"`validation` as a fraction must be in (0, 1), got {validation}.")
        val_items = []
        for s in tensors:
            held = np.zeros(s.n, dtype=bool)
            held[rng.choice(s.n, size=max(2, round(validation * s.n)), replace=False)] = True
            if s.n - held.sum() < 3:
                raise ValueError(f"Section {s.name} has too few spots ({s.n}) for a validation split.")
            s.trainable = ~held
            prompts = _draw(~held, VAL_PROMPT_FRACTION, rng)
            val_items.append((s, prompts, held))
        mode = f"{validation:.0%} of each training section's spots"
    elif validation is not None:
        held_out = _slides(validation, table_key)
        for a in held_out:
            if any(_same_section(a, t) for t in slides):
                raise ValueError("A validation section is also a training section; hold out a different section.")
        val_items = []
        for i, a in enumerate(held_out):
            s = model.slide(a, name=_name(a, i))
            prompts = _draw(np.ones(s.n, dtype=bool), VAL_PROMPT_FRACTION, rng)
            val_items.append((s, prompts, ~prompts))
        mode = f"{len(held_out)} held-out sections"
    else:
        mode = "none"
    if variant == "paper" or not use_prompts:
        # Without a prompt field the heads must learn each gene's level from zero: start them at the mean of the
        # training spots (validation spots excluded).
        mean = torch.cat([s.y[torch.from_numpy(s.trainable)] for s in tensors]).mean(0)
        for name in ("head", "head_spot", "head_nbr"):
            if hasattr(model.module, name):
                getattr(model.module, name).bias.data.copy_(mean)
    model.info.update(
        {
            "variant": variant,
            "prompt_fraction": fraction,
            "validation": mode,
            "seed": seed,
            "lr": lr,
            "training_sections": [s.name for s in tensors],
        }  # fmt: skip
    )
    _check_training_memory(model, tensors, accelerator)
    fingerprint = _fingerprint(model, tensors, val_items, trainer_kwargs, step_size=step_size, gamma=gamma)
    if resume_from is not None:
        from phg2st_sc._model._plan import read_checkpoint

        ckpt = read_checkpoint(resume_from, fingerprint)
        logger.info("Resuming from %s (after epoch %d).", resume_from, int(ckpt.get("epoch", -1)))
        del ckpt
    logger.info(
        "Training PHG2ST (%s) on %d sections, %d genes; validation: %s.", variant, len(tensors), len(genes), mode
    )
    model.train(
        tensors, val_items, prompt_fraction=fraction, max_epochs=max_epochs, lr=lr, step_size=step_size, gamma=gamma,
        patience=patience, seed=seed, accelerator=accelerator, devices=devices, progress=settings.progress,
        checkpoint_dir=checkpoint_dir, resume_from=resume_from, fingerprint=fingerprint, **trainer_kwargs,
    )  # fmt: skip
    return model


def _check_training_memory(model: PHG2ST, tensors: list, accelerator: str) -> None:
    """Refuse a CPU run whose attention maps cannot fit in memory, before any training starts.

    On a GPU nothing is checked (CUDA's fused attention kernels do not store the maps), and CUDA is not
    initialised here, so that Lightning's fork-based strategies still work from a notebook.
    """
    import torch

    from phg2st_sc._model._plan import check_attention_memory

    if accelerator != "cpu" and (accelerator != "auto" or torch.cuda.is_available()):
        return
    largest = max(tensors, key=lambda s: s.n)
    check_attention_memory(largest.n, model.config, training=True, name=largest.name)


def _resume_path(
    checkpoint_dir: str | os.PathLike | None, resume: bool | str | os.PathLike
) -> tuple[Path | None, Path | None]:
    """The checkpoint folder and the checkpoint to resume from (``None`` for a fresh run).

    Refuses to mix a fresh run into old checkpoints.
    """
    folder = Path(checkpoint_dir).expanduser() if checkpoint_dir is not None else None
    if folder is not None and folder.exists() and not folder.is_dir():
        raise NotADirectoryError(f"`checkpoint_dir` {folder} is a file; give a folder.")
    if isinstance(resume, bool):
        if not resume:
            if folder is not None and folder.is_dir() and any(folder.glob("*.ckpt")):
                raise FileExistsError(
                    f"{folder} holds checkpoints of an earlier run: pass `resume=True` to continue it, or choose "
                    "an empty `checkpoint_dir` for a new run."
                )
            return folder, None
        if folder is None:
            raise ValueError("`resume=True` continues from `checkpoint_dir/last.ckpt`: give `checkpoint_dir`.")
        last = folder / "last.ckpt"
        if last.is_file():
            return folder, last
        logger.info("No checkpoint in %s yet: training from the start.", folder)
        return folder, None
    if isinstance(resume, (str, os.PathLike)):
        path = Path(resume).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"No checkpoint at {path} to resume from.")
        # The run goes on in the checkpoint's folder (its best epoch's file and `last.ckpt` live there).
        if folder is not None and folder.resolve() != path.parent.resolve():
            raise ValueError(
                f"The checkpoint {path} is not in `checkpoint_dir` {folder}: leave `checkpoint_dir` out (the run "
                "continues in the checkpoint's folder) or give that folder."
            )
        return path.parent, path
    raise TypeError(f"`resume` must be True, False or a checkpoint path, got {type(resume).__name__}.")


def _fingerprint(model: PHG2ST, tensors: list, val_items: list | None, trainer_kwargs: dict, **optimiser: Any) -> str:
    """A hash of what decides a run's result, so that a checkpoint is resumed only by the run that wrote it.

    Covers the data, architecture, genes, seed, optimiser and Trainer settings; ``max_epochs``, ``patience`` and
    the accelerator may change.
    """
    import hashlib
    import json

    def plain(v: Any) -> Any:  # 7 == np.int64(7) and 1 == 1.0 for the hash
        if isinstance(v, dict):
            return {str(k): plain(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        if isinstance(v, (bool, str)) or v is None:
            return v
        try:
            return float(v)
        except (TypeError, ValueError):
            return str(v)

    data = hashlib.blake2b(digest_size=16)
    for s in tensors + [item[0] for item in val_items or []]:
        for t in (s.x, s.y, s.pos):
            data.update(t.detach().cpu().contiguous().numpy().tobytes())
    keys = ("variant", "prompt_fraction", "seed", "lr", "use_rep", "hypergraph_key", "layer", "validation")
    setup = {
        "config": model.config, "genes": model.genes, "info": {k: v for k, v in model.info.items() if k in keys},
        "sections": [(s.name, s.n) for s in tensors],
        "validation": [(s.name, int(p.sum()), int(r.sum())) for s, p, r in val_items or []],
        "data": data.hexdigest(),
        "trainer": {k: v for k, v in trainer_kwargs.items() if k not in ("callbacks", "enable_progress_bar")},
        **optimiser,
    }  # fmt: skip
    return hashlib.sha256(json.dumps(plain(setup), sort_keys=True).encode()).hexdigest()[:16]


def _draw(eligible: np.ndarray, fraction: float, rng: np.random.Generator) -> np.ndarray:
    from phg2st_sc._model._data import draw_prompts

    return draw_prompts(eligible, fraction, rng)


@inject_docs
def impute(
    adata: AnnData | SpatialData,
    model: PHG2ST,
    *,
    prompt_key: str = Keys.PROMPT,
    layer_added: str = Keys.PHG2ST,
    keep_prompts: bool = True,
    latent_key: str = "X_phg2st",
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
    device
        Torch device for the forward pass.
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
        Model variant, prompt key and count, whether prompts kept their values.

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
    check_slots(table, slots, overwrite=overwrite, writer="tl.impute")
    model.check_input(table, prompts)
    pred, latent = model.predict(table, prompts, device=device)
    order = [model.genes.index(g) for g in table.var_names]
    pred = pred[:, order]
    if keep_prompts:
        measured = model.slide(table, prompt=prompts).y.numpy()[:, order]
        pred[prompts] = measured[prompts]
    params = {"variant": model.config["variant"], "prompt_key": prompt_key, "n_prompts": int(prompts.sum()),
              "keep_prompts": keep_prompts, "use_rep": model.info["use_rep"],
              "layer": model.info.get("layer") or "X", "prompts": prompt_fingerprint(prompts)}  # fmt: skip
    writes = {
        ("layers", layer_added): pred.astype(np.float32),
        ("obsm", latent_key): latent,
        ("uns", layer_added): {"params": params},
    }
    return finish(table, writes, copy=copy, overwrite=overwrite, names=slots, writer="tl.impute")


_FIT = fit  # the function itself, for `_fit_parameters`
