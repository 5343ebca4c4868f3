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
