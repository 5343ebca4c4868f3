"""The AnnData-facing model: train, predict, save, load."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from anndata import AnnData

from phg2st_sc._errors import ModelFileError, TrainingDivergedError, TrainingTerminated
from phg2st_sc._model._config import VARIANTS, InputSpec, ModelConfig
from phg2st_sc._model._data import FixedSlides, Slide, TrainSlides, draw_prompts, slide_batch, slide_from_adata
from phg2st_sc._model._incontext import canonical_order, dealt, spot_rank
from phg2st_sc._model._module import PHG2STModule

logger = logging.getLogger("phg2st_sc")

FORMAT = "phg2st-sc model"
FORMAT_VERSION = 1
#: The version of a file holding several networks (``members``): a reader of version 1 alone refuses it instead of
#: reading its first network as the whole model.
MEMBERS_FORMAT_VERSION = 2
PREDICT_CHUNK = 4096  # spots per inference chunk after the spot branch (bounds memory on large slides)
#: The batch entries a prompt mask sets (a cross-fitted pass computes its own; the others are the slide's).
PROMPT_KEYS = ("prompt", "prompt_idx", "prompt_dist", "prompt_mean", "rows", "kriged")
ALIGN_SPOTS = 4096  # spots whose mean aligns each cross-fitted pass on the full one (all spots of smaller slides)


def align_rows(n: int, rank: np.ndarray | None = None) -> np.ndarray:
    """The spots (sorted) over which a cross-fitted pass's level is compared with the full pass's.

    Every spot up to :data:`ALIGN_SPOTS`, else a fixed random choice of that many: the level is a per-gene mean,
    and the passes differ from the full one smoothly, so a few thousand spots set it to well within its noise,
    while the passes then run at those spots and the fold's prompts only. The choice is dealt over the spots in the
    order of their ``rank`` (:func:`~phg2st_sc._model._incontext.spot_rank`), where given.
    """
    if n <= ALIGN_SPOTS:
        return np.arange(n)
    chosen = np.random.default_rng(0).choice(n, ALIGN_SPOTS, replace=False)
    return np.sort(dealt(chosen, canonical_order(rank, np.arange(n))))


class PHG2ST:
    """A PHG2ST model bound to a gene list, an image representation and a target normalisation.

    Create one with :func:`phg2st_sc.tl.fit` (or :meth:`load`), apply it with :func:`phg2st_sc.tl.impute`.

    Attributes
    ----------
    genes
        The genes it predicts, in order.
    config
        Architecture (:class:`~phg2st_sc.tl.ModelConfig` as a dict).
    input
        What a section must hold for this model (:class:`~phg2st_sc._model._config.InputSpec`: representation key
        and encoder record, hypergraph key, layer and normalisation, spot pitch), checked by :meth:`check_input`.
    training
        How it was trained: seed, learning rate, prompt fraction, validation, sections, epochs.
    history_
        Loss and validation PCC per epoch (of the first network).
    members
        Further networks of the same architecture trained with other seeds (:func:`~phg2st_sc.tl.fit`'s
        ``n_networks``); their predictions are averaged with :attr:`module`'s. Empty for one network.
    """

    def __init__(
        self,
        config: ModelConfig,
        genes: Sequence[str],
        input: InputSpec | Mapping[str, Any],
        training: Mapping[str, Any] | None = None,
    ):
        self.config = config.to_dict()
        self.genes = [str(g) for g in genes]
        self.input = input if isinstance(input, InputSpec) else InputSpec.from_record(self.genes, input)
        self.training: dict[str, Any] = dict(training or {})
        self.module = PHG2STModule(config)
        self.members: list[PHG2STModule] = []
        self.history_ = pd.DataFrame()
        self.in_context_: dict[str, Any] | None = None  # what the last prediction's in-context layer chose
        self.spread_: Any = None  # the last prediction's calibrated spread (``_incontext.Spread``) or None

    @property
    def info(self) -> dict[str, Any]:
        """The input description and the training record in one read-only view (``input`` and ``training``)."""
        return {**self.input.record(), **self.training}

    # -- data --------------------------------------------------------------------------------------------------
    def tensors(self, adata: AnnData, *, prompt: np.ndarray | None = None, name: str = "") -> Slide:
        """Tensors of one section for this model (checks slots, genes and the feature size).

        With ``prompt``, only the prompt spots need measured expression.
        """
        c, spec = self.config, self.input
        slide = slide_from_adata(
            adata, self.genes, use_rep=spec.use_rep, hypergraph_key=spec.hypergraph_key, layer=spec.layer,
            neighbours=c["use_neighbour_branch"] and c["use_image"], prompt=prompt, name=name,
            standardise=c["section_norm"],
        )  # fmt: skip
        if slide.x.shape[1] != c["feature_dim"]:
            raise ValueError(
                f"`obsm[{spec.use_rep!r}]` has {slide.x.shape[1]} features; the model was trained on "
                f"{c['feature_dim']} ({spec.embedding.get('encoder') or 'unknown encoder'})."
            )
        return slide

    def check_input(self, adata: AnnData, prompt: np.ndarray | None = None) -> None:
        """Refuse a section whose expression or features were not made the way this model's training data were.

        Checks the target normalisation (:func:`phg2st_sc.tl.prepare_targets`' record, or ``uns['log1p']`` for the
        user's own normalisation; with ``prompt``, also the scale of the prompt spots' values) and the encoder and
        tile geometry of the features (:func:`phg2st_sc.pp.embed_tiles`' record). Raises
        :class:`~phg2st_sc.InputMismatchError` with the fix.
        """
        self.input.check(adata, prompt)

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

        from phg2st_sc._model._plan import Checkpoints, EarlyStopping, History, PHG2STPlan, PromptDraws, TrainingState

        L.seed_everything(seed, workers=True, verbose=False)
        plan = PHG2STPlan(self.config, lr=lr, step_size=step_size, gamma=gamma)
        plan.module.load_state_dict(self.module.state_dict())
        train_set = TrainSlides(slides, prompt_fraction, self.config["prompt_k"], seed, self.config["kriged_field"])
        history = History()
        callbacks: list[Any] = [PromptDraws(train_set), history, TrainingState(history, fingerprint)]
        extra = trainer_kwargs.pop("callbacks", None) or []
        callbacks += list(extra) if isinstance(extra, (list, tuple)) else [extra]
        with tempfile.TemporaryDirectory(prefix="phg2st-fit-") as tmp:
            folder = Path(checkpoint_dir) if checkpoint_dir is not None else Path(tmp)
            val_loader = None
            if validation:
                val_loader = DataLoader(
                    FixedSlides(validation, self.config["prompt_k"], self.config["kriged_field"]),
                    batch_size=None,
                )
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
                    with _interruptible(trainer):
                        trainer.fit(
                            plan, DataLoader(train_set, batch_size=None, shuffle=True), val_loader,
                            ckpt_path=resume_from, **safe,
                        )  # fmt: skip
            finally:
                lightning_log.setLevel(level)
            bad = [n for n, p in plan.module.named_parameters() if not bool(torch.isfinite(p).all())]
            if bad:
                raise TrainingDivergedError(
                    f"Training diverged: {len(bad)} weight tensors (e.g. {bad[0]}) became NaN or infinite. The learning "
                    f"rate (`lr={lr:g}`) is probably too high: lower it (e.g. by 10x)."
                )
            if validation and ckpt.best_model_path:
                state = torch.load(ckpt.best_model_path, map_location="cpu", weights_only=True)["state_dict"]
                plan.load_state_dict(state)
                self.training["best_epoch_val_pcc"] = float(ckpt.best_model_score)
            self.training["epochs_trained"] = int(trainer.current_epoch)
            self.training["world_size"] = int(trainer.world_size)
            if resume_from is not None:
                self.training["resumed_from"] = str(resume_from)
        self.module.load_state_dict({k: v.cpu() for k, v in plan.module.state_dict().items()})
        self.history_ = pd.DataFrame(history.rows)

    # -- inference ---------------------------------------------------------------------------------------------
    @torch.inference_mode()
    def predict(
        self, adata: AnnData, prompt: np.ndarray, *, device: str | torch.device = "cpu", network_only: bool = False
    ) -> tuple[np.ndarray, np.ndarray]:
        """Predicted expression (n, genes) and latent tokens (n, hidden) of a section given its prompt mask.

        The adaptive variant adapts the network's prediction to the section through its prompts (the in-context
        layer, :func:`~phg2st_sc._model._incontext.adapt`; what it chose is kept in ``in_context_``);
        ``network_only`` skips that step. With :attr:`members`, the networks' predictions are averaged first.
        """
        prompt = np.asarray(prompt)
        if prompt.dtype != bool or prompt.shape != (adata.n_obs,):
            raise ValueError(
                f"The prompt mask must be boolean with length {adata.n_obs} (one per spot), got {prompt.dtype} {prompt.shape}."
            )
        if not prompt.any():
            raise ValueError("The prompt mask marks no spot.")
        from phg2st_sc._model._embed import resolve_device
        from phg2st_sc._model._plan import check_attention_memory

        device = resolve_device(device)  # a device this machine lacks: refused here, before any work
        if device.type == "cpu":
            check_attention_memory(adata.n_obs, self.config, training=False)
        self._check_members()
        adaptive = self.config["variant"] == "adaptive" and not network_only
        cross_fitted = adaptive and self.config["use_prompts"]
        if self.config["kriged_field"]:
            from phg2st_sc._model._incontext import CV_FOLDS

            self._check_field_memory(adata.n_obs, 1 + CV_FOLDS * cross_fitted)
        slide = self.tensors(adata, prompt=prompt)
        batch = {k: v.to(device) for k, v in self._batch(slide, prompt).items()}
        rank = spot_rank(adata.obs_names) if adaptive else None  # the folds are dealt by name, not by position
        folds = self._fold_batches(slide, prompt, device, batch, rank) if cross_fitted else None
        # the full pass and any cross-fitted ones share one pass of the image branches (the passes do not change
        # them); inference skips the branch heads, which only the training loss reads. With several networks, each
        # makes its passes; their predictions (and cross-fitted predictions, each aligned on its own network's
        # level) are averaged, and the layer's ridge reads their tokens side by side; the tokens returned are the
        # first network's.
        every = torch.arange(slide.n, device=device)
        preds, latents, at_prompts, tokens = [], [], [], []
        for module in [self.module, *self.members]:
            module = module.to(device).eval()
            out, *passes = module.forward_masks([batch, *(folds[1] if folds else [])],
                                                [every, *(folds[2] if folds else [])], chunk=PREDICT_CHUNK)  # fmt: skip
            own = out["pred"].float().cpu().numpy(), out["latent"].float().cpu().numpy()
            self._check_finite(*own, module)
            if folds is not None:
                aligned = self._align(slide, prompt, folds[0], passes, folds[2], own, rank)
                at_prompts.append(aligned[0])
                tokens.append(aligned[1])
            del out, passes
            preds.append(own[0])
            if adaptive or not latents:  # further networks' tokens only for the layer's ridge
                latents.append(own[1])
        pred, latent = preds[0], latents[0]
        if len(preds) > 1:
            pred = (sum(preds) / len(preds)).astype(np.float32)
        del preds
        self.in_context_ = self.spread_ = None
        if adaptive:
            from phg2st_sc._model._incontext import adapt

            y = slide.y.numpy().astype(np.float64)[prompt]
            image = slide.x.numpy() if self.config["use_image"] else None  # a prompts-only model reads no image
            pos = slide.pos.numpy()
            del slide, batch, folds  # the passes' inputs (a large slide's are gigabytes) before the layer
            side_by_side = latent if len(latents) == 1 else np.hstack(latents)
            del latents
            pred, fit = adapt(
                pred, side_by_side, image, pos, prompt, y,
                network_at_prompts=sum(at_prompts) / len(at_prompts) if at_prompts else None,
                latent_at_prompts=np.hstack(tokens) if tokens else None, spot_rank=rank,
            )  # fmt: skip
            self.in_context_, self.spread_ = fit.record(), fit.spread
        return pred, latent

    def _check_field_memory(self, n: int, passes: int) -> None:
        """Refuse a prediction whose kriged prompt fields (one (spots x genes) float32 per pass) would not fit."""
        from phg2st_sc._utils import check_memory

        check_memory(
            passes * n * len(self.genes) * 4,
            f"Predicting {n} spots with `kriged_field` ({passes} passes, each with its own kriged prompt field of "
            f"{len(self.genes)} genes)",
            "predict where more memory is free, on fewer genes, or with a model trained without `kriged_field` "
            "(ModelConfig.kriged_field; docs/benchmarks.md: it changes the adaptive variant within retraining noise)",
        )

    def _check_members(self) -> None:
        """Refuse :attr:`members` that are not networks of this model's architecture."""
        for i, member in enumerate(self.members):
            if not isinstance(member, PHG2STModule) or member.config != self.module.config:
                raise ValueError(
                    f"`members[{i}]` is not a network of this model's architecture: give the `module` of a model "
                    "trained with the same settings (as `tl.fit(n_networks=...)` does)."
                )

    def _check_finite(self, pred: np.ndarray, latent: np.ndarray, module: PHG2STModule) -> None:
        """Refuse a prediction with NaN or infinite values, naming the likely cause."""
        finite = np.isfinite(pred).all(axis=1) & np.isfinite(latent).all(axis=1)
        if not finite.all():
            weights_ok = all(bool(torch.isfinite(p).all()) for p in module.parameters())
            raise TrainingDivergedError(
                f"The model predicted NaN or infinite values at {int((~finite).sum())} of {len(finite)} spots; nothing "
                "was written. "
                + ("Its weights are not finite: the training diverged (retrain with a lower `lr`)." if not weights_ok
                   else "Check the inputs: image features and prompt expression of a scale far from the training data "
                   "overflow the network.")
            )  # fmt: skip

    def _cross_fitted(
        self,
        slide: Slide,
        prompt: np.ndarray,
        device: str,
        full: tuple[np.ndarray, np.ndarray],
        rank: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray] | tuple[None, None]:
        """The (first) network's prediction and latent tokens at each prompt made without that prompt's value.

        One pass per fold of :func:`~phg2st_sc._model._incontext.prompt_folds` (the folds the in-context layer
        cross-fits its other components on), each with that fold held out of the network's input; ``(None, None)``
        with fewer than two prompts per fold. Each pass is shifted so that its per-gene (per-token)
        mean over all spots equals that of ``full`` (the prediction and tokens with every prompt): a pass that does
        not see a fold's values moves the level of every spot the opposite way, so that without the shift the
        cross-fitted predictions are anti-correlated with the values they predict (measured on her2st C3 with 18
        prompts: PCC -0.06 over the prompts against 0.13 aligned and 0.14 at the held-out spots, which all share
        one pass). The shift is one constant per fold and gene, the same at every prompt of the fold.
        (:meth:`predict` runs these passes together with its own, sharing the image branches.) ``rank``: the
        spots' canonical ranks the folds are dealt over (:func:`~phg2st_sc._model._incontext.spot_rank`; ``None``:
        their listing order), which
        the in-context layer must be given too.
        """
        folds = self._fold_batches(slide, prompt, device, rank=rank)
        if folds is None:
            return None, None
        passes = self.module.forward_masks(folds[1], folds[2], chunk=PREDICT_CHUNK)
        return self._align(slide, prompt, folds[0], passes, folds[2], full, rank)

    def _batch(self, slide: Slide, prompt: np.ndarray) -> dict[str, torch.Tensor]:
        """The network's input for predicting ``slide`` from ``prompt`` (no spot scored)."""
        c = self.config
        return slide_batch(slide, prompt, np.zeros(slide.n, dtype=bool), c["prompt_k"], c["kriged_field"])

    def _fold_batches(
        self, slide: Slide, prompt: np.ndarray, device: str, shared: dict | None = None, rank: np.ndarray | None = None
    ) -> tuple[list[np.ndarray], list[dict], list[torch.Tensor]] | None:
        """The cross-fitting folds of the prompts, each fold's input (its prompts held out) and its rows (sorted).

        The slide's own tensors are moved to ``device`` once (or taken from ``shared``, a batch of the same slide
        already there); each fold adds only the entries its prompt mask sets (:data:`PROMPT_KEYS`). The folds are
        dealt over the prompts in the order of ``rank`` (``None``: as listed).
        """
        from phg2st_sc._model._incontext import CV_FOLDS, prompt_folds

        idx = np.flatnonzero(prompt)
        if len(idx) < 2 * CV_FOLDS:
            return None
        folds = prompt_folds(len(idx), canonical_order(rank, idx))
        batches, rows = [], []
        for part in folds:
            mask = prompt.copy()
            mask[idx[part]] = False
            batch = self._batch(slide, mask)
            shared = batches[0] if shared is None and batches else shared
            batches.append(
                {k: v.to(device) if shared is None or k in PROMPT_KEYS else shared[k] for k, v in batch.items()}
            )
            rows.append(torch.from_numpy(np.union1d(idx[part], align_rows(slide.n, rank))).to(device))
        return folds, batches, rows

    def _align(
        self, slide: Slide, prompt: np.ndarray, folds: list[np.ndarray], passes: list[dict],
        row_sets: list[torch.Tensor], full: tuple[np.ndarray, np.ndarray], rank: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
        """Each fold's pass at its prompts, shifted onto ``full``'s level (see :meth:`_cross_fitted`).

        ``rank``: the one the folds were made with (:meth:`_fold_batches`).
        """
        idx = np.flatnonzero(prompt)
        out = np.zeros((len(idx), len(self.genes)))
        tokens = np.zeros((len(idx), self.config["hidden"]), dtype=np.float32)
        level = align_rows(slide.n, rank)  # the spots whose mean sets each pass's level
        mean_pred, mean_latent = full[0][level].mean(0), full[1][level].mean(0)
        for part, res, rows in zip(folds, passes, row_sets, strict=True):
            rows = rows.cpu().numpy()
            pred, latent = res["pred"].float().cpu().numpy(), res["latent"].float().cpu().numpy()
            at, lv = np.searchsorted(rows, idx[part]), np.searchsorted(rows, level)
            out[part] = pred[at] + (mean_pred - pred[lv].mean(0))
            tokens[part] = latent[at] + (mean_latent - latent[lv].mean(0))
        return out, tokens

    # -- persistence -------------------------------------------------------------------------------------------
    def save(self, path: str | os.PathLike, *, overwrite: bool = False) -> None:
        """Write weights, architecture, genes and input expectations to one file (atomically).

        The file holds only tensors and plain values, so :meth:`load` reads it with ``weights_only=True``. With
        ``overwrite``, only an earlier phg2st-sc model file is replaced: a folder or any other file at ``path`` is
        refused, and nothing is deleted.
        """
        from phg2st_sc._utils import atomic_path, check_replaceable

        self._check_members()
        path = Path(path).expanduser()
        check_replaceable(path)
        if path.exists():
            if not overwrite:
                raise FileExistsError(f"{path} exists; pass `overwrite=True` to replace it.")
            if not is_model_file(path):
                raise FileExistsError(
                    f"{path} exists and is not a phg2st-sc model file: `overwrite=True` replaces only an earlier model "
                    "file. Choose another path (nothing was deleted)."
                )
        payload = {
            "format": FORMAT,
            "format_version": MEMBERS_FORMAT_VERSION if self.members else FORMAT_VERSION,
            "config": json.dumps(self.config),
            "genes": json.dumps(self.genes),
            "info": json.dumps(self.input.record(), default=str),  # the input description (the name of format 1)
            "training": json.dumps(self.training, default=str),
            "history": self.history_.to_json(orient="records"),
            "state_dict": _state(self.module),
        }
        if self.members:  # absent for one network, so that such files are as before
            payload["members"] = [_state(m) for m in self.members]
        with atomic_path(path) as tmp:
            torch.save(payload, tmp)

    @classmethod
    def load(cls, path: str | os.PathLike) -> PHG2ST:
        """Read a model written by :meth:`save`.

        The file is read with ``weights_only=True`` (a file carrying code is refused unread), after checking that
        its archive does not inflate beyond its size; then every field is checked (architecture, genes, input
        description, weights). Any problem raises :class:`~phg2st_sc.ModelFileError`.
        """
        from phg2st_sc._utils import load_tensors_only

        path = Path(path).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"No model file at {path}.")
        payload = load_tensors_only(path, "phg2st-sc model file")
        config, genes, info, training, history, states = _parse_payload(payload, path)
        model = cls(config, genes, InputSpec.from_record(genes, info), training)
        model.members = [PHG2STModule(config) for _ in states[1:]]
        for module, state in zip([model.module, *model.members], states, strict=True):
            try:
                module.load_state_dict(state, strict=True)
            except RuntimeError as err:
                lines = " ".join(line.strip() for line in str(err).splitlines() if line.strip())
                raise ModelFileError(
                    f"{path}: the weights do not match the stored architecture ({lines[:300]})."
                ) from err
        model.history_ = history
        return model

    def __repr__(self) -> str:
        c = self.config
        networks = f", networks={1 + len(self.members)}" if self.members else ""
        return (
            f"PHG2ST(variant={c['variant']!r}, genes={len(self.genes)}, features={c['feature_dim']} "
            f"({self.input.use_rep}), hidden={c['hidden']}, epochs={self.training.get('epochs_trained', 0)}{networks})"
        )


