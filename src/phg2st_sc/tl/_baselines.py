"""Honest baselines: fill held-out spots from the prompts alone (and, where present, image features).

Every predictor here is a pure function of arrays: the measured expression of the prompt spots, their
coordinates and/or image features, and the spots to predict. :func:`baseline` is the AnnData-facing wrapper.
"""

from __future__ import annotations

import logging
import warnings
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from anndata import AnnData
from scipy.spatial import cKDTree

from phg2st_sc._constants import Keys
from phg2st_sc._docs import inject_docs
from phg2st_sc._utils import (
    IDW_K,
    IDW_POWER,
    centre_scale,
    check_slots,
    fold_splits,
    get_table,
    inverse_distance,
    spot_pitch,
    standardised,
    varying,
    write_slots,
)
from phg2st_sc._validate import (
    check_choice,
    check_nonempty,
    check_positive_int,
    check_seed,
    check_unique_names,
    get_coordinates,
    get_matrix,
    get_prompt_mask,
    get_representation,
)
from phg2st_sc.tl._metrics import prompt_fingerprint

if TYPE_CHECKING:
    from spatialdata import SpatialData

logger = logging.getLogger("phg2st_sc")

METHODS = ("mean", "idw", "gp", "feature_knn", "ridge", "stack")
IMAGE_METHODS = ("feature_knn", "ridge", "stack")
Method = Literal["mean", "idw", "gp", "feature_knn", "ridge", "stack"]

# Above this many prompts the exact GP would need more than ~1 GB for its kernel matrix.
GP_MAX_PROMPTS = 10_000


def predict_mean(y_prompt: np.ndarray, n_query: int) -> np.ndarray:
    """Every query spot gets the mean of the prompts."""
    return np.broadcast_to(y_prompt.mean(axis=0), (n_query, y_prompt.shape[1])).copy()


def predict_idw(
    xy_prompt: np.ndarray, y_prompt: np.ndarray, xy_query: np.ndarray, *, k: int = IDW_K, power: float = IDW_POWER
) -> np.ndarray:
    """Inverse-distance weighting over the ``k`` nearest prompts: weights ``d ** -power``, normalised.

    A query spot at the position of a prompt takes that prompt's value (:func:`phg2st_sc._utils.inverse_distance`,
    which the adaptive variant's layer uses as its IDW component).
    """
    return inverse_distance(xy_prompt, y_prompt, xy_query, k=k, power=power)


def predict_gp(
    xy_prompt: np.ndarray,
    y_prompt: np.ndarray,
    xy_query: np.ndarray,
    *,
    length_scale: float | None = None,
    unit: float = 1.0,
    seed: int = 0,
) -> tuple[np.ndarray, dict[str, float]]:
    """Gaussian-process regression (simple kriging) on coordinates, one kernel shared by all genes.

    Genes are standardised over the prompts; the kernel ``C * RBF(l) + White(noise)`` has its amplitude, length
    scale and noise fitted by maximising the marginal likelihood summed over genes, on the prompts only.
    Coordinates are divided by ``unit`` (the spot pitch) so that the length-scale bounds, 0.1 to 100 pitches,
    fit any pixel size. Returns the predictions and the fitted kernel (amplitude, length scale in the input's
    units, noise), all in standardised-expression units.

    A gene constant over the prompts (all values equal) is predicted as that value and left out of the fit: it says
    nothing about the kernel, and its log-determinant alone would pull the shared amplitude and noise down (a gene
    zero at every prompt is common on raw counts). With no gene that varies nothing is fitted, and the kernel's
    values are NaN.
    """
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.gaussian_process import GaussianProcessRegressor
    from sklearn.gaussian_process.kernels import RBF, ConstantKernel, WhiteKernel

    if len(xy_prompt) > GP_MAX_PROMPTS:
        from phg2st_sc._errors import InsufficientMemoryError

        raise InsufficientMemoryError(
            f"The exact Gaussian process on {len(xy_prompt)} prompts needs a {len(xy_prompt)}^2 kernel matrix; "
            f"use `method='idw'` or fewer prompts (at most {GP_MAX_PROMPTS})."
        )
    mu, sd = centre_scale(y_prompt)
    live = np.flatnonzero(varying(y_prompt))
    pred = np.zeros((len(xy_query), y_prompt.shape[1]))
    if not len(live):
        return pred + mu, dict.fromkeys(("amplitude", "length_scale", "noise"), float("nan"))
    z = (y_prompt[:, live] - mu[live]) / sd[live]
    init = 3.0 if length_scale is None else length_scale / unit
    kernel = ConstantKernel(1.0, (1e-2, 1e2)) * RBF(init, (0.1, 100.0)) + WhiteKernel(0.5, (1e-5, 1e1))
    gp = GaussianProcessRegressor(
        kernel=kernel,
        normalize_y=False,
        n_restarts_optimizer=2 if length_scale is None else 0,
        optimizer="fmin_l_bfgs_b" if length_scale is None else None,
        random_state=seed,
    )
    with warnings.catch_warnings():
        # Hyperparameters at a bound (e.g. almost no noise on smoothed targets) are a valid optimum here.
        warnings.simplefilter("ignore", ConvergenceWarning)
        gp.fit(xy_prompt / unit, z)
    pred[:, live] = gp.predict(xy_query / unit).reshape(len(xy_query), -1)
    fitted = gp.kernel_.get_params()
    kernel_params = {
        "amplitude": float(fitted["k1__k1__constant_value"]),
        "length_scale": float(fitted["k1__k2__length_scale"]) * unit,
        "noise": float(fitted["k2__noise_level"]),
    }
    return pred * sd + mu, kernel_params


