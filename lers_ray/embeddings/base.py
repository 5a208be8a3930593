"""The interface every embedding table (full, pruned, compositional, ...) implements."""

from __future__ import annotations

import abc
import enum

import torch
from torch import nn


class StorageKind(enum.Enum):
    """How a tensor needed at inference time is stored, which decides how it is counted."""

    DENSE = "dense"
    """Every entry is stored: counted as ``numel``."""
    SPARSE = "sparse"
    """Only non-zero entries are stored (a pruned table): counted as the number of non-zeros."""


class EmbeddingTable(nn.Module, abc.ABC):
    """A lookup from ids in ``[0, num_embeddings)`` to ``dim``-dimensional vectors.

    Subclasses define how the vectors are produced and stored. The parameter counter in
    :mod:`lers_ray.embeddings.accounting` reads :meth:`inference_tensors`, so every method is
    counted by the same rule.
    """

    def __init__(self, num_embeddings: int, dim: int) -> None:
        super().__init__()
        if num_embeddings <= 0 or dim <= 0:
            raise ValueError(
                f"num_embeddings ({num_embeddings}) and dim ({dim}) must both be positive"
            )
        self.num_embeddings = int(num_embeddings)
        self.dim = int(dim)

    @abc.abstractmethod
    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        """Look up ``ids`` (int64, any shape ``S``) and return vectors of shape ``S + (dim,)``."""

    @abc.abstractmethod
    def weight_matrix(self) -> torch.Tensor:
        """Return the whole table as a dense, differentiable ``[num_embeddings, dim]`` tensor."""

    @abc.abstractmethod
    def inference_tensors(self) -> dict[str, tuple[torch.Tensor, StorageKind]]:
        """Return every tensor needed at inference time, by name, with its storage kind.

        Numbers used only during training (thresholds, optimiser state) are left out.
        """

    @abc.abstractmethod
    def export_artifact(self) -> dict[str, torch.Tensor]:
        """Return the compact state an edge device loads (detached CPU tensors)."""

    def extra_repr(self) -> str:
        return f"num_embeddings={self.num_embeddings}, dim={self.dim}"
