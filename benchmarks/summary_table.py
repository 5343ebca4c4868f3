"""Print the summary of a `phg2st benchmark` results folder as a markdown table (as in docs/benchmarks.md).

Usage: .venv/bin/python benchmarks/summary_table.py RESULTS_DIR [--spots heldout]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from phg2st_sc.tl import summarise


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("results", type=Path)
    parser.add_argument("--spots", default=None, help="only these scored spots (heldout or all)")
    args = parser.parse_args()
    table = pd.read_csv(args.results / "results.csv")
    s = summarise(table)
    if args.spots:
        s = s[s["spots"] == args.spots]
    s = s.sort_values(["protocol", "spots", "prompt_fraction", "pcc_mean"], ascending=[True, False, True, False])
    print("| targets | spots | prompts | method | MAE | CCC | PCC | folds |")
    print("|---|---|---|---|---|---|---|---|")
    for _, r in s.iterrows():
        cells = [f"{r[f'{m}_mean']:.3f} ± {r[f'{m}_std']:.3f}" for m in ("mae", "ccc", "pcc")]
        print(
            f"| {r['protocol']} | {r['spots']} | {r['prompt_fraction']:.0%} | {r['method']} | {' | '.join(cells)} | {r['folds']} |"
        )


if __name__ == "__main__":
    main()
