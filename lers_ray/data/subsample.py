"""Seeded user subsampling for quick runs on a slice of a dataset."""

from __future__ import annotations

import logging

import numpy as np

from lers_ray.config import ConfigError

logger = logging.getLogger(__name__)


def subsample_users(
    n_users: int,
    n_items: int,
    train: np.ndarray,
    held_out: list[np.ndarray],
    n_keep: int,
    seed: int,
) -> tuple[int, int, np.ndarray, list[np.ndarray]]:
    """Keep a seeded random subset of users and the items they have in train, reindexed.

    ``n_keep`` users are drawn without replacement from ``0..n_users-1``. The item catalogue
    becomes the items those users have in ``train``. Pairs of other users, and held-out pairs
    with items outside that catalogue, are dropped. Kept users and items get contiguous new
    ids in their old order. For data that is split later, pass all pairs as ``train`` and an
    empty ``held_out``.

    Returns:
        ``(n_users, n_items, train, held_out)`` after subsampling. When ``n_keep >= n_users``
        the input is returned unchanged.

    Raises:
        ConfigError: if ``n_keep`` is below 1.
    """
    if n_keep < 1:
        raise ConfigError(f"dataset.subsample_users: {n_keep} must be at least 1 (or null for all)")
    if n_keep >= n_users:
        logger.info("subsample_users=%d keeps all %d users", n_keep, n_users)
        return n_users, n_items, train, held_out

    rng = np.random.default_rng(seed)
    users = np.sort(rng.choice(n_users, size=n_keep, replace=False))
    train = train[np.isin(train[:, 0], users)]
    items = np.unique(train[:, 1])

    def reindex(pairs: np.ndarray) -> np.ndarray:
        pairs = pairs[np.isin(pairs[:, 0], users) & np.isin(pairs[:, 1], items)]
        return np.stack(
            [np.searchsorted(users, pairs[:, 0]), np.searchsorted(items, pairs[:, 1])], axis=1
        ).astype(np.int64)

    logger.info(
        "subsampled %d of %d users (seed %d), keeping %d items", n_keep, n_users, seed, len(items)
    )
    return n_keep, len(items), reindex(train), [reindex(pairs) for pairs in held_out]
