"""Exceptions and warnings raised by phg2st-sc."""

from __future__ import annotations


class Phg2stError(Exception):
    """Base class of the package's own errors."""


class DataNotFoundError(Phg2stError, FileNotFoundError):
    """Expected data files are not where they were looked for."""


class MissingImageError(Phg2stError, FileNotFoundError):
    """A step needs the full-resolution H&E image of a section, which is not available."""


class InsufficientMemoryError(Phg2stError, MemoryError):
    """A step would need more memory than the machine has available; the message says which setting lowers it."""


class MissingImageWarning(UserWarning):
    """A section was loaded without its H&E image."""


class SmoothedTargetWarning(UserWarning):
    """Scores were computed against 3x3-smoothed targets, which flatter spatial interpolation."""
