"""Data and cache dir resolution, and dataset_stats."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from lers_ray.data.dataset import InteractionData
from lers_ray.data.paths import resolve_cache_dir, resolve_data_dir
from lers_ray.data.stats import dataset_stats


def test_data_dir_order(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("LERS_DATA_DIR", str(tmp_path / "env"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))

    assert resolve_data_dir(str(tmp_path / "cli")) == tmp_path / "cli"
    assert resolve_data_dir() == tmp_path / "env"

    monkeypatch.delenv("LERS_DATA_DIR")

    assert resolve_data_dir() == tmp_path / "xdg" / "lers_ray" / "data"

    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))

    assert resolve_data_dir() == tmp_path / "home" / ".cache" / "lers_ray" / "data"


def test_cache_dir_order(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("LERS_CACHE_DIR", str(tmp_path / "env"))

    assert resolve_cache_dir() == tmp_path / "env"

    monkeypatch.delenv("LERS_CACHE_DIR")
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))

    assert resolve_cache_dir() == tmp_path / "home" / ".cache" / "lers_ray" / "parsed"


def test_dataset_stats_counts() -> None:
    data = InteractionData(
        name="tiny",
        n_users=3,
        n_items=4,
        train=np.array([[0, 0], [0, 1], [1, 2]]),
        valid=np.array([[2, 3]]),
        test=np.array([[0, 3], [1, 0]]),
        fingerprint="0123456789abcdef",
    )

    stats = dataset_stats(data)

    assert stats["users"] == 3
    assert stats["items"] == 4
    assert stats["interactions"] == 6
    assert (stats["train"], stats["valid"], stats["test"]) == (3, 1, 2)
    assert stats["users_with_test"] == 2
    assert stats["density"] == 0.5
    assert stats["fingerprint"] == "0123456789abcdef"
