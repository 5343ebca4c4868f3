"""pl.napari in a real napari viewer, headless (Xvfb through pytest-xvfb, napari's viewer fixture)."""

from __future__ import annotations

import copy
import os
import shutil

import numpy as np
import pytest

import phg2st_sc as phg2st

pytestmark = pytest.mark.data

if shutil.which("Xvfb") is None:  # `make test` installs it where it can (root with apt); see the README
    if os.environ.get("PHG2ST_REQUIRE_DISPLAY"):  # set by .ci/run: on CI these tests must run, never skip
        raise RuntimeError("PHG2ST_REQUIRE_DISPLAY is set but Xvfb is not installed (see `make display`).")
    pytest.skip("Xvfb is not installed: the napari tests need a virtual display.", allow_module_level=True)
napari = pytest.importorskip("napari", reason="the viewer extra (napari) is not installed")
pytest.importorskip("pytestqt", reason="pytest-qt is not installed")

GENES = ["KRT8", "COL3A1", "ERBB2"]


@pytest.fixture
def predicted(c2):
    work = phg2st.tl.prepare_targets(c2, "heldout", panel=GENES)
    phg2st.tl.select_prompts(work, seed=0)
    phg2st.tl.baseline(work, method="idw", layer_added="phg2st")
    return work


def test_layers_sizes_and_prompts(make_napari_viewer, predicted):
    before = copy.deepcopy(predicted)
    viewer = phg2st.pl.napari(predicted, GENES, viewer=make_napari_viewer(show=True))
    names = [layer.name for layer in viewer.layers]
    assert names == ["H&E", "measured", "phg2st", "phg2st − measured", "prompts"]
    diameter = predicted.uns["spatial"]["C2"]["scalefactors"]["spot_diameter_fullres"]
    for name in ("measured", "phg2st", "phg2st − measured"):
        layer = viewer.layers[name]
        np.testing.assert_allclose(layer.data, predicted.obsm["spatial"][:, ::-1])  # (row, column) = (y, x)
        np.testing.assert_allclose(layer.size, diameter)
    assert len(viewer.layers["prompts"].data) == int(predicted.obs["phg2st_prompt"].sum())
    # the image is placed in full-resolution pixels: its extent covers the spots
    image = viewer.layers["H&E"]
    extent = np.asarray(image.extent.world)
    assert (
        extent[0, 0] <= predicted.obsm["spatial"][:, 1].min() and extent[1, 1] >= predicted.obsm["spatial"][:, 0].max()
    )
    # nothing written into the user's object
    assert predicted.obs.equals(before.obs) and set(predicted.layers) == set(before.layers)
    assert set(predicted.uns) == set(before.uns)


def test_values_colours_and_gene_picker(make_napari_viewer, predicted):
    viewer = phg2st.pl.napari(predicted, GENES, viewer=make_napari_viewer(show=True))
    measured, imputed, err = (viewer.layers[n] for n in ("measured", "phg2st", "phg2st − measured"))
    x = predicted[:, "KRT8"].X.toarray().ravel() if hasattr(predicted.X, "toarray") else predicted[:, "KRT8"].X.ravel()
    np.testing.assert_allclose(measured.features["KRT8"], x)
    np.testing.assert_allclose(err.features["KRT8 error"], predicted[:, "KRT8"].layers["phg2st"].ravel() - x, atol=1e-6)
    # measured and imputed share one colour scale: equal values, equal colours
    lo, hi = measured.metadata["phg2st"]["contrast_limits"]
    assert imputed.metadata["phg2st"]["contrast_limits"] == (lo, hi) and hi > lo
    top = np.argmax(x)
    assert not np.allclose(measured.face_color[top], measured.face_color[np.argmin(x)])

    imputed.visible, measured.visible = False, True
    shot_krt8 = viewer.screenshot(canvas_only=True, flash=False)
    assert shot_krt8.shape[0] > 100 and shot_krt8[..., :3].std() > 10  # a real picture, not a black canvas
    colours_krt8 = measured.face_color.copy()

    picker = viewer.window.dock_widgets["phg2st gene"]
    picker.value = "COL3A1"
    assert measured.metadata["phg2st"]["gene"] == imputed.metadata["phg2st"]["gene"] == "COL3A1"
    assert "COL3A1" in measured.features.columns
    assert not np.allclose(measured.face_color, colours_krt8)
    shot_col3a1 = viewer.screenshot(canvas_only=True, flash=False)
    changed = np.any(shot_col3a1[..., :3] != shot_krt8[..., :3], axis=-1)
    assert changed.mean() > 0.002  # the spots were redrawn in other colours
    assert changed.mean() < 0.5  # and the H&E around them was not