def _state(module: PHG2STModule) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu() for k, v in module.state_dict().items()}


@contextlib.contextmanager
def _interruptible(trainer: Any):
    """Make a Ctrl-C during ``trainer.fit`` a ``KeyboardInterrupt`` again, with the interrupt handler restored.

    Lightning catches the interrupt, ignores further ones (``SIGINT`` set to ``SIG_IGN``) while it shuts down, and
    then calls ``sys.exit(1)``: in a notebook a ``SystemExit`` and, afterwards, a Ctrl-C that does nothing.
    """
    import signal
    import threading

    main = threading.current_thread() is threading.main_thread()
    handler = signal.getsignal(signal.SIGINT) if main else None
    try:
        yield
    except SystemExit as err:
        if not trainer.interrupted:
            raise
        if getattr(trainer, "received_sigterm", False) or type(err).__name__ == "SIGTERMException":
            # Lightning's SIGTERMException exits with code None (0, "success"): make it 143 (128 + SIGTERM)
            raise TrainingTerminated(128 + signal.SIGTERM) from None
        raise KeyboardInterrupt(
            f"Training was interrupted in epoch {trainer.current_epoch} (counting from 0); no model is returned. With "
            "`checkpoint_dir`, `resume=True` continues from the last complete epoch."
        ) from None
    finally:
        if main and handler is not None:
            signal.signal(signal.SIGINT, handler)


