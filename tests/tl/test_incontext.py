"""The in-context layer of the adaptive variant: kriging, the in-section ridge and their combination."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

import phg2st_sc as phg2st
from phg2st_sc._model import _incontext as ic
from phg2st_sc._utils import centre_scale, spot_pitch, standardised


def _field(n=150, genes=5, seed=0, noise=0.1):
    rng = np.random.default_rng(seed)
    xy = rng.uniform(0, 12, size=(n, 2))
    centres = rng.uniform(0, 12, size=(genes, 2))
    y = np.exp(-((xy[:, None, :] - centres[None]) ** 2).sum(-1) / 8.0) + noise * rng.normal(size=(n, genes))
    return xy, y


def test_kriging_equals_the_exact_gaussian_process_posterior_mean():
    """Against scikit-learn's GP with the same kernel held fixed: the same predictions to 1e-8."""
    from sklearn.gaussian_process import GaussianProcessRegressor
    from sklearn.gaussian_process.kernels import RBF, WhiteKernel

    xy, y = _field()
    prompt = np.zeros(len(xy), dtype=bool)
    prompt[::4] = True
    r = y[prompt] - y[prompt].mean(0)
    ell, eta = ic.fit_kernel(xy[prompt], r)
    assert ic.LENGTH_SCALES[0] < ell[0] < ic.LENGTH_SCALES[-1]  # a smooth field: neither bound
    ours = ic.krige(xy[prompt], r, xy, ell, eta)
    gp = GaussianProcessRegressor(RBF(ell[0]) + WhiteKernel(eta[0]), optimizer=None).fit(xy[prompt], r)
    # scikit-learn's prediction includes the white kernel at the training points themselves; compare elsewhere
    np.testing.assert_allclose(ours[~prompt], gp.predict(xy[~prompt]), atol=1e-8)


def test_the_long_prompt_field_keeps_its_length_scale_at_least_the_floor():
    """A floor above the likelihood's choice moves only the floored set's kernel, to the grid's first length scale
    at or above the floor (or its longest); its kriging is the exact GP posterior mean with that kernel."""
    from sklearn.gaussian_process import GaussianProcessRegressor
    from sklearn.gaussian_process.kernels import RBF, WhiteKernel

    rng = np.random.default_rng(3)
    gx, gy = np.meshgrid(np.arange(0, 30, 3.0), np.arange(0, 30, 3.0))
    xy = np.column_stack([gx.ravel(), gy.ravel()]) + rng.uniform(-0.2, 0.2, size=(100, 2))
    assert 2.5 < spot_pitch(xy) < 3.5  # a lattice of step 3
    r = rng.normal(size=(100, 4))
    r -= r.mean(0)
    (ell, _), (ell_free, _) = ic.fit_kernels(xy, [r, r])
    floor = 2.0 * ell[0]
    (ell_same, _), (ell_l, eta_l) = ic.fit_kernels(xy, [r, r], floors=[0.0, floor])
    assert ell_same[0] == ell[0] == ell_free[0] and ell_l[0] >= floor
    assert ic.fit_kernels(xy, [r], floors=[1e9])[0][0][0] == ic.LENGTH_SCALES[-1]  # a floor above the grid
    q = rng.uniform(0, 27, size=(30, 2))
    gp = GaussianProcessRegressor(RBF(ell_l[0]) + WhiteKernel(eta_l[0]), optimizer=None).fit(xy, r)
    np.testing.assert_allclose(ic.krige(xy, r, q, ell_l, eta_l), gp.predict(q), atol=1e-8)


def test_the_long_prompt_field_is_kriging_with_the_kernel_floored_at_the_prompt_spacing():
    xy, y = _field(n=300, genes=4, seed=2, noise=0.5)
    prompt = np.zeros(len(xy), dtype=bool)
    prompt[::5] = True
    net = np.random.default_rng(1).normal(size=y.shape)  # a network that knows nothing
    _, fit = ic.adapt(net, net[:, :3], None, xy, prompt, y[prompt], keep_components=True)
    assert set(fit.components) == set(fit.weights) == set(ic.COMPONENTS) and min(fit.weights.values()) >= 0
    mu, sd = y[prompt].mean(0), y[prompt].std(0)
    z = (y[prompt] - mu) / sd
    ell_l, eta_l = ic.fit_kernels(xy[prompt], [z], floors=[spot_pitch(xy[prompt])])[0]
    expected = mu + (z.mean(0) + ic.krige(xy[prompt], z - z.mean(0), xy, ell_l, eta_l)) * sd
    np.testing.assert_allclose(fit.components["field_long"], expected, rtol=1e-6, atol=1e-8)


def test_weights_from_components_standardised_one_at_a_time_are_those_of_the_standardised_components():
    """``combine(..., standardise=(mu, sd))`` (the layer's call: a slide's components are 190 MB each at 60,000
    prompts and 400 genes, so none is standardised before it is read) gives the weights of the components
    standardised beforehand, to the last bit."""
    rng = np.random.default_rng(4)
    y = rng.normal(loc=3.0, scale=2.0, size=(60, 7))
    mu, sd = centre_scale(y)
    folds = ic.prompt_folds(60)
    cv = {c: y + rng.normal(scale=s, size=y.shape) for c, s in (("network", 1.0), ("field", 2.0), ("idw", 0.7))}
    before = ic.combine({c: (v - mu) / sd for c, v in cv.items()}, (y - mu) / sd, folds)
    assert ic.combine(cv, (y - mu) / sd, folds, standardise=(mu, sd)) == before
    assert sum(v > 0 for v in before.values()) >= 2  # (a combination, not one component)


def test_inverse_distance_in_chunks_of_queries_is_the_same_to_the_last_bit(monkeypatch):
    """IDW weighs its queries a chunk at a time (their neighbours' values, queries x k x genes, are 1.3 GB for a block
    of 65,536 spots and 400 genes in one piece): every chunk size gives the same values."""
    from phg2st_sc import _utils

    rng = np.random.default_rng(5)
    xy_p, y, xy_q = rng.uniform(0, 9, size=(50, 2)), rng.normal(size=(50, 4)), rng.uniform(0, 9, size=(103, 2))
    xy_q[:3] = xy_p[:3]  # queries at a prompt take its value
    whole = _utils.inverse_distance(xy_p, y, xy_q)
    monkeypatch.setattr(_utils, "IDW_CHUNK", 7)
    np.testing.assert_array_equal(_utils.inverse_distance(xy_p, y, xy_q), whole)
    np.testing.assert_array_equal(whole[:3], y[:3])
    dist = np.linalg.norm(xy_q[50, None] - xy_p, axis=1)
    near = np.argsort(dist)[:6]
    w = dist[near] ** -2.0
    np.testing.assert_allclose(whole[50], w @ y[near] / w.sum(), rtol=1e-12)


def test_the_idw_component_is_the_idw_baseline_and_its_cross_fit_never_reads_its_own_fold():
    """The layer's IDW is the baseline's (6 nearest prompts, weights d ** -2, a prompt's own position its value);
    each fold's cross-fitted IDW is the IDW of the other folds, unmoved by the fold's own values."""
    from phg2st_sc.tl._baselines import predict_idw

    xy, y = _field(n=300, genes=4, seed=2, noise=0.5)
    prompt = np.zeros(len(xy), dtype=bool)
    prompt[::5] = True
    net = np.random.default_rng(1).normal(size=y.shape)
    _, fit = ic.adapt(net, net[:, :3], None, xy, prompt, y[prompt], keep_components=True)
    np.testing.assert_allclose(fit.components["idw"], predict_idw(xy[prompt], y[prompt], xy), rtol=1e-12)
    np.testing.assert_allclose(fit.components["idw"][prompt], y[prompt], rtol=1e-12)
    folds = ic.prompt_folds(int(prompt.sum()))
    cv = ic._idw_folds(xy[prompt], y[prompt], folds)
    for part in folds:
        moved = y[prompt].copy()
        moved[part] += 100.0
        np.testing.assert_array_equal(ic._idw_folds(xy[prompt], moved, folds)[part], cv[part])
        rest = np.setdiff1d(np.arange(len(moved)), part)
        np.testing.assert_allclose(cv[part], predict_idw(xy[prompt][rest], y[prompt][rest], xy[prompt][part]))
        assert not np.allclose(ic._idw_folds(xy[prompt], moved, folds)[rest], cv[rest])  # the others read it


