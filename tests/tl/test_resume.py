"""Long runs survive: a training run killed after some epochs resumes to the same model as an uninterrupted one."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import anndata as ad
import numpy as np
import pytest
import torch
from _compare import assert_same_weights
from _synthetic import SMALL, make_section, progress_off

import phg2st_sc as phg2st

RUN = dict(max_epochs=6, seed=11, lr=1e-3, step_size=2, gamma=0.5, dropout=0.3, prompt_fraction=(0.1, 0.4))

pytestmark = [
    pytest.mark.filterwarnings("ignore::UserWarning", "ignore::DeprecationWarning"),
    pytest.mark.usefixtures("no_progress"),
]


@pytest.fixture(scope="module")
def sections(tmp_path_factory):
    """Three sections written to h5ad (the child process reads the same files); the third validates ("auto")."""
    folder = tmp_path_factory.mktemp("resume")
    paths = []
    for seed in range(3):
        paths.append(folder / f"S{seed}.h5ad")
        make_section(folder, seed=seed, name=f"S{seed}").write_h5ad(paths[-1])
    return paths


@pytest.fixture(scope="module")
def full(sections, tmp_path_factory):
    """The uninterrupted run (with checkpoints) that the resumed runs must reproduce."""
    folder = tmp_path_factory.mktemp("full")
    with progress_off():
        model = phg2st.tl.fit([ad.read_h5ad(p) for p in sections], checkpoint_dir=folder, **SMALL, **RUN)
    return model, folder


def _kill_and_resume(paths, folder, hook: str) -> subprocess.CompletedProcess:
    """Train in a child process that SIGKILLs itself at ``hook`` of epoch 3 (checkpoints of epochs 0-2 exist).

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
            def {hook}(self, trainer, *args):
                if trainer.current_epoch == 3:
                    os.kill(os.getpid(), signal.SIGKILL)

        sections = [ad.read_h5ad(p) for p in {[str(p) for p in paths]!r}]
        phg2st.tl.fit(sections, checkpoint_dir={str(folder)!r}, callbacks=[Kill()], **{SMALL!r}, **{RUN!r})
        print("not killed")
        """
    )
    tmp = folder.parent / "tmp"
    tmp.mkdir(exist_ok=True)
    env = dict(os.environ, TMPDIR=str(tmp))
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600, env=env)


@pytest.mark.parametrize("hook", ["on_train_epoch_start", "on_train_batch_end"])  # between epochs, mid-epoch
def test_killed_run_resumes_to_the_uninterrupted_result(sections, full, tmp_path, hook):
    data = [ad.read_h5ad(p) for p in sections]
    full, full_folder = full
    assert (full_folder / "last.ckpt").is_file() and list(full_folder.glob("best-epoch=*.ckpt"))

    folder = tmp_path / "killed"
    child = _kill_and_resume(sections, folder, hook)
    assert child.returncode == -9, child.stderr[-2000:]  # SIGKILL: the run really died
    assert "not killed" not in child.stdout
    partial = torch.load(folder / "last.ckpt", weights_only=True)
    assert partial["epoch"] == 2  # the last complete epoch before the kill

    resumed = phg2st.tl.fit(data, checkpoint_dir=folder, resume=True, **SMALL, **RUN)
    assert_same_weights(full, resumed)
    assert resumed.info["epochs_trained"] == full.info["epochs_trained"] == RUN["max_epochs"]
    assert resumed.info["best_epoch_val_pcc"] == full.info["best_epoch_val_pcc"]
    cols = ["epoch", "train_loss", "val_loss", "val_pcc", "lr"]
    assert len(resumed.history_) == RUN["max_epochs"]
    np.testing.assert_array_equal(resumed.history_[cols].to_numpy(), full.history_[cols].to_numpy())
    # the predictions agree bit for bit too
    c = ad.read_h5ad(sections[0])
    phg2st.tl.select_prompts(c, fraction=0.1, seed=0)
    p1 = phg2st.tl.impute(c, full, copy=True).layers["phg2st"]
    p2 = phg2st.tl.impute(c, resumed, copy=True).layers["phg2st"]
    np.testing.assert_array_equal(p1, p2)


def test_resume_without_validation_and_longer(sections, tmp_path):
    """Without a validation set `last.ckpt` alone carries the run; resuming may raise `max_epochs`."""
    data = [ad.read_h5ad(p) for p in sections]
    kw = {**SMALL, **RUN, "validation": None}
    full = phg2st.tl.fit(data, **{**kw, "max_epochs": 4})
    phg2st.tl.fit(data, checkpoint_dir=tmp_path / "c", **{**kw, "max_epochs": 2})
    assert not list((tmp_path / "c").glob("best-*"))
    longer = phg2st.tl.fit(data, checkpoint_dir=tmp_path / "c", resume=True, **{**kw, "max_epochs": 4})
    assert_same_weights(full, longer)
    assert list(longer.history_["epoch"]) == [0, 1, 2, 3]
    # a finished run resumed with the same max_epochs trains no more and returns the same model
    again = phg2st.tl.fit(data, checkpoint_dir=tmp_path / "c", resume=tmp_path / "c" / "last.ckpt",
                          **{**kw, "max_epochs": 4})  # fmt: skip
    assert_same_weights(full, again)


def test_resume_refuses_other_runs_and_bad_files(sections, tmp_path):
    data = [ad.read_h5ad(p) for p in sections]
    kw = {**SMALL, **RUN, "max_epochs": 1}
    folder = tmp_path / "c"
    # resume=True on an empty folder starts afresh; a fresh run into a folder of old checkpoints is refused
    phg2st.tl.fit(data, checkpoint_dir=folder, resume=True, **kw)
    snapshot = {p.name: p.read_bytes() for p in folder.iterdir()}
    with pytest.raises(FileExistsError, match="resume=True"):
        phg2st.tl.fit(data, checkpoint_dir=folder, **kw)
    with pytest.raises(ValueError, match="another training run"):
        phg2st.tl.fit(data, checkpoint_dir=folder, resume=True, **{**kw, "seed": 12})
    with pytest.raises(ValueError, match="another training run"):
        phg2st.tl.fit([data[1], data[0], data[2]], checkpoint_dir=folder, resume=True, **kw)
    with pytest.raises(ValueError, match="give `checkpoint_dir`"):
        phg2st.tl.fit(data, resume=True, **kw)
    with pytest.raises(FileNotFoundError, match="No checkpoint"):
        phg2st.tl.fit(data, resume=tmp_path / "nope.ckpt", **kw)
    with pytest.raises(TypeError, match="resume"):
        phg2st.tl.fit(data, checkpoint_dir=folder, resume=1, **kw)
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == snapshot  # refused calls wrote nothing
    # a truncated checkpoint, and one that carries pickled code, are refused before training
    truncated = tmp_path / "truncated.ckpt"
    truncated.write_bytes((folder / "last.ckpt").read_bytes()[:2000])
    with pytest.raises(ValueError, match="not a readable training checkpoint"):
        phg2st.tl.fit(data, resume=truncated, **kw)
    evil = tmp_path / "evil.ckpt"
    ckpt = torch.load(folder / "last.ckpt", weights_only=True)
    ckpt["hook"] = os.system  # unpickling would import and reference a function: refused with weights_only
    torch.save(ckpt, evil)
    with pytest.raises(ValueError, match="not a readable training checkpoint"):
        phg2st.tl.fit(data, resume=evil, **kw)
    torch.save({"state_dict": {}}, tmp_path / "other.ckpt")
    with pytest.raises(ValueError, match="not a checkpoint written by"):
        phg2st.tl.fit(data, resume=tmp_path / "other.ckpt", **kw)


def test_a_run_ended_by_early_stopping_stays_ended(sections, tmp_path):
    """Early stopping ended the run: resuming (a rerun of the same job) trains no further epoch."""
    data = [ad.read_h5ad(p) for p in sections]
    kw = {**SMALL, **RUN, "max_epochs": 40, "patience": 1, "lr": 1e-5}  # a tiny learning rate: no improvement
    ended = phg2st.tl.fit(data, checkpoint_dir=tmp_path / "c", **kw)
    assert ended.info["epochs_trained"] < 39  # early stopping did end it
    again = phg2st.tl.fit(data, checkpoint_dir=tmp_path / "c", resume=True, **kw)
    assert len(again.history_) == len(ended.history_)
    assert again.info["best_epoch_val_pcc"] == ended.info["best_epoch_val_pcc"]
    assert_same_weights(ended, again)
    # a larger patience on resume is used (Lightning's own restore would put back the old one) and trains on
    longer = phg2st.tl.fit(data, checkpoint_dir=tmp_path / "c", resume=True, **{**kw, "patience": 1000})
    assert len(longer.history_) == kw["max_epochs"]


def test_resume_from_a_path_in_a_moved_folder(sections, full, tmp_path):
    """A checkpoint folder copied elsewhere resumes from `resume=<path>` with its best epoch remembered."""
    import shutil

    data = [ad.read_h5ad(p) for p in sections]
    kw = {**SMALL, **RUN}
    full, _ = full
    phg2st.tl.fit(data, checkpoint_dir=tmp_path / "a", **{**kw, "max_epochs": 3})
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    shutil.rmtree(tmp_path / "a")
    with pytest.raises(ValueError, match="not in `checkpoint_dir`"):
        phg2st.tl.fit(data, checkpoint_dir=tmp_path / "x", resume=tmp_path / "b" / "last.ckpt", **kw)
    resumed = phg2st.tl.fit(data, resume=tmp_path / "b" / "last.ckpt", **kw)  # continues in b/
    assert_same_weights(full, resumed)
    assert resumed.info["best_epoch_val_pcc"] == full.info["best_epoch_val_pcc"]
    assert sorted(p.name for p in (tmp_path / "b").glob("*.ckpt"))[-1] == "last.ckpt"
    assert not list((tmp_path / "b").glob("*-v1.ckpt"))  # last.ckpt was replaced, not versioned
