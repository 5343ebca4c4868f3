"""HER2-positive breast cancer sections of Andersson et al. (2021), legacy ST."""

from __future__ import annotations

import os

from anndata import AnnData

from phg2st_sc._settings import settings

from ._legacy_st import build_anndata, read_counts, read_spots
from ._registry import HER2ST

#: Sections of the published dataset: patients A-H; A and B have six sections, C and D six, E-H three.
HER2ST_SECTIONS: tuple[str, ...] = (
    *(f"A{i}" for i in range(1, 7)),
    *(f"B{i}" for i in range(1, 7)),
    *(f"C{i}" for i in range(1, 7)),
    *(f"D{i}" for i in range(1, 7)),
    *(f"{p}{i}" for p in "EFGH" for i in range(1, 4)),
)

# Full-resolution (width, height) of the published H&E JPEGs, from the source repository's app/data/dims.list.
# Used for scale factors when a section's image file is absent.
_IMAGE_SIZES: dict[str, tuple[int, int]] = {
    "A1": (6954, 7435), "A2": (6966, 7441), "A3": (6935, 7437), "A4": (6975, 7424), "A5": (6966, 7419),
    "A6": (6980, 7404), "C1": (9252, 9932), "C2": (9274, 9911), "C3": (9270, 9936), "C4": (9278, 9916),
    "C5": (9272, 9901), "C6": (9288, 9907), "D1": (9275, 9885), "D2": (9277, 9892), "D3": (9297, 9918),
    "D4": (9307, 9881), "D5": (9272, 9900), "D6": (9286, 9885), "E1": (9322, 9922), "E2": (9308, 9862),
    "E3": (9344, 9907), "F1": (9307, 9855), "F2": (9322, 9906), "F3": (9328, 9900), "G1": (9310, 9910),
    "G2": (9326, 9863), "G3": (9309, 9861), "H1": (9301, 9869), "H2": (9314, 9873), "H3": (9319, 9889),
}  # fmt: skip

# The authors' shiny app ships 2000-px-wide, background-darkened copies of two patient-A images.
_APP_IMAGES = {"A1": "app/www/imgs/A1_HE_image_dark.png", "A2": "app/www/imgs/A2_HE_image_dark.png"}

SPOT_DIAMETER_UM = 100.0
SPOT_PITCH_UM = 200.0


def her2st(section: str, *, data_dir: str | os.PathLike | None = None) -> AnnData:
    """Read one section of the HER2-positive breast cancer dataset (her2st).

    Andersson et al., *Nature Communications* 12, 6012 (2021): 36 sections from 8 patients (A-H), legacy
    Spatial Transcriptomics (100 µm spots, 200 µm apart). Reads the published layout ``ST-cnts/<S>.tsv.gz``,
    ``ST-spotfiles/<S>_selection.tsv`` and ``ST-imgs/<patient>/<S>/*.jpg``, joining counts and spots on
    ``"<x>x<y>"`` (inner join: spot files list a few spots removed in QC).

    The full-resolution image stays on disk; a 2000-px copy is kept in ``uns['spatial']`` for plotting, so
    ``sc.pl.spatial`` and ``sq.pl.spatial_scatter`` work unchanged. A section without an image loads with a
    :class:`~phg2st_sc.MissingImageWarning`; for A1 and A2 the authors' derived app image (background darkened)
    is used for plotting only.

    Parameters
    ----------
    section
        Section name, e.g. ``"C2"`` (patient letter, section number).
    data_dir
        Folder with the published layout (the ``her2st`` folder, its ``data/`` sub-folder, or their parent).
        Defaults to ``$PHG2ST_DATA_DIR/her2st``; without either, the files are downloaded from the public
        repository (pinned commit, SHA-256 verified) into ``phg2st.settings.cache_dir``.

    Returns
    -------
    AnnData with

    ``.X``
        Raw UMI counts (sparse, float32), spots x genes; ``var_names`` are gene symbols.
    ``.obs['spot_id']``, ``.obs['array_row']``, ``.obs['array_col']``
        Published spot id ``"<x>x<y>"`` and integer array coordinates (row = y, column = x).
    ``.obs['section']``, ``.obs['patient']``
        Section and patient names.
    ``.obsm['spatial']``
        Spot centres in full-resolution image pixels (x, y).
    ``.uns['spatial'][section]``
        ``images['hires']`` (longer side 2000 px, when an image exists), ``scalefactors``
        (``tissue_hires_scalef``, ``spot_diameter_fullres``) and ``metadata`` (``source_image_path``,
        ``microns_per_pixel``, ``image_shape``).

    Examples
    --------
    >>> import phg2st_sc as phg2st
    >>> adata = phg2st.datasets.her2st("C2")  # doctest: +SKIP
    """
    if section not in HER2ST_SECTIONS:
        raise ValueError(f"Unknown her2st section {section!r}; the dataset has {list(HER2ST_SECTIONS)}.")
    patient = section[0]
    counts_rel, spots_rel = f"ST-cnts/{section}.tsv.gz", f"ST-spotfiles/{section}_selection.tsv"
    image_dir = f"ST-imgs/{patient}/{section}"
    if data_dir is None and settings.data_dir is None:
        # No local copy: download, with the image when its checksum is known.
        image_rels = sorted(p for p in HER2ST.sha256 if p.startswith(image_dir + "/"))
        root = HER2ST.download([counts_rel, spots_rel, *image_rels])
    else:
        root = HER2ST.locate([counts_rel, spots_rel], data_dir)

    images = sorted((root / image_dir).glob("*.jpg")) if (root / image_dir).is_dir() else []
    image_path = images[0] if images else None
    hires_path, hires_scalef, note = None, None, f"no JPEG in {root / image_dir}"
    width_height = _IMAGE_SIZES.get(section)
    if image_path is None and section in _APP_IMAGES and (root / _APP_IMAGES[section]).is_file() and width_height:
        hires_path = root / _APP_IMAGES[section]
        hires_scalef = 2000 / width_height[0]
        note += "; the `hires` image is the authors' app image (background darkened), for plotting only"
    return build_anndata(
        read_counts(root / counts_rel),
        read_spots(root / spots_rel),
        section=section,
        patient=patient,
        dataset="her2st",
        image_path=image_path,
        spot_diameter_um=SPOT_DIAMETER_UM,
        spot_pitch_um=SPOT_PITCH_UM,
        hires_path=hires_path,
        hires_scalef=hires_scalef,
        image_shape=(width_height[1], width_height[0]) if width_height else None,
        image_note=note,
    )
