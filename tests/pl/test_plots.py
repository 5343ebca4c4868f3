"""pl.metrics, pl.training_curves and pl.prompts: what is drawn, bad input, and comparisons with baseline images.

Regenerate the baseline images (after checking that a plot changed on purpose) with
``PHG2ST_UPDATE_BASELINES=1 pytest tests/pl/test_plots.py -k image``, and look at them before committing.
"""

from __future__ import annotations

import copy
import inspect
import os
import re
import shutil
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from _synthetic import SMALL
from matplotlib.collections import EllipseCollection, LineCollection, PathCollection
from matplotlib.colors import to_rgba
from matplotlib.testing.compare import compare_images

import phg2st_sc as phg2st

BASELINES = Path(__file__).parent / "baseline"
#: RMS tolerance (0-255 levels). Lines, markers, colours and the H&E are compared; text is drawn transparent (its
#: content is checked by the other tests): font rendering alone (hinting, FreeType version) moved these images by an
#: RMS of 17-40, as much as a wrong plot; with text hidden, a moved marker, other prompts, swapped colours or methods
#: moved them by 11-25.
TOLERANCE = 10
#: Small fixed figures, the default style, transparent text (layout still uses the text's extent).
IMAGE_RC = {
    "font.family": "DejaVu Sans",
    "savefig.dpi": 50,
    **dict.fromkeys(("text.color", "axes.labelcolor", "axes.titlecolor", "xtick.labelcolor", "ytick.labelcolor",
                     "legend.labelcolor"), "none"),
}  # fmt: skip


def check_image(fig, name: str, tmp_path: Path) -> None:
    """Compare ``fig`` with ``baseline/<name>.png``; with ``PHG2ST_UPDATE_BASELINES=1`` write that file instead."""
    actual = tmp_path / f"{name}.png"
    fig.savefig(actual)
    plt.close(fig)
    expected = BASELINES / f"{name}.png"
    if os.environ.get("PHG2ST_UPDATE_BASELINES") == "1":
        BASELINES.mkdir(exist_ok=True)
        shutil.copyfile(actual, expected)
        pytest.skip(f"wrote the baseline image {expected}")
    assert expected.is_file(), f"No baseline image {expected}; create it with PHG2ST_UPDATE_BASELINES=1."
    result = compare_images(str(expected), str(actual), tol=TOLERANCE)
    assert result is None, result


@pytest.fixture
def image_style():
    with matplotlib.style.context("default"), plt.rc_context(IMAGE_RC):
        yield


def points(ax) -> list[PathCollection]:
    return [c for c in ax.collections if type(c) is PathCollection]


# -- data --------------------------------------------------------------------------------------------------------


_CACHE: dict[str, object] = {}


@pytest.fixture
def scores(request):
    """Per-gene scores of three baselines on C2 (`c2_targets`: her2st_785 panel, 10% prompts): IDW, the mean, and
    ridge regression on colour features of the H&E (`colour_features`). Computed once per session."""
    if "scores" not in _CACHE:
        work = request.getfixturevalue("c2_targets")
        work.obsm["X_colour"] = request.getfixturevalue("colour_features")(work)
        out = {}
        for method in ("idw", "mean", "ridge"):
            phg2st.tl.baseline(work, method=method, use_rep="X_colour" if method == "ridge" else None)
            out[method] = phg2st.tl.score(work, layer=f"baseline_{method}")
        _CACHE["scores"] = out
    return _CACHE["scores"]


@pytest.fixture
def bench(request):
    """A small real benchmark: C2-C4 left out in turn, mean and IDW, two prompt seeds, per-gene metrics. Computed
    once per session."""
    if "bench" not in _CACHE:
        load = request.getfixturevalue("load_her2st")
        request.getfixturevalue("no_progress")
        _CACHE["bench"] = phg2st.tl.benchmark(
            [load(s) for s in ("C2", "C3", "C4")], folds="leave_one_section_out", methods=("mean", "idw"),
            protocols=("heldout",), seeds=(0, 1), spots=("heldout",), panel="her2st_785", per_gene=True,
        )  # fmt: skip
    return _CACHE["bench"]


@pytest.fixture
def history():
    """A hand-written training history whose best validation PCC is at epoch 6."""
    epochs = np.arange(10)
    return pd.DataFrame(
        {
            "epoch": epochs,
            "train_loss": 1.0 / (1 + epochs),
            "val_loss": 1.2 / (1 + epochs) + 0.01 * np.maximum(epochs - 6, 0),
            "val_pcc": [0.05, 0.1, 0.15, 0.2, 0.24, 0.27, 0.3, 0.29, 0.28, 0.28],
            "lr": 1e-4,
            "seconds": 0.5,
        }
    )


