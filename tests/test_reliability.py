"""Reliability, round 2 (issue 13): no data loss, no silent wrong results, a resume that always resumes.

The refusals are in the bad-input catalogue (``test_bad_input.py``); here are the behaviours that need more than a
refusal to show: conversions that must give the right pixels, training that must stop or resume at the right
epoch, interrupts, and the command line's checks before any work.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import anndata as ad
import lightning as L
import numpy as np
import pandas as pd
import pytest
import torch
from _compare import assert_adata_equal, assert_unchanged, snapshot
from _synthetic import SMALL, Tiny, make_section, progress_off
from PIL import Image

import phg2st_sc as phg2st
from phg2st_sc.cli import main

pytestmark = [
    pytest.mark.filterwarnings("ignore::UserWarning", "ignore::DeprecationWarning"),
    pytest.mark.usefixtures("no_progress"),
]
KW = {**SMALL, "validation": None}


@pytest.fixture(scope="module")
def sections(tmp_path_factory):
    """Three small sections (real image files, tiny-encoder embeddings, hypergraphs), also written to h5ad."""
    folder = tmp_path_factory.mktemp("sections")
    out = []
    for seed in range(3):
        a = make_section(folder, seed=seed, name=f"S{seed}")
        a.write_h5ad(folder / f"S{seed}.h5ad")
        out.append(a)
    return out, [folder / f"S{s}.h5ad" for s in range(3)]


@pytest.fixture(scope="module")
def model(sections):
    with progress_off():
        return phg2st.tl.fit(sections[0][0], max_epochs=1, **KW)


# -- data loss ---------------------------------------------------------------------------------------------------------
def test_save_replaces_only_a_model_file(model, tmp_path):
    """`save(overwrite=True)` replaces an earlier model file, and never a folder or another file (issue 13)."""
    path = tmp_path / "model.pt"
    model.save(path)
    first = path.read_bytes()
    model.save(path, overwrite=True)  # an earlier model file: replaced
    assert phg2st.PHG2ST.load(path).genes == model.genes and len(path.read_bytes()) == len(first)
    folder = tmp_path / "results"
    (folder / "run1").mkdir(parents=True)
    (folder / "run1" / "table.csv").write_text("weeks of work")
    before = snapshot(folder)
    with pytest.raises(IsADirectoryError):
        model.save(folder, overwrite=True)
    assert_unchanged(folder, before)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pt", "results"]  # no temporary left


def test_cli_fit_never_deletes_a_folder_given_as_out(sections, tmp_path, capsys):
    """`phg2st fit --out FOLDER --overwrite` used to delete FOLDER after training; now it is a usage error at once."""
    _, paths = sections
    folder = tmp_path / "experiment"
    folder.mkdir()
    (folder / "notes.md").write_text("keep me")
    before = snapshot(folder)
    for extra in ([], ["--overwrite"]):
        with pytest.raises(SystemExit) as exit_:
            main(["fit", str(paths[0]), "--out", str(folder), "--use-rep", "X_tiny", "--protocol", "none", *extra])
        assert exit_.value.code == 2 and "is a folder" in capsys.readouterr().err
    assert_unchanged(folder, before)
    other = tmp_path / "table.h5ad"
    other.write_bytes(b"not a model")
    with pytest.raises(SystemExit) as exit_:
        main(["fit", str(paths[0]), "--out", str(other), "--use-rep", "X_tiny", "--protocol", "none", "--overwrite"])
    assert exit_.value.code == 2 and "not a phg2st-sc model file" in capsys.readouterr().err
    assert other.read_bytes() == b"not a model"


def test_benchmark_resumes_only_its_own_results(tmp_path):
    """A results folder is resumed only by the run that wrote it: another protocol, or a folder of the user's, is
    refused before anything is written (a resume used to mix the two runs' folds)."""
    paths = []
    for s in range(3):
        a = phg2st.datasets.synthetic(60, 5, n_features=4, grid_size=0, seed=s, section=f"S{s}")
        del a.uns["X_synthetic"]
        paths.append(tmp_path / f"S{s}.h5ad")
        a.write_h5ad(paths[-1])
    run = dict(folds="leave_one_section_out", methods=["mean"], seeds=[0], spots=["heldout"])
    out = tmp_path / "bench"
    first = phg2st.tl.benchmark(paths, protocols=["heldout"], out=out, **run)
    again = phg2st.tl.benchmark(paths, protocols=["heldout"], out=out, **run)  # the same run: resumed
    pd.testing.assert_frame_equal(first.table, again.table)
    # another embedding cache's folder does not change the results: resumed too; another encoder setting is refused
    moved = phg2st.tl.benchmark(
        paths, protocols=["heldout"], out=out, embed_kwargs={"cache_dir": tmp_path / "c"}, **run
    )
    pd.testing.assert_frame_equal(first.table, moved.table)
    before = snapshot(out)
    with pytest.raises(ValueError, match="another benchmark run .*'embed_kwargs'"):
        phg2st.tl.benchmark(paths, protocols=["heldout"], out=out, embed_kwargs={"mpp": 0.5}, **run)
    assert_unchanged(out, before)
    with pytest.raises(ValueError, match="another benchmark run .*'protocols'"):
        phg2st.tl.benchmark(paths, protocols=["paper"], out=out, **run)
    assert_unchanged(out, before)
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "results.csv").write_text("my own results")
    with pytest.raises(FileExistsError, match="not a benchmark results folder"):
        phg2st.tl.benchmark(paths, protocols=["heldout"], out=mine, **run)
    assert (mine / "results.csv").read_text() == "my own results" and len(list(mine.iterdir())) == 1


