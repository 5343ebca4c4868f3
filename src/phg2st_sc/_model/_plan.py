"""Training logic: the Lightning module (steps, loss, metric, optimiser) and the history callback."""

from __future__ import annotations

import os
import time

import lightning as L
import torch

from phg2st_sc._errors import TrainingDivergedError
from phg2st_sc._model._data import pcc_per_gene
from phg2st_sc._model._module import ModelConfig, PHG2STModule, phg2st_loss
from phg2st_sc._utils import available_memory

#: Spots per chunk of the neighbour branch and the heads when a training step would not fit in memory: the step
#: then runs chunk by chunk with gradient checkpointing (identical results; activations bounded by the chunk, at
#: the cost of a second forward pass of each chunk).
TRAIN_CHUNK = 2048
#: Bytes of stored activations per spot, neighbour tile and hidden unit in a training step (measured: 10,000
#: spots x 25 tiles x 256 units took 9.2 GB).
ACTIVATION_BYTES = 144
#: Fraction of the available memory a training step may fill before it switches to checkpointed chunks.
MEMORY_FRACTION = 0.5


def training_chunk(batch: dict, hidden: int, device: torch.device) -> int | None:
    """``None`` (one pass) when the step's activations fit in half the free memory, else :data:`TRAIN_CHUNK`."""
    n = batch["x"].shape[0]
    if n <= TRAIN_CHUNK:
        return None
    tiles = max(batch["tile_index"].shape[1], 1) if "tile_index" in batch else 1
    need = ACTIVATION_BYTES * n * tiles * hidden
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
    else:
        free = available_memory()
    return TRAIN_CHUNK if need > MEMORY_FRACTION * free else None


def attention_bytes(n: int, config: dict, *, training: bool) -> int:
    """Estimated bytes of the spot transformer's attention maps on a section of ``n`` spots.

    Each block holds ``heads`` maps of ``n x min(n, attention_window)`` float32 scores (the windows make it linear
    in ``n``); training keeps about four such maps per block for the backward pass (scores, softmax, dropout
    mask, gradient: 12.1 GiB measured at 10,000 spots, 4 heads, 2 blocks, full attention). Inference runs
    :data:`~phg2st_sc._model._module.INFERENCE_WINDOWS` windows at a time and keeps no map beyond them: bounded by two
    maps of those windows (torch's fused CPU kernel keeps none: measured, the whole spot branch of 10,000 spots
    with full attention peaked at 0.13 GiB, where the two maps would be 3.0 GiB).
    """
    from phg2st_sc._model._module import INFERENCE_WINDOWS

    if not config["use_spot_branch"] or not config["use_image"]:
        return 0
    window = min(n, config["attention_window"])
    rows = n if training else min(n, INFERENCE_WINDOWS * window)
    maps = config["heads"] * rows * window * 4
    return (4 * config["spot_depth"] if training else 2) * maps


def check_attention_memory(n: int, config: dict, *, training: bool, name: str = "") -> None:
    """Fail before training or inference on the CPU when the attention maps of a section would not fit in memory.

    Only for the CPU: CUDA's fused attention kernels never store the maps (measured on an H200: a training step on
    10,000 spots peaks at 7.1 GiB with full attention and with windows alike).
    """
    from phg2st_sc._utils import check_memory

    check_memory(
        attention_bytes(n, config, training=training),
        f"{'Training on' if training else 'Predicting'} section {name + ' ' if name else ''}({n} spots) with "
        f"attention over {min(n, config['attention_window'])} spots at a time",
        "lower `attention_window` (tl.fit's default, 1024, keeps memory linear in the number of spots) or train on "
        "smaller sections and impute the large one"
        if training
        else f"the model was trained with `attention_window={config['attention_window']}`; predict where more memory "
        "is free, or train with a smaller `attention_window` (the default, 1024, keeps memory linear)",
    )


FAST_PARAMETERS = ("mix_logit", "distance_slope")
FAST_LR_FACTOR = 100.0


