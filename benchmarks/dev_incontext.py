"""Development runs of the in-context layer (issue 15): leave one section out on her2st C2-C6 and on MOB1-4.

For each fold a network (``--network image``: image only; ``propagated``: the propagated variant, whose predictions
at the prompts are then cross-fitted over five folds of prompts) is trained on the other sections (validation
"auto"); on the test section,
for each prompt seed, the baselines, the network alone, each in-context component and their combination are
scored on held-out spots, with two bounds that are not methods (they read the held-out values): the layer's
combination with its weights fitted on the held-out spots (shared by the genes), and with weights of each gene's
own fitted on one half of the held-out spots and scored on the other. Trained networks are kept in ``OUT/models``
so that designs of the post-hoc layer can be compared without retraining.

    PHG2ST_DATA_DIR=../shared/data .venv/bin/python benchmarks/dev_incontext.py her2st --out dev_her2st
    PHG2ST_DATA_DIR=../shared/data .venv/bin/python benchmarks/dev_incontext.py mob --out dev_mob
    PHG2ST_DATA_DIR=../shared/data .venv/bin/python benchmarks/dev_incontext.py mob --network propagated --out dev_mob
"""

from __future__ import annotations

import argparse
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

import phg2st_sc as phg2st
from phg2st_sc._constants import Keys
from phg2st_sc._model import _incontext
from phg2st_sc._utils import as_dense, spot_pitch
from phg2st_sc.tl._evaluation import baseline_predictor, evaluate_methods, model_predictor

ENCODER = "efficientnet_lite0"
REP = Keys.embedding(ENCODER)
# Fixed before any run: the demo's settings (tl.fit defaults with 128-d tokens and at most 100 epochs on a CPU).
FIT = {"use_rep": REP, "max_epochs": 100, "patience": 20, "accelerator": "cpu"}
IMAGE_ONLY = {"hidden": 128, "use_prompts": False}


def sections(dataset: str, cache: Path) -> dict:
    """The dataset's sections with images, embedded (cached in ``cache``) and with their hypergraphs."""
    out = {}
    names = ("C2", "C3", "C4", "C5", "C6") if dataset == "her2st" else ("MOB1", "MOB2", "MOB3", "MOB4")
    for name in names:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            a = phg2st.datasets.her2st(name) if dataset == "her2st" else phg2st.datasets.stutility_mob(name)
        phg2st.pp.embed_tiles(a, encoder=ENCODER, cache_dir=cache, mpp=None if dataset == "her2st" else 0.9)
        phg2st.pp.build_hypergraph(a, use_rep=REP)
        out[name] = a
    return out


def fold_models(secs: dict, dataset: str, protocols: list[str], models: Path, network: str = "propagated"):
    """For each target protocol and test section: the protocol's targets of every section and the network trained
    on the other sections (``network``: ``"image"`` or ``"propagated"``), kept in ``models`` and read from there
    when present. Yields ``(protocol, test, targets, model)``."""
    for proto in protocols:
        panel = "her2st_785" if dataset == "her2st" else None
        targets = {s: phg2st.tl.prepare_targets(a, proto, panel=panel) for s, a in secs.items()}
        for test in targets:
            path = models / f"{proto}_{test}{'' if network == 'image' else '_propagated'}.pt"
            if path.exists():
                model = phg2st.PHG2ST.load(path)
            else:
                train = [targets[s] for s in targets if s != test]
                if network == "image":
                    model = phg2st.tl.fit(train, config=IMAGE_ONLY, **FIT)
                else:
                    model = phg2st.tl.fit(train, config={"hidden": 128}, prompt_fraction=(0.05, 0.3), **FIT)
                model.save(path)
            yield proto, test, targets, model


