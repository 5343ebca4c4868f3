"""Readers of public spatial transcriptomics datasets (local copy, ``$PHG2ST_DATA_DIR`` or verified download)."""

from ._cscc import CSCC_SECTIONS, cscc
from ._her2st import HER2ST_SECTIONS, her2st
from ._stutility import STUTILITY_MOB_SECTIONS, stutility_mob
from ._synthetic import synthetic

__all__ = ["her2st", "stutility_mob", "cscc", "synthetic", "HER2ST_SECTIONS", "STUTILITY_MOB_SECTIONS", "CSCC_SECTIONS"]
