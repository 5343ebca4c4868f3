"""The release path of docs/release.md: build the sdist and the wheel, check them, install the wheel in a fresh
environment and run the smoke test there (no network: the build runs without isolation, from the test
environment's hatchling and hatch-vcs, and the fresh environment borrows the installed dependencies)."""

from __future__ import annotations

import re
import subprocess
import sys
import sysconfig
import tarfile
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SMOKE = """
import sys, warnings
import numpy as np
import phg2st_sc as phg2st
assert phg2st.__file__.startswith(sys.prefix), phg2st.__file__  # the wheel, not the source tree
a = phg2st.datasets.synthetic(150, 8, n_features=6, grid_size=0, seed=0)
phg2st.pp.build_hypergraph(a, use_rep="X_synthetic")
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    model = phg2st.tl.fit(a, use_rep="X_synthetic", max_epochs=2, validation=None, accelerator="cpu",
                          config=dict(hidden=16, heads=2, spot_depth=1, use_neighbour_branch=False))
phg2st.tl.select_prompts(a, fraction=0.2, seed=0)
phg2st.tl.impute(a, model)
assert np.isfinite(a.layers["phg2st"]).all()
print("smoke ok", phg2st.__version__)
"""


def _run(*args: str | Path, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([str(a) for a in args], capture_output=True, text=True, check=False, **kwargs)


@pytest.fixture(scope="module")
def dist(tmp_path_factory):
    if not (ROOT / ".git").exists():
        pytest.skip("the version comes from git: a release is built from a git checkout")
    out = tmp_path_factory.mktemp("dist")
    res = _run(sys.executable, "-m", "build", "--no-isolation", "--sdist", "--wheel", "--outdir", out, ROOT)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    return out


def test_sdist_and_wheel_pass_twine_check_and_carry_the_release_files(dist):
    wheel, sdist = next(dist.glob("*.whl")), next(dist.glob("*.tar.gz"))
    res = _run(sys.executable, "-m", "twine", "check", "--strict", wheel, sdist)
    assert res.returncode == 0 and "PASSED" in res.stdout, res.stdout + res.stderr
    names = zipfile.ZipFile(wheel).namelist()
    assert "phg2st_sc/py.typed" in names
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)
    assert any(n.endswith("entry_points.txt") for n in names)
    assert not any(n.startswith(("tests/", "benchmarks/")) for n in names)
    members = tarfile.open(sdist).getnames()
    for name in ("LICENSE", "CITATION.cff", "pyproject.toml", "README.md", "src/phg2st_sc/py.typed"):
        assert any(m.endswith("/" + name) for m in members), name
    # one version for both, from git (the installed metadata may be older: an editable install keeps the version of
    # the commit it was installed at)
    version = wheel.name.split("-")[1]
    assert sdist.name == f"phg2st_sc-{version}.tar.gz"
    assert re.fullmatch(r"\d+\.\d+\.\d+(\.dev\d+)?(\+[0-9a-z.]+)?", version), version


def test_the_wheel_installs_in_a_fresh_environment_and_runs(dist, tmp_path):
    wheel = next(dist.glob("*.whl"))
    env = tmp_path / "venv"
    assert _run(sys.executable, "-m", "venv", "--without-pip", env).returncode == 0
    python = env / "bin" / "python"
    res = _run(sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", "--no-index", "--quiet",
               "--disable-pip-version-check", wheel)  # fmt: skip
    assert res.returncode == 0, res.stdout + res.stderr
    # the dependencies from the test environment (its .pth files, the source tree's editable path among them,
    # are not read: a plain path line does not process the .pth files inside it)
    site = _run(python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])").stdout.strip()
    Path(site, "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    res = _run(env / "bin" / "phg2st", "--version")
    assert res.returncode == 0 and res.stdout.startswith("phg2st ") and "phg2st-sc" in res.stdout, res.stderr
    assert res.stdout.split()[1] == wheel.name.split("-")[1]  # the installed wheel's own version
    res = _run(python, "-c", SMOKE, cwd=tmp_path, env={"MPLBACKEND": "agg", "PATH": str(env / "bin")})
    assert res.returncode == 0 and "smoke ok" in res.stdout, res.stdout[-3000:] + res.stderr[-3000:]
