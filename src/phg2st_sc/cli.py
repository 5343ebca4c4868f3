"""Command-line interface: ``phg2st <command>``."""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from collections.abc import Sequence
from pathlib import Path

DEMO_GENES = ("ERBB2", "KRT8", "COL3A1")  # HER2 amplicon, luminal keratin, stromal collagen


def _summarise(table):
    """Mean ± std over seeds, one row per method."""
    import pandas as pd

    g = table.groupby("method", sort=False)
    out = pd.DataFrame(index=g.size().index)
    for m in ("mae", "ccc", "pcc"):
        out[m.upper()] = [f"{mu:.3f} ± {sd:.3f}" for mu, sd in zip(g[m].mean(), g[m].std(ddof=0), strict=True)]
    return out


def demo(section: str = "C2", out: str | Path = "demo_output", seeds: Sequence[int] = (0, 1, 2)) -> int:
    """Run the demo on a real her2st section: tile embeddings, hypergraph, prompts, baselines, scores, a figure."""
    import matplotlib

    matplotlib.use("Agg")
    import pandas as pd

    import phg2st_sc as phg2st

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    print(f"phg2st-sc {phg2st.__version__} demo: her2st section {section} (data: {phg2st.settings.data_dir})")
    adata = phg2st.datasets.her2st(section)
    print(
        f"  {adata.n_obs} spots x {adata.n_vars} genes, image {adata.uns['spatial'][section]['metadata'].get('image_shape')}"
    )

    # Image features with the encoder that ships offline (UNI needs gated weights); cached for reruns.
    rep = "X_efficientnet_lite0"
    phg2st.pp.embed_tiles(adata, encoder="efficientnet_lite0", cache_dir=out / "embedding_cache")
    p = adata.uns[rep]["params"]
    print(f"  embedded {p['tiles_embedded']} tiles ({p['spot_tiles']} spot tiles + {p['neighbour_tiles']} shared "
          f"neighbour tiles; naive per-spot crops: {p['naive_crops']}) on {p['device']} in {p['precision']}")  # fmt: skip
    phg2st.pp.build_hypergraph(adata, use_rep=rep)
    hp = adata.uns["phg2st_hypergraph"]["params"]
    print(f"  spot hypergraph: {adata.n_obs} hyperedges of {hp['k'] + 1} spots in obsp['phg2st_incidence']")

    methods = ["mean", "idw", "gp", "feature_knn", "ridge", "stack"]
    tables = []
    phg2st.settings.progress = False  # the evaluation takes seconds; keep the printed tables clean
    for protocol in ("heldout", "heldout_smoothed"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", phg2st.SmoothedTargetWarning)
            table = phg2st.tl.evaluate(
                adata, methods=methods, protocol=protocol, panel="her2st_785", seeds=seeds, use_rep=rep
            )
        tables.append(table)
        proto = phg2st.tl.PROTOCOLS[protocol]
        print(f"\nProtocol {protocol!r}: {proto.description}")
        print(f"  {table['n_spots'].iloc[0]} held-out spots, {table['n_genes'].iloc[0]} genes scored "
              f"({table['n_genes_skipped'].iloc[0]} constant, skipped), seeds {list(seeds)}; mean ± std over seeds")  # fmt: skip
        print(_summarise(table).to_string())
        if proto.smooth:
            print(f"  NOTE: {table['note'].iloc[0]}")
    tidy = pd.concat(tables, ignore_index=True)
    tidy.to_csv(out / f"her2st_{section}_baselines.csv", index=False)

    work = phg2st.tl.prepare_targets(adata, "heldout", panel=list(DEMO_GENES))
    phg2st.tl.select_prompts(work, fraction=0.1, seed=seeds[0])
    for method in ("idw", "stack"):
        phg2st.tl.baseline(work, method=method, use_rep=rep if method == "stack" else None)
    fig_path = out / f"her2st_{section}_genes.png"
    phg2st.pl.spatial(work, list(DEMO_GENES), layers=(None, "baseline_idw", "baseline_stack"), save=fig_path)
    print(f"\nWrote {out / f'her2st_{section}_baselines.csv'} and {fig_path} in {time.perf_counter() - t0:.1f} s.")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``phg2st`` command."""
    parser = argparse.ArgumentParser(prog="phg2st", description="PHG2ST spatial expression prediction tools.")
    sub = parser.add_subparsers(dest="command", required=True)
    p_demo = sub.add_parser(
        "demo", help="embeddings, hypergraph, baselines and scores on a real her2st section (needs $PHG2ST_DATA_DIR)"
    )
    p_demo.add_argument("--section", default="C2", help="her2st section (default: C2)")
    p_demo.add_argument("--out", default="demo_output", help="output folder (default: demo_output)")
    p_demo.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="prompt seeds (default: 0 1 2)")
    args = parser.parse_args(argv)
    try:
        if args.command == "demo":
            return demo(args.section, args.out, args.seeds)
    except Exception as err:  # noqa: BLE001 - the CLI reports any failure as a message and an exit code
        print(f"phg2st {args.command}: error: {err}", file=sys.stderr)
        return 1
    return 2  # pragma: no cover - argparse rejects unknown commands


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
