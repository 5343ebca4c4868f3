"""pl.spatial smoke tests (Agg) and checks of what is drawn."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pytest
from matplotlib.collections import EllipseCollection

import phg2st_sc as phg2st

pytestmark = pytest.mark.data


def test_layout_colours_and_prompts(predicted, tmp_path):
    out = tmp_path / "fig.png"
    axes = phg2st.pl.spatial(predicted, ["ERBB2", "KRT8"], layers=(None, "baseline_idw"), save=out, show=False)
    assert axes.shape == (2, 3)  # measured, predicted, error
    assert out.stat().st_size > 10_000
    ax = axes[0, 0]
    assert ax.get_title() == "ERBB2: measured" and axes[0, 2].get_title().startswith("ERBB2: baseline_idw −")
    assert len(ax.images) == 1  # the H&E
    spots, ring = [c for c in ax.collections if isinstance(c, EllipseCollection)]
    measured = predicted[:, "ERBB2"].X.toarray().ravel()
    np.testing.assert_allclose(spots.get_array(), measured, rtol=1e-6)
    assert len(ring.get_offsets()) == predicted.obs["phg2st_prompt"].sum()
    # circles have the true spot diameter in hires pixels
    sf = predicted.uns["spatial"]["C2"]["scalefactors"]
    assert spots._widths[0] * 2 == pytest.approx(sf["spot_diameter_fullres"] * sf["tissue_hires_scalef"], rel=1e-6)
    err = [c for c in axes[0, 2].collections if isinstance(c, EllipseCollection)][0]
    np.testing.assert_allclose(
        err.get_array(), predicted[:, "ERBB2"].layers["baseline_idw"].ravel() - measured, atol=1e-5
    )
    # colours change with the gene
    other = [c for c in axes[1, 0].collections if isinstance(c, EllipseCollection)][0]
    assert not np.allclose(other.get_array(), spots.get_array())
    plt.close("all")


def test_return_fig_and_no_image(predicted):
    fig = phg2st.pl.spatial(predicted, "KRT8", image=False, return_fig=True, show=False)
    assert len(fig.axes[0].images) == 0
    plt.close(fig)


def test_spatialdata_input(predicted):
    sdata = phg2st.io.to_spatialdata(predicted, image=False)
    axes = phg2st.pl.spatial(sdata, "ERBB2", layers=(None, "baseline_idw"), show=False)
    assert axes.shape == (1, 3)
    plt.close("all")


def test_errors(predicted):
    with pytest.raises(KeyError, match="NOPE"):
        phg2st.pl.spatial(predicted, "NOPE", show=False)
    with pytest.raises(KeyError, match="No layer 'phg2st'"):
        phg2st.pl.spatial(predicted, "ERBB2", layers=(None, "phg2st"), show=False)
    with pytest.raises(TypeError):
        phg2st.pl.spatial(np.zeros((3, 3)), "ERBB2", show=False)


def test_unmeasured_spots_are_grey_and_keep_the_scale(predicted):
    """Virtual spots (NaN measurements) are drawn light grey; the colour scales come from the finite values."""
    from matplotlib.colors import to_rgba

    whole = phg2st.pp.virtual_spots(predicted)
    whole.layers["baseline_idw"] = np.nan_to_num(whole.X, nan=0.5)  # a finite prediction everywhere
    virtual = whole.obs["phg2st_virtual"].to_numpy()
    axes = phg2st.pl.spatial(whole, "ERBB2", layers=(None, "baseline_idw"), show=False)
    measured_panel = [c for c in axes[0, 0].collections if isinstance(c, EllipseCollection)][0]
    measured_panel.update_scalarmappable()  # map the values to colours as drawing does
    colours = measured_panel.get_facecolors()
    np.testing.assert_allclose(colours[virtual], [to_rgba("lightgray")] * int(virtual.sum()))
    assert not np.allclose(colours[~virtual][:, :3], to_rgba("lightgray")[:3])
    finite = whole.X[~virtual, list(whole.var_names).index("ERBB2")]
    assert measured_panel.norm.vmin == pytest.approx(float(finite.min()))
    error_panel = [c for c in axes[0, 2].collections if isinstance(c, EllipseCollection)][0]
    assert np.isfinite(error_panel.norm.vmin) and np.isfinite(error_panel.norm.vmax)
    plt.close("all")


@pytest.mark.parametrize("scalefactors", ["space_ranger", "none", "nan"])
def test_square_bins_are_drawn_as_squares_of_their_size(scalefactors):
    """Visium HD bins: squares whose side is the bin (with Space Ranger's scale factors, without any, or with a
    NaN diameter); they tile the section edge to edge. Hexagonal Visium spots stay circles without a diameter."""
    from matplotlib.collections import PolyCollection

    a = phg2st.datasets.synthetic(400, 3, layout="visium_hd", n_features=4, grid_size=0, seed=0)
    sf = a.uns["spatial"]["synthetic"]["scalefactors"]
    assert sf["bin_size_um"] == 16.0
    side_px = 16.0 / sf["microns_per_pixel"]
    if scalefactors != "space_ranger":
        a.uns["spatial"]["synthetic"]["scalefactors"] = {"tissue_hires_scalef": 1.0}
        if scalefactors == "nan":
            a.uns["spatial"]["synthetic"]["scalefactors"]["spot_diameter_fullres"] = float("nan")
    axes = phg2st.pl.spatial(a, a.var_names[0], image=False, show=False)
    ax = np.ravel(axes)[0]
    squares = [c for c in ax.collections if isinstance(c, PolyCollection)]
    assert len(squares) == 1 and not [c for c in ax.collections if isinstance(c, EllipseCollection)]
    verts = np.asarray(squares[0].get_paths()[0].vertices)[:4]
    assert np.ptp(verts[:, 0]) == pytest.approx(side_px) and np.ptp(verts[:, 1]) == pytest.approx(side_px)
    assert len(squares[0].get_paths()) == a.n_obs
    plt.close("all")

    hexagonal = phg2st.datasets.synthetic(200, 3, layout="visium", n_features=4, grid_size=0, seed=0)
    hexagonal.uns["spatial"]["synthetic"]["scalefactors"] = {"tissue_hires_scalef": 1.0}
    axes = phg2st.pl.spatial(hexagonal, hexagonal.var_names[0], image=False, show=False)
    circles = [c for c in np.ravel(axes)[0].collections if isinstance(c, EllipseCollection)]
    assert len(circles) == 1 and circles[0]._widths[0] * 2 == pytest.approx(100.0 / 0.5)  # the 100 µm pitch
    plt.close("all")
