"""The in-memory form of an implicit-feedback dataset with its train/validation/test split."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class InteractionData:
    """A split implicit-feedback dataset with 0-based contiguous ids.

    Each split is an ``int64`` array of shape ``(n, 2)`` holding unique ``(user, item)`` pairs.
    The three splits are disjoint. ``fingerprint`` is a hash of the split's pairs, logged with
    every run so that two results can be checked to come from the same split.
    """

    name: str
    n_users: int
    n_items: int
    train: np.ndarray
    valid: np.ndarray
    test: np.ndarray
    fingerprint: str
    source: str = ""
    """Origin of the data (files, URL or generator settings), for logs and tags."""

    @property
    def n_interactions(self) -> int:
        """Number of (user, item) pairs over all three splits."""
        return int(len(self.train) + len(self.valid) + len(self.test))

    @property
    def density(self) -> float:
        """Share of the user-item matrix that is observed, over all splits."""
        return self.n_interactions / float(self.n_users * self.n_items)
