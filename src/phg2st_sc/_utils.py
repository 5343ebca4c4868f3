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
    user's object untouched.

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
    for slot, _ in writes:
        if slot not in _SLOTS:
            raise ValueError(f"Unknown AnnData slot {slot!r}.")
    target = adata.copy() if copy else adata
    for (slot, key), value in writes.items():
        container = getattr(target, slot)
        if value is None:  # a stale entry that the new result replaces with nothing
            if key in container:
                del container[key]
                logger.info("Removing `adata.%s[%r]`", slot, key)
            continue
        container[key] = value
        logger.info("Adding `adata.%s[%r]`", slot, key)
    return target if copy else None


def as_dense(x: Any, dtype: np.dtype | type = np.float64) -> np.ndarray:
    """Return ``x`` (dense or sparse) as a dense array of ``dtype``."""
    if hasattr(x, "toarray"):
        x = x.toarray()
    return np.asarray(x, dtype=dtype)


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
    ``path`` never holds a partly written result. The hidden folder is removed in every case.

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
        if path.is_dir() and not path.is_symlink():
            os.replace(path, work / f"{path.name}.old")  # os.replace cannot overwrite a non-empty directory
        os.replace(tmp, path)
    finally:
        shutil.rmtree(work, ignore_errors=True)
