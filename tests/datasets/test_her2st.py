"""The her2st reader on the real sections."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from scipy import sparse

import phg2st_sc as phg2st
from phg2st_sc import DataNotFoundError, MissingImageError, MissingImageWarning

pytestmark = pytest.mark.data


@pytest.mark.parametrize("section", ["C2", "C3", "C4", "C5", "C6"])
def test_sections_with_image(load_her2st, data_dir, section):
    adata = load_her2st(section)
    counts = pd.read_csv(data_dir / "her2st" / "ST-cnts" / f"{section}.tsv.gz", sep="\t", index_col=0)
    spots = pd.read_csv(data_dir / "her2st" / "ST-spotfiles" / f"{section}_selection.tsv", sep="\t")
    # every count spot is kept (the manifest: all are in the spot file), genes in file order
    assert adata.n_obs == len(counts)
    assert list(adata.var_names) == list(counts.columns)
    assert sparse.issparse(adata.X)
    np.testing.assert_array_equal(adata.X.toarray(), counts.loc[adata.obs["spot_id"]].to_numpy())
    # coordinates: obsm['spatial'] is (pixel_x, pixel_y) of the spot file row with the same x, y
    spots.index = spots["x"].astype(str) + "x" + spots["y"].astype(str)
    np.testing.assert_allclose(adata.obsm["spatial"], spots.loc[adata.obs["spot_id"], ["pixel_x", "pixel_y"]])
    np.testing.assert_array_equal(adata.obs["array_col"], spots.loc[adata.obs["spot_id"], "x"])
    np.testing.assert_array_equal(adata.obs["array_row"], spots.loc[adata.obs["spot_id"], "y"])
    assert (adata.obs["section"] == section).all() and (adata.obs["patient"] == "C").all()
    assert adata.obs_names.is_unique and adata.obs_names[0].startswith(f"{section}_")
    info = adata.uns["spatial"][section]
    hires = info["images"]["hires"]
    assert hires.dtype == np.uint8 and max(hires.shape[:2]) == 2000 and hires.shape[2] == 3
    h, w = info["metadata"]["image_shape"]
    assert info["scalefactors"]["tissue_hires_scalef"] == pytest.approx(hires.shape[1] / w, rel=1e-6)
    # 100 µm spots on a 200 µm pitch of ~290 px (MANIFEST: 289-293 px between columns)
    assert 140 < info["scalefactors"]["spot_diameter_fullres"] < 150
    assert 0.66 < info["metadata"]["microns_per_pixel"] < 0.71
    assert (adata.obsm["spatial"] < [w, h]).all()


def test_image_is_read_lazily_and_matches(c2):
    """The full-resolution image stays on disk; read_image returns it and the hires copy agrees with it."""
    full = phg2st.io.read_image(c2)
    assert full.shape == (9911, 9274, 3)
    hires = c2.uns["spatial"]["C2"]["images"]["hires"]
    small = phg2st.io.read_image(c2, max_size=2000)
    assert small.shape == hires.shape
    # tissue under the spots is darker than the slide background in both
    s = c2.uns["spatial"]["C2"]["scalefactors"]["tissue_hires_scalef"]
    xy = np.round(c2.obsm["spatial"] * s).astype(int)
    under = hires[xy[:, 1], xy[:, 0]].mean()
    assert under < hires.mean(axis=(0, 1)).mean() + 1
    assert under < 200


def test_read_image_takes_a_file_path(c2):
    """``io.read_image`` also reads an image file by its path, as it reads a section's image from its AnnData."""
    path = c2.uns["spatial"]["C2"]["metadata"]["source_image_path"]
    by_path = phg2st.io.read_image(path, max_size=500)
    np.testing.assert_array_equal(by_path, phg2st.io.read_image(c2, max_size=500))
    assert by_path.shape[2] == 3 and max(by_path.shape[:2]) == 500


def test_section_without_image_warns_and_fails_later(load_her2st, data_dir):
    with pytest.warns(MissingImageWarning, match="A3"):
        adata = phg2st.datasets.her2st("A3")
    assert adata.n_obs == 359 and adata.uns["spatial"]["A3"]["images"] == {}
    with pytest.raises(MissingImageError, match="A3"):
        phg2st.io.read_image(adata)


def test_app_image_used_for_plotting_only(data_dir):
    with pytest.warns(MissingImageWarning, match="app image"):
        adata = phg2st.datasets.her2st("A1")
    info = adata.uns["spatial"]["A1"]
    assert info["images"]["hires"].shape[1] == 2000
    assert info["scalefactors"]["tissue_hires_scalef"] == pytest.approx(0.28761, abs=1e-5)  # MANIFEST quirk 4
    xy = adata.obsm["spatial"] * info["scalefactors"]["tissue_hires_scalef"]
    assert (xy[:, 0] < 2000).all() and (xy[:, 1] < info["images"]["hires"].shape[0]).all()
    with pytest.raises(MissingImageError):
        phg2st.io.read_image(adata)


def test_all_thirty_sections_load(data_dir):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MissingImageWarning)
        total = 0
        for section in [s for s in phg2st.datasets.HER2ST_SECTIONS if not s.startswith("B")]:
            adata = phg2st.datasets.her2st(section)
            assert adata.n_obs > 100 and 14_000 < adata.n_vars < 16_000
            assert np.isfinite(adata.obsm["spatial"]).all()
            total += adata.n_obs
    assert total == 11_908  # MANIFEST: 11,908 spots over the 30 sections


