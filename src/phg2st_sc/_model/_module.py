"""The PHG2ST network as plain ``nn.Module``s: the math only, no AnnData and no training logic.

Two variants share the histological hypergraph backbone (spot branch and neighbour branch):

- ``"paper"``: the method as the paper describes it. The prompt feature of a spot is the projection of its own
  masked expression row (eq. 1) and queries the spot's neighbour tokens (eq. 5); the result is added to the spot
  token (eq. 6). A prompt's measured values never reach another spot: at held-out spots this variant is an
  image-only predictor (REFERENCE section 3).
- ``"propagated"`` (the network of the default ``"adaptive"`` variant, which adds the in-context layer of
  ``_model/_incontext.py`` when imputing): every spot draws on the measured prompts. Each prompt becomes a token (its projected
  expression plus its image token); every spot attends to its nearest prompts with a learned distance penalty
  per head (position-aware) and query-key similarity between image tokens (feature-aware). The prediction is a
  residual on top of the prompt field interpolated to every spot (kernel averages of the nearest prompts at four
  spatial scales and the prompt mean, mixed per gene with learned weights), so the network refines
  interpolation with the image instead of having to learn it.
"""

from __future__ import annotations

import math
import warnings

import torch
import torch.nn.functional as F
from torch import nn

with warnings.catch_warnings():  # torch-geometric's import uses torch.jit.script, deprecated in recent torch
    warnings.simplefilter("ignore", FutureWarning)
    from torch_geometric.utils import scatter

from phg2st_sc._model._config import ModelConfig

FIELD_BANDWIDTHS = (0.5, 1.0, 2.0, 4.0)  # spot pitches


#: Incidences a hypergraph convolution gathers at a time in inference (above this many): the messages of all of a
#: large slide's incidences at once are (incidences x hidden) floats, 1.5 GB per tensor at 300,000 spots.
INFERENCE_INCIDENCES = 1 << 16


def _scatter_chunked(
    x: torch.Tensor, src: torch.Tensor, weight: torch.Tensor, dst: torch.Tensor, size: int
) -> torch.Tensor:
    """``scatter(weight[:, None] * x[src], dst, reduce="sum")`` over slices of :data:`INFERENCE_INCIDENCES` incidences.

    The slices are added in order into one output, so each row's sum takes its terms in the same order.
    """
    out = x.new_zeros(size, x.shape[1])
    for s in range(0, len(src), INFERENCE_INCIDENCES):
        sl = slice(s, s + INFERENCE_INCIDENCES)
        msg = weight[sl].unsqueeze(-1) * x[src[sl]]
        out.scatter_add_(0, dst[sl].unsqueeze(-1).expand_as(msg), msg)
    return out