def _prepare_features(features: np.ndarray, n_pcs: int | None) -> np.ndarray:
    """Standardise image features over all spots and optionally project onto their first principal components.

    Uses only the images (never expression), so fitting on every spot of the section leaks nothing.
    """
    z = standardised(features)
    if n_pcs is None or n_pcs >= min(z.shape):
        return z
    u, s, _ = np.linalg.svd(z - z.mean(axis=0), full_matrices=False)
    return u[:, :n_pcs] * s[:n_pcs]


def predict_feature_knn(f_prompt: np.ndarray, y_prompt: np.ndarray, f_query: np.ndarray, *, k: int = 6) -> np.ndarray:
    """Mean expression of the ``k`` prompts nearest in image-feature space."""
    k = min(k, len(f_prompt))
    _, idx = cKDTree(f_prompt).query(f_query, k=k)
    idx = idx.reshape(len(f_query), k)
    return y_prompt[idx].mean(axis=1)


def predict_ridge(
    f_prompt: np.ndarray, y_prompt: np.ndarray, f_query: np.ndarray, *, alphas: np.ndarray | None = None
) -> tuple[np.ndarray, float]:
    """Ridge regression from image features to expression, fitted on the prompts.

    One penalty for all genes, chosen by efficient leave-one-out cross-validation over ``alphas``. Returns the
    predictions and the penalty.
    """
    from sklearn.linear_model import RidgeCV

    alphas = np.logspace(-2, 5, 15) if alphas is None else alphas
    model = RidgeCV(alphas=alphas).fit(f_prompt, y_prompt)
    return model.predict(f_query).reshape(len(f_query), -1), float(model.alpha_)


def _folds(n: int, n_folds: int, rng: np.random.Generator) -> list[np.ndarray]:
    return np.array_split(rng.permutation(n), n_folds)


