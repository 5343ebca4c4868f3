"""Training logic: the Lightning module (steps, loss, metric, optimiser) and the history callback."""

from __future__ import annotations

import time

import lightning as L
import torch

from phg2st_sc._model._data import pcc_per_gene
from phg2st_sc._model._module import ModelConfig, PHG2STModule, phg2st_loss

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
        out = self.module(batch)
        loss = phg2st_loss(out, batch["y"], batch["rows"], self.module.config.lam)
        self.log("train_loss", loss, on_step=False, on_epoch=True, batch_size=1, sync_dist=True)
        return loss

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        out = self.module(batch)
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
