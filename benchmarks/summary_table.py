"""Print the summary of a `phg2st benchmark` results folder as a markdown table (as in docs/benchmarks.md).

Usage: .venv/bin/python benchmarks/summary_table.py RESULTS_DIR [--spots heldout] [--wide METHOD ...]

``--wide`` prints held-out PCC only, one row per target protocol and prompt fraction and one column per method
given (in that order), the best of each row in bold.
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
    parser.add_argument("--wide", nargs="+", default=None, help="methods as columns (held-out PCC)")
    args = parser.parse_args()
    table = pd.read_csv(args.results / "results.csv")
    s = summarise(table)
    if args.wide:
        wide(s[s["spots"] == "heldout"], args.wide)
        return
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


def wide(s: pd.DataFrame, methods: list[str]) -> None:
    """Held-out PCC, mean ± std over folds: a row per protocol and prompt fraction, a column per method."""
    print("| targets | prompts | " + " | ".join(methods) + " |")
    print("|---" * (len(methods) + 2) + "|")
    for (protocol, fraction), rows in s.groupby(["protocol", "prompt_fraction"], sort=True):
        rows = rows.set_index("method")
        best = rows.loc[[m for m in methods if m in rows.index], "pcc_mean"].round(3).max()
        cells = []
        for m in methods:
            if m not in rows.index:
                cells.append("")
                continue
            text = f"{rows.at[m, 'pcc_mean']:.3f} ± {rows.at[m, 'pcc_std']:.3f}"
            cells.append(f"**{text}**" if round(rows.at[m, "pcc_mean"], 3) == best else text)
        print(f"| {protocol} | {fraction:.0%} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
