from __future__ import annotations

import numpy as np
import pytest

from lers_ray.data.dataset import InteractionData


def clustered_data(
    n_users: int = 120, n_items: int = 80, n_clusters: int = 4, per_user: int = 12, seed: int = 0
) -> InteractionData:
    """Users of cluster c interact mostly with items of cluster c, so a model can learn it.

    Each user's last two sampled items become one validation and one test pair.
    """
    rng = np.random.default_rng(seed)
    train, valid, test = [], [], []
    items_by_cluster = [np.arange(c, n_items, n_clusters) for c in range(n_clusters)]
    for user in range(n_users):
        own = items_by_cluster[user % n_clusters]
        chosen = rng.choice(own, size=per_user, replace=False)
        noise = rng.integers(0, n_items)
        items = np.unique(np.append(chosen, noise))
        rng.shuffle(items)
        test.append((user, items[0]))
        valid.append((user, items[1]))
        train.extend((user, item) for item in items[2:])
    return InteractionData(
        name="clustered",
        n_users=n_users,
        n_items=n_items,
        train=np.array(train, dtype=np.int64),
        valid=np.array(valid, dtype=np.int64),
        test=np.array(test, dtype=np.int64),
        fingerprint=f"clustered-{seed}",
        source="tests/training/conftest.py",
    )


@pytest.fixture(scope="session")
def data() -> InteractionData:
    return clustered_data()
