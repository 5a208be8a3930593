"""Fixtures for the data tests: the real data dir and small files written to tmp_path."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from lers_ray.config import DatasetConfig
from lers_ray.data import InteractionData, load_dataset

REPO_ROOT = Path(__file__).resolve().parents[2]


def real_data_dir() -> Path:
    """Return ``LERS_DATA_DIR`` if set, else ``<repo>/../shared/data``."""
    env_value = os.environ.get("LERS_DATA_DIR")
    return Path(env_value) if env_value else REPO_ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The folder with the real datasets; tests that need it skip when it is absent."""
    path = real_data_dir()
    if not path.is_dir():
        pytest.skip(f"real datasets not found at {path}; set LERS_DATA_DIR")
    return path


@pytest.fixture(scope="session")
def session_cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Parquet cache dir shared by the tests of one session (keeps ~/.cache untouched)."""
    return tmp_path_factory.mktemp("dataset-cache")


@pytest.fixture(scope="session")
def gowalla(data_dir: Path, session_cache_dir: Path) -> InteractionData:
    """Gowalla loaded once per session."""
    return load_dataset(DatasetConfig(name="gowalla"), data_dir, session_cache_dir)


def _write_lines(path: Path, lines: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(line + "\n" for line in lines), encoding="ascii")
    return path


@pytest.fixture
def write_lines() -> Callable[[Path, list[str]], Path]:
    """A function that writes lines (each ending in a newline) to a path and returns it."""
    return _write_lines
