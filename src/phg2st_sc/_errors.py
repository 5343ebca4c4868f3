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


class ModelFileError(Phg2stError, ValueError):
    """A model file (or training checkpoint) that cannot be used: unreadable, of another format, or malformed."""


class InputMismatchError(Phg2stError, ValueError):
    """Data that was not prepared the way a model's training data were (normalisation, encoder, tile geometry)."""


class TrainingDivergedError(Phg2stError, RuntimeError):
    """Training produced a non-finite loss or non-finite weights; the message names the setting to lower."""


class TrainingTerminated(SystemExit):
    """Training stopped because the process received SIGTERM (a cluster's time limit, ``kill``); exit code 143.

    A ``SystemExit``: it ends the program unless caught. With ``checkpoint_dir``, ``resume=True`` continues from the
    last complete epoch.
    """


class SlotExistsError(Phg2stError, ValueError):
    """A result would overwrite a slot of the AnnData that phg2st-sc did not write (pass ``overwrite=True``)."""


class MissingImageWarning(UserWarning):
    """A section was loaded without its H&E image."""


class SmoothedTargetWarning(UserWarning):
    """Scores were computed against 3x3-smoothed targets, which flatter spatial interpolation."""
