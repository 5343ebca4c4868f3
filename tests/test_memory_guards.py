"""Memory: steps that would allocate more than the machine has fail first, with the setting that lowers it."""

from __future__ import annotations

import numpy as np
import pytest
from _compare import assert_adata_equal
from _synthetic import SMALL
from scipy import sparse

import phg2st_sc as phg2st
from phg2st_sc import _utils
from phg2st_sc._model import _plan

pytestmark = [
    pytest.mark.filterwarnings("ignore::UserWarning", "ignore::DeprecationWarning"),
    pytest.mark.usefixtures("no_progress"),
]


def test_attention_estimate_is_linear_with_windows_and_quadratic_without():
    config = {"use_spot_branch": True, "use_image": True, "heads": 4, "spot_depth": 2, "attention_window": 1024}
    windowed = [_plan.attention_bytes(n, config, training=True) for n in (10_000, 100_000)]
    assert windowed[1] == 10 * windowed[0]
    full = {**config, "attention_window": 10**6}
    assert _plan.attention_bytes(100_000, full, training=True) == 100 * _plan.attention_bytes(
        10_000, full, training=True
    )
    # the measured 12.1 GiB of a full-attention training step at 10,000 spots (docs/benchmarks.md) is within 2x
    assert 6 < _plan.attention_bytes(10_000, full, training=True) / 2**30 < 24
    assert _plan.attention_bytes(10_000, {**config, "use_spot_branch": False}, training=True) == 0
    # inference: a few windows at a time, so bounded whatever the slide's size; full attention stays quadratic
    from phg2st_sc._model._module import INFERENCE_WINDOWS

    bound = _plan.attention_bytes(INFERENCE_WINDOWS * 1024, config, training=False)
    assert _plan.attention_bytes(600_000, config, training=False) == bound <= 2**30
    assert _plan.attention_bytes(10_000, full, training=False) == 2 * 4 * 10_000**2 * 4


def test_windows_in_inference_go_a_few_at_a_time_with_the_same_result(monkeypatch):
    """Inference applies a transformer block to INFERENCE_WINDOWS windows at a time: the same tokens as all at once."""
    import torch

    from phg2st_sc._model import _module

    torch.manual_seed(0)
    block = _module.TransformerBlock(16, 2, 0.0).eval()
    t = torch.randn(1000, 16)
    order = torch.randperm(1000)
    with torch.no_grad():
        monkeypatch.setattr(_module, "INFERENCE_WINDOWS", 3)
        chunked = _module.windowed(block, t, order, 64)  # 16 windows, the last padded: 6 chunks
        monkeypatch.setattr(_module, "INFERENCE_WINDOWS", 10**6)
        whole = _module.windowed(block, t, order, 64)
    torch.testing.assert_close(chunked, whole, rtol=1e-6, atol=1e-6)
    assert not torch.allclose(whole, t)


def test_fit_and_impute_refuse_attention_that_cannot_fit(monkeypatch, synthetic_section, tmp_path):
    a = synthetic_section()  # 81 spots
    model = phg2st.tl.fit(a, max_epochs=1, **SMALL)
    phg2st.tl.select_prompts(a, fraction=0.2)
    before = a.copy()
    # 81 spots with full attention at training: 4 * 1 block * 2 heads * 81^2 * 4 bytes = 210 kB
    monkeypatch.setattr(_utils, "available_memory", lambda: 100_000)
    with pytest.raises(phg2st.InsufficientMemoryError, match="lower `attention_window`"):
        phg2st.tl.fit(a, max_epochs=1, checkpoint_dir=tmp_path / "c", **SMALL)
    assert not (tmp_path / "c").exists()  # refused before training: no checkpoint folder either
    monkeypatch.setattr(_utils, "available_memory", lambda: 50_000)
    with pytest.raises(
        phg2st.InsufficientMemoryError,
        match=r"Predicting section \(81 spots\) .* needs about 0\.1 MiB.*attention_window=1024",
    ):
        phg2st.tl.impute(a, model)
    assert_adata_equal(a, before)
    monkeypatch.setattr(_utils, "available_memory", lambda: 10**12)
    phg2st.tl.impute(a, model)
    assert "phg2st" in a.layers


def test_densifying_a_huge_sparse_matrix_is_refused(monkeypatch):
    a = phg2st.datasets.synthetic(300, 40, layout="visium", n_features=4, grid_size=3, seed=0)
    assert sparse.issparse(a.X)  # what the guard is about
    phg2st.tl.select_prompts(a, fraction=0.1)
    before = a.copy()
    monkeypatch.setattr(_utils, "available_memory", lambda: 10_000)
    with pytest.raises(phg2st.InsufficientMemoryError, match="dense needs about .* select the genes"):
        phg2st.tl.baseline(a, method="idw")
    assert_adata_equal(a, before)
    monkeypatch.undo()
    out = phg2st.tl.baseline(a, method="idw", copy=True)
    assert np.isfinite(out.layers["baseline_idw"]).all()


def test_hypergraph_convolution_in_inference_gathers_slices_with_the_same_result(monkeypatch):
    """Inference gathers a large hypergraph's incidences a slice at a time: bit for bit the single gather."""
    import torch

    from phg2st_sc._model import _module

    torch.manual_seed(1)
    n = 500
    conv = _module.WeightedHypergraphConv(8, 8)
    index = torch.stack([torch.randint(0, n, (5 * n,)), torch.randint(0, n, (5 * n,))])
    value, x = torch.rand(5 * n), torch.randn(n, 8)
    with torch.no_grad():
        monkeypatch.setattr(_module, "INFERENCE_INCIDENCES", 97)
        sliced = conv(x, index, value, n)
        monkeypatch.setattr(_module, "INFERENCE_INCIDENCES", 10**9)
        whole = conv(x, index, value, n)
    assert torch.equal(sliced, whole)
    with torch.enable_grad():  # training takes the single gather (autograd), whatever the size
        monkeypatch.setattr(_module, "INFERENCE_INCIDENCES", 97)
        assert torch.equal(conv(x, index, value, n).detach(), whole)


def test_impute_refuses_kriged_fields_that_cannot_fit(monkeypatch, synthetic_section):
    """`kriged_field`: one (spots x genes) float32 field per pass (the full one and the five cross-fitted ones)."""
    a = synthetic_section()  # 81 spots
    small = SMALL | {"config": SMALL["config"] | {"kriged_field": True}}
    model = phg2st.tl.fit(a, variant="adaptive", max_epochs=1, validation=None, **small)
    phg2st.tl.select_prompts(a, fraction=0.5)
    before = a.copy()
    fields = 6 * a.n_obs * len(model.genes) * 4
    monkeypatch.setattr(_plan, "check_attention_memory", lambda *args, **kw: None)  # this guard alone
    monkeypatch.setattr(_utils, "available_memory", lambda: int(fields / _utils.MEMORY_LIMIT) - 1)
    with pytest.raises(phg2st.InsufficientMemoryError, match=r"81 spots with `kriged_field` \(6 passes"):
        phg2st.tl.impute(a, model)
    assert_adata_equal(a, before)
    # the network alone makes one pass: a sixth of the memory
    phg2st.tl.impute(a, model, in_context=False)
    monkeypatch.setattr(_utils, "available_memory", lambda: int(fields / _utils.MEMORY_LIMIT) + 1)
    phg2st.tl.impute(a, model)
    assert np.isfinite(a.layers["phg2st"]).all()
