"""How close real sections come to the in-context layer's inflation bound (``_incontext.MAX_INFLATION``).

The 30 her2st sections or MOB1-4 (counts), both targets, random prompts at 5, 10, 20 and 30% and blocks at 10%,
seeds 0-2, the benchmark's gene panels. No network is trained: the prompts' IDW stands in for it (cross-fitted at
the prompts as the network's passes are) and noise for its tokens. For each draw the ratio the check compares to
the bound (:func:`_incontext.inflation`, the first check of the call) and the components it left out; where it
left one out, the held-out PCC and MAE with the check and without it (no bound)::

    PHG2ST_DATA_DIR=../shared/data .venv/bin/python benchmarks/inflation_check.py her2st --out her2st.csv
    PHG2ST_DATA_DIR=../shared/data .venv/bin/python benchmarks/inflation_check.py mob --out mob.csv
"""

from __future__ import annotations

import argparse
import contextlib
import json
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

import phg2st_sc as phg2st
from phg2st_sc._constants import Keys
from phg2st_sc._model import _incontext as ic
from phg2st_sc._utils import as_dense, inverse_distance, spot_pitch

HER2ST = [f"{p}{i}" for p in "ACD" for i in range(1, 7)] + [f"{p}{i}" for p in "EFGH" for i in range(1, 4)]
DRAWS = [("random", f, s) for f in (0.05, 0.1, 0.2, 0.3) for s in (0, 1, 2)] + [("blocks", 0.1, s) for s in (0, 1, 2)]


@contextlib.contextmanager
def _bound(value: float):
    kept, ic.MAX_INFLATION = ic.MAX_INFLATION, value
    try:
        yield
    finally:
        ic.MAX_INFLATION = kept


def sections(dataset: str) -> tuple[list[str], object, object]:
    """The dataset's section names, reader and gene panel (her2st's 785, or the MOB tables' 1,000 genes)."""
    if dataset == "her2st":
        return HER2ST, phg2st.datasets.her2st, "her2st_785"
    protocol = Path(__file__).parent / "results" / "mob_adaptive" / "protocol.json"
    return list(phg2st.datasets.STUTILITY_MOB_SECTIONS), phg2st.datasets.stutility_mob, json.loads(
        protocol.read_text())["panel"]["genes"]  # fmt: skip


def draws(name: str, load, panel):
    """Every draw of :data:`DRAWS` on one section, both targets, with the layer's inputs: the stand-in network.

    Yields ``(info, a, xy, prompt, y, network, at_prompts, tokens)``: the draw's description, its prepared AnnData
    (prompts selected), positions in spot pitches, the prompt mask and values, the prompts' IDW at every spot and
    cross-fitted at the prompts, and noise tokens. Draws with fewer than ``MIN_PROMPTS`` prompts are skipped.
    """
    raw = load(name)
    for proto in ("heldout", "heldout_smoothed"):
        a = phg2st.tl.prepare_targets(raw, proto, panel=panel)
        xy = np.asarray(a.obsm[Keys.SPATIAL], dtype=float)
        xy = xy / spot_pitch(xy)
        values = as_dense(a.X, dtype=np.float64)
        for strategy, fraction, seed in DRAWS:
            phg2st.tl.select_prompts(a, fraction=fraction, seed=seed, strategy=strategy, overwrite=True)
            prompt = a.obs[Keys.PROMPT].to_numpy(bool)
            if prompt.sum() < ic.MIN_PROMPTS:
                continue
            y = values[prompt]
            network = inverse_distance(xy[prompt], y, xy).astype(np.float32)
            at_prompts = ic._idw_folds(xy[prompt], y, ic.prompt_folds(int(prompt.sum())))
            tokens = np.random.default_rng(seed).normal(size=(len(xy), 8)).astype(np.float32)
            info = {"section": name, "protocol": proto, "strategy": strategy, "fraction": fraction, "seed": seed,
                    "prompts": int(prompt.sum())}  # fmt: skip
            yield info, a, xy, prompt, y, network, at_prompts, tokens


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dataset", choices=("her2st", "mob"))
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    warnings.simplefilter("ignore")
    names, load, panel = sections(args.dataset)
    seen: list[float] = []
    measure = ic.inflation
    ic.inflation = lambda *a: (lambda out: seen.append(out[0]) or out)(measure(*a))
    rows, t0 = [], time.perf_counter()
    for name in names:
        for info, a, xy, prompt, y, network, at_prompts, tokens in draws(name, load, panel):
            seen.clear()
            _, fit = ic.adapt(network, tokens, None, xy, prompt, y, network_at_prompts=at_prompts)
            record = fit.record()["cv_pcc"]
            row = info | {"ratio": seen[0] if seen else np.nan, "left_out": record.get("inflating", ""),
                          "kept": record["kept"]}  # fmt: skip
            if record.get("inflating"):  # held-out accuracy with the check and without it (no bound)
                for suffix, bound in (("", ic.MAX_INFLATION), ("_unchecked", np.inf)):
                    with _bound(bound):
                        a.layers["_p"] = ic.adapt(network, tokens, None, xy, prompt, y, network_at_prompts=at_prompts)[
                            0
                        ]
                    s = phg2st.tl.score(a, layer="_p", spots="heldout").summary
                    row |= {f"pcc{suffix}": float(s["pcc"]), f"mae{suffix}": float(s["mae"])}
                del a.layers["_p"]
            rows.append(row)
        print(f"{name} ({time.perf_counter() - t0:.0f} s)", flush=True)
    table = pd.DataFrame(rows)
    table.to_csv(args.out, index=False)
    print(table.groupby(["protocol", "strategy", "fraction"])["ratio"].agg(["max", "median", "count"]).round(3))
    print(
        f"bound {ic.MAX_INFLATION}; draws with a component left out: {int((table.left_out != '').sum())} of {len(table)}"
    )
    fired = table[table.left_out != ""]
    if len(fired):
        print(fired.drop(columns=["kept"]).round(4).to_string(index=False))


if __name__ == "__main__":
    main()
