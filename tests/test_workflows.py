"""End-to-end workflows a user runs: SpatialData in and out, squidpy and scanpy on the results, Visium input."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pandas as pd
import pytest
from scipy import sparse

import phg2st_sc as phg2st

pytestmark = [pytest.mark.data, pytest.mark.usefixtures("no_progress")]

REP = "X_efficientnet_lite0"
GENES = ["KRT8", "COL3A1", "ERBB2", "IGKC", "FASN", "SCD", "MGP", "KRT19"]


def _dense(x):
    return x.toarray() if sparse.issparse(x) else np.asarray(x)


def test_spatialdata_end_to_end(load_her2st, tmp_path):
    """Build SpatialData, embed, fit, impute, store the result as a table linked to the spots, zarr round trip."""
    import spatialdata as sd
    from spatialdata.models import get_table_keys

    c2 = phg2st.io.to_spatialdata(load_her2st("C2")[:80].copy())
    phg2st.pp.embed_tiles(c2, encoder="efficientnet_lite0", precision="fp32", grid_size=1)
    phg2st.pp.build_hypergraph(c2, use_rep=REP)
    assert REP in c2.tables["table"].obsm and "phg2st_incidence" in c2.tables["table"].obsp
    # a workflow check, not an accuracy one: train on the section itself, then impute it from 10% prompts
    train = phg2st.tl.prepare_targets(c2, "heldout", panel=GENES)
    model = phg2st.tl.fit(train, use_rep=REP, max_epochs=2, config={"hidden": 32}, validation=None, accelerator="cpu")
    result = phg2st.tl.prepare_targets(c2, "heldout", panel=GENES)
    phg2st.tl.select_prompts(result, fraction=0.1, seed=0)
    phg2st.tl.impute(result, model)

    c2.tables["phg2st"] = result  # prepare_targets keeps the link to the spot circles
    region, region_key, instance_key = get_table_keys(c2.tables["phg2st"])
    assert region == "C2_spots" and region_key == "region" and instance_key == "spot_index"
    path = tmp_path / "c2.zarr"
    c2.write(path)
    back = sd.read_zarr(path)
    table = back.tables["phg2st"]
    np.testing.assert_array_equal(table.layers["phg2st"], result.layers["phg2st"])
    np.testing.assert_array_equal(table.obsm["X_phg2st"], result.obsm["X_phg2st"])
    np.testing.assert_array_equal(table.obs["phg2st_prompt"], result.obs["phg2st_prompt"])
    np.testing.assert_array_equal(_dense(table.obsp["phg2st_incidence"]), _dense(result.obsp["phg2st_incidence"]))
    assert list(table.var_names) == GENES
    # every table row still points at its own circle
    circles = back.shapes["C2_spots"]
    centres = np.c_[circles.geometry.x, circles.geometry.y][table.obs["spot_index"].to_numpy()]
    np.testing.assert_allclose(centres, result.obsm["spatial"], atol=1e-6)
    # and the stored result reads back into the package like any section
    again = phg2st.io.from_spatialdata(back, table_key="phg2st")
    s = phg2st.tl.score(again, layer="phg2st").summary
    assert s["n_spots"] == int((~result.obs["phg2st_prompt"]).sum()) and np.isfinite(s["pcc"])
    phg2st.pl.spatial(back, ["KRT8"], layers=(None, "phg2st"), table_key="phg2st", show=False)


@pytest.fixture
def imputed_c2(c2_imputed_by_colour_model):
    return c2_imputed_by_colour_model[0]


def _morans_i(values: np.ndarray, w: sparse.spmatrix) -> float:
    """Moran's I from its definition (for checking squidpy's number)."""
    z = values - values.mean()
    w = sparse.csr_matrix(w)
    return float(len(z) / w.sum() * (z @ (w @ z)) / (z @ z))


def test_squidpy_morans_i_on_measured_and_imputed(imputed_c2):
    import squidpy as sq

    genes = ["KRT8", "COL3A1", "IGKC", "CD74"]
    sq.gr.spatial_neighbors(imputed_c2, coord_type="generic", n_neighs=6)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        measured = sq.gr.spatial_autocorr(imputed_c2, mode="moran", genes=genes, n_perms=None, copy=True)
        imputed = sq.gr.spatial_autocorr(imputed_c2, mode="moran", genes=genes, layer="phg2st", n_perms=None,
                                         copy=True)  # fmt: skip
    w = imputed_c2.obsp["spatial_connectivities"]
    for gene in genes:
        col = imputed_c2.var_names.get_loc(gene)
        expected = _morans_i(_dense(imputed_c2.X[:, [col]]).ravel(), w)
        assert measured.loc[gene, "I"] == pytest.approx(expected, rel=1e-4)
        expected = _morans_i(imputed_c2.layers["phg2st"][:, col], w)
        assert imputed.loc[gene, "I"] == pytest.approx(expected, rel=1e-4)
    # a prediction from image features and neighbouring prompts is spatially smoother than noisy counts
    assert imputed["I"].mean() > measured["I"].mean()


def test_scanpy_clustering_on_the_latent_tokens(imputed_c2):
    import scanpy as sc

    sc.pp.neighbors(imputed_c2, use_rep="X_phg2st", n_neighbors=10, key_added="phg2st_latent")
    sc.tl.leiden(imputed_c2, neighbors_key="phg2st_latent", key_added="phg2st_clusters", flavor="igraph",
                 n_iterations=2, resolution=0.5, random_state=0)  # fmt: skip
    clusters = imputed_c2.obs["phg2st_clusters"]
    assert clusters.nunique() >= 2 and clusters.notna().all()
    sc.pl.spatial(imputed_c2, color="phg2st_clusters", show=False)


def write_visium(adata, path, *, source_image: str):
    """Write a section in Space Ranger's output layout (counts h5, spatial/ positions, scale factors, images)."""
    import h5py
    from PIL import Image

    lib = next(iter(adata.uns["spatial"]))
    info = adata.uns["spatial"][lib]
    (path / "spatial").mkdir(parents=True)
    x = sparse.csr_matrix(_dense(adata.X).astype(np.int32))
    barcodes = [f"{lib}-{i:05d}-1" for i in range(adata.n_obs)]
    with h5py.File(path / "filtered_feature_bc_matrix.h5", "w") as f:
        f.attrs["library_ids"] = np.array([lib], dtype="S")
        f.attrs["chemistry_description"], f.attrs["software_version"] = "Spatial 3' v1", "spaceranger-2.0.0"
        m = f.create_group("matrix")
        m["barcodes"] = np.array(barcodes, dtype="S")
        m["data"], m["indices"], m["indptr"] = x.data, x.indices, x.indptr  # CSR of spots = CSC of genes x spots
        m["shape"] = np.array([adata.n_vars, adata.n_obs], dtype=np.int32)
        feats = m.create_group("features")
        feats["id"] = np.array([f"ENSG{i:011d}" for i in range(adata.n_vars)], dtype="S")
        feats["name"] = np.array(adata.var_names, dtype="S")
        feats["feature_type"] = np.array(["Gene Expression"] * adata.n_vars, dtype="S")
        feats["genome"] = np.array(["GRCh38"] * adata.n_vars, dtype="S")
        feats["_all_tag_keys"] = np.array([b"genome"])
    xy = adata.obsm["spatial"]
    pd.DataFrame({
        "barcode": barcodes, "in_tissue": 1, "array_row": adata.obs["array_row"].to_numpy(),
        "array_col": adata.obs["array_col"].to_numpy(), "pxl_row_in_fullres": np.round(xy[:, 1]).astype(int),
        "pxl_col_in_fullres": np.round(xy[:, 0]).astype(int),
    }).to_csv(path / "spatial" / "tissue_positions.csv", index=False)  # fmt: skip
    hires = np.asarray(info["images"]["hires"])
    hires = (hires * 255).astype(np.uint8) if hires.dtype.kind == "f" else hires
    Image.fromarray(hires).save(path / "spatial" / "tissue_hires_image.png")
    sf = info["scalefactors"]
    lowres_scalef = sf["tissue_hires_scalef"] / 4
    Image.fromarray(hires[::4, ::4]).save(path / "spatial" / "tissue_lowres_image.png")
    (path / "spatial" / "scalefactors_json.json").write_text(json.dumps({
        "spot_diameter_fullres": sf["spot_diameter_fullres"], "tissue_hires_scalef": sf["tissue_hires_scalef"],
        "tissue_lowres_scalef": lowres_scalef, "fiducial_diameter_fullres": 1.6 * sf["spot_diameter_fullres"],
    }))  # fmt: skip
    return barcodes


