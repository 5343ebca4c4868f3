"""Whether a cap on the sum of the in-context layer's weights could replace its inflation check.

The draws of ``inflation_check.py`` (the prompts' IDW standing in for the network, noise for its tokens, no
training): for each, the non-negative weights of the layer's first fit (:func:`_incontext.combine`, before the
safeguard and the check), their sum, the component with the largest weight and its spread at the spots to predict
(each gene's standard deviation there in units of the prompts', averaged over genes; times the weight), and whether
the check left a component out. A cap on the sum bounds the combination's spread by the cap times its widest component's, wherever it is
read, so it would make the check needless; it is worth having only if sums above the bound are rare where nothing
inflates::

    PHG2ST_DATA_DIR=../shared/data .venv/bin/python benchmarks/dev_weight_sum.py mob --out mob.csv
"""

from __future__ import annotations

import argparse
import time
import warnings

import pandas as pd
from inflation_check import draws, sections

from phg2st_sc._model import _incontext as ic


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dataset", choices=("her2st", "mob"))
    ap.add_argument("--out", required=True)
    ap.add_argument("--bound", type=float, default=ic.MAX_INFLATION, help="the cap examined (default: the check's)")
    args = ap.parse_args()
    warnings.simplefilter("ignore")
    names, load, panel = sections(args.dataset)
    fits: list[dict[str, float]] = []
    combine = ic.combine
    ic.combine = lambda *a, **k: (lambda w: fits.append(w) or w)(combine(*a, **k))
    rows, t0 = [], time.perf_counter()
    for name in names:
        for info, _, xy, prompt, y, network, at_prompts, tokens in draws(name, load, panel):
            fits.clear()
            _, fit = ic.adapt(network, tokens, None, xy, prompt, y, network_at_prompts=at_prompts,
                              keep_components=True)  # fmt: skip
            w, record = fits[0], fit.record()["cv_pcc"]
            largest = max(w, key=w.get)  # its spread at the spots to predict, in units of the prompts' sd
            mu, sd = ic.centre_scale(y)
            spread = float(((fit.components[largest][~prompt] - mu) / sd).std(0).mean())
            rows.append(info | {"weight_sum": sum(w.values()), "largest": largest, "largest_weight": w[largest],
                                "largest_spread": spread, "largest_weighted_spread": w[largest] * spread,
                                "left_out": record.get("inflating", ""), **{f"w_{c}": v for c, v in w.items()}})  # fmt: skip
        print(f"{name} ({time.perf_counter() - t0:.0f} s)", flush=True)
    table = pd.DataFrame(rows)
    table.to_csv(args.out, index=False)
    above = table[table.weight_sum > args.bound]
    print(table.weight_sum.describe(percentiles=[0.5, 0.9, 0.99]).round(3).to_string())
    print(f"draws with the weights summing above {args.bound}: {len(above)} of {len(table)}; with a component left "
          f"out by the check: {int((table.left_out.fillna('') != '').sum())}")  # fmt: skip
    print("largest weight among those above:", above.largest.value_counts().to_dict())
    print(above.sort_values("weight_sum", ascending=False).head(10)[
        ["section", "protocol", "strategy", "fraction", "seed", "prompts", "weight_sum", "largest", "largest_spread",
         "largest_weighted_spread", "left_out"]
    ].round(3).to_string(index=False))  # fmt: skip


if __name__ == "__main__":
    main()
