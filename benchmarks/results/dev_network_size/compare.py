"""The sixteenth round's table and verdict (RULE.md).

Usage: ``python compare.py HER2ST MOB`` (the ``run.py`` output folders); reads the (128, 100) rows of MOB from
``../dev_training_prompts/mob`` and the new patient's cells from ``../dev_new_patient/{base,fit_defaults}``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd

HERE = Path(__file__).parent
KEY = ["protocol", "prompt_fraction", "section", "seed"]


def rows(path: Path, method: str) -> pd.Series:
    t = pd.read_csv(path / "results.csv")
    t = t[(t["spots"] == "heldout") & (t["method"] == method) & t["prompt_fraction"].isin([0.1, 0.2])]
    return t.set_index(KEY)["pcc"].sort_index()


def cells(small: pd.Series, large: pd.Series, name: str) -> pd.Series:
    """The change per (protocol, fraction), with both means and the sections where it is positive."""
    d = (large - small).dropna()
    per_section = d.groupby(level=["protocol", "prompt_fraction", "section"]).mean()
    out = d.groupby(level=["protocol", "prompt_fraction"]).mean()
    for (proto, frac), v in out.items():
        f = per_section.loc[(proto, frac)]
        print(f"{name:12s} {proto:17s} {frac:.2f}: 128 {small.loc[(proto, frac)].mean():.4f}, 256 "
              f"{large.loc[(proto, frac)].mean():.4f}, change {v:+.4f} ({(f > 0).sum()} of {len(f)} sections higher)")  # fmt: skip
    return out


def main() -> None:
    her2st, mob = Path(sys.argv[1]), Path(sys.argv[2])
    new = HERE.parent / "dev_new_patient"
    groups = {
        "her2st": cells(rows(her2st, "adaptive_128"), rows(her2st, "adaptive_256"), "her2st"),
        "MOB": cells(rows(HERE.parent / "dev_training_prompts" / "mob", "adaptive_range"), rows(mob, "adaptive_256"), "MOB"),
        "new patient": cells(rows(new / "base" / "new_patient", "phg2st_adaptive"),
                             rows(new / "fit_defaults" / "new_patient", "phg2st_adaptive"), "new patient"),
    }  # fmt: skip
    check = rows(her2st, "adaptive_128") - rows(HERE.parent / "dev_training_prompts" / "her2st", "adaptive_range")
    print(f"\nher2st (128, 100) retrained against ../dev_training_prompts/her2st: largest difference per draw "
          f"{check.abs().max():.4f}, mean {check.mean():+.4f}")  # fmt: skip
    means = {k: float(v.mean()) for k, v in groups.items()}
    overall = sum(means.values()) / len(means)
    keep = overall > 0.002 and min(means.values()) >= -0.005
    verdict = "tl.fit's defaults stay (256, 200)" if keep else "tl.fit's defaults become (128, 100)"
    print(
        f"group means {', '.join(f'{k} {v:+.4f}' for k, v in means.items())}; mean {overall:+.4f}: {verdict} (RULE.md)"
    )


if __name__ == "__main__":
    main()