def test_cross_fitted_predictions_never_read_their_own_fold(monkeypatch):
    """Kriging and ridge predict each fold of prompts from the others: changing a fold's values leaves them as they
    were (the kernel and the penalty given), and they equal a refit without the fold."""
    xy, y = _field(n=60, seed=1)
    feats = np.random.default_rng(2).normal(size=(60, 4))
    folds = ic.prompt_folds(60)
    monkeypatch.setattr(ic, "RIDGE_ALPHAS", np.array([3.0]))
    changed = y.copy()
    changed[folds[0]] += np.random.default_rng(3).normal(scale=5.0, size=(len(folds[0]), y.shape[1]))
    (kr, kr_cv), (kr2, kr2_cv) = (ic.krige_cv(xy, v, xy[:5], 2.0, 0.05, folds) for v in (y, changed))
    (_, rg_cv, _), (_, rg2_cv, _) = (ic.ridge_cv(feats, v, feats, folds) for v in (y, changed))
    for before, after in ((kr_cv, kr2_cv), (rg_cv, rg2_cv)):
        np.testing.assert_allclose(before[folds[0]], after[folds[0]], atol=1e-10)
        assert not np.allclose(before[folds[1]], after[folds[1]])  # the other folds did read it
    rest = np.setdiff1d(np.arange(60), folds[2])
    m = y[rest].mean(0)
    np.testing.assert_allclose(kr_cv[folds[2]], m + ic.krige(xy[rest], y[rest] - m, xy[folds[2]], 2.0, 0.05))
    x = feats[rest] - feats[rest].mean(0)
    beta = np.linalg.solve(x.T @ x + 3.0 * np.eye(4), x.T @ (y[rest] - m))
    np.testing.assert_allclose(rg_cv[folds[2]], m + (feats[folds[2]] - feats[rest].mean(0)) @ beta, atol=1e-10)


def test_a_level_per_fold_changes_no_weight():
    """The weights compare cross-fitted predictions within folds: a per-fold, per-gene constant (what a pass that
    leaves a fold out adds, moving against the fold's values) changes nothing."""
    rng = np.random.default_rng(8)
    y = rng.normal(size=(40, 6))
    folds = ic.prompt_folds(40)
    cv = {"network": y + rng.normal(scale=1.0, size=y.shape), "field": y + rng.normal(scale=2.0, size=y.shape)}
    w = ic.combine(cv, y, folds)
    assert w["network"] > w["field"] > 0
    shifted = cv["network"].copy()
    for part in folds:
        shifted[part] -= y[part].mean(0) * 3.0  # against the fold's values
    assert ic.combine({**cv, "network": shifted}, y, folds) == pytest.approx(w)


def test_local_kriging_matches_exact_kriging_where_both_fit(monkeypatch):
    xy, y = _field(n=1200, seed=3)
    prompt = np.zeros(len(xy), dtype=bool)
    prompt[::4] = True
    r = y[prompt] - y[prompt].mean(0)
    folds = ic.prompt_folds(int(prompt.sum()))
    exact = ic.krige_cv(xy[prompt], r, xy, 1.5, 0.05, folds)
    monkeypatch.setattr(ic, "EXACT_MAX", 100)
    local = ic.krige_cv(xy[prompt], r, xy, 1.5, 0.05, folds)
    for a, b in zip(local, exact, strict=True):
        assert np.sqrt(((a - b) ** 2).mean()) < 0.05 * np.sqrt((b**2).mean())
        assert min(np.corrcoef(a[:, g], b[:, g])[0, 1] for g in range(a.shape[1])) > 0.999


def test_local_systems_of_groups_with_every_prompt_are_exact(monkeypatch):
    """Spots grouped along the Z-order curve share a system on the union of their nearest prompts; when that union
    is every prompt, each spot's kriging and variance are the exact ones (groups, padding of the last group and
    the batching by union size put every weight back at its own spot)."""
    xy, y = _field(n=301, seed=11)  # 301 spots: the last group of 32 is padded
    prompt = np.zeros(len(xy), dtype=bool)
    prompt[::7] = True  # 43 prompts < LOCAL_K: every spot's neighbours are all of them
    r = y[prompt] - y[prompt].mean(0)
    exact = ic.krige(xy[prompt], r, xy, 2.0, 0.05), ic.kriging_variance(xy[prompt], xy, 2.0, 0.05)
    monkeypatch.setattr(ic, "EXACT_MAX", 10)
    local = ic.krige(xy[prompt], r, xy, 2.0, 0.05), ic.kriging_variance(xy[prompt], xy, 2.0, 0.05)
    np.testing.assert_allclose(local[0], exact[0], atol=1e-8)
    np.testing.assert_allclose(local[1], exact[1], atol=1e-8)
    # with fewer neighbours per spot than prompts, groups whose unions differ in size are batched together
    monkeypatch.setattr(ic, "LOCAL_K", 8)
    rows = np.concatenate([item[0][item[0] >= 0] for item in ic._local_systems(xy[prompt], xy, 2.0, 0.05)])
    assert sorted(rows.tolist()) == list(range(len(xy)))  # every spot once
    approx = ic.krige(xy[prompt], r, xy, 2.0, 0.05)
    assert min(np.corrcoef(approx[:, g], exact[0][:, g])[0, 1] for g in range(r.shape[1])) > 0.98
    # no query at all: nothing to krige (a shape, not an error)
    assert ic.krige(xy[prompt], r, xy[:0], 2.0, 0.05).shape == (0, r.shape[1])
    assert ic.kriging_variance(xy[prompt], xy[:0], 2.0, 0.05).shape == (0,)


def test_a_prompt_moves_nearby_predictions_more_than_far_ones():
    """Kriging alone is local; through the whole layer (refitted kernel, mean and weights) the move stays largest
    near the changed prompt."""
    xy, y = _field(n=200, seed=4, noise=0.02)
    prompt = np.zeros(len(xy), dtype=bool)
    prompt[::5] = True
    net = np.zeros_like(y)
    latent = np.random.default_rng(0).normal(size=(len(xy), 8))
    base, _ = ic.adapt(net, latent, None, xy, prompt, y[prompt])
    changed = y[prompt].copy()
    changed[0] += 1.0  # the first prompt (spot 0) measured higher (about the field's amplitude)
    moved, _ = ic.adapt(net, latent, None, xy, prompt, changed)
    shift = np.abs(moved - base)[:, 0]
    d = np.linalg.norm(xy - xy[0], axis=1)
    near, far = (d > 0) & (d < 1.0) & ~prompt, (d > 6) & ~prompt
    assert near.any() and far.any()
    assert shift[near].mean() > 1.5 * shift[far].mean()
    r = y[prompt] - y[prompt].mean(0)
    fixed = [ic.krige(xy[prompt], v, xy, 1.0, 0.05)[:, 0] for v in (r, r + 3.0 * (np.arange(len(r)) == 0)[:, None])]
    local = np.abs(fixed[1] - fixed[0])
    assert local[near].mean() > 100 * local[far].mean()


def test_the_combination_never_reads_held_out_values(synthetic_section):
    """tl.impute with the adaptive variant: held-out expression set to NaN or changed gives the same prediction."""
    from _synthetic import SMALL

    a = synthetic_section()
    model = phg2st.tl.fit(a, variant="adaptive", max_epochs=2, validation=None, **SMALL)
    phg2st.tl.select_prompts(a, fraction=0.2, seed=1)
    first = phg2st.tl.impute(a, model, copy=True)
    held = ~a.obs["phg2st_prompt"].to_numpy(bool)
    b = a.copy()
    x = np.asarray(b.X, dtype=np.float32).copy()
    x[held] = np.nan
    b.X = x
    second = phg2st.tl.impute(b, model, copy=True)
    np.testing.assert_array_equal(first.layers["phg2st"], second.layers["phg2st"])
    record = first.uns["phg2st"]["params"]["in_context"]
    assert set(record["weights"]) == set(ic.COMPONENTS) and min(record["weights"].values()) >= 0
    network, _ = model.predict(a, a.obs["phg2st_prompt"].to_numpy(bool), network_only=True)
    assert not np.allclose(network[held], first.layers["phg2st"][held])  # the layer did act


def test_too_few_prompts_give_the_network_alone_recentred():
    xy, y = _field(n=40, seed=5)
    prompt = np.zeros(len(xy), dtype=bool)
    prompt[:4] = True
    net = np.random.default_rng(1).normal(size=y.shape)
    out, fit = ic.adapt(net, net[:, :3], None, xy, prompt, y[prompt])
    np.testing.assert_allclose(out, net - net[prompt].mean(0) + y[prompt].mean(0))
    assert (
        fit.weights == {c: float(c == "network") for c in ic.COMPONENTS}
        and "fewer than" in fit.cv_pcc["note"]
        and fit.cv_pcc["kept"] == "network"
    )


def test_cross_fitted_network_predictions_never_read_the_prompt_they_predict(synthetic_section):
    """The adaptive network reads the prompts: its prediction at a prompt, for the layer, comes from the others."""
    from _synthetic import SMALL

    a = synthetic_section()
    model = phg2st.tl.fit(a, variant="adaptive", max_epochs=1, validation=None, **SMALL)
    prompt = np.zeros(a.n_obs, dtype=bool)
    prompt[::3] = True
    slide = model.tensors(a, prompt=prompt)
    full = model.predict(a, prompt, network_only=True)  # the reference the passes are aligned on
    model.module.eval()
    with torch.inference_mode():
        first = model._cross_fitted(slide, prompt, "cpu", full)
        i = 0  # the first prompt (spot 0): change its measured values
        slide.y[np.flatnonzero(prompt)[i]] += 5.0
        second = model._cross_fitted(slide, prompt, "cpu", full)
    # neither the prediction nor the latent tokens the ridge reads at that prompt saw its value
    for before, after in zip(first, second, strict=True):
        np.testing.assert_allclose(before[i], after[i], atol=1e-5)
        assert not np.allclose(before, after, atol=1e-5)  # the others (in other folds) did read it


