"""AnnData <-> SpatialData conversion, on real sections, including a zarr round trip."""

from __future__ import annotations

import numpy as np
import pytest

import phg2st_sc as phg2st

pytestmark = pytest.mark.data


@pytest.fixture(scope="module")
def c2_sdata():
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        adata = phg2st.datasets.her2st("C2")
    return adata, phg2st.io.to_spatialdata(adata)


def test_to_spatialdata_elements(c2_sdata):
    from spatialdata.models import get_table_keys

    adata, sdata = c2_sdata
    assert list(sdata.images) == ["C2_image"] and list(sdata.shapes) == ["C2_spots"] and list(sdata.tables) == ["table"]
    image = sdata.images["C2_image"]
    assert image["scale0"]["image"].shape == (3, 9911, 9274)
    assert len(image.keys()) == 5  # multiscale pyramid
    shapes = sdata.shapes["C2_spots"]
    np.testing.assert_allclose(np.column_stack([shapes.geometry.x, shapes.geometry.y]), adata.obsm["spatial"])
    d = adata.uns["spatial"]["C2"]["scalefactors"]["spot_diameter_fullres"]
    np.testing.assert_allclose(shapes["radius"], d / 2)
    region, region_key, instance_key = get_table_keys(sdata.tables["table"])
    assert region == "C2_spots" and region_key == "region" and instance_key == "spot_index"
    # a pixel of the image element equals the file's pixel
    full = phg2st.io.read_image(adata)
    x, y = np.round(adata.obsm["spatial"][0]).astype(int)
    np.testing.assert_array_equal(image["scale0"]["image"][:, y, x].values, full[y, x])


def test_round_trip_through_zarr(c2_sdata, tmp_path):
    import spatialdata as sd

    adata, shared = c2_sdata
    sdata = sd.SpatialData(
        images=dict(shared.images), shapes=dict(shared.shapes), tables={"table": shared.tables["table"].copy()}
    )
    table = sdata.tables["table"]
    phg2st.tl.select_prompts(sdata, fraction=0.1, seed=3)  # pp/tl functions accept SpatialData
    assert table.obs["phg2st_prompt"].sum() == 19
    path = tmp_path / "c2.zarr"
    sdata.write(path)
    back = sd.read_zarr(path)
    restored = phg2st.io.from_spatialdata(back)
    assert (restored.X != adata.X).nnz == 0
    np.testing.assert_allclose(restored.obsm["spatial"], adata.obsm["spatial"])
    np.testing.assert_array_equal(restored.obs["phg2st_prompt"], table.obs["phg2st_prompt"])
    assert list(restored.obs_names) == list(adata.obs_names)
    sf = restored.uns["spatial"]["C2"]["scalefactors"]
    assert sf["spot_diameter_fullres"] == pytest.approx(
        adata.uns["spatial"]["C2"]["scalefactors"]["spot_diameter_fullres"]
    )
    np.testing.assert_array_equal(
        restored.uns["spatial"]["C2"]["images"]["hires"], adata.uns["spatial"]["C2"]["images"]["hires"]
    )
    assert "phg2st_prompt" not in shared.tables["table"].obs


def test_from_spatialdata_builds_hires_from_the_image(c2_sdata):
    """A table without uns['spatial'] gets a hires image from the pyramid, in the right scale."""
    adata, sdata = c2_sdata
    bare = sdata.tables["table"].copy()
    del bare.uns["spatial"]
    import spatialdata as sd

    other = sd.SpatialData(images=dict(sdata.images), shapes=dict(sdata.shapes), tables={"t": bare})
    out = phg2st.io.from_spatialdata(other)
    info = out.uns["spatial"]["C2"]
    hires = info["images"]["hires"]
    scalef = info["scalefactors"]["tissue_hires_scalef"]
    assert abs(max(hires.shape[:2]) - 2000) < 700
    assert scalef == pytest.approx(hires.shape[1] / 9274, rel=1e-3)
    # the spot centres land on the same pixels in both hires images
    ref = adata.uns["spatial"]["C2"]
    xy_a = np.round(adata.obsm["spatial"] * ref["scalefactors"]["tissue_hires_scalef"]).astype(int)
    xy_b = np.round(out.obsm["spatial"] * scalef).astype(int)
    a = ref["images"]["hires"][xy_a[:, 1], xy_a[:, 0]].astype(float)
    b = hires[xy_b[:, 1], xy_b[:, 0]].astype(float)
    assert np.corrcoef(a.mean(axis=1), b.mean(axis=1))[0, 1] > 0.8


def test_section_without_image_uses_hires(load_her2st):
    adata = load_her2st("A1")
    sdata = phg2st.io.to_spatialdata(adata)
    from spatialdata.transformations import get_transformation

    t = get_transformation(sdata.images["A1_image"], "global")
    scale = t.to_affine_matrix(input_axes=("x", "y"), output_axes=("x", "y"))[0, 0]
    assert scale == pytest.approx(1 / adata.uns["spatial"]["A1"]["scalefactors"]["tissue_hires_scalef"])
    no_image = phg2st.io.to_spatialdata(load_her2st("A3"))
    assert len(no_image.images) == 0


def test_table_key_rules(c2_sdata):
    import spatialdata as sd

    _, sdata = c2_sdata
    two = sd.SpatialData(
        shapes=dict(sdata.shapes), tables={"a": sdata.tables["table"], "b": sdata.tables["table"].copy()}
    )
    with pytest.raises(ValueError, match="several tables"):
        phg2st.tl.select_prompts(two)
    with pytest.raises(KeyError, match="No table 'c'"):
        phg2st.tl.select_prompts(two, table_key="c")
    empty = sd.SpatialData(shapes=dict(sdata.shapes))
    with pytest.raises(ValueError, match="no table"):
        phg2st.io.from_spatialdata(empty)
    out = phg2st.tl.select_prompts(two, table_key="b", copy=True)
    assert "phg2st_prompt" in out.obs and "phg2st_prompt" not in two.tables["b"].obs


def test_to_spatialdata_without_copy_shares_the_arrays(tmp_path):
    """``copy=False``: the table holds adata's own arrays (no second copy of a large slide), with its own obs and
    uns; adata is left as it was, and the store reads back the same as with a copy."""
    import spatialdata as sd
    from _compare import assert_adata_equal

    a = phg2st.datasets.synthetic(300, 12, layout="visium_hd", n_features=8, grid_size=3, seed=2, section="S")
    before = a.copy()
    shared = phg2st.io.to_spatialdata(a, image=False, copy=False).tables["table"]
    copied = phg2st.io.to_spatialdata(a, image=False).tables["table"]
    assert shared.obsm["X_synthetic"] is a.obsm["X_synthetic"] and shared.layers["log1p"] is a.layers["log1p"]
    assert copied.obsm["X_synthetic"] is not a.obsm["X_synthetic"]
    assert_adata_equal(a, before)  # the table's region columns went to its own obs
    assert shared.uns is not a.uns and shared.obs is not a.obs
    phg2st.io.to_spatialdata(a, image=False, copy=False).write(tmp_path / "s.zarr")
    back = phg2st.io.from_spatialdata(sd.read_zarr(tmp_path / "s.zarr"))
    np.testing.assert_array_equal(back.obsm["X_synthetic"], a.obsm["X_synthetic"])
    np.testing.assert_array_equal(back.layers["log1p"], a.layers["log1p"])
    with pytest.raises(TypeError, match="copy"):
        phg2st.io.to_spatialdata(a, image=False, copy="no")
