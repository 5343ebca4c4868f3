"""Regression tests for defects found in review: leaks, stale slots, unclear failures."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from _synthetic import SMALL

import phg2st_sc as phg2st

pytestmark = pytest.mark.usefixtures("no_progress")


@pytest.mark.data
def test_score_flags_smoothed_inputs(c2_targets):
    """Smoothed prompts carry held-out neighbours' values: scoring them against raw truth is flagged."""
    a = c2_targets
    phg2st.pp.smooth(a)
    phg2st.tl.baseline(a, method="idw", layer="smoothed", layer_added="idw_smooth_in")
    with pytest.warns(phg2st.SmoothedTargetWarning, match="inputs"):
        s = phg2st.tl.score(a, layer="idw_smooth_in").summary
    assert s["inputs_smoothed"] and not s["targets_smoothed"] and "held-out neighbours" in s["note"]
    phg2st.tl.baseline(a, method="idw", layer_added="idw_raw")
    with warnings.catch_warnings():
        warnings.simplefilter("error", phg2st.SmoothedTargetWarning)
        clean = phg2st.tl.score(a, layer="idw_raw").summary
    assert not clean["inputs_smoothed"] and clean["pcc"] < s["pcc"]  # the leak inflates the score


@pytest.mark.data
def test_score_refuses_predictions_from_other_prompts(c2_targets):
    a = c2_targets
    phg2st.tl.baseline(a, method="idw")
    phg2st.tl.select_prompts(a, fraction=0.1, seed=5)
    with pytest.raises(ValueError, match="other prompts"):
        phg2st.tl.score(a, layer="baseline_idw")
    phg2st.tl.baseline(a, method="idw")
    assert np.isfinite(phg2st.tl.score(a, layer="baseline_idw").summary["pcc"])


@pytest.mark.data
def test_top_expressed_targets_rank_raw_counts(c2):
    work = phg2st.tl.prepare_targets(c2, "heldout", panel="top_expressed")
    assert list(work.var_names) == phg2st.pp.top_expressed_genes(c2, n_top=1000)
    assert work.uns["phg2st_targets"]["params"]["panel"] == "top_expressed"


def test_impute_needs_measured_values_at_prompts_only(synthetic_section):
    a = synthetic_section()
    model = phg2st.tl.fit(a, max_epochs=1, **SMALL)
    c = synthetic_section(seed=2, name="S2")
    phg2st.tl.select_prompts(c, fraction=0.2, seed=0)
    reference = phg2st.tl.impute(c, model, copy=True).layers["phg2st"]
    prompts = c.obs["phg2st_prompt"].to_numpy()
    c.X[~prompts] = np.nan  # unmeasured spots
    phg2st.tl.impute(c, model)
    np.testing.assert_allclose(c.layers["phg2st"], reference, rtol=1e-6)
    c.X[np.flatnonzero(prompts)[0], 0] = np.nan
    with pytest.raises(ValueError, match="prompt spots' expression"):
        phg2st.tl.impute(c, model, layer_added="again")


def test_fit_checks_the_hypergraph_matches_the_features(synthetic_section):
    a = synthetic_section()
    a.obsm["X_other"] = a.obsm["X_tiny"] * 2
    a.obsm["X_other_neighbours"] = a.obsm["X_tiny_neighbours"]
    a.uns["X_other"] = a.uns["X_tiny"]
    with pytest.raises(ValueError, match="built from `obsm\\['X_tiny'\\]`"):
        phg2st.tl.fit(a, max_epochs=1, **{**SMALL, "use_rep": "X_other"})


def test_validation_section_must_not_be_a_training_section(synthetic_section):
    a, b = synthetic_section(), synthetic_section(seed=1, name="S1")
    with pytest.raises(ValueError, match="also a training section"):
        phg2st.tl.fit([a, b], validation=[b], max_epochs=1, **SMALL)


def test_tiny_sections_fail_clearly(synthetic_section):
    a = synthetic_section(side=3)  # 9 spots
    with pytest.raises(ValueError, match="fewer than 10 spots"):
        phg2st.tl.fit(a, max_epochs=1, **SMALL)


def test_embedding_without_neighbours_removes_a_stale_index(synthetic_section):
    import torch

    a = synthetic_section()
    assert "X_tiny_neighbours" in a.obsm

    class Tiny(torch.nn.Module):
        def forward(self, x):
            return x.mean((2, 3))

    phg2st.pp.embed_tiles(a, encoder=Tiny(), tile_size=16, grid_size=0, key_added="X_tiny")
    assert "X_tiny_neighbours" not in a.obsm and "tile_embeddings" not in a.uns["X_tiny"]
    phg2st.pp.build_hypergraph(a, use_rep="X_tiny", k=3, key_added="g2")  # no stale index to trip over
    assert "g2_neighbour_hyperedges" not in a.obsm


@pytest.mark.data
def test_select_genes_fill_missing_copies_deeply(c2):
    genes = ["KRT8", "NOT_A_GENE"]
    out = phg2st.pp.select_genes(c2, genes, fill_missing=True, copy=True)
    out.uns["spatial"]["C2"]["scalefactors"]["tissue_hires_scalef"] = 99.0
    assert c2.uns["spatial"]["C2"]["scalefactors"]["tissue_hires_scalef"] != 99.0
    assert out.X.dtype == c2.X.dtype