# -- signatures ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["metrics", "training_curves", "prompts"])
def test_public_and_signature_rules(name):
    """The package's signature rules (see tests/test_api.py) hold for the new plots."""
    func = getattr(phg2st.pl, name)
    assert name in phg2st.pl.__all__
    params = list(inspect.signature(func).parameters.values())
    assert len([p for p in params if p.kind is p.POSITIONAL_OR_KEYWORD]) == 1
    assert all(p.annotation is not inspect.Parameter.empty for p in params)
    doc = inspect.getdoc(func)
    assert "Parameters" in doc and "Returns" in doc and "Examples" in doc
    for p in params:
        assert re.search(rf"^(?:\w+, )*{p.name}(?:, \w+)*$", doc, flags=re.M), f"{name}: {p.name} undocumented"
    for opt in ("show", "save", "return_fig", "panel_size"):
        assert inspect.signature(func).parameters[opt].kind is inspect.Parameter.KEYWORD_ONLY


# -- pl.metrics ----------------------------------------------------------------------------------------------------


@pytest.mark.data
def test_metrics_scatter_and_distribution(scores):
    wide = pd.DataFrame({m: s.per_gene["pcc"] for m, s in scores.items()})
    order = wide.mean().sort_values(ascending=False).index.tolist()
    axes = phg2st.pl.metrics(scores, show=False)
    assert list(axes) == ["scatter", "distribution"]  # no folds without a benchmark
    method, baseline = order[:2]  # no "phg2st": the best method against the best other one
    ax = axes["scatter"]
    assert ax.get_ylabel() == f"{method} PCC" and ax.get_xlabel() == f"{baseline} PCC"
    (dots,) = points(ax)
    pair = wide[[baseline, method]].dropna()
    assert len(dots.get_offsets()) == len(pair) == 785  # one point per gene
    np.testing.assert_allclose(dots.get_offsets(), pair.to_numpy())
    (diagonal,) = ax.lines
    np.testing.assert_array_equal(diagonal.get_xdata(), diagonal.get_ydata())
    assert diagonal.get_xdata()[0] <= pair.min().min() and diagonal.get_xdata()[1] >= pair.max().max()
    texts = sorted(t.get_text() for t in ax.texts)
    above, below = (pair[method] > pair[baseline]).sum(), (pair[method] < pair[baseline]).sum()
    assert texts == sorted([f"{method} better: {above}", f"{baseline} better: {below}"])
    assert above > 0 and below > 0
    ax = axes["distribution"]
    assert [t.get_text() for t in ax.get_xticklabels()] == order  # best first
    assert len(ax.patches) == len(scores)  # one box per method
    (means,) = points(ax)
    np.testing.assert_allclose(means.get_offsets()[:, 1], wide[order].mean().to_numpy())
    # boxes are coloured by method
    assert len({tuple(p.get_facecolor()) for p in ax.patches}) == len(scores)
    plt.close("all")


@pytest.mark.data
def test_metrics_method_choice_mae_and_violin(scores):
    named = {"phg2st": scores["ridge"], "idw": scores["idw"], "mean": scores["mean"]}
    axes = phg2st.pl.metrics(named, show=False)
    assert axes["scatter"].get_ylabel() == "phg2st PCC"  # "phg2st" is the default method when present
    axes = phg2st.pl.metrics(scores, metric="mae", method="idw", baseline="mean", distribution="violin", show=False)
    ax = axes["scatter"]
    assert ax.get_ylabel() == "idw MAE" and ax.get_xlabel() == "mean MAE"
    idw, mean = scores["idw"].per_gene["mae"], scores["mean"].per_gene["mae"]
    # lower is better: above the diagonal (higher MAE with idw) is where the mean baseline wins
    assert sorted(t.get_text() for t in ax.texts) == sorted(
        [f"mean better: {(idw > mean).sum()}", f"idw better: {(idw < mean).sum()}"]
    )
    mae_order = pd.DataFrame({m: s.per_gene["mae"] for m, s in scores.items()}).mean().sort_values().index.tolist()
    dist = axes["distribution"]
    assert [t.get_text() for t in dist.get_xticklabels()] == mae_order  # lowest error first
    assert len([c for c in dist.collections if type(c).__name__ == "FillBetweenPolyCollection" or
                type(c).__name__ == "PolyCollection"]) == len(scores)  # fmt: skip
    fig = phg2st.pl.metrics(scores, kind="distribution", return_fig=True)
    assert len(fig.axes) == 1
    plt.close("all")


