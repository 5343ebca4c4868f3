"""Deep equality of AnnData objects (and of the values they hold), for tests that check an input was not modified.

Import it in a test module with ``from _compare import assert_adata_equal`` (``tests/conftest.py`` puts this folder
on ``sys.path``).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from anndata import AnnData
from scipy import sparse

__all__ = ["assert_adata_equal", "assert_value_equal", "assert_same_weights", "snapshot", "assert_unchanged"]


def _fail(where: str, what: str) -> None:
    raise AssertionError(f"{where}: {what}")


def _array_equal(a: np.ndarray, b: np.ndarray, where: str) -> None:
    if a.shape != b.shape:
        _fail(where, f"shape {a.shape} != {b.shape}")
    if a.dtype != b.dtype:
        _fail(where, f"dtype {a.dtype} != {b.dtype}")
    nan_ok = a.dtype.kind in "fc"
    if a.dtype.kind == "O":
        for i, (x, y) in enumerate(zip(a.ravel(), b.ravel(), strict=True)):
            assert_value_equal(x, y, f"{where}[{i}]")
        return
    if not np.array_equal(a, b, equal_nan=nan_ok):
        n = int((~((a == b) | (np.isnan(a) & np.isnan(b)) if nan_ok else (a == b))).sum())
        _fail(where, f"{n} of {a.size} values differ")


def _sparse_equal(a: Any, b: Any, where: str) -> None:
    if type(a) is not type(b):
        _fail(where, f"type {type(a).__name__} != {type(b).__name__}")
    if a.shape != b.shape or a.dtype != b.dtype:
        _fail(where, f"{a.shape} {a.dtype} != {b.shape} {b.dtype}")
    # The stored structure (including explicit zeros and their order) must be the same, and so the values.
    a, b = a.tocsr(), b.tocsr()
    for part in ("indptr", "indices", "data"):
        _array_equal(np.asarray(getattr(a, part)), np.asarray(getattr(b, part)), f"{where}.{part}")


def _frame_equal(a: pd.DataFrame, b: pd.DataFrame, where: str) -> None:
    if not a.index.equals(b.index) or a.index.dtype != b.index.dtype or a.index.name != b.index.name:
        _fail(where, "the index differs")
    if not a.columns.equals(b.columns):
        _fail(where, f"columns {list(a.columns)} != {list(b.columns)}")
    if not a.dtypes.equals(b.dtypes):
        _fail(where, f"dtypes {a.dtypes.to_dict()} != {b.dtypes.to_dict()}")
    if not a.equals(b):
        _fail(where, "values differ")
    for col in a.columns:  # categories and their order are part of a categorical column
        if isinstance(a[col].dtype, pd.CategoricalDtype) and not a[col].cat.categories.equals(b[col].cat.categories):
            _fail(f"{where}[{col!r}]", "categories differ")
    if a.attrs != b.attrs:
        _fail(where, "attrs differ")


def assert_value_equal(a: Any, b: Any, where: str = "value") -> None:
    """Recursive equality of what AnnData slots hold: arrays (NaN-aware, dtype checked), sparse matrices,
    DataFrames, dicts, lists, tuples, scalars and strings."""
    if sparse.issparse(a) or sparse.issparse(b):
        if not (sparse.issparse(a) and sparse.issparse(b)):
            _fail(where, f"type {type(a).__name__} != {type(b).__name__}")
        _sparse_equal(a, b, where)
    elif isinstance(a, AnnData) or isinstance(b, AnnData):
        if not (isinstance(a, AnnData) and isinstance(b, AnnData)):
            _fail(where, f"type {type(a).__name__} != {type(b).__name__}")
        assert_adata_equal(a, b, where=where)
    elif isinstance(a, pd.DataFrame) or isinstance(b, pd.DataFrame):
        if not (isinstance(a, pd.DataFrame) and isinstance(b, pd.DataFrame)):
            _fail(where, f"type {type(a).__name__} != {type(b).__name__}")
        _frame_equal(a, b, where)
    elif isinstance(a, (pd.Series, pd.Index)) or isinstance(b, (pd.Series, pd.Index)):
        if type(a) is not type(b) or not a.equals(b) or a.dtype != b.dtype:
            _fail(where, "differs")
    elif isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        if not (isinstance(a, np.ndarray) and isinstance(b, np.ndarray)):
            _fail(where, f"type {type(a).__name__} != {type(b).__name__}")
        _array_equal(a, b, where)
    elif isinstance(a, Mapping) or isinstance(b, Mapping):
        if not (isinstance(a, Mapping) and isinstance(b, Mapping)):
            _fail(where, f"type {type(a).__name__} != {type(b).__name__}")
        if list(a.keys()) != list(b.keys()):
            _fail(where, f"keys {list(a.keys())} != {list(b.keys())}")
        for k in a:
            assert_value_equal(a[k], b[k], f"{where}[{k!r}]")
    elif isinstance(a, (list, tuple)) or isinstance(b, (list, tuple)):
        if type(a) is not type(b) or len(a) != len(b):
            _fail(where, f"{type(a).__name__} of {len(a)} != {type(b).__name__} of {len(b)}")
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_value_equal(x, y, f"{where}[{i}]")
    elif hasattr(a, "shape") and hasattr(a, "dtype"):  # other array types (dask, ...): compare as numpy
        assert_value_equal(np.asarray(a), np.asarray(b), where)
    else:
        if type(a) is not type(b):
            _fail(where, f"type {type(a).__name__} != {type(b).__name__}")
        if isinstance(a, float) and np.isnan(a) and np.isnan(b):
            return
        if a != b:
            _fail(where, f"{a!r} != {b!r}")


def _matrix_equal(a: Any, b: Any, where: str) -> None:
    if a is None or b is None:
        if a is not b:
            _fail(where, f"{type(a).__name__} != {type(b).__name__}")
        return
    if sparse.issparse(a) != sparse.issparse(b):
        _fail(where, f"sparse {sparse.issparse(a)} != {sparse.issparse(b)}")
    assert_value_equal(a, b, where)


def assert_adata_equal(a: AnnData, b: AnnData, *, where: str = "adata") -> None:
    """Assert that two AnnData objects hold the same data.

    Compares the shape, ``X`` (dense or sparse, NaN-aware, dtype included), every layer, ``obs`` and ``var`` (index,
    columns, dtypes and values), every value of ``obsm``, ``varm``, ``obsp`` and ``varp`` (arrays, sparse matrices or
    DataFrames), and ``uns`` recursively (dicts, arrays, DataFrames, lists, scalars).
    """
    if not (isinstance(a, AnnData) and isinstance(b, AnnData)):
        _fail(where, f"expected two AnnData objects, got {type(a).__name__} and {type(b).__name__}")
    if a.shape != b.shape:
        _fail(where, f"shape {a.shape} != {b.shape}")
    if a.is_view != b.is_view:
        _fail(where, f"is_view {a.is_view} != {b.is_view}")
    _matrix_equal(a.X, b.X, f"{where}.X")
    _frame_equal(a.obs, b.obs, f"{where}.obs")
    _frame_equal(a.var, b.var, f"{where}.var")
    for slot in ("layers", "obsm", "varm", "obsp", "varp"):
        ma, mb = getattr(a, slot), getattr(b, slot)
        if sorted(ma.keys()) != sorted(mb.keys()):
            _fail(f"{where}.{slot}", f"keys {sorted(ma.keys())} != {sorted(mb.keys())}")
        for k in ma:
            _matrix_equal(ma[k], mb[k], f"{where}.{slot}[{k!r}]")
    assert_value_equal(dict(a.uns), dict(b.uns), f"{where}.uns")


def _is_spatialdata(obj: Any) -> bool:
    return any(cls.__name__ == "SpatialData" for cls in type(obj).__mro__)


def snapshot(obj: Any) -> Any:
    """A deep copy of an AnnData, a SpatialData (its tables and element names), a DataFrame, the files under a
    path, or a list of them, for :func:`assert_unchanged` (``None`` for anything else)."""
    if isinstance(obj, AnnData):
        if any(n.inferred_type not in ("string", "empty") for n in (obj.obs_names, obj.var_names)):
            import copy

            return copy.deepcopy(obj)  # AnnData.copy() turns integer names into strings
        return obj.copy()
    if _is_spatialdata(obj):
        return {
            "tables": {k: t.copy() for k, t in obj.tables.items()},
            "elements": {kind: sorted(getattr(obj, kind)) for kind in ("images", "labels", "points", "shapes")},
        }
    if isinstance(obj, (list, tuple)):
        return [snapshot(o) for o in obj]
    if isinstance(obj, pd.DataFrame):
        return obj.copy(deep=True)
    if isinstance(obj, Path):
        return _tree(obj)
    return None


def _tree(path: Path) -> dict[str, bytes | None]:
    """What a path holds: every file's bytes by relative path (folders as ``None``); empty when nothing is there."""
    if path.is_file():
        return {".": path.read_bytes()}
    if not path.is_dir():
        return {}
    return {str(p.relative_to(path)): (p.read_bytes() if p.is_file() else None) for p in sorted(path.rglob("*"))}


