"""Named protocols and the evaluation harness on real sections."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
import scanpy as sc

import phg2st_sc as phg2st

pytestmark = pytest.mark.data


def test_protocol_registry():
    assert set(phg2st.tl.PROTOCOLS) == {"heldout", "heldout_smoothed", "official", "paper"}
    assert phg2st.tl.get_protocol("official").spots == "all"
    custom = phg2st.tl.Protocol("mine", smooth=True)
    assert phg2st.tl.get_protocol(custom) is custom
    with pytest.raises(ValueError, match="Unknown protocol"):
        phg2st.tl.get_protocol("nope")


def test_prepare_targets_normalises_over_all_genes(c2):
    """Library sizes use every gene; the panel is taken afterwards."""
    work = phg2st.tl.prepare_targets(c2, "heldout", panel="her2st_785")
    ref = c2.copy()
    sc.pp.normalize_total(ref, target_sum=1e4)
    sc.pp.log1p(ref)
    ref = ref[:, phg2st.pp.panel_genes("her2st_785")]
    np.testing.assert_allclose(work.X.toarray(), ref.X.toarray(), rtol=1e-5)
    assert work.obsm["spatial"] is not c2.obsm["spatial"] and "spatial" in work.uns
    cpm = phg2st.tl.prepare_targets(c2, "paper", panel=["ERBB2"])
    counts = c2[:, "ERBB2"].X.toarray().ravel() / np.asarray(c2.X.sum(axis=1)).ravel()
    np.testing.assert_allclose(cpm.X.toarray().ravel(), np.log1p(counts * 1e6), rtol=1e-5)


def test_prepare_targets_refuses_non_counts(c2):
    logged = c2.copy()
    sc.pp.normalize_total(logged)
    sc.pp.log1p(logged)
    with pytest.raises(ValueError, match="raw counts"):
        phg2st.tl.prepare_targets(logged, "heldout")
    negative = c2.copy()
    negative.X = negative.X.toarray()
    negative.X[0, 0] = -1
    with pytest.raises(ValueError, match="negative"):
        phg2st.tl.prepare_targets(negative, "heldout")


@pytest.mark.parametrize("section", ["C2", "C3", "C4", "C5", "C6", "A1"])
def test_evaluate_real_sections(load_her2st, section):
    adata = load_her2st(section)
    snapshot = adata.copy()
    table = phg2st.tl.evaluate(adata, methods=["mean", "idw"], panel="her2st_785", seeds=[0, 1])
    assert list(table.columns[:4]) == ["section", "method", "seed", "protocol"]
    assert len(table) == 4 and (table["section"] == section).all()
    assert (table["n_spots"] == adata.n_obs - round(0.1 * adata.n_obs)).all()
    mean = table[table["method"] == "mean"]
    assert (mean["pcc"] == 0).all()  # a constant prediction carries no ranking
    assert (table["mae"] > 0).all() and not table["targets_smoothed"].any()
    idw = table[table["method"] == "idw"]
    assert (idw["pcc"] > 0).all()
    # the input is untouched
    assert (
        set(adata.obs) == set(snapshot.obs)
        and set(adata.layers) == set(snapshot.layers)
        and set(adata.uns) == set(snapshot.uns)
    )
    assert (adata.X != snapshot.X).nnz == 0


def test_evaluate_smoothed_protocols_flatter_interpolation(c2):
    with pytest.warns(phg2st.SmoothedTargetWarning):
        smoothed = phg2st.tl.evaluate(c2, methods=["idw"], protocol="heldout_smoothed", panel="her2st_785")
    raw = phg2st.tl.evaluate(c2, methods=["idw"], protocol="heldout", panel="her2st_785")
    assert smoothed["targets_smoothed"].all() and smoothed["note"].str.contains("smoothed").all()
    assert smoothed["pcc"].mean() > raw["pcc"].mean() + 0.2
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", phg2st.SmoothedTargetWarning)
        official = phg2st.tl.evaluate(c2, methods=["idw"], protocol="official", panel="her2st_785")
    assert (official["n_spots"] == c2.n_obs).all()


def test_evaluate_with_image_methods_and_kwargs(c2, colour_features):
    c2.obsm["X_colour"] = colour_features(c2)
    table = phg2st.tl.evaluate(
        c2,
        methods=["idw", "ridge", "stack", "feature_knn"],
        panel="her2st_785",
        seeds=[0],
        use_rep="X_colour",
        method_kwargs={"idw": {"k": 4}, "ridge": {"n_pcs": 8}, "stack": {"n_pcs": 8}},
    )
    assert list(table["method"]) == ["idw", "ridge", "stack", "feature_knn"]
    assert table["pcc"].notna().all()


def test_evaluate_mob(load_mob):
    adata = load_mob("MOB1")
    table = phg2st.tl.evaluate(adata, methods=["mean", "idw", "gp"], panel="top_expressed", seeds=[0])
    assert isinstance(table, pd.DataFrame) and len(table) == 3
    by = table.set_index("method")
    assert by.loc["idw", "pcc"] > 0.05 and by.loc["gp", "pcc"] > 0.05  # the bulb's layers are spatially smooth


def test_evaluate_errors(c2):
    for kwargs, exc in [
        (dict(methods=[]), ValueError),
        (dict(methods=["nope"]), ValueError),
        (dict(seeds=[]), ValueError),
        (dict(method_kwargs={"ridge": {}}), ValueError),
        (dict(protocol="nope"), ValueError),
        (dict(protocol=phg2st.tl.Protocol("bad", prompt_fraction=1.5)), ValueError),
        (dict(panel=["NOT_A_GENE"]), ValueError),
    ]:
        with pytest.raises(exc):
            phg2st.tl.evaluate(c2, **kwargs)


def test_preparing_targets_keeps_the_thread_count_torch_trains_with():
    """scanpy's numba kernels set the OpenMP thread count to the cores on their first call: kept as it was.

    (Run in a fresh process: the first call is the one that changes it. Without the guard a model trained after
    `prepare_targets` differed in its last bits from one trained in a process that had not called it.)
    """
    import os
    import subprocess
    import sys
    import textwrap

    script = textwrap.dedent(
        """
        import warnings
        import numpy as np, torch, anndata as ad
        from scipy import sparse
        import phg2st_sc as phg2st
        warnings.simplefilter("ignore")
        a = ad.AnnData(sparse.csr_matrix(np.random.default_rng(0).poisson(0.5, (600, 3000)).astype(np.float32)))
        a.obsm["spatial"] = np.random.default_rng(1).uniform(0, 100, (600, 2))
        phg2st.tl.prepare_targets(a, "heldout", panel=None)
        print("THREADS", torch.get_num_threads())
        """
    )
    env = dict(os.environ, OMP_NUM_THREADS="1", NUMBA_NUM_THREADS="2")  # numba's layer would set 2
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, env=env)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "THREADS 1" in res.stdout, res.stdout
