"""Summary counts of a loaded dataset, for logs, tags and ``lers-ray data stats``."""

from __future__ import annotations

from typing import Any

import numpy as np

from lers_ray.data.dataset import InteractionData


def dataset_stats(data: InteractionData) -> dict[str, Any]:
    """Return counts and density of ``data`` as a flat dict of builtins.

    Keys: ``name``, ``users``, ``items``, ``interactions`` (all splits), ``train``, ``valid``,
    ``test`` (pairs per split), ``users_with_test`` (users with at least one test pair, the
    users that test metrics average over), ``density`` (interactions / (users * items)) and
    ``fingerprint``.
    """
    return {
        "name": data.name,
        "users": data.n_users,
        "items": data.n_items,
        "interactions": data.n_interactions,
        "train": len(data.train),
        "valid": len(data.valid),
        "test": len(data.test),
        "users_with_test": len(np.unique(data.test[:, 0])) if len(data.test) else 0,
        "density": data.density if data.n_users and data.n_items else 0.0,
        "fingerprint": data.fingerprint,
    }
