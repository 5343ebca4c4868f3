"""The STutility mouse olfactory bulb reader on the real sections."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import phg2st_sc as phg2st

pytestmark = pytest.mark.data

SELECTED = {"MOB1": 379, "MOB2": 407, "MOB3": 438, "MOB4": 403}  # MANIFEST: spots under tissue


@pytest.mark.parametrize("section", list(SELECTED))
def test_mob_sections(load_mob, data_dir, section):
    adata = load_mob(section)
    assert adata.n_obs == SELECTED[section]
    assert adata.n_vars == 1000 and adata.var_names[0].startswith("ENSMUSG")
    root = data_dir / "stutility_mob" / "inst" / "extdata" / "counts"
    counts = pd.read_csv(root / f"{section}.tsv", sep="\t", index_col=0)
    np.testing.assert_array_equal(adata.X.toarray(), counts.loc[adata.obs["spot_id"]].to_numpy())
    info = adata.uns["spatial"][section]
    assert info["images"]["hires"].shape == (1905, 1905, 3)
    assert info["scalefactors"]["tissue_hires_scalef"] == 1.0
    assert adata.obs["patient"].iloc[0] == ("mouse1" if section in ("MOB1", "MOB2") else "mouse2")
    # spots fall on tissue: darker than the slide background on average
    xy = np.round(adata.obsm["spatial"]).astype(int)
    img = info["images"]["hires"].astype(float)
    assert img[xy[:, 1], xy[:, 0]].mean() < img.mean() - 5


def test_unknown_mob_section():
    with pytest.raises(ValueError, match="MOB1"):
        phg2st.datasets.stutility_mob("MOB9")


def test_flat_folder(tmp_path, data_dir):
    root = data_dir / "stutility_mob" / "inst" / "extdata" / "counts"
    for name in ("MOB2.tsv", "alignment_table_MOB2.tsv"):
        (tmp_path / name).write_bytes((root / name).read_bytes())
    with pytest.warns(phg2st.MissingImageWarning):
        adata = phg2st.datasets.stutility_mob("MOB2", data_dir=tmp_path)
    assert adata.n_obs == SELECTED["MOB2"]