class PHG2STPlan(L.LightningModule):
    """Optimises :class:`PHG2STModule` on one slide per step; validation PCC on held-out spots."""

    def __init__(
        self, config: dict, lr: float = 1e-4, step_size: int = 50, gamma: float = 0.9, weight_decay: float = 0.0
    ):
        super().__init__()
        self.save_hyperparameters()
        self.module = PHG2STModule(ModelConfig(**config))

    def forward(self, batch: dict) -> dict:
        return self.module(batch)

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        out = self.module(batch, chunk=training_chunk(batch, self.module.config.hidden, self.device))
        loss = phg2st_loss(out, batch["y"], batch["rows"], self.module.config.lam)
        diverged = not bool(torch.isfinite(loss))
        if self.trainer.world_size > 1:  # every process stops together (one alone would leave the others waiting)
            diverged = self.trainer.strategy.reduce_boolean_decision(diverged, all=False)
        if diverged:
            raise TrainingDivergedError(
                f"Training diverged: the loss became NaN or infinite at epoch {self.current_epoch}, step "
                f"{self.global_step}. The learning rate (`lr={self.hparams.lr:g}`) is probably too high: lower it "
                "(e.g. by 10x). Check also that the expression holds normalised values (e.g. log1p), not raw counts."
            )
        self.log("train_loss", loss, on_step=False, on_epoch=True, batch_size=1, sync_dist=True)
        return loss

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        out = self.module(batch, chunk=TRAIN_CHUNK)
        rows = batch["rows"]
        loss = torch.nn.functional.mse_loss(out["pred"][rows], batch["y"][rows])
        pcc = pcc_per_gene(out["pred"][rows], batch["y"][rows])
        self.log("val_loss", loss, on_epoch=True, batch_size=1, sync_dist=True)
        self.log("val_pcc", pcc, on_epoch=True, prog_bar=True, batch_size=1, sync_dist=True)

    def configure_optimizers(self):
        # The prompt field's mixing weights and the distance penalties are a handful of scalars per gene or head
        # that start at a neutral value; at the network's learning rate they barely move in a few hundred steps.
        fast = [p for n, p in self.module.named_parameters() if n in FAST_PARAMETERS]
        slow = [p for n, p in self.module.named_parameters() if n not in FAST_PARAMETERS]
        groups = [{"params": slow}]
        if fast:
            groups.append({"params": fast, "lr": self.hparams.lr * FAST_LR_FACTOR, "weight_decay": 0.0})
        opt = torch.optim.Adam(groups, lr=self.hparams.lr, weight_decay=self.hparams.weight_decay)
        sched = torch.optim.lr_scheduler.StepLR(opt, step_size=self.hparams.step_size, gamma=self.hparams.gamma)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "epoch"}}


class PromptDraws(L.Callback):
    """Tells the training set which epoch it serves: fresh prompt masks each epoch, the same ones on a resume."""

    def __init__(self, dataset):
        self.dataset = dataset

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self.dataset.epoch = trainer.current_epoch


class History(L.Callback):
    """Collects the epoch metrics into a list of dicts (``PHG2ST.history_``)."""

    def __init__(self):
        self.rows: list[dict] = []

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._start = time.perf_counter()

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        row = {"epoch": trainer.current_epoch}
        metrics = trainer.callback_metrics
        for key in ("train_loss", "val_loss", "val_pcc", *sorted(metrics)):
            if key in metrics and key not in row:
                row[key] = float(metrics[key])
        row["lr"] = float(trainer.optimizers[0].param_groups[0]["lr"])
        row["seconds"] = time.perf_counter() - self._start  # training and validation of this epoch
        self.rows.append(row)


