"""AnnData slides -> tensors, prompt sampling and the datasets Lightning iterates over (one slide per step)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from anndata import AnnData
from scipy import sparse
from scipy.spatial import cKDTree
from torch.utils.data import Dataset

from phg2st_sc._constants import Keys
from phg2st_sc._utils import as_dense, centre_scale, spot_pitch
from phg2st_sc._validate import check_ready, get_coordinates, get_representation


@dataclass
class Slide:
    """The tensors of one section (CPU, float32 / int64), prompts not yet chosen."""

    name: str
    x: torch.Tensor
    tiles: torch.Tensor
    tile_index: torch.Tensor
    spot_index: torch.Tensor
    spot_value: torch.Tensor
    nbr_index: torch.Tensor
    nbr_value: torch.Tensor
    pos: torch.Tensor
    y: torch.Tensor
    trainable: np.ndarray  # spots whose expression may be used as prompts or targets in training

    @property
    def n(self) -> int:
        return self.x.shape[0]


def _need(adata: AnnData, slot: str, key: str, fix: str) -> None:
    if key not in getattr(adata, slot):
        raise KeyError(f"`adata.{slot}[{key!r}]` is missing: {fix}")


def slide_from_adata(
    adata: AnnData,
    genes: Sequence[str],
    *,
    use_rep: str,
    hypergraph_key: str,
    layer: str | None,
    neighbours: bool,
    prompt: np.ndarray | None = None,
    name: str = "",
    standardise: bool = False,
) -> Slide:
    """Collect a section's features, hypergraphs, positions and expression, checking every slot first.

    With ``prompt``, only the prompt spots' expression must be finite (the others are never read: NaN becomes 0).
    With ``standardise``, the spots' features and the neighbour tiles' are standardised per feature by the
    spots' mean and standard deviation over this section.
    """
    check_ready(adata, use_rep, hypergraph_key)
    x = get_representation(adata, use_rep, dtype=np.float32)
    inc_key = Keys.incidence(hypergraph_key)
    coords = get_coordinates(adata)
    n = adata.n_obs
    h = sparse.coo_matrix(adata.obsp[inc_key])
    if h.shape != (n, n) or not np.isfinite(h.data).all():
        raise ValueError(
            f"`adata.obsp[{inc_key!r}]` must be a finite {n} x {n} incidence matrix; rebuild the hypergraph."
        )
    if neighbours:
        idx_key, nh_key = Keys.tile_index(use_rep), Keys.neighbour_hyperedges(hypergraph_key)
        _need(
            adata,
            "obsm",
            idx_key,
            "embed with `phg2st.pp.embed_tiles(..., grid_size=5)` (or fit with `config={'use_neighbour_branch': False}`).",
        )
        _need(adata, "obsm", nh_key, "run `phg2st.pp.build_hypergraph` after `embed_tiles` with neighbour tiles.")
        tile_index = np.asarray(adata.obsm[idx_key], dtype=np.int64)
        stored = adata.uns.get(use_rep, {})
        if not isinstance(stored, dict) or "tile_embeddings" not in stored:
            raise KeyError(
                f"`adata.uns[{use_rep!r}]['tile_embeddings']` is missing: re-run `phg2st.pp.embed_tiles` with grid_size > 0."
            )
        tiles = np.asarray(stored["tile_embeddings"], dtype=np.float32)
        nh = np.asarray(adata.obsm[nh_key], dtype=np.int64)
        if nh.shape[:2] != tile_index.shape:
            raise ValueError(
                f"`obsm[{nh_key!r}]` has windows of {nh.shape[1]} tiles and `obsm[{idx_key!r}]` of {tile_index.shape[1]}: "
                "rebuild the hypergraph after embedding."
            )
        g = tile_index.shape[1]
        spot = np.arange(n)[:, None, None]
        tile = np.arange(g)[None, :, None]
        valid_t = tile_index >= 0
        members = np.concatenate([np.broadcast_to(tile, (n, g, 1)), nh], axis=2)  # the tile and its neighbours
        ok = (members >= 0) & valid_t[:, :, None]
        node = (spot * g + members)[ok]
        edge = np.broadcast_to(spot * g + tile, members.shape)[ok]
        order = np.argsort(node, kind="stable")  # sorted by node: a range of spots is a contiguous slice
        nbr_index = np.stack([node[order], edge[order]])
    else:
        tiles = np.zeros((1, x.shape[1]), dtype=np.float32)
        tile_index = np.zeros((n, 1), dtype=np.int64)
        nbr_index = np.zeros((2, 0), dtype=np.int64)
    if standardise:
        centre, scale = centre_scale(x, dtype=np.float64)
        x = ((x - centre) / scale).astype(np.float32)
        if neighbours:
            tiles = ((tiles - centre) / scale).astype(np.float32)
    missing = [g for g in genes if g not in adata.var_names]
    if missing:
        raise ValueError(
            f"{len(missing)} of the model's {len(genes)} genes are absent from the data (e.g. {missing[:5]})."
        )
    # genes already in the model's order (the usual case): no view, so no subset copy of a large slide's matrix
    sub = adata if list(adata.var_names) == list(genes) else adata[:, list(genes)]
    if layer is not None and layer not in adata.layers:
        raise KeyError(f"No layer {layer!r} in `adata.layers` (the model reads its expression from it).")
    values = sub.X if layer is None else sub.layers[layer]
    y = as_dense(values, dtype=np.float32)
    if not sparse.issparse(values) and np.shares_memory(y, np.asarray(values)):
        y = y.copy()  # (a dense float32 matrix comes back as itself; the zeros below must not reach the user's)
    needed = np.ones(n, dtype=bool) if prompt is None else np.asarray(prompt, dtype=bool)
    if not (np.isfinite(y).all() if prompt is None else np.isfinite(y[needed]).all()):
        where = "the prompt spots' expression" if prompt is not None else "the expression"
        raise ValueError(f"{where[0].upper() + where[1:]} contains NaN or infinite values.")
    y[~np.isfinite(y)] = 0.0  # only at spots never read (the others were checked)
    return Slide(
        name=name,
        x=torch.from_numpy(x),
        tiles=torch.from_numpy(tiles),
        tile_index=torch.from_numpy(tile_index),
        spot_index=torch.from_numpy(np.stack([h.row, h.col]).astype(np.int64)),
        spot_value=torch.from_numpy(h.data.astype(np.float32)),
        nbr_index=torch.from_numpy(nbr_index.astype(np.int64)),
        nbr_value=torch.ones(nbr_index.shape[1]),
        pos=torch.from_numpy((coords / spot_pitch(coords)).astype(np.float32)),
        y=torch.from_numpy(y),
        trainable=np.ones(n, dtype=bool),
    )


def prompt_neighbours(pos: np.ndarray, prompt: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Each spot's ``k`` nearest prompt spots (spot indices) and their distances."""
    where = np.flatnonzero(prompt)
    k = min(k, len(where))
    dist, j = cKDTree(pos[where]).query(pos, k=k)
    return where[j.reshape(len(pos), k)], dist.reshape(len(pos), k)


