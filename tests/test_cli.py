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
def test_demo_runs_on_real_data(tmp_path, capsys, embedding_cache):
    """The whole demo path on the real sections, with 2 epochs and one prompt seed to keep the suite short."""
    args = [
        "demo",
        "--out",
        str(tmp_path),
        "--seeds",
        "0",
        "--epochs",
        "2",
        "--cache-dir",
        str(embedding_cache / "embeddings"),
    ]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "Protocol 'heldout'" in out and "Protocol 'heldout_smoothed'" in out and "NOTE" in out
    assert "shared neighbour tiles" in out and "trained 'propagated'" in out and "trained 'paper'" in out
    assert "trained 'adaptive'" in out
    table = pd.read_csv(tmp_path / "her2st_C2_phg2st.csv")
    expected = {"PHG2ST adaptive", "PHG2ST propagated", "PHG2ST paper", "mean", "idw", "gp", "feature_knn", "ridge",
                "stack"}  # fmt: skip
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
    protocol = json.loads((out / "protocol.json").read_text())
    assert protocol["methods"]["idw k=3"] == {"method": "idw", "k": 3}
    assert protocol["embed_kwargs"]["cache_dir"] == "embedding_cache"  # the default: inside the results folder
    assert sorted(p.name for p in out.glob("fold_*.csv")) == ["fold_S0.csv", "fold_S1.csv", "fold_S2.csv"]
    with pytest.raises(SystemExit) as exit_:  # a bad argument: a usage error, before any work (exit 2)
        main([*args, "--fit", "not-a-pair"])
    assert exit_.value.code == 2 and "KEY=VALUE" in capsys.readouterr().err
    assert main(["benchmark", *paths, "--out", str(out), "--methods", "nope"]) == 1
    # a shared embedding cache elsewhere (recorded by name only); the run into the same folder resumes: its folds
    # are read back, not computed again
    before = {p.name: p.read_bytes() for p in out.glob("fold_*.csv")}
    assert main([*args, "--cache-dir", str(tmp_path / "shared_tiles")]) == 0
    assert json.loads((out / "protocol.json").read_text())["embed_kwargs"]["cache_dir"] == (
        "<outside the results folder: shared_tiles>")  # fmt: skip
    assert {p.name: p.read_bytes() for p in out.glob("fold_*.csv")} == before
    # a cache folder inside a new results folder is not made before the run (the folder would look not new)
    inside = tmp_path / "res2"
    fresh = [str(inside) if a == str(out) else a for a in args]
    assert main([*fresh, "--cache-dir", str(inside / "tiles")]) == 0 and (inside / "results.csv").is_file()


# -- phg2st embed / fit / impute ---------------------------------------------------------------------------------

SMALL_FIT = ["--use-rep", "X_synthetic", "--max-epochs", "2", "--hidden", "16", "--accelerator", "cpu",
             "--no-progress", "--fit", "heads=2", "spot_depth=1", "neighbour_depth=1"]  # fmt: skip


