"""Reader for the legacy Spatial Transcriptomics file layout shared by her2st, STutility and the cSCC data.

A section is a count table (spots x genes, spot ids ``"<x>x<y>"``), a spot table with the header
``x y new_x new_y pixel_x pixel_y selected`` (array and full-resolution pixel coordinates), and optionally an
H&E image whose pixels ``pixel_x``/``pixel_y`` refer to.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from anndata import AnnData
from scipy import sparse

from phg2st_sc._constants import Keys
from phg2st_sc._errors import MissingImageWarning
from phg2st_sc._image import HIRES_MAX_SIZE, image_size, read_downscaled

logger = logging.getLogger("phg2st_sc")

SPOT_COLUMNS = ("x", "y", "pixel_x", "pixel_y")


def read_counts(path: Path) -> pd.DataFrame:
    """Read a spots x genes count table whose first column holds the spot ids."""
    counts = pd.read_csv(path, sep="\t", index_col=0)
    counts.index = counts.index.astype(str)
    counts.columns = counts.columns.astype(str)
    non_numeric = [c for c, t in counts.dtypes.items() if not pd.api.types.is_numeric_dtype(t)]
    if non_numeric:
        raise ValueError(f"{path}: columns {non_numeric[:5]} are not numeric; is this a spots x genes count table?")
    return counts


def read_spots(path: Path) -> pd.DataFrame:
    """Read a spot table and index it by the ``"<x>x<y>"`` spot id of the count table."""
    spots = pd.read_csv(path, sep="\t")
    missing = [c for c in SPOT_COLUMNS if c not in spots.columns]
    if missing:
        raise ValueError(f"{path}: the spot table lacks columns {missing} (has {list(spots.columns)}).")
    ix = np.round(spots["x"].to_numpy(dtype=float)).astype(int)
    iy = np.round(spots["y"].to_numpy(dtype=float)).astype(int)
    spots = spots.assign(_ix=ix, _iy=iy)
    spots.index = pd.Index([f"{a}x{b}" for a, b in zip(ix, iy, strict=True)], name=None)
    if spots.index.duplicated().any():
        dup = spots.index[spots.index.duplicated()].unique()[:5].tolist()
        raise ValueError(f"{path}: several rows share the spot ids {dup}.")
    return spots


def array_pitch(array_xy: np.ndarray, pixel_xy: np.ndarray) -> float:
    """Pixels per array step, from an affine fit of pixel on array coordinates (nan if underdetermined)."""
    if len(array_xy) < 3:
        return float("nan")
    design = np.column_stack([array_xy, np.ones(len(array_xy))])
    if np.linalg.matrix_rank(design) < 3:
        return float("nan")
    coef, *_ = np.linalg.lstsq(design, pixel_xy, rcond=None)
    return float(np.sqrt(abs(np.linalg.det(coef[:2, :2]))))


def _under_tissue(counts: pd.DataFrame, spots: pd.DataFrame, section: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The spots of both tables that are under tissue, in the count table's order (drops logged or warned)."""
    no_spot = counts.index.difference(spots.index)
    if len(no_spot):
        # A few unaligned array positions are normal (STutility's tables); many point at mismatched files.
        message = (
            f"{section}: {len(no_spot)} of {len(counts)} spots of the count table have no row in the spot table "
            f"and were dropped (e.g. {no_spot[:3].tolist()})."
        )
        if len(no_spot) > 0.05 * len(counts):
            warnings.warn(message + " Do the count and spot files belong together?", UserWarning, stacklevel=4)
        else:
            logger.info(message)
    keep = counts.index.intersection(spots.index, sort=False)
    dropped = len(spots) - len(keep)
    if dropped:
        logger.info(
            "%s: %d spots of the spot table have no counts (removed in QC); using the inner join.", section, dropped
        )
    if "selected" in spots.columns:
        under_tissue = spots.loc[keep, "selected"].astype(int).to_numpy() == 1
        if (~under_tissue).any():
            logger.info(
                "%s: keeping the %d spots selected as under tissue of %d.", section, under_tissue.sum(), len(keep)
            )
        keep = keep[under_tissue]
    if len(keep) == 0:
        raise ValueError(f"{section}: no spot under tissue matches between the count table and the spot table.")
    counts = counts.loc[keep]
    spots = spots.loc[keep]
    return counts, spots


def _raw_counts(counts: pd.DataFrame, section: str) -> np.ndarray:
    """The count table's values, refused unless finite, non-negative integers."""
    values = counts.to_numpy(dtype=np.float64)
    if not np.isfinite(values).all():
        raise ValueError(
            f"{section}: the count table has {int((~np.isfinite(values)).sum())} missing values (empty cells, NaN or "
            "infinite); is the file complete? Download it again or check how it was written."
        )
    if (values < 0).any():
        raise ValueError(f"{section}: the count table has negative values; raw UMI counts are expected.")
    if not np.array_equal(values, np.round(values)):
        example = values[values != np.round(values)][0]
        raise ValueError(
            f"{section}: the count table is not integer (e.g. {example}); raw UMI counts are expected, not "
            "normalised values. Point the reader at the published count files."
        )
    return values


