"""Running an encoder over image regions: batching, device, precision, data loading, resumable cache."""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from phg2st_sc._model._encoders import Encoder, borrowed, describe
from phg2st_sc.pp._tiles import RegionReader

logger = logging.getLogger("phg2st_sc")


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"``: CUDA, then Apple MPS, then CPU; any other device is checked to exist on this machine.

    Raises
    ------
    ValueError
        An unknown device string, or a CUDA or MPS device this machine does not have (the names of what it has).
    """
    if isinstance(device, str) and device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = device if isinstance(device, torch.device) else torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ValueError(f"Unknown device {device!r}: use 'auto', 'cpu', 'cuda', 'cuda:1' or 'mps'.") from err
    if dev.type == "cuda":
        n = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if n == 0:
            raise ValueError(f"`device={str(device)!r}` asks for a CUDA GPU, and this machine has none that torch can "
                             "use (torch.cuda.is_available() is False): use 'cpu', or 'auto' to take one where present.")  # fmt: skip
        if dev.index is not None and dev.index >= n:
            raise ValueError(f"`device={str(device)!r}`: this machine has {n} CUDA GPU(s), numbered 0 to {n - 1}.")
    elif dev.type == "mps" and not _mps_available():
        raise ValueError(f"`device={str(device)!r}` asks for Apple's MPS, which this machine does not have: use 'cpu'.")
    return dev


def _mps_available() -> bool:
    return getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()


def cpu_has_bf16() -> bool:
    """Whether this CPU runs bf16 natively (AVX512-BF16 or AMX); elsewhere bf16 is emulated and slow."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def resolve_precision(precision: str, device: torch.device) -> str:
    """``"auto"``: bf16 autocast where the hardware supports it (CUDA with bf16, CPUs with AVX512-BF16/AMX)."""
    if precision not in ("auto", "fp32", "bf16", "fp16"):
        raise ValueError(f"`precision` must be 'auto', 'fp32', 'bf16' or 'fp16', got {precision!r}.")
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if device.type == "cpu" and cpu_has_bf16():
        return "bf16"
    return "fp32"


@contextmanager
def ieee_fp32(device: torch.device, precision: str) -> Iterator[None]:
    """For ``"fp32"`` on CUDA, plain float32 arithmetic (no TF32) inside the block; the settings restored after.

    PyTorch lets cuDNN's convolutions run in TF32 by default on Ampere and later GPUs, which moves a convolutional
    encoder's features by up to about 1% (efficientnet_lite0 on her2st C2, H200); ``"fp32"`` promises float32.
    """
    if device.type != "cuda" or precision != "fp32":
        yield
        return
    conv = getattr(torch.backends.cudnn, "conv", None)
    if conv is not None and hasattr(conv, "fp32_precision"):  # torch >= 2.9
        flags = [(conv, "fp32_precision", "ieee"), (torch.backends.cuda.matmul, "fp32_precision", "ieee")]
    else:
        flags = [(torch.backends.cudnn, "allow_tf32", False), (torch.backends.cuda.matmul, "allow_tf32", False)]
    before = [getattr(obj, name) for obj, name, _ in flags]
    try:
        for obj, name, value in flags:
            setattr(obj, name, value)
        yield
    finally:
        for (obj, name, _), value in zip(flags, before, strict=True):
            setattr(obj, name, value)


class TileDataset(Dataset):
    """Square regions of an image as ``uint8`` tensors (3, out, out), resized when the region differs from ``out``."""

    def __init__(self, reader: RegionReader, boxes: np.ndarray, region: int, out: int):
        self.reader, self.boxes, self.region, self.out = reader, np.asarray(boxes), int(region), int(out)

    def __len__(self) -> int:
        return len(self.boxes)

    def __getitem__(self, i: int) -> torch.Tensor:
        x0, y0 = (int(v) for v in self.boxes[i])
        tile = self.reader.read(x0, y0, self.region)
        if self.region != self.out:
            from PIL import Image

            # np.array, not np.asarray: Pillow's buffer is read-only, and torch warns about non-writable arrays
            tile = np.array(Image.fromarray(tile).resize((self.out, self.out), Image.Resampling.BILINEAR))
        return torch.from_numpy(np.ascontiguousarray(tile)).permute(2, 0, 1)


