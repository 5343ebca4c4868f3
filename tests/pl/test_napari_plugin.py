"""The napari plugin: its npe2 manifest, found by napari, and its two widgets in a real viewer (headless, Xvfb)."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest

import phg2st_sc as phg2st

if shutil.which("Xvfb") is None:  # as tests/pl/test_napari.py
    if os.environ.get("PHG2ST_REQUIRE_DISPLAY"):
        raise RuntimeError("PHG2ST_REQUIRE_DISPLAY is set but Xvfb is not installed (see `make display`).")
    pytest.skip("Xvfb is not installed: the napari tests need a virtual display.", allow_module_level=True)
napari = pytest.importorskip("napari", reason="the viewer extra (napari) is not installed")
pytest.importorskip("pytestqt", reason="pytest-qt is not installed")
npe2 = pytest.importorskip("npe2")


def test_the_manifest_is_valid_and_its_commands_import():
    manifest = npe2.PluginManifest.from_distribution("phg2st-sc")
    manifest.validate_imports()  # every python_name resolves
    assert {w.display_name for w in manifest.contributions.widgets} == {"Explore", "Impute"}
    pm = npe2.PluginManager.instance()
    pm.discover()
    assert "phg2st-sc" in {m.name for m in pm.iter_manifests()}


def _fill(viewer, yx: np.ndarray, canvas: tuple[int, int]) -> float:
    """How much of the canvas the spots' bounding box spans, along the dimension where it spans most (0-1)."""
    visible = np.asarray(canvas, dtype=float) / viewer.camera.zoom  # world units seen, (rows, columns)
    return float(((yx.max(axis=0) - yx.min(axis=0)) / visible).max())


@pytest.mark.data
def test_explore_from_a_file_fills_the_canvas(make_napari_viewer, c2, tmp_path):
    work = phg2st.tl.prepare_targets(c2, "heldout", panel=["KRT8", "ERBB2", "COL3A1"])
    phg2st.tl.select_prompts(work, seed=0)
    phg2st.tl.baseline(work, method="idw", layer_added="phg2st")
    path = tmp_path / "C2.h5ad"
    work.write_h5ad(path)
    viewer = make_napari_viewer(show=True)
    _, widget = viewer.window.add_plugin_dock_widget("phg2st-sc", "Explore")
    widget.path.value = path  # the widget's file choice (the section choice defaults to "file below")
    widget.run()
    assert "error" not in widget.status.value, widget.status.value
    names = [layer.name for layer in viewer.layers]
    assert {"H&E", "measured", "phg2st", "phg2st − measured", "prompts"} <= set(names)
    assert len(viewer.layers["prompts"].data) == int(work.obs["phg2st_prompt"].sum())
    viewer.window.resize(900, 700)
    viewer.reset_view()
    shot = viewer.screenshot(canvas_only=True, flash=False)
    assert min(shot.shape[:2]) >= 400
    yx = work.obsm["spatial"][:, ::-1]
    assert _fill(viewer, yx, shot.shape[:2]) > 0.75  # the section, not a small patch in the middle
    widget.path.value = tmp_path / "missing.h5ad"
    widget.run()
    assert widget.status.value.startswith("error")


def test_impute_runs_in_a_worker_and_shows_the_result(make_napari_viewer, tmp_path, qtbot):
    from phg2st_sc.cli import main

    paths = []
    for s in range(2):
        a = phg2st.datasets.synthetic(80, 6, n_features=4, grid_size=3, seed=s, section=f"S{s}")
        phg2st.pp.build_hypergraph(a, use_rep="X_synthetic")
        paths.append(tmp_path / f"S{s}.h5ad")
        a.write_h5ad(paths[-1])
    model = tmp_path / "model.pt"
    fit = ["--use-rep", "X_synthetic", "--max-epochs", "2", "--hidden", "16", "--accelerator", "cpu", "--no-progress",
           "--fit", "heads=2", "spot_depth=1", "neighbour_depth=1"]  # fmt: skip
    assert main(["fit", str(paths[0]), "--out", str(model), *fit]) == 0
    viewer = make_napari_viewer(show=True)
    _, widget = viewer.window.add_plugin_dock_widget("phg2st-sc", "Impute")
    widget.path.value = paths[1]
    widget.model.value = model
    widget.run()
    assert widget.worker is not None
    qtbot.waitUntil(lambda: widget.result is not None or widget.status.value.startswith("error"), timeout=180_000)
    assert widget.result is not None, widget.status.value
    assert widget.result.layers["phg2st"].shape == (80, 6) and np.isfinite(widget.result.layers["phg2st"]).all()
    assert {"measured", "phg2st", "prompts"} <= {layer.name for layer in viewer.layers}
    widget.model.value = tmp_path / "nope.pt"
    widget.run()
    assert widget.status.value.startswith("error") and "no model file" in widget.status.value
