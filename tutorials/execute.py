"""Execute tutorials in place (as committed, with outputs): ``python tutorials/execute.py [NAME.ipynb ...]``.

Runs each notebook top to bottom in a fresh kernel of this Python, from the ``tutorials`` folder, and writes it
back with its outputs. Needs ``$PHG2ST_DATA_DIR`` (the real data) and, for the napari tutorial, a display (run it
under ``xvfb-run -a`` on a machine without one). The test suite calls :func:`execute` on the quickstart.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

HERE = Path(__file__).parent
TUTORIALS = ("quickstart.ipynb", "spatialdata_squidpy.ipynb", "napari.ipynb", "own_data.ipynb", "prompt_design.ipynb")


def execute(path: str | Path, *, timeout: int = 1800, write: bool = True):
    """Run the notebook at ``path``; return the executed notebook (written back when ``write``)."""
    import nbformat
    from nbclient import NotebookClient

    path = Path(path)
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(
        nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}
    )
    backend = os.environ.pop("MPLBACKEND", None)  # `agg` (tests, make) would keep the figures out of the notebook
    try:
        client.execute()
    finally:
        if backend is not None:
            os.environ["MPLBACKEND"] = backend
    if write:
        nbformat.write(nb, path)
    return nb


if __name__ == "__main__":
    for name in sys.argv[1:] or TUTORIALS:
        start = time.perf_counter()
        execute(HERE / name)
        print(f"{name}: executed in {time.perf_counter() - start:.0f} s", flush=True)
