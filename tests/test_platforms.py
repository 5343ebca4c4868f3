"""Visium HD and Xenium (with its post-Xenium H&E) through spatialdata-io: read -> embed -> fit -> impute -> plot.

The folders are format-faithful fixtures (tests/_platforms.py) on a crop of the real her2st C2 H&E.
"""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pytest
import scipy.sparse as sp

import phg2st_sc as phg2st

pytestmark = pytest.mark.data
REP = "X_efficientnet_lite0"


def _fit_impute(sdata):
    """Embed (tiles of 112 µm), hypergraph, a small fit, impute with 20% prompts; the table with the prediction."""
    phg2st.pp.embed_tiles(sdata, encoder="efficientnet_lite0", mpp=0.5, grid_size=3, precision="fp32")
    phg2st.pp.build_hypergraph(sdata, use_rep=REP)
    model = phg2st.tl.fit(sdata, use_rep=REP, max_epochs=2, config={"hidden": 16, "heads": 2}, validation=None,
                          accelerator="cpu")  # fmt: skip
    phg2st.tl.select_prompts(sdata, fraction=0.2, seed=0)
    phg2st.tl.impute(sdata, model)
    return sdata.tables["table"]


def test_visium_hd_bins_go_through_the_pipeline_and_plot_as_squares(c2, tmp_path):
    from _platforms import make_visium_hd
    from matplotlib.collections import PolyCollection

    outs = make_visium_hd(tmp_path / "HD1" / "outs", c2)
    assert phg2st.io.platform_folder(outs) == "Visium HD" and not phg2st.io.is_xenium(outs)
    sdata = phg2st.io.read_visium_hd(outs, bin_size=16)
    table = sdata.tables["table"]
    assert set(sdata.tables) == {"table"} and set(sdata.images) == {"HD1_full_image"}
    assert set(sdata.shapes) == {"HD1_square_016um"}
    # the bins under tissue, with the counts and positions Space Ranger wrote
    import h5py
    import pandas as pd

    folder = outs / "binned_outputs" / "square_016um"
    positions = pd.read_parquet(folder / "spatial" / "tissue_positions.parquet").set_index("barcode")
    assert table.n_obs == int(positions["in_tissue"].sum()) and table.n_vars == 30
    with h5py.File(folder / "filtered_feature_bc_matrix.h5") as f:
        m = f["matrix"]
        counts = sp.csc_matrix((m["data"][:], m["indices"][:], m["indptr"][:]), shape=m["shape"][:]).T.toarray()
    np.testing.assert_array_equal(table.X.toarray(), counts)
    np.testing.assert_allclose(
        table.obsm["spatial"], positions.loc[table.obs_names, ["pxl_col_in_fullres", "pxl_row_in_fullres"]].to_numpy()
    )
    info = table.uns["spatial"]["HD1"]
    mpp = info["metadata"]["microns_per_pixel"]
    assert mpp == pytest.approx(c2.uns["spatial"]["C2"]["metadata"]["microns_per_pixel"])
    assert info["scalefactors"]["bin_size_um"] == 16.0
    assert info["scalefactors"]["spot_diameter_fullres"] == pytest.approx(16.0 / mpp)
    with pytest.raises(ValueError, match="square_008um"):
        phg2st.io.read_visium_hd(outs, bin_size=4)

    result = _fit_impute(sdata)
    assert result.layers["phg2st"].shape == (table.n_obs, 30) and np.isfinite(result.layers["phg2st"]).all()
    assert result.obsp["phg2st_distances"].shape == (table.n_obs, table.n_obs)

    axes = phg2st.pl.spatial(sdata, result.var_names[0], layers=[None, "phg2st"], show=False)
    ax = np.ravel(axes)[0]
    squares = [c for c in ax.collections if isinstance(c, PolyCollection)]
    n_prompts = int(result.obs["phg2st_prompt"].sum())
    assert [len(c.get_paths()) for c in squares] == [table.n_obs, n_prompts]  # the bins, then the prompts' outlines
    adata = phg2st.io.from_spatialdata(sdata)
    scalef = adata.uns["spatial"]["HD1"]["scalefactors"]["tissue_hires_scalef"]
    verts = np.asarray(squares[0].get_paths()[0].vertices)[:4]
    assert np.ptp(verts[:, 0]) == pytest.approx(16.0 / mpp * scalef)  # a 16 µm square, in the picture's pixels
    assert ax.images, "the H&E is drawn under the bins"
    plt.close("all")

    # the 8 µm bins (the default) of the same folder
    eight = phg2st.io.read_visium_hd(outs).tables["table"]
    assert eight.uns["spatial"]["HD1"]["scalefactors"]["bin_size_um"] == 8.0 and eight.n_obs > 3 * table.n_obs