@pytest.mark.data
def test_metrics_benchmark_folds(bench):
    before = bench.table.copy()
    axes = phg2st.pl.metrics(bench, method="idw", show=False)
    assert list(axes) == ["scatter", "distribution", "folds"]
    pd.testing.assert_frame_equal(bench.table, before)  # the result is not modified
    ax = axes["folds"]
    per_fold = bench.table.groupby(["fold", "method"])["pcc"].mean().unstack()
    assert [t.get_text() for t in ax.get_xticklabels()] == ["idw", "mean"]
    dots = points(ax)
    assert [len(d.get_offsets()) for d in dots] == [3, 3]  # one point per fold and method
    np.testing.assert_allclose(np.sort(dots[0].get_offsets()[:, 1]), np.sort(per_fold["idw"].to_numpy()))
    (bars,) = [c for c in ax.collections if isinstance(c, LineCollection)]
    np.testing.assert_allclose([seg[0][1] for seg in bars.get_segments()], per_fold[["idw", "mean"]].mean())
    assert ax.get_title() == "PCC per fold (3 folds)"
    # genes are averaged over the folds and seeds in the scatter
    (scatter,) = points(axes["scatter"])
    assert len(scatter.get_offsets()) == bench.per_gene["gene"].nunique() == 785
    # the table alone gives the folds panel; the per-gene table the others
    assert list(phg2st.pl.metrics(bench.table, show=False)) == ["folds"]
    assert list(phg2st.pl.metrics(bench.per_gene, show=False)) == ["scatter", "distribution"]
    plt.close("all")


@pytest.mark.data
def test_metrics_benchmark_settings_must_be_chosen(bench):
    two = pd.concat([bench.table, bench.table.assign(protocol="heldout_smoothed", pcc=bench.table["pcc"] + 0.3)])
    with pytest.raises(ValueError, match=r"several protocol values.*subset=\{'protocol'"):
        phg2st.pl.metrics(two, show=False)
    axes = phg2st.pl.metrics(two, subset={"protocol": "heldout_smoothed"}, show=False)
    (bars,) = [c for c in axes["folds"].collections if isinstance(c, LineCollection)]
    assert max(seg[0][1] for seg in bars.get_segments()) > 0.3
    # "heldout" spots are taken by default when both were scored
    both = pd.concat([bench.table, bench.table.assign(spots="all", pcc=9.0)])
    axes = phg2st.pl.metrics(both, show=False)
    assert max(d.get_offsets()[:, 1].max() for d in points(axes["folds"])) < 1
    with pytest.raises(ValueError, match="No row has protocol"):
        phg2st.pl.metrics(bench, subset={"protocol": "nope"}, show=False)
    with pytest.raises(KeyError, match="'colour'"):
        phg2st.pl.metrics(bench, subset={"colour": "red"}, show=False)
    plt.close("all")


@pytest.mark.data
def test_metrics_errors(scores, bench):
    plt.close("all")
    with pytest.raises(ValueError, match="`metric` must be one of"):
        phg2st.pl.metrics(scores, metric="r2", show=False)
    with pytest.raises(KeyError, match="No method 'phg2st'"):
        phg2st.pl.metrics(scores, method="phg2st", show=False)
    with pytest.raises(ValueError, match="both 'idw'"):
        phg2st.pl.metrics(scores, method="idw", baseline="idw", show=False)
    with pytest.raises(TypeError, match=r"dict \{method name: Scores\}"):
        phg2st.pl.metrics(scores["idw"], show=False)
    with pytest.raises(TypeError, match="not Scores"):
        phg2st.pl.metrics({"idw": scores["idw"].per_gene}, show=False)
    with pytest.raises(TypeError, match="got ndarray"):
        phg2st.pl.metrics(np.zeros(3), show=False)
    with pytest.raises(ValueError, match="'folds' panel needs"):
        phg2st.pl.metrics(scores, kind="folds", show=False)
    with pytest.raises(ValueError, match="`kind` must be one of"):
        phg2st.pl.metrics(scores, kind="heatmap", show=False)
    with pytest.raises(ValueError, match="'scatter' panel needs"):
        phg2st.pl.metrics({"idw": scores["idw"]}, kind="scatter", show=False)
    with pytest.raises(ValueError, match="`distribution` must be one of"):
        phg2st.pl.metrics(scores, distribution="strip", show=False)
    with pytest.raises(ValueError, match="columns 'fold', 'method'"):
        phg2st.pl.metrics(pd.DataFrame({"pcc": [0.1]}), show=False)
    with pytest.raises(KeyError, match=r"lacks the columns \['method'\]"):
        phg2st.pl.metrics(bench.table.drop(columns="method"), show=False)
    assert not plt.get_fignums()  # nothing left open by the failures


