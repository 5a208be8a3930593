"""LightGCN: embeddings averaged over layers 0..L of normalised-graph propagation."""

from __future__ import annotations

import numpy as np
import torch

from lers_ray.embeddings.base import EmbeddingTable
from lers_ray.models.base import CFModel
from lers_ray.models.graph import layer_mean, layer_mean_rows, normalized_adjacency


class LightGCN(CFModel):
    """LightGCN over the graph of the train pairs.

    The adjacency is a non-persistent buffer: it is rebuilt from the train pairs, never saved
    in checkpoints.
    """

    adjacency: torch.Tensor

    def __init__(
        self,
        user_table: EmbeddingTable,
        item_table: EmbeddingTable,
        train: np.ndarray,
        num_layers: int,
        weight_decay: float,
        adjacency: torch.Tensor | None = None,
    ) -> None:
        """Build the model; ``adjacency`` may pass a prebuilt :func:`normalized_adjacency`."""
        super().__init__(user_table, item_table, weight_decay)
        if num_layers < 0:
            raise ValueError(f"num_layers must be >= 0, got {num_layers}")
        self.num_layers = int(num_layers)
        if adjacency is None:
            adjacency = normalized_adjacency(train, self.n_users, self.n_items)
        self.register_buffer("adjacency", adjacency, persistent=False)

    def ego_embeddings(self) -> torch.Tensor:
        """Return the layer-0 embeddings of all nodes, users then items: ``[U + I, D]``."""
        return torch.cat([self.user_table.weight_matrix(), self.item_table.weight_matrix()])

    def final_embeddings(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Propagate all nodes and return users ``[U, D]`` and items ``[I, D]``."""
        nodes = layer_mean(self.adjacency, self.ego_embeddings(), self.num_layers)
        return nodes[: self.n_users], nodes[self.n_users :]

    def batch_embeddings(
        self, users: torch.Tensor, items: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Propagate and return ``users`` ``[B] -> [B, D]`` and ``items`` ``[M] -> [M, D]``.

        The last layer is computed only for the distinct nodes of the batch.
        """
        nodes = torch.cat([users, items + self.n_users])
        unique, inverse = torch.unique(nodes, return_inverse=True)
        rows = layer_mean_rows(self.adjacency, self.ego_embeddings(), unique, self.num_layers)
        selected = rows[inverse]
        return selected[: users.numel()], selected[users.numel() :]
