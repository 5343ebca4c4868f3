"""``epochs.csv``: the epochs each adaptive network of the sixteenth round (and of the new patient's fold) trained.

Read from the runs' model caches (``run.py`` writes ``OUT/models``; ``../dev_new_patient/run.py`` writes
``DIR/models``, its ``new_patient`` and ``loso_c`` networks side by side). The image networks of the adaptive
variant only.

Usage: ``python epochs.py LABEL=MODELS [...] --out epochs.csv``, ``MODELS`` a folder or a glob of model files; the
committed file: ``dev_network_size/her2st=H/models dev_network_size/mob=M/models
'dev_new_patient/base/new_patient=B/models/*C2+C3+C4+C5+C6_*.pt' dev_new_patient/fit_defaults/new_patient=D/models``.
"""

from __future__ import annotations

import argparse
import warnings
from glob import glob
from pathlib import Path

import pandas as pd

from phg2st_sc._model._model import PHG2ST


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("runs", nargs="+", help="LABEL=MODELS (a folder or a glob of model files)")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    rows = []
    for item in args.runs:
        label, where = item.split("=", 1)
        paths = Path(where).glob("*.pt") if Path(where).is_dir() else map(Path, glob(where))
        for path in sorted(paths):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                model = PHG2ST.load(path)
            c = model.config
            if c["variant"] != "adaptive" or not c["use_image"]:
                continue
            rows.append({
                "run": label, "protocol": "heldout_smoothed" if path.name.startswith("heldout_smoothed") else "heldout",
                "training_sections": "+".join(model.training["training_sections"]), "hidden": c["hidden"],
                "epochs_trained": len(model.history_),
                "best_epoch_val_pcc": round(float(model.training.get("best_epoch_val_pcc") or float("nan")), 4),
            })  # fmt: skip
    pd.DataFrame(rows).to_csv(args.out, index=False)


if __name__ == "__main__":
    main()
