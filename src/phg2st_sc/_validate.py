"""Input checks that raise before any work starts, with the fix in the message."""

from __future__ import annotations

from numbers import Integral, Real
from typing import Any

import numpy as np
from anndata import AnnData
from scipy import sparse

from ._constants import Keys
from ._utils import as_dense


def check_positive_int(value: Any, name: str, *, minimum: int = 1) -> int:
    """Return ``value`` as ``int`` if it is an integer >= ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise TypeError(f"`{name}` must be an integer, got {type(value).__name__}.")
    if value < minimum:
        raise ValueError(f"`{name}` must be >= {minimum}, got {value}.")
    return int(value)


def check_fraction(value: Any, name: str = "fraction") -> float:
    """Return ``value`` if it is a number strictly between 0 and 1."""
    if isinstance(value, bool) or not isinstance(value, Real):
        raise TypeError(f"`{name}` must be a number in (0, 1), got {type(value).__name__}.")
    if not 0 < value < 1:
        raise ValueError(f"`{name}` must be in (0, 1), got {value}.")
    return float(value)


def check_choice(value: Any, name: str, choices: tuple[str, ...]) -> str:
    """Return ``value`` if it is one of ``choices``."""
    if value not in choices:
        raise ValueError(f"`{name}` must be one of {list(choices)}, got {value!r}.")
    return value


def check_nonempty(adata: AnnData) -> None:
    """Fail on an AnnData without spots or genes."""
    if adata.n_obs == 0 or adata.n_vars == 0:
        raise ValueError(
            f"The AnnData is empty ({adata.n_obs} spots x {adata.n_vars} genes); check the subsetting or filtering "
            "that produced it."
        )


def check_unique_names(adata: AnnData, *, obs: bool = True, var: bool = True) -> None:
    """Fail on duplicated spot (``obs``) or gene (``var``) names (genes are matched by name, spots written by it)."""
    for axis, names, what in (("obs", adata.obs_names, "spot"), ("var", adata.var_names, "gene")):
        if not (obs if axis == "obs" else var) or names.is_unique:
            continue
        dup = names[names.duplicated()].unique()
        raise ValueError(
            f"`adata.{axis}_names` has {len(dup)} duplicated {what} names (e.g. {dup[:3].tolist()}): each {what} must "
            f"be identifiable by its name. Run `adata.{axis}_names_make_unique()` first."
        )


def check_numeric(x: Any, where: str) -> None:
    """Fail on arrays (dense or sparse) that do not hold real numbers (strings, objects, complex numbers).

    Booleans, integers of any width (``uint8`` included) and floats (``float16`` included) pass: readers convert
    them to a wider float type before any arithmetic.
    """
    dtype = getattr(x, "dtype", None)
    if dtype is None:
        dtype = np.asarray(x).dtype
    if np.dtype(dtype).kind not in "biuf":
        raise TypeError(
            f"`{where}` must be numeric (integers or floats), got dtype {dtype}; convert it, e.g. "
            f"`.astype(np.float32)`."
        )


def check_counts(x: Any, where: str = "adata.X", *, fix: str = "") -> None:
    """Fail unless ``x`` (dense or sparse) holds raw counts: finite, non-negative integers of a numeric dtype.

    Counts of any numeric dtype (``uint8``, ``int32``, ``float32``, ...) are accepted; callers convert them to
    floats before any arithmetic, so narrow integer types cannot overflow. ``fix`` is appended to the message of
    non-integer values (where to find the counts).
    """
    check_numeric(x, where)
    values = x.data if sparse.issparse(x) else np.asarray(x)
    if values.dtype.kind == "f":
        if not np.isfinite(values).all():
            raise ValueError(f"`{where}` contains NaN or infinite values; raw counts are expected.")
        if not np.allclose(values, np.round(values)):
            raise ValueError(
                f"`{where}` is not integer: raw counts are expected (is it normalised or log-transformed?). "
                + (fix or "Pass the raw counts.")
            )
    if values.dtype.kind in "if" and (values < 0).any():
        raise ValueError(f"`{where}` has negative values; raw counts are expected.")


def check_inside_image(
    coords: np.ndarray, width: float, height: float, *, hint: str, spatial_key: str = Keys.SPATIAL, slack: float = 0.0
) -> None:
    """Fail when spot centres lie outside a ``width`` x ``height`` image (more than ``slack`` pixels beyond it).

    Such coordinates are not full-resolution pixels of that image; ``hint`` says how to fix them.
    """
    outside = (
        (coords[:, 0] < -slack) | (coords[:, 1] < -slack) | (coords[:, 0] >= width + slack)
        | (coords[:, 1] >= height + slack)
    )  # fmt: skip
    if outside.any():
        raise ValueError(
            f"{int(outside.sum())} of {len(coords)} spot centres lie outside the {width:.0f} x {height:.0f} image "
            f"(e.g. {coords[outside][0].round(1).tolist()}): `obsm[{spatial_key!r}]` must be in full-resolution "
            f"pixels of this image; {hint}."
        )


def get_coordinates(adata: AnnData, spatial_key: str = Keys.SPATIAL) -> np.ndarray:
    """Return ``adata.obsm[spatial_key]`` as a finite (n, 2) float array."""
    if spatial_key not in adata.obsm:
        raise KeyError(
            f"`adata.obsm[{spatial_key!r}]` is missing: spot coordinates are needed. Read the data with a "
            "`phg2st.datasets` reader, or set `adata.obsm['spatial']` to an (n_spots, 2) array of pixel (x, y)."
        )
    check_numeric(adata.obsm[spatial_key], f"adata.obsm[{spatial_key!r}]")
    coords = np.asarray(adata.obsm[spatial_key], dtype=np.float64)
    if coords.ndim != 2 or coords.shape[1] < 2 or coords.shape[0] != adata.n_obs:
        raise ValueError(f"`adata.obsm[{spatial_key!r}]` must have shape (n_spots, 2), got {coords.shape}.")
    coords = coords[:, :2]
    if not np.isfinite(coords).all():
        raise ValueError(f"`adata.obsm[{spatial_key!r}]` contains NaN or infinite coordinates.")
    return coords


def get_array_coordinates(adata: AnnData) -> np.ndarray:
    """Return the integer array grid coordinates (row, col) of every spot."""
    missing = [k for k in (Keys.ARRAY_ROW, Keys.ARRAY_COL) if k not in adata.obs]
    if missing:
        raise KeyError(
            f"`adata.obs` lacks {missing}: integer array coordinates are needed. The `phg2st.datasets` readers and "
            "`sc.read_visium` set them."
        )
    rc = adata.obs[[Keys.ARRAY_ROW, Keys.ARRAY_COL]].to_numpy(dtype=np.float64)
    if not np.isfinite(rc).all() or not np.allclose(rc, np.round(rc)):
        raise ValueError("`adata.obs['array_row']` and `adata.obs['array_col']` must be finite integers.")
    return np.round(rc).astype(np.int64)


def get_matrix(
    adata: AnnData, layer: str | None, *, dtype: type = np.float64, unmeasured_rows: bool = False
) -> np.ndarray:
    """Return ``adata.X`` or ``adata.layers[layer]`` as a dense, finite array.

    With ``unmeasured_rows``, rows that are entirely ``NaN`` (spots without measurements) are allowed.
    """
    if layer is None:
        x = adata.X
        where = "adata.X"
    else:
        if layer not in adata.layers:
            raise KeyError(f"No layer {layer!r} in `adata.layers` (it has {list(adata.layers)}).")
        x = adata.layers[layer]
        where = f"adata.layers[{layer!r}]"
    if x is None:
        raise ValueError(f"`{where}` is empty.")
    check_numeric(x, where)
    arr = as_dense(x, dtype=dtype)
    bad = ~np.isfinite(arr)
    if unmeasured_rows:
        bad &= ~np.isnan(arr).all(axis=1, keepdims=True)
    if bad.any():
        n_bad = int(bad.sum())
        raise ValueError(f"`{where}` contains {n_bad} NaN or infinite values; remove or impute them first.")
    return arr


def get_prompt_mask(adata: AnnData, prompt_key: str) -> np.ndarray:
    """Return the boolean prompt column ``adata.obs[prompt_key]``."""
    if prompt_key not in adata.obs:
        raise KeyError(
            f"`adata.obs[{prompt_key!r}]` is missing: mark the measured (prompt) spots first, "
            f"e.g. with `phg2st.tl.select_prompts(adata, key_added={prompt_key!r})`."
        )
    col = adata.obs[prompt_key]
    if col.dtype != bool:
        if col.isna().any() or not set(np.unique(col.to_numpy())).issubset({0, 1}):
            raise TypeError(f"`adata.obs[{prompt_key!r}]` must be boolean (True = measured prompt spot).")
    mask = col.to_numpy().astype(bool)
    if mask.sum() == 0:
        raise ValueError(f"`adata.obs[{prompt_key!r}]` marks no spot as a prompt; at least one is needed.")
    return mask


def get_representation(adata: AnnData, use_rep: str, *, dtype: type = np.float64) -> np.ndarray:
    """Return ``adata.obsm[use_rep]`` as a finite 2-D float array of ``dtype``.

    Any real dtype is accepted: ``float16`` (or integer) features are upcast to ``dtype``.
    """
    if use_rep not in adata.obsm:
        raise KeyError(
            f"`adata.obsm[{use_rep!r}]` is missing: image features are needed. Compute tile embeddings into `adata.obsm` "
            f"first, or name an existing representation with `use_rep=` (has {list(adata.obsm)})."
        )
    check_numeric(adata.obsm[use_rep], f"adata.obsm[{use_rep!r}]")
    rep = as_dense(adata.obsm[use_rep], dtype=dtype)
    if rep.ndim != 2 or rep.shape[0] != adata.n_obs:
        raise ValueError(f"`adata.obsm[{use_rep!r}]` must have shape (n_spots, n_features), got {rep.shape}.")
    if not np.isfinite(rep).all():
        raise ValueError(f"`adata.obsm[{use_rep!r}]` contains NaN or infinite values.")
    return rep
