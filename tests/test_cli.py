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


def test_benchmark_command_on_h5ad_files(tmp_path, capsys):
    """`phg2st benchmark` on section files: methods from a JSON file, results and protocol written, rerun resumes."""
    import json

    import phg2st_sc as phg2st

    paths = []
    for s in range(3):
        a = phg2st.datasets.synthetic(80, 6, n_features=4, grid_size=0, seed=s, section=f"S{s}")
        del a.uns["X_synthetic"]  # h5ad-friendly: no tile arrays needed here
        paths.append(str(tmp_path / f"S{s}.h5ad"))
        a.write_h5ad(paths[-1])
    methods = tmp_path / "methods.json"
    methods.write_text(json.dumps({"idw k=3": {"method": "idw", "k": 3}, "mean": {"method": "mean"}}))
    out = tmp_path / "res"
    args = ["benchmark", *paths, "--out", str(out), "--folds", "leave_one_section_out", "--seeds", "0", "1",
            "--protocols", "heldout", "--spots", "heldout", "--methods-file", str(methods)]  # fmt: skip
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "idw k=3" in printed and "folds" in printed
    table = pd.read_csv(out / "results.csv")
    assert len(table) == 3 * 2 * 2 and set(table["method"]) == {"idw k=3", "mean"}
    assert json.loads((out / "protocol.json").read_text())["methods"]["idw k=3"] == {"method": "idw", "k": 3}
    assert sorted(p.name for p in out.glob("fold_*.csv")) == ["fold_S0.csv", "fold_S1.csv", "fold_S2.csv"]
    assert main([*args, "--fit", "not-a-pair"]) == 1
    assert "KEY=VALUE" in capsys.readouterr().err
    assert main(["benchmark", *paths, "--out", str(out), "--methods", "nope"]) == 1
