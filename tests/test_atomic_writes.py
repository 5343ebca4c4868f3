"""No partial writes: a failure at any point of a pp/tl function leaves the user's AnnData exactly as it was, and an
interrupted model or cache write never leaves a file that loads as valid."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch
from _compare import assert_adata_equal
from _synthetic import SMALL, Tiny, make_section, progress_off

import phg2st_sc as phg2st
import phg2st_sc._utils as utils

pytestmark = [
    pytest.mark.filterwarnings("ignore::UserWarning", "ignore::DeprecationWarning"),
    pytest.mark.usefixtures("no_progress"),
]


class Injected(RuntimeError):
    pass


@pytest.fixture(scope="module")
def section(tmp_path_factory):
    a = make_section(tmp_path_factory.mktemp("atomic"), side=7)
    grid = np.round((a.obsm["spatial"] - 60) / 40).astype(int)
    a.obs["array_row"], a.obs["array_col"] = grid[:, 1], grid[:, 0]
    phg2st.tl.select_prompts(a, fraction=0.2, seed=0)
    phg2st.tl.baseline(a, method="idw")  # an existing layer and uns entry that a rerun replaces
    return a


@pytest.fixture(scope="module")
def model(section):
    with progress_off():
        return phg2st.tl.fit(section, max_epochs=1, **SMALL)


CALLS = {
    "pp.embed_tiles": lambda a, m: phg2st.pp.embed_tiles(
        a, encoder=Tiny(), tile_size=16, grid_size=3, key_added="X_new"
    ),  # fmt: skip
    "pp.build_hypergraph": lambda a, m: phg2st.pp.build_hypergraph(a, use_rep="X_tiny", k=4),
    "pp.smooth": lambda a, m: phg2st.pp.smooth(a),
    "pp.select_genes": lambda a, m: phg2st.pp.select_genes(a, list(a.var_names[:5])),
    "tl.select_prompts": lambda a, m: phg2st.tl.select_prompts(a, fraction=0.3, seed=5),
    "tl.baseline (replaces a layer)": lambda a, m: phg2st.tl.baseline(a, method="idw", k=3),
    "tl.baseline (stack)": lambda a, m: phg2st.tl.baseline(a, method="stack", use_rep="X_tiny", n_pcs=4),
    "tl.impute": lambda a, m: phg2st.tl.impute(a, m),
}


_REAL_ASSIGN = utils._assign


@contextmanager
def write_hook(monkeypatch, fail_at: int | None = None) -> Iterator[list]:
    """Record the keys that `write_slots` writes (yielded list); with ``fail_at``, that write raises `Injected`."""
    seen: list = []

    def hook(container, key, value):
        seen.append(key)
        if len(seen) == fail_at:
            raise Injected(f"write {fail_at}")
        _REAL_ASSIGN(container, key, value)

    with monkeypatch.context() as m:
        m.setattr(utils, "_assign", hook)
        yield seen


@pytest.mark.parametrize("name", list(CALLS))
def test_a_failure_at_any_write_leaves_the_anndata_as_it_was(monkeypatch, section, model, name):
    call = CALLS[name]
    changed = section.copy()
    with write_hook(monkeypatch) as writes:
        call(changed, model)
    n = len(writes)
    assert n >= 1
    # without a failure the call does change the object (so the comparisons below can see a change)
    with pytest.raises(AssertionError):
        assert_adata_equal(changed, section)
    for fail_at in range(1, n + 1):  # the first write fails (nothing written yet), ..., the last one fails
        a = section.copy()
        with write_hook(monkeypatch, fail_at), pytest.raises(Injected):
            call(a, model)
        assert_adata_equal(a, section)


def test_an_interrupt_during_the_computation_changes_nothing(section):
    """A KeyboardInterrupt (or any error) in the middle of the encoder's batches: nothing is written."""
    a = section.copy()
    calls = []

    class Dying(Tiny):
        def forward(self, x):
            calls.append(1)
            if len(calls) == 2:
                raise KeyboardInterrupt
            return super().forward(x)

    with pytest.raises(KeyboardInterrupt):
        phg2st.pp.embed_tiles(a, encoder=Dying(), tile_size=16, grid_size=3, batch_size=8, key_added="X_new")
    assert_adata_equal(a, section)


def test_a_view_is_not_left_half_written(monkeypatch, section, model):
    """Writing into a view makes it an actual AnnData with new containers; the undo must find them."""
    parent = section.copy()
    view = parent[:, :6]
    # anndata warns that the view becomes a copy
    with write_hook(monkeypatch, fail_at=2), pytest.warns(UserWarning), pytest.raises(Injected):
        phg2st.tl.baseline(view, method="idw", layer_added="new_layer")
    assert "new_layer" not in view.layers and "new_layer" not in view.uns
    assert_adata_equal(parent, section)  # the parent is never touched through a view


def test_select_genes_undoes_its_record_if_the_subset_fails(monkeypatch, section):
    a = section.copy()

    def broken(self, index):
        raise Injected("subset failed")

    monkeypatch.setattr(type(a), "_inplace_subset_var", broken)
    with pytest.raises(Injected):
        phg2st.pp.select_genes(a, list(a.var_names[:5]))
    assert_adata_equal(a, section)


def test_finish_refuses_a_value_of_the_wrong_shape_before_writing(section):
    a = section.copy()
    with pytest.raises(ValueError, match="does not fit"):
        utils.write_slots(a, {("obsm", "ok"): np.zeros((a.n_obs, 2)), ("layers", "bad"): np.zeros((3, 3))}, copy=False)
    assert_adata_equal(a, section)


def test_an_interrupted_model_save_leaves_no_valid_file(monkeypatch, model, tmp_path):
    path = tmp_path / "model.pt"
    model.save(path)
    before = path.read_bytes()
    real_save = torch.save

    def dies_halfway(obj, f, *args, **kwargs):
        real_save(obj, f, *args, **kwargs)
        data = Path(f).read_bytes()
        Path(f).write_bytes(data[: len(data) // 2])  # half the bytes are on disk when the process "dies"
        raise Injected("killed while writing")

    monkeypatch.setattr(torch, "save", dies_halfway)
    with pytest.raises(Injected):
        model.save(path, overwrite=True)
    with pytest.raises(Injected):
        model.save(tmp_path / "new.pt")
    monkeypatch.undo()
    assert path.read_bytes() == before  # the old model is intact
    assert not (tmp_path / "new.pt").exists()
    assert sorted(os.listdir(tmp_path)) == ["model.pt"]  # no temporary left behind
    phg2st.PHG2ST.load(path)


def test_a_half_written_cache_batch_is_recomputed(tmp_path, section):
    """The embedding cache writes each batch atomically; a damaged batch file is not trusted but recomputed."""
    a = section.copy()
    kw = dict(encoder=Tiny(), tile_size=16, grid_size=3, batch_size=16, key_added="X_c", cache_dir=tmp_path)
    phg2st.pp.embed_tiles(a, **kw)
    files = sorted(tmp_path.rglob("batch_*.npy"))
    files[1].write_bytes(files[1].read_bytes()[:100])  # a truncated batch
    again = phg2st.pp.embed_tiles(section.copy(), **kw, copy=True)
    assert again.uns["X_c"]["params"]["batches_from_cache"] == len(files) - 1
    np.testing.assert_array_equal(again.obsm["X_c"], a.obsm["X_c"])
    assert not list(tmp_path.rglob(".*"))  # no temporary file or folder left
