"""The readers' output works unchanged with scanpy and squidpy plotting."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pytest

pytestmark = pytest.mark.data


def test_scanpy_spatial(c2, tmp_path):
    import scanpy as sc

    sc.pp.normalize_total(c2)
    sc.pp.log1p(c2)
    ax = sc.pl.spatial(c2, color="ERBB2", show=False)
    assert len(ax[0].images) == 1
    plt.close("all")


def test_scanpy_spatial_without_image(load_her2st):
    import scanpy as sc

    a3 = load_her2st("A3")
    ax = sc.pl.spatial(a3, color="array_row", img_key=None, show=False)
    assert len(ax[0].images) == 0
    plt.close("all")


def test_squidpy_spatial_scatter(c2):
    import squidpy as sq

    sq.pl.spatial_scatter(c2, color="KRT8", shape="circle")
    assert plt.gcf().axes
    plt.close("all")


def test_every_slot_the_package_writes_plots_with_scanpy_and_squidpy(c2):
    """Numeric slots plot directly; the boolean columns (prompts, designs) plot in scanpy directly and in squidpy
    through the documented idiom (`.astype("category")`): squidpy reads a boolean column as colours and fails."""
    import numpy as np
    import scanpy as sc
    import squidpy as sq

    import phg2st_sc as phg2st

    a = c2.copy()
    phg2st.tl.prepare_targets(a, protocol="heldout", panel="her2st_785")
    phg2st.tl.select_prompts(a, fraction=0.1, seed=0)
    phg2st.tl.baseline(a, method="idw", layer_added="phg2st_idw")
    phg2st.tl.design_prompts(a, budget=10, strategy="space", seed=0)
    written = [c for c in a.obs.columns if c.startswith("phg2st") and c not in c2.obs.columns]
    assert {"phg2st_prompt", "phg2st_design", "phg2st_design_order"} <= set(written)
    gene = a.var_names[0]
    sq.pl.spatial_scatter(a, color=gene, layer="phg2st_idw", shape="circle")
    for col in written:
        values = a.obs[col]
        if values.dtype == bool:
            a.obs[col + "_cat"] = values.astype("category")
            sq.pl.spatial_scatter(a, color=col + "_cat", shape="circle")
            assert len(sc.pl.spatial(a, color=col, show=False)[0].collections) >= 1
        else:
            assert np.issubdtype(values.dtype, np.number), (col, values.dtype)
            sq.pl.spatial_scatter(a, color=col, shape="circle")
        plt.close("all")
