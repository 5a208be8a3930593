"""Full-ranking Recall@K and NDCG@K over all items.

Items the user has in the excluded splits (train, and validation when evaluating test) are
masked to ``-inf`` before the top-K. ``Recall@K = hits / |held-out items of the user|`` (not
capped at K), ``NDCG@K`` uses binary gains with the ideal DCG over ``min(|held-out|, K)``
positions, and users without held-out items are skipped. Scores are computed in user batches
into one preallocated buffer.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import torch

logger = logging.getLogger(__name__)


def _group_by_user(pairs: np.ndarray, users: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """Group ``(user, item)`` pairs by the position of their user in sorted ``users``.

    Pairs of users not in ``users`` are dropped. Returns ``(position, item)`` sorted by position.
    """
    pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    position = np.searchsorted(users, pairs[:, 0])
    position = np.minimum(position, len(users) - 1)
    keep = users[position] == pairs[:, 0]
    position, items = position[keep], pairs[keep, 1]
    order = np.argsort(position, kind="stable")
    return torch.from_numpy(position[order]), torch.from_numpy(items[order])


class RankingEvaluator:
    """Full-ranking evaluation of one held-out split, prepared once and reused every epoch.

    Args:
        heldout: int ``[n, 2]`` ``(user, item)`` pairs to find (validation or test).
        exclude: pair arrays whose items are masked for their users (train; plus validation
            when evaluating test).
        n_items: number of items.
        ks: cut-offs for Recall@K and NDCG@K.
        batch_size: users scored per batch.
    """

    def __init__(
        self,
        heldout: np.ndarray,
        exclude: Sequence[np.ndarray],
        n_items: int,
        ks: Sequence[int],
        batch_size: int = 4096,
    ) -> None:
        if not ks or min(ks) <= 0:
            raise ValueError(f"ks must be positive cut-offs, got {list(ks)}")
        if batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        self.n_items = int(n_items)
        self.ks = sorted({int(k) for k in ks})
        self.batch_size = int(batch_size)
        heldout = np.asarray(heldout, dtype=np.int64).reshape(-1, 2)
        self.users = np.unique(heldout[:, 0])
        users_tensor = torch.from_numpy(self.users)
        self.users_tensor = users_tensor

        heldout_pos, heldout_items = _group_by_user(heldout, self.users)
        counts = torch.bincount(heldout_pos, minlength=len(self.users))
        self.heldout_counts = counts.to(torch.float64)
        # Keys position * n_items + item, sorted, to test top-K hits with searchsorted.
        self.heldout_keys = torch.sort(heldout_pos * self.n_items + heldout_items).values

        if exclude:
            excluded = np.concatenate(
                [np.asarray(p, dtype=np.int64).reshape(-1, 2) for p in exclude]
            )
        else:
            excluded = np.empty((0, 2), dtype=np.int64)
        self.exclude_pos, self.exclude_items = _group_by_user(excluded, self.users)
        self.exclude_ptr = torch.searchsorted(self.exclude_pos, torch.arange(len(self.users) + 1))

        self.max_k = min(max(self.ks), self.n_items)
        discount = 1.0 / torch.log2(torch.arange(2, self.max_k + 2, dtype=torch.float64))
        self.discount = discount
        self.ideal_dcg = torch.cumsum(discount, 0)

    @property
    def n_users(self) -> int:
        """Number of users with held-out items (the users that are evaluated)."""
        return len(self.users)

    @torch.no_grad()
    def evaluate(self, user_emb: torch.Tensor, item_emb: torch.Tensor) -> dict[str, float]:
        """Score every evaluated user against every item and average the metrics.

        Args:
            user_emb: ``[U, D]`` final user embeddings (all users).
            item_emb: ``[I, D]`` final item embeddings.

        Returns:
            ``{"recall_K": ..., "ndcg_K": ...}`` for every K, averaged over users with held-out
            items; all zeros when there are none.
        """
        sums = {f"{name}_{k}": 0.0 for k in self.ks for name in ("recall", "ndcg")}
        if self.n_users == 0:
            logger.warning("no users with held-out items; all metrics are 0")
            return sums
        item_t = item_emb.detach().t().contiguous()
        user_emb = user_emb.detach()
        batch = min(self.batch_size, self.n_users)
        buffer = torch.empty(batch, self.n_items, dtype=item_t.dtype)
        recall_sum = torch.zeros(len(self.ks), dtype=torch.float64)
        ndcg_sum = torch.zeros(len(self.ks), dtype=torch.float64)
        for start in range(0, self.n_users, batch):
            stop = min(start + batch, self.n_users)
            scores = buffer[: stop - start]
            torch.matmul(user_emb[self.users_tensor[start:stop]], item_t, out=scores)
            lo, hi = int(self.exclude_ptr[start]), int(self.exclude_ptr[stop])
            scores.index_put_(
                (self.exclude_pos[lo:hi] - start, self.exclude_items[lo:hi]),
                torch.tensor(-torch.inf, dtype=scores.dtype),
            )
            top = torch.topk(scores, self.max_k, dim=1, sorted=True).indices
            positions = torch.arange(start, stop).unsqueeze(1)
            hits = self._is_heldout(positions * self.n_items + top).to(torch.float64)
            counts = self.heldout_counts[start:stop]
            for index, k in enumerate(self.ks):
                k_eff = min(k, self.max_k)
                hits_k = hits[:, :k_eff]
                recall_sum[index] += (hits_k.sum(1) / counts).sum()
                dcg = hits_k @ self.discount[:k_eff]
                ideal = self.ideal_dcg[torch.clamp(counts.long(), max=k_eff) - 1]
                ndcg_sum[index] += (dcg / ideal).sum()
        for index, k in enumerate(self.ks):
            sums[f"recall_{k}"] = float(recall_sum[index]) / self.n_users
            sums[f"ndcg_{k}"] = float(ndcg_sum[index]) / self.n_users
        return sums

    def _is_heldout(self, keys: torch.Tensor) -> torch.Tensor:
        """Return a bool tensor of ``keys``' shape: whether each key is a held-out pair."""
        if self.heldout_keys.numel() == 0:
            return torch.zeros_like(keys, dtype=torch.bool)
        where = torch.searchsorted(self.heldout_keys, keys)
        where = torch.clamp(where, max=self.heldout_keys.numel() - 1)
        return self.heldout_keys[where] == keys
