"""Shared fixtures. Real-data tests read the public datasets from $PHG2ST_DATA_DIR (never downloaded)."""

from __future__ import annotations

import os
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("MPLBACKEND", "agg")
# Helper modules of the suite (`from _compare import assert_adata_equal`): pytest's importlib mode does not put the
# test folder on sys.path.
sys.path.insert(0, str(Path(__file__).parent))

# triton (loaded by torch's compiler stack, lightning, torch-geometric) must be imported before napari creates an
# OpenGL context: imported after one on Mesa it crashes the process. pl.napari does this for users; the napari tests
# build their viewers with napari's fixture first, and later tests train models, so import it here, once.
try:
    import triton  # noqa: F401
except ImportError:
    pass

from _synthetic import make_section, progress_off

IMAGE_SECTIONS = ("C2", "C3", "C4", "C5", "C6")


def _data_dir() -> Path | None:
    env = os.environ.get("PHG2ST_DATA_DIR")
    return Path(env) if env else None


@pytest.fixture(autouse=True)
def _no_downloads(monkeypatch):
    """Fail any test that would reach the network through pooch."""
    import pooch

    def refuse(*args, **kwargs):
        raise AssertionError(f"a test tried to download: {args} {kwargs}")

    monkeypatch.setattr(pooch, "retrieve", refuse)


@pytest.fixture
def no_progress():
    """Progress bars off for the test, back on afterwards."""
    with progress_off():
        yield


@pytest.fixture(scope="session")
def embedding_cache(tmp_path_factory) -> Path:
    """The package cache folder for the session: the demo fills ``embeddings/``, the quickstart tutorial reads it."""
    return tmp_path_factory.mktemp("embedding_cache")


@pytest.fixture(scope="session")
def data_dir() -> Path:
    path = _data_dir()
    if path is None:
        pytest.skip("PHG2ST_DATA_DIR is not set: real-data tests need the public datasets (see README).")
    if not (path / "her2st" / "ST-cnts").is_dir():
        raise RuntimeError(f"PHG2ST_DATA_DIR={path} does not hold her2st/ST-cnts; fix the variable or unset it.")
    return path


_CACHE: dict[str, object] = {}


def _load(kind: str, section: str):
    import phg2st_sc as phg2st

    key = f"{kind}:{section}"
    if key not in _CACHE:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", phg2st.MissingImageWarning)
            reader = {"her2st": phg2st.datasets.her2st, "mob": phg2st.datasets.stutility_mob}[kind]
            _CACHE[key] = reader(section)
    return _CACHE[key].copy()


@pytest.fixture
def load_her2st(data_dir):
    """Load a her2st section (cached per session; every call returns a fresh copy)."""
    return lambda section: _load("her2st", section)


@pytest.fixture
def c2(load_her2st):
    return load_her2st("C2")


@pytest.fixture
def c2_targets(c2):
    """C2 with normalised, log-transformed expression of the her2st_785 panel in .X and 10% prompts."""
    import phg2st_sc as phg2st

    work = phg2st.tl.prepare_targets(c2, "heldout", panel="her2st_785")
    phg2st.tl.select_prompts(work, fraction=0.1, seed=0)
    return work


@pytest.fixture(scope="session")
def _c2_embedded_session(data_dir):
    """C2 embedded once per session with the offline encoder, fp32 (deterministic)."""
    import phg2st_sc as phg2st

    adata = _load("her2st", "C2")
    phg2st.pp.embed_tiles(adata, encoder="efficientnet_lite0", precision="fp32", batch_size=32)
    return adata


@pytest.fixture
def c2_embedded(_c2_embedded_session):
    return _c2_embedded_session.copy()


@pytest.fixture
def load_mob(data_dir):
    return lambda section: _load("mob", section)


@pytest.fixture
def colour_features():
    """Simple real image features for tests (see `_colour_features`)."""
    return _colour_features


@pytest.fixture
def c2_imputed_by_colour_model(load_her2st):
    """(C2 with 10% prompts imputed, the model): trained briefly on C3 and C4 with colour features (fast, real)."""
    import phg2st_sc as phg2st

    sections = {}
    for s in ("C2", "C3", "C4"):
        w = phg2st.tl.prepare_targets(load_her2st(s), "heldout", panel="her2st_785")
        w.obsm["X_col"] = _colour_features(w)
        phg2st.pp.build_hypergraph(w, use_rep="X_col")
        sections[s] = w
    model = phg2st.tl.fit([sections["C3"], sections["C4"]], use_rep="X_col", max_epochs=3,
                          config={"hidden": 64, "use_neighbour_branch": False}, validation=None, accelerator="cpu")  # fmt: skip
    c2 = sections["C2"]
    phg2st.tl.select_prompts(c2, fraction=0.1, seed=0)
    phg2st.tl.impute(c2, model)
    return c2, model


def _colour_features(adata, *, size: int = 24) -> np.ndarray:
    """Simple real image features for tests: per-spot mean and std of RGB in crops of the hires image."""
    lib = next(iter(adata.uns["spatial"]))
    info = adata.uns["spatial"][lib]
    img = np.pad(
        np.asarray(info["images"]["hires"], dtype=np.float64), ((size, size), (size, size), (0, 0)), mode="edge"
    )
    xy = np.round(adata.obsm["spatial"] * info["scalefactors"]["tissue_hires_scalef"]).astype(int) + size
    feats = []
    for half in (size // 4, size // 2, size):
        crops = np.stack([img[max(y - half, 0) : y + half, max(x - half, 0) : x + half].reshape(-1, 3) for x, y in xy])
        feats += [crops.mean(axis=1), crops.std(axis=1)]
    return np.concatenate(feats, axis=1)


@pytest.fixture
def synthetic_section(tmp_path):
    return lambda **kw: make_section(tmp_path, **kw)