# -- images that are not 8-bit RGB -------------------------------------------------------------------------------------
def test_high_bit_grey_png_is_scaled_not_saturated(tmp_path):
    """A 16-bit greyscale PNG used to read as all 255 (Pillow clips); it is scaled by 65535 -> 255 and replicated."""
    from phg2st_sc._image import read_downscaled, read_full

    grey = (np.arange(64 * 80, dtype=np.uint32).reshape(64, 80) * 16).astype(np.uint16)
    Image.fromarray(grey).save(tmp_path / "g16.png")
    rgb = read_full(tmp_path / "g16.png")
    assert rgb.shape == (64, 80, 3) and rgb.dtype == np.uint8
    np.testing.assert_array_equal(rgb[..., 0], np.rint(grey / 257.0).astype(np.uint8))
    assert (rgb[..., 0] == rgb[..., 2]).all() and rgb.min() == 0 and rgb.max() == round(grey.max() / 257)
    small, scale = read_downscaled(tmp_path / "g16.png", max_size=40)
    assert small.shape == (32, 40, 3) and scale == 0.5
    assert abs(float(small.mean()) - float(rgb.mean())) < 2  # the same picture, not a white one


def test_alpha_and_grey_images_read_as_their_colours(tmp_path):
    from phg2st_sc._image import read_full, to_rgb8

    rgba = np.zeros((8, 8, 4), np.uint8)
    rgba[..., 0], rgba[..., 3] = 200, 0  # fully transparent red: alpha is dropped, not composited
    Image.fromarray(rgba).save(tmp_path / "rgba.png")
    assert (read_full(tmp_path / "rgba.png") == [200, 0, 0]).all()
    grey_alpha = np.stack([np.full((8, 8), 90, np.uint8), np.zeros((8, 8), np.uint8)], -1)
    assert (to_rgb8(grey_alpha) == 90).all()
    assert (to_rgb8(np.full((4, 4), 0.5, np.float32)) == 128).all()  # floats in [0, 1]
    assert (to_rgb8(np.full((4, 4), 128.0)) == 128).all()  # floats in (1, 255]
    assert (to_rgb8(np.full((4, 4, 3), 65535, np.uint16)) == 255).all()
    assert (to_rgb8(np.ones((3, 4, 4), bool), channels_first=True) == 255).all()


