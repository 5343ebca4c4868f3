"""Draw the data-flow figure of docs/design.md: ``python docs/_scripts/dataflow.py`` writes docs/_static/dataflow.png."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

# (x, y) centres in axes units; each box: title (the call) and the slots it writes
BOXES = {
    "read": (
        0.10,
        0.80,
        "datasets.her2st / io.read_*",
        "X raw counts · obsm['spatial']\nuns['spatial'] (H&E path, µm/px)",
    ),
    "embed": (0.37, 0.80, "pp.embed_tiles", "obsm['X_<enc>'] spot tiles\nobsm['X_<enc>_neighbours'] + tile lattice"),
    "graph": (
        0.64,
        0.80,
        "pp.build_hypergraph",
        "obsp['phg2st_incidence' | '_distances']\nobsm['phg2st_neighbour_hyperedges']",
    ),
    "targets": (0.10, 0.47, "tl.prepare_targets", "X normalised (panel, log1p)\nuns['phg2st_targets'] (protocol)"),
    "fit": (
        0.37,
        0.47,
        "tl.fit  →  PHG2ST",
        "config (ModelConfig) · input (InputSpec)\ntraining record · weights → one file",
    ),
    "prompts": (0.64, 0.47, "tl.select_prompts", "obs['phg2st_prompt']\n(the measured ~10%)"),
    "impute": (0.37, 0.14, "tl.impute", "model.check_input → layers['phg2st']\nobsm['X_phg2st'] latent"),
    "base": (0.64, 0.14, "tl.baseline", "layers['baseline_<method>']\n(idw, gp, ridge, stack, ...)"),
    "score": (
        0.91,
        0.14,
        "tl.score · tl.evaluate",
        "held-out spots only:\nPCC, CCC, MAE per gene\n(tl.benchmark: per fold)",
    ),
    "plot": (0.10, 0.14, "pl.spatial / pl.napari", "measured | predicted | error\non the H&E"),
}
# (from, its side, to, its side, curvature): sides r/l/t/b
ARROWS = [("read", "r", "embed", "l", 0), ("embed", "r", "graph", "l", 0), ("read", "b", "targets", "t", 0),
          ("graph", "b", "fit", "r", 0), ("targets", "r", "fit", "l", 0), ("embed", "b", "fit", "t", 0),
          ("fit", "b", "impute", "t", 0), ("prompts", "b", "impute", "r", 0), ("prompts", "b", "base", "t", 0),
          ("impute", "b", "score", "b", 0.2), ("base", "r", "score", "l", 0), ("impute", "l", "plot", "r", 0)]  # fmt: skip
W, H = 0.235, 0.17


def _anchor(key: str, side: str) -> tuple[float, float]:
    x, y = BOXES[key][:2]
    dx, dy = {"r": (W / 2, 0), "l": (-W / 2, 0), "t": (0, H / 2), "b": (0, -H / 2)}[side]
    return x + dx, y + dy


def main(out: Path) -> None:
    """Draw the figure into ``out``."""
    fig, ax = plt.subplots(figsize=(12, 6.2), dpi=150)
    ax.set(xlim=(-0.03, 1.05), ylim=(-0.12, 0.95))
    ax.axis("off")
    for key, (x, y, title, slots) in BOXES.items():
        torch = key in ("embed", "fit", "impute")
        ax.add_patch(FancyBboxPatch((x - W / 2, y - H / 2), W, H, boxstyle="round,pad=0.008",
                                    fc="#fde9d9" if torch else "#e8eef7", ec="#555555", lw=1.0))  # fmt: skip
        ax.text(x, y + H / 2 - 0.035, title, ha="center", va="center", fontsize=9.5, weight="bold")
        ax.text(x, y - 0.025, slots, ha="center", va="center", fontsize=7.8, family="monospace", linespacing=1.4)
    for a, side_a, b, side_b, bend in ARROWS:
        ax.add_patch(FancyArrowPatch(_anchor(a, side_a), _anchor(b, side_b), arrowstyle="-|>", mutation_scale=12,
                                     color="#333333", lw=1.0, connectionstyle=f"arc3,rad={bend}"))  # fmt: skip
    ax.text(-0.02, -0.11, "orange: runs torch (imported on first use in _model/); blue: numpy / scipy / AnnData only",
            fontsize=8, color="#444444")  # fmt: skip
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, bbox_inches="tight")


if __name__ == "__main__":
    main(Path(__file__).resolve().parents[1] / "_static" / "dataflow.png")