def assert_unchanged(obj: Any, before: Any, where: str = "input") -> None:
    """Assert that ``obj`` still equals its :func:`snapshot` ``before``."""
    if isinstance(obj, AnnData):
        assert_adata_equal(obj, before, where=where)
    elif _is_spatialdata(obj):
        now = {kind: sorted(getattr(obj, kind)) for kind in ("images", "labels", "points", "shapes")}
        assert now == before["elements"], f"{where}: the SpatialData elements changed"
        assert sorted(obj.tables) == sorted(before["tables"]), f"{where}: the SpatialData tables changed"
        for k, t in obj.tables.items():
            assert_adata_equal(t, before["tables"][k], where=f"{where}.tables[{k!r}]")
    elif isinstance(obj, (list, tuple)):
        for i, (o, b) in enumerate(zip(obj, before, strict=True)):
            assert_unchanged(o, b, f"{where}[{i}]")
    elif isinstance(obj, pd.DataFrame):
        _frame_equal(obj, before, where)
    elif isinstance(obj, Path):
        assert _tree(obj) == before, f"{where}: the files at {obj} changed"


def assert_same_weights(m1: Any, m2: Any) -> None:
    """Two PHG2ST models hold bit-identical weights (same parameter names, values and dtypes)."""
    import torch

    s1, s2 = m1.module.state_dict(), m2.module.state_dict()
    if list(s1) != list(s2):
        _fail("weights", f"parameter names differ: {sorted(set(s1) ^ set(s2))}")
    for k, v in s1.items():
        torch.testing.assert_close(v, s2[k], rtol=0, atol=0, msg=k)