@pytest.mark.parametrize("kind", ["float01", "uint16", "grey_uint16"])
def test_spatialdata_images_of_other_types_give_the_same_tiles(sections, kind):
    """A SpatialData image of floats in [0, 1] or of uint16 used to be copied into uint8 unscaled (every tile the
    same); it now gives the tiles of its uint8 original."""
    from spatialdata.models import Image2DModel
    from spatialdata.transformations import Identity

    section = sections[0][1].copy()
    sdata = phg2st.io.to_spatialdata(section)
    key = next(iter(sdata.images))
    full = np.asarray(phg2st.io.image_levels(sdata.images[key])[0].values)  # (3, y, x) uint8
    phg2st.pp.embed_tiles(sdata, encoder=Tiny(), tile_size=16, grid_size=3, key_added="X_ref")
    reference = sdata.tables["table"].obsm["X_ref"]
    values = {
        "float01": full.astype(np.float32) / 255.0,
        "uint16": full.astype(np.uint16) * 256 + 128,  # 16-bit data whose low byte says nothing of the picture
        "grey_uint16": full[:1].astype(np.uint16) * 257,
    }[kind]
    sdata.images[key] = Image2DModel.parse(values, dims=("c", "y", "x"), transformations={"global": Identity()})
    phg2st.pp.embed_tiles(sdata, encoder=Tiny(), tile_size=16, grid_size=3, key_added="X_other")
    other = sdata.tables["table"].obsm["X_other"]
    if kind == "grey_uint16":  # the red channel replicated: the same as embedding a grey copy of the original
        grey = np.repeat(full[:1], 3, axis=0)
        sdata.images[key] = Image2DModel.parse(grey, dims=("c", "y", "x"), transformations={"global": Identity()})
        phg2st.pp.embed_tiles(sdata, encoder=Tiny(), tile_size=16, grid_size=3, key_added="X_ref", overwrite=True)
        reference = sdata.tables["table"].obsm["X_ref"]
    np.testing.assert_allclose(other, reference, atol=1e-6)
    assert np.unique(other.round(4), axis=0).shape[0] > 10  # tiles differ from one another


def test_to_spatialdata_scales_a_uint16_hires_image(sections):
    """`to_spatialdata` used to clip a uint16 hires image to 255 everywhere."""
    a = sections[0][0].copy()
    lib = next(iter(a.uns["spatial"]))
    info = a.uns["spatial"][lib]
    rgb = np.asarray(Image.open(info["metadata"].pop("source_image_path")).convert("RGB"))
    info["images"]["hires"] = rgb.astype(np.uint16) * 257
    sdata = phg2st.io.to_spatialdata(a)
    pixels = np.asarray(phg2st.io.image_levels(sdata.images[f"{lib}_image"])[0].values)
    np.testing.assert_array_equal(np.moveaxis(pixels, 0, -1), rgb)


def test_a_grey_hires_image_is_drawn(sections, tmp_path):
    """A 2-D greyscale hires image is replicated to RGB for the plots (it was passed on as it was)."""
    from phg2st_sc.pl._base import section_view

    a = sections[0][0].copy()
    lib = next(iter(a.uns["spatial"]))
    a.uns["spatial"][lib]["images"]["hires"] = np.full((440, 440), 0.25, np.float32)
    view = section_view(a, None, image=True, spot_scale=1.0)
    assert view.image.shape == (440, 440, 3) and (view.image == 64).all()
    phg2st.pl.spatial(a, "G1", save=tmp_path / "grey.png", show=False)
    assert (tmp_path / "grey.png").stat().st_size > 1000


# -- data prepared otherwise: the model checks its input, in Python and on the command line ---------------------------
def test_prepare_targets_leaves_dense_counts_unchanged():
    """`prepare_targets` normalised a dense float32 `.X` in place, changing the user's counts (found in issue 13)."""
    a = ad.AnnData(np.random.default_rng(0).poisson(20.0, (50, 6)).astype(np.float32))
    before = snapshot(a)
    out = phg2st.tl.prepare_targets(a, "heldout")
    assert_unchanged(a, before)
    assert out.X.max() < 10  # normalised and logged


def test_a_model_prepares_its_own_input(sections, tmp_path):
    """`tl.prepare_targets(counts, model)` makes what `impute` expects; the same data in the CLI gives the same."""
    secs, _ = sections
    counts = []
    for i, a in enumerate(secs[:2]):
        c = a.copy()
        c.X = np.random.default_rng(i).poisson(20.0, c.shape).astype(np.float32)
        counts.append(c)
    trained = phg2st.tl.fit(phg2st.tl.prepare_targets(counts[0], "paper"), max_epochs=1, **KW)
    raw = counts[1]
    phg2st.tl.select_prompts(raw, fraction=0.2, seed=0)
    with pytest.raises(phg2st.InputMismatchError, match=r"prepare_targets\(adata, model\)") as refused:
        phg2st.tl.impute(raw, trained, copy=True)
    ready = phg2st.tl.prepare_targets(raw, trained)
    assert ready.uns["phg2st_targets"]["params"]["target_sum"] == 1e6 and list(ready.var_names) == trained.genes
    python = phg2st.tl.impute(ready, trained, copy=True).layers["phg2st"]
    trained.save(tmp_path / "m.pt")
    raw.write_h5ad(tmp_path / "raw.h5ad")
    ready_other = phg2st.tl.prepare_targets(raw, "heldout")  # prepared, but with another protocol
    ready_other.write_h5ad(tmp_path / "other.h5ad")
    args = ["impute", str(tmp_path / "raw.h5ad"), str(tmp_path / "other.h5ad"), "--model", str(tmp_path / "m.pt"),
            "--out-dir", str(tmp_path / "out"), "--prompt-key", "phg2st_prompt", "--no-progress"]  # fmt: skip
    assert main(args) == 1  # raw.h5ad: prepared by the CLI as the model says; other.h5ad: refused
    cli = ad.read_h5ad(tmp_path / "out" / "raw.h5ad").layers["phg2st"]
    np.testing.assert_allclose(cli, python, rtol=1e-5, atol=1e-6)
    with pytest.raises(phg2st.InputMismatchError) as python_refusal:
        phg2st.tl.impute(ready_other, trained, copy=True)
    assert "differ in ['target_sum']" in str(python_refusal.value) and "carries no record" in str(refused.value)
    assert not (tmp_path / "out" / "other.h5ad").exists()