@pytest.mark.data
def test_metrics_image(bench, image_style, tmp_path):
    fig = phg2st.pl.metrics(bench, method="idw", panel_size=2.6, return_fig=True)
    check_image(fig, "metrics_benchmark", tmp_path)


# -- pl.training_curves --------------------------------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore::UserWarning", "ignore::DeprecationWarning")
@pytest.mark.usefixtures("no_progress")
def test_training_curves_of_a_trained_model(synthetic_section):
    model = phg2st.tl.fit(synthetic_section(side=6), max_epochs=3, validation=0.25, seed=0, **SMALL)
    hist = model.history_
    axes = phg2st.pl.training_curves(model, show=False)
    assert list(axes) == ["loss", "val_pcc"]
    train, val, best_line = axes["loss"].lines
    np.testing.assert_allclose(train.get_ydata(), hist["train_loss"])
    np.testing.assert_allclose(val.get_ydata(), hist["val_loss"])
    best = int(hist["val_pcc"].idxmax())
    assert float(hist["val_pcc"].iloc[best]) == pytest.approx(model.info["best_epoch_val_pcc"])  # the kept epoch
    assert best_line.get_xdata()[0] == hist["epoch"].iloc[best]
    (star,) = points(axes["val_pcc"])
    np.testing.assert_allclose(star.get_offsets(), [[hist["epoch"].iloc[best], hist["val_pcc"].iloc[best]]])
    plt.close("all")
    untrained = copy.copy(model)
    untrained.history_ = pd.DataFrame()
    with pytest.raises(ValueError, match="has not been trained"):
        phg2st.pl.training_curves(untrained, show=False)


def test_training_curves_of_a_history(history):
    axes = phg2st.pl.training_curves(history, show=False)
    (star,) = points(axes["val_pcc"])
    np.testing.assert_allclose(star.get_offsets(), [[6, 0.3]])
    assert axes["val_pcc"].lines[-1].get_xdata()[0] == 6
    labels = [t.get_text() for t in axes["val_pcc"].get_legend().get_texts()]
    assert "selected: 0.300" in labels and "epoch 6" in labels
    # the checkpoint's score picks the epoch the model kept (here the same value twice: the first)
    kept = history.assign(val_pcc=[0.05, 0.1, 0.28, 0.2, 0.24, 0.27, 0.3, 0.29, 0.28, 0.28])
    model = type("Model", (), {"history_": kept, "info": {"best_epoch_val_pcc": 0.28}})()
    (star,) = points(phg2st.pl.training_curves(model, show=False)["val_pcc"])
    np.testing.assert_allclose(star.get_offsets(), [[2, 0.28]])
    # rows out of order are sorted by epoch
    axes = phg2st.pl.training_curves(history.iloc[::-1], show=False)
    np.testing.assert_array_equal(axes["loss"].lines[0].get_xdata(), np.arange(10))
    # no validation: the training loss only, nothing marked
    axes = phg2st.pl.training_curves(history[["epoch", "train_loss"]], show=False)
    assert list(axes) == ["loss"] and len(axes["loss"].lines) == 1
    axes = phg2st.pl.training_curves(history, mark_best=False, log_loss=True, show=False)
    assert not points(axes["val_pcc"]) and axes["loss"].get_yscale() == "log"
    plt.close("all")


def test_training_curves_errors(history):
    with pytest.raises(ValueError, match="has not been trained"):
        phg2st.pl.training_curves(pd.DataFrame(), show=False)
    with pytest.raises(KeyError, match="train_loss"):
        phg2st.pl.training_curves(history.drop(columns="train_loss"), show=False)
    with pytest.raises(TypeError, match="PHG2ST model"):
        phg2st.pl.training_curves(history.to_numpy(), show=False)


def test_training_curves_image(history, image_style, tmp_path):
    fig = phg2st.pl.training_curves(history, panel_size=2.6, return_fig=True)
    check_image(fig, "training_curves", tmp_path)


# -- pl.prompts ----------------------------------------------------------------------------------------------------


def spots(ax) -> list[EllipseCollection]:
    return [c for c in ax.collections if isinstance(c, EllipseCollection)]


