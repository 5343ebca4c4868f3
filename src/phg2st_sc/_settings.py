"""Package-wide settings: data directory, download cache, progress bars."""

from __future__ import annotations

import os
from pathlib import Path

DATA_DIR_ENV = "PHG2ST_DATA_DIR"
CACHE_DIR_ENV = "PHG2ST_CACHE_DIR"


class Settings:
    """Settings of phg2st-sc, available as ``phg2st.settings``.

    Attributes
    ----------
    data_dir
        Folder holding local copies of the public datasets (``her2st/``, ``stutility_mob/``, ``cscc/``).
        Defaults to ``$PHG2ST_DATA_DIR``; ``None`` when unset.
    cache_dir
        Where downloads are cached. Defaults to ``$PHG2ST_CACHE_DIR`` or the operating system's user cache.
    progress
        Show progress bars on long work.
    """

    def __init__(self) -> None:
        self._data_dir: Path | None = None
        self._cache_dir: Path | None = None
        self.progress: bool = True

    @property
    def data_dir(self) -> Path | None:
        if self._data_dir is not None:
            return self._data_dir
        env = os.environ.get(DATA_DIR_ENV)
        return Path(env).expanduser() if env else None

    @data_dir.setter
    def data_dir(self, value: str | os.PathLike | None) -> None:
        self._data_dir = None if value is None else Path(value).expanduser()

    @property
    def cache_dir(self) -> Path:
        if self._cache_dir is not None:
            return self._cache_dir
        env = os.environ.get(CACHE_DIR_ENV)
        if env:
            return Path(env).expanduser()
        import pooch

        return Path(pooch.os_cache("phg2st-sc"))

    @cache_dir.setter
    def cache_dir(self, value: str | os.PathLike | None) -> None:
        self._cache_dir = None if value is None else Path(value).expanduser()

    def __repr__(self) -> str:
        return f"Settings(data_dir={self.data_dir!s}, cache_dir={self._cache_dir or '<default>'}, progress={self.progress})"


settings = Settings()