# -- training that diverges --------------------------------------------------------------------------------------------
def test_training_that_diverges_stops_and_names_the_learning_rate(sections):
    """A diverging run used to return normally, and impute then wrote NaN."""
    with pytest.raises(phg2st.TrainingDivergedError, match=r"lr=1e\+08.*lower it"):
        phg2st.tl.fit(sections[0][0], max_epochs=30, lr=1e8, **KW)


def test_impute_never_writes_non_finite_predictions(sections, model):
    from phg2st_sc._model._module import ModelConfig

    broken = phg2st.PHG2ST(ModelConfig(**model.config), model.genes, model.info)
    broken.module.load_state_dict(model.module.state_dict())
    with torch.no_grad():
        next(p for p in broken.module.parameters() if p.ndim == 2).fill_(float("nan"))
    target = sections[0][1].copy()
    phg2st.tl.select_prompts(target, fraction=0.2, seed=0)
    before = snapshot(target)
    with pytest.raises(phg2st.TrainingDivergedError, match="NaN or infinite values.*nothing was written"):
        phg2st.tl.impute(target, broken)
    assert_unchanged(target, before)


# -- checkpoints after every epoch, and interrupts -----------------------------------------------------------------------
def _train_until_killed(paths, folder: Path, kill_at: int, run: dict) -> subprocess.CompletedProcess:
    """Train in a child process that SIGKILLs itself at the start of epoch ``kill_at``.

    Its temporary files go below ``folder``'s parent (a killed process cannot remove its temporary folder).
    """
    script = textwrap.dedent(
        f"""
        import os, signal, warnings
        import anndata as ad, lightning as L
        import phg2st_sc as phg2st
        warnings.simplefilter("ignore")
        phg2st.settings.progress = False

        class Kill(L.Callback):
            def on_train_epoch_start(self, trainer, *args):
                if trainer.current_epoch == {kill_at}:
                    os.kill(os.getpid(), signal.SIGKILL)

        sections = [ad.read_h5ad(p) for p in {[str(p) for p in paths]!r}]
        phg2st.tl.fit(sections, checkpoint_dir={str(folder)!r}, callbacks=[Kill()], **{run!r})
        """
    )
    tmp = folder.parent / "tmp"
    tmp.mkdir(exist_ok=True)
    env = dict(os.environ, TMPDIR=str(tmp))
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600, env=env)


class Epochs(L.Callback):
    """Records the epochs a run trains."""

    def __init__(self):
        self.trained = []

    def on_train_epoch_start(self, trainer, *args):
        self.trained.append(trainer.current_epoch)


@pytest.mark.parametrize("validation", ["auto", None])
def test_the_last_checkpoint_follows_every_epoch(sections, tmp_path, validation):
    """Killed at the start of epoch 4, after the best epoch, the run resumes from epoch 4.

    Lightning alone wrote `last.ckpt` only in epochs with a new best checkpoint, so with validation it lagged at the
    best epoch, and without validation nothing was written until training ended. With validation the learning rate
    is too small to move float32 weights, so the validation PCC never improves after epoch 0 (the best epoch).
    """
    _, paths = sections
    run = {**SMALL, "max_epochs": 6, "lr": 1e-12 if validation else 1e-3, "validation": validation, "seed": 3}
    folder = tmp_path / "c"
    child = _train_until_killed(paths, folder, 4, run)
    assert child.returncode == -9, child.stderr[-2000:]  # SIGKILL: the run really died
    assert torch.load(folder / "last.ckpt", weights_only=True)["epoch"] == 3
    if validation:
        assert [p.name for p in folder.glob("best-*.ckpt")] == ["best-epoch=0.ckpt"]  # the best epoch is long past
    epochs = Epochs()
    resumed = phg2st.tl.fit([ad.read_h5ad(p) for p in paths], checkpoint_dir=folder, resume=True, callbacks=[epochs],
                            **run)  # fmt: skip
    assert epochs.trained == [4, 5] and list(resumed.history_["epoch"]) == list(range(6))