def test_cross_fitting_passes_are_aligned_on_the_full_prediction(synthetic_section):
    """Each pass's level is shifted onto the full pass: a fold's value enters the others only through one level."""
    from _synthetic import SMALL

    a = synthetic_section()
    model = phg2st.tl.fit(a, variant="adaptive", max_epochs=1, validation=None, **SMALL)
    prompt = np.zeros(a.n_obs, dtype=bool)
    prompt[::3] = True
    full = model.predict(a, prompt, network_only=True)
    model.module.eval()
    with torch.inference_mode():
        aligned, _ = model._cross_fitted(model.tensors(a, prompt=prompt), prompt, "cpu", full)
        shifted, _ = model._cross_fitted(model.tensors(a, prompt=prompt), prompt, "cpu", (full[0] + 1.0, full[1]))
    np.testing.assert_allclose(shifted - aligned, 1.0, atol=1e-5)


def test_the_prediction_is_the_weighted_combination_of_its_components():
    xy, y = _field(n=200, seed=6)
    prompt = np.zeros(len(xy), dtype=bool)
    prompt[::4] = True
    net = y + np.random.default_rng(2).normal(scale=0.3, size=y.shape)
    out, fit = ic.adapt(net, net[:, :3], None, xy, prompt, y[prompt], keep_components=True)
    assert set(fit.components) == set(ic.COMPONENTS) and "components" not in fit.record()
    mu = y[prompt].mean(0)
    np.testing.assert_allclose(out, mu + sum(fit.weights[c] * (fit.components[c] - mu) for c in ic.COMPONENTS))
    assert ic.adapt(net, net[:, :3], None, xy, prompt, y[prompt])[1].components is None


def test_on_unstructured_targets_the_layer_stays_with_the_network():
    """Spatially unstructured targets: the field and the ridge can add nothing, so whatever the layer keeps (the
    combination, mostly the network and its regression kriging, whose residuals have no spatial structure), its
    prediction is close to the network's at the held-out spots and no less accurate (the low-rank components take
    a little weight on this draw: the correlation with the network is above 0.85 per gene, 0.95 on average, and
    the held-out PCC is within 0.01 of the network's); on a smooth field the combination or a kriging component
    is kept."""
    rng = np.random.default_rng(9)
    xy = rng.uniform(0, 15, size=(300, 2))
    signal = rng.normal(size=(300, 40))
    y = signal + rng.normal(scale=3.0, size=signal.shape)  # no spatial structure, a weak network signal
    prompt = np.zeros(len(xy), dtype=bool)
    prompt[::5] = True
    latent = rng.normal(size=(300, 8))
    out, fit = ic.adapt(signal, latent, None, xy, prompt, y[prompt])
    assert fit.cv_pcc["kept"] in ("combination", "network", "kriging") and min(fit.weights.values()) >= 0
    net = signal - signal[prompt].mean(0) + y[prompt].mean(0)
    corr = [np.corrcoef(out[~prompt, g], net[~prompt, g])[0, 1] for g in range(40)]
    assert min(corr) > 0.85 and np.mean(corr) > 0.95

    def held_out_pcc(pred):
        return np.mean([np.corrcoef(pred[~prompt, g], y[~prompt, g])[0, 1] for g in range(40)])

    assert held_out_pcc(out) > held_out_pcc(net) - 0.01
    xy, y = _field(n=300, seed=10, genes=20, noise=0.05)
    _, fit = ic.adapt(np.zeros_like(y), latent, None, xy, prompt, y[prompt])
    assert fit.cv_pcc["kept"] in ("combination", "field", "kriging") and fit.cv_pcc["field"] > 0.8


def test_a_single_component_replaces_the_combination_only_on_clear_evidence():
    """A component is kept alone only if it beats the fitted combination by more than twice the standard error over
    genes: a marginal lead (noise) keeps the combination, a clear one the component."""
    rng = np.random.default_rng(11)
    y = rng.normal(size=(40, 60))
    folds = ic.prompt_folds(40)
    network = y + rng.normal(scale=3.0, size=y.shape)
    noise = {c: rng.normal(scale=30.0, size=y.shape) for c in ("kriging", "field")}
    w = {"network": 1.0, "kriging": 0.0, "field": 0.0, "ridge": 0.0}  # the combination: the network alone
    marginal = {"network": network, **noise, "ridge": network + rng.normal(scale=0.3, size=y.shape)}
    marginal["ridge"] += 0.02 * y  # a lead of the order of the noise
    weights, scores = ic._safeguard(w, marginal, y, folds)
    assert scores["ridge"] > scores["combined"] and scores["kept"] == "combination" and weights == w
    clear = {**marginal, "ridge": y + rng.normal(scale=1.0, size=y.shape)}
    weights, scores = ic._safeguard(w, clear, y, folds)
    assert scores["kept"] == "ridge" and weights["ridge"] == 1.0 and sum(weights.values()) == 1.0
    # a combination that holds the noise components: kept while no single component clearly beats it
    mixed = {"network": 1.0, "kriging": 0.01, "field": 0.01, "ridge": 0.0}
    weights, scores = ic._safeguard(mixed, marginal, y, folds)
    assert scores["kept"] == "combination" and weights == mixed
    # spread prompts (a design): the burden stays on the combination, which is kept only on a clear gain over its
    # best component; else that component if it clearly beats the network, else the network
    weights, scores = ic._safeguard(mixed, marginal, y, folds, spread=True)
    assert scores["kept"] == "network" and weights["network"] == 1.0 and sum(weights.values()) == 1.0
    weights, scores = ic._safeguard(mixed, clear, y, folds, spread=True)
    assert scores["kept"] == "ridge" and weights["ridge"] == 1.0


def test_a_prompts_only_adaptive_model_never_reads_the_image(synthetic_section):
    """The prompts-only ablation: neither the network nor the layer's ridge reads the image features."""
    from _synthetic import SMALL

    a = synthetic_section()
    config = {**SMALL["config"], "use_image": False}
    model = phg2st.tl.fit(a, variant="adaptive", max_epochs=1, validation=None, **{**SMALL, "config": config})
    phg2st.tl.select_prompts(a, fraction=0.3, seed=2)
    first = phg2st.tl.impute(a, model, copy=True)
    b = a.copy()
    b.obsm["X_tiny"] = np.random.default_rng(0).normal(size=b.obsm["X_tiny"].shape).astype(np.float32)
    second = phg2st.tl.impute(b, model, copy=True)
    np.testing.assert_allclose(first.layers["phg2st"], second.layers["phg2st"], atol=1e-5)


def test_on_large_slides_the_passes_run_at_the_prompts_and_a_fixed_sample_of_spots(synthetic_section, monkeypatch):
    """Above ``ALIGN_SPOTS`` spots a cross-fitted pass is evaluated at its fold's prompts and a fixed sample of spots
    whose mean sets its level: the same values as a whole pass aligned on that sample."""
    from _synthetic import SMALL

    from phg2st_sc._model import _model as model_module
    from phg2st_sc._model._data import slide_batch

    a = synthetic_section()
    model = phg2st.tl.fit(a, variant="adaptive", max_epochs=1, validation=None, **SMALL)
    prompt = np.zeros(a.n_obs, dtype=bool)
    prompt[::3] = True
    full = model.predict(a, prompt, network_only=True)
    monkeypatch.setattr(model_module, "ALIGN_SPOTS", 25)
    sample = model_module.align_rows(a.n_obs)
    assert len(sample) == 25 and len(np.unique(sample)) == 25
    slide = model.tensors(a, prompt=prompt)
    model.module.eval()
    idx = np.flatnonzero(prompt)
    with torch.inference_mode():
        got, tokens = model._cross_fitted(slide, prompt, "cpu", full)
        for part in ic.prompt_folds(len(idx)):
            mask = prompt.copy()
            mask[idx[part]] = False
            res = model.module(slide_batch(slide, mask, np.zeros(slide.n, dtype=bool), model.config["prompt_k"]))
            pred, latent = res["pred"].numpy(), res["latent"].numpy()
            want = pred[idx[part]] + full[0][sample].mean(0) - pred[sample].mean(0)
            np.testing.assert_allclose(got[part], want, rtol=1e-5, atol=1e-5)
            want_t = latent[idx[part]] + full[1][sample].mean(0) - latent[sample].mean(0)
            np.testing.assert_allclose(tokens[part], want_t, rtol=1e-4, atol=1e-4)
            # not the alignment over every spot (the sample matters: the test can fail)
            assert not np.allclose(want, pred[idx[part]] + full[0].mean(0) - pred.mean(0), atol=1e-6)


def test_local_systems_reused_within_a_call_give_what_solving_them_again_gives(monkeypatch):
    """adapt solves each kernel's local systems once per set of points (kriging and its variance share them)."""
    xy, y = _field(n=900, seed=5)
    prompt = np.zeros(len(xy), dtype=bool)
    prompt[::3] = True
    r = y[prompt] - y[prompt].mean(0)
    exact_var = ic.kriging_variance(xy[prompt], xy, 1.5, 0.05)
    monkeypatch.setattr(ic, "EXACT_MAX", 100)
    fresh = ic.krige(xy[prompt], r, xy, 1.5, 0.05), ic.kriging_variance(xy[prompt], xy, 1.5, 0.05)
    systems: dict = {}
    first = ic.krige(xy[prompt], r, xy, 1.5, 0.05, systems)
    assert len(systems) == 1
    again = ic.krige(xy[prompt], r, xy, 1.5, 0.05, systems), ic.kriging_variance(xy[prompt], xy, 1.5, 0.05, systems)
    assert len(systems) == 1  # kriging and its variance at the same points: one set of systems
    other = ic.krige(xy[prompt], r, xy, 3.0, 0.05, systems)  # another kernel: its own systems
    assert len(systems) == 2 and not np.allclose(other, first)
    np.testing.assert_array_equal(first, fresh[0])
    np.testing.assert_array_equal(again[0], fresh[0])
    np.testing.assert_array_equal(again[1], fresh[1])
    # the local variance is close to the exact one where both fit
    assert np.abs(fresh[1] - exact_var).max() < 0.02