def test_unmeasured_spots_are_grey(make_napari_viewer, predicted):
    predicted.X = predicted.X.toarray() if hasattr(predicted.X, "toarray") else predicted.X.copy()
    predicted.X[:5] = np.nan
    viewer = phg2st.pl.napari(predicted, GENES, layers=(None,), viewer=make_napari_viewer())
    grey = np.array([0.827, 0.827, 0.827, 1.0])
    np.testing.assert_allclose(viewer.layers["measured"].face_color[:5], np.tile(grey, (5, 1)), atol=0.01)
    assert not np.allclose(viewer.layers["measured"].face_color[5:], grey, atol=0.01)
    assert "phg2st − measured" not in [layer.name for layer in viewer.layers]


def test_spatialdata_input_docks_the_browser(make_napari_viewer, predicted):
    sdata = phg2st.io.to_spatialdata(predicted)
    viewer = phg2st.pl.napari(sdata, ["ERBB2"], viewer=make_napari_viewer(show=True))
    assert "SpatialData" in viewer.window.dock_widgets
    assert len(viewer.layers["phg2st"].data) == predicted.n_obs
    assert viewer.layers["phg2st"].metadata["phg2st"]["gene"] == "ERBB2"


def test_bad_input_raises_before_opening_a_viewer(predicted, monkeypatch):
    monkeypatch.setattr(napari, "Viewer", lambda *a, **k: pytest.fail("a viewer was opened"))
    with pytest.raises(KeyError, match="tl.impute"):
        phg2st.pl.napari(predicted, GENES, layers=(None, "absent"))
    with pytest.raises(KeyError, match="NOT_A_GENE"):
        phg2st.pl.napari(predicted, ["NOT_A_GENE"])
    with pytest.raises(TypeError, match="AnnData or a SpatialData"):
        phg2st.pl.napari(predicted.X, GENES)
    with pytest.raises(ValueError, match="repeats"):
        phg2st.pl.napari(predicted, GENES, layers=("phg2st", "phg2st"))
    with pytest.raises(ValueError, match="empty"):
        phg2st.pl.napari(predicted, [])


def test_training_after_the_viewer_does_not_crash(tmp_path, qapp):
    """triton (loaded by lightning) imported after napari's OpenGL context crashed Python; pl.napari prevents it."""
    import subprocess
    import sys

    script = (
        "import phg2st_sc as phg2st\n"
        "adata = phg2st.datasets.her2st('C2')\n"
        "phg2st.tl.select_prompts(adata, seed=0)\n"
        "viewer = phg2st.pl.napari(adata, ['ERBB2'], layers=(None,), show=True)\n"
        "viewer.screenshot(canvas_only=True)\n"
        "import lightning, torch_geometric\n"
        "print('trained after viewing')\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "trained after viewing" in done.stdout


def test_uncertainty_layer_follows_the_gene_picker(make_napari_viewer, predicted):
    """A prediction with a standard deviation layer gets a '<layer> std' points layer, recoloured per gene."""
    rng = np.random.default_rng(0)
    predicted.layers["phg2st_std"] = rng.uniform(0.1, 1.0, size=predicted.shape).astype(np.float32)
    viewer = phg2st.pl.napari(predicted, GENES, viewer=make_napari_viewer(show=True))
    std = viewer.layers["phg2st std"]
    np.testing.assert_allclose(std.features["KRT8 std"], predicted[:, "KRT8"].layers["phg2st_std"].ravel())
    viewer.window.dock_widgets["phg2st gene"].value = "ERBB2"
    np.testing.assert_allclose(std.features["ERBB2 std"], predicted[:, "ERBB2"].layers["phg2st_std"].ravel())
    assert std.metadata["phg2st"]["cmap"] == "magma"
    off = phg2st.pl.napari(predicted, GENES, uncertainty=False, viewer=make_napari_viewer(show=True))
    assert "phg2st std" not in [layer.name for layer in off.layers]