def test_ctrl_c_is_a_keyboard_interrupt_and_the_handler_comes_back(sections):
    """Lightning turned Ctrl-C into `SystemExit(1)` and left SIGINT ignored; a notebook gets `KeyboardInterrupt`."""

    class Interrupt(L.Callback):
        def on_train_epoch_end(self, trainer, *args):
            if trainer.current_epoch == 1:
                raise KeyboardInterrupt

    handler = signal.getsignal(signal.SIGINT)
    with pytest.raises(KeyboardInterrupt, match="interrupted in epoch 1"):
        phg2st.tl.fit(sections[0][0], max_epochs=5, callbacks=[Interrupt()], **KW)
    assert signal.getsignal(signal.SIGINT) is handler


def test_ctrl_c_on_the_command_line(sections, tmp_path):
    """A real SIGINT during `phg2st fit`: one line on stderr and exit code 130 (it exited 1, printing nothing)."""
    _, paths = sections
    cmd = [sys.executable, "-m", "phg2st_sc.cli", "fit", *map(str, paths[:2]), "--out", str(tmp_path / "m.pt"),
           "--use-rep", "X_tiny", "--protocol", "none", "--max-epochs", "100000", "--accelerator", "cpu",
           "--fit", "hidden=32", "heads=2", "spot_depth=1", "validation=null", "--no-progress"]  # fmt: skip
    # SIGINT back to its default in the child: a suite started in the background (`nohup ... &`) ignores SIGINT, and
    # an ignored SIGINT is inherited, so the CLI would never see it and this test would hang
    child = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONWARNINGS": "ignore"},
                             preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # fmt: skip
    lines = []
    for line in child.stderr:  # wait until training has started
        lines.append(line)
        if "training" in line:
            break
    time.sleep(3)
    child.send_signal(signal.SIGINT)
    rest = child.stderr.read()
    assert child.wait(timeout=120) == 130, "".join(lines) + rest
    assert rest.strip().splitlines()[-1].startswith("phg2st fit: interrupted (Ctrl-C)")
    assert "Traceback" not in rest and not (tmp_path / "m.pt").exists()


# -- model files ---------------------------------------------------------------------------------------------------------
def test_a_refused_model_file_never_advises_the_unsafe_option(model, tmp_path):
    class Code:
        def __reduce__(self):
            return (print, ("ran",))

    payload = torch.load(_saved(model, tmp_path), weights_only=True)
    torch.save({**payload, "extra": Code()}, tmp_path / "evil.pt")
    with pytest.raises(phg2st.ModelFileError) as err:
        phg2st.PHG2ST.load(tmp_path / "evil.pt")
    message = str(err.value)
    assert "refused unread" in message and "weights_only" not in message and "Re-running" not in message


def test_an_inflating_archive_is_refused_before_torch_reads_it(tmp_path, monkeypatch):
    import zipfile

    path = tmp_path / "bomb.pt"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as z:
        z.writestr("archive/data.pkl", b"\0" * (256 * 2**20))
    assert path.stat().st_size < 2**20

    def tripwire(*args, **kwargs):
        raise AssertionError("torch.load ran on a file that inflates 256 MiB")

    monkeypatch.setattr(torch, "load", tripwire)
    with pytest.raises(phg2st.ModelFileError, match="declares .* of compressed content.*refused before inflating"):
        phg2st.PHG2ST.load(path)


def _saved(model, folder: Path) -> Path:
    path = folder / "good.pt"
    model.save(path, overwrite=path.exists())
    return path