class WeightedHypergraphConv(nn.Module):
    """Hypergraph convolution with weighted incidence: ``X' = D_v^-1 H W_e D_e^-1 H^T X Θ``.

    ``H`` holds one value per (node, hyperedge) incidence, ``W_e`` one weight per hyperedge,
    ``D_e = Σ_v H[v, e]`` and ``D_v = Σ_e H[v, e] W_e``. With a binary ``H`` this is torch-geometric's
    ``HypergraphConv`` (Bai et al. 2021) exactly; the weighted form lets the model use the probabilistic incidence
    of ``build_hypergraph``. Nodes without hyperedges get the bias only.
    """

    def __init__(self, in_dim: int, out_dim: int):
        super().__init__()
        self.lin = nn.Linear(in_dim, out_dim, bias=False)
        self.bias = nn.Parameter(torch.zeros(out_dim))

    def forward(self, x: torch.Tensor, index: torch.Tensor, value: torch.Tensor, n_edges: int,
                edge_weight: torch.Tensor | None = None) -> torch.Tensor:  # fmt: skip
        node, edge = index
        x = self.lin(x)
        if edge_weight is None:
            edge_weight = x.new_ones(n_edges)
        d_e = scatter(value, edge, dim=0, dim_size=n_edges, reduce="sum").clamp_min(1e-12)
        w = value * edge_weight[edge]
        d_v = scatter(w, node, dim=0, dim_size=x.shape[0], reduce="sum")
        if torch.is_grad_enabled() or len(node) <= INFERENCE_INCIDENCES:
            e_feat = scatter(value.unsqueeze(-1) * x[node], edge, dim=0, dim_size=n_edges, reduce="sum")
            e_feat = e_feat / d_e.unsqueeze(-1)
            out = scatter(w.unsqueeze(-1) * e_feat[edge], node, dim=0, dim_size=x.shape[0], reduce="sum")
        else:  # inference on a large slide: the same sums, a slice of the incidences at a time
            e_feat = _scatter_chunked(x, node, value, edge, n_edges) / d_e.unsqueeze(-1)
            out = _scatter_chunked(e_feat, edge, w, node, x.shape[0])
        out = out / d_v.clamp_min(1e-12).unsqueeze(-1)
        return out + self.bias

    def forward_dense(self, x: torch.Tensor, incidence: torch.Tensor) -> torch.Tensor:
        """The same convolution on many small hypergraphs at once: ``x`` (B, g, d), ``incidence`` (B, g, g).

        ``incidence[b, v, e]`` is ``H[v, e]`` of hypergraph ``b`` (unit hyperedge weights). Batched matrix products
        replace the gathers and scatters of the sparse form: the neighbour windows are 25 tiles each.
        """
        x = self.lin(x)
        d_e = incidence.sum(1, keepdim=True).clamp_min(1e-12)  # (B, 1, g): per hyperedge
        d_v = incidence.sum(2, keepdim=True).clamp_min(1e-12)  # (B, g, 1): per node
        e_feat = torch.bmm((incidence / d_e).transpose(1, 2), x)  # (B, g_edges, d)
        return torch.bmm(incidence / d_v, e_feat) + self.bias


class HypergraphBlock(nn.Module):
    """``Dropout(Norm(ReLU(HypergraphConv(x))))`` (paper, eq. 3-4)."""

    def __init__(self, dim: int, dropout: float):
        super().__init__()
        self.conv = WeightedHypergraphConv(dim, dim)
        self.norm = nn.LayerNorm(dim)
        self.drop = nn.Dropout(dropout)

    def forward(self, x, index, value, n_edges):
        return self.drop(self.norm(F.relu(self.conv(x, index, value, n_edges))))

    def forward_dense(self, x, incidence):
        """Many small hypergraphs at once (see :meth:`WeightedHypergraphConv.forward_dense`)."""
        return self.drop(self.norm(F.relu(self.conv.forward_dense(x, incidence))))


