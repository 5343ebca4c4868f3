"""Preprocessing: tile embeddings, the spot hypergraph, gene panels and target smoothing.

Normalisation itself is scanpy's (``sc.pp.normalize_total``, ``sc.pp.log1p``); this module adds only what
scanpy lacks.
"""

from ._embed import embed_tiles, neighbour_embeddings
from ._genes import PANELS, panel_genes, select_genes, top_expressed_genes
from ._hypergraph import build_hypergraph
from ._smooth import smooth
from ._virtual import otsu_tissue_mask, virtual_spots

__all__ = [
    "embed_tiles",
    "neighbour_embeddings",
    "build_hypergraph",
    "select_genes",
    "panel_genes",
    "top_expressed_genes",
    "smooth",
    "virtual_spots",
    "otsu_tissue_mask",
    "PANELS",
]
