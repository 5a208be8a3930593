"""Seeded power-law synthetic data."""

from __future__ import annotations

import numpy as np
import pytest

from lers_ray.config import ConfigError, SyntheticConfig
from lers_ray.data.synthetic import generate_synthetic_pairs


def test_default_sizes_and_uniqueness() -> None:
    config = SyntheticConfig()

    pairs = generate_synthetic_pairs(config)

    assert pairs.shape == (config.n_interactions, 2)
    assert pairs.dtype == np.int64
    assert len(np.unique(pairs, axis=0)) == len(pairs)
    assert pairs[:, 0].min() == 0
    assert pairs[:, 0].max() == config.n_users - 1
    assert pairs[:, 1].min() >= 0
    assert pairs[:, 1].max() < config.n_items


def test_every_user_has_three_items() -> None:
    pairs = generate_synthetic_pairs(SyntheticConfig(n_users=500, n_interactions=1600))

    degrees = np.bincount(pairs[:, 0], minlength=500)

    assert degrees.min() >= 3
    assert degrees.sum() == 1600


@pytest.mark.parametrize("seed", [0, 1, 42])
def test_deterministic_for_seed(seed: int) -> None:
    first = generate_synthetic_pairs(SyntheticConfig(seed=seed))
    again = generate_synthetic_pairs(SyntheticConfig(seed=seed))
    other = generate_synthetic_pairs(SyntheticConfig(seed=seed + 100))

    assert np.array_equal(first, again)
    assert not np.array_equal(first, other)


def test_item_popularity_is_skewed() -> None:
    config = SyntheticConfig()
    pairs = generate_synthetic_pairs(config)

    counts = np.sort(np.bincount(pairs[:, 1], minlength=config.n_items))[::-1]
    top_share = counts[: config.n_items // 10].sum() / counts.sum()
    uniform = generate_synthetic_pairs(SyntheticConfig(item_exponent=0.0, user_exponent=0.0))
    uniform_counts = np.sort(np.bincount(uniform[:, 1], minlength=config.n_items))[::-1]
    uniform_share = uniform_counts[: config.n_items // 10].sum() / uniform_counts.sum()

    assert top_share > 0.4
    assert uniform_share < 0.2


def test_user_activity_is_skewed() -> None:
    config = SyntheticConfig()
    degrees = np.sort(np.bincount(generate_synthetic_pairs(config)[:, 0]))[::-1]

    assert degrees[: config.n_users // 10].sum() / degrees.sum() > 0.3


def test_user_degree_capped_at_half_items() -> None:
    config = SyntheticConfig(n_users=10, n_items=20, n_interactions=95, user_exponent=2.0)

    pairs = generate_synthetic_pairs(config)

    assert len(pairs) == 95
    assert np.bincount(pairs[:, 0]).max() == 10
    assert np.bincount(generate_synthetic_pairs(SyntheticConfig())[:, 0]).max() <= 750


@pytest.mark.parametrize(
    ("changes", "pattern"),
    [
        ({"n_users": 0}, "n_users"),
        ({"n_items": 5}, "n_items"),
        ({"n_users": 100, "n_interactions": 299}, r"outside \[300, "),
        ({"n_users": 10, "n_items": 10, "n_interactions": 51}, r"outside \[30, 50\]"),
        ({"item_exponent": -1.0}, "exponent"),
    ],
)
def test_invalid_sizes_raise_config_error(changes: dict, pattern: str) -> None:
    with pytest.raises(ConfigError, match=pattern):
        generate_synthetic_pairs(SyntheticConfig(**changes))
