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


#: Writers whose results may replace one another's under a shared name (a scratch layer ``"pred"`` filled by
#: ``impute`` and then by ``baseline``); any other writer's slots are refused to them, and theirs to it.
RESULT_WRITERS = frozenset({"tl.impute", "tl.baseline"})


def written_keys(adata: AnnData) -> dict[str, dict[str, str]]:
    """The slots this package wrote into ``adata`` and the function that wrote each: ``{slot: {key: writer}}``.

    Stored in ``uns['phg2st_written']`` as a JSON text (not nested dicts), so that it reads back from ``.h5ad`` and
    ``.zarr`` exactly as written.
    """
    import json

    from phg2st_sc._constants import Keys

    record = adata.uns.get(Keys.WRITTEN_UNS)
    if isinstance(record, bytes):
        record = record.decode()
    if isinstance(record, str):
        try:
            record = json.loads(record)
        except ValueError:
            return {}
    if not isinstance(record, Mapping):
        return {}
    return {str(slot): {str(k): str(w) for k, w in keys.items()} for slot, keys in record.items()
            if isinstance(keys, Mapping)}  # fmt: skip


def _record(written: Mapping[str, Mapping[str, str]]) -> str:
    import json

    return json.dumps({slot: dict(sorted(keys.items())) for slot, keys in sorted(written.items()) if keys})


def carry_written(source: AnnData, target: AnnData) -> None:
    """Copy the record of the slots this package wrote from ``source`` to a new object built from it.

    Only the keys that exist in ``target`` are carried.
    """
    from phg2st_sc._constants import Keys

    kept = {slot: {k: w for k, w in keys.items() if k in getattr(target, slot)}
            for slot, keys in written_keys(source).items() if slot in _SLOTS}  # fmt: skip
    if any(kept.values()):
        target.uns[Keys.WRITTEN_UNS] = _record(kept)


def check_slots(
    adata: AnnData, keys: Mapping[tuple[str, str], str | None], *, overwrite: bool, writer: str = ""
) -> None:
    """Refuse, before any work, to replace or remove slots that the calling function has no right to.

    A slot may be replaced by the function that wrote it (recorded in ``uns['phg2st_written']``), and results of
    ``tl.impute`` and ``tl.baseline`` by each other; the user's own slots and other steps' outputs (embeddings, the
    hypergraph, the targets' record) only with ``overwrite``.

    Parameters
    ----------
    adata
        The object to be written.
    keys
        ``{(slot, key): argument}``: the slots a call will write, each with the argument that named it. Slots of
        fixed names (``None``: ``uns['phg2st_smooth']``, ...) are the package's own and never refused.
    overwrite
        The user allowed replacing any slot: nothing is refused.
    writer
        The calling function (``"tl.impute"``), for the record and the messages.
    """
    from phg2st_sc._constants import Keys
    from phg2st_sc._errors import SlotExistsError

    if overwrite:
        return
    written = written_keys(adata)
    for (slot, key), arg in keys.items():
        if arg is None or (slot, key) == ("uns", Keys.WRITTEN_UNS) or key not in getattr(adata, slot):
            continue
        owner = written.get(slot, {}).get(key)
        if owner == writer or (owner in RESULT_WRITERS and writer in RESULT_WRITERS):
            continue
        whose = "was not written by phg2st-sc" if owner is None else f"holds the output of `{owner}`"
        raise SlotExistsError(
            f"`adata.{slot}[{key!r}]` exists and {whose}: {'this call' if not writer else f'`{writer}`'} would "
            f"replace it. Choose another `{arg}=`, or pass `overwrite=True` (`--overwrite` on the command line) to "
            "replace it."
        )


