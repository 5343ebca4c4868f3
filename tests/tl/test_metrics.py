"""Metric definitions against scipy and by hand, and their invariances (hypothesis)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from scipy import stats

import phg2st_sc as phg2st
from phg2st_sc.tl import gene_metrics


def ccc_by_hand(t, p):
    mt, mp = t.mean(), p.mean()
    vt, vp = ((t - mt) ** 2).mean(), ((p - mp) ** 2).mean()
    cov = ((t - mt) * (p - mp)).mean()
    return 2 * cov / (vt + vp + (mt - mp) ** 2)


def test_against_scipy():
    rng = np.random.default_rng(0)
    t = rng.normal(size=(50, 6))
    p = t * rng.uniform(0.2, 2, size=6) + rng.normal(scale=0.8, size=(50, 6)) + 0.3
    m = gene_metrics(t, p)
    for g in range(6):
        assert m["pcc"][g] == pytest.approx(stats.pearsonr(t[:, g], p[:, g])[0], abs=1e-12)
        assert m["ccc"][g] == pytest.approx(ccc_by_hand(t[:, g], p[:, g]), abs=1e-12)
        assert m["mae"][g] == pytest.approx(np.abs(t[:, g] - p[:, g]).mean())
    assert not m["skipped"].any()


def test_constant_truth_skipped_constant_prediction_zero():
    t = np.column_stack([np.ones(5), np.arange(5.0)])
    p = np.column_stack([np.arange(5.0), np.full(5, 2.0)])
    m = gene_metrics(t, p)
    assert m["skipped"].tolist() == [True, False]
    assert np.isnan(m.loc[0, ["pcc", "ccc", "mae"]].astype(float)).all()
    assert m["pcc"][1] == 0.0 and m["ccc"][1] == 0.0


finite = st.floats(-50, 50, allow_nan=False, width=64)


@settings(max_examples=60, deadline=None)
@given(
    t=arrays(np.float64, (12, 3), elements=finite),
    p=arrays(np.float64, (12, 3), elements=finite),
    a=st.floats(0.1, 10),
    b=st.floats(-5, 5),
)
def test_invariances_and_bounds(t, p, a, b):
    assume((t.std(axis=0) > 1e-3).all() and (p.std(axis=0) > 1e-3).all())
    m = gene_metrics(t, p)
    assert ((m["pcc"] >= -1) & (m["pcc"] <= 1)).all()
    assert ((m["ccc"] >= -1 - 1e-9) & (m["ccc"] <= 1 + 1e-9)).all()
    assert (np.abs(m["ccc"]) <= np.abs(m["pcc"]) + 1e-9).all()  # CCC = PCC x a bias-correction factor in [0, 1]
    assert (m["mae"] >= 0).all()
    moved = gene_metrics(t, a * p + b)  # PCC ignores positive affine maps of the prediction
    np.testing.assert_allclose(moved["pcc"], m["pcc"], atol=1e-9)
    swapped = gene_metrics(t[:, ::-1].copy(), p[:, ::-1].copy())  # genes are scored independently
    np.testing.assert_allclose(swapped["pcc"].to_numpy()[::-1], m["pcc"], atol=1e-12)
    perfect = gene_metrics(t, t.copy())
    np.testing.assert_allclose(perfect["pcc"], 1.0)
    np.testing.assert_allclose(perfect["ccc"], 1.0)
    np.testing.assert_allclose(perfect["mae"], 0.0)
    order = np.random.default_rng(0).permutation(12)  # spot order does not matter
    np.testing.assert_allclose(gene_metrics(t[order], p[order])["ccc"], m["ccc"], atol=1e-9)


@pytest.mark.data
def test_score_heldout_vs_all(c2_targets):
    adata = c2_targets
    phg2st.tl.baseline(adata, method="idw")
    held = phg2st.tl.score(adata, layer="baseline_idw")
    every = phg2st.tl.score(adata, layer="baseline_idw", spots="all")
    assert held.summary["n_spots"] == 168 and every.summary["n_spots"] == 187
    assert every.summary["pcc"] > held.summary["pcc"]  # prompts carry their own values and flatter "all spots"
    t = adata.X.toarray() if hasattr(adata.X, "toarray") else adata.X
    mask = ~adata.obs["phg2st_prompt"].to_numpy()
    direct = gene_metrics(t[mask], adata.layers["baseline_idw"][mask])
    assert held.summary["pcc"] == pytest.approx(direct["pcc"].mean())
    assert held.summary["n_genes"] + held.summary["n_genes_skipped"] == 785
    assert list(held.per_gene.index) == list(adata.var_names)
    assert "SMOOTHED" not in repr(held) and not held.summary["targets_smoothed"]


@pytest.mark.data
def test_score_says_targets_are_smoothed(c2_targets):
    adata = c2_targets
    phg2st.pp.smooth(adata)
    phg2st.tl.baseline(adata, method="mean", layer="smoothed")
    with pytest.warns(phg2st.SmoothedTargetWarning):
        s = phg2st.tl.score(adata, layer="baseline_mean", truth_layer="smoothed")
    assert s.summary["targets_smoothed"] and "smoothed" in s.summary["note"]
    assert "SMOOTHED" in repr(s)


@pytest.mark.data
def test_score_errors_leave_adata_unchanged(c2_targets):
    adata = c2_targets
    with pytest.raises(KeyError, match="No layer 'nope'"):
        phg2st.tl.score(adata, layer="nope")
    phg2st.tl.baseline(adata, method="mean")
    with pytest.raises(ValueError, match="spots"):
        phg2st.tl.score(adata, layer="baseline_mean", spots="some")
    del adata.obs["phg2st_prompt"]
    with pytest.raises(KeyError, match="select_prompts"):
        phg2st.tl.score(adata, layer="baseline_mean")