class TileCache:
    """Embeddings of one run, stored batch by batch so that an interrupted run resumes where it stopped.

    Each batch is written to a temporary file and renamed, so a killed run never leaves a half-written batch
    that would load as valid.
    """

    def __init__(self, root: str | os.PathLike, key: dict, n: int, dim: int, batch_size: int):
        digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:24]
        self.dir = Path(root).expanduser() / digest
        self.dir.mkdir(parents=True, exist_ok=True)
        meta = self.dir / "meta.json"
        if not meta.exists():
            self._atomic(meta, json.dumps(key, sort_keys=True, indent=1).encode())
        self.n, self.dim, self.batch_size = n, dim, batch_size

    def _atomic(self, path: Path, data: bytes) -> None:
        from phg2st_sc._utils import atomic_path

        with atomic_path(path) as tmp:
            tmp.write_bytes(data)

    def _path(self, b: int) -> Path:
        return self.dir / f"batch_{b:07d}.npy"

    def expected_rows(self, b: int) -> int:
        return min(self.batch_size, self.n - b * self.batch_size)

    def get(self, b: int) -> np.ndarray | None:
        path = self._path(b)
        if not path.exists():
            return None
        try:
            arr = np.load(path, allow_pickle=False)
        except (ValueError, OSError, EOFError):  # unreadable or not an array: recompute the batch
            return None
        if arr.shape != (self.expected_rows(b), self.dim) or not np.isfinite(arr).all():
            return None
        return arr

    def put(self, b: int, arr: np.ndarray) -> None:
        import io

        buf = io.BytesIO()
        np.save(buf, np.asarray(arr, dtype=np.float32), allow_pickle=False)
        self._atomic(self._path(b), buf.getvalue())


def embed_regions(
    reader: RegionReader,
    boxes: np.ndarray,
    region: int,
    encoder: Encoder,
    *,
    batch_size: int = 64,
    device: str | torch.device = "auto",
    precision: str = "auto",
    num_workers: int | None = None,
    cache_dir: str | os.PathLike | None = None,
    cache_key: dict | None = None,
    progress: bool = True,
) -> tuple[np.ndarray, dict]:
    """Embed square image regions with ``encoder``.

    Returns the (m, dim) float32 embeddings and a record of the run (device, precision, encoder passes, batches
    taken from the cache).
    """
    from tqdm.auto import tqdm

    dev = resolve_device(device)
    prec = resolve_precision(precision, dev)
    m = len(boxes)
    n_batches = (m + batch_size - 1) // batch_size
    cache = None
    if cache_dir is not None:
        if encoder.fingerprint is None:
            raise ValueError("This encoder has no stable identity (a plain callable), so its embeddings cannot be cached; "
                             "pass an nn.Module or drop `cache_dir`.")  # fmt: skip
        key = {
            "encoder": json.loads(describe(encoder)),
            "region": int(region),
            "boxes": hashlib.sha256(np.ascontiguousarray(boxes, dtype=np.int64).tobytes()).hexdigest(),
            "batch_size": batch_size,
            "precision": prec,
            **(cache_key or {}),
        }
        cache = TileCache(cache_dir, key, m, encoder.dim, batch_size)

    out = np.empty((m, encoder.dim), dtype=np.float32)
    todo = []
    for b in range(n_batches):
        hit = cache.get(b) if cache is not None else None
        if hit is None:
            todo.append(b)
        else:
            out[b * batch_size : b * batch_size + len(hit)] = hit
    record = {"device": str(dev), "precision": prec, "encoder_passes": 0, "batches_from_cache": n_batches - len(todo)}
    if not todo:
        return out, record

    if num_workers is None:
        num_workers = 0 if dev.type == "cpu" else min(8, max(1, (os.cpu_count() or 2) - 1))
    if num_workers > 0:
        _ = reader.pixels  # decode once in this process; forked workers share the pages
    dataset = TileDataset(reader, boxes, region, encoder.input_size)
    batches = [list(range(b * batch_size, min((b + 1) * batch_size, m))) for b in todo]
    loader = DataLoader(dataset, batch_sampler=batches, num_workers=num_workers, pin_memory=dev.type == "cuda")
    fmt = torch.channels_last if encoder.channels_last else torch.contiguous_format
    mean = torch.tensor(encoder.mean, device=dev).view(1, 3, 1, 1)
    std = torch.tensor(encoder.std, device=dev).view(1, 3, 1, 1)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(prec)
    total = sum(map(len, batches))
    with (
        borrowed(encoder.model, dev, encoder.channels_last) as model,
        ieee_fp32(dev, prec),
        torch.inference_mode(),
        tqdm(total=total, desc=f"embed {encoder.name}", unit="tile", disable=not progress, leave=False) as bar,
    ):
        for b, batch in zip(todo, loader, strict=True):
            x = batch.to(dev, non_blocking=True).float().div_(255.0).sub_(mean).div_(std)
            x = x.contiguous(memory_format=fmt)
            with torch.autocast(dev.type, dtype=dtype, enabled=dtype is not None):
                y = model(x)
            y = y.float().cpu().numpy()
            if y.shape != (len(batch), encoder.dim):
                raise ValueError(
                    f"The encoder returned {y.shape} for a batch of {len(batch)}; expected (B, {encoder.dim})."
                )
            out[b * batch_size : b * batch_size + len(batch)] = y
            if cache is not None:
                cache.put(b, y)
            record["encoder_passes"] += len(batch)
            bar.update(len(batch))
    return out, record
