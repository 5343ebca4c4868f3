"""What :func:`phg2st_sc.tl.fit` decides before training starts, one named step each.

The validation split (:func:`split_validation`), the heads' starting point (:func:`init_head_bias`), the checkpoint
to resume (:func:`resume_path`), the run's identity that a checkpoint must match (:func:`run_fingerprint`) and the
memory check before a CPU run (:func:`check_training_memory`). ``tl.fit`` only turns AnnData into these calls.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from phg2st_sc._model._data import Slide, draw_prompts

if TYPE_CHECKING:
    from phg2st_sc._model._model import PHG2ST

logger = logging.getLogger("phg2st_sc")

VAL_PROMPT_FRACTION = 0.1  # validation prompts at the test-time fraction

#: One validation item: the section's tensors, its fixed prompt mask and the spots scored.
ValItem = tuple[Slide, np.ndarray, np.ndarray]


def split_validation(
    tensors: list[Slide], validation: str | float | None, held_out: list[Slide] | None, rng: np.random.Generator
) -> tuple[list[Slide], list[ValItem] | None, str]:
    """The training sections, the validation items and a description of the split.

    ``validation``: ``"auto"`` (the last of three or more sections held out, else 10% of each section's spots), a
    fraction of each training section's spots (held out of prompts and loss through ``Slide.trainable``), or
    ``None``; ``held_out`` (tensors of sections given for validation) takes precedence. Validation prompts are
    :data:`VAL_PROMPT_FRACTION` of the eligible spots, drawn once from ``rng``.
    """
    if held_out:
        items = []
        for s in held_out:
            prompts = draw_prompts(np.ones(s.n, dtype=bool), VAL_PROMPT_FRACTION, rng)
            items.append((s, prompts, ~prompts))
        return tensors, items, f"{len(held_out)} held-out sections"
    if isinstance(validation, str):  # "auto"
        if len(tensors) >= 3:
            return split_validation(tensors[:-1], None, tensors[-1:], rng)
        validation = 0.1
    if validation is None:
        return tensors, None, "none"
    if not 0 < validation < 1:
        raise ValueError(f"`validation` as a fraction must be in (0, 1), got {validation}.")
    items = []
    for s in tensors:
        held = np.zeros(s.n, dtype=bool)
        held[rng.choice(s.n, size=max(2, round(validation * s.n)), replace=False)] = True
        if s.n - held.sum() < 3:
            raise ValueError(f"Section {s.name} has too few spots ({s.n}) for a validation split.")
        s.trainable = ~held
        items.append((s, draw_prompts(~held, VAL_PROMPT_FRACTION, rng), held))
    return tensors, items, f"{validation:.0%} of each training section's spots"


def init_head_bias(model: PHG2ST, tensors: list[Slide]) -> None:
    """Start the output heads at the mean expression of the training spots (validation spots excluded).

    Only for networks without a prompt field (``variant="paper"`` or ``use_prompts=False``), whose heads would
    otherwise have to learn each gene's level from zero; the propagated and adaptive networks predict a residual on
    their field.
    """
    import torch

    c = model.config
    if c["variant"] != "paper" and c["use_prompts"]:
        return
    mean = torch.cat([s.y[torch.from_numpy(s.trainable)] for s in tensors]).mean(0)
    for name in ("head", "head_spot", "head_nbr"):
        if hasattr(model.module, name):
            getattr(model.module, name).bias.data.copy_(mean)


def check_training_memory(model: PHG2ST, tensors: list[Slide], accelerator: str) -> None:
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


def resume_path(
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


def run_fingerprint(
    model: PHG2ST, tensors: list[Slide], val_items: list[ValItem] | None, trainer_kwargs: dict, **optimiser: Any
) -> str:
    """A hash of what decides a run's result, so that a checkpoint is resumed only by the run that wrote it.

    Covers the data, architecture, genes, input description, seed, optimiser and Trainer settings;
    ``max_epochs``, ``patience``, the accelerator and the devices may change.
    """

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
        "trainer": {k: v for k, v in trainer_kwargs.items() if k not in ("callbacks", "enable_progress_bar", "devices")},
        **optimiser,
    }  # fmt: skip
    return hashlib.sha256(json.dumps(plain(setup), sort_keys=True).encode()).hexdigest()[:16]


def check_resumable(path: Path, fingerprint: str) -> None:
    """Read the checkpoint's header and refuse one written by another run (before any training)."""
    from phg2st_sc._model._plan import read_checkpoint

    ckpt = read_checkpoint(path, fingerprint)
    logger.info("Resuming from %s (after epoch %d).", path, int(ckpt.get("epoch", -1)))