def test_xenium_cells_are_found_on_the_aligned_he_and_go_through_the_pipeline(c2, tmp_path):
    """Cells in µm, H&E aligned by a rotation, scale and shift: each cell's tile and the plotted picture lie at the
    cell's true place on the H&E."""
    from _platforms import make_xenium

    outs = make_xenium(tmp_path / "XE1" / "outs", c2)
    he_px = np.load(tmp_path / "XE1" / "cells_he_px.npy")  # where the fixture put the cells on the H&E
    assert phg2st.io.platform_folder(outs) == "Xenium"
    sdata = phg2st.io.read_xenium(outs)
    table = sdata.tables["table"]
    assert set(sdata.images) == {"he_image"} and "cell_circles" in sdata.shapes
    assert table.n_obs == len(he_px) and table.n_vars == 30
    meta = table.uns["spatial"]["XE1"]["metadata"]
    assert meta["microns_per_pixel"] == 1.0  # the centroids are in µm
    mpp = meta["he_microns_per_pixel"]
    assert mpp == pytest.approx(c2.uns["spatial"]["C2"]["metadata"]["microns_per_pixel"])  # from the alignment
    assert 8 < table.uns["spatial"]["XE1"]["scalefactors"]["spot_diameter_fullres"] < 14  # µm, cells of 60-140 µm²
    image = np.asarray(sdata.images["he_image"]["scale0"]["image"].transpose("y", "x", "c").values)

    # each cell's tile, through a callable encoder that returns the tile's mean colour, matches the H&E there
    def mean_colour(batch):
        return batch.mean(dim=(2, 3))

    phg2st.pp.embed_tiles(sdata, encoder=mean_colour, tile_size=16, mpp=mpp, grid_size=0, key_added="X_colour")
    assert table.uns["X_colour"]["params"]["region_px"] == 16  # 16 H&E pixels: µm coordinates sized through mpp
    found = table.obsm["X_colour"]
    half = 8
    expected = []
    for x, y in np.rint(he_px).astype(int):
        patch = np.full((2 * half, 2 * half, 3), 255.0)
        crop = image[max(y - half, 0) : y + half, max(x - half, 0) : x + half]
        patch[: crop.shape[0], : crop.shape[1]] = crop
        expected.append(patch.mean(axis=(0, 1)))
    for c in range(3):
        assert np.corrcoef(found[:, c], np.asarray(expected)[:, c])[0, 1] > 0.95

    result = _fit_impute(sdata)
    assert np.isfinite(result.layers["phg2st"]).all() and result.layers["phg2st"].shape == (table.n_obs, 30)

    # the picture scanpy and phg2st.pl draw lies under the cells (the alignment is resampled, not ignored)
    adata = phg2st.io.from_spatialdata(sdata)
    info = adata.uns["spatial"]["XE1"]
    hires, scalef = info["images"]["hires"], info["scalefactors"]["tissue_hires_scalef"]
    at = np.rint(adata.obsm["spatial"] * scalef).astype(int)
    drawn = hires[at[:, 1], at[:, 0]].astype(float)
    truth = image[np.rint(he_px[:, 1]).astype(int), np.rint(he_px[:, 0]).astype(int)].astype(float)
    assert np.corrcoef(drawn.ravel(), truth.ravel())[0, 1] > 0.9
    assert scalef == pytest.approx(1 / mpp)  # the whole H&E is under 2000 px: one picture pixel per H&E pixel
    axes = phg2st.pl.spatial(sdata, result.var_names[0], layers=[None, "phg2st"], show=False)
    assert np.ravel(axes)[0].images
    plt.close("all")


def test_platform_readers_refuse_what_they_cannot_read(c2, tmp_path):
    from _platforms import make_xenium

    with pytest.raises(FileNotFoundError, match="Visium HD"):
        phg2st.io.read_visium_hd(tmp_path)
    with pytest.raises(FileNotFoundError, match="Xenium"):
        phg2st.io.read_xenium(tmp_path)
    assert phg2st.io.platform_folder(tmp_path) is None
    outs = make_xenium(tmp_path / "XE2" / "outs", c2)
    he = next(outs.glob("*he_image.ome.tif"))
    moved = tmp_path / "he.ome.tif"
    he.rename(moved)
    with pytest.raises(FileNotFoundError, match="he_image="):
        phg2st.io.read_xenium(outs)
    with pytest.raises(ValueError, match="give both"):
        phg2st.io.read_xenium(outs, alignment=next(outs.glob("*alignment.csv")))
    from phg2st_sc.cli._common import check_input, stem

    assert check_input(outs) == outs and stem(outs) == "XE2"  # the CLI takes the folder, named after its sample
    sdata = phg2st.io.read_xenium(outs, he_image=moved, alignment=next(outs.glob("*alignment.csv")))
    assert set(sdata.images) == {"he_image"}
    assert sdata.tables["table"].uns["spatial"]["XE2"]["metadata"]["he_microns_per_pixel"] == pytest.approx(0.689, 0.01)
