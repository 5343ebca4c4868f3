"""``ModelConfig.section_norm``: each section's image features standardised over its own spots."""

from __future__ import annotations

import numpy as np
import pytest

import phg2st_sc as phg2st
from phg2st_sc._constants import Keys


def _shifted(adata, key: str, scale: np.ndarray, shift: np.ndarray):
    """A copy of ``adata`` whose spot features and neighbour tiles went through ``x * scale + shift`` per feature
    (what a stain or scanner change does to simple colour features; the hypergraphs are kept)."""
    out = adata.copy()
    out.obsm[key] = (out.obsm[key] * scale + shift).astype(np.float32)
    if "tile_embeddings" in out.uns.get(key, {}):
        out.uns[key]["tile_embeddings"] = (out.uns[key]["tile_embeddings"] * scale + shift).astype(np.float32)
    return out


@pytest.mark.parametrize("section_norm", [True, False])
def test_a_sections_feature_shift_leaves_the_network_unchanged(synthetic_section, tmp_path, section_norm):
    """With the option the network reads the features standardised over the section's spots (and the neighbour
    tiles by the same mean and scale), so a per-feature affine shift of a whole section changes nothing; without
    it, the same shift moves the prediction."""
    from _synthetic import SMALL

    a = synthetic_section()
    small = SMALL | {"config": SMALL["config"] | {"section_norm": section_norm}}
    model = phg2st.tl.fit(a, variant="adaptive", max_epochs=2, validation=None, seed=0, **small)
    assert "tile_embeddings" in a.uns["X_tiny"]  # the neighbour branch reads tiles: they are shifted too
    prompt = np.zeros(a.n_obs, dtype=bool)
    prompt[::4] = True
    rng = np.random.default_rng(1)
    d = a.obsm["X_tiny"].shape[1]
    b = _shifted(a, "X_tiny", rng.uniform(0.5, 2.0, d), rng.normal(0.0, 20.0, d))
    before = model.predict(a, prompt, network_only=True)[0]
    after = model.predict(b, prompt, network_only=True)[0]
    if section_norm:
        np.testing.assert_allclose(after, before, atol=1e-5, rtol=0)
        path = tmp_path / "norm.pt"  # the setting travels with the model file
        model.save(path)
        again = phg2st.PHG2ST.load(path)
        assert again.config["section_norm"] is True
        np.testing.assert_array_equal(again.predict(b, prompt, network_only=True)[0], after)
    else:
        assert np.abs(after - before).max() > 1e-3


def test_section_norm_settings_are_checked():
    with pytest.raises(TypeError, match="section_norm"):
        phg2st.tl.ModelConfig(section_norm="yes")
    with pytest.raises(ValueError, match="section_norm"):
        phg2st.tl.ModelConfig(section_norm=True, use_image=False)
    assert phg2st.tl.ModelConfig().section_norm is False


def test_a_stain_change_of_a_real_section_leaves_the_prediction_unchanged(load_her2st, colour_features):
    """Real sections: a network trained on C3 with the option predicts C2 the same after a per-channel change of
    C2's brightness and contrast (the colour features' means and spreads move by an affine map per feature)."""
    work = {}
    for s in ("C2", "C3"):
        w = phg2st.tl.prepare_targets(load_her2st(s), "heldout", panel="her2st_785")
        w.obsm["X_col"] = colour_features(w)
        phg2st.pp.build_hypergraph(w, use_rep="X_col")
        work[s] = w
    model = phg2st.tl.fit(work["C3"], use_rep="X_col", max_epochs=2, validation=None, accelerator="cpu", seed=0,
                          config={"hidden": 32, "use_neighbour_branch": False, "section_norm": True})  # fmt: skip
    c2 = work["C2"]
    phg2st.tl.select_prompts(c2, fraction=0.1, seed=0)
    prompt = c2.obs[Keys.PROMPT].to_numpy(bool)
    # each feature is a mean or a spread of one colour channel over a crop: I -> a I + b per channel moves a mean
    # to a * mean + b and a spread to a * spread
    a_rgb, b_rgb = np.array([0.8, 1.1, 0.9]), np.array([12.0, -5.0, 20.0])
    n_scales = c2.obsm["X_col"].shape[1] // 6
    scale = np.tile(np.concatenate([a_rgb, a_rgb]), n_scales)
    shift = np.tile(np.concatenate([b_rgb, np.zeros(3)]), n_scales)
    stained = _shifted(c2, "X_col", scale, shift)
    before = model.predict(c2, prompt, network_only=True)[0]
    after = model.predict(stained, prompt, network_only=True)[0]
    np.testing.assert_allclose(after, before, atol=1e-5, rtol=0)
    assert np.abs(before - before.mean(0)).max() > 1e-3  # not a constant prediction
