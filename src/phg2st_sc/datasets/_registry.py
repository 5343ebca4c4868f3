"""Where dataset files come from: an explicit folder, ``$PHG2ST_DATA_DIR``, or a checksummed download."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from importlib.resources import files
from pathlib import Path

from phg2st_sc._errors import DataNotFoundError
from phg2st_sc._settings import DATA_DIR_ENV, settings

logger = logging.getLogger("phg2st_sc")


def _read_sha256sums(name: str) -> dict[str, str]:
    text = files("phg2st_sc").joinpath("_data", "registry", f"{name}.sha256").read_text()
    out = {}
    for line in text.splitlines():
        if line.strip():
            digest, path = line.split(maxsplit=1)
            out[path.strip()] = digest
    return out


@dataclass(frozen=True)
class RemoteDataset:
    """A public dataset: where to find it locally and where to download it from.

    Parameters
    ----------
    name
        Folder name under the data directory (``$PHG2ST_DATA_DIR/<name>``) and the download cache.
    base_url
        URL that the relative file paths are appended to, pinned to a commit.
    layouts
        Sub-folders of a dataset folder that may hold the files (the published repository layouts).
    download_prefix
        Folder of the files inside the downloaded repository, prepended to their relative paths for the
        download URL and the checksum registry.
    """

    name: str
    base_url: str | None
    layouts: tuple[str, ...] = ("",)
    download_prefix: str = ""

    @cached_property
    def sha256(self) -> dict[str, str]:
        """Known SHA-256 of every downloadable file, by path relative to the dataset folder."""
        if self.base_url is None:
            return {}
        return _read_sha256sums(self.name)

    def _roots(self, folder: Path) -> list[Path]:
        return [folder / layout if layout else folder for layout in self.layouts]

    def locate(self, required: Sequence[str], data_dir: str | Path | None = None) -> Path:
        """Return the folder holding ``required`` files (paths relative to it), downloading them if needed.

        Order: ``data_dir`` (the dataset folder itself or its parent), then ``$PHG2ST_DATA_DIR/<name>``, then a
        download into ``phg2st.settings.cache_dir``. A folder given explicitly is never silently replaced by a
        download.
        """
        if data_dir is not None:
            folder = Path(data_dir).expanduser()
            candidates = [*self._roots(folder), *self._roots(folder / self.name)]
            return self._first_complete(candidates, required, origin=f"`data_dir={str(data_dir)!r}`")
        if settings.data_dir is not None:
            folder = settings.data_dir / self.name
            return self._first_complete(
                self._roots(folder), required, origin=f"the data directory ({DATA_DIR_ENV} or phg2st.settings)"
            )
        return self.download(required)

    def _first_complete(self, candidates: list[Path], required: Sequence[str], origin: str) -> Path:
        best_missing = list(required)
        for root in candidates:
            missing = [r for r in required if not (root / r).is_file()]
            if not missing:
                return root
            if len(missing) < len(best_missing):
                best_missing = missing
        looked = ", ".join(str(c) for c in candidates)
        raise DataNotFoundError(
            f"The {self.name} files were not found from {origin}. Looked in: {looked}. "
            f"Missing: {', '.join(best_missing)}. Point `data_dir=` (or ${DATA_DIR_ENV}) at a folder with the "
            f"published {self.name} layout."
        )

    def download(self, required: Sequence[str]) -> Path:
        """Download ``required`` files into the cache, verifying their SHA-256, and return the cache folder."""
        remote = {r: self.download_prefix + r for r in required}
        unknown = [r for r, full in remote.items() if full not in self.sha256]
        if self.base_url is None or unknown:
            raise DataNotFoundError(
                f"No local copy of the {self.name} files was given and they cannot be downloaded with a verified "
                f"checksum ({', '.join(unknown) or 'no public mirror'}). Download them yourself and pass `data_dir=` "
                f"or set ${DATA_DIR_ENV}."
            )
        import pooch
        import requests

        root = settings.cache_dir / self.name / self.download_prefix
        for rel, full in remote.items():
            logger.info("Fetching %s/%s", self.name, full)
            url = f"{self.base_url}/{full}"
            try:
                pooch.retrieve(
                    url=url,
                    known_hash=f"sha256:{self.sha256[full]}",
                    fname=Path(rel).name,
                    path=root / Path(rel).parent,
                    progressbar=settings.progress,
                )
            except requests.exceptions.RequestException as err:  # no network, proxy, 404...: one clear line
                reason = str(err).splitlines()[0][:200] if str(err) else type(err).__name__
                raise DataNotFoundError(
                    f"Could not download the {self.name} file {full} from {url} ({type(err).__name__}: {reason}). "
                    f"Without network access, download the published {self.name} files yourself and pass "
                    f"`data_dir=` or set ${DATA_DIR_ENV}."
                ) from None
        return root


HER2ST = RemoteDataset(
    name="her2st",
    base_url="https://raw.githubusercontent.com/almaan/her2st/85df7411b987a7dec3feff9718b869a7a82091ec/data",
    layouts=("", "data"),
)
STUTILITY_MOB = RemoteDataset(
    name="stutility_mob",
    base_url="https://raw.githubusercontent.com/jbergenstrahle/STUtility/9a8f421499e58b13340ee386db07b0eba923c88c",
    layouts=("inst/extdata/counts", ""),
    download_prefix="inst/extdata/counts/",
)
CSCC = RemoteDataset(name="cscc", base_url=None, layouts=("", "GSE144240_RAW", "GSE144239_RAW"))