def is_model_file(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a file written by :meth:`PHG2ST.save` (read without unpickling anything)."""
    import zipfile

    path = Path(path)
    if not path.is_file() or not zipfile.is_zipfile(path):
        return False
    try:
        with zipfile.ZipFile(path) as archive:
            pickles = [i for i in archive.infolist() if i.filename.endswith("/data.pkl")]
            if len(pickles) != 1 or pickles[0].file_size > 2**24:
                return False
            return FORMAT.encode() in archive.read(pickles[0])
    except (zipfile.BadZipFile, OSError):
        return False


#: Types of the fields of ``info['normalization']`` that the input checks read.
NORMALIZATION_FIELDS: dict[str, tuple[type, ...]] = {
    "target_sum": (int, float),
    "log1p": (bool,),
    "smooth": (bool,),
    "protocol": (str,),
    "log1p_base": (int, float),
    "library_size": (int, float),
}

#: What the input description of a model file (``info``) must hold, and of which types.
INFO_FIELDS: dict[str, tuple[type, ...]] = {
    "use_rep": (str,),
    "hypergraph_key": (str,),
    "layer": (str, type(None)),
    "normalization": (dict,),
}


def _parse_payload(payload: Any, path: Path) -> tuple[ModelConfig, list[str], dict, dict, pd.DataFrame, list[dict]]:
    """Check every field of a model file's payload; :class:`~phg2st_sc.ModelFileError` naming the first bad one."""
    import dataclasses
    import io

    def bad(what: str) -> ModelFileError:
        return ModelFileError(f"{path} is not a valid phg2st-sc model file: {what}. Save the model again with "
                              "`model.save(path)` (or `phg2st fit`).")  # fmt: skip

    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ModelFileError(f"{path} is not a phg2st-sc model file.")
    version = payload.get("format_version")
    if version not in (FORMAT_VERSION, MEMBERS_FORMAT_VERSION):
        raise ModelFileError(
            f"{path} has format version {version!r}; this version reads {FORMAT_VERSION!r} and "
            f"{MEMBERS_FORMAT_VERSION!r} (several networks)."
        )
    missing = [k for k in ("config", "genes", "info", "state_dict") if k not in payload]
    if missing:
        raise bad(f"it lacks {missing}")

    def json_field(key: str, kind: type) -> Any:
        raw = payload[key]
        if not isinstance(raw, str):
            raise bad(f"`{key}` must be JSON text, got {type(raw).__name__}")
        try:
            value = json.loads(raw)
        except json.JSONDecodeError as err:
            raise bad(f"`{key}` is not valid JSON ({err.msg} at character {err.pos})") from err
        if not isinstance(value, kind):
            raise bad(f"`{key}` must hold a JSON {kind.__name__}, got {type(value).__name__}")
        return value

    raw_config = json_field("config", dict)
    fields = {f.name for f in dataclasses.fields(ModelConfig)}
    unknown = sorted(set(raw_config) - fields)
    if unknown:
        raise bad(f"the architecture has unknown fields {unknown} (written by a newer version?)")
    try:
        config = ModelConfig(**raw_config)
    except (TypeError, ValueError) as err:
        raise bad(f"the architecture is invalid ({err})") from err
    if config.n_genes < 1 or config.feature_dim < 1:
        raise bad(f"the architecture is invalid (n_genes={config.n_genes}, feature_dim={config.feature_dim})")
    genes = json_field("genes", list)
    if not genes or not all(isinstance(g, str) and g for g in genes):
        raise bad("`genes` must be a non-empty list of gene names")
    if len(set(genes)) != len(genes):
        raise bad("`genes` lists some genes twice")
    if len(genes) != config.n_genes:
        raise bad(f"it lists {len(genes)} genes for an architecture of {config.n_genes}")
    info = json_field("info", dict)
    for key, types in INFO_FIELDS.items():
        if key not in info:
            raise bad(f"the input description lacks `{key}`")
        if not isinstance(info[key], types):
            raise bad(f"`info['{key}']` has type {type(info[key]).__name__}")
    if not isinstance(info.get("embedding", {}), dict):
        raise bad(f"`info['embedding']` has type {type(info['embedding']).__name__}")
    for key, types in NORMALIZATION_FIELDS.items():
        value = info["normalization"].get(key)
        if value is not None and (not isinstance(value, types) or (bool not in types and isinstance(value, bool))):
            raise bad(f"`info['normalization']['{key}']` is {value!r}")
    # the training record: its own field, or (files written before it had one) the rest of `info`
    own = (*InputSpec.FIELDS, "encoder", "encoder_fingerprint")
    training = (
        json_field("training", dict) if "training" in payload else {k: v for k, v in info.items() if k not in own}
    )
    members = payload.get("members", [])
    if not isinstance(members, list):
        raise bad(f"`members` must be a list of weights, got {type(members).__name__}")
    if bool(members) != (version == MEMBERS_FORMAT_VERSION):
        raise bad(f"format version {version} {'needs' if version == MEMBERS_FORMAT_VERSION else 'has no'} `members`")
    states = [payload["state_dict"], *members]
    with torch.device("meta"):  # the architecture's shapes, without allocating it (a file may declare any size)
        expected = PHG2STModule(config).state_dict()
    for i, state in enumerate(states):
        _check_weights(state, expected, path, bad, "`state_dict`" if i == 0 else f"`members[{i - 1}]`")
    history = pd.DataFrame()
    if "history" in payload:
        try:
            history = pd.read_json(io.StringIO(payload["history"]), orient="records")
        except (TypeError, ValueError) as err:
            raise bad(f"`history` is not a JSON table ({err})") from err
    return config, genes, info, training, history, states


def _check_weights(state: Any, expected: dict, path: Path, bad: Any, name: str) -> None:
    """The weights ``name`` of a model file: the names, shapes and dtypes of ``expected``'s tensors, finite."""
    if (
        not isinstance(state, dict)
        or not state
        or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items())
    ):
        raise bad(f"{name} must map parameter names to tensors")
    if set(expected) != set(state):
        missing, extra = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
        raise ModelFileError(
            f"{path}: the weights do not match the stored architecture ({name}: missing {missing[:3]}, unexpected "
            f"{extra[:3]})."
        )
    for key, tensor in expected.items():
        if tuple(state[key].shape) != tuple(tensor.shape) or state[key].dtype != tensor.dtype:
            raise ModelFileError(
                f"{path}: the weights do not match the stored architecture: {name} `{key}` is {state[key].dtype} "
                f"{tuple(state[key].shape)}, the architecture needs {tensor.dtype} {tuple(tensor.shape)}."
            )
    if not all(bool(torch.isfinite(v).all()) for v in state.values() if v.is_floating_point()):
        raise bad(f"some weights of {name} are NaN or infinite (the training diverged)")


__all__ = ["PHG2ST", "VARIANTS", "draw_prompts", "is_model_file"]