def test_large_slides_are_assembled_in_blocks_of_spots(monkeypatch):
    """Above ``BLOCK`` spots the layer fits everything on the prompts, then assembles the prediction, its components
    and the spread one compact block of spots at a time (and the ridge's features in blocks): with exact kriging the
    same result as one block; with local kriging, each block's own query groups, so close to it."""
    xy, y = _field(n=900, genes=6, seed=11, noise=0.05)
    prompt = np.zeros(len(xy), dtype=bool)
    prompt[::6] = True
    rng = np.random.default_rng(3)
    net = (y + rng.normal(scale=0.3, size=y.shape)).astype(np.float32)
    latent, image = rng.normal(size=(len(xy), 5)), rng.normal(size=(len(xy), 12)).astype(np.float32)
    image[:, 0] += 3 * y[:, 0]  # the image tells something about one gene

    def run(**patch):
        with monkeypatch.context() as m:
            for name, value in patch.items():
                m.setattr(ic, name, value)
            return ic.adapt(net, latent, image, xy, prompt, y[prompt], keep_components=True)

    one, fit_one = run()
    blocks, fit_blocks = run(BLOCK=128, FEATURE_BLOCK=50)
    assert one.dtype == blocks.dtype == np.float32
    assert fit_blocks.weights == pytest.approx(fit_one.weights, abs=1e-6)
    np.testing.assert_allclose(blocks, one, atol=1e-4)
    for c in ic.COMPONENTS:
        np.testing.assert_allclose(fit_blocks.components[c], fit_one.components[c], atol=1e-4)
    np.testing.assert_allclose(fit_blocks.spread.std(), fit_one.spread.std(), rtol=1e-6)
    feats = ic._features(latent, image)
    monkeypatch.setattr(ic, "BLOCK", 128)
    monkeypatch.setattr(ic, "FEATURE_BLOCK", 50)
    blocked = ic._features(latent, image)  # the same principal components, up to their signs
    np.testing.assert_allclose(np.abs((feats * blocked).sum(0)) / (np.linalg.norm(feats, axis=0) ** 2), 1.0, atol=1e-4)
    monkeypatch.setattr(ic, "EXACT_MAX", 60)  # 150 prompts: local kriging
    local_blocks, _ = ic.adapt(net, latent, image, xy, prompt, y[prompt])
    monkeypatch.setattr(ic, "BLOCK", 10**9)
    local_one, _ = ic.adapt(net, latent, image, xy, prompt, y[prompt])
    held = ~prompt
    for g in range(y.shape[1]):
        assert np.corrcoef(local_blocks[held, g], local_one[held, g])[0, 1] > 0.995


def test_the_kernel_sees_values_centred_over_its_subset(monkeypatch):
    """Above ``FIT_SUBSET`` prompts the kernel is chosen on a subset of them; the likelihood takes its values as
    centred, so both the residuals and the expression are centred over that subset (the expression used to be centred
    over all prompts: a subset's non-zero mean reads as signal at the longest length scales)."""
    xy, y = _field(n=600, genes=4, seed=4)
    prompt = np.zeros(len(xy), dtype=bool)
    prompt[::2] = True
    rng = np.random.default_rng(1)
    seen = []
    loglik = ic._loglik
    monkeypatch.setattr(ic, "_loglik", lambda points, r: seen.append(r) or loglik(points, r))
    monkeypatch.setattr(ic, "FIT_SUBSET", 60)
    ic.adapt(y + rng.normal(scale=0.3, size=y.shape), rng.normal(size=(len(xy), 4)), None, xy, prompt, y[prompt])
    assert seen and all(r.shape[0] == 60 and np.abs(r.mean(0)).max() < 1e-12 for r in seen)


def test_constant_features_add_nothing_in_either_path(monkeypatch):
    """A feature constant over the spots (at a value other than 0, and far from 0) is centred on its value and scaled
    by 1 in one block and in the blocked path of large slides alike: the principal components are those without it."""
    rng = np.random.default_rng(5)
    latent = rng.normal(size=(400, 5)).astype(np.float32)
    image = rng.normal(size=(400, 12)).astype(np.float32)
    flat = np.hstack([latent, np.full((400, 1), 0.1, np.float32), np.full((400, 1), 3e4, np.float32)])

    def same(a, b):  # the same components up to their signs (b's last two: the constant columns, zeros)
        k = a.shape[1]
        np.testing.assert_allclose(np.abs((a * b[:, :k]).sum(0)) / np.linalg.norm(a, axis=0) ** 2, 1.0, atol=1e-4)
        assert np.abs(b[:, k:]).max() < 1e-3

    plain, with_flat = ic._features(latent, image), ic._features(flat, image)
    monkeypatch.setattr(ic, "BLOCK", 128)
    monkeypatch.setattr(ic, "FEATURE_BLOCK", 50)
    blocked = ic._features(flat, image)
    same(plain, with_flat)
    same(plain, blocked)


def test_spread_prompts_leave_the_ridge_out(monkeypatch):
    """With spread prompts (a lattice: a design) the folds' distance exceeds the prediction distance and the ridge,
    which reads no prompt, is left out of the combination, and the safeguard keeps the burden of proof on the
    combination; with random prompts on the same section neither."""
    rng = np.random.default_rng(12)
    g = np.arange(30.0)
    xy = np.column_stack([np.repeat(g, 30), np.tile(g, 30)])
    latent = rng.normal(size=(900, 6))
    field = np.sin(xy[:, :1] / 4.0 + np.arange(8)) + np.cos(xy[:, 1:] / 5.0)
    y = field + latent @ rng.normal(size=(6, 8)) + 0.3 * rng.normal(size=(900, 8))
    lattice = (xy[:, 0] % 3 == 1) & (xy[:, 1] % 3 == 1)
    random = np.zeros(900, dtype=bool)
    random[rng.choice(900, int(lattice.sum()), replace=False)] = True
    folds = ic.prompt_folds(int(lattice.sum()))
    assert ic.spread_ratio(xy, lattice, folds) > ic.SPREAD_RATIO > ic.spread_ratio(xy, random, folds)
    network = np.zeros_like(y)
    seen, safeguard = [], ic._safeguard
    monkeypatch.setattr(ic, "_safeguard", lambda *a, **k: (seen.append(k.get("spread")), safeguard(*a, **k))[1])
    _, fit = ic.adapt(network, latent, None, xy, random, y[random])
    assert not fit.cv_pcc["ridge_left_out"] and fit.weights["ridge"] > 0 and seen == [False]
    out, fit = ic.adapt(network, latent, None, xy, lattice, y[lattice], keep_components=True)
    assert fit.cv_pcc["ridge_left_out"] and fit.weights["ridge"] == 0.0 and fit.cv_pcc["spread_ratio"] > 2.0
    assert seen == [False, True]
    mu = y[lattice].mean(0)
    np.testing.assert_allclose(out, mu + sum(fit.weights[c] * (fit.components[c] - mu) for c in fit.components),
                               rtol=1e-5, atol=1e-5)  # fmt: skip


def test_the_low_rank_components_only_where_prompts_are_spread_as_random_ones():
    """Random prompts: both low-rank components are cross-fitted and compared. Prompts in blocks (the spread ratio
    below CLUSTER_RATIO) and on a lattice (above SPREAD_RATIO): left out, their weight 0, not computed."""
    rng = np.random.default_rng(14)
    g = np.arange(30.0)
    xy = np.column_stack([np.repeat(g, 30), np.tile(g, 30)])
    latent = rng.normal(size=(900, 6))
    shared = np.sin(xy[:, 0] / 4.0) + np.cos(xy[:, 1] / 5.0)
    y = shared[:, None] * rng.uniform(0.5, 1.5, size=12) + rng.normal(size=(900, 12))
    lattice = (xy[:, 0] % 3 == 1) & (xy[:, 1] % 3 == 1)
    block = (xy[:, 0] < 10) & (xy[:, 1] < 10)
    random = np.zeros(900, dtype=bool)
    random[rng.choice(900, 100, replace=False)] = True
    ratios = {k: ic.spread_ratio(xy, m, ic.prompt_folds(int(m.sum()))) for k, m in
              {"random": random, "block": block, "lattice": lattice}.items()}  # fmt: skip
    assert ratios["block"] < ic.CLUSTER_RATIO < ratios["random"] < ic.SPREAD_RATIO < ratios["lattice"]
    network = np.zeros_like(y)
    _, fit = ic.adapt(network, latent, None, xy, random, y[random], keep_components=True)
    assert set(ic.LOW_RANK_COMPONENTS) <= set(fit.cv_pcc) and set(ic.LOW_RANK_COMPONENTS) <= set(fit.components)
    assert fit.weights["field_lowrank"] + fit.weights["kriging_lowrank"] > 0  # one shared pattern under noise
    assert not fit.cv_pcc["ridge_left_out"]
    for mask, ridge_out in ((block, False), (lattice, True)):  # the ridge: left out for spread prompts only
        _, fit = ic.adapt(network, latent, None, xy, mask, y[mask], keep_components=True)
        assert all(fit.weights[c] == 0.0 and c not in fit.cv_pcc and c not in fit.components
                   for c in ic.LOW_RANK_COMPONENTS)  # fmt: skip
        assert fit.cv_pcc["ridge_left_out"] is ridge_out and ("ridge" in fit.cv_pcc) is not ridge_out


