"""The `phg2st` command and the demo it runs."""

from __future__ import annotations

import pandas as pd
import pytest

from phg2st_sc.cli import main


def test_help(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    assert "demo" in capsys.readouterr().out


@pytest.mark.data
def test_demo_runs_on_real_data(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path), "--seeds", "0", "1"]) == 0
    out = capsys.readouterr().out
    assert "Protocol 'heldout'" in out and "Protocol 'heldout_smoothed'" in out and "NOTE" in out
    table = pd.read_csv(tmp_path / "her2st_C2_baselines.csv")
    assert set(table["method"]) == {"mean", "idw", "gp", "feature_knn", "ridge", "stack"} and set(table["seed"]) == {
        0,
        1,
    }
    assert "shared neighbour tiles" in out and "hyperedges of 5 spots" in out
    assert (tmp_path / "her2st_C2_genes.png").stat().st_size > 10_000


def test_demo_failure_exit_code(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("PHG2ST_DATA_DIR", str(tmp_path))
    assert main(["demo", "--out", str(tmp_path / "o")]) == 1
    assert "error" in capsys.readouterr().err