def test_unknown_section():
    with pytest.raises(ValueError, match="Unknown her2st section 'Z9'"):
        phg2st.datasets.her2st("Z9")


def test_data_dir_without_files(tmp_path):
    with pytest.raises(DataNotFoundError, match="ST-cnts/C2.tsv.gz"):
        phg2st.datasets.her2st("C2", data_dir=tmp_path)


def test_data_dir_forms(data_dir):
    """The her2st folder itself, its parent, or the repository layout (data/ST-cnts) are all accepted."""
    a = phg2st.datasets.her2st("C2", data_dir=data_dir / "her2st")
    b = phg2st.datasets.her2st("C2", data_dir=data_dir)
    assert a.shape == b.shape


def test_repository_layout_and_extra_spots(tmp_path, data_dir):
    """A copy in the git-clone layout (her2st/data/...) whose spot file lists a spot without counts still joins."""
    src = data_dir / "her2st"
    root = tmp_path / "clone" / "data"
    (root / "ST-cnts").mkdir(parents=True)
    (root / "ST-spotfiles").mkdir()
    (root / "ST-cnts" / "C1.tsv.gz").write_bytes((src / "ST-cnts" / "C1.tsv.gz").read_bytes())
    spots = (src / "ST-spotfiles" / "C1_selection.tsv").read_text()
    (root / "ST-spotfiles" / "C1_selection.tsv").write_text(
        spots.rstrip("\n") + "\n40\t40\t40.0\t40.0\t9000.0\t9000.0\t1\n"
    )
    with pytest.warns(MissingImageWarning):
        adata = phg2st.datasets.her2st("C1", data_dir=tmp_path / "clone")
    assert adata.n_obs == 176  # MANIFEST: C1 has 176 spots with counts
    assert "40x40" not in set(adata.obs["spot_id"])


def test_mismatched_files_warn(tmp_path, data_dir):
    """A count table whose spots are mostly absent from the spot file warns that the files may not match."""
    root = tmp_path / "her2st"
    (root / "ST-cnts").mkdir(parents=True)
    (root / "ST-spotfiles").mkdir()
    (root / "ST-cnts" / "C1.tsv.gz").write_bytes((data_dir / "her2st" / "ST-cnts" / "C1.tsv.gz").read_bytes())
    lines = (data_dir / "her2st" / "ST-spotfiles" / "C1_selection.tsv").read_text().splitlines()
    (root / "ST-spotfiles" / "C1_selection.tsv").write_text("\n".join(lines[:50]) + "\n")
    with pytest.warns(UserWarning, match="belong together"):
        adata = phg2st.datasets.her2st("C1", data_dir=tmp_path)
    assert adata.n_obs == 49


def test_download_path_is_checksummed(monkeypatch, tmp_path):
    """Without a local copy the reader fetches the pinned public files with their SHA-256 (pooch mocked)."""
    import pooch

    calls = []

    def fake_retrieve(url, known_hash, fname, path, progressbar):
        calls.append((url, known_hash, fname))
        raise OSError("offline test")

    monkeypatch.setattr(pooch, "retrieve", fake_retrieve)
    monkeypatch.setattr(phg2st.settings, "_data_dir", None)
    monkeypatch.delenv("PHG2ST_DATA_DIR", raising=False)
    monkeypatch.setattr(phg2st.settings, "_cache_dir", tmp_path)
    with pytest.raises(OSError, match="offline test"):
        phg2st.datasets.her2st("C2")
    url, known_hash, fname = calls[0]
    assert url == (
        "https://raw.githubusercontent.com/almaan/her2st/85df7411b987a7dec3feff9718b869a7a82091ec/data/ST-cnts/C2.tsv.gz"
    )
    assert known_hash.startswith("sha256:") and len(known_hash) == 7 + 64
    assert fname == "C2.tsv.gz"


def test_download_refuses_files_without_checksum(monkeypatch, tmp_path):
    monkeypatch.setattr(phg2st.settings, "_data_dir", None)
    monkeypatch.delenv("PHG2ST_DATA_DIR", raising=False)
    monkeypatch.setattr(phg2st.settings, "_cache_dir", tmp_path)
    with pytest.raises(DataNotFoundError, match="verified"):
        phg2st.datasets.her2st("B1")


def test_registry_matches_manifest(data_dir):
    """The shipped checksum registry is the dataset's SHA256SUMS, and the local files match it."""
    import hashlib

    from phg2st_sc.datasets._registry import HER2ST, STUTILITY_MOB

    for ds, folder in ((HER2ST, data_dir / "her2st"), (STUTILITY_MOB, data_dir / "stutility_mob")):
        sums = dict(reversed(line.split(maxsplit=1)) for line in (folder / "SHA256SUMS").read_text().splitlines())
        assert {k.strip(): v for k, v in sums.items()} == ds.sha256
    rel = "ST-cnts/C2.tsv.gz"
    assert hashlib.sha256((data_dir / "her2st" / rel).read_bytes()).hexdigest() == HER2ST.sha256[rel]
