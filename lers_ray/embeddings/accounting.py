"""The one parameter counter shared by every method.

``params_full`` is rows × dim summed over the compressed tables. ``params_stored`` counts every
number needed at inference time: all entries of dense tensors and the non-zero entries of sparse
(pruned) ones, as each table lists them in :meth:`EmbeddingTable.inference_tensors`.
``sparsity = 1 - params_stored / params_full``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch

from lers_ray.embeddings.base import EmbeddingTable, StorageKind


@dataclass(frozen=True)
class ParameterCount:
    """Parameter figures of a set of embedding tables."""

    params_full: int
    params_stored: int

    @property
    def sparsity(self) -> float:
        """``1 - params_stored / params_full``."""
        return sparsity(self.params_stored, self.params_full)


def count_tensor(tensor: torch.Tensor, kind: StorageKind) -> int:
    """Count the stored numbers of one tensor: ``numel`` if dense, non-zeros if sparse."""
    if kind is StorageKind.DENSE:
        return int(tensor.numel())
    if tensor.layout != torch.strided:
        tensor = tensor.to_dense()
    return int(torch.count_nonzero(tensor.detach()).item())


def count_stored(tables: Iterable[EmbeddingTable]) -> int:
    """Count every number the tables need at inference time."""
    total = 0
    for table in tables:
        for tensor, kind in table.inference_tensors().values():
            total += count_tensor(tensor, kind)
    return total


def params_full(tables: Iterable[EmbeddingTable]) -> int:
    """Return ``sum(num_embeddings * dim)`` over the tables: the size of uncompressed tables."""
    return sum(table.num_embeddings * table.dim for table in tables)


def sparsity(params_stored: int, params_full: int) -> float:
    """Return ``1 - params_stored / params_full``.

    Raises:
        ValueError: if ``params_full`` is not positive.
    """
    if params_full <= 0:
        raise ValueError(f"params_full must be positive, got {params_full}")
    return 1.0 - params_stored / params_full


def count_parameters(tables: Iterable[EmbeddingTable]) -> ParameterCount:
    """Return ``params_full`` and ``params_stored`` of the tables in one pass."""
    tables = list(tables)
    return ParameterCount(params_full=params_full(tables), params_stored=count_stored(tables))


def artifact_bytes(tables: Iterable[EmbeddingTable]) -> int:
    """Return the bytes of the tables' compact tensors, index arrays included.

    The artifact file of :mod:`lers_ray.edge.export` (a trial's ``artifact_bytes``) adds a
    small header and may store integer arrays in narrower types than these tensors have.
    """
    total = 0
    for table in tables:
        for tensor in table.export_artifact().values():
            total += tensor.numel() * tensor.element_size()
    return total