def predict_stack(
    xy_prompt: np.ndarray,
    f_prompt: np.ndarray,
    y_prompt: np.ndarray,
    xy_query: np.ndarray,
    f_query: np.ndarray,
    *,
    k: int = IDW_K,
    power: float = IDW_POWER,
    n_folds: int = 5,
    seed: int = 0,
) -> tuple[np.ndarray, tuple[float, float]]:
    """Linear stack of IDW and ridge: ``mean + a * (idw - mean) + b * (ridge - mean)``.

    The two weights are shared by all genes and fitted by least squares on out-of-fold predictions at the
    prompts (``n_folds``-fold cross-fitting over the prompts, genes standardised), so nothing but the prompts
    is used. Returns the predictions and ``(a, b)``.
    """
    p = len(y_prompt)
    n_folds = max(2, min(n_folds, p))
    rng = np.random.default_rng(seed)
    sd = centre_scale(y_prompt)[1]
    cols_idw, cols_ridge, target = [], [], []
    for test, train in fold_splits(p, _folds(p, n_folds, rng)):
        if len(train) < 2:
            continue
        mu = y_prompt[train].mean(axis=0)
        idw = predict_idw(xy_prompt[train], y_prompt[train], xy_prompt[test], k=k, power=power)
        ridge, _ = predict_ridge(f_prompt[train], y_prompt[train], f_prompt[test])
        cols_idw.append(((idw - mu) / sd).ravel())
        cols_ridge.append(((ridge - mu) / sd).ravel())
        target.append(((y_prompt[test] - mu) / sd).ravel())
    design = np.column_stack([np.concatenate(cols_idw), np.concatenate(cols_ridge)])
    (a, b), *_ = np.linalg.lstsq(design, np.concatenate(target), rcond=None)
    mu = y_prompt.mean(axis=0)
    idw = predict_idw(xy_prompt, y_prompt, xy_query, k=k, power=power)
    ridge, _ = predict_ridge(f_prompt, y_prompt, f_query)
    return mu + a * (idw - mu) + b * (ridge - mu), (float(a), float(b))


