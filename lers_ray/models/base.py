"""Shared parts of the collaborative-filtering backbones: BPR loss and the L2 term."""

from __future__ import annotations

import abc

import torch
import torch.nn.functional as F
from torch import nn

from lers_ray.embeddings.base import EmbeddingTable


class CFModel(nn.Module, abc.ABC):
    """A recommender over a user table and an item table, trained with BPR.

    Any :class:`EmbeddingTable` plugs in, so every compression method shares the backbones.
    """

    def __init__(
        self, user_table: EmbeddingTable, item_table: EmbeddingTable, weight_decay: float
    ) -> None:
        super().__init__()
        if user_table.dim != item_table.dim:
            raise ValueError(
                f"user and item tables must have the same dim, got {user_table.dim} "
                f"and {item_table.dim}"
            )
        self.user_table = user_table
        self.item_table = item_table
        self.weight_decay = float(weight_decay)

    @property
    def n_users(self) -> int:
        """Number of user rows."""
        return self.user_table.num_embeddings

    @property
    def n_items(self) -> int:
        """Number of item rows."""
        return self.item_table.num_embeddings

    @abc.abstractmethod
    def final_embeddings(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Return the embeddings scored at evaluation: users ``[U, D]`` and items ``[I, D]``."""

    @abc.abstractmethod
    def batch_embeddings(
        self, users: torch.Tensor, items: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Return the final embeddings of ``users`` ``[B] -> [B, D]`` and ``items``
        ``[M] -> [M, D]``, differentiable with respect to the tables."""

    def bpr_batch(
        self, users: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Compute the BPR loss and the L2 penalty of one batch.

        Args:
            users: ``[B]`` user ids.
            pos: ``[B]`` positive item ids.
            neg: ``[B]`` or ``[B, N]`` negative item ids.

        Returns:
            ``(loss, l2)``: the mean of ``softplus(neg_score - pos_score)`` over all ``B * N``
            triples, and ``weight_decay * (||e_u||^2 + ||e_pos||^2 + ||e_neg||^2) / (2 * B)``
            where the ``e`` are the batch's layer-0 (table) embeddings and the squared norms
            are summed over the batch. Dividing by ``2 * B`` follows LightGCN's reference
            implementation; ``weight_decay`` is ``TrainingConfig.weight_decay``. A table's
            :meth:`EmbeddingTable.penalty` for the batch's ids is added to the second term.
        """
        if neg.dim() == 1:
            neg = neg.unsqueeze(1)
        batch, n_neg = neg.shape
        items = torch.cat([pos, neg.reshape(-1)])
        user_emb, item_emb = self.batch_embeddings(users, items)
        pos_emb = item_emb[:batch]
        neg_emb = item_emb[batch:].reshape(batch, n_neg, -1)
        pos_score = (user_emb * pos_emb).sum(-1)
        neg_score = torch.einsum("bd,bnd->bn", user_emb, neg_emb)
        loss = F.softplus(neg_score - pos_score.unsqueeze(1)).mean()

        ego_users = self.user_table(users)
        ego_items = self.item_table(items)
        squared = ego_users.pow(2).sum() + ego_items.pow(2).sum()
        l2 = self.weight_decay * squared / (2 * batch)
        for table, ids in ((self.user_table, users), (self.item_table, items)):
            extra = table.penalty(ids)
            if extra is not None:
                l2 = l2 + extra
        return loss, l2

    def tables(self) -> tuple[EmbeddingTable, EmbeddingTable]:
        """Return the user and item tables."""
        return self.user_table, self.item_table
