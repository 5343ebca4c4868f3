"""Small helpers shared by ``pp``, ``tl`` and ``pl``: table resolution, the copy contract, writing slots."""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from anndata import AnnData

if TYPE_CHECKING:
    from spatialdata import SpatialData

logger = logging.getLogger("phg2st_sc")

_SLOTS = ("obs", "var", "obsm", "varm", "obsp", "layers", "uns")


def _is_spatialdata(obj: Any) -> bool:
    # Checking the class name avoids importing spatialdata (slow) just to test a type.
    return any(cls.__name__ == "SpatialData" and cls.__module__.startswith("spatialdata") for cls in type(obj).__mro__)


def get_table(data: AnnData | SpatialData, table_key: str | None = None) -> AnnData:
    """Return the AnnData to work on: ``data`` itself, or a table of a SpatialData object.

    Parameters
    ----------
    data
        An AnnData, or a SpatialData with at least one table.
    table_key
        Which table of a SpatialData to use. ``None`` picks the only table and fails if there are several.
    """
    if isinstance(data, AnnData):
        if table_key is not None:
            raise ValueError(f"`table_key={table_key!r}` is only meaningful for SpatialData input; got an AnnData.")
        return data
    if _is_spatialdata(data):
        tables = list(data.tables.keys())
        if not tables:
            raise ValueError(
                "This SpatialData object has no table. Add one linked to the spot shapes, for example with "
                "`phg2st.io.to_spatialdata(adata)`, or pass an AnnData."
            )
        if table_key is None:
            if len(tables) > 1:
                raise ValueError(f"This SpatialData object has several tables {tables}; choose one with `table_key=`.")
            table_key = tables[0]
        if table_key not in data.tables:
            raise KeyError(f"No table {table_key!r} in this SpatialData object; it has {tables}.")
        return data.tables[table_key]
    raise TypeError(f"Expected an AnnData or a SpatialData object, got {type(data).__name__}.")


def finish(adata: AnnData, writes: Mapping[tuple[str, str], Any], *, copy: bool) -> AnnData | None:
    """Write computed results into ``adata`` (or a copy) and honour the ``copy`` contract.

    All computation must be done before calling this: it only assigns, so a failure earlier leaves the
    user's object untouched. The assignments themselves are all or nothing: values are checked against the
    object's shape first, and if an assignment still fails (or the run is interrupted), the ones made are undone.

    Parameters
    ----------
    adata
        The object the results belong to.
    writes
        ``{(slot, key): value}`` with ``slot`` one of ``obs``, ``var``, ``obsm``, ``varm``, ``obsp``, ``layers``,
        ``uns``; a value of ``None`` removes the key if present.
    copy
        Write into a copy and return it, instead of writing in place and returning ``None``.
    """
    for (slot, key), value in writes.items():
        if slot not in _SLOTS:
            raise ValueError(f"Unknown AnnData slot {slot!r}.")
        _check_shape(adata, slot, key, value)
    target = adata.copy() if copy else adata
    done: list[tuple[str, str, bool, Any]] = []
    try:
        for (slot, key), value in writes.items():
            container = getattr(target, slot)
            had = key in container
            if value is None and not had:  # a stale entry that the new result replaces with nothing: none here
                continue
            done.append((slot, key, had, container[key] if had else None))  # recorded before the write
            _assign(container, key, value)
            logger.info("%s `adata.%s[%r]`", "Removing" if value is None else "Adding", slot, key)
    except BaseException:
        # Undo, newest first. The containers are looked up again: writing into a view makes it an actual
        # AnnData, with new containers.
        for slot, key, had, old in reversed(done):
            try:
                container = getattr(target, slot)
                if had:
                    container[key] = old
                elif key in container:
                    del container[key]
            except Exception:  # pragma: no cover - keep undoing the others
                logger.exception("Could not undo `adata.%s[%r]`", slot, key)
        raise
    return target if copy else None


def _assign(container: Any, key: str, value: Any) -> None:
    """One write of :func:`finish` (``None`` deletes); a function of its own so tests can make it fail."""
    if value is None:
        del container[key]
    else:
        container[key] = value