class Attention(nn.Module):
    """Multi-head (cross-)attention through ``scaled_dot_product_attention`` (memory-efficient kernels)."""

    def __init__(self, dim: int, heads: int, dropout: float):
        super().__init__()
        self.heads, self.dropout = heads, dropout
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.out = nn.Linear(dim, dim)

    def project_kv(self, kv: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys and values of ``kv`` (B, Lk, D), per head: two (B, heads, Lk, D / heads)."""
        b, lk, d = kv.shape
        k, v = self.kv(kv).view(b, lk, 2, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        return k, v

    def forward(
        self, q: torch.Tensor, kv: torch.Tensor | None, mask: torch.Tensor | None = None,
        kv_heads: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:  # fmt: skip
        """Attend from ``q`` (B, Lq, D) to ``kv`` (B, Lk, D), or to its :meth:`project_kv` ``kv_heads``.

        ``mask`` is an additive float or a boolean (True = attend), broadcastable to (B, heads, Lq, Lk).
        """
        b, lq, d = q.shape
        h = self.heads
        qh = self.q(q).view(b, lq, h, d // h).transpose(1, 2)
        k, v = self.project_kv(kv) if kv_heads is None else kv_heads
        out = F.scaled_dot_product_attention(qh, k, v, attn_mask=mask, dropout_p=self.dropout if self.training else 0.0)
        return self.out(out.transpose(1, 2).reshape(b, lq, d))


class TransformerBlock(nn.Module):
    """Pre-norm ViT block: self-attention and a GELU MLP, both residual."""

    def __init__(self, dim: int, heads: int, dropout: float, mlp_ratio: float = 2.0):
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = Attention(dim, heads, dropout)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, dim))
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        y = self.norm1(x)
        x = x + self.drop(self.attn(y, y, mask))
        return x + self.drop(self.mlp(self.norm2(x)))


class PromptProjection(nn.Module):
    """``LN(Dropout(FC(GELU(Y W))))`` (paper, eq. 1)."""

    def __init__(self, n_genes: int, dim: int, dropout: float):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(n_genes, dim), nn.GELU(), nn.Linear(dim, dim), nn.Dropout(dropout), nn.LayerNorm(dim)
        )

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        return self.net(y)


def sincos_2d(pos: torch.Tensor, dim: int, max_period: float = 200.0) -> torch.Tensor:
    """2-D sinusoidal encoding of positions (in spot pitches): half the channels for x, half for y."""
    quarter = dim // 4
    freq = torch.exp(-math.log(max_period) * torch.arange(quarter, device=pos.device, dtype=pos.dtype) / quarter)
    ang = pos.unsqueeze(-1) * freq  # (n, 2, quarter)
    enc = torch.cat([ang.sin(), ang.cos()], dim=-1).flatten(1)  # (n, 4 * quarter)
    return F.pad(enc, (0, dim - enc.shape[1]))


class PHG2STModule(nn.Module):
    """Spot branch, neighbour branch, prompt fusion and heads. Input: one slide as a dict of tensors.

    Batch keys: ``x`` (n, d) spot features; ``tiles`` (T, d) and ``tile_index`` (n, g) (-1 masked) neighbour tiles;
    ``spot_index`` (2, E) incidences (node, hyperedge), ``spot_value`` (E,); ``nbr_index`` (2, E2), ``nbr_value``
    (E2,) the sub-hypergraph incidences over the n * g tile tokens; ``pos`` (n, 2) in spot pitches; ``y`` (n, m)
    expression (read at prompt spots only); ``prompt`` (n,) bool; ``prompt_idx``, ``prompt_dist`` (n, K): each
    spot's nearest prompts (spot indices) and their distances in pitches.
    """

    def __init__(self, config: ModelConfig):
        super().__init__()
        if config.n_genes < 1 or config.feature_dim < 1:  # ModelConfig leaves them 0 until tl.fit sets them
            raise ValueError(f"The network needs genes and features (n_genes={config.n_genes}, "
                             f"feature_dim={config.feature_dim}).")  # fmt: skip
        self.config = c = config
        h = c.hidden
        # Only the parts in use are created: data-parallel training requires every parameter to get a gradient.
        spot, nbr = c.use_image and c.use_spot_branch, c.use_image and c.use_neighbour_branch
        if spot:
            self.spot_in = nn.Sequential(nn.LayerNorm(c.feature_dim), nn.Linear(c.feature_dim, h))
            self.spot_hg = HypergraphBlock(h, c.dropout)
            self.spot_blocks = nn.ModuleList([TransformerBlock(h, c.heads, c.dropout) for _ in range(c.spot_depth)])
            self.head_spot = nn.Linear(h, c.n_genes)
        else:
            self.no_spot = nn.Parameter(torch.zeros(h))
        if nbr:
            self.tile_in = nn.Sequential(nn.LayerNorm(c.feature_dim), nn.Linear(c.feature_dim, h))
            self.nbr_hg = HypergraphBlock(h, c.dropout)
            self.grid_pos = nn.Parameter(torch.zeros(c.grid_tokens, h))
            self.nbr_blocks = nn.ModuleList([TransformerBlock(h, c.heads, c.dropout) for _ in range(c.neighbour_depth)])
            self.nbr_attn = Attention(h, c.heads, c.dropout)
            self.nbr_norm = nn.LayerNorm(h)
            self.head_nbr = nn.Linear(h, c.n_genes)
        if c.variant == "paper" and nbr:
            self.prompt_proj = PromptProjection(c.n_genes, h, c.dropout)  # the query of eq. 5
        if c.variant != "paper" and c.use_prompts:  # propagated and adaptive
            self.prompt_proj = PromptProjection(c.n_genes, h, c.dropout)
            self.prompt_img = nn.Linear(h, h)
            self.prompt_attn = Attention(h, c.heads, c.dropout)
            self.prompt_norm = nn.LayerNorm(h)
            self.distance_slope = nn.Parameter(torch.zeros(c.heads))  # softplus(0) = 0.69 per pitch
            # per-gene mixture of the prompt field at several spatial scales and the prompt mean
            self.mix_logit = nn.Parameter(torch.zeros(len(FIELD_BANDWIDTHS) + 1 + c.kriged_field, c.n_genes))
        self.head = nn.Linear(h, c.n_genes)
        for name in ("head", "head_spot", "head_nbr"):
            if hasattr(self, name):  # heads start at zero: the first prediction is the prompt field (or 0)
                nn.init.zeros_(getattr(self, name).weight)
                nn.init.zeros_(getattr(self, name).bias)

    # -- branches ---------------------------------------------------------------------------------------------
    def spot_tokens(self, b: dict) -> torch.Tensor:
        """Spot branch over the whole slide: hypergraph conv, positions, transformer blocks (windowed if large)."""
        c = self.config
        n = b["x"].shape[0]
        if not (c.use_image and c.use_spot_branch):
            return self.no_spot.expand(n, -1)
        t = self.spot_hg(self.spot_in(b["x"]), b["spot_index"], b["spot_value"], n)
        t = t + sincos_2d(b["pos"], c.hidden)
        if n <= c.attention_window:
            t = t.unsqueeze(0)
            for blk in self.spot_blocks:
                t = blk(t)
            return t.squeeze(0)
        # Large slides: attention within spatial windows of `attention_window` spots, alternating between row-band
        # and column-band orders so that information crosses window borders from one block to the next.
        orders = [window_order(b["pos"], c.attention_window, axis) for axis in (0, 1)]
        for i, blk in enumerate(self.spot_blocks):
            t = windowed(blk, t, orders[i % 2], c.attention_window)
        return t

    def neighbour_tokens(self, b: dict, sl: slice, distinct: bool = False) -> tuple[torch.Tensor, ...] | None:
        """Neighbour branch for the spots in ``sl``: each spot's tile tokens, their sub-hypergraph and blocks.

        Returns the tokens (n, g, h) and their mask (n, g); with ``distinct``, those of each distinct window and the
        window of each spot (n,) (``None`` where every spot has its own), for work that is per window.
        """
        c = self.config
        if not (c.use_image and c.use_neighbour_branch):
            return None
        idx = b["tile_index"][sl]
        n, g = idx.shape
        index, value = b["nbr_index"], b["nbr_value"]
        start, stop = sl.start * g, sl.stop * g
        if start > 0 or stop < b["tile_index"].shape[0] * g:  # incidences are sorted by node: take this range
            lo, hi = torch.searchsorted(index[0], torch.tensor([start, stop], device=index.device))
            index, value = index[:, lo:hi] - start, value[lo:hi]
        # Each spot's sub-hypergraph lives inside its own window of g tiles: as a dense (g, g) incidence per spot
        # the convolution is two batched matrix products.
        dtype = b["x"].dtype
        incidence = torch.zeros((n, g, g), dtype=dtype, device=idx.device)
        incidence.index_put_((index[0] // g, index[0] % g, index[1] % g), value.to(dtype), accumulate=True)
        # Spots with the same window and sub-hypergraph get the same tokens (binned slides: dozens of bins per
        # lattice cell): the branch runs once per distinct window and its tokens are shared.
        # Keyed on the windows first (cheap): where no two spots share a window (ST, Visium), nothing more to do.
        inverse = None
        if len(torch.unique(idx, dim=0)) < n:
            key = torch.cat([idx, incidence.flatten(1).double().view(torch.int64)], dim=1)  # the weights' exact bits
            windows, of_spot = torch.unique(key, dim=0, return_inverse=True)
            if len(windows) < n:
                first = torch.full((len(windows),), n, dtype=torch.long, device=idx.device)
                first = first.scatter_reduce(0, of_spot, torch.arange(n, device=idx.device), reduce="amin")
                idx, incidence, inverse = idx[first], incidence[first], of_spot
        tok, valid = self._window_tokens(b, idx, incidence)
        if distinct:
            return tok, valid, inverse
        return (tok, valid) if inverse is None else (tok[inverse], valid[inverse])

    def _window_tokens(self, b: dict, idx: torch.Tensor, incidence: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Tile tokens of windows ``idx`` (m, g) with their dense sub-hypergraph incidences (m, g, g)."""
        g = idx.shape[1]
        valid = idx >= 0
        used = torch.unique(idx[valid])  # sorted: project only the tiles these windows use, then gather
        if len(used) == 0:  # no tile on the image (impossible for spots on it): as the first tile, masked
            used = torch.zeros(1, dtype=idx.dtype, device=idx.device)
        tiles = self.tile_in(b["tiles"][used])
        tok = tiles[torch.searchsorted(used, idx.clamp_min(0)).clamp_max(len(used) - 1)] * valid.unsqueeze(-1)
        tok = self.nbr_hg.forward_dense(tok, incidence.to(tok.dtype))
        tok = tok + self.grid_pos[:g]
        # Attend to existing tiles only; a window without any (impossible for spots on the image) keeps its first
        # slot so that no attention row is empty (older torch versions return NaN for those).
        valid = valid.clone()
        valid[~valid.any(1), 0] = True
        mask = valid[:, None, None, :]  # (m, 1, 1, g)
        for blk in self.nbr_blocks:
            tok = blk(tok, mask)
        return tok, valid

    # -- fusion -----------------------------------------------------------------------------------------------
    def forward(self, b: dict, chunk: int | None = None) -> dict[str, torch.Tensor]:
        """Predictions for every spot.

        With ``chunk``, everything after the spot branch runs ``chunk`` spots at a time: the same result with
        memory bounded by the chunk, for large slides (in training, each chunk's activations are recomputed in
        the backward pass rather than stored).
        """
        n = b["x"].shape[0]
        t_s = self.spot_tokens(b)
        if chunk is None or chunk >= n:
            return self.fuse(b, t_s, slice(0, n))
        if torch.is_grad_enabled():
            # Training: recompute each chunk's activations in the backward pass instead of keeping them all
            # (gradient checkpointing; the RNG state is replayed, so dropout masks are the same).
            from torch.utils.checkpoint import checkpoint

            parts = [checkpoint(self.fuse, b, t_s, slice(a, min(a + chunk, n)), use_reentrant=False)
                     for a in range(0, n, chunk)]  # fmt: skip
        else:
            parts = [self.fuse(b, t_s, slice(a, min(a + chunk, n))) for a in range(0, n, chunk)]
        return {k: torch.cat([p[k] for p in parts]) for k in parts[0]}

    def forward_masks(
        self, batches: list[dict], rows: list[torch.Tensor], chunk: int | None = None
    ) -> list[dict[str, torch.Tensor]]:
        """:meth:`forward` of one slide under several prompt masks at given spots (inference).

        ``batches`` differ only in their prompts (``prompt``, ``prompt_idx``, ``prompt_dist``); the spot tokens and
        the neighbour tokens read the image alone, so each is computed once and shared by every mask (the
        in-context layer's cross-fitted passes: five masks of one slide besides the full one). Each mask is
        evaluated only at its ``rows`` (sorted spot indices), and its outputs (``pred`` and ``latent``) are those
        rows, in that order.
        """
        b0 = batches[0]
        n = b0["x"].shape[0]
        t_s = self.spot_tokens(b0)
        step = n if chunk is None else max(1, min(chunk, n))
        kept: list[dict[str, list[torch.Tensor]]] = [{} for _ in batches]
        for a in range(0, n, step):
            sl = slice(a, min(a + step, n))
            nbr = self.neighbour_tokens(b0, sl, distinct=True)
            if nbr is not None:  # the neighbour attention's keys and values: the same for every mask, once a window
                tok, valid, inverse = nbr
                kv = self.nbr_attn.project_kv(tok)
                if inverse is not None:
                    tok, valid, kv = tok[inverse], valid[inverse], (kv[0][inverse], kv[1][inverse])
                nbr = (tok, valid, kv)
            for i, b in enumerate(batches):
                here = rows[i][(rows[i] >= sl.start) & (rows[i] < sl.stop)]
                if len(here) == 0:
                    continue
                if len(here) == sl.stop - sl.start:  # every spot of the chunk
                    out = self.fuse(b, t_s, sl, nbr=nbr, aux=False)
                else:
                    local = here - sl.start
                    part = None if nbr is None else (nbr[0][local], nbr[1][local], (nbr[2][0][local], nbr[2][1][local]))
                    out = self.fuse(b, t_s, here, nbr=part, aux=False)
                for k, v in out.items():
                    kept[i].setdefault(k, []).append(v)
        return [{k: torch.cat(v) for k, v in kept[i].items()} for i in range(len(batches))]

    def fuse(
        self, b: dict, t_s: torch.Tensor, sl: slice | torch.Tensor,
        nbr: tuple[torch.Tensor, torch.Tensor] | None | str = "compute", aux: bool = True,
    ) -> dict[str, torch.Tensor]:  # fmt: skip
        """Prompts, neighbour tokens and heads for the spots in ``sl`` (``t_s``: spot tokens of the whole slide).

        ``nbr``: the neighbour tokens of these spots when already computed, possibly with their keys and values
        in the neighbour attention (:meth:`forward_masks`, which also passes spot indices as ``sl``). ``aux``: also the branch heads' predictions (``pred_spot``, ``pred_nbr``),
        which only the training loss reads.
        """
        c = self.config
        y, prompt = b["y"], b["prompt"]
        if isinstance(nbr, str):
            nbr = self.neighbour_tokens(b, sl)
        t_here = t_s[sl]
        base = torch.zeros((t_here.shape[0], y.shape[1]), dtype=y.dtype, device=y.device)
        if c.variant == "paper":
            if nbr is not None:  # eq. 1: a spot's own masked row
                y_masked = y[sl] * prompt[sl].unsqueeze(-1).to(y.dtype) if c.use_prompts else torch.zeros_like(y[sl])
                query = self.prompt_proj(y_masked)
            z = t_here
        else:
            t_p = self.prompt_context(b, t_s, y, sl) if c.use_prompts else torch.zeros_like(t_here)
            if c.use_prompts:
                base = self.prompt_field(b, y, sl)
            query = t_here + t_p
            z = t_here + t_p
        if nbr is not None:
            tok, valid = nbr[0], nbr[1]
            kv_heads = nbr[2] if len(nbr) > 2 else None
            t_n = self.nbr_attn(query.unsqueeze(1), tok, valid[:, None, None, :], kv_heads=kv_heads).squeeze(1)  # eq. 5
            z = z + self.nbr_norm(t_n)  # eq. 6
        out = {"pred": base + self.head(z), "latent": z}
        if aux and c.use_image and c.use_spot_branch:
            out["pred_spot"] = base + self.head_spot(t_here)
        if aux and nbr is not None:
            nbr_mean = (tok * valid.unsqueeze(-1)).sum(1) / valid.sum(1, keepdim=True).clamp_min(1)
            out["pred_nbr"] = base + self.head_nbr(nbr_mean)
        return out

    def prompt_context(self, b: dict, t_s: torch.Tensor, y: torch.Tensor, sl: slice) -> torch.Tensor:
        """Every spot attends to its K nearest prompt tokens, penalised by distance (per head)."""
        idx, dist = b["prompt_idx"][sl], b["prompt_dist"][sl]  # (n, K)
        rows = torch.unique(idx)  # the prompts somebody attends to (sorted): tokens, keys and values once per prompt
        tokens = self.prompt_proj(y[rows]) + self.prompt_img(t_s[rows])
        k, v = self.prompt_attn.project_kv(tokens.unsqueeze(0))  # (1, heads, r, h / heads) each
        at = torch.searchsorted(rows, idx)  # (n, K): each spot's prompts among ``rows``
        k, v = (x[0][:, at].transpose(0, 1) for x in (k, v))  # (n, heads, K, h / heads): gathered, not projected
        slope = F.softplus(self.distance_slope).view(1, -1, 1, 1)
        bias = -slope * dist[:, None, None, :]  # (n, heads, 1, K)
        ctx = self.prompt_attn(t_s[sl].unsqueeze(1), None, bias, kv_heads=(k, v)).squeeze(1)
        return self.prompt_norm(ctx)

    def prompt_field(self, b: dict, y: torch.Tensor, sl: slice) -> torch.Tensor:
        """The measured prompts interpolated to the spots in ``sl``.

        Gaussian-kernel (Nadaraya-Watson) averages of the K nearest prompts at bandwidths of 0.5, 1, 2 and 4 spot
        pitches, and the prompt mean, mixed per gene with learned weights (softmax): each gene chooses how local
        its interpolation is, from nearest-prompt copying to the section mean. Accumulated prompt by prompt, so
        memory is (n, genes), never (n, K, genes).
        """
        idx, dist = b["prompt_idx"][sl], b["prompt_dist"][sl]  # (n, K)
        beta = torch.softmax(self.mix_logit, dim=0)  # (scales [+ the kriged field] + the mean, genes)
        base = beta[-1] * b["prompt_mean"]  # (1, genes), set by ``slide_batch``
        if "kriged" in b:  # ModelConfig.kriged_field: the prompts' kriging, one more member of the mixture
            base = base + beta[len(FIELD_BANDWIDTHS)] * b["kriged"][sl]
        # weight of the k-th nearest prompt for each spot and gene: sum over scales of kernel weight x mixing weight
        w = torch.stack([torch.softmax(-0.5 * (dist / bw) ** 2, dim=1) for bw in FIELD_BANDWIDTHS], -1)  # (n, K, S)
        for k in range(idx.shape[1]):
            base = base + (w[:, k] @ beta[: len(FIELD_BANDWIDTHS)]) * y[idx[:, k]]
        return base


def window_order(pos: torch.Tensor, window: int, axis: int) -> torch.Tensor:
    """A spatial order of the spots in which consecutive runs of ``window`` spots form compact patches.

    The slide is cut into sqrt(n / window) bands along ``axis``; spots are sorted by band, then along the other
    axis, so a run of ``window`` spots covers about a square of sqrt(window) x sqrt(window) spots.
    """
    n = pos.shape[0]
    n_bands = max(1, round((n / window) ** 0.5))
    lo = pos[:, axis].min()
    span = (pos[:, axis].max() - lo).clamp_min(1e-6)
    band = torch.clamp(((pos[:, axis] - lo) / span * n_bands).long(), max=n_bands - 1)
    other = pos[:, 1 - axis] - pos[:, 1 - axis].min()
    key = band.to(pos.dtype) * (other.max() + 1.0) + other
    return torch.argsort(key, stable=True)


#: Attention windows a transformer block processes at a time in inference (a slide of 600,000 spots in windows of
#: 1,024 would otherwise hold the block's activations, its feed-forward layer's included, for all 586 at once).
INFERENCE_WINDOWS = 32


def windowed(block: nn.Module, t: torch.Tensor, order: torch.Tensor, window: int) -> torch.Tensor:
    """Apply a transformer block within consecutive windows of ``order`` (the last window padded and masked).

    Without gradients (inference), :data:`INFERENCE_WINDOWS` windows at a time.
    """
    n, h = t.shape
    n_win = -(-n // window)
    pad = n_win * window - n
    x = t[order]
    if pad:
        x = torch.cat([x, x.new_zeros(pad, h)])
    valid = torch.ones(n_win * window, dtype=torch.bool, device=t.device)
    if pad:
        valid[n:] = False
    x, valid = x.view(n_win, window, h), valid.view(n_win, 1, 1, window)
    if torch.is_grad_enabled() or n_win <= INFERENCE_WINDOWS:
        y = block(x, valid)
    else:  # inference: windows are independent, so a few at a time bound the block's activations (same values)
        step = INFERENCE_WINDOWS
        y = torch.cat([block(x[i : i + step], valid[i : i + step]) for i in range(0, n_win, step)])
    y = y.reshape(-1, h)[:n]
    out = torch.empty_like(t)
    out[order] = y
    return out


def phg2st_loss(out: dict[str, torch.Tensor], y: torch.Tensor, rows: torch.Tensor, lam: float) -> torch.Tensor:
    """The loss of eq. 7-10 on the rows scored in training (non-prompt spots).

    ``L = L_Z + L_spot + L_nbr`` with ``L_Z = MSE(p_Z, g)`` and
    ``L_branch = (1 - λ) MSE(p_branch, g) + λ MSE(p_branch, sg(p_Z))`` (sg: stop-gradient).
    """
    target = y[rows]
    fused = out["pred"][rows]
    loss = F.mse_loss(fused, target)
    for key in ("pred_spot", "pred_nbr"):
        if key in out:
            p = out[key][rows]
            loss = loss + (1 - lam) * F.mse_loss(p, target) + lam * F.mse_loss(p, fused.detach())
    return loss
