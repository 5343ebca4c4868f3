"""Fourteenth round: the network's prompt pathway trained on other patients' sections (counts only).

Only patient C's sections have H&E images here, so the image map learns from four sections of one patient; 24 more
her2st sections (patients A, D-H; C1, of patient C, has no image either) have counts and spot positions only. A prompts-only network (``use_image=False``:
no image branch; it reads the prompts through its prompt field and prompt attention) can train on all of them.

Two runs of ``tl.benchmark`` on the same code, every section given a placeholder feature (one zero column, which a
prompts-only network never reads; the baselines run here read no image):

- ``lopo``: the 30 sections, leave one patient out: the prompts-only adaptive variant trained on the other six
  patients' sections against the prompt-only baselines, on a patient the network never saw (a measurement);
- ``loso_c`` / ``loso_c_plus``: her2st C2-C6, leave one section out, the prompts-only adaptive variant trained on the
  other C sections alone (as in the final runs) / on those and the 24 sections of the other patients (the decision
  of RULE.md). The C sections are listed last, so both use the same C section to select the epoch.

Usage: ``PHG2ST_DATA_DIR=../shared/data python run.py {lopo,loso_c,loso_c_plus} --out DIR [--model-cache MODELS]``

The networks are kept in ``DIR/models``, or in ``MODELS``: a later run of the layer on the same networks (a fresh
``--out``, ``--model-cache`` the first run's ``DIR/models``) trains none.
"""

from __future__ import annotations

import argparse
import warnings

import numpy as np

import phg2st_sc as phg2st
from phg2st_sc.datasets import HER2ST_SECTIONS

REP = "X_placeholder"
C = ["C2", "C3", "C4", "C5", "C6"]


def load(names):
    """The sections of ``names`` that are here (patient B is withheld), each with the placeholder feature."""
    out = []
    for s in names:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                a = phg2st.datasets.her2st(s)
        except phg2st.DataNotFoundError:
            continue
        a.obsm[REP] = np.zeros((a.n_obs, 1), dtype=np.float32)
        out.append(a)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("run", choices=["lopo", "loso_c", "loso_c_plus"])
    ap.add_argument("--out", required=True)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--model-cache", default=None, help="where the networks are kept (default: OUT/models)")
    args = ap.parse_args()
    others = [s for s in HER2ST_SECTIONS if not s.startswith("C")]  # here: 24 sections of patients A, D-H
    if args.run == "lopo":
        names, folds = list(HER2ST_SECTIONS), "leave_one_patient_out"
    else:
        names = C if args.run == "loso_c" else others + C
        folds = {s: [s] for s in C}
    adatas = load(names)  # each section read once (sections not here are skipped)
    methods = ["mean", "idw", "gp", "phg2st_adaptive_prompts_only"]
    res = phg2st.tl.benchmark(
        adatas, folds=folds, methods=methods, use_rep=REP, panel="her2st_785", seeds=args.seeds,
        prompt_fractions=[0.1], spots=["heldout"], fit_kwargs={"hidden": 128, "max_epochs": 100},
        out=args.out, model_cache=args.model_cache or f"{args.out}/models",
    )  # fmt: skip
    print(res.summary.to_string())


if __name__ == "__main__":
    main()
