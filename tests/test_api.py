"""Package-level contracts: import cost, namespaces, signature rules, documented slots."""

from __future__ import annotations

import inspect
import re
import subprocess
import sys

import pytest

import phg2st_sc as phg2st

PUBLIC_FUNCTIONS = {
    "pp": [
        "embed_tiles",
        "neighbour_embeddings",
        "build_hypergraph",
        "select_genes",
        "smooth",
        "panel_genes",
        "top_expressed_genes",
    ],
    "tl": [
        "fit",
        "impute",
        "select_prompts",
        "baseline",
        "score",
        "evaluate",
        "prepare_targets",
        "gene_metrics",
        "get_protocol",
    ],
    "pl": ["spatial", "napari", "metrics", "training_curves", "prompts"],
    "datasets": ["her2st", "stutility_mob", "cscc"],
    "io": ["read_image", "to_spatialdata", "from_spatialdata"],
}
ADATA_FIRST = [
    *(f"pp.{n}" for n in ("embed_tiles", "neighbour_embeddings", "build_hypergraph", "select_genes", "smooth")),
    *(f"tl.{n}" for n in ("impute", "select_prompts", "baseline", "score", "evaluate", "prepare_targets")),
    "pl.spatial",
    "pl.napari",
    "pl.prompts",
    "io.read_image",
    "io.to_spatialdata",
]
# pp/tl functions that write into the AnnData and so follow the copy contract.
WRITERS = [
    "tl.impute",
    "pp.embed_tiles",
    "pp.build_hypergraph",
    "pp.select_genes",
    "pp.smooth",
    "tl.select_prompts",
    "tl.baseline",
]


