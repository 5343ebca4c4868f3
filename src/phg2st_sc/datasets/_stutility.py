"""Mouse olfactory bulb sections shipped with the STutility R package (legacy ST)."""

from __future__ import annotations

import os

from anndata import AnnData

from phg2st_sc._settings import settings

from ._legacy_st import build_anndata, read_counts, read_spots
from ._registry import STUTILITY_MOB

STUTILITY_MOB_SECTIONS: tuple[str, ...] = ("MOB1", "MOB2", "MOB3", "MOB4")
# Two animals (STutility's metaData.csv): MOB1, MOB2 from the first, MOB3, MOB4 from the second.
_INDIVIDUAL = {"MOB1": "mouse1", "MOB2": "mouse1", "MOB3": "mouse2", "MOB4": "mouse2"}


def stutility_mob(section: str, *, data_dir: str | os.PathLike | None = None) -> AnnData:
    """Read one mouse olfactory bulb section of the STutility example data.

    Bergenstråhle et al., *BMC Genomics* 21, 482 (2020): four legacy-ST sections (two animals), a 1000-gene
    subset of the counts (Ensembl ids with version as ``var_names``), and 1905 x 1905 px H&E images to which
    the spot pixel coordinates refer. Only spots marked as under tissue (``selected == 1``) are kept.

    Parameters
    ----------
    section
        ``"MOB1"`` to ``"MOB4"``.
    data_dir
        Folder with ``MOB<i>.tsv``, ``alignment_table_MOB<i>.tsv`` and ``MOB<i>.jpg`` (or the package layout
        ``inst/extdata/counts/``). Defaults to ``$PHG2ST_DATA_DIR/stutility_mob``; without either, the files are
        downloaded from the STutility repository (pinned commit, SHA-256 verified).

    Returns
    -------
    AnnData with the same slots as :func:`phg2st_sc.datasets.her2st`: ``.X`` raw counts, ``.obs['spot_id']``,
    ``.obs['array_row']``, ``.obs['array_col']``, ``.obs['section']``, ``.obs['patient']`` (the animal),
    ``.obsm['spatial']`` and ``.uns['spatial'][section]``.

    Examples
    --------
    >>> adata = phg2st.datasets.stutility_mob("MOB1")  # doctest: +SKIP
    """
    if section not in STUTILITY_MOB_SECTIONS:
        raise ValueError(f"Unknown STutility section {section!r}; choose one of {list(STUTILITY_MOB_SECTIONS)}.")
    files = [f"{section}.tsv", f"alignment_table_{section}.tsv", f"{section}.jpg"]
    if data_dir is None and settings.data_dir is None:
        root = STUTILITY_MOB.download(files)
    else:
        root = STUTILITY_MOB.locate(files[:2], data_dir)
    image = root / files[2]
    return build_anndata(
        read_counts(root / files[0]),
        read_spots(root / files[1]),
        section=section,
        patient=_INDIVIDUAL[section],
        dataset="stutility_mob",
        image_path=image if image.is_file() else None,
        spot_diameter_um=100.0,
        spot_pitch_um=200.0,
        image_note=f"no image at {image}",
    )
