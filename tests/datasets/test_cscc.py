"""The cSCC reader on small files written in the GEO GSE144240 format (no real copy is available here)."""

from __future__ import annotations

import gzip

import numpy as np
import pandas as pd
import pytest
from PIL import Image

import phg2st_sc as phg2st
from phg2st_sc import DataNotFoundError, MissingImageWarning


def write_geo_section(folder, section="P2_ST_rep1", gsm="GSM4284316", *, image=True, n=4, pitch=150.0):
    """Write a tiny section in the GEO layout: stdata (spots x genes), spot selection, JPEG."""
    rng = np.random.default_rng(0)
    xs, ys = np.meshgrid(np.arange(7, 7 + n), np.arange(10, 10 + n))
    xs, ys = xs.ravel(), ys.ravel()
    ids = [f"{x}x{y}" for x, y in zip(xs, ys, strict=True)]
    counts = pd.DataFrame(
        rng.poisson(3, size=(len(ids), 5)), index=ids, columns=["KRT14", "KRT5", "MMP1", "COL1A1", "CD74"]
    )
    counts.iloc[:-1].to_csv(folder / f"{gsm}_{section}_stdata.tsv.gz", sep="\t", compression="gzip")
    spots = pd.DataFrame(
        {
            "x": xs, "y": ys, "new_x": xs + 0.02, "new_y": ys - 0.01,
            "pixel_x": 100 + (xs - 7) * pitch, "pixel_y": 80 + (ys - 10) * pitch,
            "selected": [1] * (len(ids) - 2) + [0, 1],
        }
    )  # fmt: skip
    spots.to_csv(folder / f"{gsm}_spot_data-selection-{section}.tsv.gz", sep="\t", index=False, compression="gzip")
    if image:
        Image.new("RGB", (900, 800), (230, 200, 220)).save(folder / f"{gsm}_{section}.jpg")
    return counts, spots


def test_cscc_geo_layout(tmp_path):
    counts, spots = write_geo_section(tmp_path)
    adata = phg2st.datasets.cscc("P2_ST_rep1", data_dir=tmp_path)
    # the last count row is dropped (no counts row) and one spot is not selected under tissue
    kept = [
        i
        for i, sel in zip(spots["x"].astype(str) + "x" + spots["y"].astype(str), spots["selected"], strict=True)
        if sel == 1
    ]
    kept = [i for i in kept if i in counts.index[:-1]]
    assert list(adata.obs["spot_id"]) == [i for i in counts.index[:-1] if i in kept]
    np.testing.assert_array_equal(adata.X.toarray(), counts.loc[adata.obs["spot_id"]].to_numpy())
    assert adata.obs["patient"].iloc[0] == "P2" and adata.obs["section"].iloc[0] == "P2_ST_rep1"
    info = adata.uns["spatial"]["P2_ST_rep1"]
    assert info["metadata"]["image_shape"].tolist() == [800, 900]
    assert info["scalefactors"]["spot_diameter_fullres"] == pytest.approx(75.0)  # 100/200 of a 150 px pitch
    assert info["images"]["hires"].shape == (800, 900, 3)


def test_cscc_uncompressed_without_prefix_or_image(tmp_path):
    write_geo_section(tmp_path, section="P10_ST_rep3", gsm="X", image=False)
    for p in tmp_path.glob("*.gz"):
        target = tmp_path / p.name.removeprefix("X_").removesuffix(".gz")
        target.write_bytes(gzip.decompress(p.read_bytes()))
        p.unlink()
    with pytest.warns(MissingImageWarning):
        adata = phg2st.datasets.cscc("P10_ST_rep3", data_dir=tmp_path, spot_diameter_um=110, spot_pitch_um=150)
    assert adata.obs["patient"].iloc[0] == "P10"
    assert adata.uns["spatial"]["P10_ST_rep3"]["scalefactors"]["spot_diameter_fullres"] == pytest.approx(110.0)


def test_cscc_errors(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="Unknown cSCC section"):
        phg2st.datasets.cscc("P3_ST_rep1", data_dir=tmp_path)
    with pytest.raises(DataNotFoundError, match="stdata"):
        phg2st.datasets.cscc("P2_ST_rep1", data_dir=tmp_path)
    monkeypatch.delenv("PHG2ST_DATA_DIR", raising=False)
    monkeypatch.setattr(phg2st.settings, "_data_dir", None)
    with pytest.raises(DataNotFoundError, match="GEO"):
        phg2st.datasets.cscc("P2_ST_rep1")


def test_cscc_malformed_spot_table(tmp_path):
    write_geo_section(tmp_path)
    bad = tmp_path / "GSM4284316_spot_data-selection-P2_ST_rep1.tsv.gz"
    pd.DataFrame({"x": [1], "y": [2]}).to_csv(bad, sep="\t", index=False, compression="gzip")
    with pytest.raises(ValueError, match="pixel_x"):
        phg2st.datasets.cscc("P2_ST_rep1", data_dir=tmp_path)
