"""Bad input from the foundation issue: a clear exception, raised before work, and the AnnData unchanged."""

from __future__ import annotations

import numpy as np
import pytest

import phg2st_sc as phg2st

pytestmark = pytest.mark.data


def assert_unchanged(a, b):
    """Deep comparison of X, layers, obs, var, obsm, obsp and uns keys."""
    assert (a.X != b.X).nnz == 0 if hasattr(a.X, "nnz") else np.array_equal(a.X, b.X, equal_nan=True)
    assert a.obs.equals(b.obs) and a.var.equals(b.var)
    assert set(a.layers) == set(b.layers) and set(a.obsm) == set(b.obsm) and set(a.obsp) == set(b.obsp)
    for k in a.obsm:
        np.testing.assert_array_equal(a.obsm[k], b.obsm[k])
    assert set(a.uns) == set(b.uns)


@pytest.fixture
def targets(c2_targets):
    return c2_targets


CASES = {
    "missing obsm['spatial'] (idw)": (
        lambda a: a.obsm.pop("spatial"),
        dict(func="baseline", method="idw"),
        KeyError,
        "obsm\\['spatial'\\]",
    ),
    "missing obsm['spatial'] (blocks)": (
        lambda a: a.obsm.pop("spatial"),
        dict(func="select_prompts", strategy="blocks"),
        KeyError,
        "spatial",
    ),
    "NaN coordinates": (
        lambda a: a.obsm["spatial"].__setitem__((0, 0), np.nan),
        dict(func="baseline", method="gp"),
        ValueError,
        "NaN",
    ),
    "fraction above 1": (None, dict(func="select_prompts", fraction=1.2), ValueError, "\\(0, 1\\)"),
    "fraction 0": (None, dict(func="select_prompts", fraction=0), ValueError, "\\(0, 1\\)"),
    "fewer prompts than k": (None, dict(func="baseline", method="idw", k=25), ValueError, "fewer than `k=25`"),
    "NaN in the data": (
        lambda a: setattr(a, "X", np.where(np.arange(a.n_vars) == 3, np.nan, a.X.toarray())),
        dict(func="baseline", method="mean"),
        ValueError,
        "NaN",
    ),
    "no prompt column": (
        lambda a: a.obs.pop("phg2st_prompt"),
        dict(func="baseline", method="mean"),
        KeyError,
        "select_prompts",
    ),
    "no prompts": (
        lambda a: a.obs.__setitem__("phg2st_prompt", False),
        dict(func="baseline", method="mean"),
        ValueError,
        "no spot",
    ),
    "prompt column not boolean": (
        lambda a: a.obs.__setitem__("phg2st_prompt", "yes"),
        dict(func="baseline", method="mean"),
        TypeError,
        "boolean",
    ),
    "shape of the coordinates": (
        lambda a: a.obsm.__setitem__("spatial", np.ones((a.n_obs, 1))),
        dict(func="baseline", method="idw"),
        ValueError,
        "shape",
    ),
    "a list instead of an AnnData": ("list", dict(func="baseline", method="idw"), TypeError, "AnnData"),
    "table_key with an AnnData": (None, dict(func="baseline", method="idw", table_key="t"), ValueError, "table_key"),
}


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input(targets, name):
    corrupt, kwargs, exc, msg = CASES[name]
    kwargs = dict(kwargs)
    func = getattr(phg2st.tl, kwargs.pop("func"))
    if corrupt == "list":
        with pytest.raises(exc, match=msg):
            func([targets], **kwargs)
        return
    if corrupt is not None:
        corrupt(targets)
    snapshot = targets.copy()
    with pytest.raises(exc, match=msg):
        func(targets, **kwargs)
    assert_unchanged(targets, snapshot)


def test_reader_bad_input(tmp_path):
    with pytest.raises(ValueError, match="Unknown her2st section"):
        phg2st.datasets.her2st("C9")
    with pytest.raises(phg2st.DataNotFoundError, match="Missing"):
        phg2st.datasets.her2st("C2", data_dir=tmp_path)
    with pytest.raises(ValueError, match="absent from the data"):
        phg2st.tl.evaluate(phg2st.datasets.her2st("C2")[:, :50].copy(), panel="her2st_785")
