"""Predictive uncertainty of the adaptive variant: a standard deviation and split-conformal intervals per spot and
gene, calibrated on the section's prompts."""

from __future__ import annotations

import numpy as np
import pytest

import phg2st_sc as phg2st
from phg2st_sc._constants import Keys
from phg2st_sc._model import _incontext as ic


def _gp_section(seed: int, n: int = 700, genes: int = 40, noise: float = 0.3):
    """A Gaussian-process field (length scale 3) with known noise, and a noisy network prediction of it."""
    rng = np.random.default_rng(seed)
    xy = rng.uniform(0, 25, size=(n, 2))
    k = np.exp(-0.5 * ic._sqdist(xy, xy) / 3.0**2) + 1e-8 * np.eye(n)
    f = np.linalg.cholesky(k) @ rng.normal(size=(n, genes))
    y = f + noise * rng.normal(size=f.shape)
    prompt = np.zeros(n, dtype=bool)
    prompt[rng.choice(n, n // 5, replace=False)] = True
    return xy, y, prompt, f + 0.8 * rng.normal(size=f.shape), rng.normal(size=(n, 8))


def test_conformal_intervals_cover_held_out_spots_at_the_nominal_rate():
    """Random prompts on Gaussian-process data: coverage within 2 points of 80% and 90% (mean over 5 sections)."""
    covered = {0.8: [], 0.9: []}
    for seed in range(5):
        xy, y, prompt, net, latent = _gp_section(seed)
        out, fit = ic.adapt(net, latent, None, xy, prompt, y[prompt])
        held = ~prompt
        for level in covered:
            inside = np.abs(y[held] - out[held]) <= fit.spread.half_width(level)[held]
            covered[level].append(inside.mean())
    for level, values in covered.items():
        assert abs(np.mean(values) - level) < 0.02, (level, values)


def test_the_standard_deviation_ranks_errors():
    """Prompts in one half of a structured field: spots far from them get larger standard deviations and errors."""
    xy, y, _, net, latent = _gp_section(11, noise=0.1)
    prompt = (xy[:, 0] < 12.5) & (np.arange(len(xy)) % 3 == 0)
    out, fit = ic.adapt(np.zeros_like(y), latent, None, xy, prompt, y[prompt])
    std, err = fit.spread.std()[~prompt].mean(1), np.abs(y - out)[~prompt].mean(1)
    order = np.argsort(std)
    k = len(order) // 5
    assert err[order[-k:]].mean() > 1.5 * err[order[:k]].mean()
    assert std[xy[~prompt, 0] > 20].mean() > 2 * std[xy[~prompt, 0] < 10].mean()


def _noisier_where(seed: int, by: str, n: int = 700, genes: int = 40):
    """A Gaussian-process field whose noise is three times larger on one side of the spots' level (a component
    shared by the genes) or of an image feature, with a network that predicts the field with an error."""
    xy, f, prompt, _, _ = _gp_section(seed, n, genes + 1, noise=0.0)
    rng = np.random.default_rng(100 + seed)
    image = rng.normal(size=(n, 6))
    clean = f[:, 1:] + 2.0 * f[:, :1]  # every gene shares f[:, 0]: it sets the spot's level
    noise = np.where((f[:, 0] if by == "level" else image[:, 0]) > 0, 0.9, 0.3)
    y = clean + noise[:, None] * rng.normal(size=clean.shape)
    return xy, y, prompt, clean + 0.5 * rng.normal(size=clean.shape), image


def _ratios_and_coverage(by: str) -> tuple[np.ndarray, np.ndarray]:
    ratios, covered = [], []
    for seed in range(3):
        xy, y, prompt, net, image = _noisier_where(seed, by)
        out, fit = ic.adapt(net, image[:, 1:3], image, xy, prompt, y[prompt])
        held = ~prompt
        std, err = fit.spread.std()[held].mean(1), np.abs(y - out)[held].mean(1)
        order = np.argsort(std)
        k = len(order) // 5
        ratios.append(err[order[-k:]].mean() / err[order[:k]].mean())
        covered.append((np.abs(y[held] - out[held]) <= fit.spread.half_width(0.8)[held]).mean())
    return np.array(ratios), np.array(covered)


@pytest.mark.parametrize("by", ["level", "features"])
def test_the_spot_scale_follows_noise_it_can_read(monkeypatch, by):
    """Noise that depends on the spot's level or on an image feature: a spot scale that reads it ranks the errors
    (error ratio >= 1.5 on every section, well above the kriging standard deviation's alone) and keeps the
    80% coverage within 3 points."""
    monkeypatch.setattr(ic, "SPOT_INPUTS", ())
    flat, _ = _ratios_and_coverage(by)
    monkeypatch.setattr(ic, "SPOT_INPUTS", (by,))
    ratios, covered = _ratios_and_coverage(by)
    assert ratios.min() > 1.5 and ratios.mean() > flat.mean() + 0.3, (ratios, flat)
    assert abs(covered.mean() - 0.8) < 0.03, covered


def test_impute_writes_the_uncertainty_slots(synthetic_section):
    from _synthetic import SMALL

    a = synthetic_section()
    model = phg2st.tl.fit(a, variant="adaptive", max_epochs=1, validation=None, **SMALL)
    phg2st.tl.select_prompts(a, fraction=0.3, seed=0)
    out = phg2st.tl.impute(a, model, copy=True, coverage=0.8)
    pred = out.layers["phg2st"]
    std, lo, hi = (out.layers[Keys.uncertainty("phg2st", p)] for p in ("std", "lo", "hi"))
    prompt = out.obs["phg2st_prompt"].to_numpy(bool)
    assert std.shape == pred.shape and std.dtype == np.float32
    assert (std[~prompt] > 0).all() and (std[prompt] == 0).all()
    assert (lo <= pred).all() and (pred <= hi).all() and (lo[prompt] == hi[prompt]).all()
    np.testing.assert_allclose(out.obs["phg2st_std_mean"], std.mean(1), rtol=1e-5)
    assert out.uns["phg2st"]["params"]["uncertainty"]["coverage"] == 0.8
    wider = phg2st.tl.impute(a, model, copy=True, coverage=0.95)
    assert (wider.layers["phg2st_hi"] >= out.layers["phg2st_hi"]).all()
    assert "phg2st_std" not in phg2st.tl.impute(a, model, copy=True, uncertainty=False).layers


def test_uncertainty_that_cannot_be_given_writes_nothing(synthetic_section):
    from _synthetic import SMALL

    a = synthetic_section()
    model = phg2st.tl.fit(a, variant="propagated", max_epochs=1, validation=None, **SMALL)
    phg2st.tl.select_prompts(a, fraction=0.3, seed=0)
    before = a.copy()
    with pytest.raises(ValueError, match="variant is 'propagated'"):
        phg2st.tl.impute(a, model, uncertainty=True)
    assert set(a.layers) == set(before.layers) and set(a.uns) == set(before.uns)
    quiet = phg2st.tl.impute(a, model, copy=True)  # default: only where it can be given
    assert "phg2st_std" not in quiet.layers and "phg2st" in quiet.layers
    for bad in (0.0, 1.0, 1.5, True, "0.9"):
        with pytest.raises((ValueError, TypeError), match="coverage"):
            phg2st.tl.impute(a, model, coverage=bad)
    assert set(a.layers) == set(before.layers)


def test_benchmark_rows_carry_calibration_only_for_methods_with_uncertainty(synthetic_section):
    """evaluate_methods (tl.benchmark's core): coverage, width and error ratio for the adaptive model's held-out
    rows; NaN for a baseline run after it (its stale uncertainty layers are dropped first)."""
    from _synthetic import SMALL

    from phg2st_sc.tl._evaluation import UNCERTAINTY_METRICS, baseline_predictor, evaluate_methods, model_predictor

    a = synthetic_section()
    model = phg2st.tl.fit(a, variant="adaptive", max_epochs=1, validation=None, **SMALL)
    methods = {"adaptive": model_predictor(model), "idw": baseline_predictor({"method": "idw"})}
    rows, _ = evaluate_methods(a.copy(), methods, seeds=[0], fraction=0.3, spots=("heldout", "all"))
    by = {(r["method"], r["spots"]): r for r in rows}
    ours = by[("adaptive", "heldout")]
    assert 0.0 <= ours["coverage_80"] <= ours["coverage_90"] <= 1.0 and ours["width_90"] > 0
    assert np.isfinite(ours["error_ratio"])
    for key in (("idw", "heldout"), ("adaptive", "all")):
        assert all(np.isnan(by[key].get(m, np.nan)) for m in UNCERTAINTY_METRICS)
    # what the layer chose on the draw, on both kinds of rows of the adaptive model; nothing for the baseline
    record = model.in_context_["cv_pcc"]
    for which in ("heldout", "all"):
        row = by[("adaptive", which)]
        assert row["layer_kept"] == record["kept"] and row["layer_kept"]
        assert row["spread_ratio"] == record["spread_ratio"] > 0 and row["ridge_left_out"] == record["ridge_left_out"]
        assert row["layer_scale"] == record["scale"] and ic.SCALE_RANGE[0] <= row["layer_scale"] <= ic.SCALE_RANGE[1]
    assert all(
        np.isnan(by[("idw", "heldout")][c]) for c in ("layer_kept", "spread_ratio", "ridge_left_out", "layer_scale")
    )
    # too few prompts for the layer: it uses the network alone, and says so
    few, _ = evaluate_methods(a.copy(), {"adaptive": model_predictor(model)}, seeds=[0], fraction=8 / a.n_obs)
    assert few[0]["layer_kept"] == "network" and np.isnan(few[0]["spread_ratio"]) and np.isnan(few[0]["layer_scale"])


def test_pl_spatial_shows_the_standard_deviation_beside_the_prediction(synthetic_section):
    import matplotlib

    matplotlib.use("Agg")
    from _synthetic import SMALL

    a = synthetic_section()
    model = phg2st.tl.fit(a, variant="adaptive", max_epochs=1, validation=None, **SMALL)
    phg2st.tl.select_prompts(a, fraction=0.3, seed=0)
    phg2st.tl.impute(a, model)
    gene = a.var_names[0]
    fig = phg2st.pl.spatial(a, gene, layers=(None, "phg2st"), uncertainty=True, return_fig=True, show=False)
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert titles[-1].endswith("std") and len(titles) == 4  # measured, predicted, error, std
    del a.layers["phg2st_std"]
    with pytest.raises(ValueError, match="no layer after the first has a standard deviation"):
        phg2st.pl.spatial(a, gene, layers=(None, "phg2st"), uncertainty=True, show=False)
    matplotlib.pyplot.close("all")


def test_a_gene_silent_at_the_prompts_still_gets_an_interval():
    """Sparse counts: a gene that is zero at every prompt but expressed elsewhere keeps a non-zero width, and the
    other genes' coverage is not pulled down by its zero errors."""
    xy, y, prompt, net, latent = _gp_section(3)
    y[:, :10] = 0.0
    y[~prompt, :10] = np.random.default_rng(0).poisson(0.2, size=((~prompt).sum(), 10))  # unseen at the prompts
    net[:, :10] = 0.0  # and predicted silent: no component has an error there
    out, fit = ic.adapt(net, latent, None, xy, prompt, y[prompt])
    assert (fit.spread.std()[:, :10] > 0).all()
    held = ~prompt
    inside = np.abs(y[held, 10:] - out[held, 10:]) <= fit.spread.half_width(0.9)[held, 10:]
    assert inside.mean() > 0.87


def test_pl_calibration_draws_a_line_per_fold():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd

    rows = [{"fold": f, "method": m, "protocol": "heldout", "prompt_fraction": 0.1, "spots": "heldout", "seed": s,
             "coverage_80": 0.78 + 0.01 * s, "coverage_90": 0.88 + 0.01 * s if m == "ours" else np.nan}
            for f in ("C2", "C3") for m in ("ours", "idw") for s in range(3)]  # fmt: skip
    table = pd.DataFrame(rows)
    table.loc[table.method == "idw", "coverage_80"] = np.nan
    fig = phg2st.pl.calibration(table, return_fig=True, show=False)
    lines = [line for line in fig.axes[0].lines if line.get_label() in ("C2", "C3")]
    assert len(lines) == 2 and np.allclose(lines[0].get_ydata(), [0.79, 0.89])
    plt.close("all")
    with pytest.raises(ValueError, match="prompt_fraction"):
        phg2st.pl.calibration(pd.concat([table, table.assign(prompt_fraction=0.2)]), show=False)
    with pytest.raises(ValueError, match="no coverage columns"):
        phg2st.pl.calibration(table.drop(columns=["coverage_80"]), show=False)
    assert not plt.get_fignums()
