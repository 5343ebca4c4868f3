"""Downloads: nothing reaches the network at import, and a download is kept only if its SHA-256 is the registry's.

The verification tests run pooch's real download and hash check against a tiny HTTP server on 127.0.0.1, so no
byte leaves the machine.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import http.server
import os
import re
import socket
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

import phg2st_sc as phg2st
from phg2st_sc.datasets import _her2st
from phg2st_sc.datasets._registry import HER2ST

COUNTS = "ST-cnts/C2.tsv.gz"

# Runs first in a fresh interpreter: every way out to the network is replaced by a recorder that also raises.
# Recording (not only raising) catches libraries that swallow the error.
PRELUDE = textwrap.dedent(
    """
    import os, socket, sys
    attempts = []

    def refuse(what):
        def blocked(*args, **kwargs):
            attempts.append((what, repr(args)[:200]))
            raise OSError(f"network access during import: {what}")
        return blocked

    real_connect, real_connect_ex = socket.socket.connect, socket.socket.connect_ex

    def connect(self, address, *a):
        if self.family == getattr(socket, "AF_UNIX", None):
            return real_connect(self, address, *a)
        return refuse("socket.connect")(address)

    def connect_ex(self, address, *a):
        if self.family == getattr(socket, "AF_UNIX", None):
            return real_connect_ex(self, address, *a)
        return refuse("socket.connect_ex")(address)

    socket.socket.connect, socket.socket.connect_ex = connect, connect_ex
    socket.create_connection = refuse("socket.create_connection")
    socket.getaddrinfo = refuse("socket.getaddrinfo")
    socket.gethostbyname = refuse("socket.gethostbyname")
    """
)
IMPORTS = textwrap.dedent(
    """
    import phg2st_sc
    from phg2st_sc import datasets, io, pl, pp, tl  # noqa: F401
    import phg2st_sc.cli  # noqa: F401
    phg2st_sc.PHG2ST  # the model class (torch, lightning, the encoders) is imported lazily: import it too
    repr(phg2st_sc.settings)
    """
)
CHECK = textwrap.dedent(
    """
    if attempts:
        print("NETWORK", attempts)
        sys.exit(3)
    cache = os.environ["PHG2ST_CACHE_DIR"]
    if os.path.exists(cache):
        print("CACHE CREATED", os.listdir(cache))
        sys.exit(4)
    print("OK")
    """
)


def run_isolated(body: str, tmp_path: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "PHG2ST_DATA_DIR"}
    env["PHG2ST_CACHE_DIR"] = str(tmp_path / "cache")  # must not even be created by an import
    code = PRELUDE + body + CHECK
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env)


def test_import_opens_no_network_connection(tmp_path):
    res = run_isolated(IMPORTS, tmp_path)
    assert res.returncode == 0 and res.stdout.strip().endswith("OK"), res.stdout + res.stderr[-3000:]


@pytest.mark.parametrize(
    "attempt",
    [
        "urllib.request.urlopen('http://example.org', timeout=1)",  # a name to resolve
        "urllib.request.urlopen('http://127.0.0.1:9', timeout=1)",  # an address: a plain connect
        "socket.socket(socket.AF_INET, socket.SOCK_STREAM).connect_ex(('127.0.0.1', 9))",
    ],
)
def test_the_prelude_catches_a_connection(tmp_path, attempt):
    """The check is not vacuous: a connection attempt after the prelude is recorded, even when it is swallowed."""
    res = run_isolated(f"import urllib.request\ntry:\n    {attempt}\nexcept Exception:\n    pass\n", tmp_path)
    assert res.returncode == 3 and "NETWORK" in res.stdout, res.stdout + res.stderr[-3000:]


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def local_server(tmp_path):
    """(folder served, base URL): an HTTP server on 127.0.0.1 in a thread."""
    root = tmp_path / "served"
    root.mkdir()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    thread.join(timeout=10)


@pytest.fixture
def real_pooch(monkeypatch, tmp_path):
    """pooch's real ``retrieve``, a fresh cache and no local data folder.

    ``tests/conftest.py``'s autouse ``_no_downloads`` replaces ``pooch.retrieve`` with a function that fails, so that
    no test downloads by accident. These tests need the real download and hash check, against a local server only:
    the original function is still ``pooch.core.retrieve`` (the fixture patches the name in the ``pooch`` package),
    and it is put back for this test alone (monkeypatch undoes it afterwards, and the autouse fixture's own patch
    is undone after that).
    """
    import pooch
    import pooch.core

    monkeypatch.setattr(pooch, "retrieve", pooch.core.retrieve)
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setattr(phg2st.settings, "_data_dir", None)
    monkeypatch.delenv("PHG2ST_DATA_DIR", raising=False)
    cache = tmp_path / "cache"
    monkeypatch.setattr(phg2st.settings, "_cache_dir", cache)
    return cache


def serve(root: Path, rel: str, data: bytes) -> None:
    path = root / "data" / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def test_every_downloadable_file_has_a_full_sha256():
    from phg2st_sc.datasets._registry import STUTILITY_MOB

    for ds in (HER2ST, STUTILITY_MOB):
        assert ds.sha256, ds.name
        for rel, digest in ds.sha256.items():
            assert re.fullmatch(r"[0-9a-f]{64}", digest), (ds.name, rel)


def test_a_download_with_wrong_bytes_is_refused(local_server, real_pooch):
    root, url = local_server
    serve(root, COUNTS, b"not the published counts table\n")
    ds = dataclasses.replace(HER2ST, base_url=f"{url}/data")  # the real her2st registry, a local mirror
    with pytest.raises(ValueError, match=HER2ST.sha256[COUNTS]):
        ds.download([COUNTS])
    cached = real_pooch / "her2st" / COUNTS
    assert not cached.exists()  # nothing unverified is left for a later call to pick up
    assert not [p for p in real_pooch.rglob("*") if p.is_file()]


def test_the_reader_refuses_a_tampered_download(local_server, real_pooch, monkeypatch):
    """End to end: ``datasets.her2st`` without local data downloads, and stops at the first file that does not
    match."""
    root, url = local_server
    serve(root, COUNTS, b"\x1f\x8b tampered")
    monkeypatch.setattr(_her2st, "HER2ST", dataclasses.replace(HER2ST, base_url=f"{url}/data"))
    with pytest.raises(ValueError, match="SHA256|hash"):
        phg2st.datasets.her2st("C2")
    assert not (real_pooch / "her2st" / COUNTS).exists()


@pytest.mark.data
def test_verified_bytes_are_kept_and_a_corrupted_cache_is_not_trusted(local_server, real_pooch, data_dir):
    root, url = local_server
    good = (data_dir / "her2st" / COUNTS).read_bytes()
    assert hashlib.sha256(good).hexdigest() == HER2ST.sha256[COUNTS]
    ds = dataclasses.replace(HER2ST, base_url=f"{url}/data")
    serve(root, COUNTS, good)
    folder = ds.download([COUNTS])
    assert (folder / COUNTS).read_bytes() == good  # the positive control: the right bytes pass
    # a cached file that was changed afterwards is checked again, not returned as it is
    (folder / COUNTS).write_bytes(b"corrupted in the cache")
    serve(root, COUNTS, b"and wrong on the mirror too")
    with pytest.raises(ValueError, match=HER2ST.sha256[COUNTS]):
        ds.download([COUNTS])
    serve(root, COUNTS, good)
    assert (ds.download([COUNTS]) / COUNTS).read_bytes() == good  # fetched again and verified


def test_an_unreachable_mirror_gives_one_clear_error(local_server, real_pooch):
    """A missing file (HTTP 404) or no server at all: `DataNotFoundError` saying what to do, not a requests chain."""
    root, url = local_server
    ds = dataclasses.replace(HER2ST, base_url=f"{url}/data")  # nothing served: 404
    with pytest.raises(phg2st.DataNotFoundError, match=r"Could not download .*HTTPError.*set \$PHG2ST_DATA_DIR") as e:
        ds.download([COUNTS])
    assert e.value.__cause__ is None and e.value.__suppress_context__
    with socket.socket() as s:  # a port that nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ds = dataclasses.replace(HER2ST, base_url=f"http://127.0.0.1:{port}/data")
    with pytest.raises(phg2st.DataNotFoundError, match="ConnectionError"):
        ds.download([COUNTS])
    assert not [p for p in real_pooch.rglob("*") if p.is_file()]


@pytest.mark.data
def test_the_demo_sections_download_verified_without_a_data_folder(local_server, real_pooch, data_dir, monkeypatch):
    """`make demo` without $PHG2ST_DATA_DIR: the five sections it needs (counts, spot files, H&E images) come from
    the pinned mirror into the cache, each checked against its SHA-256, and read as with local data (the mirror here
    serves the published bytes from 127.0.0.1)."""
    from phg2st_sc.cli.demo import SECTIONS

    root, url = local_server
    (root / "data").symlink_to(data_dir / "her2st", target_is_directory=True)
    monkeypatch.setattr(_her2st, "HER2ST", dataclasses.replace(HER2ST, base_url=f"{url}/data"))
    for section in SECTIONS:
        downloaded = phg2st.datasets.her2st(section)
        local = phg2st.datasets.her2st(section, data_dir=data_dir / "her2st")
        assert downloaded.n_obs == local.n_obs and (downloaded.X != local.X).nnz == 0
        assert (
            downloaded.uns["spatial"][section]["images"]["hires"].shape
            == local.uns["spatial"][section]["images"]["hires"].shape
        )
    cached = sorted(p.relative_to(real_pooch / "her2st").as_posix() for p in real_pooch.rglob("*") if p.is_file())
    assert len(cached) >= 3 * len(SECTIONS) and all(rel in HER2ST.sha256 for rel in cached)
