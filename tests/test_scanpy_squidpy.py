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