def write_slots(
    adata: AnnData,
    writes: Mapping[tuple[str, str], Any],
    *,
    copy: bool,
    overwrite: bool = False,
    names: Mapping[tuple[str, str], str] | None = None,
    writer: str = "",
) -> AnnData | None:
    """Write computed results into ``adata`` (or a copy) and honour the ``copy`` contract.

    All computation must be done before calling this: it only assigns, so a failure earlier leaves the
    user's object untouched. The assignments themselves are all or nothing: values are checked against the
    object's shape first, and if an assignment still fails (or the run is interrupted), the ones made are undone.

    Slots the caller has no right to replace (:func:`check_slots`: the user's own ``layers['counts']`` or
    ``obsm['spatial']``, another step's embeddings) are refused unless ``overwrite``; what is written is recorded,
    with ``writer``, in ``uns['phg2st_written']``.

    Parameters
    ----------
    adata
        The object the results belong to.
    writes
        ``{(slot, key): value}`` with ``slot`` one of ``obs``, ``var``, ``obsm``, ``varm``, ``obsp``, ``layers``,
        ``uns``; a value of ``None`` removes the key if present.
    copy
        Write into a copy and return it, instead of writing in place and returning ``None``.
    overwrite
        Replace existing slots whatever wrote them.
    names
        ``{(slot, key): argument}``: the argument of the calling function that chose each key, for messages.
    writer
        The calling function, e.g. ``"tl.impute"``.
    """
    from phg2st_sc._constants import Keys

    for (slot, key), value in writes.items():
        if slot not in _SLOTS:
            raise ValueError(f"Unknown AnnData slot {slot!r}.")
        _check_shape(adata, slot, key, value)
    check_slots(adata, {sk: (names or {}).get(sk) for sk in writes}, overwrite=overwrite, writer=writer)
    written = {slot: {k: w for k, w in keys.items() if k in getattr(adata, slot)}  # stale entries dropped
               for slot, keys in written_keys(adata).items() if slot in _SLOTS}  # fmt: skip
    for (slot, key), value in writes.items():
        if value is None:
            written.get(slot, {}).pop(key, None)
        else:
            written.setdefault(slot, {})[key] = writer or "phg2st-sc"
    writes = {**writes, ("uns", Keys.WRITTEN_UNS): _record(written)}
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
            if key != Keys.WRITTEN_UNS:
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
    """One write of :func:`write_slots` (``None`` deletes); a function of its own so tests can make it fail."""
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


@contextmanager
def keeping_threads() -> Iterator[None]:
    """Run a block keeping the process's OpenMP thread count as it is.

    scanpy's numba kernels (``normalize_total`` on sparse counts) start numba's OpenMP threading layer, which sets
    the count to the number of cores on its first call. That count is torch's on the CPU (unless the process set its
    own with ``torch.set_num_threads``), so without this ``OMP_NUM_THREADS`` would be overridden, and a model trained
    after preparing targets would differ in its last bits from the same training in a process that did not.
    """
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=None, user_api="openmp"):  # sets nothing; restores every count on exit
        yield


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


def varying(x: np.ndarray) -> np.ndarray:
    """Per column of ``x`` (rows), whether its values are not all equal (``False`` for every column of no rows)."""
    return np.ptp(x, axis=0) > 0 if len(x) else np.zeros(x.shape[1:], dtype=bool)


def centre_scale(x: np.ndarray, dtype: Any = None) -> tuple[np.ndarray, np.ndarray]:
    """Per-column mean and standard deviation of ``x`` (rows); a constant column gets its value and 1, exactly.

    Constant means all values equal, not a standard deviation of 0: the mean of equal floats can be one unit in the
    last place off (0.1 repeated 60 times), and their standard deviation is then about 1e-17, which would blow the
    column's rounding up to values of order one. The layer, the baselines, the designs and the network's per-section
    feature standardisation standardise through here. ``dtype``: the accumulator of the mean and standard deviation
    (e.g. float64 for float32 features, without a float64 copy of them).
    """
    if not len(x):
        return np.zeros(x.shape[1:]), np.ones(x.shape[1:])
    varies = varying(x)
    return np.where(varies, x.mean(0, dtype=dtype), x[0]), np.where(varies, x.std(0, dtype=dtype), 1.0)


def standardised(x: np.ndarray) -> np.ndarray:
    """``x`` centred and scaled per column (constant columns: zeros exactly, see :func:`centre_scale`)."""
    centre, sd = centre_scale(x)
    return (x - centre) / sd


def spot_pitch(coords: np.ndarray) -> float:
    """Median distance from a spot to its nearest other spot: the array pitch on regular grids (1.0 if undefined)."""
    from scipy.spatial import cKDTree

    if len(coords) < 2:
        return 1.0
    d, _ = cKDTree(coords).query(coords, k=2)
    pitch = float(np.median(d[:, 1]))
    return pitch if pitch > 0 else 1.0


def fold_splits(n: int, folds: list[np.ndarray]) -> list[tuple[np.ndarray, np.ndarray]]:
    """Each fold of ``n`` rows with the other folds' rows, ``(part, rest)``, in the folds' order (cross-fitting)."""
    every = np.arange(n)
    return [(part, np.setdiff1d(every, part)) for part in folds]


