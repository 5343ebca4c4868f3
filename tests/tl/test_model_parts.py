"""The model's building blocks against reference implementations (torch-geometric, the sparse form)."""

from __future__ import annotations

import numpy as np
import torch

from phg2st_sc._model._module import WeightedHypergraphConv


def test_hypergraph_conv_matches_torch_geometric_on_binary_incidence():
    from torch_geometric.nn import HypergraphConv

    torch.manual_seed(0)
    n, m, d = 30, 12, 8
    rng = np.random.default_rng(0)
    pairs = {(int(v), int(e)) for e in range(m) for v in rng.choice(n, 4, replace=False)}
    index = torch.tensor(sorted(pairs)).T
    x = torch.randn(n, d)
    ours = WeightedHypergraphConv(d, 5)
    ref = HypergraphConv(d, 5, bias=True)
    with torch.no_grad():
        ref.lin.weight.copy_(ours.lin.weight)
        ref.bias.copy_(torch.randn(5))
        ours.bias.copy_(ref.bias)
    out = ours(x, index, torch.ones(index.shape[1]), m)
    torch.testing.assert_close(out, ref(x, index, num_edges=m), rtol=1e-5, atol=1e-6)


def test_dense_windows_equal_the_sparse_convolution():
    """Per-spot windows as dense (g, g) incidences give the sparse convolution's result, weighted values too."""
    torch.manual_seed(1)
    spots, g, d, k = 7, 9, 6, 3
    rng = np.random.default_rng(1)
    nodes, edges, values = [], [], []
    dense = torch.zeros(spots, g, g)
    for s in range(spots):
        for e in range(g):
            if s == 3 and e == 0:
                continue  # a node without a hyperedge of its own
            members = [e, *rng.choice([j for j in range(g) if j != e], k, replace=False)]
            for v in members:
                val = float(rng.uniform(0.2, 1.0))
                nodes.append(s * g + v)
                edges.append(s * g + e)
                values.append(val)
                dense[s, v, e] += val
    index = torch.tensor([nodes, edges])
    value = torch.tensor(values)
    conv = WeightedHypergraphConv(d, d)
    with torch.no_grad():
        conv.bias.normal_()
    x = torch.randn(spots, g, d)
    sparse_out = conv(x.reshape(spots * g, d), index, value, spots * g).view(spots, g, d)
    torch.testing.assert_close(conv.forward_dense(x, dense), sparse_out, rtol=1e-5, atol=1e-6)


def _binned_slide(n: int = 400):
    """A small Visium HD-like slide (16 µm bins: dozens per tile window) and an untrained model with its input."""
    import phg2st_sc as phg2st
    from phg2st_sc._model._config import ModelConfig
    from phg2st_sc._model._data import slide_batch
    from phg2st_sc._model._model import PHG2ST

    a = phg2st.datasets.synthetic(n, 5, layout="visium_hd", n_features=8, grid_size=5, seed=0)
    phg2st.pp.build_hypergraph(a, use_rep="X_synthetic", k=4)
    a.X = np.log1p(a.X.toarray() if hasattr(a.X, "toarray") else np.asarray(a.X)).astype(np.float32)
    cfg = ModelConfig(n_genes=a.n_vars, feature_dim=8, hidden=16, heads=2, spot_depth=1, neighbour_depth=1, dropout=0.0)
    model = PHG2ST(cfg, list(a.var_names), {"use_rep": "X_synthetic", "hypergraph_key": "phg2st", "layer": None})
    torch.manual_seed(0)
    for p in model.module.parameters():  # heads start at zero: give every weight a value
        torch.nn.init.normal_(p, std=0.2)
    prompt = np.zeros(a.n_obs, dtype=bool)
    prompt[::7] = True
    slide = model.tensors(a, prompt=prompt)
    return model, slide, prompt, lambda mask: slide_batch(slide, mask, np.zeros(slide.n, dtype=bool), cfg.prompt_k)


