"""Training logic: the Lightning module (steps, loss, metric, optimiser) and the history callback."""

from __future__ import annotations

import os
import time

import lightning as L
import torch

from phg2st_sc._model._data import pcc_per_gene
from phg2st_sc._model._module import ModelConfig, PHG2STModule, phg2st_loss

#: Spots per chunk of the neighbour branch and the heads when a training step would not fit in memory: the step
#: then runs chunk by chunk with gradient checkpointing (identical results; activations bounded by the chunk, at
#: the cost of a second forward pass of each chunk).
TRAIN_CHUNK = 2048
#: Bytes of stored activations per spot, neighbour tile and hidden unit in a training step (measured: 10,000
#: spots x 25 tiles x 256 units took 9.2 GB).
ACTIVATION_BYTES = 144
#: Fraction of the available memory a training step may fill before it switches to checkpointed chunks.
MEMORY_FRACTION = 0.5


def available_memory() -> int:
    """Bytes of memory available now (psutil when installed, else the OS page counts)."""
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except ImportError:  # pragma: no cover - psutil comes with lightning's dependencies on most installs
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))


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


class History(L.Callback):
    """Collects the epoch metrics into a list of dicts (``PHG2ST.history_``)."""

    def __init__(self, dataset=None):
        self.rows: list[dict] = []
        self.dataset = dataset

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._start = time.perf_counter()
        if self.dataset is not None:
            self.dataset.epoch = trainer.current_epoch  # fresh, reproducible prompt masks each epoch

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        row = {"epoch": trainer.current_epoch}
        metrics = trainer.callback_metrics
        for key in ("train_loss", "val_loss", "val_pcc", *sorted(metrics)):
            if key in metrics and key not in row:
                row[key] = float(metrics[key])
        row["lr"] = float(trainer.optimizers[0].param_groups[0]["lr"])
        row["seconds"] = time.perf_counter() - self._start  # training and validation of this epoch
        self.rows.append(row)
