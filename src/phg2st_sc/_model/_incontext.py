"""The in-context layer: adapt a network's prediction to a new section through that section's own prompts.

Numpy only (no torch). Four components, each with leave-one-prompt-out (LOO) predictions at the prompts:

- *regression kriging*: the network's prediction plus simple kriging of its residuals at the prompts (per-gene
  offset removed first); one squared-exponential kernel shared by all genes, its length scale and noise ratio
  chosen per section by the marginal likelihood of the prompts' residuals (amplitude profiled out);
- *the prompt field*: the same kriging of the expression itself (the prompts alone);
- *in-section ridge*: ridge regression from the network's latent tokens and the image features to expression,
  fitted on the section's prompts (penalty by LOO error, intercept unpenalised);
- the network's prediction itself, re-centred on the prompts' mean (a per-gene offset).

The LOO predictions are closed forms for kriging and ridge; for a network that reads the prompts, the caller
passes its cross-fitted predictions at the prompts (``network_at_prompts``).

A final non-negative combination, one weight per component shared by all genes, is fitted on the components'
LOO predictions at the prompts (genes standardised), so it is chosen by the section's own measured spots and never
by the spots it predicts. With ``n_prompts > EXACT_MAX`` the kriging runs on the ``LOCAL_K`` nearest prompts of
each spot (hyperparameters fitted on a subset), so that no dense matrix over all prompts is formed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.optimize import nnls
from scipy.spatial import cKDTree

EXACT_MAX = 3000  # prompts up to which kriging is exact (a p x p matrix)
LOCAL_K = 64  # prompts per spot for local kriging above that
FIT_SUBSET = 2000  # prompts used to choose the kernel above EXACT_MAX
LENGTH_SCALES = np.geomspace(0.5, 30.0, 16)  # spot pitches
NOISE_RATIOS = np.geomspace(1e-3, 1e2, 16)  # noise variance / signal variance
RIDGE_ALPHAS = np.geomspace(1e-2, 1e5, 15)
COMPONENTS = ("network", "kriging", "field", "ridge")
MIN_PROMPTS = 10  # below this, the network alone (re-centred on the prompts)


@dataclass
class InContextFit:
    """What the in-context layer chose on a section (recorded in ``uns``)."""

    weights: dict[str, float]
    length_scale: float  # spot pitches (the median over genes)
    noise_ratio: float  # (the median over genes)
    ridge_alpha: float
    loo_pcc: dict[str, Any] = field(default_factory=dict)  # per component and the combination, over prompts
    components: dict[str, np.ndarray] | None = None  # each component's prediction (with ``keep_components``)

    def record(self) -> dict[str, Any]:
        return {"weights": self.weights, "length_scale": self.length_scale, "noise_ratio": self.noise_ratio,
                "ridge_alpha": self.ridge_alpha, "loo_pcc": self.loo_pcc}  # fmt: skip


def _sqdist(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.maximum((a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * a @ b.T, 0.0)


def _loglik(xy: np.ndarray, r: np.ndarray) -> np.ndarray:
    """Profiled log marginal likelihood per gene on the grid: (length scales, noise ratios, genes)."""
    p, g = r.shape
    d2 = _sqdist(xy, xy)
    out = np.empty((len(LENGTH_SCALES), len(NOISE_RATIOS), g))
    for i, ell in enumerate(LENGTH_SCALES):
        lam, u = np.linalg.eigh(np.exp(-0.5 * d2 / ell**2))
        proj = (u.T @ r) ** 2  # (p, g): each gene's energy per eigen-direction
        for j, eta in enumerate(NOISE_RATIOS):
            ev = np.maximum(lam, 0.0) + eta
            s2 = np.maximum((proj / ev[:, None]).sum(0) / p, 1e-300)  # profiled amplitude per gene
            out[i, j] = -0.5 * p * np.log(s2) - 0.5 * float(np.log(ev).sum())
    return out


def fit_kernel(xy: np.ndarray, r: np.ndarray, per_gene: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Length scales (in ``xy`` units) and noise ratios maximising the marginal likelihood of the residuals ``r``.

    ``r`` (p, genes) is centred and scaled per gene; the signal amplitude is profiled out; the search is a grid
    over :data:`LENGTH_SCALES` x :data:`NOISE_RATIOS` (one eigendecomposition per length scale). One kernel for all
    genes (the likelihood summed over genes), or with ``per_gene`` each gene's own. Returns one value per gene.
    """
    ll = _loglik(xy, r)
    g = r.shape[1]
    if per_gene:
        flat = ll.reshape(-1, g).argmax(0)
        i, j = np.unravel_index(flat, ll.shape[:2])
    else:
        i, j = np.unravel_index(ll.sum(-1).argmax(), ll.shape[:2])
        i, j = np.full(g, i), np.full(g, j)
    return LENGTH_SCALES[i].astype(float), NOISE_RATIOS[j].astype(float)