def test_spots_sharing_a_window_share_one_pass_of_the_neighbour_branch():
    """Bins of one lattice cell have the same window and sub-hypergraph: the branch runs once per distinct window
    and gives every spot what a pass of its own gives (checked against a pass per spot)."""
    model, slide, prompt, batch_of = _binned_slide()
    b = batch_of(prompt)
    module = model.module.eval()
    n = slide.n
    with torch.inference_mode():
        tok, valid = module.neighbour_tokens(b, slice(0, n))
        # the same spots, each window computed for every spot (no sharing)
        g = b["tile_index"].shape[1]
        incidence = torch.zeros((n, g, g))
        index = b["nbr_index"]
        incidence.index_put_((index[0] // g, index[0] % g, index[1] % g), b["nbr_value"], accumulate=True)
        ref_tok, ref_valid = module._window_tokens(b, b["tile_index"], incidence)
        # and a chunk that starts inside the slide
        part, _ = module.neighbour_tokens(b, slice(37, 301))
    distinct = len(torch.unique(b["tile_index"], dim=0))
    assert distinct < n / 5  # the layout shares windows: the test exercises the sharing
    torch.testing.assert_close(tok, ref_tok, rtol=1e-5, atol=1e-6)
    assert torch.equal(valid, ref_valid)
    torch.testing.assert_close(part, ref_tok[37:301], rtol=1e-5, atol=1e-6)


def test_several_prompt_masks_in_one_pass_equal_a_forward_each():
    """``forward_masks`` (the in-context layer's cross-fitted passes) evaluates each mask at the rows asked for,
    equal to a separate forward per mask, across chunk borders (a whole chunk, part of one, none)."""
    model, slide, prompt, batch_of = _binned_slide()
    module = model.module.eval()
    rng = np.random.default_rng(1)
    masks = [prompt, prompt & (rng.uniform(size=slide.n) < 0.5), prompt & (rng.uniform(size=slide.n) < 0.5)]
    rows = [torch.arange(slide.n), *(torch.from_numpy(np.sort(rng.choice(150, 30, replace=False))) for _ in masks[1:])]
    with torch.inference_mode():
        got = module.forward_masks([batch_of(m) for m in masks], rows, chunk=97)
        for mask, r, res in zip(masks, rows, got, strict=True):
            ref = module(batch_of(mask))
            assert set(res) == {"pred", "latent"}
            for key in res:
                torch.testing.assert_close(res[key], ref[key][r], rtol=1e-5, atol=1e-5)
    assert not torch.allclose(got[1]["pred"], got[0]["pred"][rows[1]])  # the masks matter (the test can fail)


def test_the_cross_fitted_folds_share_the_slide_tensors_and_differ_in_their_prompts():
    """Each fold's input holds only its prompt entries of its own; the slide's tensors are one copy (on a GPU, six
    copies of a large slide's tiles would not fit)."""
    from phg2st_sc._model._model import PROMPT_KEYS

    model, slide, prompt, batch_of = _binned_slide()
    full = batch_of(prompt)
    folds, batches, rows = model._fold_batches(slide, prompt, "cpu", full)
    assert len(batches) == len(folds) == len(rows) == 5
    for b, part in zip(batches, folds, strict=True):
        assert set(b) == set(full)
        for k in full:
            assert (b[k] is full[k]) == (k not in PROMPT_KEYS), k
        held_out = np.flatnonzero(prompt)[part]
        assert not b["prompt"][held_out].any() and int(b["prompt"].sum()) == prompt.sum() - len(part)


def test_prompt_attention_projects_each_prompt_once_and_equals_a_projection_per_spot():
    """The prompt attention's keys and values are projected once per prompt and gathered to the spots; the same
    as projecting each spot's K prompt tokens (the plain form), on a chunk that starts inside the slide."""
    import torch.nn.functional as F

    model, slide, prompt, batch_of = _binned_slide()
    module = model.module.eval()
    b = batch_of(prompt)
    sl = slice(40, 260)
    with torch.inference_mode():
        t_s = module.spot_tokens(b)
        got = module.prompt_context(b, t_s, b["y"], sl)
        idx, dist = b["prompt_idx"][sl], b["prompt_dist"][sl]
        tokens = module.prompt_proj(b["y"][idx]) + module.prompt_img(t_s[idx])  # (n, K, h): per spot
        bias = -F.softplus(module.distance_slope).view(1, -1, 1, 1) * dist[:, None, None, :]
        ref = module.prompt_norm(module.prompt_attn(t_s[sl].unsqueeze(1), tokens, bias).squeeze(1))
        shuffled = module.prompt_context({**b, "prompt_idx": b["prompt_idx"].flip(1)}, t_s, b["y"], sl)
    assert idx.shape[1] > 1 and len(torch.unique(idx)) < idx.numel()  # spots share prompts: gathering matters
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(shuffled, got, atol=1e-4)  # each spot's prompts keep their own distances