def build_anndata(
    counts: pd.DataFrame,
    spots: pd.DataFrame,
    *,
    section: str,
    patient: str,
    dataset: str,
    image_path: Path | None,
    spot_diameter_um: float,
    spot_pitch_um: float,
    hires_path: Path | None = None,
    hires_scalef: float | None = None,
    image_shape: tuple[int, int] | None = None,
    image_note: str = "",
) -> AnnData:
    """Join a count table and a spot table into an AnnData with the scanpy/squidpy image convention.

    Parameters
    ----------
    image_path
        Full-resolution H&E image; ``pixel_x``/``pixel_y`` are its pixels. Its downscaled copy becomes ``hires``.
    hires_path, hires_scalef
        A stand-in low-resolution image (and its scale from full-resolution pixels) when the full image is absent.
    image_shape
        (height, width) of the full-resolution image when the file is absent, for the scale factors.
    """
    counts, spots = _under_tissue(counts, spots, section)
    keep = counts.index
    values = _raw_counts(counts, section)
    X = sparse.csr_matrix(values.astype(np.float32))

    obs = pd.DataFrame(
        {
            Keys.SPOT_ID: pd.Index(keep, dtype=str),
            Keys.ARRAY_ROW: spots["_iy"].to_numpy(),
            Keys.ARRAY_COL: spots["_ix"].to_numpy(),
            Keys.SECTION: pd.Categorical([section] * len(keep)),
            Keys.PATIENT: pd.Categorical([patient] * len(keep)),
        },
        index=pd.Index([f"{section}_{s}" for s in keep], dtype=str),
    )
    var = pd.DataFrame(index=pd.Index(counts.columns, dtype=str))
    adata = AnnData(X=X, obs=obs, var=var)
    if not adata.var_names.is_unique:
        n_dup = int(adata.var_names.duplicated().sum())
        warnings.warn(f"{section}: {n_dup} duplicated gene names were made unique.", UserWarning, stacklevel=3)
        adata.var_names_make_unique()

    pixel = spots[["pixel_x", "pixel_y"]].to_numpy(dtype=np.float64)
    adata.obsm[Keys.SPATIAL] = pixel
    array_xy = spots[["x", "y"]].to_numpy(dtype=np.float64)
    pitch = array_pitch(array_xy, pixel)

    images: dict[str, np.ndarray] = {}
    meta: dict[str, object] = {"dataset": dataset, "platform": "ST", "spot_pitch_px": pitch}
    if np.isfinite(pitch):
        meta[Keys.MPP] = spot_pitch_um / pitch
    if image_path is not None:
        hires, scalef = read_downscaled(image_path, HIRES_MAX_SIZE)
        width, height = image_size(image_path)
        images[Keys.HIRES] = hires
        meta[Keys.IMAGE_PATH] = str(Path(image_path).resolve())
        meta[Keys.IMAGE_SHAPE] = np.array([height, width])
        outside = (pixel[:, 0] < 0) | (pixel[:, 1] < 0) | (pixel[:, 0] >= width) | (pixel[:, 1] >= height)
        if outside.any():
            warnings.warn(
                f"{section}: {int(outside.sum())} spots lie outside the {width} x {height} image.",
                UserWarning,
                stacklevel=3,
            )
    else:
        if hires_path is not None and hires_scalef is not None:
            # A stand-in image is kept at its own size: `hires_scalef` refers to it as it is.
            images[Keys.HIRES], _ = read_downscaled(hires_path, max(image_size(hires_path)))
            scalef = hires_scalef
        elif image_shape is not None:
            scalef = HIRES_MAX_SIZE / max(image_shape)
        else:
            scalef = 1.0
        if image_shape is not None:
            meta[Keys.IMAGE_SHAPE] = np.array(image_shape)
        meta[Keys.IMAGE_NOTE] = image_note or "no H&E image was found for this section"
        warnings.warn(
            f"{section}: loaded without its full-resolution H&E image ({meta[Keys.IMAGE_NOTE]}). Counts and "
            "coordinates are complete; steps that need the image (tiles, image features) will fail.",
            MissingImageWarning,
            stacklevel=3,
        )
    diameter = spot_diameter_um / spot_pitch_um * pitch if np.isfinite(pitch) else float("nan")
    adata.uns[Keys.SPATIAL] = {
        section: {
            Keys.IMAGES: images,
            Keys.SCALEFACTORS: {Keys.HIRES_SCALEF: float(scalef), Keys.SPOT_DIAMETER: float(diameter)},
            Keys.METADATA: meta,
        }
    }
    return adata
