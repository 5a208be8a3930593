"""Matrix factorisation with BPR (MF-BPR): ``score(u, i) = <e_u, e_i>``."""

from __future__ import annotations

import torch

from lers_ray.models.base import CFModel


class MF(CFModel):
    """MF-BPR: the final embeddings are the table rows themselves."""

    def final_embeddings(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Return the user ``[U, D]`` and item ``[I, D]`` tables."""
        return self.user_table.weight_matrix(), self.item_table.weight_matrix()

    def batch_embeddings(
        self, users: torch.Tensor, items: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Look up ``users`` ``[B] -> [B, D]`` and ``items`` ``[M] -> [M, D]``."""
        return self.user_table(users), self.item_table(items)
