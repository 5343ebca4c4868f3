"""phg2st-sc: prompt-guided prediction of spatial gene expression from H&E (PHG2ST) for scverse."""

from importlib.metadata import PackageNotFoundError, version

from . import datasets, io, pl, pp, tl
from ._errors import (
    DataNotFoundError,
    InputMismatchError,
    InsufficientMemoryError,
    MissingImageError,
    MissingImageWarning,
    ModelFileError,
    Phg2stError,
    SlotExistsError,
    SmoothedTargetWarning,
    TrainingDivergedError,
    TrainingTerminated,
)
from ._settings import Settings, settings


def __getattr__(name: str):
    # The model class imports torch: load it on first use, so that `import phg2st_sc` stays light.
    if name == "PHG2ST":
        from ._model._model import PHG2ST

        return PHG2ST
    raise AttributeError(f"module 'phg2st_sc' has no attribute {name!r}")


try:
    __version__ = version("phg2st-sc")
except PackageNotFoundError:  # pragma: no cover - running from a source tree without installation
    __version__ = "0+unknown"

__all__ = [
    "PHG2ST",
    "datasets",
    "io",
    "pl",
    "pp",
    "tl",
    "settings",
    "Settings",
    "Phg2stError",
    "DataNotFoundError",
    "InsufficientMemoryError",
    "MissingImageError",
    "ModelFileError",
    "InputMismatchError",
    "TrainingDivergedError",
    "TrainingTerminated",
    "SlotExistsError",
    "MissingImageWarning",
    "SmoothedTargetWarning",
]
