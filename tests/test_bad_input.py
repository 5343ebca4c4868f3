"""The bad-input catalogue (issue 7): malformed inputs across the public API.

Every case corrupts an input, snapshots it with a deep copy, and checks that the call raises a specific exception
whose message names the cause, that nothing expensive ran before the check (the functions doing the work are
replaced by tripwires while the call runs), and that the user's object is unchanged afterwards
(:func:`_compare.assert_unchanged`: X, layers, obs, var, obsm, obsp and uns, values and dtypes).
"""

from __future__ import annotations

import contextlib
import gzip
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np
import pandas as pd
import pytest
from _compare import assert_adata_equal, assert_unchanged, snapshot
from _synthetic import SMALL, make_section
from anndata import AnnData
from scipy import sparse

import phg2st_sc as phg2st

pytestmark = [
    pytest.mark.data,
    pytest.mark.filterwarnings("ignore::UserWarning", "ignore::DeprecationWarning"),
    pytest.mark.usefixtures("no_progress"),
]


# -- inputs ------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def _sections(tmp_path_factory):
    """Two small synthetic sections with a real image, tiny-encoder embeddings and hypergraphs (built once)."""
    tmp = tmp_path_factory.mktemp("sections")
    train = make_section(tmp, seed=0, name="S0")
    other = make_section(tmp, seed=4, name="S4")
    phg2st.tl.select_prompts(other, fraction=0.1, seed=0)
    return train, other


@pytest.fixture(scope="module")
def _trained(_sections, tmp_path_factory):
    """A small model trained for one epoch on the first section, and the file it was saved to."""
    model = phg2st.tl.fit(_sections[0], max_epochs=1, validation=None, **SMALL)
    path = tmp_path_factory.mktemp("model") / "model.pt"
    model.save(path)
    return model, path


def _with_counts(a: AnnData, seed: int) -> AnnData:
    """A copy of a synthetic section with raw counts in ``.X`` and its array grid in ``obs``."""
    a = a.copy()
    a.X = np.random.default_rng(seed).poisson(20.0, a.shape).astype(np.float32)
    grid = np.round((np.asarray(a.obsm["spatial"]) - 60.0) / 40.0).astype(int)
    a.obs["array_col"], a.obs["array_row"] = grid[:, 0], grid[:, 1]
    return a


@pytest.fixture(scope="module")
def _protocol_model(_sections):
    """A small model trained on `tl.prepare_targets(..., "heldout")` targets made from raw counts (issue 13)."""
    targets = tl.prepare_targets(_with_counts(_sections[0], seed=1), "heldout")
    return tl.fit(targets, max_epochs=1, validation=None, **SMALL)


@pytest.fixture(scope="module")
def _log_model(_sections):
    """A small model trained on the user's own log1p-transformed expression (natural log)."""
    a = _sections[0].copy()
    a.uns["log1p"] = {"base": None}
    return tl.fit(a, max_epochs=1, validation=None, **SMALL)


class Env:
    """The inputs of a case, built on first use: every attribute is a fresh object the case may corrupt."""

    def __init__(self, request, tmp_path):
        self.request, self.tmp_path = request, tmp_path

    @cached_property
    def counts(self) -> AnnData:
        """C2 as read: raw counts (sparse float32), coordinates, image path, ``hires`` image."""
        return self.request.getfixturevalue("c2")

    @cached_property
    def targets(self) -> AnnData:
        """C2 normalised, log1p, her2st_785 panel, 10% prompts."""
        return self.request.getfixturevalue("c2_targets")

    @cached_property
    def section(self) -> AnnData:
        """A synthetic section with ``X_tiny`` embeddings, the hypergraph and 10% prompts."""
        return self.request.getfixturevalue("_sections")[1].copy()

    @cached_property
    def counts_section(self) -> AnnData:
        """The synthetic section with raw counts in ``.X``, its array grid, embeddings, hypergraph and prompts."""
        return _with_counts(self.request.getfixturevalue("_sections")[1], seed=2)

    @cached_property
    def prepared(self) -> AnnData:
        """``counts_section`` prepared with the 'heldout' protocol (what `protocol_model` expects)."""
        return tl.prepare_targets(self.counts_section, "heldout")

    @property
    def protocol_model(self):
        return self.request.getfixturevalue("_protocol_model")

    @property
    def log_model(self):
        return self.request.getfixturevalue("_log_model")

    @property
    def model(self):
        return self.request.getfixturevalue("_trained")[0]

    @property
    def model_path(self):
        return self.request.getfixturevalue("_trained")[1]


@pytest.fixture
def env(request, tmp_path):
    return Env(request, tmp_path)


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    import matplotlib.pyplot as plt

    plt.close("all")


class WorkStarted(AssertionError):
    """Raised by a tripwire: the function did real work before refusing its input."""


@contextlib.contextmanager
def no_work():
    """Replace the functions that do the expensive part of each API call with tripwires."""
    import matplotlib.pyplot as plt
    import scanpy as sc

    import phg2st_sc._model._embed as embed
    import phg2st_sc._model._model as model
    import phg2st_sc._model._module as module
    import phg2st_sc.pp._hypergraph as hypergraph
    import phg2st_sc.pp._virtual as virtual
    import phg2st_sc.tl._baselines as baselines
    import phg2st_sc.tl._metrics as metrics

    targets = [
        (embed, "embed_regions"), (hypergraph, "spot_hyperedges"), (virtual, "_overview"),
        (virtual, "otsu_tissue_mask"), (metrics, "gene_metrics"), (sc.pp, "normalize_total"), (plt, "subplots"),
        (module.PHG2STModule, "forward"), (model.PHG2ST, "train"),
        *((baselines, f"predict_{m}") for m in ("mean", "idw", "gp", "feature_knn", "ridge", "stack")),
    ]  # fmt: skip

    def tripwire(name):
        def fail(*args, **kwargs):
            raise WorkStarted(f"`{name}` ran before the input was refused")

        return fail

    with pytest.MonkeyPatch.context() as mp:
        for owner, name in targets:
            mp.setattr(owner, name, tripwire(name))
        yield


# -- corruptions -------------------------------------------------------------------------------------------------------
def dense(x) -> np.ndarray:
    return x.toarray() if sparse.issparse(x) else np.array(x)


def set_x(fn: Callable[[np.ndarray], np.ndarray]) -> Callable:
    """Replace ``.X`` by ``fn`` of its dense values (a copy)."""
    return lambda a, e: setattr(a, "X", fn(dense(a.X).copy()))


def at(index, value) -> Callable[[np.ndarray], np.ndarray]:
    def put(x):
        x = x.astype(np.result_type(x.dtype, np.asarray(value).dtype), copy=False)
        x[index] = value
        return x

    return put


def pop(slot: str, key: str) -> Callable:
    return lambda a, e: getattr(a, slot).pop(key)


def set_obs(col: str, value) -> Callable:
    return lambda a, e: a.obs.__setitem__(col, value)


def set_obsm(key: str, fn: Callable[[np.ndarray], Any]) -> Callable:
    return lambda a, e: a.obsm.__setitem__(key, fn(np.asarray(a.obsm[key])))


def dup_obs(a, e):
    a.obs_names = [a.obs_names[0], *a.obs_names[:-1]]


def dup_var(a, e):
    a.var_names = [a.var_names[1], *a.var_names[1:]]


def no_image(a, e):
    lib = next(iter(a.uns["spatial"]))
    a.uns["spatial"][lib]["metadata"].pop("source_image_path")
    a.uns["spatial"][lib]["images"] = {}


def image_moved(a, e):
    lib = next(iter(a.uns["spatial"]))
    a.uns["spatial"][lib]["metadata"]["source_image_path"] = str(e.tmp_path / "moved.png")


