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
    """The whole demo path on the real sections, with 2 epochs and one prompt seed to keep the suite short."""
    assert main(["demo", "--out", str(tmp_path), "--seeds", "0", "--epochs", "2"]) == 0
    out = capsys.readouterr().out
    assert "Protocol 'heldout'" in out and "Protocol 'heldout_smoothed'" in out and "NOTE" in out
    assert "shared neighbour tiles" in out and "trained 'propagated'" in out and "trained 'paper'" in out
    table = pd.read_csv(tmp_path / "her2st_C2_phg2st.csv")
    expected = {"PHG2ST propagated", "PHG2ST paper", "mean", "idw", "gp", "feature_knn", "ridge", "stack"}
    assert set(table["method"]) == expected and set(table["protocol"]) == {"heldout", "heldout_smoothed"}
    assert table["pcc"].notna().all() and (table["n_spots"] == 168).all()
    assert (tmp_path / "her2st_C2_genes.png").stat().st_size > 10_000
    assert main(["demo", "--section", "A1", "--out", str(tmp_path)]) == 1  # only sections with images


def test_demo_failure_exit_code(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("PHG2ST_DATA_DIR", str(tmp_path))
    assert main(["demo", "--out", str(tmp_path / "o")]) == 1
    assert "error" in capsys.readouterr().err
