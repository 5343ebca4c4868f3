"""phg2st-sc: prompt-guided prediction of spatial gene expression from H&E (PHG2ST) for scverse."""

from importlib.metadata import PackageNotFoundError, version

from . import datasets, io, pl, pp, tl
from ._errors import (
    DataNotFoundError,
    MissingImageError,
    MissingImageWarning,
    Phg2stError,
    SmoothedTargetWarning,
)
from ._settings import Settings, settings

try:
    __version__ = version("phg2st-sc")
except PackageNotFoundError:  # pragma: no cover - running from a source tree without installation
    __version__ = "0+unknown"

__all__ = [
    "datasets",
    "io",
    "pl",
    "pp",
    "tl",
    "settings",
    "Settings",
    "Phg2stError",
    "DataNotFoundError",
    "MissingImageError",
    "MissingImageWarning",
    "SmoothedTargetWarning",
]