KERNEL_GENES = 128  # genes whose likelihood chooses the kriged field's kernel (each training step fits one)


def kriged_prompts(pos: np.ndarray, y: np.ndarray, prompt: np.ndarray) -> np.ndarray:
    """The prompts' expression kriged to every spot (``ModelConfig.kriged_field``): (spots, genes), float32.

    Simple kriging of the prompts' standardised values (the in-context layer's prompt field, ``_incontext.krige``:
    exact up to its ``EXACT_MAX`` prompts, local above), with one squared-exponential kernel for all genes chosen
    on the prompts by marginal likelihood over the layer's grid, from the :data:`KERNEL_GENES` genes of largest
    variance over the prompts (a likelihood over every gene would cost each training step a second on a section
    of 1,000 genes and 400 prompts). Fewer than 3 prompts: their mean. Computed in blocks of spots, so that no
    (spots x genes) float64 array exists.
    """
    from phg2st_sc._model import _incontext as ic
    from phg2st_sc._utils import centre_scale

    yp = np.asarray(y[prompt], dtype=np.float64)
    mu, sd = centre_scale(yp)
    if len(yp) < 3:
        return np.broadcast_to(mu, (len(pos), len(mu))).astype(np.float32)
    z, xy_p = (yp - mu) / sd, np.asarray(pos[prompt], dtype=np.float64)
    sub = ic._fit_rows(len(xy_p))  # the prompts the kernel is chosen on (all up to the layer's FIT_SUBSET)
    cols = np.sort(np.argsort(yp.var(0), kind="stable")[-KERNEL_GENES:])
    ell, eta = ic.fit_kernel(xy_p[sub], ic.on_fit_rows(z, sub)[:, cols])
    m, out = z.mean(0), np.empty((len(pos), z.shape[1]), dtype=np.float32)
    for s in range(0, len(pos), ic.BLOCK):
        q = np.asarray(pos[s : s + ic.BLOCK], dtype=np.float64)
        out[s : s + ic.BLOCK] = mu + (m + ic.krige(xy_p, z - m, q, ell[0], eta[0])) * sd
    return out


