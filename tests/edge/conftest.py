"""Finished tables of every codec, and MovieLens-100K, for the edge tests."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from lers_ray.config import DatasetConfig
from lers_ray.data import load_dataset
from lers_ray.data.dataset import InteractionData
from lers_ray.embeddings.base import EmbeddingTable, SoftThresholdTable
from lers_ray.embeddings.full import FullEmbedding
from lers_ray.embeddings.registry import get_method

SETTINGS = {"dhe": {"hash_count": 64}}
"""Settings that let small tables reach the targets."""


def build_finished_table(method: str, rows: int, dim: int, target: float) -> EmbeddingTable:
    """Return the table a finished trial of ``method`` holds, with untrained values.

    Post-hoc methods compress a random full table; two-stage methods fix the masks of fresh
    search tables at the target.
    """
    spec = get_method(method)
    settings = spec.parse_settings(SETTINGS.get(method, {}))
    if method == "full":
        return FullEmbedding(rows, dim)
    if spec.from_trained is not None:
        return spec.from_trained(FullEmbedding(rows, dim), target, settings)
    table = spec.create(rows, dim, target, settings, 0.1)
    if isinstance(table, SoftThresholdTable):
        return table.fixed(table.keep_masks(target))
    return table


@pytest.fixture(scope="session")
def finished_table() -> Callable[[str, int, int, float], EmbeddingTable]:
    """Return :func:`build_finished_table`."""
    return build_finished_table


@pytest.fixture(scope="session")
def ml100k(data_dir: Path) -> InteractionData:
    """MovieLens-100K with the default split."""
    return load_dataset(DatasetConfig(name="ml-100k"), data_dir=data_dir)