# -- the user's own slots --------------------------------------------------------------------------------------------------
def test_slots_of_phg2st_are_replaced_and_the_users_only_with_overwrite(sections, model, tmp_path):
    target = sections[0][1].copy()
    phg2st.tl.select_prompts(target, fraction=0.2, seed=0)
    phg2st.tl.impute(target, model)
    phg2st.tl.impute(target, model)  # its own slots: replaced
    from phg2st_sc._utils import written_keys

    layers = {"phg2st", "phg2st_std", "phg2st_lo", "phg2st_hi"}  # the default (adaptive) model's uncertainty too
    assert written_keys(target)["layers"] == dict.fromkeys(layers, "tl.impute")
    assert "X_phg2st" in written_keys(target)["obsm"]
    target.write_h5ad(tmp_path / "t.h5ad")
    back = ad.read_h5ad(tmp_path / "t.h5ad")
    phg2st.tl.select_prompts(back, fraction=0.3, seed=1)  # the record survives a file round trip
    phg2st.tl.impute(back, model)
    back.layers["counts"] = back.X.copy()
    with pytest.raises(phg2st.SlotExistsError):
        phg2st.tl.impute(back, model, layer_added="counts")
    phg2st.tl.impute(back, model, layer_added="counts", overwrite=True)  # asked for: replaced, and now its own
    assert "counts" in written_keys(back)["layers"]
    # a new object built from a section keeps the record of the slots it carries over
    lib = next(iter(back.uns["spatial"]))
    whole = phg2st.pp.virtual_spots(back, tissue_mask=np.ones((44, 44), bool), library_id=lib)
    phg2st.tl.select_prompts(whole, fraction=0.2, seed=0)


# -- the command line checks its arguments before any work -------------------------------------------------------------
def test_cli_checks_outputs_settings_and_inputs_first(sections, tmp_path, capsys):
    _, paths = sections
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    model_path = tmp_path / "m.pt"
    model_path.write_bytes(b"")  # present: the output check comes first
    calls = {
        "embed": ["embed", str(paths[0]), "--out-dir", str(blocker / "out")],
        "impute": ["impute", str(paths[0]), "--model", str(model_path), "--out-dir", str(blocker / "out")],
        "fit": ["fit", str(paths[0]), "--out", str(blocker / "m.pt"), "--use-rep", "X_tiny"],
        "fit typo": ["fit", str(paths[0]), "--out", str(tmp_path / "n.pt"), "--use-rep", "X_tiny", "--fit",
                     "patiense=3"],
        "twice": ["fit", str(paths[0]), str(paths[0]), "--out", str(tmp_path / "n.pt"), "--use-rep", "X_tiny"],
        "missing genes file": ["fit", str(paths[0]), "--out", str(tmp_path / "n.pt"), "--genes", str(tmp_path / "g")],
        "benchmark cache": ["benchmark", str(paths[0]), "--out", str(tmp_path / "b"), "--cache-dir",
                            str(blocker / "tiles")],
    }  # fmt: skip
    expected = {"embed": "Cannot write to", "impute": "Cannot write to", "fit": "Cannot write to",
                "fit typo": "did you mean `patience`", "twice": "listed twice", "missing genes file": "no genes file",
                "benchmark cache": "Cannot write to"}  # fmt: skip
    for name, argv in calls.items():
        t = time.perf_counter()
        with pytest.raises(SystemExit) as exit_:
            main(argv)
        err = capsys.readouterr().err
        assert exit_.value.code == 2 and expected[name] in err, (name, err)
        assert time.perf_counter() - t < 30, name  # refused before reading or training anything
    assert not (tmp_path / "n.pt").exists()


def test_a_genes_file_with_a_byte_order_mark_and_crlf(sections, tmp_path):
    from phg2st_sc.cli.fit import read_genes as _read_genes

    path = tmp_path / "genes.txt"
    path.write_bytes("\ufeffG1\r\nG2\r\n# a comment\r\n\r\nG3\r\n".encode())
    assert _read_genes(path) == ["G1", "G2", "G3"]
    _, paths = sections
    out = tmp_path / "m.pt"
    argv = ["fit", str(paths[0]), "--out", str(out), "--use-rep", "X_tiny", "--protocol", "none", "--genes", str(path),
            "--max-epochs", "1", "--accelerator", "cpu", "--fit", "hidden=32", "heads=2", "validation=null",
            "--no-progress"]  # fmt: skip
    assert main(argv) == 0
    assert phg2st.PHG2ST.load(out).genes == ["G1", "G2", "G3"]
    (tmp_path / "bad.txt").write_text("G1\tmarker\nG2\n")
    with pytest.raises(ValueError, match="line 1: .* holds several fields"):
        _read_genes(tmp_path / "bad.txt")
    (tmp_path / "dup.txt").write_text("G1\nG2\nG1\n")
    with pytest.raises(ValueError, match="twice"):
        _read_genes(tmp_path / "dup.txt")