def slide_batch(
    slide: Slide, prompt: np.ndarray, rows: np.ndarray, prompt_k: int, kriged: bool = False
) -> dict[str, torch.Tensor]:
    """The model input of one slide with a given prompt mask; ``rows`` are the spots scored by the loss/metric."""
    idx, dist = prompt_neighbours(slide.pos.numpy(), prompt, prompt_k)
    extra = {"kriged": torch.from_numpy(kriged_prompts(slide.pos.numpy(), slide.y.numpy(), prompt))} if kriged else {}
    return extra | {
        "x": slide.x, "tiles": slide.tiles, "tile_index": slide.tile_index,
        "spot_index": slide.spot_index, "spot_value": slide.spot_value,
        "nbr_index": slide.nbr_index, "nbr_value": slide.nbr_value,
        "pos": slide.pos, "y": slide.y,
        "prompt": torch.from_numpy(prompt), "rows": torch.from_numpy(rows),
        "prompt_idx": torch.from_numpy(idx.astype(np.int64)), "prompt_dist": torch.from_numpy(dist.astype(np.float32)),
        "prompt_mean": slide.y[torch.from_numpy(prompt)].mean(0, keepdim=True),  # read by every chunk's prompt field
    }  # fmt: skip


def draw_prompts(eligible: np.ndarray, fraction: float, rng: np.random.Generator) -> np.ndarray:
    """A random prompt mask over ``eligible`` spots: ``round(fraction * n_eligible)``, at least 1, leaving 1 out."""
    where = np.flatnonzero(eligible)
    n = int(min(max(1, round(fraction * len(where))), len(where) - 1))
    mask = np.zeros(len(eligible), dtype=bool)
    mask[rng.choice(where, size=n, replace=False)] = True
    return mask


class TrainSlides(Dataset):
    """One item per training slide, with a fresh prompt mask each time (seeded by seed, epoch and slide)."""

    def __init__(
        self, slides: list[Slide], fraction: float | tuple[float, float], prompt_k: int, seed: int, kriged: bool = False
    ):
        self.slides, self.fraction, self.prompt_k, self.seed, self.kriged = slides, fraction, prompt_k, seed, kriged
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.slides)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        slide = self.slides[i]
        rng = np.random.default_rng([self.seed, self.epoch, i])
        lo, hi = self.fraction if isinstance(self.fraction, tuple) else (self.fraction, self.fraction)
        prompt = draw_prompts(slide.trainable, rng.uniform(lo, hi) if hi > lo else lo, rng)
        return slide_batch(slide, prompt, slide.trainable & ~prompt, self.prompt_k, self.kriged)


class FixedSlides(Dataset):
    """Validation items: fixed prompts (a fraction of the eligible spots) and fixed scored spots."""

    def __init__(self, items: list[tuple[Slide, np.ndarray, np.ndarray]], prompt_k: int, kriged: bool = False):
        self.batches = [slide_batch(s, p, r, prompt_k, kriged) for s, p, r in items]

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return self.batches[i]


def pcc_per_gene(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean over genes of the Pearson correlation across spots.

    Genes constant in the target are skipped, a constant prediction counts 0 (as in
    :func:`phg2st_sc.tl.gene_metrics`).
    """
    p = pred - pred.mean(0)
    t = target - target.mean(0)
    vt, vp = (t**2).sum(0), (p**2).sum(0)
    ok = vt > 1e-12
    if not ok.any():
        return pred.new_tensor(float("nan"))
    r = torch.where(vp > 1e-12, (p * t).sum(0) / (vt * vp).clamp_min(1e-24).sqrt(), torch.zeros_like(vt))
    return r[ok].mean()
