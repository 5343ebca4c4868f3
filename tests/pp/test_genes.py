"""Gene panels and the top-expressed rule."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
from anndata import AnnData
from scipy import sparse

import phg2st_sc as phg2st


def test_panels_are_the_published_lists():
    her2 = phg2st.pp.panel_genes("her2st_785")
    cscc = phg2st.pp.panel_genes("cscc_171")
    assert len(her2) == 785 == len(set(her2)) and len(cscc) == 171 == len(set(cscc))
    # the shipped files are byte-identical to the lists in shared/data/genes (SHA256SUMS of the manifest)
    from importlib.resources import files

    text = files("phg2st_sc").joinpath("_data", "genes", "her2st_785.txt").read_bytes()
    assert hashlib.sha256(text).hexdigest() == "9dc7a8c3a7cc2fbc5fc2c98be8fba48fcb19af0befcef1fd92cf6489923b8033"
    text = files("phg2st_sc").joinpath("_data", "genes", "cscc_171.txt").read_bytes()
    assert hashlib.sha256(text).hexdigest() == "b652bac55dd0c88d722f08867777d0607c96389e6755fd85771ba35a8e428fe2"


@pytest.mark.data
def test_panels_match_the_hist2st_npy(data_dir):
    her2 = np.load(data_dir / "genes" / "her_hvg_cut_1000.npy", allow_pickle=True)
    assert list(her2) == phg2st.pp.panel_genes("her2st_785")
    skin = np.load(data_dir / "genes" / "skin_hvg_cut_1000.npy", allow_pickle=True)
    assert list(skin) == phg2st.pp.panel_genes("cscc_171")


def test_unknown_panel():
    with pytest.raises(ValueError, match="her2st_785"):
        phg2st.pp.panel_genes("nope")


@pytest.mark.data
def test_select_her2st_panel(c2):
    before = c2.X.copy()
    phg2st.pp.select_genes(c2, "her2st_785")
    assert list(c2.var_names) == phg2st.pp.panel_genes("her2st_785")
    assert c2.uns["phg2st_genes"]["params"] == {"panel": "her2st_785", "n_genes": 785, "n_filled_with_zeros": 0}
    assert c2.X.sum() < before.sum()


@pytest.mark.data
def test_absent_genes(c2):
    c2 = c2[:, 100:].copy()  # some panel genes are now absent
    missing = set(phg2st.pp.panel_genes("her2st_785")) - set(c2.var_names)
    assert missing
    snapshot = c2.copy()
    with pytest.raises(ValueError, match=f"{len(missing)} of the 785 genes"):
        phg2st.pp.select_genes(c2, "her2st_785")
    with pytest.raises(ValueError, match="copy=True"):
        phg2st.pp.select_genes(c2, "her2st_785", fill_missing=True)
    assert c2.shape == snapshot.shape and (c2.X != snapshot.X).nnz == 0
    out = phg2st.pp.select_genes(c2, "her2st_785", fill_missing=True, copy=True)
    assert out.n_vars == 785 and out.uns["phg2st_genes"]["params"]["n_filled_with_zeros"] == len(missing)
    cols = out.var_names.get_indexer(sorted(missing))
    assert out.X[:, cols].nnz == 0
    kept = [g for g in out.var_names if g not in missing]
    np.testing.assert_array_equal(out[:, kept].X.toarray(), c2[:, kept].X.toarray())


def test_top_expressed_rule():
    # gene b: most counts but detected in only 1 of 20 spots -> excluded at min_fraction 0.1
    x = np.zeros((20, 4))
    x[:, 0] = 1  # a: in every spot, total 20
    x[0, 1] = 100  # b: one spot
    x[:10, 2] = 5  # c: half the spots, total 50
    x[:3, 3] = 2  # d: 3 spots, total 6
    a1 = AnnData(sparse.csr_matrix(x[:10]), var={"g": list("abcd")})
    a1.var_names = list("abcd")
    a2 = AnnData(sparse.csr_matrix(x[10:]))
    a2.var_names = list("abcd")
    assert phg2st.pp.top_expressed_genes([a1, a2], n_top=10) == ["c", "a", "d"]
    assert phg2st.pp.top_expressed_genes([a1, a2], n_top=2) == ["c", "a"]
    assert phg2st.pp.top_expressed_genes([a1, a2], min_fraction=0.0) == ["b", "c", "a", "d"]
    a3 = a2[:, ["a", "b"]].copy()
    assert phg2st.pp.top_expressed_genes([a1, a3], min_fraction=0.0) == ["b", "a"]  # only shared genes


@pytest.mark.data
def test_top_expressed_on_her2st(load_her2st):
    sections = [load_her2st(s) for s in ("C2", "C3")]
    genes = phg2st.pp.top_expressed_genes(sections, n_top=1000)
    assert len(genes) == 1000
    assert {"ERBB2", "KRT19"} <= set(genes[:300])
    totals = [sum(float(a[:, g].X.sum()) for a in sections) for g in genes[:50]]
    assert totals == sorted(totals, reverse=True)