def _refuse(*args, **kwargs):
    raise AssertionError("a finished output was computed again")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Four embedded synthetic sections (raw counts) as .h5ad files and a model trained by `phg2st fit` on two."""
    import phg2st_sc as phg2st

    folder = tmp_path_factory.mktemp("batch")
    paths = []
    for s in range(4):
        a = phg2st.datasets.synthetic(80, 6, n_features=4, grid_size=3, seed=s, section=f"S{s}")
        phg2st.pp.build_hypergraph(a, use_rep="X_synthetic")
        paths.append(str(folder / f"S{s}.h5ad"))
        a.write_h5ad(paths[-1])
    model = folder / "model.pt"
    assert main(["fit", *paths[:2], "--out", str(model), *SMALL_FIT]) == 0
    return paths, model


@pytest.mark.parametrize("command", ["embed", "fit", "impute"])
def test_batch_command_help(command, capsys):
    with pytest.raises(SystemExit) as exc:
        main([command, "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "--overwrite" in out and "--no-progress" in out and "Exit codes" in out


def test_batch_choices_match_the_library():
    import phg2st_sc as phg2st
    from phg2st_sc import cli
    from phg2st_sc._model._encoders import ENCODERS

    assert set(cli.ENCODERS) == set(ENCODERS) and set(cli.PROTOCOL_NAMES) == set(phg2st.tl.PROTOCOLS)


@pytest.mark.parametrize(
    "args",
    [
        ["impute", "a/S.h5ad", "b/S.h5ad", "--model", "m.pt", "--out-dir", "o"],  # two outputs would collide
        ["impute", "S.h5ad", "--model", "m.pt", "--out-dir", "o", "--prompt-key", "p", "--prompt-fraction", "0.2"],
        ["fit", "S.h5ad", "--panel", "her2st_785", "--genes", "g.txt", "--out", "m.pt"],
        ["embed", "S.h5ad"],  # no --out-dir
    ],
)
def test_batch_bad_arguments_exit_2(args, capsys):
    with pytest.raises(SystemExit) as exc:
        main(args)
    assert exc.value.code == 2
    assert "error" in capsys.readouterr().err


def test_atomic_path_files_and_directories(tmp_path):
    from phg2st_sc._utils import atomic_path

    target = tmp_path / "out.txt"
    with atomic_path(target) as tmp:
        assert tmp.name == "out.txt" and tmp.parent != tmp_path
        tmp.write_text("new")
    assert target.read_text() == "new"
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("interrupted")
    assert target.read_text() == "new"
    store = tmp_path / "s.zarr"
    for content in ("a", "b"):  # the second write replaces a non-empty directory: the earlier Zarr store
        with atomic_path(store, store=True) as tmp:
            tmp.mkdir()
            (tmp / ".zgroup").write_text("{}")
            (tmp / "part").write_text(content)
    assert (store / "part").read_text() == "b"
    with pytest.raises(FileNotFoundError), atomic_path(tmp_path / "never.h5ad"):
        pass
    # a file never replaces a folder, and a store replaces nothing but a store (issue 13: no data loss)
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "precious.txt").write_text("keep")
    with pytest.raises(IsADirectoryError), atomic_path(folder) as tmp:
        tmp.write_text("model")
    (tmp_path / "plain.zarr").mkdir()
    (tmp_path / "plain.zarr" / "precious.txt").write_text("keep")
    with pytest.raises(FileExistsError, match="not a Zarr store"), atomic_path(tmp_path / "plain.zarr", store=True):
        pass
    assert (folder / "precious.txt").read_text() == (tmp_path / "plain.zarr" / "precious.txt").read_text() == "keep"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine", "out.txt", "plain.zarr", "s.zarr"]  # no temporaries


@pytest.mark.data
def test_embed_real_section_then_rerun_skips(tmp_path, c2, capsys, monkeypatch):
    """`phg2st embed` on a few neighbouring spots of the real C2 section (its H&E), then a rerun does nothing."""
    import anndata as ad
    import numpy as np

    import phg2st_sc as phg2st

    xy = c2.obsm["spatial"]
    near = np.sort(np.argsort(np.linalg.norm(xy - xy[0], axis=1))[:6])
    path = tmp_path / "C2.h5ad"
    c2[near].copy().write_h5ad(path)
    out = tmp_path / "emb"
    args = ["embed", str(path), "--out-dir", str(out), "--device", "cpu", "--batch-size", "16", "--no-progress"]
    assert main(args) == 0
    assert "1 written, 0 already done, 0 failed" in capsys.readouterr().err
    res = ad.read_h5ad(out / "C2.h5ad")
    assert res.obsm["X_efficientnet_lite0"].shape == (6, 1280) and res.obsp["phg2st_incidence"].shape == (6, 6)
    assert res.uns["phg2st_hypergraph"]["params"]["use_rep"] == "X_efficientnet_lite0"
    assert res.X.sum() == c2[near].X.sum()  # the input's counts travel with it
    mtime = (out / "C2.h5ad").stat().st_mtime_ns
    monkeypatch.setattr(phg2st.pp, "embed_tiles", _refuse)
    assert main(args) == 0
    assert "skipped" in capsys.readouterr().err
    assert (out / "C2.h5ad").stat().st_mtime_ns == mtime


def test_embed_refuses_to_skip_an_output_made_with_other_settings(tmp_path, synthetic_section, capsys):
    """A rerun with another --mpp must not skip the old output as done: that section fails and says why."""
    path = tmp_path / "S0.h5ad"
    synthetic_section(side=3).write_h5ad(path)
    out = tmp_path / "emb"
    args = ["embed", str(path), "--out-dir", str(out), "--no-progress", "--no-hypergraph"]
    assert main(args) == 0
    mtime = (out / "S0.h5ad").stat().st_mtime_ns
    assert main(args) == 0 and "skipped" in capsys.readouterr().err  # same settings: done
    assert main([*args, "--mpp", "10"]) == 1
    err = capsys.readouterr().err
    assert "mpp=-1.0 there, 10.0 asked" in err and "--overwrite" in err
    assert (out / "S0.h5ad").stat().st_mtime_ns == mtime
    assert main([*args, "--mpp", "10", "--overwrite"]) == 0
    import anndata as ad

    assert ad.read_h5ad(out / "S0.h5ad").uns["X_efficientnet_lite0"]["params"]["mpp"] == 10.0


def test_embed_spatialdata_store_extends_and_overwrites(tmp_path, synthetic_section, capsys, monkeypatch):
    """A .zarr input gives a .zarr output; an incomplete output is extended, a complete one skipped."""
    import spatialdata as sd

    import phg2st_sc as phg2st

    store = tmp_path / "S0.zarr"
    phg2st.io.to_spatialdata(synthetic_section(side=3)).write(store)  # has an X_tiny hypergraph, no efficientnet
    out = tmp_path / "emb"
    args = ["embed", str(store), "--out-dir", str(out), "--no-progress"]
    assert main([*args, "--no-hypergraph"]) == 0
    assert "tiles embedded" in capsys.readouterr().err
    with monkeypatch.context() as m:
        m.setattr(phg2st.pp, "embed_tiles", _refuse)
        assert main(args) == 0  # the embedding is there: only the hypergraph is added
        assert "hypergraph built" in capsys.readouterr().err
        assert main(args) == 0
        assert "skipped" in capsys.readouterr().err
    table = sd.read_zarr(out / "S0.zarr").tables["table"]
    assert table.uns["phg2st_hypergraph"]["params"]["use_rep"] == "X_efficientnet_lite0"
    assert "X_efficientnet_lite0" in table.obsm and "X_tiny" in table.obsm
    assert main([*args, "--overwrite"]) == 0
    assert "tiles embedded" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == ["S0.zarr"]  # the replaced store and temporaries are gone
    assert sd.read_zarr(out / "S0.zarr").images


def test_fit_writes_a_model_and_rerun_skips(trained, capsys):
    import phg2st_sc as phg2st

    paths, model_path = trained
    model = phg2st.PHG2ST.load(model_path)
    assert model.genes == [f"gene{i}" for i in range(6)] and model.info["use_rep"] == "X_synthetic"
    assert model.info["normalization"]["protocol"] == "heldout" and model.info["epochs_trained"] >= 1
    mtime = model_path.stat().st_mtime_ns
    assert main(["fit", paths[0], "--out", str(model_path)]) == 0  # resume: the model exists
    assert "skipping" in capsys.readouterr().err
    assert model_path.stat().st_mtime_ns == mtime
    assert main(["fit", paths[0], str(model_path.parent / "none.h5ad"), "--out", str(model_path.parent / "m2.pt"),
                 *SMALL_FIT]) == 1  # fmt: skip
    assert "none.h5ad: no such file" in capsys.readouterr().err
    assert not (model_path.parent / "m2.pt").exists()


def test_fit_checkpoints_and_a_rerun_continues_the_training(trained, tmp_path, capsys):
    """`--checkpoint-dir`: a run stopped after one epoch is continued by the same command with more epochs."""
    from _compare import assert_same_weights

    import phg2st_sc as phg2st

    paths, _ = trained
    ckpt = tmp_path / "ckpt"
    base = ["fit", *paths[:2], *SMALL_FIT, "--checkpoint-dir", str(ckpt), "--seed", "3"]
    assert main([*base, "--out", str(tmp_path / "one.pt"), "--max-epochs", "1"]) == 0
    assert (ckpt / "last.ckpt").is_file()
    assert main([*base, "--out", str(tmp_path / "three.pt"), "--max-epochs", "3"]) == 0
    assert "resuming from" in capsys.readouterr().err
    whole = tmp_path / "whole.pt"
    assert main(["fit", *paths[:2], *SMALL_FIT, "--seed", "3", "--max-epochs", "3", "--out", str(whole)]) == 0
    resumed, direct = phg2st.PHG2ST.load(tmp_path / "three.pt"), phg2st.PHG2ST.load(whole)
    assert list(resumed.history_["epoch"]) == [0, 1, 2]
    assert_same_weights(resumed, direct)


def test_fit_several_networks(trained, tmp_path, capsys):
    """`--fit n_networks=2`: one model file with both networks, its summary line naming them; with
    `--checkpoint-dir` refused before any input is read."""
    import phg2st_sc as phg2st

    paths, _ = trained
    out = tmp_path / "two.pt"
    assert main(["fit", *paths[:2], *SMALL_FIT, "--fit", "n_networks=2", "--out", str(out)]) == 0
    assert "2 networks" in capsys.readouterr().err
    model = phg2st.PHG2ST.load(out)
    assert len(model.members) == 1 and [r["seed"] for r in model.training["networks"]] == [0, 1]
    with pytest.raises(SystemExit):
        main(["fit", *paths[:2], "--fit", "n_networks=2", "--checkpoint-dir", str(tmp_path / "ck"), "--out",
              str(tmp_path / "no.pt")])  # fmt: skip
    assert "n_networks=1" in capsys.readouterr().err
    assert not (tmp_path / "ck").exists() and not (tmp_path / "no.pt").exists()


def test_impute_matches_python_and_resumes(trained, tmp_path, capsys):
    """Predictions equal `tl.impute` with the same prompts; a rerun redoes only the missing output."""
    import anndata as ad
    import numpy as np

    import phg2st_sc as phg2st

    paths, model_path = trained
    model = phg2st.PHG2ST.load(model_path)
    out = tmp_path / "pred"
    args = ["impute", *paths[2:], "--model", str(model_path), "--out-dir", str(out), "--seed", "3", "--no-progress"]
    assert main(args) == 0
    res = ad.read_h5ad(out / "S2.h5ad")
    ref = phg2st.tl.prepare_targets(ad.read_h5ad(paths[2]), "heldout")
    phg2st.tl.select_prompts(ref, fraction=0.1, seed=3)
    phg2st.tl.impute(ref, model)
    np.testing.assert_array_equal(res.obs["phg2st_prompt"], ref.obs["phg2st_prompt"])
    np.testing.assert_allclose(res.layers["phg2st"], ref.layers["phg2st"], rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(res.X.toarray(), ref.X.toarray())
    assert res.obsm["X_phg2st"].shape[0] == 80

    kept = (out / "S2.h5ad").stat().st_mtime_ns
    (out / "S3.h5ad").unlink()
    capsys.readouterr()
    assert main(args) == 0
    assert "1 written, 1 already done, 0 failed" in capsys.readouterr().err
    assert (out / "S2.h5ad").stat().st_mtime_ns == kept and (out / "S3.h5ad").exists()


def test_impute_of_a_store_writes_a_store_with_the_table_still_linked(trained, tmp_path, capsys):
    """A SpatialData .zarr input gives a .zarr output whose table (prepared, imputed) still annotates the spot
    shapes; its predictions equal those of the same section given as .h5ad."""
    import anndata as ad
    import numpy as np
    import spatialdata as sd
    from spatialdata.models import get_table_keys

    import phg2st_sc as phg2st

    paths, model_path = trained
    store = tmp_path / "S2.zarr"
    phg2st.io.to_spatialdata(ad.read_h5ad(paths[2]), image=False).write(store)
    out = tmp_path / "pred"
    for source in (store, paths[2]):
        assert main(["impute", str(source), "--model", str(model_path), "--out-dir", str(out), "--no-progress"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["S2.h5ad", "S2.zarr"]
    result = sd.read_zarr(out / "S2.zarr")
    table = result.tables["table"]
    region, region_key, instance_key = get_table_keys(table)
    assert region in result.shapes and set(table.obs[instance_key]) <= set(result.shapes[region].index)
    assert "phg2st" in table.layers and table.n_vars == 6
    as_h5ad = ad.read_h5ad(out / "S2.h5ad")
    np.testing.assert_allclose(
        table[as_h5ad.obs_names].layers["phg2st"], as_h5ad.layers["phg2st"], rtol=1e-5, atol=1e-6
    )
    back = phg2st.io.from_spatialdata(result)  # and it reads back as a section
    assert back.n_obs == 80 and "spatial" in back.obsm


def test_impute_prepared_input_with_its_own_prompts(trained, tmp_path, capsys):
    """An input prepared with the model's protocol is used as it is; the prompts come from an obs column."""
    import anndata as ad
    import numpy as np

    import phg2st_sc as phg2st

    paths, model_path = trained
    model = phg2st.PHG2ST.load(model_path)
    prepared = phg2st.tl.prepare_targets(ad.read_h5ad(paths[2]), "heldout")
    prepared.obs["measured"] = np.arange(80) % 7 == 0
    path = tmp_path / "prepared.h5ad"
    prepared.write_h5ad(path)
    other = phg2st.tl.prepare_targets(ad.read_h5ad(paths[3]), "paper")  # not the model's normalisation
    other_path = tmp_path / "other.h5ad"
    other.write_h5ad(other_path)
    out = tmp_path / "pred"
    args = ["impute", str(path), str(other_path), "--model", str(model_path), "--out-dir", str(out),
            "--prompt-key", "measured", "--layer-added", "pred", "--no-progress"]  # fmt: skip
    assert main(args) == 1
    err = capsys.readouterr().err
    assert "other.h5ad: FAILED: The data's expression was prepared with" in err and "1 written" in err
    res = ad.read_h5ad(out / "prepared.h5ad")
    phg2st.tl.impute(prepared, model, prompt_key="measured", layer_added="pred")
    np.testing.assert_allclose(res.layers["pred"], prepared.layers["pred"], rtol=1e-6, atol=1e-7)
    assert res.uns["pred"]["params"]["n_prompts"] == 12
    assert sorted(p.name for p in out.iterdir()) == ["prepared.h5ad"]