@pytest.fixture
def visium_dir(c2, tmp_path):
    """C2 (a subset of spots) written in Space Ranger's layout; the full-resolution H&E stays where it is."""
    sub = c2[:30].copy()
    source = sub.uns["spatial"]["C2"]["metadata"]["source_image_path"]
    barcodes = write_visium(sub, tmp_path / "visium_c2", source_image=source)
    return tmp_path / "visium_c2", sub, barcodes, source


def test_visium_through_scanpy(visium_dir):
    import scanpy as sc

    path, sub, barcodes, source = visium_dir
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # scanpy suggests squidpy.read.visium
        adata = sc.read_visium(path, source_image_path=source)
    assert list(adata.obs_names) == barcodes and adata.n_vars == sub.n_vars
    np.testing.assert_allclose(adata.obsm["spatial"], np.round(sub.obsm["spatial"]), atol=0.5)
    phg2st.pp.embed_tiles(adata, encoder="efficientnet_lite0", precision="fp32", grid_size=1)
    reference = sub.copy()
    reference.obsm["spatial"] = np.round(reference.obsm["spatial"]).astype(float)
    phg2st.pp.embed_tiles(reference, encoder="efficientnet_lite0", precision="fp32", grid_size=1)
    # the same pixels give the same features, whichever reader made the AnnData
    np.testing.assert_allclose(adata.obsm[REP], reference.obsm[REP], rtol=1e-4, atol=1e-5)


def test_visium_through_spatialdata_io(visium_dir):
    import spatialdata_io

    path, sub, barcodes, source = visium_dir
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sdata = spatialdata_io.visium(path, dataset_id="C2", fullres_image_file=source)
    table = sdata.tables["table"]
    assert table.n_obs == sub.n_obs
    phg2st.pp.embed_tiles(sdata, encoder="efficientnet_lite0", precision="fp32",
                          image_key="C2_full_image")  # fmt: skip
    reference = sub.copy()
    reference.obsm["spatial"] = np.round(reference.obsm["spatial"]).astype(float)
    phg2st.pp.embed_tiles(reference, encoder="efficientnet_lite0", precision="fp32", grid_size=1)
    np.testing.assert_allclose(sdata.tables["table"].obsm[REP], reference.obsm[REP], rtol=1e-4, atol=1e-5)
    adata = phg2st.io.from_spatialdata(sdata, image_key="C2_hires_image")
    np.testing.assert_allclose(adata.obsm["spatial"], np.round(sub.obsm["spatial"]), atol=0.5)
