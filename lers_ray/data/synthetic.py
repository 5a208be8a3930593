"""Seeded synthetic implicit feedback with power-law (Zipf) user and item degrees."""

from __future__ import annotations

import logging

import numpy as np

from lers_ray.config import ConfigError, SyntheticConfig

logger = logging.getLogger(__name__)

MIN_ITEMS_PER_USER = 3
"""Each user gets at least this many items, so the 80/10/10 split gives it a test item."""


def max_items_per_user(n_items: int) -> int:
    """Return the largest item count a user may get: half the catalogue, rounded down.

    The cap leaves every user non-interacted items to draw BPR negatives from; without it a
    Zipf-popular user would get the whole catalogue.
    """
    return n_items // 2


_KEYS_PER_CHUNK = 2_000_000
"""Bound on the random keys held at once while sampling (about 16 MB of float64)."""


def _validate(config: SyntheticConfig) -> None:
    if config.n_users < 1:
        raise ConfigError(f"dataset.synthetic.n_users: {config.n_users} must be at least 1")
    if config.n_items < 2 * MIN_ITEMS_PER_USER:
        raise ConfigError(
            f"dataset.synthetic.n_items: {config.n_items} must be at least "
            f"{2 * MIN_ITEMS_PER_USER}, because each user needs {MIN_ITEMS_PER_USER} items "
            "and at most half the items go to one user"
        )
    low = MIN_ITEMS_PER_USER * config.n_users
    high = config.n_users * max_items_per_user(config.n_items)
    if not low <= config.n_interactions <= high:
        raise ConfigError(
            f"dataset.synthetic.n_interactions: {config.n_interactions} is outside "
            f"[{low}, {high}]; every user needs {MIN_ITEMS_PER_USER} items and gets at most "
            "half of the items, so pick a value in that range"
        )
    if config.user_exponent < 0 or config.item_exponent < 0:
        raise ConfigError("dataset.synthetic: user_exponent and item_exponent must be >= 0")


def _zipf_weights(size: int, exponent: float, rng: np.random.Generator) -> np.ndarray:
    """Return probabilities ``rank ** -exponent`` (normalised), assigned to ids in random order."""
    weights = np.arange(1, size + 1, dtype=np.float64) ** -exponent
    weights /= weights.sum()
    return rng.permutation(weights)


def _user_degrees(
    config: SyntheticConfig, user_p: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """Draw each user's item count: the minimum plus a multinomial share of the rest.

    A count above :func:`max_items_per_user` is cut to it and the excess is drawn again among
    the users below the cap, so the counts sum to ``n_interactions`` exactly.
    """
    cap = max_items_per_user(config.n_items)
    degrees = np.full(config.n_users, MIN_ITEMS_PER_USER, dtype=np.int64)
    remaining = config.n_interactions - int(degrees.sum())
    while remaining > 0:
        room = degrees < cap
        p = np.where(room, user_p, 0.0)
        degrees += rng.multinomial(remaining, p / p.sum())
        excess = np.maximum(degrees - cap, 0)
        degrees -= excess
        remaining = int(excess.sum())
    return degrees


def generate_synthetic_pairs(config: SyntheticConfig) -> np.ndarray:
    """Generate unique ``(user, item)`` pairs with power-law user and item degrees.

    User activity and item popularity follow Zipf weights ``rank ** -exponent`` over a random
    assignment of ranks to ids. Each user draws its item count from the user weights (at least
    3, at most half the items), then that many distinct items from the item weights, without
    replacement (Gumbel top-k). Ids are ``0..n_users-1`` and ``0..n_items-1``. Every user has items, but an
    unpopular item may have none.

    Returns:
        ``int64 (n_interactions, 2)`` pairs sorted by ``(user, item)``.

    Raises:
        ConfigError: if the sizes cannot be met.
    """
    _validate(config)
    rng = np.random.default_rng(config.seed)
    user_p = _zipf_weights(config.n_users, config.user_exponent, rng)
    item_log_p = np.log(_zipf_weights(config.n_items, config.item_exponent, rng))
    degrees = _user_degrees(config, user_p, rng)

    chunk = max(1, _KEYS_PER_CHUNK // config.n_items)
    item_parts = []
    for start in range(0, config.n_users, chunk):
        block = degrees[start : start + chunk]
        keys = item_log_p + rng.gumbel(size=(len(block), config.n_items))
        top = np.argsort(-keys, axis=1)
        take = np.arange(config.n_items) < block[:, None]
        item_parts.append(top[take])

    users = np.repeat(np.arange(config.n_users, dtype=np.int64), degrees)
    pairs = np.stack([users, np.concatenate(item_parts).astype(np.int64)], axis=1)
    order = np.lexsort((pairs[:, 1], pairs[:, 0]))
    logger.debug("generated %d synthetic pairs from %s", len(pairs), config)
    return pairs[order]