def test_genes_without_variation_do_not_move_the_shared_kernel():
    """A gene that is zero at every prompt says nothing about the kernel; forty of them beside four smooth genes
    used to pull the shared kernel to the grid's longest length scale and smallest noise ratio."""
    xy, y = _field(n=300, genes=4, noise=0.3)
    prompt = np.zeros(len(xy), dtype=bool)
    prompt[::5] = True
    r = y[prompt] - y[prompt].mean(0)
    ell, eta = ic.fit_kernel(xy[prompt], r)
    ell_z, eta_z = ic.fit_kernel(xy[prompt], np.hstack([r, np.zeros((len(r), 40))]))
    assert (ell_z[0], eta_z[0]) == (ell[0], eta[0])
    assert ic.LENGTH_SCALES[0] < ell[0] < ic.LENGTH_SCALES[-1]
    assert (ic._loglik(xy[prompt], np.zeros((len(r), 2))) == 0).all()
    # a constant that is not zero (a gene zero on the subset of prompts the kernel is fitted on, then centred over
    # all of them; or a rounding constant) says nothing either
    offset = np.hstack([r, np.full((len(r), 20), 0.3), np.full((len(r), 1), 1e-17)])
    assert ic.fit_kernel(xy[prompt], offset)[0][0] == ell[0] and ic.fit_kernel(xy[prompt], offset)[1][0] == eta[0]


def test_constant_columns_are_centred_and_scaled_exactly():
    """A column of equal values: its value and a scale of 1, so it standardises to exact zeros (not rounding blown
    up by a standard deviation of 1e-17), as the layer's features are standardised."""
    x = np.column_stack([np.full(60, 0.1), np.arange(60.0), np.zeros(60)])
    centre, sd = centre_scale(x)
    assert centre[0] == 0.1 and sd[0] == 1.0 and sd[2] == 1.0 and sd[1] == pytest.approx(x[:, 1].std())
    z = standardised(x)
    assert (z[:, 0] == 0).all() and (z[:, 2] == 0).all()
    centre, sd = centre_scale(np.empty((0, 3)))
    assert (centre == 0).all() and (sd == 1).all()


@pytest.mark.parametrize("value", [0.1, 0.3])
def test_a_gene_constant_over_the_prompts_leaves_the_others_alone(value):
    """A gene whose prompts all hold one value: the weights and the other genes' predictions are those with the
    gene at 0, and its own prediction is shifted by the value. Sixty copies of 0.1 average to a mean one unit in
    the last place off: a standard deviation of 4e-17 then scaled the gene's rounding up to order one, its residuals
    to 1e16, and it set the weights alone."""
    rng = np.random.default_rng(0)
    xy = rng.uniform(0, 12, size=(300, 2))
    centres = rng.uniform(0, 12, size=(4, 2))
    y = np.exp(-((xy[:, None, :] - centres[None]) ** 2).sum(-1) / 8.0) + 0.3 * rng.normal(size=(300, 4))
    net = np.hstack([y + rng.normal(size=y.shape), np.linspace(0, 1, 300)[:, None]])
    prompt = np.zeros(len(xy), dtype=bool)
    prompt[::5] = True
    assert np.full(prompt.sum(), value).std() > 0  # the rounding this is about
    outs, fits = [], []
    for v in (0.0, value):
        out, fit = ic.adapt(net, net[:, :3], None, xy, prompt, np.hstack([y, np.full((300, 1), v)])[prompt])
        outs.append(out)
        fits.append(fit)
    assert fits[0].record()["cv_pcc"]["kept"] == "combination"  # the weights, not one component, decide
    assert fits[1].weights == pytest.approx(fits[0].weights, abs=1e-12)
    np.testing.assert_allclose(outs[1][:, :4], outs[0][:, :4], atol=1e-6)
    np.testing.assert_allclose(outs[1][:, 4] - outs[0][:, 4], value, atol=1e-6)


def test_the_networks_kriged_field_is_the_prompts_exact_kriging(monkeypatch):
    """``ModelConfig.kriged_field``: the field in the network's input is simple kriging of the prompts' standardised
    values with the likelihood's kernel, against scikit-learn's GP with that kernel (every spot but the prompts)."""
    from sklearn.gaussian_process import GaussianProcessRegressor
    from sklearn.gaussian_process.kernels import RBF, WhiteKernel

    from phg2st_sc._model._data import kriged_prompts

    xy, y = _field(n=160, genes=6, seed=3)
    prompt = np.zeros(len(xy), dtype=bool)
    prompt[::4] = True
    got = kriged_prompts(xy, y, prompt)
    mu, sd = centre_scale(y[prompt])
    z = (y[prompt] - mu) / sd
    ell, eta = ic.fit_kernel(xy[prompt], z)
    assert ic.LENGTH_SCALES[0] < ell[0] < ic.LENGTH_SCALES[-1]
    gp = GaussianProcessRegressor(RBF(ell[0]) + WhiteKernel(eta[0]), optimizer=None).fit(xy[prompt], z)
    np.testing.assert_allclose(got[~prompt], mu + gp.predict(xy[~prompt]) * sd, rtol=1e-5, atol=1e-5)
    monkeypatch.setattr(ic, "BLOCK", 37)  # a large slide's path: the same, a block of spots at a time
    np.testing.assert_array_equal(kriged_prompts(xy, y, prompt), got)
    monkeypatch.undo()
    # a prompt's value moves the field near it, far less elsewhere (there only through the prompts' mean and scale)
    y2 = y.copy()
    first = np.flatnonzero(prompt)[0]
    y2[first] += 3.0
    moved = np.abs(kriged_prompts(xy, y2, prompt) - got).mean(1)
    d = np.linalg.norm(xy - xy[first], axis=1)
    assert moved[(d > 0) & (d < 1)].mean() > 4 * moved[d > 8].mean()


def test_cross_fitted_passes_never_read_the_prompt_they_predict_with_the_kriged_field(synthetic_section, tmp_path):
    """With the kriged field in the network's input, each cross-fitted pass kriges its own prompts only.

    (Without the field: ``test_cross_fitted_network_predictions_never_read_the_prompt_they_predict``.)
    """
    from _synthetic import SMALL

    a = synthetic_section()
    small = SMALL | {"config": SMALL["config"] | {"kriged_field": True}}
    model = phg2st.tl.fit(a, variant="adaptive", max_epochs=1, validation=None, **small)
    assert model.config["kriged_field"] is True
    prompt = np.zeros(a.n_obs, dtype=bool)
    prompt[::3] = True
    slide = model.tensors(a, prompt=prompt)
    full = model.predict(a, prompt, network_only=True)
    model.module.eval()
    with torch.inference_mode():
        first = model._cross_fitted(slide, prompt, "cpu", full)
        slide.y[np.flatnonzero(prompt)[0]] += 5.0
        second = model._cross_fitted(slide, prompt, "cpu", full)
    for before, after in zip(first, second, strict=True):
        np.testing.assert_allclose(before[0], after[0], atol=1e-5)
        assert not np.allclose(before, after, atol=1e-5)
    # the setting travels with the model file; anything but a bool is refused
    path = tmp_path / "kriged.pt"
    model.save(path)
    again = phg2st.PHG2ST.load(path)
    assert again.config["kriged_field"] is True
    np.testing.assert_array_equal(again.predict(a, prompt)[0], model.predict(a, prompt)[0])
    with pytest.raises(TypeError, match="kriged_field"):
        phg2st.tl.ModelConfig(kriged_field="yes")
    for other in ({"variant": "paper"}, {"use_prompts": False}):
        with pytest.raises(ValueError, match="kriged_field"):
            phg2st.tl.ModelConfig(kriged_field=True, **other)


