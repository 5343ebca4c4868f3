"""Baselines against independent computations, on real sections."""

from __future__ import annotations

import numpy as np
import pytest
from anndata import AnnData
from scipy.spatial.distance import cdist

import phg2st_sc as phg2st
from phg2st_sc.tl._baselines import _prepare_features

pytestmark = pytest.mark.data


def dense(x):
    return x.toarray() if hasattr(x, "toarray") else np.asarray(x)


def test_mean_and_prompts_keep_values(c2_targets):
    a = c2_targets
    phg2st.tl.baseline(a, method="mean")
    y, m = dense(a.X), a.obs["phg2st_prompt"].to_numpy()
    pred = a.layers["baseline_mean"]
    np.testing.assert_allclose(pred[m], y[m], rtol=1e-6)
    np.testing.assert_allclose(pred[~m], np.broadcast_to(y[m].mean(axis=0), pred[~m].shape), rtol=1e-5)
    assert a.uns["baseline_mean"]["params"]["method"] == "mean"


@pytest.mark.parametrize(("k", "power"), [(6, 2.0), (3, 1.0)])
def test_idw_matches_scipy_bruteforce(c2_targets, k, power):
    a = c2_targets
    phg2st.tl.baseline(a, method="idw", k=k, power=power, layer_added="idw")
    y, m, xy = dense(a.X), a.obs["phg2st_prompt"].to_numpy(), a.obsm["spatial"]
    d = cdist(xy[~m], xy[m])  # independent: full distance matrix, argsort
    nn = np.argsort(d, axis=1)[:, :k]
    w = np.take_along_axis(d, nn, axis=1) ** (-power)
    expected = (w[:, :, None] * y[m][nn]).sum(axis=1) / w.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(a.layers["idw"][~m], expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(a.layers["idw"][m], y[m], rtol=1e-6)


def test_gp_equals_kriging_with_its_fitted_kernel(c2_targets):
    a = c2_targets[:, :60].copy()
    phg2st.tl.baseline(a, method="gp")
    p = a.uns["baseline_gp"]["params"]
    y, m, xy = dense(a.X), a.obs["phg2st_prompt"].to_numpy(), a.obsm["spatial"]
    mu, sd = y[m].mean(axis=0), y[m].std(axis=0)
    sd[sd == 0] = 1
    z = (y[m] - mu) / sd

    def k(u, v):
        return p["amplitude"] * np.exp(-cdist(u, v, "sqeuclidean") / (2 * p["length_scale"] ** 2))

    kpp = k(xy[m], xy[m]) + p["noise"] * np.eye(m.sum())
    expected = k(xy[~m], xy[m]) @ np.linalg.solve(kpp, z) * sd + mu
    np.testing.assert_allclose(a.layers["baseline_gp"][~m], expected, rtol=1e-4, atol=1e-4)
    # the fitted length scale is a spatial scale of a few spot pitches (~290 px), not a degenerate bound
    assert 29 < p["length_scale"] < 29_000


def test_gp_kernel_ignores_genes_constant_over_the_prompts(c2_targets):
    """Genes whose prompts all hold one value (zero at every prompt is common on raw counts; 0.1 sixty times has a
    mean one unit in the last place off) are predicted as that value and do not move the kernel shared by the other
    genes: its likelihood used to add their log-determinant, pulling amplitude and noise down."""
    m = c2_targets.obs["phg2st_prompt"].to_numpy()
    y = dense(c2_targets.X)
    live = np.flatnonzero(np.ptp(y[m], axis=0) > 0)[:30]
    a = c2_targets[:, live].copy()
    phg2st.tl.baseline(a, method="gp")
    rng = np.random.default_rng(0)
    flat = np.zeros((a.n_obs, 45))
    flat[:, 40:] = 0.1
    flat[~m] = rng.uniform(0, 2, size=((~m).sum(), 45))  # held-out spots vary: only the prompts are constant
    b = AnnData(np.hstack([dense(a.X), flat]), obs=a.obs.copy(), obsm=dict(a.obsm))
    phg2st.tl.baseline(b, method="gp")
    kernel = {k: a.uns["baseline_gp"]["params"][k] for k in ("amplitude", "length_scale", "noise")}
    assert {k: b.uns["baseline_gp"]["params"][k] for k in kernel} == pytest.approx(kernel, rel=1e-6)
    np.testing.assert_allclose(b.layers["baseline_gp"][~m, :30], a.layers["baseline_gp"][~m], rtol=1e-5, atol=1e-6)
    pred = b.layers["baseline_gp"][~m]
    assert (pred[:, 30:70] == 0).all() and (pred[:, 70:] == np.float32(0.1)).all()
    # no gene varies over the prompts: nothing to fit, the constants predicted and the kernel NaN (not an error)
    c = b[:, 30:].copy()
    phg2st.tl.baseline(c, method="gp")
    np.testing.assert_array_equal(c.layers["baseline_gp"][~m], b.layers["baseline_gp"][~m, 30:])
    assert np.isnan(c.uns["baseline_gp"]["params"]["length_scale"])


def test_gp_beats_mean_on_smoothed_targets(c2_targets):
    a = c2_targets
    phg2st.pp.smooth(a)
    for method in ("mean", "gp", "idw"):
        phg2st.tl.baseline(a, method=method, layer="smoothed")
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", phg2st.SmoothedTargetWarning)
        s = {
            m: phg2st.tl.score(a, layer=f"baseline_{m}", truth_layer="smoothed").summary for m in ("mean", "gp", "idw")
        }
    assert s["gp"]["pcc"] > 0.3 and s["idw"]["pcc"] > 0.3
    assert s["gp"]["mae"] < s["mean"]["mae"]


@pytest.fixture
def c2_features(c2_targets, colour_features):
    a = c2_targets
    a.obsm["X_colour"] = colour_features(a)
    return a


def test_feature_knn_matches_bruteforce(c2_features):
    a = c2_features
    phg2st.tl.baseline(a, method="feature_knn", use_rep="X_colour", k=4, n_pcs=None)
    y, m = dense(a.X), a.obs["phg2st_prompt"].to_numpy()
    f = a.obsm["X_colour"]
    f = (f - f.mean(0)) / f.std(0)
    nn = np.argsort(cdist(f[~m], f[m]), axis=1)[:, :4]
    np.testing.assert_allclose(a.layers["baseline_feature_knn"][~m], y[m][nn].mean(axis=1), rtol=1e-5, atol=1e-6)


def test_ridge_matches_sklearn(c2_features):
    from sklearn.linear_model import Ridge

    a = c2_features
    phg2st.tl.baseline(a, method="ridge", use_rep="X_colour", n_pcs=8)
    p = a.uns["baseline_ridge"]["params"]
    y, m = dense(a.X), a.obs["phg2st_prompt"].to_numpy()
    f = _prepare_features(a.obsm["X_colour"], 8)
    expected = Ridge(alpha=p["alpha"]).fit(f[m], y[m]).predict(f[~m])
    np.testing.assert_allclose(a.layers["baseline_ridge"][~m], expected, rtol=1e-4, atol=1e-5)


def test_stack_combines_its_parts(c2_features):
    a = c2_features
    for method in ("idw", "ridge", "stack"):
        phg2st.tl.baseline(a, method=method, use_rep=None if method == "idw" else "X_colour", n_pcs=8)
    p = a.uns["baseline_stack"]["params"]
    m = a.obs["phg2st_prompt"].to_numpy()
    mu = dense(a.X)[m].mean(axis=0)
    expected = (
        mu + p["weight_idw"] * (a.layers["baseline_idw"] - mu) + p["weight_ridge"] * (a.layers["baseline_ridge"] - mu)
    )
    np.testing.assert_allclose(a.layers["baseline_stack"][~m], expected[~m], rtol=1e-4, atol=1e-4)


def test_stack_recovers_known_weights():
    """On a synthetic field that is half spatial, half image-driven, both stack weights come out positive."""
    rng = np.random.default_rng(0)
    xs, ys = np.meshgrid(np.arange(30), np.arange(30))
    xy = np.column_stack([xs.ravel(), ys.ravel()]).astype(float)
    feats = rng.normal(size=(900, 5))
    smooth_field = np.sin(xy[:, :1] / 5) + np.cos(xy[:, 1:] / 7)
    y = smooth_field + feats[:, :1] @ np.ones((1, 4)) * 0.8 + rng.normal(scale=0.1, size=(900, 4))
    a = AnnData(y)
    a.obsm["spatial"], a.obsm["f"] = xy, feats
    phg2st.tl.select_prompts(a, fraction=0.15, seed=0)
    for method in ("idw", "ridge", "stack"):
        phg2st.tl.baseline(a, method=method, use_rep=None if method == "idw" else "f")
    p = a.uns["baseline_stack"]["params"]
    assert p["weight_idw"] > 0.2 and p["weight_ridge"] > 0.2
    s = {
        m: phg2st.tl.score(a, layer=f"baseline_{m}", truth_layer=None).summary["pcc"] for m in ("idw", "ridge", "stack")
    }
    assert s["stack"] > max(s["idw"], s["ridge"])


def test_baseline_bad_inputs_leave_adata_unchanged(c2_targets):
    a = c2_targets
    snapshot = a.copy()
    cases = [
        (dict(method="kriging"), ValueError, "method"),
        (dict(method="feature_knn"), ValueError, "use_rep"),
        (dict(method="ridge", use_rep="X_uni"), KeyError, "X_uni"),
        (dict(method="idw", use_rep="X_colour"), ValueError, "does not use image"),
        (dict(method="idw", k=50), ValueError, "fewer than `k=50`"),
        (dict(method="idw", k=0), ValueError, "k"),
        (dict(method="idw", layer="counts"), KeyError, "counts"),
        (dict(method="idw", prompt_key="other"), KeyError, "select_prompts"),
        (dict(method="idw", spatial_key="xy"), KeyError, "obsm\\['xy'\\]"),
    ]
    for kwargs, exc, msg in cases:
        with pytest.raises(exc, match=msg):
            phg2st.tl.baseline(a, **kwargs)
    assert set(a.layers) == set(snapshot.layers) and set(a.uns) == set(snapshot.uns)
    bad = a.copy()
    bad.X = dense(bad.X)
    bad.X[3, 2] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        phg2st.tl.baseline(bad, method="idw")
    everything = a.copy()
    everything.obs["phg2st_prompt"] = True
    with pytest.raises(ValueError, match="every spot"):
        phg2st.tl.baseline(everything, method="mean")
    assert "baseline_mean" not in everything.layers
