"""The uncompressed embedding table, the reference every method is compared with."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from lers_ray.embeddings.base import EmbeddingTable, StorageKind


class FullEmbedding(EmbeddingTable):
    """A dense ``[num_embeddings, dim]`` table initialised from ``N(0, init_std^2)``."""

    def __init__(self, num_embeddings: int, dim: int, init_std: float = 0.1) -> None:
        super().__init__(num_embeddings, dim)
        self.weight = nn.Parameter(torch.empty(num_embeddings, dim))
        nn.init.normal_(self.weight, mean=0.0, std=init_std)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        """Look up ``ids`` (any shape ``S``) and return ``S + (dim,)`` vectors."""
        return F.embedding(ids, self.weight)

    def weight_matrix(self) -> torch.Tensor:
        """Return the ``[num_embeddings, dim]`` weight itself."""
        return self.weight

    def inference_tensors(self) -> dict[str, tuple[torch.Tensor, StorageKind]]:
        """Return the weight, stored densely."""
        return {"weight": (self.weight, StorageKind.DENSE)}

    def export_artifact(self) -> dict[str, torch.Tensor]:
        """Return the dense float32 weight."""
        return {"weight": self.weight.detach().cpu().clone()}