def test_the_scale_is_the_least_absolute_deviations_slope():
    """The combination's scale minimises the pooled absolute error (checked against a fine grid), is 1 without
    deviations to scale, and is clipped to its range."""
    rng = np.random.default_rng(3)
    d = rng.normal(size=(60, 25))
    r = 1.3 * d + 0.5 * rng.standard_t(2, size=d.shape)  # heavy-tailed errors: the median slope, not least squares
    grid = np.linspace(*ic.SCALE_RANGE, 15001)
    brute = grid[np.argmin([np.abs(r - s * d).sum() for s in grid])]
    assert ic.lad_scale(r, d) == pytest.approx(brute, abs=2e-4) and abs(ic.lad_scale(r, d) - 1.0) > 0.1
    assert ic.lad_scale(r, np.zeros_like(d)) == 1.0
    assert ic.lad_scale(10 * d, d) == ic.SCALE_RANGE[1] and ic.lad_scale(-d, d) == ic.SCALE_RANGE[0]
    # a tie at half the weight: a minimiser all the same
    tie_r, tie_d = np.array([1.2, 1.8]), np.ones(2)
    assert np.abs(tie_r - ic.lad_scale(tie_r, tie_d) * tie_d).sum() == pytest.approx(0.6)
    # entries that are not finite are left out; nothing finite: 1
    r_bad, d_bad = r.copy(), d.copy()
    r_bad[0, 0], d_bad[1, 1] = np.nan, np.inf
    keep = np.ones(r.shape, dtype=bool)
    keep[0, 0] = keep[1, 1] = False
    assert ic.lad_scale(r_bad, d_bad) == ic.lad_scale(r[keep], d[keep])
    assert ic.lad_scale(np.full(3, np.nan), np.ones(3)) == 1.0


def test_the_scale_moves_no_genes_correlation_and_is_fitted_on_the_prompts_alone(monkeypatch):
    """The layer's scale is one number for every gene: the prediction's deviations from the prompts' mean are the
    unscaled ones times it, so each gene's PCC over the spots is the unscaled combination's; and the scale is
    :func:`lad_scale` of the prompts' deviations from their mean on the kept combination's cross-fitted ones."""
    xy, y = _field(n=240, genes=12, seed=4)
    prompt = np.zeros(len(xy), dtype=bool)
    prompt[::4] = True
    net = 0.4 * (y - y.mean(0)) + y.mean(0) + np.random.default_rng(5).normal(scale=0.15, size=y.shape)
    seen = []
    real = ic.lad_scale
    monkeypatch.setattr(ic, "lad_scale", lambda r, d: seen.append((r, d)) or real(r, d))
    _, fit = ic.adapt(net, net[:, :4], None, xy, prompt, y[prompt])
    r, d = seen[0]
    assert fit.cv_pcc["scale"] == real(r, d) and d.shape == r.shape
    mu = y[prompt].mean(0)
    np.testing.assert_allclose(r, y[prompt] - mu)  # the prompts' deviations, nothing held out
    # with IDW kept alone, what the scale reads is IDW's cross-fitted deviations at the prompts
    keep = ic._safeguard
    monkeypatch.setattr(
        ic, "_safeguard", lambda w, cv, *a, **k: ({c: float(c == "idw") for c in cv}, keep(w, cv, *a, **k)[1])
    )
    ic.adapt(net, net[:, :4], None, xy, prompt, y[prompt])
    folds = ic.prompt_folds(int(prompt.sum()))
    np.testing.assert_allclose(seen[1][1], ic._idw_folds(xy[prompt], y[prompt], folds) - mu)
    monkeypatch.setattr(ic, "_safeguard", keep)
    fits = {}
    for scale in (1.0, 1.5):
        monkeypatch.setattr(ic, "lad_scale", lambda r, d, s=scale: s)
        fits[scale] = ic.adapt(net, net[:, :4], None, xy, prompt, y[prompt])
    (plain, fit1), (out, fit15) = fits[1.0], fits[1.5]
    assert fit15.weights == pytest.approx({c: 1.5 * v for c, v in fit1.weights.items()})
    assert not np.allclose(fit15.spread.gene_scale, fit1.spread.gene_scale)  # the intervals read the scaled errors
    mu = y[prompt].mean(0)
    np.testing.assert_allclose(out - mu, 1.5 * (plain - mu), rtol=1e-5, atol=1e-5)
    held = ~prompt
    for g in range(y.shape[1]):
        assert np.corrcoef(out[held, g], y[held, g])[0, 1] == pytest.approx(np.corrcoef(plain[held, g], y[held, g])[0, 1], abs=1e-5)  # fmt: skip


def test_fold_splits_partition_the_rows_in_the_folds_order():
    """Each fold with every other row: disjoint, together all rows, ``rest`` sorted (the cross-fitting's split)."""
    from phg2st_sc._utils import fold_splits

    folds = ic.prompt_folds(23)
    splits = fold_splits(23, folds)
    assert len(splits) == len(folds) and all(
        np.array_equal(part, f) for (part, _), f in zip(splits, folds, strict=True)
    )
    for part, rest in splits:
        assert not set(part) & set(rest) and sorted([*part, *rest]) == list(range(23))
        assert list(rest) == sorted(rest) and rest.dtype == part.dtype == np.int64


def test_low_rank_kriging_of_every_pattern_is_kriging_of_every_gene():
    """With as many patterns as genes the low-rank field is each gene's own kriging (one kernel); with fewer it is
    the leading patterns' kriging mapped back through their loadings, the patterns being the principal components."""
    from sklearn.decomposition import PCA

    xy, y = _field(n=80, genes=6, seed=11)
    q = np.random.default_rng(1).uniform(0, 12, size=(25, 2))
    m = y.mean(0)
    np.testing.assert_allclose(ic.krige_low_rank(xy, y, q, 6, 2.0, 0.1), m + ic.krige(xy, y - m, q, 2.0, 0.1),
                               atol=1e-10)  # fmt: skip
    pca = PCA(2, svd_solver="full").fit(y)
    t = pca.transform(y)
    ours = ic.krige_low_rank(xy, y, q, 2, 2.0, 0.1)
    np.testing.assert_allclose(ours, m + ic.krige(xy, t, q, 2.0, 0.1) @ pca.components_, atol=1e-10)
    mean, scores, basis = ic.low_rank(np.ones((10, 4)), 3)  # no pattern at all: the mean everywhere
    assert scores.shape == (10, 0) and basis.shape == (0, 4)
    np.testing.assert_allclose(ic.krige_low_rank(xy[:10], np.ones((10, 4)), q, 3, 2.0, 0.1), np.ones((25, 4)))


def test_low_rank_cross_fits_find_their_patterns_without_the_fold():
    """A fold's cross-fitted low-rank prediction reads neither its values nor their patterns: changing the fold
    changes nothing there, and it equals the low-rank kriging of the other folds alone."""
    xy, y = _field(n=60, genes=8, seed=12)
    folds = ic.prompt_folds(60)
    changed = y.copy()
    changed[folds[0]] += np.random.default_rng(3).normal(scale=5.0, size=(len(folds[0]), y.shape[1]))
    before, after = (ic._krige_low_rank_folds(xy, v, 3, 2.0, 0.05, folds, None) for v in (y, changed))
    np.testing.assert_allclose(before[folds[0]], after[folds[0]], atol=1e-10)
    assert not np.allclose(before[folds[1]], after[folds[1]])
    rest = np.setdiff1d(np.arange(60), folds[2])
    np.testing.assert_allclose(before[folds[2]], ic.krige_low_rank(xy[rest], y[rest], xy[folds[2]], 3, 2.0, 0.05))


def test_the_low_rank_field_borrows_a_shared_pattern_across_noisy_genes():
    """Many genes that share one spatial pattern under heavy noise: the low-rank field recovers each gene's pattern
    at held-out spots better than kriging each gene alone."""
    rng = np.random.default_rng(13)
    xy = rng.uniform(0, 20, size=(400, 2))
    pattern = np.sin(xy[:, 0] / 3.0) + np.cos(xy[:, 1] / 4.0)
    loadings = rng.uniform(0.5, 1.5, size=60)
    y = pattern[:, None] * loadings + rng.normal(scale=3.0, size=(400, 60))
    prompt = np.zeros(400, dtype=bool)
    prompt[::8] = True
    z = y[prompt] - y[prompt].mean(0)
    ell, eta = ic.fit_kernel(xy[prompt], z / z.std(0))
    per_gene = ic.krige(xy[prompt], z, xy, ell, eta)
    low = ic.krige_low_rank(
        xy[prompt], y[prompt], xy, 1, *ic._low_rank_kernel(xy[prompt], ic.low_rank(z, 1), np.arange(50))
    )

    def pcc(pred):
        return np.mean([np.corrcoef(pred[~prompt, g], pattern[~prompt])[0, 1] for g in range(60)])

    assert pcc(low) > pcc(per_gene) + 0.1 and pcc(low) > 0.8