def image_downscaled(a, e):
    """Point the section at a half-size copy of its image, as if the hires image were given as full resolution."""
    from PIL import Image

    lib = next(iter(a.uns["spatial"]))
    meta = a.uns["spatial"][lib]["metadata"]
    with Image.open(meta["source_image_path"]) as im:
        small = im.resize((im.width // 2, im.height // 2))
    small.save(e.tmp_path / "half.png")
    meta["source_image_path"] = str(e.tmp_path / "half.png")


def no_diameter(a, e):
    lib = next(iter(a.uns["spatial"]))
    a.uns["spatial"][lib]["scalefactors"].pop("spot_diameter_fullres")


def shift_spots(dx: float) -> Callable:
    return set_obsm("spatial", lambda xy: xy + dx)


def all_prompts(a, e):
    a.obs["phg2st_prompt"] = True


def no_prompts(a, e):
    a.obs["phg2st_prompt"] = False


def with_layer(name: str, fn: Callable[[np.ndarray], np.ndarray] = lambda x: x) -> Callable:
    return lambda a, e: a.layers.__setitem__(name, fn(dense(a.X).astype(np.float32)))


def predicted_layer(a, e):
    """A baseline prediction layer made from the current prompts (computed before the snapshot)."""
    phg2st.tl.baseline(a, method="mean")


def redrawn_prompts(a, e):
    phg2st.tl.baseline(a, method="mean")
    phg2st.tl.select_prompts(a, fraction=0.1, seed=123)


def empty() -> Callable:
    return lambda e: e.targets[:0].copy()


def one_spot(name: str = "targets") -> Callable:
    return lambda e: getattr(e, name)[:1].copy()


def sdata(n_tables: int, name: str = "targets") -> Callable:
    """A SpatialData of the section with no, one or several tables."""

    def make(e):
        from spatialdata import SpatialData

        full = phg2st.io.to_spatialdata(getattr(e, name), image=False)
        table = full.tables["table"]
        tables = {("table" if i == 0 else f"table_{i}"): table.copy() for i in range(n_tables)}
        return SpatialData(shapes=dict(full.shapes), tables=tables)

    return make


def model_file(kind: str) -> Callable:
    """A broken model file next to the good one: truncated, another format, another version, other weights."""
    import torch

    def make(e):
        good = e.model_path
        path = e.tmp_path / f"{kind}.pt"
        if kind == "truncated":
            path.write_bytes(good.read_bytes()[:2000])
        elif kind == "garbage":
            path.write_bytes(b"not a model" * 100)
        elif kind == "missing":
            pass
        else:
            payload = torch.load(good, map_location="cpu", weights_only=True)
            if kind == "other_format":
                payload = {"format": "something else", "state_dict": payload["state_dict"]}
            elif kind == "version":
                payload["format_version"] = 99
            elif kind == "weights":
                state = dict(payload["state_dict"])
                key = next(iter(state))
                state[key] = torch.zeros(3, 3, 3)
                payload["state_dict"] = state
            torch.save(payload, path)
        return path

    return make


def payload(edit: Callable[[dict], Any]) -> Callable:
    """A model file whose payload (read from the good one) is edited by ``edit`` (issue 13: malformed payloads)."""
    import torch

    def make(e):
        data = torch.load(e.model_path, map_location="cpu", weights_only=True)
        edit(data)
        path = e.tmp_path / "edited.pt"
        torch.save(data, path)
        return path

    return make


def edit_json(key: str, fn: Callable[[Any], Any]) -> Callable[[dict], None]:
    import json

    def edit(data):
        data[key] = json.dumps(fn(json.loads(data[key])))

    return edit


def nan_weights(data: dict) -> None:
    state = dict(data["state_dict"])
    key = next(k for k, v in state.items() if v.is_floating_point())
    state[key] = state[key].clone().fill_(float("nan"))
    data["state_dict"] = state


def inflating_file(e):
    """A 70 KB zip archive whose single member inflates to 64 MiB: never what torch.save writes."""
    import zipfile

    path = e.tmp_path / "bomb.pt"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as z:
        z.writestr("archive/data.pkl", b"\0" * (64 * 2**20))
    return path


def pickle_file(e):
    import pickle

    path = e.tmp_path / "legacy.pt"
    path.write_bytes(pickle.dumps({"format": "phg2st-sc model"}))
    return path


def folder_with_file(e):
    """A folder of the user's, with a file in it, where a model file is to be written."""
    folder = e.tmp_path / "results"
    folder.mkdir()
    (folder / "notes.txt").write_text("three weeks of work")
    return folder


def user_file(e):
    path = e.tmp_path / "counts.h5ad"
    path.write_bytes(b"\x89HDF\r\n\x1a\n the user's data")
    return path


def hires(fn: Callable[[np.ndarray], Any]) -> Callable:
    """Replace the section's ``hires`` image by ``fn`` of it (and drop the full-resolution path, so it is used)."""

    def corrupt(a, e):
        lib = next(iter(a.uns["spatial"]))
        info = a.uns["spatial"][lib]
        info["images"]["hires"] = fn(np.asarray(info["images"]["hires"]))
        info["metadata"].pop("source_image_path", None)

    return corrupt


def scalef(value) -> Callable:
    def corrupt(a, e):
        sf = a.uns["spatial"][next(iter(a.uns["spatial"]))]["scalefactors"]
        if value is None:
            sf.pop("tissue_hires_scalef")
        else:
            sf["tissue_hires_scalef"] = value

    return corrupt


def sdata_image(edit: Callable[[Any], Any]) -> Callable:
    """The synthetic section as SpatialData with its H&E, the image element (or the table) edited by ``edit``."""

    def make(e):
        sdata = phg2st.io.to_spatialdata(e.section)
        edit(sdata)
        return sdata

    return make


def image_values(fn: Callable[[np.ndarray], np.ndarray]) -> Callable:
    def edit(sdata):
        from spatialdata.models import Image2DModel
        from spatialdata.transformations import Identity

        key = next(iter(sdata.images))
        full = np.asarray(phg2st.io.image_levels(sdata.images[key])[0].values)
        values = fn(full)
        sdata.images[key] = Image2DModel.parse(values, dims=("c", "y", "x"), transformations={"global": Identity()})

    return edit


def image_elsewhere(sdata):
    from spatialdata.transformations import Identity, set_transformation

    key = next(iter(sdata.images))
    set_transformation(sdata.images[key], {"microscope": Identity()}, set_all=True)


def table_unlinked(sdata):
    sdata.tables["table"].uns.pop("spatialdata_attrs")


def same_point(a, e):
    a.obsm["spatial"] = np.zeros_like(np.asarray(a.obsm["spatial"], dtype=np.float64)) + 500.0


def stacked(a, e):
    """Two thirds of the spots moved onto other spots' positions."""
    xy = np.asarray(a.obsm["spatial"], dtype=np.float64).copy()
    n = len(xy)
    xy[: 2 * n // 3] = xy[2 * n // 3 : 2 * n // 3 + 1]
    a.obsm["spatial"] = xy


def boolean_coordinates(a, e):
    a.obsm["spatial"] = np.asarray(a.obsm["spatial"]) > np.median(a.obsm["spatial"])


def integer_obs_names(a, e):
    a.obs_names = pd.Index(np.arange(a.n_obs) + 100)


def set_params(key: str, **values) -> Callable:
    """Change the embedding's record (``uns[key]['params']``)."""

    def corrupt(a, e):
        params = a.uns[key]["params"]
        for k, v in values.items():
            if v is None:
                params.pop(k)
            else:
                params[k] = v

    return corrupt


def her2st_files(corrupt: Callable[[pd.DataFrame], pd.DataFrame]) -> Callable:
    """A her2st folder holding C2's spot table and a small count table corrupted by ``corrupt``."""

    def make(e):
        root = e.tmp_path / "her2st"
        (root / "ST-cnts").mkdir(parents=True)
        (root / "ST-spotfiles").mkdir()
        src = e.request.getfixturevalue("data_dir") / "her2st" / "ST-spotfiles" / "C2_selection.tsv"
        spots = pd.read_csv(src, sep="\t")
        spots.to_csv(root / "ST-spotfiles" / "C2_selection.tsv", sep="\t", index=False)
        ids = [f"{round(x)}x{round(y)}" for x, y in zip(spots["x"], spots["y"], strict=True)][:20]
        counts = pd.DataFrame(np.arange(60, dtype=float).reshape(20, 3), index=ids, columns=["A", "B", "C"])
        with gzip.open(root / "ST-cnts" / "C2.tsv.gz", "wt") as f:
            corrupt(counts).to_csv(f, sep="\t")
        return root

    return make


def value_at(row: int, col: str, value) -> Callable[[pd.DataFrame], pd.DataFrame]:
    def put(df):
        df = df.copy()
        df.loc[df.index[row], col] = value
        return df

    return put


# -- the catalogue -----------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Case:
    data: str | Callable[[Env], Any] | None  # an Env attribute, a builder, or None (no data object)
    corrupt: Callable[[Any, Env], Any] | None  # modifies the object in place (its return value is ignored)
    call: Callable[[Any, Env], Any]
    exc: type[BaseException]
    match: str


def case(name, data, corrupt, call, exc, match, *, xfail: str | None = None):
    marks = [pytest.mark.xfail(strict=True, reason=xfail)] if xfail else []
    return pytest.param(Case(data, corrupt, call, exc, match), id=name, marks=marks)


def _no_work_encoder(batch):
    raise WorkStarted("the encoder ran before the input was refused")


pp, tl, io, pl = phg2st.pp, phg2st.tl, phg2st.io, phg2st.pl
embed = lambda a, e, **kw: pp.embed_tiles(a, encoder=_no_work_encoder, tile_size=16, grid_size=3, **kw)
hyper = lambda a, e, **kw: pp.build_hypergraph(a, use_rep="X_tiny", k=3, **kw)
impute = lambda a, e, **kw: tl.impute(a, e.model, **kw)
fit = lambda a, e, **kw: tl.fit(a, max_epochs=1, validation=None, **{**SMALL, **kw})
idw = lambda a, e, **kw: tl.baseline(a, method="idw", **kw)
impute_p = lambda a, e, **kw: tl.impute(a, e.protocol_model, **kw)
load = lambda p, e: phg2st.PHG2ST.load(p)

# fmt: off
CASES = [
    # ---- wrong types
    case("baseline: a list instead of an AnnData", lambda e: [e.targets], None, idw, TypeError, "AnnData or a SpatialData"),
    case("build_hypergraph: a DataFrame instead of an AnnData", lambda e: e.targets.obs, None, hyper, TypeError,
         "AnnData or a SpatialData"),
    case("impute: a path instead of a model", "section", None, lambda a, e: tl.impute(a, "model.pt"), TypeError,
         "must be a trained phg2st_sc.PHG2ST"),
    case("to_spatialdata: a list", lambda e: [e.targets], None, lambda a, e: io.to_spatialdata(a), TypeError,
         "Expected an AnnData"),
    case("pl.prompts: a dict", lambda e: {"X": 1}, None, lambda a, e: pl.prompts(a), TypeError,
         "AnnData or a SpatialData"),
    case("pl.metrics: one Scores instead of a dict", lambda e: tl.score(tl.baseline(e.targets, method="mean", copy=True),
         layer="baseline_mean"), None, lambda s, e: pl.metrics(s), TypeError, r"dict \{method name: Scores\}"),
    case("pl.training_curves: a string", None, None, lambda a, e: pl.training_curves("model.pt"), TypeError,
         "Expected a PHG2ST model"),
    case("table_key with an AnnData", "targets", None, lambda a, e: idw(a, e, table_key="t"), ValueError,
         "only meaningful for SpatialData"),
    case("prompt column of strings", "targets", set_obs("phg2st_prompt", "yes"),
         lambda a, e: tl.baseline(a, method="mean"), TypeError, "must be boolean"),
    # ---- missing slots
    case("baseline idw: no obsm['spatial']", "targets", pop("obsm", "spatial"), idw, KeyError, r"obsm\['spatial'\]` is missing"),
    case("select_prompts blocks: no obsm['spatial']", "targets", pop("obsm", "spatial"),
         lambda a, e: tl.select_prompts(a, strategy="blocks"), KeyError, r"obsm\['spatial'\]` is missing"),
    case("embed_tiles: no obsm['spatial']", "section", pop("obsm", "spatial"), embed, KeyError,
         r"obsm\['spatial'\]` is missing"),
    case("virtual_spots: no obsm['spatial']", "counts", pop("obsm", "spatial"), lambda a, e: pp.virtual_spots(a),
         KeyError, r"obsm\['spatial'\]` is missing"),
    case("pl.spatial: no obsm['spatial']", "targets", pop("obsm", "spatial"), lambda a, e: pl.spatial(a, "TNC"),
         KeyError, r"obsm\['spatial'\]` is missing"),
    case("to_spatialdata: no uns['spatial']", "targets", pop("uns", "spatial"), lambda a, e: io.to_spatialdata(a),
         KeyError, r"uns\['spatial'\]` is missing"),
    case("build_hypergraph: no embeddings", "section", pop("obsm", "X_tiny"), hyper, KeyError,
         r"obsm\['X_tiny'\]` is missing: image features"),
    case("baseline ridge: no embeddings", "targets", None, lambda a, e: tl.baseline(a, method="ridge", use_rep="X_uni"),
         KeyError, r"obsm\['X_uni'\]` is missing"),
    case("neighbour_embeddings: no tiles", "targets", None, lambda a, e: pp.neighbour_embeddings(a, "X_uni"), KeyError,
         "run `phg2st.pp.embed_tiles"),
    case("impute: no embeddings", "section", pop("obsm", "X_tiny"), impute, KeyError, r"obsm\['X_tiny'\]` is missing"),
    case("impute: an unknown device", "section", None, lambda a, e: impute(a, e, device="tpu9"), ValueError,
         "Unknown device 'tpu9'"),
    case("impute: a CUDA GPU this machine does not have", "section", None, lambda a, e: impute(a, e, device="cuda:99"),
         ValueError, "CUDA GPU"),
    case("impute: no hypergraph", "section", pop("obsp", "phg2st_incidence"), impute, KeyError, "build_hypergraph"),
    case("fit: no hypergraph", "section", pop("obsp", "phg2st_incidence"), fit, KeyError, "build_hypergraph"),
    case("baseline: no prompt column", "targets", pop("obs", "phg2st_prompt"), lambda a, e: tl.baseline(a, method="mean"),
         KeyError, "mark the measured .*select_prompts"),
    case("impute: no prompt column", "section", pop("obs", "phg2st_prompt"), impute, KeyError, "select_prompts"),
    case("score: no prompt column", "targets", lambda a, e: (predicted_layer(a, e), a.obs.pop("phg2st_prompt")),
         lambda a, e: tl.score(a, layer="baseline_mean"), KeyError, "select_prompts"),
    case("pl.prompts: no prompt column", "targets", pop("obs", "phg2st_prompt"), lambda a, e: pl.prompts(a), KeyError,
         "select_prompts"),
    case("score: no prediction layer", "targets", None, lambda a, e: tl.score(a, layer="phg2st"), KeyError,
         "No layer 'phg2st' with predictions"),
    case("smooth: no array coordinates", "targets", pop("obs", "array_row"), lambda a, e: pp.smooth(a), KeyError,
         "array_row"),
    case("top_expressed_genes: no such layer", "counts", None, lambda a, e: pp.top_expressed_genes(a, layer="counts"),
         KeyError, "No layer 'counts'"),
    # ---- wrong shapes and lengths
    case("coordinates of shape (n, 1)", "targets", set_obsm("spatial", lambda xy: xy[:, :1]), idw, ValueError,
         r"must have shape \(n_spots, 2\)"),
    case("embeddings of 3 dimensions", "section", set_obsm("X_tiny", lambda f: f[:, :, None]), hyper, ValueError,
         r"must have shape \(n_spots, n_features\)"),
    case("select_prompts: mask of the wrong length", "targets", None,
         lambda a, e: tl.select_prompts(a, mask=np.ones(5, bool)), ValueError, "must have length"),
    case("impute: embeddings of another size", "section", set_obsm("X_tiny", lambda f: np.hstack([f, f])), impute,
         ValueError, "the model was trained on 6"),
    case("gene_metrics: shapes differ", None, None, lambda a, e: tl.gene_metrics(np.ones((5, 3)), np.ones((5, 2))),
         ValueError, "equal shape"),
    case("virtual_spots: tissue mask of another aspect ratio", "counts", None,
         lambda a, e: pp.virtual_spots(a, tissue_mask=np.ones((100, 300), bool)), ValueError, "aspect ratio"),
    case("otsu_tissue_mask: a grey image", None, None, lambda a, e: pp.otsu_tissue_mask(np.zeros((20, 20))),
         ValueError, r"RGB image \(height, width, 3\)"),
    # ---- NaN, inf, negative and non-integer values
    case("baseline: NaN in the data", "targets", set_x(at((slice(None), 3), np.nan)),
         lambda a, e: tl.baseline(a, method="mean"), ValueError, "contains .* NaN or infinite"),
    case("baseline: inf in a layer", "targets", with_layer("norm", at((0, 0), np.inf)),
         lambda a, e: tl.baseline(a, method="mean", layer="norm"), ValueError, r"layers\['norm'\]` contains 1 NaN or infinite"),
    case("NaN coordinates", "targets", lambda a, e: a.obsm["spatial"].__setitem__((0, 0), np.nan),
         lambda a, e: tl.baseline(a, method="gp"), ValueError, "NaN or infinite coordinates"),
    case("build_hypergraph: inf in the embeddings", "section", lambda a, e: a.obsm["X_tiny"].__setitem__((2, 1), np.inf),
         hyper, ValueError, r"obsm\['X_tiny'\]` contains NaN or infinite"),
    case("smooth: NaN in the data", "targets", set_x(at((4, 4), np.nan)), lambda a, e: pp.smooth(a), ValueError,
         "NaN or infinite"),
    case("score: NaN predictions", "targets", lambda a, e: a.layers.__setitem__("pred", np.full(a.shape, np.nan)),
         lambda a, e: tl.score(a, layer="pred"), ValueError, r"layers\['pred'\]` contains .* NaN"),
    case("gene_metrics: NaN predictions", None, None,
         lambda a, e: tl.gene_metrics(np.ones((5, 2)), np.array([[np.nan, 1]] * 5)), ValueError, "`pred` contains .*NaN"),
    case("prepare_targets: negative counts", "counts", set_x(at((0, 0), -3.0)),
         lambda a, e: tl.prepare_targets(a, "heldout"), ValueError, "negative values; raw counts are expected"),
    case("prepare_targets: non-integer counts", "counts", set_x(lambda x: np.log1p(x)),
         lambda a, e: tl.prepare_targets(a, "heldout"), ValueError, "not integer: raw counts are expected"),
    case("prepare_targets: NaN counts", "counts", set_x(at((1, 1), np.nan)), lambda a, e: tl.prepare_targets(a, "heldout"),
         ValueError, "NaN or infinite"),
    case("top_expressed_genes: negative counts", "counts", set_x(at((0, 0), -1.0)),
         lambda a, e: pp.top_expressed_genes(a), ValueError, "negative values; raw counts are expected"),
    case("top_expressed_genes: normalised data", "counts", set_x(lambda x: np.log1p(x)),
         lambda a, e: pp.top_expressed_genes(a), ValueError, "not integer: raw counts are expected"),
    case("evaluate: negative counts", "counts", set_x(at((0, 0), -1.0)), lambda a, e: tl.evaluate(a, seeds=[0]),
         ValueError, "negative values"),
    case("impute: NaN at a prompt spot", "section",
         lambda a, e: a.X.__setitem__((np.flatnonzero(a.obs["phg2st_prompt"])[0], 0), np.nan), impute, ValueError,
         "prompt spots' expression contains NaN"),
    case("fit: inf in the expression", "section", lambda a, e: a.X.__setitem__((0, 0), np.inf), fit, ValueError,
         "expression contains NaN or infinite"),
    case("her2st: negative counts in the file", her2st_files(value_at(0, "A", -2)), None,
         lambda p, e: phg2st.datasets.her2st("C2", data_dir=p), ValueError, "negative values"),
    case("her2st: non-integer counts in the file", her2st_files(value_at(0, "A", 0.5)), None,
         lambda p, e: phg2st.datasets.her2st("C2", data_dir=p), ValueError, "not integer"),
    case("her2st: empty cells in the count file", her2st_files(value_at(3, "B", np.nan)), None,
         lambda p, e: phg2st.datasets.her2st("C2", data_dir=p), ValueError, "missing values"),
    # ---- wrong dtypes (uint8 counts and float16 features are accepted: see the tests below)
    case("embeddings of strings", "section", set_obsm("X_tiny", lambda f: f.astype(str)), hyper, TypeError,
         r"obsm\['X_tiny'\]` must be numeric"),
    case("complex counts", "counts", set_x(lambda x: x.astype(np.complex64)), lambda a, e: tl.prepare_targets(a, "heldout"),
         TypeError, "must be numeric"),
    case("expression of strings", "targets", with_layer("text", lambda x: x.astype(str)),
         lambda a, e: tl.baseline(a, method="mean", layer="text"), TypeError, r"layers\['text'\]` must be numeric"),
    case("coordinates of strings", "targets", set_obsm("spatial", lambda xy: xy.astype(str)), idw, TypeError,
         r"obsm\['spatial'\]` must be numeric"),
    # ---- duplicate names
    case("select_genes: duplicate var names", "counts", dup_var, lambda a, e: pp.select_genes(a, "her2st_785"),
         ValueError, r"var_names_make_unique\(\)"),
    case("prepare_targets: duplicate var names", "counts", dup_var,
         lambda a, e: tl.prepare_targets(a, "heldout", panel="her2st_785"), ValueError, r"var_names_make_unique\(\)"),
    case("baseline: duplicate obs names", "targets", dup_obs, idw, ValueError, r"obs_names_make_unique\(\)"),
    case("select_prompts: duplicate obs names", "targets", dup_obs, lambda a, e: tl.select_prompts(a), ValueError,
         r"obs_names_make_unique\(\)"),
    case("build_hypergraph: duplicate obs names", "section", dup_obs, hyper, ValueError, r"obs_names_make_unique\(\)"),
    case("score: duplicate var names", "targets", lambda a, e: (predicted_layer(a, e), dup_var(a, e)),
         lambda a, e: tl.score(a, layer="baseline_mean"), ValueError, r"var_names_make_unique\(\)"),
    case("to_spatialdata: duplicate obs names", "targets", dup_obs, lambda a, e: io.to_spatialdata(a, image=False),
         ValueError, r"obs_names_make_unique\(\)"),
    case("impute: duplicate var names", "section", dup_var, impute, ValueError, r"var_names_make_unique\(\)"),
    case("fit: duplicate var names", "section", dup_var, fit, ValueError, r"var_names_make_unique\(\)"),
    case("fit: a DataFrame", lambda e: e.section.obs, None, fit, TypeError, "AnnData or a SpatialData"),
    # ---- empty AnnData, one spot, prompts
    case("baseline: no spots", empty(), None, idw, ValueError, r"The AnnData is empty \(0 spots"),
    case("select_genes: no genes", lambda e: e.counts[:, :0].copy(), None, lambda a, e: pp.select_genes(a, "her2st_785"),
         ValueError, "empty"),
    case("prepare_targets: no spots", lambda e: e.counts[:0].copy(), None, lambda a, e: tl.prepare_targets(a, "heldout"),
         ValueError, "empty"),
    case("embed_tiles: no spots", lambda e: e.section[:0].copy(), None, embed, ValueError, "empty"),
    case("pl.spatial: no spots", empty(), None, lambda a, e: pl.spatial(a, "TNC"), ValueError, r"empty \(0 spots"),
    case("to_spatialdata: no spots", empty(), None, lambda a, e: io.to_spatialdata(a, image=False), ValueError,
         r"empty \(0 spots"),
    case("select_prompts: one spot", one_spot(), None, lambda a, e: tl.select_prompts(a), ValueError,
         "at least 2 spots"),
    case("build_hypergraph: one spot", one_spot("section"), None, hyper, ValueError, "needs more than 3 spots"),
    case("virtual_spots: one spot, no spacing", lambda e: e.counts[:1].copy(), None, lambda a, e: pp.virtual_spots(a),
         ValueError, "give `spacing=`"),
    case("fit: one spot", one_spot("section"), None, fit, ValueError, "fewer than 10 spots"),
    case("baseline: every spot a prompt", "targets", all_prompts, idw, ValueError, "every spot as a prompt"),
    case("score: every spot a prompt", "targets", lambda a, e: (predicted_layer(a, e), all_prompts(a, e)),
         lambda a, e: tl.score(a, layer="baseline_mean"), ValueError, "every spot as a prompt"),
    case("impute: every spot a prompt", "section", all_prompts, impute, ValueError, "every spot as a prompt"),
    case("baseline: no prompt", "targets", no_prompts, lambda a, e: tl.baseline(a, method="mean"), ValueError,
         "marks no spot as a prompt"),
    case("impute: no prompt", "section", no_prompts, impute, ValueError, "marks no spot as a prompt"),
    case("baseline ridge: no principal component", "section", None,
         lambda a, e: tl.baseline(a, method="ridge", use_rep="X_tiny", n_pcs=0), ValueError, "`n_pcs` must be >= 1"),
    case("baseline ridge: a fractional number of components", "section", None,
         lambda a, e: tl.baseline(a, method="ridge", use_rep="X_tiny", n_pcs=2.5), TypeError, "`n_pcs` must be an integer"),
    case("baseline: fewer prompts than k", "targets", None, lambda a, e: idw(a, e, k=25), ValueError,
         "fewer than `k=25`"),
    case("score: prompts redrawn after predicting", "targets", redrawn_prompts,
         lambda a, e: tl.score(a, layer="baseline_mean"), ValueError, "predicted from other prompts"),
    case("select_prompts: fraction above 1", "targets", None, lambda a, e: tl.select_prompts(a, fraction=1.2), ValueError,
         r"must be in \(0, 1\)"),
    case("select_prompts: fraction 0", "targets", None, lambda a, e: tl.select_prompts(a, fraction=0), ValueError,
         r"must be in \(0, 1\)"),
    # ---- genes
    case("select_genes: genes absent", lambda e: e.counts[:, :50].copy(), None,
         lambda a, e: pp.select_genes(a, "her2st_785"), ValueError, "absent from the data"),
    case("prepare_targets: panel genes absent", lambda e: e.counts[:, :50].copy(), None,
         lambda a, e: tl.prepare_targets(a, "heldout", panel="her2st_785"), ValueError, "absent from the data"),
    case("evaluate: panel genes absent", lambda e: e.counts[:, :50].copy(), None,
         lambda a, e: tl.evaluate(a, panel="her2st_785"), ValueError, "absent from the data"),
    case("pl.spatial: gene absent", "targets", None, lambda a, e: pl.spatial(a, "NOT_A_GENE"), KeyError,
         "Genes not in `adata.var_names`"),
    case("pl.spatial: layer absent", "targets", None, lambda a, e: pl.spatial(a, "TNC", layers=(None, "phg2st")),
         KeyError, "No layer 'phg2st'"),
    case("impute: a model for other genes", "section",
         lambda a, e: setattr(a, "var_names", [f"H{i}" for i in range(a.n_vars)]), impute, ValueError,
         "trained for other genes"),
    case("impute: half the model's genes", lambda e: e.section[:, :6].copy(), None, impute, ValueError,
         "6 of the model's 12 genes are absent"),
    # ---- images
    case("embed_tiles: no image", "section", no_image, embed, phg2st.MissingImageError, "no full-resolution H&E image"),
    case("embed_tiles: image file moved", "section", image_moved, embed, phg2st.MissingImageError,
         "is not at .*moved.png"),
    case("embed_tiles: image smaller than the coordinates imply", "section", image_downscaled, embed, ValueError,
         "outside the 220 x 220 image.*full-resolution.*tissue_hires_scalef"),
    case("embed_tiles: coordinates outside the image", "section", shift_spots(5000.0), embed, ValueError,
         "lie outside the 440 x 440 image"),
    case("embed_tiles: mpp without the image's microns per pixel", "section",
         lambda a, e: a.uns["spatial"]["S4"]["metadata"].pop("microns_per_pixel"), lambda a, e: embed(a, e, mpp=0.5),
         ValueError, "microns per pixel, which is not recorded"),
    case("virtual_spots: coordinates outside the image", "counts", shift_spots(20000.0), lambda a, e: pp.virtual_spots(a),
         ValueError, r"outside the 9274 x 9911 image.*tissue_hires_scalef"),
    case("virtual_spots: no image", "targets", no_image, lambda a, e: pp.virtual_spots(a), ValueError,
         "no image to find the tissue in"),
    case("read_image: no image", "targets", no_image, lambda a, e: io.read_image(a), phg2st.MissingImageError,
         "no full-resolution H&E image"),
    case("read_image: a path where no file is", None, None, lambda a, e: io.read_image(e.tmp_path / "none.tif"),
         FileNotFoundError, "No image file at"),
    case("read_image: neither an AnnData nor a path", None, None, lambda a, e: io.read_image(42), TypeError,
         "must be an AnnData or the path of an image file"),
    case("from_spatialdata: an AnnData", "targets", None, lambda a, e: io.from_spatialdata(a), TypeError,
         "must be a SpatialData object, got AnnData"),
    case("pl.spatial: a spot scale of 0", "targets", None, lambda a, e: pl.spatial(a, a.var_names[0], spot_scale=0),
         ValueError, "`spot_scale` must be a finite number above 0"),
    case("pl.spatial: a prompt_key that is not a column", "targets", None,
         lambda a, e: pl.spatial(a, a.var_names[0], prompt_key="promts"), KeyError, "`prompt_key='promts'` is not"),
    case("pl.spatial: a prompt_key of strings", "targets", lambda a, e: a.obs.__setitem__("label", "tumour"),
         lambda a, e: pl.spatial(a, a.var_names[0], prompt_key="label"), TypeError, r"obs\['label'\]` must be boolean"),
    case("to_spatialdata: no spot diameter", "targets", no_diameter, lambda a, e: io.to_spatialdata(a, image=False),
         ValueError, "spot_diameter_fullres'\\]` must be positive"),
    # ---- models
    case("load: truncated model file", model_file("truncated"), None, lambda p, e: phg2st.PHG2ST.load(p), ValueError,
         "not a readable phg2st-sc model file"),
    case("load: not a model file", model_file("garbage"), None, lambda p, e: phg2st.PHG2ST.load(p), ValueError,
         "not a readable phg2st-sc model file"),
    case("load: another format", model_file("other_format"), None, lambda p, e: phg2st.PHG2ST.load(p), ValueError,
         "not a phg2st-sc model file"),
    case("load: another format version", model_file("version"), None, lambda p, e: phg2st.PHG2ST.load(p), ValueError,
         "format version 99"),
    case("load: weights of another architecture", model_file("weights"), None, lambda p, e: phg2st.PHG2ST.load(p),
         ValueError, "weights do not match the stored architecture"),
    case("load: no file", model_file("missing"), None, lambda p, e: phg2st.PHG2ST.load(p), FileNotFoundError,
         "No model file"),
    # ---- SpatialData tables
    case("baseline: SpatialData without a table", sdata(0), None, idw, ValueError, "has no table"),
    case("baseline: SpatialData with two tables, no table_key", sdata(2), None, idw, ValueError,
         r"several tables \['table', 'table_1'\]; choose one with `table_key=`"),
    case("baseline: SpatialData, table_key absent", sdata(2), None, lambda a, e: idw(a, e, table_key="nope"), KeyError,
         "No table 'nope'"),
    case("embed_tiles: SpatialData with two tables", sdata(2, "section"), None, embed, ValueError, "several tables"),
    case("impute: SpatialData with two tables", sdata(2, "section"), None, impute, ValueError, "several tables"),
    case("from_spatialdata: no table", sdata(0), None, lambda a, e: io.from_spatialdata(a), ValueError, "has no table"),
    case("pl.spatial: SpatialData with two tables", sdata(2), None, lambda a, e: pl.spatial(a, "TNC"), ValueError,
         "several tables"),
    # ---- readers
    case("her2st: unknown section", None, None, lambda a, e: phg2st.datasets.her2st("C9"), ValueError,
         "Unknown her2st section 'C9'"),
    case("her2st: empty data folder", None, None, lambda a, e: phg2st.datasets.her2st("C2", data_dir=e.tmp_path),
         phg2st.DataNotFoundError, "Missing: ST-cnts/C2.tsv.gz"),
    # ==== issue 13 (reliability, round 2) ==========================================================================
    # ---- data loss: nothing this package did not write is replaced or deleted
    case("save: a folder as the model path, overwrite=True", folder_with_file, None,
         lambda p, e: e.model.save(p, overwrite=True), IsADirectoryError, "is a folder.*Nothing was deleted"),
    case("save: a folder as the model path", folder_with_file, None, lambda p, e: e.model.save(p), IsADirectoryError,
         "is a folder"),
    case("save: overwrite a file that is not a model", user_file, None, lambda p, e: e.model.save(p, overwrite=True),
         FileExistsError, "not a phg2st-sc model file"),
    case("save: a file path inside a file", user_file, None, lambda p, e: e.model.save(p / "model.pt"),
         PermissionError, "Cannot write to"),
    # ---- images that are not 8-bit RGB: converted by one helper, or refused
    case("to_spatialdata: hires floats above 255", "targets", hires(lambda im: im.astype(np.float32) * 1000),
         lambda a, e: io.to_spatialdata(a), ValueError, "float pixels up to"),
    case("to_spatialdata: hires with NaN", "targets", hires(lambda im: np.full(im.shape, np.nan, np.float32)),
         lambda a, e: io.to_spatialdata(a), ValueError, "NaN or infinite pixel"),
    case("pl.spatial: hires with five channels", "targets", hires(lambda im: np.concatenate([im, im[..., :2]], -1)),
         lambda a, e: pl.spatial(a, "TNC"), ValueError, "an H&E image is"),
    case("pl.spatial: hires with negative values", "targets", hires(lambda im: im.astype(np.int16) - 300),
         lambda a, e: pl.spatial(a, "TNC"), ValueError, "negative pixel values"),
    case("pl.spatial: no tissue_hires_scalef", "targets", scalef(None), lambda a, e: pl.spatial(a, "TNC"),
         ValueError, "tissue_hires_scalef'\\]` is missing"),
    case("pl.spatial: tissue_hires_scalef 0", "targets", scalef(0.0), lambda a, e: pl.spatial(a, "TNC"), ValueError,
         "tissue_hires_scalef'\\]` is 0.0"),
    case("virtual_spots: negative tissue_hires_scalef", "counts", (lambda a, e: (hires(lambda im: im)(a, e),
         scalef(-0.2)(a, e))), lambda a, e: pp.virtual_spots(a), ValueError, "tissue_hires_scalef'\\]` is -0.2"),
    case("to_spatialdata: tissue_hires_scalef a string", "targets", (lambda a, e: (hires(lambda im: im)(a, e),
         scalef("0.2x")(a, e))), lambda a, e: io.to_spatialdata(a), ValueError, "is '0.2x'"),
    case("embed_tiles: SpatialData image of floats above 255", sdata_image(image_values(lambda v: v * 1000.0)), None,
         embed, ValueError, "float pixels up to"),
    case("embed_tiles: SpatialData image with six channels", sdata_image(image_values(lambda v: np.concatenate([v, v]))),
         None, embed, ValueError, "has 6 channels"),
    case("embed_tiles: SpatialData image of negative int16", sdata_image(image_values(lambda v: v.astype(np.int16) - 300)),
         None, embed, ValueError, "negative pixel values"),
    case("embed_tiles: SpatialData image and spots share no coordinate system", sdata_image(image_elsewhere), None,
         embed, ValueError, "share no coordinate system"),
    case("embed_tiles: SpatialData table linked to no spots", sdata_image(table_unlinked), None, embed, ValueError,
         "must annotate one spots element"),
    # ---- data not prepared the way the model's training data were
    case("impute: raw counts for a model of prepared targets", "counts_section", None, impute_p,
         phg2st.InputMismatchError, r"carries no record.*prepare_targets\(adata, model\)"),
    case("impute: CPM + log1p targets for a 1e4 model", lambda e: tl.prepare_targets(e.counts_section, "paper"), None,
         impute_p, phg2st.InputMismatchError, r"differ in \['target_sum'\]"),
    case("impute: smoothed targets for an unsmoothed model",
         lambda e: tl.prepare_targets(e.counts_section, "heldout_smoothed"), None, impute_p, phg2st.InputMismatchError,
         r"differ in \['smooth'\]"),
    case("impute: raw counts behind a copied record", "prepared", lambda a, e: setattr(a, "X", e.counts_section.X.copy()),
         impute_p, phg2st.InputMismatchError, "look like raw or unlogged counts"),
    case("impute: log1p data for a model of unlogged data", "section",
         lambda a, e: a.uns.__setitem__("log1p", {"base": None}), impute, phg2st.InputMismatchError,
         "is not log1p-transformed"),
    case("impute: 100x the library size of a model's own normalisation", "section",
         lambda a, e: setattr(a, "X", np.asarray(a.X) * 100), impute, phg2st.InputMismatchError, "[0-9.]+ times as much"),
    case("impute: log base 2 for a natural-log model", "section",
         lambda a, e: a.uns.__setitem__("log1p", {"base": 2}), lambda a, e: tl.impute(a, e.log_model),
         phg2st.InputMismatchError, "base 2.0, the model's training data with base e"),
    case("impute: latent_key of another step's embeddings", "section", None,
         lambda a, e: impute(a, e, latent_key="X_tiny"), phg2st.SlotExistsError,
         r"obsm\['X_tiny'\]` exists and holds the output of `pp.embed_tiles`"),
    case("impute: layer_added over the targets' record", "prepared", None,
         lambda a, e: impute_p(a, e, layer_added="phg2st_targets"), phg2st.SlotExistsError,
         "holds the output of `tl.prepare_targets`"),
    case("impute: features from another encoder", "section", set_params("X_tiny", encoder="uni"), impute,
         phg2st.InputMismatchError, "encoder 'uni' here, 'tiny' in training"),
    case("impute: features of another tile size", "section", set_params("X_tiny", tile_size=32), impute,
         phg2st.InputMismatchError, "tile_size 32 here, 16 in training"),
    case("impute: features at another mpp", "section", set_params("X_tiny", mpp=0.5), impute,
         phg2st.InputMismatchError, "mpp 0.5 here, -1.0 in training"),
    case("impute: features without a record of how they were made", "section",
         lambda a, e: a.uns["X_tiny"].pop("params"), impute, phg2st.InputMismatchError, "carries no record of how"),
    # ---- settings that make training diverge or cannot train
    case("fit: learning rate infinite", "section", None, lambda a, e: fit(a, e, lr=float("inf")), ValueError,
         "`lr` must be a finite number above 0"),
    case("fit: learning rate 0", "section", None, lambda a, e: fit(a, e, lr=0.0), ValueError, "`lr` must be"),
    case("fit: gamma above 1", "section", None, lambda a, e: fit(a, e, gamma=1.5), ValueError,
         "`gamma` must be .* at most 1"),
    case("fit: patience -1", "section", None, lambda a, e: fit(a, e, patience=-1), ValueError, "`patience` must be >= 0"),
    case("fit: checkpoints asked for and forbidden", "section", None,
         lambda a, e: fit(a, e, checkpoint_dir=e.tmp_path / "c", enable_checkpointing=False), ValueError,
         "`enable_checkpointing=False` forbids them"),
    case("fit: hidden not a multiple of heads", "section", None, lambda a, e: fit(a, e, hidden=30), ValueError,
         r"`hidden` \(30\) must be a multiple of `heads`"),
    case("fit: dropout 1.5", "section", None, lambda a, e: fit(a, e, dropout=1.5), ValueError, "`dropout` must be"),
    case("load: NaN weights", payload(nan_weights), None, load, phg2st.ModelFileError, "NaN or infinite"),
    # ---- degenerate coordinates
    case("baseline idw: all spots at one point", "targets", same_point, idw, ValueError, "lie at the same point"),
    case("baseline gp: boolean coordinates", "targets", boolean_coordinates, lambda a, e: tl.baseline(a, method="gp"),
         TypeError, "is boolean"),
    case("build_hypergraph: all spots at one point", "section", same_point, hyper, ValueError, "lie at the same point"),
    case("build_hypergraph: most spots stacked", "section", stacked, hyper, ValueError, "share their position"),
    case("build_hypergraph: spots within 1e-9 px of one point", "section",
         lambda a, e: a.obsm.__setitem__("spatial", 500.0 + np.random.default_rng(0).random((a.n_obs, 2)) * 1e-9),
         hyper, ValueError, "lie at the same point"),
    case("build_hypergraph: boolean coordinates", "section", boolean_coordinates, hyper, TypeError, "is boolean"),
    case("virtual_spots: all spots at one point", "counts", same_point, lambda a, e: pp.virtual_spots(a), ValueError,
         "lie at the same point"),
    case("virtual_spots: boolean coordinates", "counts", boolean_coordinates, lambda a, e: pp.virtual_spots(a),
         TypeError, "is boolean"),
    case("virtual_spots: a spacing of one pixel", "counts", None, lambda a, e: pp.virtual_spots(a, spacing=1.0),
         phg2st.InsufficientMemoryError, "virtual spots .* give a larger `spacing=`"),
    case("select_prompts blocks: all spots at one point", "targets", same_point,
         lambda a, e: tl.select_prompts(a, strategy="blocks"), ValueError, "lie at the same point"),
    case("embed_tiles: most spots stacked", "section", stacked, embed, ValueError, "share their position"),
    case("fit: all spots at one point", "section", same_point, fit, ValueError, "lie at the same point"),
    case("impute: boolean coordinates", "section", boolean_coordinates, impute, TypeError, "is boolean"),
    # ---- output keys that would replace the user's own slots
    case("impute: latent_key='spatial'", "section", None, lambda a, e: impute(a, e, latent_key="spatial"),
         phg2st.SlotExistsError, r"obsm\['spatial'\]` exists and was not written by phg2st-sc.*`latent_key=`"),
    case("impute: layer_added='counts'", "section", with_layer("counts"), lambda a, e: impute(a, e, layer_added="counts"),
         phg2st.SlotExistsError, r"layers\['counts'\]` exists.*`layer_added=`"),
    case("select_prompts: key_added='section'", "targets", None, lambda a, e: tl.select_prompts(a, key_added="section"),
         phg2st.SlotExistsError, r"obs\['section'\]` exists.*`key_added=`"),
    case("baseline: layer_added of the user's layer", "targets", with_layer("norm"),
         lambda a, e: tl.baseline(a, method="mean", layer_added="norm"), phg2st.SlotExistsError, r"layers\['norm'\]"),
    case("build_hypergraph: key_added over the user's graph", "section",
         lambda a, e: a.obsp.__setitem__("mine_incidence", sparse.identity(a.n_obs, format="csr")),
         lambda a, e: hyper(a, e, key_added="mine"), phg2st.SlotExistsError, r"obsp\['mine_incidence'\]"),
    case("embed_tiles: key_added='spatial'", "section", None, lambda a, e: embed(a, e, key_added="spatial"),
         phg2st.SlotExistsError, r"obsm\['spatial'\]"),
    case("smooth: layer_added='counts'", "targets", with_layer("counts"), lambda a, e: pp.smooth(a, layer_added="counts"),
         phg2st.SlotExistsError, r"layers\['counts'\]"),
    # ---- malformed model files: one error class, checked field by field
    case("load: no state dict", payload(lambda d: d.pop("state_dict")), None, load, phg2st.ModelFileError,
         r"lacks \['state_dict'\]"),
    case("load: config not JSON", payload(lambda d: d.__setitem__("config", "{not json")), None, load,
         phg2st.ModelFileError, "`config` is not valid JSON"),
    case("load: an unknown config field", payload(edit_json("config", lambda c: {**c, "wings": 2})), None, load,
         phg2st.ModelFileError, r"unknown fields \['wings'\]"),
    case("load: an invalid config value", payload(edit_json("config", lambda c: {**c, "hidden": -3})), None, load,
         phg2st.ModelFileError, "architecture is invalid"),
    case("load: genes stored as a string", payload(edit_json("genes", lambda g: "".join(g))), None, load,
         phg2st.ModelFileError, "`genes` must hold a JSON list"),
    case("load: genes of another count", payload(edit_json("genes", lambda g: g[:-1])), None, load,
         phg2st.ModelFileError, "lists 11 genes for an architecture of 12"),
    case("load: no input description", payload(lambda d: d.pop("info")), None, load, phg2st.ModelFileError,
         r"lacks \['info'\]"),
    case("load: input description without use_rep", payload(edit_json("info", lambda i: {k: v for k, v in i.items()
         if k != "use_rep"})), None, load, phg2st.ModelFileError, "lacks `use_rep`"),  # fmt: skip
    case("load: weights as a list", payload(lambda d: d.__setitem__("state_dict", [1, 2])), None, load,
         phg2st.ModelFileError, "`state_dict` must map parameter names to tensors"),
    case("load: an archive that inflates to 64 MiB", inflating_file, None, load, phg2st.ModelFileError,
         "refused before inflating"),
    case("load: a plain pickle", pickle_file, None, load, phg2st.ModelFileError, "not an archive written by"),
    case("load: an architecture far larger than its weights",
         payload(edit_json("config", lambda c: {**c, "hidden": 60000, "heads": 2})), None, load, phg2st.ModelFileError,
         "do not match the stored architecture"),
    case("load: an embedding record that is not a mapping", payload(edit_json("info", lambda i: {**i, "embedding": "tiny"})),
         None, load, phg2st.ModelFileError, r"`info\['embedding'\]` has type str"),
    case("load: a target sum as text", payload(edit_json("info", lambda i: {**i, "normalization": {
         **i["normalization"], "target_sum": "1e4"}})), None, load, phg2st.ModelFileError, "is '1e4'"),  # fmt: skip
    case("load: integer weights", payload(lambda d: d.__setitem__("state_dict", {k: v.long() if v.is_floating_point()
         else v for k, v in d["state_dict"].items()})), None, load, phg2st.ModelFileError, "is torch.int64"),  # fmt: skip
    case("load: a format version as text", payload(lambda d: d.__setitem__("format_version", "1")), None, load,
         phg2st.ModelFileError, "format version '1'"),
    # ---- late failures and unclear messages, now refused first with the fix
    case("baseline: integer obs_names", "targets", integer_obs_names, idw, TypeError, r"obs_names\.astype\(str\)"),
    case("fit: integer obs_names", "section", integer_obs_names, fit, TypeError, "must be strings"),
    case("impute: integer obs_names", "section", integer_obs_names, impute, TypeError, "must be strings"),
    case("fit: seed -1", "section", None, lambda a, e: fit(a, e, seed=-1), ValueError, "`seed` must be an integer from 0"),
    case("select_prompts: seed -1", "targets", None, lambda a, e: tl.select_prompts(a, seed=-1), ValueError, "`seed`"),
    case("baseline gp: seed -1", "targets", None, lambda a, e: tl.baseline(a, method="gp", seed=-1), ValueError,
         "`seed`"),
    case("build_hypergraph: seed 2**40", "section", None, lambda a, e: hyper(a, e, seed=2**40), ValueError, "`seed`"),
    case("evaluate: seed -1", "counts", None, lambda a, e: tl.evaluate(a, seeds=[-1]), ValueError, "`seeds` must be"),
    case("fit: genes as a string", "section", None, lambda a, e: fit(a, e, genes="G1"), TypeError,
         r"got the string 'G1': use `genes=\['G1'\]`"),
    case("fit: no genes", "section", None, lambda a, e: fit(a, e, genes=[]), ValueError, "`genes` is empty"),
    case("fit: a gene listed twice", "section", None, lambda a, e: fit(a, e, genes=["G1", "G2", "G1"]), ValueError,
         r"twice \(\['G1'\]\)"),
    case("fit: the same section twice", lambda e: [e.section, e.section.copy()], None, fit, ValueError,
         "are the same section"),
    case("fit: a typo in a setting", "section", None, lambda a, e: fit(a, e, patiense=5), TypeError,
         "Unknown setting `patiense` \\(did you mean `patience`\\?\\)"),
]
# fmt: on


@pytest.mark.parametrize("c", CASES)
def test_bad_input(c: Case, env: Env):
    env.model, env.protocol_model, env.log_model  # noqa: B018 - trained (once per module) before the tripwires replace training
    obj = getattr(env, c.data) if isinstance(c.data, str) else (c.data(env) if c.data is not None else None)
    if c.corrupt is not None:
        c.corrupt(obj, env)
    before = snapshot(obj)
    with no_work(), pytest.raises(c.exc, match=c.match):
        c.call(obj, env)
    assert_unchanged(obj, before)


def test_the_catalogue_covers_the_api():
    """At least 35 cases of issue 7 and 40 more of issue 13, and every public function that takes data appears."""
    first = [p.id for p in CASES].index("save: a folder as the model path, overwrite=True")
    assert first >= 35 and len(CASES) - first >= 40
    ids = [p.id for p in CASES]
    assert len(set(ids)) == len(ids)
    functions = (
        "embed_tiles", "neighbour_embeddings", "build_hypergraph", "select_genes", "top_expressed_genes", "smooth",
        "virtual_spots", "otsu_tissue_mask", "select_prompts", "baseline", "fit", "impute", "score", "gene_metrics",
        "evaluate", "prepare_targets", "read_image", "to_spatialdata", "from_spatialdata", "pl.spatial", "pl.metrics",
        "pl.prompts", "pl.training_curves", "load", "her2st", "save",
    )  # fmt: skip
    untested = [f for f in functions if not any(i.startswith(f"{f}:") for i in ids)]
    assert not untested, untested


# -- narrow dtypes that are accepted -----------------------------------------------------------------------------------
def test_uint8_counts_are_accepted(c2):
    """Counts stored as uint8 give the same targets and gene ranking as the same counts in float32."""
    clipped = c2[:, :300].copy()
    clipped.X = sparse.csr_matrix(np.minimum(clipped.X.toarray(), 255).astype(np.float32))
    narrow = clipped.copy()
    narrow.X = sparse.csr_matrix(narrow.X.toarray().astype(np.uint8))
    before = narrow.copy()
    a, b = tl.prepare_targets(clipped, "heldout"), tl.prepare_targets(narrow, "heldout")
    np.testing.assert_array_equal(a.X.toarray(), b.X.toarray())
    assert pp.top_expressed_genes(narrow, n_top=50) == pp.top_expressed_genes(clipped, n_top=50)
    assert_adata_equal(narrow, before)


def test_float16_features_are_upcast(_sections):
    """float16 embeddings are read as float32: the same hypergraph and ridge baseline as their float32 copy."""
    half = _sections[1].copy()
    half.obsm["X_tiny"] = half.obsm["X_tiny"].astype(np.float16)
    single = half.copy()
    single.obsm["X_tiny"] = single.obsm["X_tiny"].astype(np.float32)
    before = half.copy()
    out_half = pp.build_hypergraph(half, use_rep="X_tiny", k=3, copy=True)
    out_single = pp.build_hypergraph(single, use_rep="X_tiny", k=3, copy=True)
    assert (out_half.obsp["phg2st_incidence"] != out_single.obsp["phg2st_incidence"]).nnz == 0
    r_half = tl.baseline(half, method="ridge", use_rep="X_tiny", copy=True).layers["baseline_ridge"]
    r_single = tl.baseline(single, method="ridge", use_rep="X_tiny", copy=True).layers["baseline_ridge"]
    np.testing.assert_array_equal(r_half, r_single)
    assert_adata_equal(half, before)


# -- the comparison helper itself ------------------------------------------------------------------------------------
def test_compare_helper_sees_every_slot():
    rng = np.random.default_rng(0)
    a = AnnData(sparse.csr_matrix(rng.poisson(1.0, (6, 4)).astype(np.float32)))
    a.layers["dense"] = np.where(rng.random((6, 4)) < 0.2, np.nan, 1.0)
    a.obs["c"] = pd.Categorical(list("xxyyzz"))
    a.obsm["spatial"] = rng.random((6, 2))
    a.obsp["g"] = sparse.identity(6, format="csr")
    a.uns["p"] = {"params": {"k": 3, "arr": np.arange(3), "df": pd.DataFrame({"v": [1.0, np.nan]}), "l": [1, "a"]}}
    assert_adata_equal(a, a.copy())
    edits = [
        lambda b: b.X.__setitem__((0, 0), 7.0),
        lambda b: setattr(b, "X", b.X.astype(np.float64)),
        lambda b: b.layers["dense"].__setitem__((5, 3), 2.0),
        lambda b: b.obs.__setitem__("c", b.obs["c"].cat.add_categories("w")),
        lambda b: b.var.__setitem__("new", 1),
        lambda b: b.obsm["spatial"].__setitem__((0, 0), -1.0),
        lambda b: b.obsp["g"].__setitem__((0, 1), 1.0),
        lambda b: b.uns["p"]["params"].__setitem__("k", 4),
        lambda b: b.uns["p"]["params"]["arr"].__setitem__(0, 5),
        lambda b: b.uns["p"]["params"]["df"].iloc.__setitem__((1, 0), 0.0),
        lambda b: b.uns["p"]["params"]["l"].append(2),
        lambda b: b.uns.__setitem__("extra", {}),
    ]
    for edit in edits:
        b = a.copy()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            edit(b)
        with pytest.raises(AssertionError):
            assert_adata_equal(a, b)
