"""Tools: the PHG2ST model (fit, impute), prompt selection, baselines, metrics and evaluation protocols."""

from phg2st_sc._model._config import ModelConfig

from ._baselines import IMAGE_METHODS, METHODS, baseline
from ._benchmark import METHOD_PRESETS, BenchmarkResult, benchmark, summarise
from ._design import design_prompts
from ._fit import fit, impute
from ._metrics import Scores, gene_metrics, score
from ._prompts import select_prompts
from ._protocol import PROTOCOLS, Protocol, evaluate, get_protocol, prepare_targets

__all__ = [
    "benchmark",
    "BenchmarkResult",
    "METHOD_PRESETS",
    "summarise",
    "fit",
    "ModelConfig",
    "impute",
    "select_prompts",
    "design_prompts",
    "baseline",
    "score",
    "gene_metrics",
    "Scores",
    "evaluate",
    "prepare_targets",
    "Protocol",
    "PROTOCOLS",
    "get_protocol",
    "METHODS",
    "IMAGE_METHODS",
]
