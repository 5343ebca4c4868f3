"""Metric definitions against scipy and by hand, and their invariances (hypothesis)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from anndata import AnnData
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


def test_sparse_inputs_give_the_dense_result():
    """``adata.X`` or a layer may be sparse: the metrics are those of the dense arrays (they were a NumPy error)."""
    from scipy import sparse

    rng = np.random.default_rng(1)
    t = rng.poisson(0.7, size=(40, 5)).astype(float)  # mostly zeros, as counts are
    p = t + rng.normal(scale=0.5, size=t.shape)
    dense = gene_metrics(t, p)
    for t_in, p_in in (
        (sparse.csr_matrix(t), p),
        (t, sparse.csc_matrix(p)),
        (sparse.csr_array(t), sparse.coo_matrix(p)),
    ):
        pd.testing.assert_frame_equal(gene_metrics(t_in, p_in), dense)


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


# --- properties of each metric, one clause per test (hypothesis) -------------------------------------------------

PROPS = settings(max_examples=40, deadline=None)
column = arrays(np.float64, 15, elements=finite)


def one_gene(t, p) -> dict[str, float]:
    m = gene_metrics(np.asarray(t, dtype=np.float64)[:, None], np.asarray(p, dtype=np.float64)[:, None])
    return {key: m[key][0] for key in ("pcc", "ccc", "mae", "skipped")}


def varies(x) -> bool:
    return bool(np.std(x) > 1e-3)


@PROPS
@given(t=column, p=column)
def test_bounds(t, p):
    assume(varies(t))
    m = one_gene(t, p)
    assert -1.0 <= m["pcc"] <= 1.0
    assert -1.0 <= m["ccc"] <= 1.0
    assert abs(m["ccc"]) <= abs(m["pcc"]) + 1e-12
    assert m["mae"] >= 0.0


@PROPS
@given(t=column, p=column, a=st.floats(0.1, 10), b=st.floats(-10, 10))
def test_pcc_invariant_to_positive_affine_maps_of_either_argument(t, p, a, b):
    assume(t.std() > 0.1 and p.std() > 0.1)  # well above rounding, so that 1e-9 is a fair tolerance
    ref = one_gene(t, p)["pcc"]
    assert one_gene(a * t + b, p)["pcc"] == pytest.approx(ref, abs=1e-9)
    assert one_gene(t, a * p + b)["pcc"] == pytest.approx(ref, abs=1e-9)
    assert one_gene(a * t + b, a * p - b)["pcc"] == pytest.approx(ref, abs=1e-9)


@PROPS
@given(t=column, p=column)
def test_negation_flips_the_sign_of_pcc_and_ccc(t, p):
    assume(varies(t) and varies(p))
    m, neg_p, neg_both = one_gene(t, p), one_gene(t, -p), one_gene(-t, -p)
    assert neg_p["pcc"] == pytest.approx(-m["pcc"], abs=1e-12)
    assert one_gene(-t, p)["pcc"] == pytest.approx(-m["pcc"], abs=1e-12)
    assert neg_both["pcc"] == pytest.approx(m["pcc"], abs=1e-12)  # negating both changes nothing
    assert neg_both["ccc"] == pytest.approx(m["ccc"], abs=1e-12)
    assert neg_both["mae"] == pytest.approx(m["mae"], rel=1e-12)


@PROPS
@given(t=column, p=column)
def test_symmetric_in_truth_and_prediction(t, p):
    assume(varies(t) and varies(p))  # a constant truth is skipped and a constant prediction scores 0: not symmetric
    m, r = one_gene(t, p), one_gene(p, t)
    for key in ("pcc", "ccc", "mae"):
        assert r[key] == pytest.approx(m[key], abs=1e-12), key


@PROPS
@given(t=column, p=column)
def test_ccc_is_one_only_for_identical_vectors(t, p):
    assume(varies(t))
    assert one_gene(t, t.copy())["ccc"] == 1.0
    assume(np.abs(p - t).max() > 1e-3)
    m = one_gene(t, p)
    assert m["ccc"] < 1.0
    # Lin's identity: 1 - CCC = mean squared error / (var t + var p + (mean t - mean p)^2); zero only when p == t
    denom = t.var() + p.var() + (t.mean() - p.mean()) ** 2
    assert 1.0 - m["ccc"] == pytest.approx(((p - t) ** 2).mean() / denom, rel=1e-7, abs=1e-12)


@PROPS
@given(t=column, b=st.floats(0.01, 50), a=st.floats(0.05, 20))
def test_ccc_drops_under_shifts_and_scales(t, b, a):
    assume(varies(t))
    # a perfect ranking that is shifted: PCC stays 1, CCC = 2 var / (2 var + b^2) < 1
    shifted = one_gene(t, t + b)
    assert shifted["pcc"] == pytest.approx(1.0)
    assert shifted["ccc"] == pytest.approx(2 * t.var() / (2 * t.var() + b**2), rel=1e-9)
    assert shifted["ccc"] < 1.0
    assert one_gene(t, t + 2 * b)["ccc"] < shifted["ccc"]  # further off, lower
    assume(abs(a - 1) > 1e-3)
    scaled = one_gene(t, a * t)
    assert scaled["pcc"] == pytest.approx(1.0)
    assert scaled["ccc"] < 1.0 - 1e-9


@PROPS
@given(t=column, p=column, s=st.floats(0.5, 50))
def test_moving_the_prediction_mean_away_lowers_a_positive_ccc(t, p, s):
    assume(varies(t) and varies(p))
    cov = ((t - t.mean()) * (p - p.mean())).mean()
    assume(abs(cov) > 1e-6)
    away = s if p.mean() >= t.mean() else -s
    before, after = one_gene(t, p)["ccc"], one_gene(t, p + away)["ccc"]
    assert after < before if cov > 0 else after > before  # the bias term only grows the denominator
    assert one_gene(t, p + away)["pcc"] == pytest.approx(one_gene(t, p)["pcc"], abs=1e-9)


constant = st.floats(-1e6, 1e6, allow_nan=False)


@PROPS
@given(c=constant, p=column, t=column, d=constant)
def test_constant_genes(c, p, t, d):
    """Documented: a constant truth is skipped (NaN for every metric); a constant prediction has PCC 0 and CCC 0."""
    n = len(t)
    # constant truth, any prediction (constant or not): skipped
    for pred in (p, np.full(n, d)):
        m = one_gene(np.full(n, c), pred)
        assert m["skipped"]
        assert np.isnan(m["pcc"]) and np.isnan(m["ccc"]) and np.isnan(m["mae"])
    # constant prediction of a varying truth: scored, no correlation
    assume(varies(t))
    m = one_gene(t, np.full(n, d))
    assert not m["skipped"]
    assert m["pcc"] == 0.0
    assert m["ccc"] == pytest.approx(0.0, abs=1e-12)
    assert m["mae"] == pytest.approx(np.abs(t - d).mean())


@PROPS
@given(t=arrays(np.float64, (10, 4), elements=finite), p=arrays(np.float64, (10, 4), elements=finite),
       const=st.lists(st.booleans(), min_size=4, max_size=4))  # fmt: skip
def test_constant_genes_do_not_affect_the_others_and_are_left_out_of_the_summary(t, p, const):
    assume(all(varies(t[:, g]) for g in range(4)))
    t = t.copy()
    const = np.array(const)
    t[:, const] = 3.0
    m = gene_metrics(t, p)
    np.testing.assert_array_equal(m["skipped"].to_numpy(), const)
    for g in np.flatnonzero(~const):
        alone = one_gene(t[:, g], p[:, g])
        assert m["pcc"][g] == pytest.approx(alone["pcc"], abs=1e-12)  # column sums may round differently
        assert m["ccc"][g] == pytest.approx(alone["ccc"], abs=1e-12)
    adata = AnnData(t.astype(np.float32))
    adata.layers["pred"] = p.astype(np.float32)
    phg2st.tl.select_prompts(adata, n_prompts=1, seed=0)
    s = phg2st.tl.score(adata, layer="pred", spots="all")
    assert s.summary["n_genes_skipped"] == const.sum() and s.summary["n_genes"] == (~const).sum()
    kept = ~s.per_gene["skipped"].to_numpy()
    expected = s.per_gene["pcc"][kept].mean() if kept.any() else np.nan
    np.testing.assert_equal(s.summary["pcc"], expected)
    assert not np.isnan(s.summary["ccc"]) if kept.any() else np.isnan(s.summary["ccc"])
