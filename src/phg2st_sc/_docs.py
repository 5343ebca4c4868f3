"""Parameter and return text shared by many docstrings, written once.

Functions decorated with :func:`inject_docs` write ``{table_key}`` (etc.) in their docstring where the shared
text goes, and double the braces of literal placeholders (``{{layer_added}}``).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import TypeVar

F = TypeVar("F", bound=Callable)

DOCS = {
    "adata": "adata\n    AnnData, or SpatialData with ``table_key``.",
    "table_key": "table_key\n    Table of a SpatialData input; may be omitted when it has a single table.",
    "copy": "copy\n    Return a modified copy instead of writing in place.",
    "overwrite": "overwrite\n    Replace slots of the same name that phg2st-sc did not write (the user's own). Without it such a "
    "collision raises :class:`~phg2st_sc.SlotExistsError`; slots written by phg2st-sc (recorded in "
    "``uns['phg2st_written']``) are always replaced.",
    "returns_copy": "``None``, or the modified copy with ``copy=True``. Writes",
}


def inject_docs(func: F) -> F:
    """Fill the shared text into ``func``'s docstring."""
    func.__doc__ = inspect.cleandoc(func.__doc__).format(**DOCS)
    return func