def test_the_intervals_read_a_genes_kernel_when_a_low_rank_component_weighs_most(monkeypatch):
    """The low-rank kernels are fitted to patterns whose noise is averaged over the genes (a far lower noise ratio
    than a gene's); the spread's kriging variance must not take one. With every weight on the expression's patterns,
    the variance uses the prompt field's kernel (the per-gene counterpart)."""
    rng = np.random.default_rng(15)
    xy = rng.uniform(0, 25, size=(600, 2))
    shared = np.sin(xy[:, 0] / 4.0) + np.cos(xy[:, 1] / 5.0)
    y = shared[:, None] * rng.uniform(0.5, 1.5, size=40) + 2.0 * rng.normal(size=(600, 40))
    prompt = np.zeros(600, dtype=bool)
    prompt[rng.choice(600, 120, replace=False)] = True
    low_rank_kernels, variance_kernels, chosen = [], [], []
    lrk, kv, choose = ic._low_rank_kernel, ic.kriging_variance, ic._choose
    monkeypatch.setattr(ic, "_low_rank_kernel", lambda *a, **k: low_rank_kernels.append(lrk(*a, **k))
                        or low_rank_kernels[-1])  # fmt: skip
    monkeypatch.setattr(ic, "kriging_variance", lambda xp, xq, ell, eta, *a: variance_kernels.append((ell, eta))
                        or kv(xp, xq, ell, eta, *a))  # fmt: skip
    monkeypatch.setattr(ic, "_choose", lambda *a, **k: chosen.append(choose(*a, **k)) or chosen[-1])
    monkeypatch.setattr(ic, "combine", lambda cv, *a, **k: {c: float(c == "field_lowrank") for c in cv})
    monkeypatch.setattr(ic, "_safeguard", lambda w, *a, **k: (w, {"kept": "combination"}))
    _, fit = ic.adapt(np.zeros_like(y), rng.normal(size=(600, 4)), None, xy, prompt, y[prompt])
    assert fit.weights["field_lowrank"] > 0 and sum(fit.weights.values()) == fit.weights["field_lowrank"]
    field_kernel = (float(np.median(chosen[1][0])), float(np.median(chosen[1][1])))  # (residuals, expression, ...)
    assert low_rank_kernels[0][1] < field_kernel[1]  # the patterns' noise ratio is far below a gene's
    assert set(variance_kernels) == {field_kernel}


def test_large_low_rank_patterns_come_from_a_randomised_svd_equal_to_the_exact_one(monkeypatch):
    """Above EXACT_SVD_FLOPS the leading patterns come from randomised subspace iteration: the same mean, and the
    same rank-3 reconstruction (scores times basis) as the exact SVD's, on expression with a few strong patterns
    under noise."""
    rng = np.random.default_rng(16)
    r = rng.normal(size=(400, 3)) @ (rng.normal(size=(3, 300)) * [[6.0], [4.0], [3.0]]) + rng.normal(size=(400, 300))
    exact = ic.low_rank(r, 3)
    monkeypatch.setattr(ic, "EXACT_SVD_FLOPS", 0)
    fast = ic.low_rank(r, 3)
    np.testing.assert_array_equal(fast[0], exact[0])
    assert fast[1].shape == (400, 3) and fast[2].shape == (3, 300)
    np.testing.assert_allclose(fast[1] @ fast[2], exact[1] @ exact[2], atol=1e-8)
    np.testing.assert_allclose(np.abs(fast[1]), np.abs(exact[1]), atol=1e-8)  # each pattern up to its sign


def test_a_component_that_inflates_the_combination_at_the_spots_is_left_out(monkeypatch):
    """A weight fitted where a component barely varies at the prompts (with a dozen prompts of noise, the field's
    cross-fitted predictions were the folds' means to 1e-9 and NNLS gave it a weight of 19,799: held-out values
    spread 34 times the measured ones) is caught at a sample of the spots: the component is left out, the weights
    fitted again, and the prediction spreads no more than its components do."""
    rng = np.random.default_rng(0)
    xy = rng.uniform(0, 25, size=(600, 2))
    net = (rng.normal(size=(600, 30)) * 0.3 + 1.0).astype(np.float32)
    y = rng.normal(size=(600, 30)) + 1.0  # noise: nothing to find
    prompt = np.zeros(600, dtype=bool)
    prompt[rng.choice(600, 12, replace=False)] = True
    combine, calls = ic.combine, []

    def absurd_first(cv, *a, **k):  # the first fit as in that case: all the weight on a near-constant field
        calls.append(list(cv))
        return {c: 2e4 * (c == "field") for c in cv} if len(calls) == 1 else combine(cv, *a, **k)

    monkeypatch.setattr(ic, "combine", absurd_first)
    monkeypatch.setattr(ic, "_safeguard", lambda w, *a, **k: (w, {"kept": "combination"}))
    out, fit = ic.adapt(net, rng.normal(size=(600, 4)), None, xy, prompt, y[prompt])
    record = fit.record()["cv_pcc"]
    assert record["inflating"] == "field" and fit.weights["field"] == 0.0
    assert "field" not in calls[1]  # refitted without it
    held, sd = ~prompt, y[prompt].std(0)
    assert (out[held].std(0) / sd).mean() < 1.0  # (with the weight kept: 34)
    # a combination that does not inflate is left as it is
    at = {"a": rng.normal(size=(50, 3)), "b": rng.normal(size=(50, 3))}
    assert ic._inflating(at, {"a": 0.6, "b": 0.7}, np.zeros(3), np.ones(3)) is None
    assert ic._inflating(at, {"a": 0.6, "b": 9.0}, np.zeros(3), np.ones(3)) == "b"
    assert ic._inflating(at, {"a": 0.0, "b": 0.0}, np.zeros(3), np.ones(3)) is None
    # spreads are read in units of the prompts' standard deviation per gene: components far smaller than it are
    # not inflated by a weight that keeps them small, and far larger ones are
    small, large = np.full(3, 100.0), np.full(3, 0.01)
    assert ic._inflating(at, {"a": 0.6, "b": 9.0}, np.zeros(3), small) is None
    assert ic.inflation(at, {"a": 0.6, "b": 9.0}, np.zeros(3), large)[0] == pytest.approx(
        ic.inflation(at, {"a": 0.6, "b": 9.0}, np.zeros(3), np.ones(3))[0]
    )


def test_the_check_can_leave_the_network_out_on_a_spread_design(monkeypatch):
    """On a design the safeguard's fallback is the network: the refit without an inflating network still gives the
    weights of the remaining components (it read the network's scores and failed). And where nothing earns a
    weight and kriging was left out, the weights fall back to the network, never to nothing."""
    g = np.arange(30.0)
    xy = np.column_stack([np.repeat(g, 30), np.tile(g, 30)])
    rng = np.random.default_rng(3)
    y = np.sin(xy[:, :1] / 4.0 + np.arange(5)) + 0.3 * rng.normal(size=(900, 5))
    lattice = (xy[:, 0] % 3 == 1) & (xy[:, 1] % 3 == 1)
    network = (y + rng.normal(size=y.shape)).astype(np.float32)
    combine, safeguard, calls = ic.combine, ic._safeguard, []

    def inflated_first(cv, *a, **k):
        calls.append(list(cv))
        return {c: 2e4 * (c == "network") for c in cv} if len(calls) == 1 else combine(cv, *a, **k)

    monkeypatch.setattr(ic, "combine", inflated_first)
    monkeypatch.setattr(ic, "_safeguard", lambda w, *a, **k: (w, {"kept": "combination"}) if len(calls) == 1
                        else safeguard(w, *a, **k))  # fmt: skip
    out, fit = ic.adapt(network, rng.normal(size=(900, 4)), None, xy, lattice, y[lattice])
    assert fit.cv_pcc["spread_ratio"] > ic.SPREAD_RATIO and "network" not in calls[1]
    assert fit.cv_pcc["inflating"] == "network" and fit.weights["network"] == 0.0
    assert sum(fit.weights.values()) > 0 and np.isfinite(out).all()
    target = rng.normal(size=(40, 3))
    opposed = {"network": -target, "field": -2 * target}  # no non-negative weight helps: NNLS gives none
    assert ic.combine(opposed, target, ic.prompt_folds(40)) == {"network": 1.0, "field": 0.0}


def test_the_inflation_check_changes_nothing_where_no_component_inflates(monkeypatch):
    """Where no component inflates the combination (a structured section, the network and the prompt field of use) the
    check records nothing and keeps the weights: the prediction, weights and spread are those with no bound at all,
    to the last bit, and the ratio it measured is far from the bound."""
    xy, y = _field(n=400, genes=6, seed=9, noise=0.3)
    prompt = np.zeros(len(xy), dtype=bool)
    prompt[::5] = True
    net = y + np.random.default_rng(4).normal(scale=0.4, size=y.shape)
    ratios = []
    measure = ic.inflation
    monkeypatch.setattr(ic, "inflation", lambda *a: (lambda r: ratios.append(r[0]) or r)(measure(*a)))
    out, fit = ic.adapt(net, net[:, :3], None, xy, prompt, y[prompt])
    assert "inflating" not in fit.record()["cv_pcc"]
    assert len(ratios) == 1 and 0.0 < ratios[0] < 0.5 * ic.MAX_INFLATION
    monkeypatch.setattr(ic, "MAX_INFLATION", np.inf)
    unbounded, free = ic.adapt(net, net[:, :3], None, xy, prompt, y[prompt])
    np.testing.assert_array_equal(out, unbounded)
    assert fit.weights == free.weights and sum(v > 0 for v in fit.weights.values()) >= 2
    np.testing.assert_array_equal(fit.spread.std(), free.spread.std())


def test_the_inflation_check_stops_once_every_component_is_left_out(monkeypatch):
    """A bound that even a single component exceeds (below one) leaves each component out once and then stops, with
    the network alone (re-centred and scaled), rather than refitting the same fallback for ever."""
    xy, y = _field(n=300, genes=4, seed=3, noise=0.3)
    prompt = np.zeros(len(xy), dtype=bool)
    prompt[::4] = True
    net = y + np.random.default_rng(2).normal(scale=0.4, size=y.shape)
    monkeypatch.setattr(ic, "MAX_INFLATION", 0.0)
    out, fit = ic.adapt(net, net[:, :2], None, xy, prompt, y[prompt])
    left_out = fit.record()["cv_pcc"]["inflating"].split(",")
    assert len(left_out) == len(set(left_out)) >= 2 and "network" in left_out
    assert {c for c, v in fit.weights.items() if v} == {"network"} and np.isfinite(out).all()


