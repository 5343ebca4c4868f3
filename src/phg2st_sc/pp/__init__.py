"""Preprocessing: gene panels and target smoothing.

Normalisation itself is scanpy's (``sc.pp.normalize_total``, ``sc.pp.log1p``); this module adds only what
scanpy lacks.
"""

from ._genes import PANELS, panel_genes, select_genes, top_expressed_genes
from ._smooth import smooth

__all__ = ["select_genes", "panel_genes", "top_expressed_genes", "smooth", "PANELS"]