def _check_shape(adata: AnnData, slot: str, key: str, value: Any) -> None:
    """Refuse a value whose length does not fit the slot before anything is written."""
    if value is None or slot == "uns":
        return
    shape = np.shape(value)
    if len(shape) == 0:  # a scalar: broadcast by pandas (obs, var), refused by anndata elsewhere
        return
    n = adata.n_obs if slot in ("obs", "obsm", "obsp", "layers") else adata.n_vars
    want = {"layers": (adata.n_obs, adata.n_vars), "obsp": (n, n)}.get(slot, (n,))
    if tuple(shape[: len(want)]) != want:
        raise ValueError(f"Internal error: `{slot}[{key!r}]` of shape {tuple(shape)} does not fit {adata.shape}.")


def as_dense(x: Any, dtype: np.dtype | type = np.float64, *, what: str = "a sparse matrix") -> np.ndarray:
    """Return ``x`` (dense or sparse) as a dense array of ``dtype``.

    Densifying a sparse matrix is checked against the available memory first (:func:`check_memory`).
    """
    if hasattr(x, "toarray"):
        check_memory(
            int(np.prod(x.shape)) * np.dtype(dtype).itemsize,
            f"Making {what} of shape {tuple(x.shape)} dense",
            "select the genes to use first (`phg2st.pp.select_genes`, a panel, or "
            "`phg2st.pp.top_expressed_genes`), or work on fewer spots at a time",
        )
        x = x.toarray()
    return np.asarray(x, dtype=dtype)


def available_memory() -> int:
    """Bytes of memory available now (psutil when installed, else the OS page counts)."""
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except ImportError:  # pragma: no cover - psutil comes with lightning's dependencies on most installs
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))


#: Share of the available memory that one allocation may take before :func:`check_memory` refuses it.
MEMORY_LIMIT = 0.8


def check_memory(nbytes: int, what: str, advice: str) -> None:
    """Refuse an allocation of ``nbytes`` that would not fit in the available memory, before it is attempted.

    Raises :class:`~phg2st_sc.InsufficientMemoryError` naming the step, the estimate and what to change, instead
    of letting the operating system kill the process (and the user's notebook) halfway.
    """
    from phg2st_sc._errors import InsufficientMemoryError

    free = available_memory()
    if nbytes > MEMORY_LIMIT * free:
        raise InsufficientMemoryError(
            f"{what} needs about {_size(nbytes)}, more than the {_size(free)} available: {advice}."
        )


def _size(nbytes: float) -> str:
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if nbytes >= 0.1 * scale:
            return f"{nbytes / scale:.1f} {unit}"
    return f"{int(nbytes)} bytes"


def spot_pitch(coords: np.ndarray) -> float:
    """Median distance from a spot to its nearest other spot: the array pitch on regular grids (1.0 if undefined)."""
    from scipy.spatial import cKDTree

    if len(coords) < 2:
        return 1.0
    d, _ = cKDTree(coords).query(coords, k=2)
    pitch = float(np.median(d[:, 1]))
    return pitch if pitch > 0 else 1.0


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path to write ``path``'s new content to; it replaces ``path`` only if the block succeeds.

    The temporary path has ``path``'s name inside a hidden folder beside it (same file system, so the final rename
    is atomic; writers that look at the suffix, such as ``.h5ad`` or ``.zarr``, see the real one). Files and
    directories (e.g. ``.zarr`` stores) both work: an existing directory at ``path`` is moved aside first, so
    ``path`` never holds a partly written result. A file is flushed to disk before the rename, so that the name
    never points to data the disk does not hold yet. The hidden folder is removed in every case.

    Parameters
    ----------
    path
        The final location.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
    try:
        tmp = work / path.name
        yield tmp
        if not tmp.exists() and not tmp.is_symlink():
            raise FileNotFoundError(f"Nothing was written to {tmp}.")
        if tmp.is_file():
            with open(tmp, "rb") as fh:
                os.fsync(fh.fileno())
        if path.is_dir() and not path.is_symlink():
            os.replace(path, work / f"{path.name}.old")  # os.replace cannot overwrite a non-empty directory
        os.replace(tmp, path)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def load_tensors_only(path: str | os.PathLike, what: str, hint: str = "") -> Any:
    """``torch.load(path, weights_only=True)`` on the CPU, or a ``ValueError`` naming ``what`` the file should be.

    A file that needs more than tensors and plain values to load (pickled code, arbitrary objects), a truncated or
    otherwise unreadable one, is refused without running anything from it.
    """
    import torch

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No {what} at {path}.")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise ValueError(
            f"{path} is not a readable {what} ({type(err).__name__}: {str(err)[:200]}){'; ' + hint if hint else ''}."
        ) from err
