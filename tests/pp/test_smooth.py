"""3x3 array smoothing against a direct loop implementation."""

from __future__ import annotations

import numpy as np
import pytest
from anndata import AnnData

import phg2st_sc as phg2st


def loop_smooth(rows, cols, x, radius=1):
    out = np.zeros_like(x, dtype=float)
    for i in range(len(rows)):
        near = (np.abs(rows - rows[i]) <= radius) & (np.abs(cols - cols[i]) <= radius)
        out[i] = x[near].mean(axis=0)
    return out


@pytest.mark.data
def test_smooth_matches_loop_on_c2(c2_targets):
    adata = c2_targets
    x = adata.X.toarray() if hasattr(adata.X, "toarray") else adata.X
    phg2st.pp.smooth(adata)
    expected = loop_smooth(adata.obs["array_row"].to_numpy(), adata.obs["array_col"].to_numpy(), x)
    np.testing.assert_allclose(adata.layers["smoothed"], expected, rtol=1e-5, atol=1e-6)
    assert adata.uns["phg2st_smooth"]["params"] == {"layer": "X", "layer_added": "smoothed", "radius": 1}
    assert not np.allclose(adata.layers["smoothed"], x)


def test_smooth_radius_and_isolated_spot():
    rows = np.array([0, 0, 1, 5])
    cols = np.array([0, 1, 1, 5])
    x = np.array([[1.0], [2.0], [3.0], [10.0]])
    a = AnnData(x, obs={"array_row": rows, "array_col": cols})
    out = phg2st.pp.smooth(a, copy=True)
    np.testing.assert_allclose(out.layers["smoothed"].ravel(), [2.0, 2.0, 2.0, 10.0])
    out2 = phg2st.pp.smooth(a, radius=5, copy=True)
    np.testing.assert_allclose(out2.layers["smoothed"].ravel(), [4.0] * 4)
    assert "smoothed" not in a.layers


def test_smooth_errors():
    a = AnnData(np.ones((3, 2)), obs={"array_row": [0, 0, 1], "array_col": [0, 0, 1]})
    with pytest.raises(ValueError, match="share the same"):
        phg2st.pp.smooth(a)
    b = AnnData(np.ones((3, 2)))
    with pytest.raises(KeyError, match="array_row"):
        phg2st.pp.smooth(b)
    c = AnnData(np.array([[1.0, np.nan], [1, 2]]), obs={"array_row": [0, 1], "array_col": [0, 0]})
    with pytest.raises(ValueError, match="NaN"):
        phg2st.pp.smooth(c)
    assert not c.layers
