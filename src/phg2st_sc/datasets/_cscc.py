"""Cutaneous squamous cell carcinoma sections of Ji et al. (2020), GEO GSE144240, legacy ST."""

from __future__ import annotations

import os
from pathlib import Path

from anndata import AnnData

from phg2st_sc._errors import DataNotFoundError
from phg2st_sc._settings import DATA_DIR_ENV, settings

from ._legacy_st import build_anndata, read_counts, read_spots
from ._registry import CSCC

CSCC_SECTIONS: tuple[str, ...] = tuple(f"{p}_ST_rep{r}" for p in ("P2", "P5", "P9", "P10") for r in (1, 2, 3))
GEO_URL = "https://www.ncbi.nlm.nih.gov/geo/query/acc.cgi?acc=GSE144240"


def _find(root: Path, patterns: list[str]) -> Path | None:
    for pattern in patterns:
        hits = sorted(root.glob(pattern))
        if hits:
            return hits[0]
    return None


def cscc(
    section: str,
    *,
    data_dir: str | os.PathLike | None = None,
    spot_diameter_um: float = 100.0,
    spot_pitch_um: float = 200.0,
) -> AnnData:
    """Read one cutaneous squamous cell carcinoma section of Ji et al. (2020) in its GEO layout.

    Ji et al., *Cell* 182, 497-514 (2020), GEO GSE144240: 12 legacy-ST sections (patients P2, P5, P9, P10,
    three replicates each). Reads the GEO supplementary files ``<GSM>_<section>_stdata.tsv.gz`` (spots x genes),
    ``<GSM>_spot_data-selection-<section>.tsv.gz`` (spot coordinates) and ``<GSM>_<section>.jpg``; the GSM prefix
    is optional and the files may be uncompressed. There is no checksummed mirror, so nothing is downloaded:
    fetch the files from GEO (GSE144239) and point ``data_dir`` at them.

    Parameters
    ----------
    section
        For example ``"P2_ST_rep1"``.
    data_dir
        Folder with the GEO files (or its parent holding ``cscc/``). Defaults to ``$PHG2ST_DATA_DIR/cscc``.
    spot_diameter_um, spot_pitch_um
        Spot size and centre-to-centre distance of the array, used for ``spot_diameter_fullres`` and the
        microns per pixel. The defaults are those of the original ST arrays; pass your array's values.

    Returns
    -------
    AnnData with the same slots as :func:`phg2st_sc.datasets.her2st`; ``.obs['patient']`` is ``"P2"`` etc.

    Examples
    --------
    >>> adata = phg2st.datasets.cscc("P2_ST_rep1", data_dir="GSE144240_RAW")  # doctest: +SKIP
    """
    if section not in CSCC_SECTIONS:
        raise ValueError(f"Unknown cSCC section {section!r}; choose one of {list(CSCC_SECTIONS)}.")
    if data_dir is None:
        if settings.data_dir is None:
            raise DataNotFoundError(
                f"No local copy of the cSCC data: download the GSE144239 supplementary files from GEO ({GEO_URL}) "
                f"and pass `data_dir=` or set ${DATA_DIR_ENV} (files under $PHG2ST_DATA_DIR/cscc)."
            )
        data_dir = settings.data_dir / CSCC.name
    folder = Path(data_dir).expanduser()
    counts = spots = image = None
    for root in [*CSCC._roots(folder), *CSCC._roots(folder / CSCC.name)]:
        if not root.is_dir():
            continue
        counts = _find(root, [f"*_{section}_stdata.tsv*", f"{section}_stdata.tsv*"])
        spots = _find(root, [f"*spot_data-selection-{section}.tsv*"])
        image = _find(root, [f"*_{section}.jpg", f"{section}.jpg"])
        if counts is not None and spots is not None:
            break
    if counts is None or spots is None:
        raise DataNotFoundError(
            f"cSCC section {section}: expected `*_{section}_stdata.tsv.gz` and `*spot_data-selection-{section}.tsv.gz` "
            f"in {folder} (GEO {GEO_URL})."
        )
    return build_anndata(
        read_counts(counts),
        read_spots(spots),
        section=section,
        patient=section.split("_")[0],
        dataset="cscc",
        image_path=image,
        spot_diameter_um=spot_diameter_um,
        spot_pitch_um=spot_pitch_um,
        image_note=f"no `*_{section}.jpg` in {counts.parent}",
    )