def oracle_combination(components: dict, y: np.ndarray, held: np.ndarray, per_gene: bool = False) -> np.ndarray:
    """The layer's form (non-negative weights shared by the genes, on per-gene standardised components) with the
    weights fitted on the held-out spots' measured values: the best any choice of weights could score there, an
    upper bound on the layer with these components (it reads the held-out values: never a method)."""
    from scipy.optimize import nnls

    def std(v):
        v = v[held] - v[held].mean(0)
        s = v.std(0)
        return v / np.where(s > 0, s, 1.0)

    names = list(components)
    parts = [std(components[c]) for c in names]
    target = std(y)
    if per_gene:  # each gene its own weights, fitted on one half of the held-out spots and applied to the other
        out = np.zeros_like(y)  # (in-sample, five weights per gene on ~170 spots would be inflated by overfitting)
        idx = np.flatnonzero(held)
        halves = np.array_split(np.random.default_rng(0).permutation(len(idx)), 2)
        for fit_on, apply_to in (halves, halves[::-1]):
            for g in range(y.shape[1]):
                w, _ = nnls(np.column_stack([x[fit_on, g] for x in parts]), target[fit_on, g])
                rows = idx[apply_to]
                out[rows, g] = sum(wi * parts[k][apply_to, g] for k, wi in enumerate(w))
        return out
    w, _ = nnls(np.column_stack([x.ravel() for x in parts]), target.ravel())
    return sum(wi * components[c] for wi, c in zip(w, names, strict=True))


def random_draws(adata, fractions, seeds=(0, 1, 2)):
    """For each fraction and seed: the random prompt mask drawn into ``adata`` (as the benchmark draws it) and a
    scorer, the held-out mean PCC over the genes that vary there."""
    from phg2st_sc._model._incontext import _pcc_genes
    from phg2st_sc._utils import as_dense
    from phg2st_sc.tl._evaluation import draw_prompts

    y = as_dense(adata.X, dtype=np.float64)
    for fraction in fractions:
        for seed in seeds:
            draw_prompts(adata, fraction, seed, "random", REP)
            prompt = adata.obs["phg2st_prompt"].to_numpy(bool)
            held = ~prompt
            ok = y[held].std(0) > 0

            def score(pred, held=held, ok=ok):
                return float(_pcc_genes(pred[held][:, ok], y[held][:, ok]).mean())

            yield fraction, seed, prompt, score


def layer_inputs(model, adata, prompt: np.ndarray) -> tuple[tuple, dict]:
    """The positional and keyword arguments of ``_incontext.adapt`` for ``model`` on ``adata`` with these prompts:
    the network's prediction and tokens, and, for a network that reads the prompts, its cross-fitted passes (as
    the adaptive variant makes them). ``adata``'s genes must be the model's, in its order: the network predicts in
    the model's order, the prompts' values are read from ``adata``."""
    import torch

    if list(adata.var_names) != list(model.genes):
        raise ValueError("Align the section to the model's genes first (adata[:, model.genes]): their orders differ.")
    net, latent = model.predict(adata, prompt, network_only=True)
    oof = tokens = None
    if model.config["use_prompts"]:
        with torch.inference_mode():
            oof, tokens = model._cross_fitted(model.tensors(adata, prompt=prompt), prompt, "cpu", (net, latent))
    y = as_dense(adata[prompt].X, dtype=np.float64)
    xy = np.asarray(adata.obsm[Keys.SPATIAL], dtype=float)
    args = (net.astype(float), latent, np.asarray(adata.obsm[REP], float), xy / spot_pitch(xy), prompt, y)
    return args, {"network_at_prompts": oof, "latent_at_prompts": tokens}


def incontext_predictor(model, component: str | None = None, per_gene: bool = False):
    """The network plus the in-context layer (or one of its components: network, kriging, field, field_long, ridge)."""

    def predict(adata, layer, seed):
        prompt = adata.obs[Keys.PROMPT].to_numpy(bool)
        args, kwargs = layer_inputs(model, adata, prompt)
        y = args[5]
        out, fit = _incontext.adapt(*args, per_gene=per_gene, keep_components=component is not None, **kwargs)
        if component in ("oracle", "oracle_per_gene"):  # weights fitted on the held-out spots: a bound, not a method
            y_all = as_dense(adata.X, dtype=np.float64)
            out = oracle_combination(fit.components, y_all, ~prompt, per_gene=component == "oracle_per_gene")
        elif component is not None:
            out = fit.components[component]
        out[prompt] = y
        adata.layers[layer] = out.astype(np.float32)
        adata.uns.pop(layer, None)
        predict.fits.append(fit.record())

    predict.fits = []
    return predict


