"""The figures of docs/benchmarks.md, drawn from the committed results files with ``pl.metrics``.

For each results folder named below and each target protocol in it: held-out PCC of every method in every fold
(``pl.metrics(kind="folds")``), at the prompt fraction of the table it illustrates. Written to
``docs/_static/benchmarks/<folder>_<protocol>.png``:

    .venv/bin/python benchmarks/figures.py            # all
    .venv/bin/python benchmarks/figures.py her2st_c_adaptive_blocks
"""

from __future__ import annotations

import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pandas as pd

import phg2st_sc as phg2st

HERE = Path(__file__).parent
OUT = HERE.parent / "docs" / "_static" / "benchmarks"
#: results folder -> prompt fraction shown (the tables of docs/benchmarks.md)
FIGURES = {
    "her2st_c_adaptive": 0.1,
    "her2st_c_adaptive_blocks": 0.1,
    "mob_adaptive": 0.1,
    "mob_blocks": 0.1,
    "her2st_c_space": 0.1,
    "her2st_c_variance": 0.1,
    "her2st_c_space_blocks": 0.1,
    "her2st_c_variance_blocks": 0.1,
    "her2st_lopo": 0.1,
    "her2st_c_loso": 0.1,
    "mob_loso": 0.1,
}
TITLES = {"heldout": "unsmoothed targets", "heldout_smoothed": "3x3 smoothed targets"}


def draw(name: str, fraction: float) -> list[Path]:
    """One figure per protocol of ``benchmarks/results/<name>/results.csv``; the paths written."""
    table = pd.read_csv(HERE / "results" / name / "results.csv")
    OUT.mkdir(parents=True, exist_ok=True)
    written = []
    for protocol in sorted(table["protocol"].unique()):
        subset = {"protocol": protocol, "spots": "heldout", "prompt_fraction": fraction}
        fig = phg2st.pl.metrics(table, kind="folds", subset=subset, return_fig=True, show=False)
        fig.suptitle(
            f"{name}: {TITLES.get(protocol, protocol)}, {fraction:.0%} prompts, held-out spots", fontsize=9, y=1.06
        )
        path = OUT / f"{name}_{protocol}.png"
        fig.savefig(path, dpi=110, bbox_inches="tight")
        plt.close(fig)
        written.append(path)
    return written


def main(names: list[str]) -> None:
    for name in names or [n for n in FIGURES if (HERE / "results" / n / "results.csv").is_file()]:
        for path in draw(name, FIGURES.get(name, 0.1)):
            print(path.relative_to(HERE.parent))


if __name__ == "__main__":
    main(sys.argv[1:])
