"""Held-out PCC per fold of the two training-prompt settings (``run.py``), and their difference.

Usage: ``python compare.py DIR [DIR ...]`` (each a ``run.py`` results folder).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd


def main() -> None:
    for root in map(Path, sys.argv[1:]):
        t = pd.read_csv(root / "results.csv")
        f = t[t["spots"] == "heldout"].groupby(["protocol", "method", "fold"])["pcc"].mean().unstack()
        print(f"{root.name}: held-out PCC per fold (seeds averaged)\n{f.round(4).to_string()}")
        for proto in f.index.get_level_values(0).unique():
            d = f.loc[(proto, "adaptive_range")] - f.loc[(proto, "adaptive_fixed30")]
            print(f"  {proto}: range {f.loc[(proto, 'adaptive_range')].mean():.4f}, fixed 0.3 "
                  f"{f.loc[(proto, 'adaptive_fixed30')].mean():.4f}, difference {d.mean():+.4f} "
                  f"(higher on {(d > 0).sum()} of {len(d)} folds)")  # fmt: skip


if __name__ == "__main__":
    main()
