"""`datasets.synthetic`: realistic layouts, every slot the pipeline needs, expression tied to the features."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial import cKDTree

import phg2st_sc as phg2st


@pytest.mark.parametrize(("layout", "pitch_um"), [("visium", 100.0), ("visium_hd", 16.0), ("st", 200.0)])
def test_layout_spacing(layout, pitch_um):
    a = phg2st.datasets.synthetic(400, 20, layout=layout, seed=1)
    mpp = a.uns["spatial"]["synthetic"]["metadata"]["microns_per_pixel"]
    d, _ = cKDTree(a.obsm["spatial"]).query(a.obsm["spatial"], k=2)
    np.testing.assert_allclose(np.median(d[:, 1]) * mpp, pitch_um, rtol=1e-6)
    assert a.uns["spatial"]["synthetic"]["metadata"]["spot_pitch_px"] * mpp == pytest.approx(pitch_um)
    assert a.n_obs == 400 and a.n_vars == 20


def test_visium_hd_bin_size():
    a = phg2st.datasets.synthetic(400, 5, layout="visium_hd", bin_size_um=8, seed=1)
    info = a.uns["spatial"]["synthetic"]
    d, _ = cKDTree(a.obsm["spatial"]).query(a.obsm["spatial"], k=2)
    np.testing.assert_allclose(np.median(d[:, 1]) * info["metadata"]["microns_per_pixel"], 8.0, rtol=1e-6)
    assert info["scalefactors"]["bin_size_um"] == 8.0
    # 8 µm bins: 14 x 14 of them in one 112 µm tile, so far fewer distinct tiles per bin than at 16 µm
    b = phg2st.datasets.synthetic(400, 5, layout="visium_hd", seed=1)
    assert len(a.uns["X_synthetic"]["tile_embeddings"]) < len(b.uns["X_synthetic"]["tile_embeddings"])
    for bad in (0, -8, True, "8", 500):
        with pytest.raises(ValueError, match="bin_size_um"):
            phg2st.datasets.synthetic(10, 5, layout="visium_hd", bin_size_um=bad)
    with pytest.raises(ValueError, match="visium_hd"):
        phg2st.datasets.synthetic(10, 5, layout="visium", bin_size_um=8)


def test_slots_and_seeds():
    a = phg2st.datasets.synthetic(300, 30, n_features=16, grid_size=3, seed=0, section="S0")
    b = phg2st.datasets.synthetic(300, 30, n_features=16, grid_size=3, seed=0, section="S0")
    c = phg2st.datasets.synthetic(300, 30, n_features=16, grid_size=3, seed=1, section="S1")
    assert (a.X != b.X).nnz == 0 and np.array_equal(a.obsm["X_synthetic"], b.obsm["X_synthetic"])
    assert not np.array_equal(a.obsm["X_synthetic"], c.obsm["X_synthetic"])
    assert a.obsm["X_synthetic_neighbours"].shape == (300, 9)
    emb = a.uns["X_synthetic"]["tile_embeddings"]
    assert emb.shape[1] == 16 and a.obsm["X_synthetic_neighbours"].max() < len(emb)
    assert set(a.obs["section"]) == {"S0"} and "S0" in a.uns["spatial"]
    x = a.X.toarray()
    assert np.all(x >= 0) and np.array_equal(x, np.round(x))  # raw counts
    with pytest.raises(ValueError, match="layout"):
        phg2st.datasets.synthetic(10, 5, layout="xenium")


def test_expression_follows_features_across_sections():
    """Genes mean the same on every seed: a ridge fitted on one section predicts another from its features."""
    from sklearn.linear_model import Ridge

    a = phg2st.datasets.synthetic(900, 40, seed=0)
    b = phg2st.datasets.synthetic(900, 40, seed=3)
    model = Ridge(alpha=1.0).fit(a.obsm["X_synthetic"], a.layers["log1p"])
    pred = model.predict(b.obsm["X_synthetic"])
    truth = b.layers["log1p"]
    pcc = [np.corrcoef(pred[:, g], truth[:, g])[0, 1] for g in range(40) if truth[:, g].std() > 0]
    assert np.median(pcc) > 0.3
    # and spatially structured: a spot resembles its neighbour more than a random spot
    _, j = cKDTree(b.obsm["spatial"]).query(b.obsm["spatial"], k=2)
    near = np.mean([np.corrcoef(truth[:, g], truth[j[:, 1], g])[0, 1] for g in range(40) if truth[:, g].std() > 0])
    rand = np.random.default_rng(0).permutation(b.n_obs)
    far = np.mean([np.corrcoef(truth[:, g], truth[rand, g])[0, 1] for g in range(40) if truth[:, g].std() > 0])
    assert near > far + 0.2


def test_pipeline_runs_on_synthetic():
    phg2st.settings.progress = False
    train = [phg2st.datasets.synthetic(200, 12, n_features=8, grid_size=3, seed=s, section=f"S{s}") for s in (0, 1)]
    test = phg2st.datasets.synthetic(200, 12, n_features=8, grid_size=3, seed=2, section="S2")
    sections = []
    for a in [*train, test]:
        phg2st.pp.build_hypergraph(a, use_rep="X_synthetic", k=4)
        sections.append(phg2st.tl.prepare_targets(a, "heldout"))
    model = phg2st.tl.fit(sections[:2], use_rep="X_synthetic", config=dict(hidden=16, heads=2, spot_depth=1, neighbour_depth=1),
                          max_epochs=2, accelerator="cpu", validation=None)  # fmt: skip
    phg2st.tl.select_prompts(sections[2], fraction=0.1, seed=0)
    phg2st.tl.impute(sections[2], model)
    assert np.isfinite(sections[2].layers["phg2st"]).all()
    phg2st.settings.progress = True
