"""Do any two spots of the benchmark sections share a neighbour-tile window?

The neighbour branch runs once per distinct window (``_module.neighbour_tokens``); where no window is shared, the
model takes exactly the path it took before that change. This lays the sections' tiles out as ``pp.embed_tiles``
does (``pp._tiles.plan_tiles``, the benchmark's tile sizes: 224 coordinate units on her2st, 224 px at 0.9 µm/px on
MOB) and counts the distinct windows. No encoder runs, only the image sizes are read.

Usage:
    PHG2ST_DATA_DIR=../shared/data .venv/bin/python benchmarks/shared_windows.py
"""

from __future__ import annotations

import numpy as np

import phg2st_sc as phg2st
from phg2st_sc.pp._embed import _image_source, _region_px
from phg2st_sc.pp._tiles import plan_tiles

SECTIONS = [("her2st", s, None) for s in ("C2", "C3", "C4", "C5", "C6")] + [
    ("stutility_mob", s, 0.9) for s in ("MOB1", "MOB2", "MOB3", "MOB4")
]


def main() -> None:
    print("| dataset | section | spots | distinct windows | spots sharing a window |")
    print("|---|---|---|---|---|")
    for dataset, section, mpp in SECTIONS:
        a = getattr(phg2st.datasets, dataset)(section)
        src = _image_source(a, a, None, None, "spatial")
        plan = plan_tiles(src["coords"], src["reader"].shape, _region_px(src, 224, mpp), 5)
        distinct = len(np.unique(plan.index, axis=0))
        print(f"| {dataset} | {section} | {a.n_obs} | {distinct} | {a.n_obs - distinct} |", flush=True)


if __name__ == "__main__":
    main()
