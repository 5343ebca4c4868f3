"""Small synthetic sections for fast tests, shared by the suite (``from _synthetic import SMALL, make_section``).

``tests/conftest.py`` puts this folder on ``sys.path`` and turns :func:`make_section` into the ``synthetic_section``
fixture.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch

#: Model settings small enough to train in seconds on the sections below (their embedding is ``X_tiny``).
SMALL = dict(use_rep="X_tiny", config=dict(hidden=32, heads=2, spot_depth=1, neighbour_depth=1), accelerator="cpu")


class Tiny(torch.nn.Module):
    """A parameter-free encoder: the mean and standard deviation of each colour channel of a tile (6 features)."""

    def forward(self, x):
        return torch.cat([x.mean((2, 3)), x.std((2, 3))], 1)


def make_section(tmp_path, seed: int = 0, side: int = 9, n_genes: int = 12, name: str = "S0"):
    """A small section with a real image file, tiny-encoder embeddings, hypergraphs and expression that depends
    on both position (a smooth field) and the image (tile colour)."""
    from anndata import AnnData
    from PIL import Image

    import phg2st_sc as phg2st

    rng = np.random.default_rng(seed)
    pitch = 40
    size = side * pitch + 80
    img = rng.integers(0, 255, (size, size, 3), dtype=np.uint8)
    path = tmp_path / f"{name}.png"
    Image.fromarray(img).save(path)
    xs, ys = np.meshgrid(np.arange(side), np.arange(side))
    xy = np.column_stack([xs.ravel(), ys.ravel()]) * pitch + 60.0
    n = len(xy)
    field = np.sin(xy[:, :1] / 90.0 + seed) + np.cos(xy[:, 1:] / 70.0)
    colour = np.stack([img[int(y) - 8 : int(y) + 8, int(x) - 8 : int(x) + 8].mean() for x, y in xy])[:, None] / 128 - 1
    w = rng.normal(size=(2, n_genes))
    y = np.column_stack([field, colour]) @ w + rng.normal(scale=0.2, size=(n, n_genes)) + 2.0
    a = AnnData(y.astype(np.float32))
    a.var_names = [f"G{i}" for i in range(n_genes)]
    a.obs_names = [f"{name}_{i}" for i in range(n)]
    a.obs["section"] = name
    a.obsm["spatial"] = xy
    a.uns["spatial"] = {name: {"images": {}, "scalefactors": {"tissue_hires_scalef": 1.0, "spot_diameter_fullres": 20.0},
                               "metadata": {"source_image_path": str(path), "microns_per_pixel": 5.0}}}  # fmt: skip

    phg2st.pp.embed_tiles(a, encoder=Tiny(), tile_size=16, grid_size=3, key_added="X_tiny")
    phg2st.pp.build_hypergraph(a, use_rep="X_tiny", k=3)
    return a


@contextmanager
def progress_off() -> Iterator[None]:
    """Progress bars off inside the block, as they were afterwards."""
    import phg2st_sc as phg2st

    before = phg2st.settings.progress
    phg2st.settings.progress = False
    try:
        yield
    finally:
        phg2st.settings.progress = before
