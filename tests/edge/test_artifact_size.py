"""Pruned tables' artifacts cost within 5% of what CSR needs at the least.

The least is the non-zero values (4 bytes each), one column index per value in the fewest
bytes that hold ``dim - 1``, and ``rows + 1`` row pointers in the fewest bytes that hold the
number of non-zeros.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
import torch

from lers_ray.config import BackboneConfig
from lers_ray.edge.export import model_artifact
from lers_ray.embeddings.base import EmbeddingTable
from lers_ray.embeddings.masked import MaskedEmbedding
from lers_ray.models import build_model

DIM = 64
SIZES = {"ml-100k": (943, 1682), "gowalla": (29858, 40981)}


def fewest_bytes(max_value: int) -> int:
    for size in (1, 2, 4):
        if max_value < 2 ** (8 * size):
            return size
    return 8


def csr_minimum(table: MaskedEmbedding) -> int:
    nnz = int((table.weight_matrix() != 0).sum())
    rows = table.num_embeddings
    return nnz * 4 + nnz * fewest_bytes(table.dim - 1) + (rows + 1) * fewest_bytes(nnz)


@pytest.mark.parametrize("target", [0.5, 0.8, 0.95])
@pytest.mark.parametrize("dataset", list(SIZES))
@pytest.mark.parametrize("method", ["magprune", "random_prune", "pep", "optembed"])
def test_csr_artifact_within_five_percent(
    method: str,
    dataset: str,
    target: float,
    finished_table: Callable[[str, int, int, float], EmbeddingTable],
) -> None:
    torch.manual_seed(0)
    tables: list[EmbeddingTable] = []
    if method == "optembed":
        for rows in SIZES[dataset]:
            keep = torch.rand(rows, DIM) >= target
            tables.append(MaskedEmbedding.from_weight(torch.randn(rows, DIM), keep))
    else:
        tables = [finished_table(method, rows, DIM, target) for rows in SIZES[dataset]]
    masked = [table for table in tables if isinstance(table, MaskedEmbedding)]
    assert len(masked) == 2
    empty = np.zeros((0, 2), dtype=np.int64)
    model = build_model(BackboneConfig(name="lightgcn", dim=DIM), masked[0], masked[1], empty, 0.0)
    size = len(
        model_artifact(model, method=method, target=target, dataset=dataset, fingerprint="f")
    )
    minimum = sum(csr_minimum(table) for table in masked)
    assert size >= minimum
    assert size <= 1.05 * minimum, (size, minimum, size / minimum)