def test_same_section_given_twice_to_fit_but_other_visium_sections_share_barcodes(sections):
    a, b = sections[0][0], sections[0][1]
    with pytest.raises(ValueError, match="are the same section"):
        phg2st.tl.fit([a, a[::-1].copy()], max_epochs=1, **KW)  # reordered: still the same spots
    b = b.copy()
    b.obs_names = a.obs_names  # barcodes repeat across Visium sections; the positions differ
    b.obsm["spatial"] = np.asarray(b.obsm["spatial"]) + 7.0
    before = snapshot(b)
    phg2st.tl.fit([a, b], max_epochs=1, **KW)
    assert_adata_equal(b, before)


# -- found by a hostile review of the first round of these fixes --------------------------------------------------------
def test_cli_impute_never_replaces_its_own_input(sections, model, tmp_path, capsys):
    """`phg2st impute X.h5ad --out-dir <X's folder>`: skipped X as done, or with --overwrite replaced the counts."""
    folder = tmp_path / "data"
    folder.mkdir()
    a = sections[0][1].copy()
    a.write_h5ad(folder / "S1.h5ad")
    model.save(folder / "m.pt")
    before = snapshot(folder / "S1.h5ad")
    for extra in ([], ["--overwrite"]):
        with pytest.raises(SystemExit) as exit_:
            main(["impute", str(folder / "S1.h5ad"), "--model", str(folder / "m.pt"), "--out-dir", str(folder), *extra])
        assert exit_.value.code == 2 and "replaced by its own output" in capsys.readouterr().err
    assert_unchanged(folder / "S1.h5ad", before)


def test_wide_integer_images_holding_8_bit_values(sections):
    """int32 / uint32 / int64 pixels of 0-255 were scaled by their type's range: every tile black."""
    from spatialdata.models import Image2DModel
    from spatialdata.transformations import Identity

    from phg2st_sc._image import to_rgb8

    sdata = phg2st.io.to_spatialdata(sections[0][1].copy())
    key = next(iter(sdata.images))
    full = np.asarray(phg2st.io.image_levels(sdata.images[key])[0].values)
    phg2st.pp.embed_tiles(sdata, encoder=Tiny(), tile_size=16, grid_size=0, key_added="X_ref")
    for dtype in (np.int32, np.uint32, np.int64, np.uint16):
        assert (to_rgb8(full.astype(dtype), channels_first=True) == np.moveaxis(full, 0, -1)).all(), dtype
        sdata.images[key] = Image2DModel.parse(full.astype(dtype), dims=("c", "y", "x"),
                                               transformations={"global": Identity()})  # fmt: skip
        phg2st.pp.embed_tiles(sdata, encoder=Tiny(), tile_size=16, grid_size=0, key_added="X_wide")
        table = sdata.tables["table"]
        np.testing.assert_allclose(table.obsm["X_wide"], table.obsm["X_ref"], atol=1e-6, err_msg=str(dtype))


def test_own_normalisation_models_check_the_scale_and_the_log_base(sections):
    """A model of the user's CP10k + log1p refused nothing: CPM + log1p and log base 2 went through."""
    import scanpy as sc

    def normalised(a, target_sum, base=None):
        a = a.copy()
        a.X = np.random.default_rng(0).poisson(30.0, a.shape).astype(np.float32)
        sc.pp.normalize_total(a, target_sum=target_sum)
        sc.pp.log1p(a, base=base)
        return a

    secs, _ = sections
    trained = phg2st.tl.fit(normalised(secs[0], 1e4), max_epochs=1, **KW)
    assert trained.info["normalization"]["library_size"] == pytest.approx(1e4, rel=1e-3)
    same = normalised(secs[1], 1e4)
    phg2st.tl.select_prompts(same, fraction=0.2, seed=0)
    phg2st.tl.impute(same, trained)  # the same normalisation: accepted
    for target_sum, base, match in [(1e6, None, "100 times as much"), (1e4, 2, "base 2.0")]:
        other = normalised(secs[1], target_sum, base)
        phg2st.tl.select_prompts(other, fraction=0.2, seed=0)
        with pytest.raises(phg2st.InputMismatchError, match=match):
            phg2st.tl.impute(other, trained)


