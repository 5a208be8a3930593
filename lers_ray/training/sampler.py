"""BPR triples: every train pair once per epoch, in seeded shuffled order, with negatives.

Negatives are drawn uniformly from all items and then rejected where they are train
positives of the user, redrawing only the rejected ones until none is left. (The reference
LightGCN code samples uniformly without this rejection.) A user who has every item as a
positive has no valid negative: after ``max_redraws`` rounds those draws are kept as they are.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import numpy as np
import torch

logger = logging.getLogger(__name__)


class BPRSampler:
    """Seeded epoch iterator over ``(users [B], pos [B], neg [B, num_negatives])`` batches.

    Args:
        train: int ``[n, 2]`` unique ``(user, item)`` train pairs.
        n_items: number of items negatives are drawn from.
        batch_size: triples per batch (the last batch of an epoch may be smaller).
        num_negatives: negatives per positive pair.
        rng: numpy generator that fixes the order and the negatives of every epoch.
    """

    def __init__(
        self,
        train: np.ndarray,
        n_items: int,
        batch_size: int,
        num_negatives: int,
        rng: np.random.Generator,
        max_redraws: int = 100,
    ) -> None:
        if batch_size <= 0 or num_negatives <= 0:
            raise ValueError(
                f"batch_size ({batch_size}) and num_negatives ({num_negatives}) must be positive"
            )
        self.train = np.asarray(train, dtype=np.int64).reshape(-1, 2)
        self.n_items = int(n_items)
        self.batch_size = int(batch_size)
        self.num_negatives = int(num_negatives)
        self.rng = rng
        self.max_redraws = int(max_redraws)
        self.positive_keys = np.sort(self.train[:, 0] * self.n_items + self.train[:, 1])

    def __len__(self) -> int:
        """Number of batches per epoch."""
        return (len(self.train) + self.batch_size - 1) // self.batch_size

    def _is_positive(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        keys = users * self.n_items + items
        where = np.searchsorted(self.positive_keys, keys)
        where = np.minimum(where, len(self.positive_keys) - 1)
        return self.positive_keys[where] == keys

    def sample_negatives(self, users: np.ndarray) -> np.ndarray:
        """Draw ``[len(users), num_negatives]`` negatives that are not train positives."""
        shape = (len(users), self.num_negatives)
        negatives = self.rng.integers(0, self.n_items, size=shape)
        if len(self.positive_keys) == 0:
            return negatives
        user_grid = np.broadcast_to(users[:, None], shape)
        bad = self._is_positive(user_grid, negatives)
        for _ in range(self.max_redraws):
            count = int(bad.sum())
            if count == 0:
                break
            negatives[bad] = self.rng.integers(0, self.n_items, size=count)
            bad[bad] = self._is_positive(user_grid[bad], negatives[bad])
        else:
            logger.warning(
                "%d negatives are still train positives after %d redraws (users with almost "
                "every item as a positive); keeping them",
                int(bad.sum()),
                self.max_redraws,
            )
        return negatives

    def epoch(self) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """Yield the batches of one epoch: users ``[B]``, pos ``[B]``, neg ``[B, N]`` (int64)."""
        order = self.rng.permutation(len(self.train))
        users = self.train[order, 0]
        positives = self.train[order, 1]
        negatives = self.sample_negatives(users)
        users_t = torch.from_numpy(users)
        positives_t = torch.from_numpy(positives)
        negatives_t = torch.from_numpy(negatives)
        for start in range(0, len(order), self.batch_size):
            stop = start + self.batch_size
            yield users_t[start:stop], positives_t[start:stop], negatives_t[start:stop]