#: Inverse-distance weighting's defaults, shared by the IDW baseline, the stack and the adaptive layer's component.
IDW_K = 6
IDW_POWER = 2.0
IDW_CHUNK = 8192  # queries weighted at a time (their neighbours' values are k x genes each)


def inverse_distance(
    xy_p: np.ndarray, y: np.ndarray, xy_q: np.ndarray, *, k: int = IDW_K, power: float = IDW_POWER
) -> np.ndarray:
    """Inverse-distance weighting of ``y`` (p, genes) at ``xy_q`` over the ``k`` nearest points of ``xy_p``.

    Weights ``d ** -power``, normalised; a query at a point's position takes that point's value. The IDW baseline
    and the adaptive variant's IDW component.
    """
    from scipy.spatial import cKDTree

    k = min(k, len(xy_p))
    dist, idx = cKDTree(xy_p).query(xy_q, k=k)
    dist, idx = dist.reshape(len(xy_q), k), idx.reshape(len(xy_q), k)
    with np.errstate(divide="ignore"):
        w = dist ** (-power)
    exact = dist[:, 0] == 0
    w[exact] = 0.0
    w[exact, 0] = 1.0
    w /= w.sum(axis=1, keepdims=True)
    out = np.empty((len(xy_q), y.shape[1]), dtype=np.result_type(w, y))
    for s in range(0, len(xy_q), IDW_CHUNK):  # the neighbours' values (queries, k, genes) a chunk at a time
        out[s : s + IDW_CHUNK] = np.einsum("qk,qkg->qg", w[s : s + IDW_CHUNK], y[idx[s : s + IDW_CHUNK]])
    return out


def morton_order(p: np.ndarray, unit: float | None = None) -> np.ndarray:
    """The points ``p`` (n, 2) along a Z-order curve of square cells of side ``unit``.

    Consecutive points form compact patches (the hypergraph's candidate blocks, the local kriging's query groups).
    Without ``unit``, the finest cells that the 65,536 a side of the curve allow over the points' extent.
    """
    p = np.asarray(p, dtype=np.float64)
    lo = p.min(axis=0)
    if unit is None:
        unit = float(np.ptp(p, axis=0).max()) / 65535 or 1.0
    q = np.floor((p - lo) / unit).astype(np.uint64) & np.uint64(0xFFFF)  # 65,536 cells a side

    def spread(v: np.ndarray) -> np.ndarray:  # bits b -> 2b
        for shift, mask in ((8, 0x00FF00FF), (4, 0x0F0F0F0F), (2, 0x33333333), (1, 0x55555555)):
            v = (v | (v << np.uint64(shift))) & np.uint64(mask)
        return v

    return np.argsort(spread(q[:, 0]) | (spread(q[:, 1]) << np.uint64(1)), kind="stable")


