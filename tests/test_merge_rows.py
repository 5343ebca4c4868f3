"""benchmarks/merge_rows.py, which merged a rerun's rows into the published results folders."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

SCRIPT = Path(__file__).parents[1] / "benchmarks" / "merge_rows.py"


@pytest.fixture(scope="module")
def merge_rows():
    spec = importlib.util.spec_from_file_location("merge_rows", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _rows(methods, fractions, value, seeds=(0, 1)):
    rows = []
    for fold in ("A", "B"):
        for frac in fractions:
            for seed in seeds:
                for m in methods:
                    for spots in ("heldout", "all"):
                        rows.append({"fold": fold, "section": fold, "protocol": "heldout", "prompt_fraction": frac,
                                     "seed": seed, "method": m, "spots": spots, "mae": value[m], "ccc": value[m],
                                     "pcc": value[m], "n_genes": 5, "n_genes_skipped": 0, "n_spots": 10})  # fmt: skip
    return pd.DataFrame(rows)


def _folder(path: Path, table: pd.DataFrame) -> Path:
    path.mkdir()
    table.to_csv(path / "results.csv", index=False)
    (path / "protocol.json").write_text(json.dumps({"dataset": "x"}))
    return path


def test_the_newer_runs_methods_replace_theirs_and_nothing_else(merge_rows, tmp_path):
    old = _folder(tmp_path / "results", _rows(["idw", "ours"], [0.1], {"idw": 0.1, "ours": 0.2}))
    # the newer run: only "ours", on more fractions, with a new column
    fresh = _rows(["ours"], [0.1, 0.2], {"ours": 0.3}).assign(layer_scale=1.5)
    new = _folder(tmp_path / "new", fresh)
    out = merge_rows.merge(old, new, "a note")
    assert len(out) == 2 * 2 * 2 * 2  # the old draws only (fraction 0.2 is not taken), both methods
    assert set(out.prompt_fraction) == {0.1}
    assert np.allclose(out[out.method == "idw"].pcc, 0.1) and out[out.method == "idw"].layer_scale.isna().all()
    assert np.allclose(out[out.method == "ours"].pcc, 0.3) and (out[out.method == "ours"].layer_scale == 1.5).all()
    written = pd.read_csv(old / "results.csv")
    pd.testing.assert_frame_equal(written, out.reset_index(drop=True), check_dtype=False)
    assert {p.name for p in old.glob("fold_*.csv")} == {"fold_A.csv", "fold_B.csv"}
    summary = pd.read_csv(old / "summary.csv")
    assert summary[summary.method == "ours"].pcc_mean.round(6).tolist() == [0.3, 0.3]
    merged = json.loads((old / "protocol.json").read_text())["merged"]
    assert merged.startswith("a note") and "rows of ours from the newer run" in merged


def test_a_newer_run_missing_a_draw_writes_nothing(merge_rows, tmp_path):
    old = _folder(tmp_path / "results", _rows(["idw", "ours"], [0.1], {"idw": 0.1, "ours": 0.2}))
    before = {p.name: p.read_bytes() for p in old.iterdir()}
    new = _folder(tmp_path / "new", _rows(["ours"], [0.1], {"ours": 0.3}, seeds=(0,)))  # seed 1 missing
    with pytest.raises(SystemExit, match="draws of ours"):
        merge_rows.merge(old, new, "a note")
    assert {p.name: p.read_bytes() for p in old.iterdir()} == before