@inject_docs
def baseline(
    adata: AnnData | SpatialData,
    *,
    method: Method,
    prompt_key: str = Keys.PROMPT,
    layer: str | None = None,
    layer_added: str | None = None,
    k: int = IDW_K,
    power: float = IDW_POWER,
    use_rep: str | None = None,
    n_pcs: int | None = 64,
    spatial_key: str = Keys.SPATIAL,
    seed: int = 0,
    table_key: str | None = None,
    overwrite: bool = False,
    copy: bool = False,
) -> AnnData | None:
    """Fill the held-out spots from the prompt spots with a simple, honest baseline.

    The prompt spots (``obs[prompt_key]``) keep their measured values; every other spot is predicted from them.
    A method that uses the image must beat these under the same protocol to be worth running.

    Parameters
    ----------
    adata
        AnnData (normalised expression in ``layer``, coordinates in ``obsm[spatial_key]``), or SpatialData with
        ``table_key``.
    method
        - ``"mean"``: the mean of the prompts at every held-out spot.
        - ``"idw"``: inverse-distance weighting (``d ** -power``) over the ``k`` nearest prompts.
        - ``"gp"``: Gaussian-process regression (kriging) on coordinates; one RBF + noise kernel shared by all
          genes, its hyperparameters fitted on the prompts (a gene constant over the prompts is predicted as that
          value and does not take part in the fit).
        - ``"feature_knn"``: mean of the ``k`` prompts nearest in image-feature space (``obsm[use_rep]``).
        - ``"ridge"``: ridge regression from image features to expression, fitted on the prompts.
        - ``"stack"``: ``mean + a (idw - mean) + b (ridge - mean)``, with ``a, b`` fitted by cross-fitting on
          the prompts.
    prompt_key
        Boolean ``obs`` column marking the prompt spots (see :func:`select_prompts`).
    layer
        Expression to read; ``None`` uses ``.X``. Normalise first (``sc.pp.normalize_total``, ``sc.pp.log1p``).
    layer_added
        Layer to write; defaults to ``"baseline_<method>"``.
    k, power
        Neighbours and distance exponent for ``"idw"``, ``"feature_knn"`` and ``"stack"``.
    use_rep
        ``obsm`` key with image features, required by the image methods; any real dtype (``float16`` is upcast).
    n_pcs
        Principal components of the standardised features used by the image methods (an integer >= 1, or ``None``:
        all).
    spatial_key
        ``obsm`` key with spot coordinates.
    seed
        Seed of the GP optimiser restarts and of the stack's folds.
    {table_key}
    {overwrite}
    {copy}

    Returns
    -------
    {returns_copy}

    ``.layers['{{layer_added}}']``
        Predicted expression (float32), equal to the measured values at prompt spots.
    ``.uns['{{layer_added}}']['params']``
        The method and its settings, with what was fitted: the GP kernel (``amplitude``, ``length_scale`` in
        coordinate units, ``noise``; NaN where no gene varies over the prompts), the ridge penalty ``alpha``, the
        stack weights.

    Examples
    --------
    >>> phg2st.tl.select_prompts(adata, fraction=0.1, seed=0)  # doctest: +SKIP
    >>> phg2st.tl.baseline(adata, method="idw")  # doctest: +SKIP
    """
    adata = get_table(adata, table_key)
    check_nonempty(adata)
    check_unique_names(adata, var=False)
    check_choice(method, "method", METHODS)
    k = check_positive_int(k, "k")
    n_pcs = None if n_pcs is None else check_positive_int(n_pcs, "n_pcs")
    if not np.isfinite(power) or power <= 0:
        raise ValueError(f"`power` must be a positive number, got {power}.")
    layer_added = Keys.baseline_layer(method) if layer_added is None else layer_added
    if not isinstance(layer_added, str) or not layer_added:
        raise TypeError("`layer_added` must be a non-empty string.")
    seed = check_seed(seed)
    slots = {("layers", layer_added): "layer_added", ("uns", layer_added): "layer_added"}
    check_slots(adata, slots, overwrite=overwrite, writer="tl.baseline")
    prompts = get_prompt_mask(adata, prompt_key)
    if prompts.all():
        raise ValueError(f"`adata.obs[{prompt_key!r}]` marks every spot as a prompt: nothing is left to predict.")
    n_prompts = int(prompts.sum())
    if method in ("idw", "feature_knn", "stack") and n_prompts < k:
        raise ValueError(f"Only {n_prompts} prompt spots, fewer than `k={k}`; lower `k` or add prompts.")
    if method in ("gp", "ridge", "stack") and n_prompts < 3:
        raise ValueError(f"`method={method!r}` needs at least 3 prompt spots, got {n_prompts}.")
    y = get_matrix(adata, layer, unmeasured_rows=True)  # unmeasured (virtual) spots are predicted, never read
    if np.isnan(y[prompts]).any():
        raise ValueError("Some prompt spots have no measurement (NaN rows); prompts must be measured spots.")
    needs_xy = method in ("idw", "gp", "stack")
    xy = get_coordinates(adata, spatial_key) if needs_xy else None
    if method in IMAGE_METHODS:
        if use_rep is None:
            raise ValueError(f"`method={method!r}` uses image features: pass `use_rep=` (an `obsm` key).")
        feats = _prepare_features(get_representation(adata, use_rep), n_pcs)
    elif use_rep is not None:
        raise ValueError(f"`method={method!r}` does not use image features; drop `use_rep`.")

    held = ~prompts
    y_p = y[prompts]
    params: dict[str, Any] = {"method": method, "layer": "X" if layer is None else layer, "prompt_key": prompt_key,
                              "prompts": prompt_fingerprint(prompts)}  # fmt: skip
    if method == "mean":
        pred = predict_mean(y_p, int(held.sum()))
    elif method == "idw":
        pred = predict_idw(xy[prompts], y_p, xy[held], k=k, power=power)
        params.update(k=k, power=power, spatial_key=spatial_key)
    elif method == "gp":
        pred, kernel = predict_gp(xy[prompts], y_p, xy[held], unit=spot_pitch(xy), seed=seed)
        params.update(spatial_key=spatial_key, seed=seed, **kernel)
    elif method == "feature_knn":
        pred = predict_feature_knn(feats[prompts], y_p, feats[held], k=k)
        params.update(k=k, use_rep=use_rep, n_pcs=-1 if n_pcs is None else n_pcs)
    elif method == "ridge":
        pred, alpha = predict_ridge(feats[prompts], y_p, feats[held])
        params.update(use_rep=use_rep, n_pcs=-1 if n_pcs is None else n_pcs, alpha=alpha)
    else:
        pred, (a, b) = predict_stack(
            xy[prompts], feats[prompts], y_p, xy[held], feats[held], k=k, power=power, seed=seed
        )
        params.update(
            k=k, power=power, use_rep=use_rep, n_pcs=-1 if n_pcs is None else n_pcs, weight_idw=a, weight_ridge=b
        )
        logger.info("stack weights: idw %.3f, ridge %.3f", a, b)

    out = y.astype(np.float32, copy=True)
    out[held] = pred
    writes = {("layers", layer_added): out, ("uns", layer_added): {"params": params}}
    return write_slots(adata, writes, copy=copy, overwrite=overwrite, names=slots, writer="tl.baseline")
