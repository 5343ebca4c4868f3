"""`pp.virtual_spots`: a lattice on the tissue only, measured spots intact, predictions where nothing was measured."""

from __future__ import annotations

import copy
import warnings

import numpy as np
import pytest
from _synthetic import SMALL, Tiny
from scipy.spatial import cKDTree

import phg2st_sc as phg2st
from phg2st_sc._image import full_resolution_path, read_downscaled


def test_otsu_finds_a_stained_disk():
    """Pink tissue on a grey-white slide, with noise and a dust speck: the mask is the disk."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:300, :400]
    disk = (xx - 200) ** 2 + (yy - 150) ** 2 < 90**2
    img = np.full((300, 400, 3), 235.0) + rng.normal(0, 4, (300, 400, 3))
    img[disk] = [200, 120, 170] + rng.normal(0, 12, (int(disk.sum()), 3))
    img[10:12, 10:12] = [200, 120, 170]  # a speck
    mask = phg2st.pp.otsu_tissue_mask(np.clip(img, 0, 255).astype(np.uint8))
    iou = (mask & disk).sum() / (mask | disk).sum()
    assert iou > 0.97 and not mask[10, 10]
    assert not phg2st.pp.otsu_tissue_mask(np.full((50, 50, 3), 240, np.uint8)).any()


@pytest.mark.data
def test_virtual_spots_on_her2st_tissue(c2):
    before = copy.deepcopy(c2)
    out = phg2st.pp.virtual_spots(c2)
    # the input is untouched; the measured spots come first and unchanged
    assert c2.obs.equals(before.obs) and list(c2.obsm) == list(before.obsm) and c2.uns.keys() == before.uns.keys()
    n = c2.n_obs
    virtual = out.obs["phg2st_virtual"].to_numpy()
    assert not virtual[:n].any() and virtual[n:].all() and virtual.sum() > 0
    assert list(out.obs_names[:n]) == list(c2.obs_names)
    np.testing.assert_array_equal(out.X[:n], c2.X.toarray())
    assert np.isnan(out.X[n:]).all()
    np.testing.assert_array_equal(out.obsm["spatial"][:n], c2.obsm["spatial"])
    # virtual spots: on the lattice of the measured pitch, off the measured spots, on tissue
    pitch = phg2st._utils.spot_pitch(c2.obsm["spatial"])
    xy = out.obsm["spatial"][virtual]
    d, _ = cKDTree(c2.obsm["spatial"]).query(xy)
    assert d.min() >= pitch / 2
    offsets = (xy - c2.obsm["spatial"][0]) / pitch
    np.testing.assert_allclose(offsets, np.round(offsets), atol=1e-6)
    img, scale = read_downscaled(full_resolution_path(c2))
    mask = phg2st.pp.otsu_tissue_mask(img)
    px = np.round(xy * scale).astype(int)
    assert mask[px[:, 1], px[:, 0]].mean() > 0.95
    # a given mask: only the left half of the image is tissue
    half = np.ones_like(mask)
    half[:, mask.shape[1] // 2 :] = False
    left = phg2st.pp.virtual_spots(c2, tissue_mask=half)
    lxy = left.obsm["spatial"][left.obs["phg2st_virtual"].to_numpy()]
    assert (lxy[:, 0] * scale < mask.shape[1] / 2 + 1).all()
    assert left.uns["phg2st_virtual"]["params"]["tissue_mask"] == "given"


@pytest.mark.data
@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(tissue_mask=np.zeros((107, 100), bool)), "No tissue"),
        (dict(tissue_mask=np.ones((100, 300), bool)), "aspect ratio"),
        (dict(tissue_mask=np.ones((5, 5, 3), bool)), "2-D"),
        (dict(spacing=-1.0), "spacing"),
        (dict(min_tissue=0.0), "min_tissue"),
    ],
)
def test_bad_arguments(c2, kwargs, match):
    with pytest.raises(ValueError, match=match):
        phg2st.pp.virtual_spots(c2, **kwargs)


def test_predictions_reach_virtual_spots_and_only_measured_spots_are_scored(synthetic_section):

    phg2st.settings.progress = False
    train = synthetic_section(seed=1, name="S1")
    model = phg2st.tl.fit(train, max_epochs=2, validation=None, **SMALL)
    test = synthetic_section(seed=2, name="S2")
    for key in [k for k in test.obsm if k != "spatial"]:
        del test.obsm[key]
    test.obsp.clear()
    test = test[test.obsm["spatial"][:, 0] < 250].copy()  # the right part of the image was never profiled
    phg2st.tl.select_prompts(test, fraction=0.2, seed=0)
    whole = phg2st.pp.virtual_spots(test, tissue_mask=np.ones((100, 100), bool))
    virtual = whole.obs["phg2st_virtual"].to_numpy()
    assert virtual.sum() > 0 and whole.obsm["spatial"][virtual][:, 0].max() > 250

    phg2st.pp.embed_tiles(whole, encoder=Tiny(), tile_size=16, grid_size=3, key_added="X_tiny")
    phg2st.pp.build_hypergraph(whole, use_rep="X_tiny", k=3)
    phg2st.tl.impute(whole, model)
    assert np.isfinite(whole.layers["phg2st"]).all()
    s = phg2st.tl.score(whole, layer="phg2st").summary
    assert s["n_spots"] == int((~whole.obs["phg2st_prompt"] & ~whole.obs["phg2st_virtual"]).sum())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        phg2st.tl.baseline(whole, method="idw")
    assert np.isfinite(whole.layers["baseline_idw"]).all()
    phg2st.settings.progress = True


@pytest.mark.data
def test_virtual_spots_from_spatialdata(c2):
    sdata = phg2st.io.to_spatialdata(c2)
    out = phg2st.pp.virtual_spots(sdata)
    assert "table_virtual" in out.tables and "C2_virtual_spots" in out.shapes and list(out.images) == ["C2_image"]
    table = out.tables["table_virtual"]
    from_ad = phg2st.pp.virtual_spots(c2)
    assert table.n_obs == from_ad.n_obs
    np.testing.assert_allclose(table.obsm["spatial"], from_ad.obsm["spatial"], atol=1e-6)
    shapes = out.shapes["C2_virtual_spots"]
    np.testing.assert_allclose(np.column_stack([shapes.geometry.x, shapes.geometry.y]), table.obsm["spatial"])


def test_prompts_are_drawn_among_measured_spots_only(synthetic_section):
    a = synthetic_section(seed=2, name="S2")
    a = a[a.obsm["spatial"][:, 0] < 250].copy()
    whole = phg2st.pp.virtual_spots(a, tissue_mask=np.ones((100, 100), bool))
    virtual = whole.obs["phg2st_virtual"].to_numpy()
    assert virtual.sum() > a.n_obs  # more virtual than measured spots: a draw over all spots would hit them
    for strategy in ("random", "blocks"):
        for seed in range(5):
            phg2st.tl.select_prompts(whole, fraction=0.3, strategy=strategy, seed=seed)
            chosen = whole.obs["phg2st_prompt"].to_numpy()
            assert chosen.sum() == round(0.3 * a.n_obs) and not (chosen & virtual).any()
    assert whole.uns["phg2st_prompt"]["params"]["fraction"] == pytest.approx(round(0.3 * a.n_obs) / a.n_obs)
    with pytest.raises(ValueError, match="virtual spots"):
        phg2st.tl.select_prompts(whole, mask=virtual.copy())
    with pytest.raises(ValueError, match="measured spots"):
        phg2st.tl.select_prompts(whole, n_prompts=a.n_obs)
    phg2st.tl.baseline(whole, method="idw")  # prompts carry measurements: the baseline runs
    assert np.isfinite(whole.layers["baseline_idw"]).all()
