"""What a model expects of its input beyond the slots: how the expression was prepared and how the features were made.

:func:`input_record` writes it into a model's ``info`` at training time; :func:`check_input` compares a section
against it before any prediction, in ``tl.impute`` and the ``phg2st impute`` command alike.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from anndata import AnnData

from phg2st_sc._constants import Keys
from phg2st_sc._errors import InputMismatchError

#: Fields of ``uns['phg2st_targets']['params']`` (``tl.prepare_targets``) that change the values of the targets.
NORMALISATION_FIELDS = ("target_sum", "log1p", "smooth")
#: Fields of ``uns[use_rep]['params']`` (``pp.embed_tiles``) that change what the features mean.
EMBEDDING_FIELDS = ("encoder", "encoder_fingerprint", "tile_size", "mpp", "grid_size", "input_size", "dim")


def _embedding_params(adata: AnnData, use_rep: str) -> dict[str, Any]:
    stored = adata.uns.get(use_rep)
    params = stored.get("params", {}) if isinstance(stored, dict) else {}
    return {k: _plain(params[k]) for k in EMBEDDING_FIELDS if k in params}


def _plain(value: Any) -> Any:
    """Numpy scalars (as h5ad gives them back) as Python values, so that records compare and serialise."""
    return value.item() if isinstance(value, np.generic) else value


#: A section whose median library size (expression summed over the model's genes, log1p undone) differs from the
#: training data's by more than this factor was normalised differently (CPM vs 1e4 differ by 100x). Panels cover a
#: different share of the counts in different tissues, so a tighter bound would refuse legitimate sections.
LIBRARY_FACTOR = 10.0


def _log1p_base(adata: AnnData) -> float | None:
    """The base of ``sc.pp.log1p`` recorded in ``uns['log1p']`` (``None``: natural log)."""
    rec = adata.uns.get("log1p")
    base = rec.get("base") if isinstance(rec, dict) else None
    return None if base is None else float(_plain(base))


def library_size(values: np.ndarray, log1p: bool, base: float | None = None) -> float:
    """Median over spots of the expression summed over genes, with log1p undone (``base ** x - 1``)."""
    x = np.asarray(values, dtype=np.float64)
    if log1p:
        x = np.expm1(x) if base is None else np.power(base, x) - 1.0
    return float(np.median(x.sum(axis=1))) if x.size else float("nan")


def input_record(adata: AnnData, use_rep: str, values: np.ndarray | None = None) -> dict[str, Any]:
    """The expectations of a model trained on ``adata``: target normalisation and the embedding's provenance.

    ``normalization`` is ``uns['phg2st_targets']['params']`` of :func:`~phg2st_sc.tl.prepare_targets` when the
    targets were made by it, else ``{"log1p": <whether uns['log1p'] is set>, "log1p_base": ...}`` (the user's own
    normalisation); with ``values`` (the training expression of the model's genes), also the median
    ``library_size``. ``embedding`` is the encoder and tile geometry of :func:`~phg2st_sc.pp.embed_tiles` (empty for
    features made otherwise); ``encoder`` and ``encoder_fingerprint`` repeat two of its fields for older readers.
    """
    targets = adata.uns.get(Keys.TARGETS_UNS, {}).get("params")
    embedding = _embedding_params(adata, use_rep)
    if targets:
        norm = {k: _plain(v) for k, v in dict(targets).items()}
    else:
        norm = {"log1p": "log1p" in adata.uns, "log1p_base": _log1p_base(adata)}
    if values is not None:
        norm["library_size"] = library_size(values, bool(norm.get("log1p")), norm.get("log1p_base"))
    return {
        "normalization": norm,
        "embedding": embedding,
        "encoder": embedding.get("encoder", ""),
        "encoder_fingerprint": embedding.get("encoder_fingerprint", ""),
    }


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool | str):
        return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-12)
    return a == b


def _describe(norm: dict[str, Any]) -> str:
    if "protocol" not in norm:
        return "the user's own normalisation" + (", log1p-transformed" if norm.get("log1p") else "")
    total = norm.get("target_sum", -1)
    steps = [f"normalize_total({total:g})" if total and total > 0 else "no library-size normalisation"]
    steps += ["log1p"] if norm.get("log1p") else []
    steps += ["3x3 smoothing"] if norm.get("smooth") else []
    return f"protocol {norm.get('protocol')!r} ({' + '.join(steps)})"


def _portable(fingerprint: Any) -> bool:
    """Fingerprints of weights files hold the file's path and time, which differ between machines: not compared."""
    return isinstance(fingerprint, str) and bool(fingerprint) and "/" not in fingerprint and "\\" not in fingerprint


def check_embedding(info: dict[str, Any], adata: AnnData, use_rep: str) -> None:
    """Refuse features made by another encoder or tile geometry than the model's training features."""
    expected = dict(info.get("embedding") or {})
    if not expected and info.get("encoder"):  # a model file of an earlier version
        expected = {"encoder": info["encoder"], "encoder_fingerprint": info.get("encoder_fingerprint", "")}
    if not expected.get("encoder"):
        return  # the model was trained on features made outside embed_tiles: nothing recorded to compare
    found = _embedding_params(adata, use_rep)
    if not found:
        raise InputMismatchError(
            f"The model was trained on `obsm[{use_rep!r}]` made by `pp.embed_tiles` with encoder "
            f"{expected['encoder']!r}; this data's `obsm[{use_rep!r}]` carries no record of how it was made "
            f"(`uns[{use_rep!r}]['params']`). Embed it the same way: `phg2st.pp.embed_tiles(adata, "
            f"encoder={expected['encoder']!r}"
            + (f", tile_size={expected['tile_size']}" if "tile_size" in expected else "")
            + (f", mpp={expected['mpp']}" if expected.get("mpp", -1) > 0 else "")
            + ")`."
        )
    differ = []
    for key in EMBEDDING_FIELDS:
        if key not in expected or key not in found:
            continue
        if key == "encoder_fingerprint" and not (_portable(expected[key]) and _portable(found[key])):
            continue
        if not _same(expected[key], found[key]):
            differ.append(f"{key} {found[key]!r} here, {expected[key]!r} in training")
    if differ:
        raise InputMismatchError(
            f"`obsm[{use_rep!r}]` was made differently from the model's training features: {'; '.join(differ)}. "
            f"Embed the tiles as in training (`phg2st.pp.embed_tiles` with the model's encoder, `tile_size` and "
            "`mpp`; `model.info['embedding']` lists them)."
        )


def check_normalisation(info: dict[str, Any], adata: AnnData, values: np.ndarray | None = None) -> None:
    """Refuse expression that was not prepared as the model's training targets were.

    ``values`` (the prompt spots' expression, optional) are checked against the scale the normalisation allows:
    log1p-transformed targets cannot exceed ``log1p(target_sum)``, so raw counts are recognised even where the
    data's record says otherwise.
    """
    expected = dict(info.get("normalization") or {})
    recorded = adata.uns.get(Keys.TARGETS_UNS, {}).get("params")
    fix = "`adata = phg2st.tl.prepare_targets(adata, model)` on the raw counts (the model's protocol and genes)"
    if "protocol" in expected:
        if recorded is None:
            raise InputMismatchError(
                f"The model was trained on targets made by `tl.prepare_targets` with {_describe(expected)}; this "
                f"data carries no record of such a preparation (`uns[{Keys.TARGETS_UNS!r}]`). Prepare it the same "
                f"way: {fix}."
            )
        differ = [k for k in NORMALISATION_FIELDS if not _same(_plain(recorded.get(k)), expected.get(k))]
        if differ:
            raise InputMismatchError(
                f"The data's expression was prepared with {_describe(dict(recorded))}; the model was trained on "
                f"{_describe(expected)} (they differ in {differ}). Prepare it as in training: {fix}."
            )
    elif "log1p" in expected and ("log1p" in adata.uns) != bool(expected["log1p"]):
        said = "is" if expected["log1p"] else "is not"
        raise InputMismatchError(
            f"The model was trained on expression that {said} log1p-transformed (`uns['log1p']`), and this data's "
            f"expression {'is not' if expected['log1p'] else 'is'}: normalise it as the training data were."
        )
    elif expected.get("log1p") and "log1p_base" in expected and _log1p_base(adata) != expected["log1p_base"]:
        raise InputMismatchError(
            f"The data were log-transformed with base {_log1p_base(adata) or 'e'}, the model's training data with "
            f"base {expected['log1p_base'] or 'e'} (`uns['log1p']['base']`): transform them the same way."
        )
    if values is not None and expected.get("log1p"):
        total = expected.get("target_sum", -1)
        base = expected.get("log1p_base")
        ceiling = math.log1p(total if isinstance(total, (int, float)) and total > 0 else 1e7)
        ceiling = ceiling / math.log(base) if isinstance(base, (int, float)) and base > 1 else ceiling
        ceiling += 0.5
        finite = values[np.isfinite(values)]
        if finite.size and float(finite.max()) > ceiling:
            raise InputMismatchError(
                f"The expression reaches {float(finite.max()):.4g}, more than log1p-transformed values can "
                f"(at most {ceiling - 0.5:.3g} for {_describe(expected)}): these look like raw or unlogged counts. "
                + (f"Prepare them as in training: {fix}." if "protocol" in expected else "Normalise them as the "
                   "training data were.")
            )  # fmt: skip
    if values is not None and isinstance(expected.get("library_size"), (int, float)) and expected["library_size"] > 0:
        found = library_size(values, bool(expected.get("log1p")), expected.get("log1p_base"))
        ratio = found / expected["library_size"] if np.isfinite(found) else 1.0
        if not 1 / LIBRARY_FACTOR <= ratio <= LIBRARY_FACTOR:
            raise InputMismatchError(
                f"The prompt spots' expression adds up to a median of {found:.4g} per spot over the model's genes "
                f"(log1p undone), the training data's to {expected['library_size']:.4g}: {ratio:.3g} times as much, so "
                "the data were normalised differently (another `normalize_total` target, or none). "
                + (f"Prepare them as in training: {fix}." if "protocol" in expected else "Normalise them as the "
                   "training data were.")
            )  # fmt: skip
