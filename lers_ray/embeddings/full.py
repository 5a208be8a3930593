"""The uncompressed embedding table, the reference every method is compared with."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from lers_ray.embeddings.base import EmbeddingTable, StorageKind
from lers_ray.embeddings.spec import TRAIN, MethodSpec, SettingsBase


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

    @classmethod
    def decode_artifact(cls, artifact: dict[str, torch.Tensor]) -> torch.Tensor:
        """Return the stored dense weight."""
        return artifact["weight"].to(torch.float32)


@dataclass
class FullSettings(SettingsBase):
    """The full table has no settings."""


def _create(
    num_embeddings: int, dim: int, target: float, settings: FullSettings, init_std: float
) -> EmbeddingTable:
    return FullEmbedding(num_embeddings, dim, init_std=init_std)


METHOD = MethodSpec(
    name="full",
    settings_cls=FullSettings,
    kind=TRAIN,
    create=_create,
    description="uncompressed tables, the reference of every sweep",
)
