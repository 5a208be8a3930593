from __future__ import annotations

import pytest
import torch

from lers_ray.embeddings.accounting import (
    artifact_bytes,
    count_parameters,
    count_stored,
    params_full,
    sparsity,
)
from lers_ray.embeddings.base import EmbeddingTable, StorageKind
from lers_ray.embeddings.full import FullEmbedding
from lers_ray.embeddings.magprune import prune_table


class TwoPartTable(EmbeddingTable):
    """A table listing one dense and one sparse tensor, to test both counting rules."""

    def __init__(self) -> None:
        super().__init__(num_embeddings=10, dim=4)
        self.dense = torch.ones(3, 2)
        self.sparse = torch.tensor([[0.0, 1.0], [2.0, 0.0], [0.0, 0.0]])

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def weight_matrix(self) -> torch.Tensor:
        raise NotImplementedError

    def inference_tensors(self) -> dict[str, tuple[torch.Tensor, StorageKind]]:
        return {
            "dense": (self.dense, StorageKind.DENSE),
            "sparse": (self.sparse, StorageKind.SPARSE),
        }

    def export_artifact(self) -> dict[str, torch.Tensor]:
        return {"dense": self.dense}

    @classmethod
    def decode_artifact(cls, artifact: dict[str, torch.Tensor]) -> torch.Tensor:
        raise NotImplementedError


def test_full_table_counts_every_entry() -> None:
    users, items = FullEmbedding(10, 4), FullEmbedding(6, 4)
    assert params_full([users, items]) == 64
    assert count_stored([users, items]) == 64
    assert count_parameters([users, items]).sparsity == 0.0


def test_full_table_counts_zeros_too() -> None:
    table = FullEmbedding(5, 4)
    with torch.no_grad():
        table.weight.zero_()
    assert count_stored([table]) == 20


def test_pruned_table_counts_nonzeros() -> None:
    torch.manual_seed(0)
    users = prune_table(FullEmbedding(10, 4), 0.5)
    items = prune_table(FullEmbedding(6, 4), 0.25)
    counts = count_parameters([users, items])
    assert counts.params_full == 64
    assert counts.params_stored == 20 + 18
    assert counts.sparsity == pytest.approx(1 - 38 / 64)


def test_dense_and_sparse_tensors_in_one_table() -> None:
    table = TwoPartTable()
    assert count_stored([table]) == 6 + 2
    assert params_full([table]) == 40


def test_sparsity_requires_positive_full() -> None:
    assert sparsity(25, 100) == 0.75
    with pytest.raises(ValueError, match="params_full"):
        sparsity(0, 0)


def test_artifact_bytes_counts_index_overhead() -> None:
    torch.manual_seed(0)
    full = FullEmbedding(10, 4)
    assert artifact_bytes([full]) == 10 * 4 * 4
    pruned = prune_table(full, 0.5)
    # 20 float32 values, 20 int8 column indices, 11 int8 row pointers, 2 int64 shape entries.
    assert artifact_bytes([pruned]) == 20 * 4 + 20 + 11 + 16
