"""A table with a fixed keep-mask, and its compact CSR artifact.

Pruned tables of every method end up here: MagPrune and random pruning directly, PEP and
OptEmbed for their retraining stage.
"""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F
from torch import nn

from lers_ray.embeddings.base import EmbeddingTable, StorageKind


class MaskedEmbedding(EmbeddingTable):
    """A table with a fixed keep-mask; looked-up vectors have the pruned entries zeroed.

    ``weight`` stays a parameter, so the kept entries can be trained with the mask fixed
    (``magprune+ft`` and the retraining stage of PEP and OptEmbed). Masked entries get zero
    gradient, so they stay zero.
    """

    mask: torch.Tensor

    def __init__(self, num_embeddings: int, dim: int) -> None:
        super().__init__(num_embeddings, dim)
        self.weight = nn.Parameter(torch.zeros(num_embeddings, dim))
        self.register_buffer("mask", torch.ones(num_embeddings, dim, dtype=torch.bool))

    @classmethod
    def from_weight(cls, weight: torch.Tensor, mask: torch.Tensor) -> MaskedEmbedding:
        """Return a table holding ``weight * mask`` with ``mask`` fixed."""
        rows, dim = weight.shape
        table = cls(rows, dim)
        with torch.no_grad():
            table.weight.copy_(weight.detach() * mask)
            table.mask.copy_(mask)
        return table

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        """Look up ``ids`` (any shape ``S``) and return masked ``S + (dim,)`` vectors."""
        return F.embedding(ids, self.weight) * self.mask[ids]

    def weight_matrix(self) -> torch.Tensor:
        """Return the masked ``[num_embeddings, dim]`` table."""
        return self.weight * self.mask

    def inference_tensors(self) -> dict[str, tuple[torch.Tensor, StorageKind]]:
        """Return the masked weight, counted by its non-zeros."""
        return {"weight": (self.weight_matrix().detach(), StorageKind.SPARSE)}

    def export_artifact(self) -> dict[str, torch.Tensor]:
        """Return the masked table in CSR form with the narrowest index dtypes that fit.

        Keys: ``crow_indices`` ``[rows + 1]``, ``col_indices`` ``[nnz]``, ``values`` ``[nnz]``
        (float32) and ``shape`` (int64 ``[rows, dim]``).
        """
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
            csr = self.weight_matrix().detach().cpu().to_sparse_csr()
        crow = csr.crow_indices()
        col = csr.col_indices()
        return {
            "crow_indices": crow.to(narrowest_index_dtype(int(crow[-1]))),
            "col_indices": col.to(narrowest_index_dtype(self.dim - 1)),
            "values": csr.values().to(torch.float32).clone(),
            "shape": torch.tensor([self.num_embeddings, self.dim], dtype=torch.int64),
        }

    @classmethod
    def decode_artifact(cls, artifact: dict[str, torch.Tensor]) -> torch.Tensor:
        """Rebuild the dense table from its CSR arrays."""
        return csr_to_dense(artifact)


def csr_to_dense(artifact: dict[str, torch.Tensor]) -> torch.Tensor:
    """Rebuild a dense float32 table from ``crow_indices``, ``col_indices``, ``values``, ``shape``."""
    rows, dim = (int(v) for v in artifact["shape"])
    crow = artifact["crow_indices"].to(torch.int64)
    col = artifact["col_indices"].to(torch.int64)
    row_of = torch.repeat_interleave(torch.arange(rows), crow[1:] - crow[:-1])
    dense = torch.zeros(rows, dim, dtype=torch.float32)
    dense[row_of, col] = artifact["values"].to(torch.float32)
    return dense


def narrowest_index_dtype(max_value: int) -> torch.dtype:
    """Return the smallest signed integer dtype that can store ``0..max_value``."""
    for dtype in (torch.int8, torch.int16, torch.int32):
        if max_value <= torch.iinfo(dtype).max:
            return dtype
    return torch.int64


def empty_masked_table(
    num_embeddings: int, dim: int, target: float, settings: object
) -> EmbeddingTable:
    """Return an all-zero :class:`MaskedEmbedding` to load a checkpoint into.

    It is the ``create_final`` of every method whose finished tables are masked tables
    (magprune, random pruning, PEP, OptEmbed); ``target`` and ``settings`` are not needed.
    """
    return MaskedEmbedding(num_embeddings, dim)
