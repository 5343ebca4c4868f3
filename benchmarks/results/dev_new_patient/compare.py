"""The fifteenth round's tables and verdict (RULE.md) from the runs' ``results.csv``.

Usage: ``python compare.py BASE [SECTION_NORM]``: the ``run.py`` output folders of the runs without and with
``--fit section_norm=true`` (each holding ``new_patient/results.csv`` and, where run, ``loso_c/results.csv``).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd

METHOD = "phg2st_adaptive"
GROUPS = {"her2st C2-C6 LOSO (tenth round)": -0.0075, "MOB LOSO (tenth round)": -0.0033}


def rows(root: Path, run: str = "new_patient") -> pd.DataFrame:
    t = pd.read_csv(root / run / "results.csv")
    return t[t["spots"] == "heldout"]


def change(base: pd.DataFrame, norm: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    """Mean PCC with ``section_norm`` minus without, on the same prompts (10% and 20%)."""
    key = ["protocol", "prompt_fraction", "section", "seed", "method"]
    both = base.merge(norm, on=key, suffixes=("", "_norm"))
    both = both[both["prompt_fraction"].isin([0.1, 0.2])]
    return (both["pcc_norm"] - both["pcc"]).groupby([both[k] for k in by]).mean().unstack("method")


def main() -> None:
    base = rows(Path(sys.argv[1]))
    table = base.groupby(["protocol", "prompt_fraction", "method"])["pcc"].mean().unstack("method")
    print("held-out PCC, mean over A1, A2 and seeds 0-2 (trained on C2-C6):")
    print(table.round(3).T.to_string())
    if (Path(sys.argv[1]) / "loso_c" / "results.csv").exists():
        c = rows(Path(sys.argv[1]), "loso_c")
        print("\nC2-C6 at 2000 px, leave one section out, mean over folds and seeds:")
        print(
            c.groupby(["protocol", "prompt_fraction", "method"])["pcc"].mean().unstack("method").round(3).T.to_string()
        )
    per_section = base.groupby(["protocol", "prompt_fraction", "section", "method"])["pcc"].mean().unstack("section")
    print("\nper section:")
    print(per_section.round(3).to_string())
    if len(sys.argv) < 3:
        return
    norm = rows(Path(sys.argv[2]))
    table = change(base, norm, ["protocol", "prompt_fraction", "method"])
    print("\nsection_norm minus without, mean over A1, A2 and seeds 0-2:")
    print(table.round(4).to_string())
    cells = table[METHOD]
    mean, low = cells.mean(), cells.min()
    groups = [*GROUPS.values(), mean]
    overall = sum(groups) / len(groups)
    verdict = (
        "default" if mean >= 0.010 and low >= -0.005 and overall > 0
        else "option" if mean > 0 and low >= -0.005
        else "neither"
    )  # fmt: skip
    print(f"\n{METHOD}: new-patient mean change {mean:+.4f}, lowest cell {low:+.4f}; mean of the group means "
          f"{overall:+.4f} ({', '.join(f'{k} {v:+.4f}' for k, v in GROUPS.items())}, new patient {mean:+.4f}): "
          f"{verdict} (RULE.md)")  # fmt: skip
    if (Path(sys.argv[2]) / "loso_c" / "results.csv").exists():
        within = change(rows(Path(sys.argv[1]), "loso_c"), rows(Path(sys.argv[2]), "loso_c"),
                        ["protocol", "prompt_fraction", "method"])  # fmt: skip
        print("\nC2-C6 at 2000 px, leave one section out: section_norm minus without, mean over folds and seeds:")
        print(within.round(4).to_string())


if __name__ == "__main__":
    main()
