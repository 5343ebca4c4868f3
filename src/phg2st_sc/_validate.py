"""Input checks that raise before any work starts, with the fix in the message."""

from __future__ import annotations

from numbers import Integral, Real
from typing import Any, NamedTuple

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


def check_positive_real(value: Any, name: str, *, maximum: float | None = None) -> float:
    """Return ``value`` as ``float`` if it is a finite number > 0 (and <= ``maximum``)."""
    if isinstance(value, bool) or not isinstance(value, Real):
        raise TypeError(f"`{name}` must be a number, got {type(value).__name__}.")
    if not np.isfinite(value) or value <= 0 or (maximum is not None and value > maximum):
        bound = f" and at most {maximum:g}" if maximum is not None else ""
        raise ValueError(f"`{name}` must be a finite number above 0{bound}, got {value}.")
    return float(value)


def check_seed(value: Any, name: str = "seed") -> int:
    """Return ``value`` if it is a non-negative integer below 2**32 (what every random generator accepts)."""
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise TypeError(f"`{name}` must be an integer, got {type(value).__name__}.")
    if not 0 <= value < 2**32:
        raise ValueError(f"`{name}` must be an integer from 0 to 2**32 - 1, got {value}.")
    return int(value)


def check_gene_list(genes: Any, name: str = "genes") -> list[str]:
    """Return ``genes`` as a list of distinct, non-empty names; a bare string is refused (it is not a list)."""
    if isinstance(genes, (str, bytes)):
        raise TypeError(f"`{name}` must be a list of gene names, got the string {genes!r}: use `{name}=[{genes!r}]`.")
    try:
        genes = list(genes)
    except TypeError as err:
        raise TypeError(f"`{name}` must be a list of gene names, got {type(genes).__name__}.") from err
    if not genes:
        raise ValueError(f"`{name}` is empty: give at least one gene.")
    bad = [g for g in genes if not isinstance(g, str) or not g.strip()]
    if bad:
        raise TypeError(f"`{name}` must hold gene names (non-empty strings), got {bad[:3]!r}.")
    twice = sorted({g for g in genes if genes.count(g) > 1}) if len(set(genes)) != len(genes) else []
    if twice:
        raise ValueError(f"`{name}` lists some genes twice ({twice[:5]}).")
    return [str(g) for g in genes]


def check_trainer_kwargs(kwargs: dict[str, Any], *, own: list[str]) -> None:
    """Refuse extra keyword arguments that ``lightning.Trainer`` does not take (a typo of a setting, most often).

    ``own`` are the calling function's parameters, offered as suggestions with Trainer's.
    """
    if not kwargs:
        return
    import difflib
    import inspect

    import lightning as L

    accepted = set(inspect.signature(L.Trainer).parameters) - {"self"}
    unknown = [k for k in kwargs if k not in accepted]
    if unknown:
        key = unknown[0]
        close = difflib.get_close_matches(key, [*own, *accepted], n=1, cutoff=0.6)
        raise TypeError(
            f"Unknown setting `{key}`"
            + (f" (did you mean `{close[0]}`?)" if close else "")
            + ": settings other than tl.fit's own are passed to `lightning.Trainer`, which has no such parameter."
        )


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
    """Fail on duplicated or non-string spot (``obs``) or gene (``var``) names.

    Genes are matched by name and spots written by it; anndata indexes and writes string names only.
    """
    for axis, names, what in (("obs", adata.obs_names, "spot"), ("var", adata.var_names, "gene")):
        if not (obs if axis == "obs" else var):
            continue
        if names.inferred_type not in ("string", "empty"):
            raise TypeError(
                f"`adata.{axis}_names` must be strings, got {names.inferred_type} names (e.g. {names[:3].tolist()}): "
                f"run `adata.{axis}_names = adata.{axis}_names.astype(str)` first."
            )
        if names.is_unique:
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
    where = f"adata.obsm[{spatial_key!r}]"
    check_numeric(adata.obsm[spatial_key], where)
    raw = adata.obsm[spatial_key]
    if np.dtype(getattr(raw, "dtype", np.asarray(raw).dtype)).kind == "b":
        raise TypeError(f"`{where}` is boolean: spot coordinates must be numbers (pixels), not True/False.")
    coords = np.asarray(raw, dtype=np.float64)
    if coords.ndim != 2 or coords.shape[1] < 2 or coords.shape[0] != adata.n_obs:
        raise ValueError(f"`{where}` must have shape (n_spots, 2), got {coords.shape}.")
    coords = coords[:, :2]
    if not np.isfinite(coords).all():
        raise ValueError(f"`{where}` contains NaN or infinite coordinates.")
    check_layout(coords, where)
    return coords


