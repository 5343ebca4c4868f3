"""Print the summary of a `phg2st benchmark` results folder as a markdown table (as in docs/benchmarks.md).

Usage: .venv/bin/python benchmarks/summary_table.py RESULTS_DIR [--spots heldout] [--wide METHOD ...]
       .venv/bin/python benchmarks/summary_table.py RESULTS_DIR --calibration METHOD
       .venv/bin/python benchmarks/summary_table.py RESULTS_DIR --against OTHER_DIR

``--wide`` prints held-out PCC only, one row per target protocol and prompt fraction and one column per method
given (in that order), the best of each row in bold. ``--calibration`` prints the method's uncertainty metrics on
held-out spots (seeds averaged within each fold; mean over folds, the range over folds in brackets for coverage).
``--against`` prints, per method, the largest held-out PCC difference (and MAE, coverage and error-ratio
differences, and the agreement of what the in-context layer kept) between the rows the two runs share (fold,
protocol, fraction, seed): how far a rerun moved. A folder without ``results.csv`` is read from its ``fold_*.csv``.
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
    parser.add_argument("--calibration", default=None, help="this method's coverage, width and error ratio")
    parser.add_argument("--against", type=Path, default=None, help="another run of the same benchmark")
    args = parser.parse_args()
    table = rows(args.results)
    if args.against:
        against(table, rows(args.against))
        return
    if args.calibration:
        calibration(table, args.calibration)
        return
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


def rows(folder: Path) -> pd.DataFrame:
    """A results folder's rows: ``results.csv``, or its finished folds of a run that was stopped."""
    if (folder / "results.csv").exists():
        return pd.read_csv(folder / "results.csv")
    return pd.concat([pd.read_csv(f) for f in sorted(folder.glob("fold_*.csv"))], ignore_index=True)


def against(table: pd.DataFrame, other: pd.DataFrame) -> None:
    """Per method, over the held-out rows both runs have: the largest absolute difference of PCC, MAE (also relative
    to the other run's), 80% coverage and the error ratio (empty for a method without intervals), and on how many
    of those rows the in-context layer kept the same thing (empty without a layer)."""
    key = ["fold", "section", "protocol", "prompt_fraction", "seed", "method", "spots"]
    both = table.merge(other, on=key, suffixes=("", "_other"))
    both = both[both["spots"] == "heldout"]
    print("| method | largest held-out PCC difference | MAE | MAE, relative | 80% coverage | error ratio | same layer "
          "kept | rows |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|")
    for method, rows in both.groupby("method"):
        cells = []
        for col in ("pcc", "mae", "mae_relative", "coverage_80", "error_ratio"):
            if col == "mae_relative":
                d = (rows["mae"] - rows["mae_other"]).abs() / rows["mae_other"].abs()
            elif col in rows and rows[col].notna().any():
                d = (rows[col] - rows[f"{col}_other"]).abs()
            else:
                cells.append("")
                continue
            cells.append(f"{d.max():.2g}")
        kept = rows["layer_kept"].notna() if "layer_kept" in rows else pd.Series(False, index=rows.index)
        same = int((rows.loc[kept, "layer_kept"] == rows.loc[kept, "layer_kept_other"]).sum()) if kept.any() else None
        cells.append("" if same is None else f"{same} of {int(kept.sum())}")
        print(f"| {method} | {' | '.join(cells)} | {len(rows)} |")


def calibration(table: pd.DataFrame, method: str) -> None:
    """Coverage of the 80% and 90% intervals, the 90% width and the error ratio on held-out spots, per protocol and
    prompt fraction: seeds averaged within a fold, then the mean over folds (coverage with its range over folds).
    Folds without uncertainty (fewer prompts than the layer needs) are left out and counted."""
    metrics = ["coverage_80", "coverage_90", "width_90", "error_ratio"]
    rows = table[(table["method"] == method) & (table["spots"] == "heldout")]
    per = rows.groupby(["protocol", "prompt_fraction", "fold"])[metrics].mean().reset_index()
    print("| targets | prompts | coverage 80% | coverage 90% | width 90% | error ratio | folds |")
    print("|---|---|---|---|---|---|---|")
    for (protocol, fraction), r in per.groupby(["protocol", "prompt_fraction"], sort=True):
        r = r.dropna(subset=metrics)
        if r.empty:
            print(f"| {protocol} | {fraction:.0%} | | | | | 0 |")
            continue
        cov = [f"{r[c].mean():.3f} ({r[c].min():.3f}-{r[c].max():.3f})" for c in ("coverage_80", "coverage_90")]
        print(f"| {protocol} | {fraction:.0%} | {' | '.join(cov)} | {r['width_90'].mean():.2f} | "
              f"{r['error_ratio'].mean():.2f} | {len(r)} |")  # fmt: skip


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
