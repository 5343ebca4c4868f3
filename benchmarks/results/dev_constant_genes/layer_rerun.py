"""The adaptive variant's rows of the benchmark draws again, on the cached networks (the in-context layer only).

Run once with the code before the constant-gene fix and once after (a checkout of each on PYTHONPATH), then
`compare.py` (see run.sh). One dataset and prompt strategy per call, both targets, seeds 0-2, leave one section out,
the settings of the final runs (`--hidden 128 --max-epochs 100`; MOB at `--mpp 0.9`).

    python layer_rerun.py her2st random 0.05,0.07,0.1,0.2,0.3 MODEL_CACHE EMBEDDING_CACHE OUT
"""

import sys
import warnings

import phg2st_sc as phg2st

warnings.simplefilter("ignore")
phg2st.settings.progress = False
ds, strategy, fractions, models, tiles, out = sys.argv[1:7]
her = ds == "her2st"
phg2st.tl.benchmark(
    "her2st" if her else "stutility_mob", sections=["C2", "C3", "C4", "C5", "C6"] if her else None,
    folds="leave_one_section_out",
    methods={"phg2st_adaptive": {"method": "phg2st", "variant": "adaptive", "prompt_fraction": [0.05, 0.3]}},
    protocols=("heldout", "heldout_smoothed"), prompt_fractions=[float(f) for f in fractions.split(",")],
    prompt_strategy=strategy, seeds=(0, 1, 2), embed_kwargs={"cache_dir": tiles, **({} if her else {"mpp": 0.9})},
    fit_kwargs={"hidden": 128, "max_epochs": 100}, model_cache=models, out=out,
)  # fmt: skip
