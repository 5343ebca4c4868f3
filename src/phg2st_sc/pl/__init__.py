"""Plots: genes on the H&E (measured, predicted, error)."""

from ._spatial import spatial

__all__ = ["spatial"]