def krige(xy_p: np.ndarray, r: np.ndarray, xy_q: np.ndarray, ell: Any, eta: Any) -> tuple[np.ndarray, np.ndarray]:
    """Simple kriging of the residuals ``r`` (p, genes) at ``xy_q``, and their LOO predictions at the prompts.

    ``ell`` and ``eta`` are numbers or one per gene; genes that share them are kriged together.
    """
    g = r.shape[1]
    ell, eta = np.broadcast_to(np.asarray(ell, float), g), np.broadcast_to(np.asarray(eta, float), g)
    out, loo = np.empty((len(xy_q), g)), np.empty_like(r, dtype=float)
    for key in sorted(set(zip(ell.tolist(), eta.tolist(), strict=True))):
        cols = np.flatnonzero((ell == key[0]) & (eta == key[1]))
        out[:, cols], loo[:, cols] = _krige_one(xy_p, r[:, cols], xy_q, *key)
    return out, loo


def _krige_one(
    xy_p: np.ndarray, r: np.ndarray, xy_q: np.ndarray, ell: float, eta: float
) -> tuple[np.ndarray, np.ndarray]:
    if len(xy_p) <= EXACT_MAX:
        k = np.exp(-0.5 * _sqdist(xy_p, xy_p) / ell**2) + eta * np.eye(len(xy_p))
        k_inv = np.linalg.inv(k)
        alpha = k_inv @ r
        loo = r - alpha / np.diag(k_inv)[:, None]
        out = np.empty((len(xy_q), r.shape[1]))
        for s in range(0, len(xy_q), 4096):
            out[s : s + 4096] = np.exp(-0.5 * _sqdist(xy_q[s : s + 4096], xy_p) / ell**2) @ alpha
        return out, loo
    return _krige_local(xy_p, r, xy_q, ell, eta), _krige_local(xy_p, r, xy_p, ell, eta, skip_self=True)


def _krige_local(
    xy_p: np.ndarray, r: np.ndarray, xy_q: np.ndarray, ell: float, eta: float, skip_self: bool = False
) -> np.ndarray:
    """Kriging from each query's :data:`LOCAL_K` nearest prompts (itself excluded with ``skip_self``)."""
    k = min(LOCAL_K + skip_self, len(xy_p))
    _, idx = cKDTree(xy_p).query(xy_q, k=k)
    idx = idx[:, 1:] if skip_self else idx
    out = np.empty((len(xy_q), r.shape[1]))
    for s in range(0, len(xy_q), 2048):
        nb = idx[s : s + 2048]  # (c, k)
        pts = xy_p[nb]  # (c, k, 2)
        d2 = ((pts[:, :, None, :] - pts[:, None, :, :]) ** 2).sum(-1)
        kk = np.exp(-0.5 * d2 / ell**2) + eta * np.eye(nb.shape[1])
        kq = np.exp(-0.5 * ((pts - xy_q[s : s + 2048, None, :]) ** 2).sum(-1) / ell**2)  # (c, k)
        w = np.linalg.solve(kk, kq[..., None])[..., 0]  # (c, k): kriging weights
        out[s : s + 2048] = np.einsum("ck,ckg->cg", w, r[nb])
    return out


