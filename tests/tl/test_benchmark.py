"""`tl.benchmark`: rows agree with running the protocol by hand, folds resume, model selection stays in training."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pandas as pd
import pytest

import phg2st_sc as phg2st

pytestmark = pytest.mark.usefixtures("no_progress")


@pytest.mark.data
def test_her2st_patient_folds_match_manual_protocol(data_dir, tmp_path):
    out = tmp_path / "bench"
    kw = dict(folds="leave_one_patient_out", methods=["mean", "idw"], protocols=["heldout"], seeds=[0, 1],
              sections=["A1", "A2", "E1"], out=out, data_dir=data_dir)  # fmt: skip
    res = phg2st.tl.benchmark("her2st", **kw)
    t = res.table
    assert len(t) == 3 * 2 * 2 * 2  # sections x seeds x methods x spots
    assert set(t["fold"]) == {"A", "E"} and set(t[t["fold"] == "A"]["section"]) == {"A1", "A2"}

    # one row, recomputed by hand
    a2 = phg2st.datasets.her2st("A2", data_dir=data_dir)
    work = phg2st.tl.prepare_targets(a2, "heldout", panel="her2st_785")
    phg2st.tl.select_prompts(work, fraction=0.1, seed=1)
    phg2st.tl.baseline(work, method="idw")
    s = phg2st.tl.score(work, layer="baseline_idw").summary
    row = t.query("section == 'A2' and seed == 1 and method == 'idw' and spots == 'heldout'").iloc[0]
    assert row["pcc"] == pytest.approx(s["pcc"], abs=1e-9) and row["mae"] == pytest.approx(s["mae"], abs=1e-9)

    # summary: mean over seeds and sections in a fold, then mean and std over folds
    sel = t.query("method == 'idw' and spots == 'heldout'")
    per_fold = sel.groupby("fold")["pcc"].mean()
    srow = res.summary.query("method == 'idw' and spots == 'heldout'").iloc[0]
    assert srow["pcc_mean"] == pytest.approx(per_fold.mean()) and srow["pcc_std"] == pytest.approx(per_fold.std())
    assert srow["folds"] == 2

    # files and the protocol record
    proto = json.loads((out / "protocol.json").read_text())
    assert proto["folds"] == {"A": ["A1", "A2"], "E": ["E1"]} and proto["seeds"] == [0, 1]
    assert proto["panel"] == "her2st_785" and proto["protocols"][0]["name"] == "heldout"
    saved = pd.read_csv(out / "results.csv")
    np.testing.assert_allclose(saved["pcc"], t["pcc"])

    # resume: a finished fold is read back, not recomputed
    fold_e = pd.read_csv(out / "fold_E.csv")
    fold_e["pcc"] = 0.987
    fold_e.to_csv(out / "fold_E.csv", index=False)
    again = phg2st.tl.benchmark("her2st", **kw)
    assert (again.table.query("fold == 'E'")["pcc"] == 0.987).all()
    np.testing.assert_allclose(again.table.query("fold == 'A'")["pcc"], t.query("fold == 'A'")["pcc"])


def _spy_on_fit(monkeypatch, what):
    """Record ``what(adatas, kwargs)`` of every `tl.fit` call that `tl.benchmark` makes (the list is returned)."""
    from phg2st_sc.tl import _fit

    seen, real_fit = [], _fit.fit

    def spy(adatas, **kwargs):
        seen.append(what(adatas, kwargs))
        return real_fit(adatas, **kwargs)

    monkeypatch.setattr(_fit, "fit", spy)
    return seen


def _sections(n):
    return [phg2st.datasets.synthetic(150, 10, n_features=8, grid_size=3, seed=s, section=f"S{s}") for s in range(n)]


def test_benchmark_trains_only_on_training_sections(monkeypatch):
    """PHG2ST is fitted (and selects its epoch) on training sections only; the test section is never passed."""
    seen = _spy_on_fit(monkeypatch, lambda adatas, kwargs: sorted({str(a.obs["section"].iloc[0]) for a in adatas}))
    sections = _sections(4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = phg2st.tl.benchmark(
            sections, folds={"f3": ["S3"], "f0": ["S0"]}, methods=["phg2st", "mean"], protocols=["heldout"],
            seeds=[0], spots=["heldout"], use_rep="X_synthetic",
            fit_kwargs=dict(hidden=16, heads=2, spot_depth=1, neighbour_depth=1, max_epochs=1, accelerator="cpu"),
            per_gene=True,
        )  # fmt: skip
    assert seen == [["S0", "S1", "S2"], ["S1", "S2", "S3"]]
    assert set(res.table["method"]) == {"phg2st", "mean"} and len(res.table) == 4
    assert np.isfinite(res.table["pcc"]).all()
    assert res.per_gene is not None and set(res.per_gene["gene"]) <= {f"gene{i}" for i in range(10)}
    # the caller's sections are left as they were
    assert all("phg2st_incidence" not in a.obsp for a in sections)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        (dict(methods=["nope"]), ValueError, "Unknown methods"),
        (dict(methods={"x": {"method": "nope"}}), ValueError, "must be 'phg2st'"),
        (dict(prompt_fractions=[1.5]), ValueError, "prompt_fractions"),
        (dict(seeds=[]), ValueError, "seeds"),
        (dict(spots=["some"]), ValueError, "spots"),
        (dict(folds="leave_two_out"), ValueError, "folds"),
        (dict(folds={"f": ["S9"]}), ValueError, "not loaded"),
        (dict(methods=["feature_knn"], use_rep="X_missing"), KeyError, "X_missing"),
    ],
)
def test_bad_arguments(kwargs, error, match):
    sections = [phg2st.datasets.synthetic(60, 5, n_features=4, grid_size=0, seed=s, section=f"S{s}") for s in (0, 1)]
    with pytest.raises(error, match=match):
        phg2st.tl.benchmark(sections, **{"folds": "leave_one_section_out", **kwargs})


def test_the_adaptive_model_and_its_network_alone_share_one_training(monkeypatch):
    """`phg2st_adaptive_network` is the same trained model with the in-context layer off: one fit per fold."""
    calls = _spy_on_fit(monkeypatch, lambda adatas, kwargs: kwargs.get("variant"))
    sections = _sections(3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = phg2st.tl.benchmark(
            sections, folds={"f2": ["S2"]}, methods=["phg2st_adaptive", "phg2st_adaptive_network"],
            protocols=["heldout"], seeds=[0], spots=["heldout"], use_rep="X_synthetic",
            fit_kwargs=dict(config={"hidden": 16, "heads": 2, "spot_depth": 1}, max_epochs=1, accelerator="cpu"),
        )  # fmt: skip
    assert calls == ["adaptive"]
    pcc = res.table.set_index("method")["pcc"]
    assert pcc["phg2st_adaptive"] != pcc["phg2st_adaptive_network"]  # the layer changes the predictions


def test_the_protocol_record_carries_no_path_of_the_machine(tmp_path):
    from phg2st_sc.tl._benchmark import _portable

    out = tmp_path / "run"
    assert _portable({"cache_dir": str(out / "embedding_cache"), "mpp": 0.9}, out) == {
        "cache_dir": "embedding_cache", "mpp": 0.9}  # fmt: skip
    outside = _portable({"cache_dir": str(tmp_path / "shared_cache")}, out)["cache_dir"]
    assert str(tmp_path) not in outside and "shared_cache" in outside
    assert _portable(None, out) == {}


def test_the_model_cache_key_ignores_the_embedding_cache_folder():
    """Any cache folder, or none, gives the key the command line's runs had before `--cache-dir` (their models are
    found again); another encoder setting gives another key."""
    from phg2st_sc.tl._benchmark import _key_embed

    old_cli = {"embed_kwargs": {"mpp": 0.9, "cache_dir": "embedding_cache"}}  # what `phg2st benchmark` recorded
    for embed in ({"mpp": 0.9, "cache_dir": "<outside the results folder: tiles>"}, {"mpp": 0.9}):
        assert _key_embed({"embed_kwargs": embed}) == _key_embed(old_cli) == old_cli["embed_kwargs"]
    assert _key_embed({"embed_kwargs": {"mpp": 0.5}}) != _key_embed(old_cli)


def test_the_model_cache_key_holds_the_size_tl_fit_fills_in(monkeypatch):
    """Settings that leave the token size or the epoch limit to `tl.fit` key them by the values it fills in (which
    changed on 2026-12-05: a model trained under the old defaults is no hit); explicit settings keep their keys."""
    from phg2st_sc._model import _config
    from phg2st_sc.tl._benchmark import _size_defaults

    assert _size_defaults({"variant": "adaptive"}) == {"hidden": 128, "max_epochs": 100}
    assert _size_defaults({"variant": "paper", "config": {"hidden": 64}}) == {"max_epochs": 200}
    assert _size_defaults({"config": phg2st.tl.ModelConfig(hidden=32), "max_epochs": 5}) == {}
    monkeypatch.setitem(_config.MAX_EPOCHS, "adaptive", 200)  # other defaults: another key
    assert _size_defaults({"variant": "adaptive"}) == {"hidden": 128, "max_epochs": 200}


def test_a_model_cache_lets_a_second_run_only_evaluate(tmp_path, monkeypatch, synthetic_section):
    """Two runs with the same training and other prompt strategies: the second reads the models back (no fit) and
    its adaptive rows carry calibration metrics."""
    from _synthetic import SMALL

    import phg2st_sc.tl._fit as fit_module

    sections = [synthetic_section(seed=s, name=f"S{s}") for s in range(3)]
    for s, a in enumerate(sections):  # counts (the benchmark prepares its targets from raw counts)
        x = np.asarray(a.X, dtype=float)
        a.X = np.random.default_rng(s).poisson(np.exp(np.clip(x - x.min(0), 0, 4)) * 3).astype(np.float32)
    kw = dict(folds={"f0": ["S0"]}, methods=["idw", "phg2st_adaptive"], prompt_fractions=[0.3], seeds=[0],
              use_rep=SMALL["use_rep"], fit_kwargs={"config": SMALL["config"], "max_epochs": 1, "accelerator": "cpu"},
              model_cache=tmp_path / "models", protocols=["heldout"])  # fmt: skip
    first = phg2st.tl.benchmark(sections, out=tmp_path / "random", **kw)
    assert len(list((tmp_path / "models").glob("*.pt"))) == 1
    monkeypatch.setattr(fit_module, "fit", lambda *a, **k: pytest.fail("trained again"))
    # (another embedding cache's folder: the same model)
    second = phg2st.tl.benchmark(sections, out=tmp_path / "space", prompt_strategy="space",
                                 embed_kwargs={"cache_dir": tmp_path / "tiles"}, **kw)  # fmt: skip
    ours = second.table[(second.table.method == "phg2st_adaptive") & (second.table.spots == "heldout")]
    assert ours["coverage_90"].between(0, 1).all() and ours["error_ratio"].notna().all()
    assert first.table[first.table.method == "idw"]["coverage_90"].isna().all()
