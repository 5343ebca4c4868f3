"""Reproducibility: seeded prompts, baselines and training give identical results; results survive h5ad and zarr.

Training determinism (identical weights, ``atol=0``) and the bit-identical predictions of a saved and loaded model
are tested in ``tests/tl/test_fit.py::test_determinism_and_save_load``; here the predictions of two seeded
trainings are compared, and a ``tl.impute`` result is written and read back.
"""

from __future__ import annotations

import anndata as ad
import numpy as np
import pytest
from _compare import assert_adata_equal
from _synthetic import SMALL, make_section, progress_off

import phg2st_sc as phg2st

pytestmark = pytest.mark.usefixtures("no_progress")


def ordered_like(value, reference):
    """``value`` with its dict keys (recursively) in the order of ``reference``'s: HDF5 groups list their members
    alphabetically, so ``read_h5ad`` returns ``uns`` sorted. Only the order changes; any difference in the keys or
    values is left for the comparison to report."""
    if isinstance(value, dict) and isinstance(reference, dict) and set(value) == set(reference):
        return {k: ordered_like(value[k], reference[k]) for k in reference}
    return value


@pytest.mark.data
@pytest.mark.parametrize("strategy", ["random", "blocks"])
def test_seeded_prompts_are_identical_on_real_data(c2_targets, strategy):
    masks = []
    for _ in range(2):
        fresh = c2_targets.copy()
        del fresh.obs["phg2st_prompt"], fresh.uns["phg2st_prompt"]
        phg2st.tl.select_prompts(fresh, fraction=0.1, strategy=strategy, seed=123)
        masks.append(fresh.obs["phg2st_prompt"].to_numpy())
        assert fresh.uns["phg2st_prompt"]["params"] == {
            "strategy": strategy, "seed": 123, "n_prompts": 19, "fraction": 19 / 187,
        }  # fmt: skip
    np.testing.assert_array_equal(masks[0], masks[1])
    other = phg2st.tl.select_prompts(c2_targets, fraction=0.1, strategy=strategy, seed=124, copy=True)
    assert (other.obs["phg2st_prompt"].to_numpy() != masks[0]).any()


@pytest.mark.data
@pytest.mark.parametrize("method", ["mean", "idw", "gp", "feature_knn", "ridge", "stack"])
def test_seeded_baselines_are_identical(c2_targets, colour_features, method):
    c2_targets.obsm["X_col"] = colour_features(c2_targets)
    kw = {"use_rep": "X_col"} if method in ("feature_knn", "ridge", "stack") else {}
    runs = []
    for _ in range(2):
        work = c2_targets.copy()
        phg2st.tl.select_prompts(work, fraction=0.1, seed=5)  # prompts drawn again, with the same seed
        phg2st.tl.baseline(work, method=method, seed=11, **kw)
        runs.append(work)
    layer = f"baseline_{method}"
    assert runs[0].layers[layer].dtype == np.float32
    np.testing.assert_array_equal(runs[0].layers[layer], runs[1].layers[layer])
    assert_adata_equal(runs[0], runs[1])  # every slot, the fitted parameters in uns included


@pytest.fixture(scope="module")
def imputed(tmp_path_factory):
    """(section imputed by a small seeded model, the same imputed by a second model trained with the same seed)."""
    tmp = tmp_path_factory.mktemp("repro")
    with progress_off():
        train = [make_section(tmp, seed=0, name="S0"), make_section(tmp, seed=1, name="S1")]
        target = make_section(tmp, seed=3, name="S3")
        phg2st.tl.select_prompts(target, fraction=0.15, seed=2)
        out = []
        for _ in range(2):
            model = phg2st.tl.fit(train, max_epochs=1, seed=7, **SMALL)
            out.append(phg2st.tl.impute(target, model, copy=True))
    return out


@pytest.mark.filterwarnings("ignore::UserWarning", "ignore::DeprecationWarning")
def test_seeded_training_gives_identical_predictions(imputed):
    first, second = imputed
    np.testing.assert_array_equal(first.layers["phg2st"], second.layers["phg2st"])
    np.testing.assert_array_equal(first.obsm["X_phg2st"], second.obsm["X_phg2st"])
    assert_adata_equal(first, second)


@pytest.mark.parametrize("fmt", ["h5ad", "zarr"])
def test_impute_result_reads_back_identical(imputed, tmp_path, fmt):
    result = imputed[0]
    assert {"phg2st"} <= set(result.layers) and "X_phg2st" in result.obsm and result.obsp
    path = tmp_path / f"result.{fmt}"
    if fmt == "h5ad":
        result.write_h5ad(path)
        back = ad.read_h5ad(path)
    else:
        result.write_zarr(path)
        back = ad.read_zarr(path)
    back.uns = ordered_like(dict(back.uns), dict(result.uns))
    assert_adata_equal(back, result)


def test_impute_result_through_spatialdata_zarr_reads_back_identical(imputed, tmp_path):
    pytest.importorskip("spatialdata")
    from spatialdata import read_zarr

    sdata = phg2st.io.to_spatialdata(imputed[0], image=False)
    sdata.write(tmp_path / "result.zarr")
    back = read_zarr(tmp_path / "result.zarr")
    assert set(back.tables) == set(sdata.tables) and set(back.shapes) == set(sdata.shapes)
    table = back.tables["table"]
    table.uns = ordered_like(dict(table.uns), dict(sdata.tables["table"].uns))
    assert_adata_equal(table, sdata.tables["table"])
    for key, shapes in sdata.shapes.items():
        assert back.shapes[key].geometry.equals(shapes.geometry)
        np.testing.assert_array_equal(back.shapes[key]["radius"].to_numpy(), shapes["radius"].to_numpy())