def _rng_state() -> dict:
    """The global random generators' states as plain values and tensors (loadable with ``weights_only=True``)."""
    import random

    import numpy as np

    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": [kind, torch.from_numpy(np.asarray(keys, dtype=np.int64)), int(pos), int(has_gauss), float(gauss)],
        "python": random.getstate(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    import random

    import numpy as np

    torch.set_rng_state(state["torch"])
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"][: torch.cuda.device_count()])


class TrainingState(L.Callback):
    """Makes Lightning checkpoints complete for :func:`phg2st_sc.tl.fit`'s ``resume``.

    Stores, in every checkpoint, the random generators (dropout and the order of sections), the history rows so
    far and a fingerprint of the run's setup; restoring them lets a resumed run continue exactly where the
    checkpoint was taken, so it ends with the same weights as a run that was never interrupted.
    """

    def __init__(self, history: History, fingerprint: str):
        self.history = history
        self.fingerprint = fingerprint

    def state_dict(self) -> dict:
        return {"fingerprint": self.fingerprint, "rows": list(self.history.rows), "rng": _rng_state()}

    def load_state_dict(self, state_dict: dict) -> None:
        if state_dict.get("fingerprint") != self.fingerprint:  # also checked before training starts
            raise ValueError("The checkpoint belongs to another training run (other sections, genes or settings).")
        self.history.rows = [dict(r) for r in state_dict["rows"]]
        _set_rng_state(state_dict["rng"])


class EarlyStopping(L.pytorch.callbacks.EarlyStopping):
    """Lightning's early stopping, with two changes for resumed runs.

    A resumed run keeps the ``patience`` it was given, and a run that early stopping had ended (its last checkpoint
    is written in the epoch that stopped it) stays ended unless that patience is larger.
    """

    ended = False

    def load_state_dict(self, state_dict: dict) -> None:
        patience = self.patience
        super().load_state_dict(state_dict)
        self.patience = patience
        self.ended = bool(self.stopped_epoch) and self.wait_count >= self.patience

    def on_train_start(self, trainer, pl_module) -> None:
        if self.ended:
            trainer.should_stop = True


class Checkpoints(L.pytorch.callbacks.ModelCheckpoint):
    """Lightning's checkpoint callback, except that ``last.ckpt`` follows every epoch and the folder may move.

    Lightning (2.6) writes ``last.ckpt`` only in an epoch that also saved a top-k checkpoint: with a validation set
    it lags behind from the best epoch on, and without one nothing is written until training ends. Here, with
    ``save_last``, every training epoch ends with ``last.ckpt`` (after the best epoch's file, when there is one).

    Lightning restores which epoch was best only when the folder is the one the checkpoint was written in; here the
    recorded paths are moved into the current folder first (the files sit side by side).
    """

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        super().on_train_epoch_end(trainer, pl_module)
        if (
            self.save_last
            and self._should_save_on_train_epoch_end(trainer)
            and not trainer.sanity_checking
            and self._last_global_step_saved != trainer.global_step  # nothing saved at the end of this epoch yet
        ):
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))

    def load_state_dict(self, state_dict: dict) -> None:
        old = state_dict.get("dirpath")
        if old and self.dirpath and os.path.realpath(old) != os.path.realpath(self.dirpath):

            def move(path: str) -> str:
                return os.path.join(self.dirpath, os.path.basename(path)) if path else path

            state_dict = dict(state_dict, dirpath=self.dirpath)
            for key in ("best_model_path", "kth_best_model_path", "last_model_path"):
                if key in state_dict:
                    state_dict[key] = move(state_dict[key])
            state_dict["best_k_models"] = {move(k): v for k, v in state_dict.get("best_k_models", {}).items()}
        super().load_state_dict(state_dict)


def read_checkpoint(path: str | os.PathLike, fingerprint: str) -> dict:
    """Load a checkpoint of :func:`phg2st_sc.tl.fit` safely (tensors and plain values only) and check it fits the run."""
    from phg2st_sc._utils import load_tensors_only

    ckpt = load_tensors_only(
        path, "training checkpoint", "it may be truncated or carry code (only tensors and plain values are read); "
        "delete it to start afresh",
    )  # fmt: skip
    states = ckpt.get("callbacks", {}) if isinstance(ckpt, dict) else {}
    ours = [s for k, s in states.items() if str(k).startswith("TrainingState")]
    if not ours:
        raise ValueError(f"{path} is not a checkpoint written by phg2st_sc.tl.fit.")
    if ours[0].get("fingerprint") != fingerprint:
        raise ValueError(
            f"{path} is a checkpoint of another training run (other sections, genes, architecture, seed or "
            "optimiser settings than this call). Resume with the original arguments, or use another "
            "`checkpoint_dir` to start a new run."
        )
    return ckpt
