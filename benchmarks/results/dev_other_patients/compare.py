"""The fourteenth round's table and verdict (RULE.md) from the runs' ``results.csv``.

Usage: ``python compare.py DIR`` with ``DIR/loso_c``, ``DIR/loso_c_plus`` and (optionally) ``DIR/lopo``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd

METHOD = "phg2st_adaptive_prompts_only"


def per_fold(path: Path) -> pd.DataFrame:
    t = pd.read_csv(path / "results.csv")
    t = t[t["spots"] == "heldout"]
    return t.groupby(["protocol", "method", "fold"])["pcc"].mean().unstack("fold")


def main() -> None:
    root = Path(sys.argv[1])
    alone, plus = per_fold(root / "loso_c"), per_fold(root / "loso_c_plus")
    changes = []
    for proto in ("heldout", "heldout_smoothed"):
        a, b = alone.loc[(proto, METHOD)], plus.loc[(proto, METHOD)]
        gp, idw = alone.loc[(proto, "gp")].mean(), alone.loc[(proto, "idw")].mean()
        d = b - a
        changes.append(d.mean())
        print(f"{proto}: trained on C alone {a.mean():.4f}, with the other patients {b.mean():.4f}, change "
              f"{d.mean():+.4f} (per fold {', '.join(f'{f} {v:+.4f}' for f, v in d.items())}); GP {gp:.4f}, IDW {idw:.4f}")  # fmt: skip
    mean, low = sum(changes) / len(changes), min(changes)
    worth = mean >= 0.010 and low >= -0.005
    print(f"mean change {mean:+.4f}, lowest target {low:+.4f}: "
          f"{'worth building mixed training' if worth else 'not worth building (RULE.md)'}")  # fmt: skip
    if (root / "lopo" / "results.csv").exists():
        t = per_fold(root / "lopo")
        print("\nleave one patient out (30 sections), mean over the 7 patients (per patient):")
        for (proto, method), row in t.iterrows():
            print(f"  {proto:17s} {method:29s} {row.mean():.4f}  ({', '.join(f'{f} {v:.3f}' for f, v in row.items())})")


if __name__ == "__main__":
    main()
