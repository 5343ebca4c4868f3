"""The AnnData-facing model: train, predict, save, load."""

from __future__ import annotations

import json
import logging
import os
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from anndata import AnnData

from phg2st_sc._model._data import FixedSlides, Slide, TrainSlides, draw_prompts, slide_batch, slide_from_adata
from phg2st_sc._model._module import VARIANTS, ModelConfig, PHG2STModule

logger = logging.getLogger("phg2st_sc")

FORMAT = "phg2st-sc model"
FORMAT_VERSION = 1
PREDICT_CHUNK = 4096  # spots per inference chunk after the spot branch (bounds memory on large slides)


class PHG2ST:
    """A PHG2ST model bound to a gene list, an image representation and a target normalisation.

    Create one with :func:`phg2st_sc.tl.fit` (or :meth:`load`), apply it with :func:`phg2st_sc.tl.impute`.

    Attributes
    ----------
    genes
        The genes it predicts, in order.
    config
        Architecture (:class:`~phg2st_sc._model._module.ModelConfig` as a dict).
    info
        What the model expects of its input: ``use_rep``, ``encoder``, ``hypergraph_key``, ``layer``, the
        target normalisation, and how it was trained.
    history_
        Loss and validation PCC per epoch.
    """

    def __init__(self, config: ModelConfig, genes: Sequence[str], info: dict[str, Any]):
        self.config = config.to_dict()
        self.genes = [str(g) for g in genes]
        self.info = dict(info)
        self.module = PHG2STModule(config)
        self.history_ = pd.DataFrame()

    # -- data --------------------------------------------------------------------------------------------------
    def slide(self, adata: AnnData, *, prompt: np.ndarray | None = None, name: str = "") -> Slide:
        """Tensors of one section for this model (checks slots, genes and the feature size).

        With ``prompt``, only the prompt spots need measured expression.
        """
        c = self.config
        slide = slide_from_adata(
            adata, self.genes, use_rep=self.info["use_rep"], hypergraph_key=self.info["hypergraph_key"],
            layer=self.info.get("layer"), neighbours=c["use_neighbour_branch"] and c["use_image"],
            prompt=prompt, name=name,
        )  # fmt: skip
        if slide.x.shape[1] != c["feature_dim"]:
            raise ValueError(
                f"`obsm[{self.info['use_rep']!r}]` has {slide.x.shape[1]} features; the model was trained on "
                f"{c['feature_dim']} ({self.info.get('encoder') or 'unknown encoder'})."
            )
        return slide

    # -- training ----------------------------------------------------------------------------------------------
    def train(
        self,
        slides: list[Slide],
        validation: list[tuple[Slide, np.ndarray, np.ndarray]] | None,
        *,
        prompt_fraction: float | tuple[float, float],
        max_epochs: int,
        lr: float,
        step_size: int,
        gamma: float,
        patience: int,
        seed: int,
        accelerator: str,
        devices: Any,
        progress: bool,
        checkpoint_dir: str | os.PathLike | None = None,
        resume_from: str | os.PathLike | None = None,
        fingerprint: str = "",
        **trainer_kwargs: Any,
    ) -> None:
        """Fit with Lightning; keeps the weights of the best validation epoch when there is a validation set.

        With ``checkpoint_dir``, a complete checkpoint (``last.ckpt``: weights, optimiser, schedule, random
        generators, history) is written atomically after every epoch, beside the best epoch's; ``resume_from``
        continues from such a checkpoint.
        """
        import inspect

        import lightning as L
        from torch.utils.data import DataLoader

        from phg2st_sc._model._plan import Checkpoints, EarlyStopping, History, PHG2STPlan, TrainingState

        L.seed_everything(seed, workers=True, verbose=False)
        plan = PHG2STPlan(self.config, lr=lr, step_size=step_size, gamma=gamma)
        plan.module.load_state_dict(self.module.state_dict())
        train_set = TrainSlides(slides, prompt_fraction, self.config["prompt_k"], seed)
        history = History(train_set)
        callbacks: list[Any] = [history, TrainingState(history, fingerprint)]
        extra = trainer_kwargs.pop("callbacks", None) or []
        callbacks += list(extra) if isinstance(extra, (list, tuple)) else [extra]
        with tempfile.TemporaryDirectory(prefix="phg2st-fit-") as tmp:
            folder = Path(checkpoint_dir) if checkpoint_dir is not None else Path(tmp)
            val_loader = None
            if validation:
                val_loader = DataLoader(FixedSlides(validation, self.config["prompt_k"]), batch_size=None)
                callbacks.append(EarlyStopping(monitor="val_pcc", mode="max", patience=patience))
            # One checkpoint callback: the best epoch by validation PCC (if any) and, with a checkpoint folder, the
            # last epoch, both complete, written at the end of each training epoch (after its validation).
            ckpt = Checkpoints(
                dirpath=folder, monitor="val_pcc" if validation else None, mode="max",
                save_top_k=1 if validation else 0, save_last=checkpoint_dir is not None,
                save_on_train_epoch_end=True, filename="best-{epoch}", enable_version_counter=False,
            )  # fmt: skip
            if validation or checkpoint_dir is not None:
                callbacks.append(ckpt)
            kwargs = {
                "max_epochs": max_epochs, "accelerator": accelerator, "devices": devices, "logger": False,
                "enable_checkpointing": ckpt in callbacks, "enable_progress_bar": progress,
                "enable_model_summary": False, "default_root_dir": tmp, "deterministic": True,
                "num_sanity_val_steps": 0, "callbacks": callbacks, "log_every_n_steps": 1,
            }  # fmt: skip
            kwargs.update(trainer_kwargs)
            lightning_log = logging.getLogger("lightning.pytorch")
            level = lightning_log.level
            lightning_log.setLevel(logging.WARNING)  # no banners about TPUs or cloud loggers in a notebook
            try:
                trainer = L.Trainer(**kwargs)
                with warnings.catch_warnings():
                    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
                    warnings.filterwarnings("ignore", message=".*GPU available but not used.*")
                    warnings.filterwarnings("ignore", message=".*treespec.*")  # lightning's own deprecation notice
                    warnings.filterwarnings("ignore", message=".*exists and is not empty.*")  # resuming
                    warnings.filterwarnings("ignore", message=".*no `val_dataloader`.*")  # validation=None
                    # tensors and plain values only (tl.fit has already refused a checkpoint that needs more)
                    safe = {"weights_only": True} if "weights_only" in inspect.signature(trainer.fit).parameters else {}
                    trainer.fit(
                        plan, DataLoader(train_set, batch_size=None, shuffle=True), val_loader, ckpt_path=resume_from,
                        **safe,
                    )  # fmt: skip
            finally:
                lightning_log.setLevel(level)
            if validation and ckpt.best_model_path:
                state = torch.load(ckpt.best_model_path, map_location="cpu", weights_only=True)["state_dict"]
                plan.load_state_dict(state)
                self.info["best_epoch_val_pcc"] = float(ckpt.best_model_score)
            self.info["epochs_trained"] = int(trainer.current_epoch)
            self.info["world_size"] = int(trainer.world_size)
            if resume_from is not None:
                self.info["resumed_from"] = str(resume_from)
        self.module.load_state_dict({k: v.cpu() for k, v in plan.module.state_dict().items()})
        self.history_ = pd.DataFrame(history.rows)

    # -- inference ---------------------------------------------------------------------------------------------
    @torch.inference_mode()
    def predict(self, adata: AnnData, prompt: np.ndarray, *, device: str = "cpu") -> tuple[np.ndarray, np.ndarray]:
        """Predicted expression (n, genes) and latent tokens (n, hidden) of a section given its prompt mask."""
        prompt = np.asarray(prompt)
        if prompt.dtype != bool or prompt.shape != (adata.n_obs,):
            raise ValueError(
                f"The prompt mask must be boolean with length {adata.n_obs} (one per spot), got {prompt.dtype} {prompt.shape}."
            )
        if not prompt.any():
            raise ValueError("The prompt mask marks no spot.")
        from phg2st_sc._model._plan import check_attention_memory

        if torch.device(device).type == "cpu":
            check_attention_memory(adata.n_obs, self.config, training=False)
        slide = self.slide(adata, prompt=prompt)
        batch = slide_batch(slide, prompt, np.zeros(slide.n, dtype=bool), self.config["prompt_k"])
        module = self.module.to(device).eval()
        out = module({k: v.to(device) for k, v in batch.items()}, chunk=PREDICT_CHUNK)
        return out["pred"].float().cpu().numpy(), out["latent"].float().cpu().numpy()

    # -- persistence -------------------------------------------------------------------------------------------
    def save(self, path: str | os.PathLike, *, overwrite: bool = False) -> None:
        """Write weights, architecture, genes and input expectations to one file (atomically).

        The file holds only tensors and plain values, so :meth:`load` reads it with ``weights_only=True``.
        """
        path = Path(path).expanduser()
        if path.exists() and not overwrite:
            raise FileExistsError(f"{path} exists; pass `overwrite=True` to replace it.")
        payload = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "config": json.dumps(self.config),
            "genes": json.dumps(self.genes),
            "info": json.dumps(self.info, default=str),
            "history": self.history_.to_json(orient="records"),
            "state_dict": {k: v.detach().cpu() for k, v in self.module.state_dict().items()},
        }
        from phg2st_sc._utils import atomic_path

        with atomic_path(path) as tmp:
            torch.save(payload, tmp)

    @classmethod
    def load(cls, path: str | os.PathLike) -> PHG2ST:
        """Read a model written by :meth:`save` (``weights_only=True``: a file carrying code is refused)."""
        from phg2st_sc._utils import load_tensors_only

        path = Path(path).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"No model file at {path}.")
        payload = load_tensors_only(path, "phg2st-sc model file")
        if not isinstance(payload, dict) or payload.get("format") != FORMAT:
            raise ValueError(f"{path} is not a phg2st-sc model file.")
        if payload.get("format_version") != FORMAT_VERSION:
            raise ValueError(
                f"{path} has format version {payload.get('format_version')}; this version reads {FORMAT_VERSION}."
            )
        config = ModelConfig(**json.loads(payload["config"]))
        model = cls(config, json.loads(payload["genes"]), json.loads(payload["info"]))
        try:
            model.module.load_state_dict(payload["state_dict"], strict=True)
        except RuntimeError as err:
            raise ValueError(f"{path}: the weights do not match the stored architecture ({str(err)[:300]}).") from err
        model.history_ = pd.read_json(__import__("io").StringIO(payload["history"]), orient="records")
        return model

    def __repr__(self) -> str:
        c = self.config
        return (
            f"PHG2ST(variant={c['variant']!r}, genes={len(self.genes)}, features={c['feature_dim']} "
            f"({self.info.get('use_rep')}), hidden={c['hidden']}, epochs={self.info.get('epochs_trained', 0)})"
        )


__all__ = ["PHG2ST", "VARIANTS", "draw_prompts"]