def is_zarr_store(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a folder holding a Zarr store (v2 ``.zgroup``/``.zattrs``/``.zarray`` or v3 ``zarr.json``)."""
    path = Path(path)
    return path.is_dir() and any((path / name).is_file() for name in (".zgroup", ".zattrs", ".zarray", "zarr.json"))


def check_replaceable(path: str | os.PathLike, *, store: bool = False) -> None:
    """Refuse, before any work, an output path whose current content this package must not replace.

    A file output never replaces a folder (or a link to one); a folder output (``store=True``, a ``.zarr`` store)
    replaces only a Zarr store, never a file or an ordinary folder. Existing outputs of the right kind may be
    replaced. The parent folder must be writable (it is created if missing).
    """
    path = Path(path).expanduser()
    if store:
        if path.is_symlink():
            raise FileExistsError(
                f"{path} is a symbolic link: a store written there would replace the link, not what it points to. "
                "Give the real path (nothing was deleted)."
            )
        if path.exists() and not is_zarr_store(path):
            raise FileExistsError(
                f"{path} exists and is not a Zarr store; phg2st-sc replaces only its own kind of output there. Choose "
                "another output path (nothing was deleted)."
            )
    elif path.is_dir():
        raise IsADirectoryError(
            f"{path} is a folder; give the path of a file to write (e.g. {path / 'model.pt'}). Nothing was deleted."
        )
    check_writable(path.parent)


def check_writable(folder: str | os.PathLike) -> None:
    """Create ``folder`` if needed and check that files can be created in it, before any long work."""
    folder = Path(folder).expanduser()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".phg2st-write-check.")
    except OSError as err:
        raise PermissionError(f"Cannot write to {folder} ({err.strerror or err}); choose a writable output.") from err
    os.close(fd)
    os.unlink(probe)


@contextmanager
def atomic_path(path: str | os.PathLike, *, store: bool = False) -> Iterator[Path]:
    """Yield a temporary path to write ``path``'s new content to; it replaces ``path`` only if the block succeeds.

    The temporary path has ``path``'s name inside a hidden folder beside it (same file system, so the final rename
    is atomic; writers that look at the suffix, such as ``.h5ad`` or ``.zarr``, see the real one). A file is
    flushed to disk before the rename, so that the name never points to data the disk does not hold yet. The
    hidden folder is removed in every case.

    What may be replaced is checked first (:func:`check_replaceable`): a file never replaces a folder, and a
    folder output (``store=True``: a ``.zarr`` store) replaces only an earlier Zarr store, which is moved aside
    and removed once the new one is in place. Nothing else is ever deleted.

    Parameters
    ----------
    path
        The final location.
    store
        The output is a folder (a Zarr store) rather than a file.
    """
    path = Path(path).expanduser()
    check_replaceable(path, store=store)
    work = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
    try:
        tmp = work / path.name
        yield tmp
        if not tmp.exists() and not tmp.is_symlink():
            raise FileNotFoundError(f"Nothing was written to {tmp}.")
        if tmp.is_dir() != store:
            raise RuntimeError(f"Internal error: a {'folder' if tmp.is_dir() else 'file'} was written for {path}.")
        check_replaceable(path, store=store)  # again: the path may have changed while the content was written
        if tmp.is_file():
            with open(tmp, "rb") as fh:
                os.fsync(fh.fileno())
        if store and path.is_dir():
            os.replace(path, work / f"{path.name}.old")  # os.replace cannot overwrite a non-empty directory
        os.replace(tmp, path)
    finally:
        shutil.rmtree(work, ignore_errors=True)


#: Largest share of a torch file's declared (inflated) content over its size on disk before it is refused unread:
#: ``torch.save`` stores its members uncompressed, so a file whose members inflate far beyond its size was not
#: written by it (a "zip bomb" would otherwise be inflated into memory by ``torch.load``).
INFLATION_LIMIT = 1.5


def load_tensors_only(
    path: str | os.PathLike, what: str, hint: str = "", *, error: type[Exception] | None = None, legacy: bool = False
) -> Any:
    """``torch.load(path, weights_only=True)`` on the CPU, or an error naming ``what`` the file should be.

    Before anything is inflated, the archive's declared member sizes are checked against the file's size (a small
    file that would inflate to gigabytes is refused) and against the available memory. A file that needs more than
    tensors and plain values to load (pickled code, arbitrary objects), a truncated or otherwise unreadable one, is
    refused without running anything from it; the message never suggests loading it unsafely.

    Parameters
    ----------
    path
        The file.
    what
        What the file should be, for messages ("phg2st-sc model file").
    hint
        Appended to the message of an unreadable file.
    error
        Exception class raised for an unreadable file (default :class:`~phg2st_sc.ModelFileError`).
    legacy
        Accept torch's pre-1.6 (non-zip) format too.
    """
    import pickle
    import zipfile

    import torch

    from phg2st_sc._errors import ModelFileError

    error = error or ModelFileError
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No {what} at {path}.")
    tail = f"; {hint}" if hint else ""
    size = path.stat().st_size
    if zipfile.is_zipfile(path):
        try:
            with zipfile.ZipFile(path) as archive:
                declared = sum(info.file_size for info in archive.infolist())
        except (zipfile.BadZipFile, OSError) as err:
            raise error(f"{path} is not a readable {what} (a damaged archive: {err}){tail}.") from err
        if declared > INFLATION_LIMIT * size + 2**20:
            raise error(
                f"{path} is not a readable {what}: its {_size(size)} archive declares {_size(declared)} of compressed "
                f"content, which files written by torch never hold; it was refused before inflating{tail}."
            )
        check_memory(declared, f"Reading {path}", "free memory first")
    elif not legacy:
        raise error(f"{path} is not a readable {what} (not an archive written by `torch.save`){tail}.")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise error(
            f"{path} is not a readable {what}: it holds objects other than tensors and plain values (pickled code or "
            f"classes); it was refused unread, since loading such objects can run arbitrary code{tail}."
        ) from err
    except Exception as err:
        first = next((line.strip() for line in str(err).splitlines() if line.strip()), type(err).__name__)
        if "weights_only" in first:
            first = type(err).__name__
        raise error(f"{path} is not a readable {what} ({type(err).__name__}: {first[:300]}){tail}.") from err