@pytest.mark.data
def test_prompts_positions_colours_and_counts(predicted, tmp_path):
    before = predicted.copy()
    out = tmp_path / "prompts.png"
    ax = phg2st.pl.prompts(predicted, save=out, show=False)
    assert out.stat().st_size > 10_000
    mask = predicted.obs["phg2st_prompt"].to_numpy()
    n_prompts = int(mask.sum())
    assert 0 < n_prompts < predicted.n_obs
    assert len(ax.images) == 1  # the H&E
    heldout, prompt = spots(ax)
    xy = predicted.obsm["spatial"] * predicted.uns["spatial"]["C2"]["scalefactors"]["tissue_hires_scalef"]
    np.testing.assert_allclose(prompt.get_offsets(), xy[mask])
    np.testing.assert_allclose(heldout.get_offsets(), xy[~mask])
    sf = predicted.uns["spatial"]["C2"]["scalefactors"]
    assert prompt._widths[0] * 2 == pytest.approx(sf["spot_diameter_fullres"] * sf["tissue_hires_scalef"])
    assert not np.allclose(prompt.get_facecolors()[0][:3], heldout.get_facecolors()[0][:3])
    np.testing.assert_allclose(prompt.get_facecolors()[0][:3], to_rgba("#d62728")[:3])
    legend = [t.get_text() for t in ax.figure.legends[0].get_texts()]
    assert legend == [f"prompt ({n_prompts})", f"held out ({predicted.n_obs - n_prompts})"]
    assert ax.get_title() == f"C2: {n_prompts} prompts of {predicted.n_obs} measured spots (10%)"
    # the user's AnnData is untouched
    assert list(predicted.obs.columns) == list(before.obs.columns) and set(predicted.uns) == set(before.uns)
    np.testing.assert_array_equal(predicted.obs["phg2st_prompt"], before.obs["phg2st_prompt"])
    plt.close("all")


@pytest.mark.data
def test_prompts_unmeasured_spots_are_grey(predicted):
    whole = phg2st.pp.virtual_spots(predicted)
    virtual = whole.obs["phg2st_virtual"].to_numpy()
    assert virtual.any()
    ax = phg2st.pl.prompts(whole, show=False, return_fig=True).axes[0]
    unmeasured, heldout, prompt = spots(ax)
    assert len(unmeasured.get_offsets()) == virtual.sum()
    np.testing.assert_allclose(unmeasured.get_facecolors()[0][:3], to_rgba("gray")[:3])
    legend = [t.get_text() for t in ax.figure.legends[0].get_texts()]
    assert legend[-1] == f"unmeasured ({int(virtual.sum())})"
    assert len(heldout.get_offsets()) + len(prompt.get_offsets()) == (~virtual).sum()
    plt.close("all")


@pytest.mark.data
def test_prompts_spatialdata_and_options(predicted):
    sdata = phg2st.io.to_spatialdata(predicted, image=False)
    heldout, prompt = spots(phg2st.pl.prompts(sdata, show=False))
    np.testing.assert_allclose(prompt.get_offsets(), spots(phg2st.pl.prompts(predicted, show=False))[1].get_offsets())
    other = predicted.copy()
    other.obs["mine"] = ~other.obs["phg2st_prompt"].to_numpy()
    ax = phg2st.pl.prompts(other, prompt_key="mine", image=False, prompt_color="black", show=False)
    assert len(ax.images) == 0
    heldout, prompt = spots(ax)
    assert len(prompt.get_offsets()) == (~predicted.obs["phg2st_prompt"]).sum()
    np.testing.assert_allclose(prompt.get_facecolors()[0][:3], 0.0)
    plt.close("all")


@pytest.mark.data
def test_prompts_errors(predicted):
    plt.close("all")
    no_prompts = predicted.copy()
    del no_prompts.obs["phg2st_prompt"]
    with pytest.raises(KeyError, match=r"phg2st\.tl\.select_prompts"):
        phg2st.pl.prompts(no_prompts, show=False)
    with pytest.raises(KeyError, match="'mine'"):
        phg2st.pl.prompts(predicted, prompt_key="mine", show=False)
    with pytest.raises(ValueError, match="not a Matplotlib colour"):
        phg2st.pl.prompts(predicted, prompt_color="reddish", show=False)
    with pytest.raises(ValueError, match="must be positive"):
        phg2st.pl.prompts(predicted, spot_scale=0, show=False)
    with pytest.raises(TypeError, match="AnnData or a SpatialData"):
        phg2st.pl.prompts(np.zeros((3, 3)), show=False)
    assert not plt.get_fignums()


@pytest.mark.data
def test_prompts_image(predicted, image_style, tmp_path):
    fig = phg2st.pl.prompts(predicted, panel_size=3.0, return_fig=True)
    check_image(fig, "prompts", tmp_path)