def test_cli_overwrite_replaces_slots_of_earlier_versions(sections, model, tmp_path, capsys):
    """Files of earlier versions have no record of what phg2st-sc wrote; `--overwrite` lets the CLI replace them."""
    a = sections[0][1].copy()
    phg2st.tl.select_prompts(a, fraction=0.2, seed=0)
    phg2st.tl.impute(a, model)
    del a.uns["phg2st_written"]  # as an earlier version wrote it
    a.write_h5ad(tmp_path / "old.h5ad")
    model.save(tmp_path / "m.pt")
    args = ["impute", str(tmp_path / "old.h5ad"), "--model", str(tmp_path / "m.pt"), "--out-dir", str(tmp_path / "o"),
            "--no-progress"]  # fmt: skip
    assert main(args) == 1 and "`--overwrite` on the command line" in capsys.readouterr().err
    assert main([*args, "--overwrite"]) == 0
    assert "phg2st" in ad.read_h5ad(tmp_path / "o" / "old.h5ad").layers


def test_cli_expands_a_tilde_after_the_equals_sign(sections, model, tmp_path, monkeypatch):
    """`--out-dir=~/res` (the shell leaves `~` alone there) passed the early check, then failed after the work."""
    monkeypatch.setenv("HOME", str(tmp_path))
    _, paths = sections
    model.save(tmp_path / "m.pt")
    assert main(["impute", str(paths[1]), "--model=~/m.pt", "--out-dir=~/res", "--no-progress"]) == 0
    assert (tmp_path / "res" / "S1.h5ad").is_file()


def test_simulated_sections_with_the_same_layout_are_different_sections():
    """`datasets.synthetic` gives every seed the same spot names and layout: they were refused as one section."""
    secs = [phg2st.datasets.synthetic(120, 6, n_features=4, grid_size=0, seed=s) for s in (0, 1)]
    for a in secs:
        phg2st.pp.build_hypergraph(a, use_rep="X_synthetic")
    model = phg2st.tl.fit(secs, use_rep="X_synthetic", max_epochs=1, validation=None, accelerator="cpu",
                          config=dict(hidden=32, heads=2, spot_depth=1, use_neighbour_branch=False))  # fmt: skip
    assert model.info["training_sections"]


def test_results_of_impute_and_baseline_may_share_a_scratch_layer(sections, model):
    a = sections[0][1].copy()
    phg2st.tl.select_prompts(a, fraction=0.2, seed=0)
    phg2st.tl.impute(a, model, layer_added="pred")
    phg2st.tl.baseline(a, method="idw", layer_added="pred")  # results replace results
    phg2st.tl.impute(a, model, layer_added="pred")
    with pytest.raises(phg2st.SlotExistsError, match="holds the output of `tl.select_prompts`"):
        phg2st.tl.baseline(a, method="idw", layer_added="phg2st_prompt")  # but not the prompts' record


def test_settings_lightning_accepts_and_numpy_integers(sections):
    a = sections[0][0]
    phg2st.tl.fit(a, max_epochs=np.int64(1), patience=0, seed=np.uint32(3), **KW)


def test_cli_checks_fit_setting_values_before_reading_inputs(tmp_path, capsys):
    missing = str(tmp_path / "not_there.h5ad")
    for setting, message in [("validation=none", "`validation` must be"), ("lr=-1", "`lr` must be"),
                             ("hidden=30", "multiple of `heads`")]:  # fmt: skip
        with pytest.raises(SystemExit) as exit_:
            main(["fit", missing, "--out", str(tmp_path / "m.pt"), "--fit", setting])
        assert exit_.value.code == 2 and message in capsys.readouterr().err, setting


def test_sigterm_during_training_exits_143_not_0(sections, tmp_path):
    """Lightning turns SIGTERM into a `SystemExit` with no code (exit 0, "success"); it was also reported as Ctrl-C."""
    _, paths = sections
    cmd = [sys.executable, "-m", "phg2st_sc.cli", "fit", *map(str, paths[:2]), "--out", str(tmp_path / "m.pt"),
           "--use-rep", "X_tiny", "--protocol", "none", "--max-epochs", "100000", "--accelerator", "cpu",
           "--checkpoint-dir", str(tmp_path / "c"), "--fit", "hidden=32", "heads=2", "spot_depth=1",
           "validation=null", "--no-progress"]  # fmt: skip
    child = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    for line in child.stderr:
        if "training" in line:
            break
    deadline = time.time() + 120
    while not (tmp_path / "c" / "last.ckpt").exists() and time.time() < deadline:  # Lightning's handler is set
        time.sleep(0.2)
    child.send_signal(signal.SIGTERM)
    rest = child.stderr.read()
    assert child.wait(timeout=120) == 143, rest
    assert "terminated (SIGTERM)" in rest.strip().splitlines()[-1] and "Ctrl-C" not in rest