def test_the_check_reads_compact_patches_of_a_large_slide():
    """Above FIT_SUBSET spots to predict, the check reads runs of LOCAL_GROUP consecutive spots along the Z-order
    curve (they share their local systems, as a block's spots do), never a prompt, the same every call."""
    rng = np.random.default_rng(1)
    xy = rng.uniform(0, 200, size=(20_000, 2))
    prompt = rng.random(20_000) < 0.1
    sample = ic._check_sample(xy, prompt)
    assert len(sample) == (ic.FIT_SUBSET // ic.LOCAL_GROUP) * ic.LOCAL_GROUP and not prompt[sample].any()
    np.testing.assert_array_equal(sample, ic._check_sample(xy, prompt))
    gap = np.median(_nearest_distance(xy[sample]))
    assert gap < 0.5 * np.median(_nearest_distance(xy[rng.choice(np.flatnonzero(~prompt), len(sample))]))
    small = np.zeros(500, dtype=bool)
    small[::7] = True
    np.testing.assert_array_equal(ic._check_sample(rng.uniform(size=(500, 2)), small), np.flatnonzero(~small))


def _nearest_distance(points):
    """Each point's distance to its nearest other point."""
    from scipy.spatial import cKDTree

    return cKDTree(points).query(points, k=2)[0][:, 1]


@pytest.mark.parametrize("level", ["network", "units"])
def test_where_the_level_is_read_from_changes_only_the_spread(monkeypatch, level):
    """The spot scale's level read from the network or in the targets' units (``_incontext.LEVEL``, the development
    runs' alternatives): the same prediction and weights to the last bit, another spot scale."""
    xy, y = _field(n=400, genes=6, seed=5, noise=0.3)
    y = y * np.array([0.2, 0.5, 1.0, 2.0, 4.0, 8.0])  # genes of different scales: the units matter
    prompt = np.zeros(len(xy), dtype=bool)
    prompt[::5] = True
    net = y + np.random.default_rng(6).normal(scale=0.4, size=y.shape) * y.std(0)
    out, fit = ic.adapt(net, net[:, :3], None, xy, prompt, y[prompt])
    monkeypatch.setattr(ic, "LEVEL", level)
    other, other_fit = ic.adapt(net, net[:, :3], None, xy, prompt, y[prompt])
    np.testing.assert_array_equal(out, other)
    assert fit.weights == other_fit.weights
    assert not np.array_equal(fit.spread.spot_scale, other_fit.spread.spot_scale)


def _hostile(case: str):
    """A section of 300 spots and 5 genes, every sixth spot a prompt, made hostile in one way."""
    rng = np.random.default_rng(0)
    n, g = 300, 5
    xy, y = rng.uniform(0, 20, (n, 2)), rng.normal(size=(n, g))
    net, tokens = y + rng.normal(size=(n, g)), rng.normal(size=(n, 4)).astype(np.float32)
    prompt = np.zeros(n, dtype=bool)
    prompt[::6] = True
    if case == "genes constant over the prompts":
        y = np.full((n, g), 3.0)
    elif case == "all zero":
        y, net = np.zeros((n, g)), np.zeros((n, g))
    elif case == "exactly the fewest prompts":
        prompt = np.isin(np.arange(n), rng.choice(n, ic.MIN_PROMPTS, replace=False))
    elif case == "every prompt at one position":
        xy[prompt] = xy[prompt][0]
    elif case == "values of a million":
        y, net = y * 1e6, net * 1e6
    elif case == "values of a billionth":
        y, net = y * 1e-9, net * 1e-9
    elif case == "a constant network":
        net = np.zeros((n, g))
    elif case == "constant tokens":
        tokens = np.zeros((n, 4), dtype=np.float32)
    elif case == "spots on a line":
        xy = np.column_stack([np.arange(n), np.zeros(n)]).astype(float)
    elif case == "one gene":
        y, net = y[:, :1], net[:, :1]
    elif case == "one outlier prompt":
        y[prompt, 0] = 0.0
        y[np.flatnonzero(prompt)[0], 0] = 50.0
    elif case == "a network far off":
        net = net + 100.0
    elif case == "coordinates of 1e5 pitches":
        xy = xy * 1e5
    return xy, prompt, y, net, tokens


@pytest.mark.parametrize(
    "case",
    ["genes constant over the prompts", "all zero", "exactly the fewest prompts", "every prompt at one position",
     "values of a million", "values of a billionth", "a constant network", "constant tokens", "spots on a line",
     "one gene", "one outlier prompt", "a network far off", "coordinates of 1e5 pitches"],
)  # fmt: skip
def test_the_layer_stays_finite_on_hostile_sections(case):
    """Degenerate prompts, scales, networks and geometry: no error, no numerical warning, a finite prediction and
    spread of the right shapes, and the prediction within the range of the prompts and the network."""
    xy, prompt, y, net, tokens = _hostile(case)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        out, fit = ic.adapt(net, tokens, None, xy, prompt, y[prompt])
    assert out.shape == y.shape and np.isfinite(out).all()
    std = fit.spread.std()
    assert std.shape == y.shape and np.isfinite(std).all() and (std >= 0).all()
    lo = min(y[prompt].min(), net.min())
    hi = max(y[prompt].max(), net.max())
    width = hi - lo
    assert out.min() >= lo - 2 * width - 1e-12 and out.max() <= hi + 2 * width + 1e-12


@pytest.mark.parametrize("samples", [False, True])
def test_the_prediction_does_not_depend_on_the_order_of_the_spots(synthetic_section, monkeypatch, samples):
    """The layer deals its folds over the spots' names, not their rows: a section listed in another order gets the
    same prediction and spread, up to rounding (with the folds dealt by row, reversing a synthetic section of 81
    spots moved its prediction by up to 1.33). ``samples``: the fixed random samples of large slides too (the spots
    that align the passes, those the spread ratio and the inflation check read), made small enough to be used."""
    from _synthetic import SMALL

    from phg2st_sc._model import _model

    if samples:
        monkeypatch.setattr(_model, "ALIGN_SPOTS", 30)
        monkeypatch.setattr(ic, "FIT_SUBSET", 40)
        monkeypatch.setattr(ic, "LOCAL_GROUP", 8)
    a = synthetic_section(seed=4, name="S4")
    model = phg2st.tl.fit(synthetic_section(seed=0, name="S0"), max_epochs=1, validation=None, **SMALL)
    phg2st.tl.select_prompts(a, fraction=0.15, seed=0)
    for order in (np.arange(a.n_obs)[::-1], np.random.default_rng(7).permutation(a.n_obs)):
        b = a[order].copy()
        first, second = phg2st.tl.impute(a, model, copy=True), phg2st.tl.impute(b, model, copy=True)
        second = second[first.obs_names]
        for layer in ("phg2st", "phg2st_std", "phg2st_hi"):
            np.testing.assert_allclose(second.layers[layer], first.layers[layer], atol=1e-4, rtol=1e-4)
        w1 = first.uns["phg2st"]["params"]["in_context"]["weights"]
        w2 = second.uns["phg2st"]["params"]["in_context"]["weights"]
        assert w1.keys() == w2.keys() and all(abs(w1[c] - w2[c]) < 1e-4 for c in w1)
        # the network alone never depended on the order (the folds were the layer's only order-dependent part)
        net_a = phg2st.tl.impute(a, model, in_context=False, copy=True)
        net_b = phg2st.tl.impute(b, model, in_context=False, copy=True)[first.obs_names]
        np.testing.assert_allclose(net_b.layers["phg2st"], net_a.layers["phg2st"], atol=1e-5, rtol=1e-5)


def test_spots_listed_by_name_keep_the_listing_orders_folds_to_the_last_bit():
    """Where the spots are listed in the order of their names (every reader here lists them so), the canonical
    folds are the listing order's: the layer is bit for bit what it was before the folds followed the names."""
    xy, y = _field(n=200, genes=6, seed=3)
    rng = np.random.default_rng(5)
    prompt = np.zeros(len(xy), dtype=bool)
    prompt[rng.choice(len(xy), 30, replace=False)] = True
    net = y + rng.normal(scale=0.5, size=y.shape)
    latent = rng.normal(size=(len(xy), 8)).astype(np.float32)
    plain, fit_plain = ic.adapt(net, latent, None, xy, prompt, y[prompt])
    ranked, fit_ranked = ic.adapt(net, latent, None, xy, prompt, y[prompt], spot_rank=np.arange(len(xy)))
    np.testing.assert_array_equal(ranked, plain)
    np.testing.assert_array_equal(fit_ranked.spread.std(), fit_plain.spread.std())
    assert fit_ranked.weights == fit_plain.weights
    # and the canonical order is what decides: the same spots ranked the other way round get other folds
    folds = ic.prompt_folds(30, ic.canonical_order(np.arange(len(xy))[::-1], np.flatnonzero(prompt)))
    assert any(not np.array_equal(f, g) for f, g in zip(folds, ic.prompt_folds(30), strict=True))
