"""The tutorials: committed executed and clean, and the quickstart re-executed here so a broken tutorial fails CI."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
TUTORIALS = ROOT / "tutorials"


def _execute_module():
    spec = importlib.util.spec_from_file_location("tutorials_execute", TUTORIALS / "execute.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _code_cells(nb):
    return [c for c in nb.cells if c.cell_type == "code"]


@pytest.mark.parametrize("name", _execute_module().TUTORIALS)
def test_committed_with_outputs_and_no_errors(name):
    """Every code cell ran, in order, without an error; the docs render these outputs (no execution there)."""
    import nbformat

    nb = nbformat.read(TUTORIALS / name, as_version=4)
    cells = _code_cells(nb)
    assert cells, f"{name} has no code"
    counts = [c.execution_count for c in cells]
    assert None not in counts, f"{name}: a code cell was not executed"
    assert counts == sorted(counts), f"{name}: cells were executed out of order"
    for cell in cells:
        for out in cell.outputs:
            assert out.output_type != "error", f"{name}: {out.get('ename')}: {out.get('evalue')}"
            assert "Traceback" not in "".join(out.get("text", "")), f"{name}: a traceback in the outputs"
    assert (TUTORIALS / name).stat().st_size < 2_000_000, f"{name} is large: smaller figures, please"


@pytest.mark.parametrize("name", _execute_module().TUTORIALS)
def test_committed_outputs_carry_no_path_of_the_machine_that_ran_them(name):
    """Outputs are rendered in the docs: no absolute path of the executing machine (data, temporary or home
    folders) may be printed in them."""
    import re

    text = (TUTORIALS / name).read_text()
    found = re.findall(r"(?:/tmp/|/home/|/root/|/Users/|/work/|[A-Z]:\\\\Users)[^\s\"']{0,60}", text)
    assert not found, f"{name} prints machine paths: {found[:3]}"


def test_tutorials_are_in_the_docs():
    index = (ROOT / "docs" / "index.md").read_text()
    for name in _execute_module().TUTORIALS:
        assert f"tutorials/{Path(name).stem}" in index


@pytest.mark.data
@pytest.mark.slow
def test_quickstart_executes(tmp_path, monkeypatch, embedding_cache):
    """Re-run the quickstart on the real data in a fresh kernel (a copy; the committed file is not touched)."""
    import shutil

    monkeypatch.setenv("PHG2ST_CACHE_DIR", str(embedding_cache))  # tiles the demo test embedded are reused

    copy = tmp_path / "quickstart.ipynb"
    shutil.copy(TUTORIALS / "quickstart.ipynb", copy)
    nb = _execute_module().execute(copy, timeout=1200, write=False)
    outputs = "".join(
        out.get("text", "") + str(out.get("data", {}).get("text/plain", ""))
        for c in _code_cells(nb)
        for out in c.outputs
    )
    assert "phg2st" in outputs and "stack" in outputs  # the score table of every method was printed
    images = sum("image/jpeg" in out.get("data", {}) or "image/png" in out.get("data", {}) for c in _code_cells(nb)
                 for out in c.outputs)  # fmt: skip
    assert images >= 5  # spatial plots, prompts, training curves, metrics
