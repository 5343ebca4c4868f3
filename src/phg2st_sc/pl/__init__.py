"""Plots: genes on the H&E (measured, predicted, error), prompt spots, method comparisons, training curves."""

from ._calibration import calibration
from ._metrics import metrics
from ._napari import napari
from ._prompts import prompts
from ._spatial import spatial
from ._training import training_curves

__all__ = ["calibration", "metrics", "napari", "prompts", "spatial", "training_curves"]