def test_impute_bad_inputs_and_interrupted_writes(trained, tmp_path, capsys, monkeypatch):
    """Bad inputs fail with a line each (exit 1) while the others run; an interrupted write leaves no output."""
    import phg2st_sc as phg2st

    paths, model_path = trained
    garbage = tmp_path / "garbage.h5ad"
    garbage.write_text("not hdf5")
    raw = phg2st.datasets.synthetic(40, 6, n_features=4, grid_size=3, seed=9, section="raw")
    raw.write_h5ad(tmp_path / "raw.h5ad")  # never embedded: no hypergraph
    out = tmp_path / "pred"
    inputs = [str(garbage), str(tmp_path / "missing.h5ad"), str(tmp_path / "raw.h5ad"), paths[2]]
    assert main(["impute", *inputs, "--model", str(model_path), "--out-dir", str(out), "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert "garbage.h5ad: FAILED: cannot read it" in err and "missing.h5ad: FAILED: no such file" in err
    assert "raw.h5ad: FAILED: no hypergraph" in err and "run `phg2st embed`" in err
    assert "1 written, 0 already done, 3 failed" in err and "Traceback" not in err
    assert sorted(p.name for p in out.iterdir()) == ["S2.h5ad"]

    def interrupted(self, filename, *args, **kwargs):
        with open(filename, "wb") as f:
            f.write(b"\x89HDF\r\n\x1a\n half of a file")
        raise OSError("disk quota exceeded")

    from anndata import AnnData

    monkeypatch.setattr(AnnData, "write_h5ad", interrupted)
    assert main(["impute", paths[3], "--model", str(model_path), "--out-dir", str(out), "--no-progress"]) == 1
    assert "S3.h5ad: FAILED: disk quota exceeded" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == ["S2.h5ad"]  # no S3.h5ad, no temporary
    with pytest.raises(SystemExit) as exit_:  # a missing model file is a bad argument (exit 2), found before work
        main(["impute", paths[2], "--model", str(tmp_path / "nope.pt"), "--out-dir", str(out)])
    assert exit_.value.code == 2 and "no model file" in capsys.readouterr().err
    # settings every input shares are usage errors too, found before any input is read or any folder made
    for bad, message in ((["--prompt-fraction", "1.5"], "--prompt-fraction must be in (0, 1)"),
                         (["--seed", "-1"], "--seed must be an integer"),
                         (["--device", "cuda:99"], "CUDA GPU"), (["--device", "tpu9"], "Unknown device")):  # fmt: skip
        with pytest.raises(SystemExit) as exit_:
            main(["impute", paths[2], "--model", str(model_path), "--out-dir", str(tmp_path / "never"), *bad])
        assert exit_.value.code == 2 and message in capsys.readouterr().err and not (tmp_path / "never").exists()


def test_fit_and_impute_with_own_normalisation(trained, tmp_path, capsys):
    """`--protocol none`: .X is used as it is, for training and (the model knowing no protocol) for imputing."""
    import anndata as ad
    import numpy as np

    import phg2st_sc as phg2st

    paths, _ = trained
    genes = tmp_path / "genes.txt"
    genes.write_text("# two genes\ngene3\ngene1\n")
    model_path = tmp_path / "own.pt"
    assert main(["fit", *paths[:2], "--out", str(model_path), "--protocol", "none", "--genes", str(genes),
                 *SMALL_FIT]) == 0  # fmt: skip
    model = phg2st.PHG2ST.load(model_path)
    assert model.genes == ["gene3", "gene1"] and "protocol" not in model.info["normalization"]
    out = tmp_path / "pred"
    assert main(["impute", paths[2], "--model", str(model_path), "--out-dir", str(out), "--no-progress"]) == 0
    res = ad.read_h5ad(out / "S2.h5ad")
    ref = phg2st.pp.select_genes(ad.read_h5ad(paths[2]), ["gene3", "gene1"], copy=True)
    phg2st.tl.select_prompts(ref, fraction=0.1, seed=0)
    phg2st.tl.impute(ref, model)
    assert list(res.var_names) == ["gene3", "gene1"]
    np.testing.assert_allclose(res.layers["phg2st"], ref.layers["phg2st"], rtol=1e-6, atol=1e-7)


@pytest.mark.data
def test_a_space_ranger_folder_is_read_embedded_and_imputed(c2, tmp_path, capsys):
    """A Visium Space Ranger `outs` folder (format-faithful fixture with real her2st pixels and counts) is read
    through spatialdata-io by `phg2st embed`, written as a .zarr store, and goes through fit and impute."""
    import numpy as np
    import spatialdata as sd
    from _spaceranger import make_spaceranger

    import phg2st_sc as phg2st

    outs = make_spaceranger(tmp_path / "S1" / "outs", c2, n_spots=60, n_genes=40)
    sdata = phg2st.io.read_spaceranger(outs)
    table = sdata.tables["table"]
    assert table.n_obs == 60 and table.n_vars == 40 and set(sdata.shapes) == {"S1"}
    assert table.uns["spatial"]["S1"]["metadata"]["microns_per_pixel"] > 0
    nearest = np.argsort(((c2.obsm["spatial"] - np.median(c2.obsm["spatial"], 0)) ** 2).sum(1))[:60]
    np.testing.assert_array_equal(table.X.toarray(), c2.X[nearest][:, :40].toarray())  # the section's own counts
    emb = tmp_path / "emb"
    assert main(["embed", str(outs), "--out-dir", str(emb), "--no-progress"]) == 0
    assert sorted(p.name for p in emb.iterdir()) == ["S1.zarr"]
    embedded = sd.read_zarr(emb / "S1.zarr")
    assert "X_efficientnet_lite0" in embedded.tables["table"].obsm and embedded.images
    model = tmp_path / "m.pt"
    fit = ["--use-rep", "X_efficientnet_lite0", "--max-epochs", "2", "--hidden", "16", "--accelerator", "cpu",
           "--no-progress", "--fit", "heads=2", "spot_depth=1", "neighbour_depth=1"]  # fmt: skip
    assert main(["fit", str(emb / "S1.zarr"), "--out", str(model), *fit]) == 0, capsys.readouterr().err
    assert main(["impute", str(emb / "S1.zarr"), "--model", str(model), "--out-dir", str(tmp_path / "pred"),
                 "--prompt-fraction", "0.2", "--no-progress"]) == 0  # fmt: skip
    result = sd.read_zarr(tmp_path / "pred" / "S1.zarr").tables["table"]
    assert np.isfinite(result.layers["phg2st"]).all() and result.n_obs == 60
    with pytest.raises(FileNotFoundError, match="Space Ranger"):
        phg2st.io.read_spaceranger(tmp_path / "emb")