def dev_arguments(doc: str) -> argparse.ArgumentParser:
    """The arguments the development scripts share: dataset, output folder, seeds, prompt strategy, protocols."""
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dataset", choices=["her2st", "mob"])
    ap.add_argument("--out", required=True)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--strategy", default="random")
    ap.add_argument("--protocols", nargs="+", default=["heldout", "heldout_smoothed"])
    return ap


def dev_setup(args: argparse.Namespace) -> tuple[Path, dict]:
    """The output folder (with ``models/`` made) and the dataset's embedded sections; progress bars off."""
    out = Path(args.out)
    (out / "models").mkdir(parents=True, exist_ok=True)
    phg2st.settings.progress = False
    return out, sections(args.dataset, Path(tempfile.gettempdir()) / f"phg2st_cache_{args.dataset}")


def fold_draws(args: argparse.Namespace, fractions) -> tuple[Path, object]:
    """The output folder and, for each target protocol and test section (``fold_models``), ``(protocol, test, model,
    adata, y, draws)``: the section aligned to the model's genes, its expression, and for each random draw
    (``random_draws``) ``(fraction, seed, prompt, score, inputs, kwargs)``, the last two ``layer_inputs``'s."""
    out, secs = dev_setup(args)

    def folds():
        for proto, test, targets, model in fold_models(secs, args.dataset, args.protocols, out / "models"):
            a = targets[test][:, model.genes].copy()
            draws = (
                (f, s, p, score, *layer_inputs(model, a, p))
                for f, s, p, score in random_draws(a, fractions, args.seeds)
            )
            yield proto, test, model, a, as_dense(a.X, dtype=np.float64), draws

    return out, folds()


def main() -> None:
    ap = dev_arguments(__doc__)
    ap.add_argument("--fraction", type=float, default=0.1)
    ap.add_argument(
        "--network",
        choices=["image", "propagated"],
        default="image",
        help="the network under the layer: image-only, or the propagated variant (reads the prompts)",
    )
    args = ap.parse_args()
    t0 = time.perf_counter()
    out, secs = dev_setup(args)
    print(f"embedded in {time.perf_counter() - t0:.0f} s", flush=True)
    rows = []
    for proto, test, targets, model in fold_models(secs, args.dataset, args.protocols, out / "models", args.network):
        methods = {
            "gp": baseline_predictor({"method": "gp"}),
            "idw": baseline_predictor({"method": "idw"}),
            "stack": baseline_predictor({"method": "stack"}, REP),
            "network": model_predictor(model),
            "in-context": incontext_predictor(model),
            "ic: kriging only": incontext_predictor(model, "kriging"),
            "ic: field only": incontext_predictor(model, "field"),
            "ic: long field only": incontext_predictor(model, "field_long"),
            "oracle weights (reads held-out values)": incontext_predictor(model, "oracle"),
            "oracle weights per gene, cross-fitted (reads held-out values)": incontext_predictor(
                model, "oracle_per_gene"
            ),
            "ic: ridge only": incontext_predictor(model, "ridge"),
            "ic: network recentred": incontext_predictor(model, "network"),
        }
        r, _ = evaluate_methods(targets[test].copy(), methods, seeds=args.seeds, fraction=args.fraction,
                                strategy=args.strategy, base={"protocol": proto, "section": test})  # fmt: skip
        rows += r
        fits = pd.DataFrame([{**f["weights"], "ell": f["length_scale"], "eta": f["noise_ratio"]}
                             for f in methods["in-context"].fits])  # fmt: skip
        print(f"{proto} {test}: " + ", ".join(f"{m} {np.mean([x['pcc'] for x in r if x['method'] == m]):.3f}"
              for m in methods) + f" | weights {fits.mean().round(2).to_dict()}", flush=True)  # fmt: skip
    table = pd.DataFrame(rows)
    table.to_csv(out / "rows.csv", index=False)
    per = table.groupby(["protocol", "method", "section"], sort=False)["pcc"].mean().reset_index()
    summary = per.groupby(["protocol", "method"], sort=False)["pcc"].agg(["mean", "std"]).round(3)
    print(summary.to_string())
    print(f"done in {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