def ridge_loo(f_p: np.ndarray, y: np.ndarray, f_q: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """Ridge from features to ``y`` (intercept unpenalised): predictions at ``f_q``, LOO at the prompts, penalty.

    The penalty minimises the LOO squared error summed over (standardised) genes.
    """
    mu_f = f_p.mean(0)
    x = np.column_stack([np.ones(len(f_p)), f_p - mu_f])
    penalty = np.ones(x.shape[1])
    penalty[0] = 0.0
    xtx, xty = x.T @ x, x.T @ y
    sd = np.where(y.std(0) > 0, y.std(0), 1.0)
    best = (np.inf, RIDGE_ALPHAS[0], None, None)
    for alpha in RIDGE_ALPHAS:
        a_inv = np.linalg.inv(xtx + alpha * np.diag(penalty))
        beta = a_inv @ xty
        fitted = x @ beta
        h = np.einsum("ij,jk,ik->i", x, a_inv, x)
        loo = y - (y - fitted) / np.maximum(1.0 - h, 1e-9)[:, None]
        err = float((((y - loo) / sd) ** 2).sum())
        if err < best[0]:
            best = (err, alpha, beta, loo)
    _, alpha, beta, loo = best
    xq = np.column_stack([np.ones(len(f_q)), f_q - mu_f])
    return xq @ beta, loo, float(alpha)


def _pcc(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a - a.mean(0), b - b.mean(0)
    den = np.sqrt((a * a).sum(0) * (b * b).sum(0))
    ok = den > 0
    return float(((a * b).sum(0)[ok] / den[ok]).mean()) if ok.any() else 0.0


def _features(latent: np.ndarray, image: np.ndarray | None, n_pcs: int = 32) -> np.ndarray:
    """Standardised latent tokens and image features, reduced to principal components over all spots.

    Through the (d, d) Gram matrix in float32, so that a slide of many spots costs one pass over its features.
    """
    parts = [latent] if image is None else [latent, image]
    z = np.concatenate(
        [((p - p.mean(0)) / np.where(p.std(0) > 0, p.std(0), 1.0)).astype(np.float32) for p in parts], axis=1
    )
    lam, v = np.linalg.eigh((z.T @ z).astype(np.float64))
    top = v[:, ::-1][:, : min(n_pcs, z.shape[1])]
    return (z @ top.astype(np.float32)).astype(np.float64)


def adapt(
    network: np.ndarray,
    latent: np.ndarray,
    image: np.ndarray | None,
    xy: np.ndarray,
    prompt: np.ndarray,
    y_prompt: np.ndarray,
    per_gene: bool = False,
    network_at_prompts: np.ndarray | None = None,
    keep_components: bool = False,
) -> tuple[np.ndarray, InContextFit]:
    """The in-context prediction at every spot (n, genes) and what was fitted.

    ``network`` (n, genes) is the network's prediction given all prompts; ``xy`` in spot pitches; ``y_prompt``
    (p, genes) the measured expression at ``prompt``. The residuals, the leave-one-out predictions and the weights
    need the network's prediction at each prompt made without that prompt's value: ``network[prompt]`` for a network
    that does not read the prompts, else ``network_at_prompts`` (e.g. cross-fitted: each fold of prompts predicted
    from the others). With ``keep_components``, each component's prediction is kept in the result's
    ``components`` (for ablations; n x genes each).
    """
    mu = y_prompt.mean(0)
    sd = np.where(y_prompt.std(0) > 0, y_prompt.std(0), 1.0)
    at_prompts = network[prompt] if network_at_prompts is None else network_at_prompts
    offset = mu - at_prompts.mean(0)  # per-gene offset from the prompts
    net, at_prompts = network + offset, at_prompts + offset
    if len(y_prompt) < MIN_PROMPTS:  # too few to fit a kernel, a ridge and their weights: the network, re-centred
        return net, InContextFit({"network": 1.0, "kriging": 0.0, "field": 0.0, "ridge": 0.0}, float("nan"), float("nan"),
                                 float("nan"), {"note": f"fewer than {MIN_PROMPTS} prompts: the network alone"})  # fmt: skip
    resid = (y_prompt - at_prompts) / sd
    xy_p = xy[prompt]
    sub = _fit_rows(len(xy_p))  # the prompts the kernels are chosen on
    ell, eta = fit_kernel(xy_p[sub], resid[sub], per_gene=per_gene)
    field, field_loo = krige(xy[prompt], resid, xy, ell, eta)
    z = (y_prompt - mu) / sd  # the prompts alone: ordinary kriging of the expression (the prompt field)
    ell_y, eta_y = fit_kernel(xy_p[sub], z[sub], per_gene=per_gene)
    plain, plain_loo = krige(xy[prompt], z, xy, ell_y, eta_y)
    feats = _features(latent, image)
    ridge, ridge_loo_p, alpha = ridge_loo(feats[prompt], y_prompt, feats)
    preds = {"network": net, "kriging": net + field * sd, "field": mu + plain * sd, "ridge": ridge}
    loo = {"network": at_prompts, "kriging": at_prompts + field_loo * sd, "field": mu + plain_loo * sd,
           "ridge": ridge_loo_p}  # fmt: skip
    design = np.column_stack([((loo[c] - mu) / sd).ravel() for c in COMPONENTS])
    w, _ = nnls(design, ((y_prompt - mu) / sd).ravel())
    if not w.any():
        w = np.array([0.0, 1.0, 0.0, 0.0])
    out = mu + sum(w[i] * (preds[c] - mu) for i, c in enumerate(COMPONENTS))
    combined_loo = mu + sum(w[i] * (loo[c] - mu) for i, c in enumerate(COMPONENTS))
    scores = {c: _pcc(loo[c], y_prompt) for c in COMPONENTS} | {"combined": _pcc(combined_loo, y_prompt)}
    return out, InContextFit(dict(zip(COMPONENTS, map(float, w), strict=True)), float(np.median(ell)),
                             float(np.median(eta)), alpha, scores, preds if keep_components else None)  # fmt: skip


def _fit_rows(n: int) -> np.ndarray:
    """All ``n`` rows, or :data:`FIT_SUBSET` of them in a fixed random choice."""
    if n <= FIT_SUBSET:
        return np.arange(n)
    return np.random.default_rng(0).permutation(n)[:FIT_SUBSET]