def check_layout(coords: np.ndarray, where: str = "the coordinates") -> None:
    """Fail on a degenerate layout: all spots at one point, or most of them sharing their position with another.

    Distances between spots then say nothing (the spot pitch is 0): interpolation, the hypergraph and the virtual
    spot lattice would all work on noise. A few repeated positions are allowed.
    """
    n = len(coords)
    if n < 2:
        return
    tol = 1e-6 * max(1.0, float(np.abs(coords).max()))  # positions closer than this are the same position
    snapped = np.round(np.asarray(coords[:, :2], dtype=np.float64) / tol)
    points = np.ascontiguousarray(snapped).view(np.complex128).ravel()  # one 1-D sort
    _, counts = np.unique(points, return_counts=True)
    distinct, shared = len(counts), int(counts[counts > 1].sum())
    if distinct == 1:
        raise ValueError(
            f"All {n} spots of `{where}` lie at the same point {coords[0].tolist()}: the coordinates are not the "
            "spot positions (were they overwritten, or taken from the wrong column?)."
        )
    if 2 * shared > n:
        raise ValueError(
            f"In `{where}`, {shared} of {n} spots share their position with another ({distinct} distinct positions): "
            "with most spots stacked, the distance between neighbouring spots is 0 and "
            "distances say nothing. Give each spot its own centre (full-resolution pixels), or remove the repeated "
            "spots."
        )


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


def boolean_column(adata: AnnData, key: str, meaning: str) -> np.ndarray:
    """``adata.obs[key]`` as a boolean mask; it must be boolean or hold only 0 and 1 (``True`` = ``meaning``)."""
    col = adata.obs[key]
    if col.dtype != bool and (col.isna().any() or not set(np.unique(col.to_numpy())).issubset({0, 1})):
        raise TypeError(f"`adata.obs[{key!r}]` must be boolean (True = {meaning}).")
    return col.to_numpy().astype(bool)


def get_prompt_mask(adata: AnnData, prompt_key: str) -> np.ndarray:
    """Return the boolean prompt column ``adata.obs[prompt_key]``."""
    if prompt_key not in adata.obs:
        raise KeyError(
            f"`adata.obs[{prompt_key!r}]` is missing: mark the measured (prompt) spots first, "
            f"e.g. with `phg2st.tl.select_prompts(adata, key_added={prompt_key!r})`."
        )
    mask = boolean_column(adata, prompt_key, "measured prompt spot")
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


class Missing(NamedTuple):
    """What :func:`readiness` found missing: the exception to raise, its message, and a few words for a summary."""

    error: type
    message: str
    short: str


def readiness(adata: AnnData, use_rep: str, hypergraph_key: str = Keys.HYPERGRAPH) -> Missing | None:
    """What a section lacks for ``tl.fit`` / ``tl.impute`` with the features ``obsm[use_rep]``, or ``None``.

    The one readiness check of the package (the model, ``tl.benchmark`` and the CLI use it): the features, and the
    spot hypergraph built from them (``pp.build_hypergraph``; a hypergraph without a record of its features is
    taken as built from them).
    """
    if use_rep not in adata.obsm:
        return Missing(KeyError, (
            f"`adata.obsm[{use_rep!r}]` is missing: image features are needed. Compute tile embeddings into "
            f"`adata.obsm` first (`phg2st.pp.embed_tiles`), or name an existing representation with `use_rep=` "
            f"(has {list(adata.obsm)})."
        ), f"no `obsm[{use_rep!r}]`")  # fmt: skip
    short = f"no hypergraph built from `obsm[{use_rep!r}]`"
    if Keys.incidence(hypergraph_key) not in adata.obsp:
        return Missing(KeyError, (
            f"`adata.obsp[{Keys.incidence(hypergraph_key)!r}]` is missing: run `phg2st.pp.build_hypergraph(adata, "
            f"use_rep={use_rep!r}, key_added={hypergraph_key!r})` first."
        ), short)  # fmt: skip
    graph = adata.uns.get(Keys.hypergraph(hypergraph_key), {})
    built_from = graph.get("params", {}).get("use_rep", use_rep) if isinstance(graph, dict) else use_rep
    if built_from != use_rep:
        return Missing(ValueError, (
            f"The hypergraph `{hypergraph_key}` was built from `obsm[{built_from!r}]`, not {use_rep!r}: rebuild it "
            f"with `phg2st.pp.build_hypergraph(adata, use_rep={use_rep!r})`."
        ), short)  # fmt: skip
    return None


def check_ready(adata: AnnData, use_rep: str, hypergraph_key: str = Keys.HYPERGRAPH) -> None:
    """Raise :func:`readiness`'s error when the section lacks the features or the hypergraph."""
    missing = readiness(adata, use_rep, hypergraph_key)
    if missing is not None:
        raise missing.error(missing.message)