def test_import_is_light():
    code = (
        "import sys, phg2st_sc as p; "
        "heavy = [m for m in ('torch', 'lightning', 'napari', 'torch_geometric', 'timm', 'spatialdata', 'squidpy') "
        "if m in sys.modules]; print(heavy); sys.exit(1 if heavy else 0)"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert res.returncode == 0, f"import phg2st_sc pulled in {res.stdout} {res.stderr}"


def test_the_package_imports_only_its_required_dependencies():
    """squidpy, spatialdata-plot and spatialdata-io are extras (docs/installation.md): no module imports them except
    inside a ``try`` that turns the ImportError into one naming the extra (spatialdata-io for Space Ranger)."""
    import ast
    import tomllib
    from pathlib import Path

    root = Path(phg2st.__file__).parent
    extras = {"squidpy", "spatialdata_plot", "spatialdata_io"}
    found = set()
    for path in root.rglob("*.py"):
        tree = ast.parse(path.read_text())
        guarded = {
            id(inner)
            for t in ast.walk(tree)
            if isinstance(t, ast.Try)
            and any(isinstance(h.type, ast.Name) and h.type.id == "ImportError" for h in t.handlers)
            for stmt in t.body
            for inner in ast.walk(stmt)
        }
        for node in ast.walk(tree):
            if id(node) in guarded:
                continue
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            names += [node.module] if isinstance(node, ast.ImportFrom) and node.module and not node.level else []
            found |= {(path.relative_to(root).as_posix(), n) for n in names if n.split(".")[0] in extras}
    assert not found
    pyproject = root.parents[1] / "pyproject.toml"
    if pyproject.is_file():  # a source checkout: the extras are declared as extras, not as requirements
        meta = tomllib.loads(pyproject.read_text())["project"]
        required = {d.split(">")[0].split("<")[0].split("=")[0].strip() for d in meta["dependencies"]}
        assert not required & {"squidpy", "spatialdata-plot", "spatialdata-io"}
        assert {"plot", "io"} <= set(meta["optional-dependencies"])


def test_namespaces():
    for ns in ("datasets", "pp", "tl", "pl", "io"):
        assert hasattr(phg2st, ns)
    assert phg2st.__version__
    for ns, names in PUBLIC_FUNCTIONS.items():
        module = getattr(phg2st, ns)
        for name in names:
            assert callable(getattr(module, name)), f"{ns}.{name}"
            assert name in module.__all__, f"{ns}.{name} missing from __all__"


def _all_functions():
    for ns, names in PUBLIC_FUNCTIONS.items():
        for name in names:
            yield f"{ns}.{name}", getattr(getattr(phg2st, ns), name)


@pytest.mark.parametrize(("qualname", "func"), list(_all_functions()))
def test_signature_rules(qualname, func):
    sig = inspect.signature(func)
    params = list(sig.parameters.values())
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    assert len(positional) <= 3, f"{qualname}: at most three positional parameters"
    if qualname in ADATA_FIRST:
        assert params[0].name == "adata", f"{qualname}: `adata` comes first"
    for p in params:
        assert p.annotation is not inspect.Parameter.empty or p.kind is p.VAR_KEYWORD, (
            f"{qualname}: {p.name} has no type hint"
        )
    doc = inspect.getdoc(func)
    assert doc and "Parameters" in doc and "Returns" in doc, f"{qualname}: numpydoc Parameters and Returns"
    for p in params:
        assert re.search(rf"^(?:\w+, )*(?:\*\*)?{p.name}(?:, \w+)*$", doc, flags=re.M), (
            f"{qualname}: parameter {p.name} undocumented"
        )


@pytest.mark.parametrize("qualname", WRITERS)
def test_copy_contract_signature(qualname):
    ns, name = qualname.split(".")
    sig = inspect.signature(getattr(getattr(phg2st, ns), name))
    assert "copy" in sig.parameters and sig.parameters["copy"].default is False
    assert sig.parameters["copy"].kind is inspect.Parameter.KEYWORD_ONLY
    assert "table_key" in sig.parameters


SLOT_RE = re.compile(r"``\.(obs|var|obsm|obsp|layers|uns)\['([^']+)'\](?:\['params'\])?``")


def documented_slots(func, **fill) -> set[tuple[str, str]]:
    doc = inspect.getdoc(func).split("Returns", 1)[1].split("Examples", 1)[0]
    return {(slot, key.format(**fill)) for slot, key in SLOT_RE.findall(doc)}


def written_slots(before, after) -> set[tuple[str, str]]:
    """New slots, without the package's record of what it wrote (``uns['phg2st_written']``, documented once, in the
    API page and the ``overwrite`` parameter; checked in the test below)."""
    out = set()
    for slot in ("obs", "var", "obsm", "obsp", "layers", "uns"):
        b, a = getattr(before, slot), getattr(after, slot)
        keys_b = set(b.columns if hasattr(b, "columns") else b.keys())
        keys_a = set(a.columns if hasattr(a, "columns") else a.keys())
        out |= {(slot, k) for k in keys_a - keys_b}
    return out - {("uns", "phg2st_written")}


@pytest.mark.data
def test_documented_slots_equal_written_slots(c2):
    """Every writer's Returns section lists exactly the slots it writes (with default keys)."""
    import numpy as np
    import scanpy as sc

    adata = c2.copy()
    sc.pp.normalize_total(adata, target_sum=1e4)
    sc.pp.log1p(adata)
    adata = adata[:, :300].copy()
    cases = [
        (phg2st.tl.select_prompts, {}, {"key_added": "phg2st_prompt"}),
        (phg2st.tl.baseline, {"method": "idw"}, {"layer_added": "baseline_idw"}),
        (phg2st.pp.smooth, {}, {"layer_added": "smoothed"}),
        (phg2st.pp.select_genes, {"panel": list(adata.var_names[:10])}, {}),
    ]
    import torch

    class Tiny(torch.nn.Module):
        def forward(self, x):
            return x.mean((2, 3))

    adata.uns["spatial"] = c2.uns["spatial"]
    cases += [
        (phg2st.pp.embed_tiles, {"encoder": Tiny(), "grid_size": 3}, {"key_added": "X_tiny"}),
        (phg2st.pp.build_hypergraph, {"use_rep": "X_tiny"}, {"key_added": "phg2st"}),
    ]
    from phg2st_sc._utils import written_keys

    for func, kwargs, fill in cases:
        before = adata.copy()
        out = func(adata, copy=True, **kwargs)
        assert func(adata.copy(), copy=False, **kwargs) is None
        assert written_slots(before, out) == documented_slots(func, **fill), func.__name__
        recorded = {(slot, key) for slot, keys in written_keys(out).items() for key in keys}
        assert documented_slots(func, **fill) <= recorded, func.__name__  # each written slot is on the record
        if func in (phg2st.tl.select_prompts, phg2st.pp.embed_tiles):
            adata = out
    assert np.isfinite(adata.X.data).all()
