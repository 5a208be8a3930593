"""Locations of raw dataset files and of parsed-dataset caches on disk."""

from __future__ import annotations

import os
from pathlib import Path

DATA_DIR_ENV = "LERS_DATA_DIR"
CACHE_DIR_ENV = "LERS_CACHE_DIR"


def _user_cache_root() -> Path:
    """Return ``$XDG_CACHE_HOME/lers_ray``, or ``~/.cache/lers_ray`` when the variable is unset."""
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg) if xdg else Path.home() / ".cache"
    return base / "lers_ray"


def resolve_data_dir(cli_value: str | None = None) -> Path:
    """Return the folder that contains the raw dataset folders (``gowalla/``, ``movielens-100k/``, ...).

    The first of these that is set wins: ``cli_value`` (the ``--data-dir`` option), the
    environment variable ``LERS_DATA_DIR``, then the per-user cache folder
    ``$XDG_CACHE_HOME/lers_ray/data`` (``~/.cache/lers_ray/data`` without XDG). The folder is not
    created and may be read-only.
    """
    if cli_value:
        return Path(cli_value).expanduser()
    env_value = os.environ.get(DATA_DIR_ENV)
    if env_value:
        return Path(env_value).expanduser()
    return _user_cache_root() / "data"


def resolve_cache_dir() -> Path:
    """Return the folder for Parquet caches of parsed and split datasets.

    It is ``LERS_CACHE_DIR`` when set, else ``~/.cache/lers_ray/parsed`` (under
    ``$XDG_CACHE_HOME`` when that is set). It is kept apart from the data dir because the data
    dir may be read-only. The folder is not created here.
    """
    env_value = os.environ.get(CACHE_DIR_ENV)
    if env_value:
        return Path(env_value).expanduser()
    return _user_cache_root() / "parsed"
