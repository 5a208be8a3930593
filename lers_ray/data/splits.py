"""Per-user splits of implicit-feedback pairs, their fingerprint and overlap checks.

Every function here depends only on the *set* of input pairs and the seed, not on their
order: pairs are sorted by ``(user, item)`` before random keys are drawn. So re-saving a file
with its items in another order gives the same split.
"""

from __future__ import annotations

import hashlib

import numpy as np

from lers_ray.data.formats import DataFormatError, LightGCNFile

SPLIT_MARKERS = (b"train", b"valid", b"test")


def sort_unique_pairs(pairs: np.ndarray) -> np.ndarray:
    """Return the distinct rows of an ``(n, 2)`` pair array, sorted by user then item."""
    pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    if len(pairs) == 0:
        return pairs.copy()
    # One int64 key per pair sorts much faster than np.unique(axis=0), and a plain sort beats
    # the hash-based np.unique of numpy 2.x here. Ids are far below 2^31, so keys fit in int64.
    width = int(pairs[:, 1].max()) + 1
    keys = np.sort(pairs[:, 0] * width + pairs[:, 1])
    keep = np.ones(len(keys), dtype=bool)
    keep[1:] = keys[1:] != keys[:-1]
    keys = keys[keep]
    return np.stack([keys // width, keys % width], axis=1)


def fingerprint(train: np.ndarray, valid: np.ndarray, test: np.ndarray) -> str:
    """Return the split fingerprint: the first 16 hex digits of a SHA-256 over the pairs.

    The hash covers, for each split in the order train, valid, test, a marker with the split's
    name and size, then its pairs sorted by ``(user, item)`` as little-endian ``int64``. So it
    changes when any pair changes or moves to another split, and not when pairs are reordered.
    """
    digest = hashlib.sha256()
    for marker, pairs in zip(SPLIT_MARKERS, (train, valid, test)):
        ordered = sort_unique_pairs(pairs)
        digest.update(marker + b":" + str(len(ordered)).encode() + b"\n")
        digest.update(ordered.astype("<i8").tobytes())
    return digest.hexdigest()[:16]


def _round_half_up(values: np.ndarray) -> np.ndarray:
    return np.floor(values + 0.5).astype(np.int64)


def _shuffled_ranks(pairs: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sort ``pairs`` and give each pair a random rank within its user.

    Returns the sorted unique pairs, each pair's rank (0-based, a seeded random permutation
    within the user) and each pair's user degree.
    """
    ordered = sort_unique_pairs(pairs)
    rng = np.random.default_rng(seed)
    keys = rng.random(len(ordered))
    users = ordered[:, 0]
    order = np.lexsort((keys, users))
    ordered = ordered[order]
    users = ordered[:, 0]

    # users is sorted, so each user's pairs form one run starting where the id changes.
    first = np.flatnonzero(np.concatenate(([True], users[1:] != users[:-1])))
    counts = np.diff(np.append(first, len(users)))
    degree = np.repeat(counts, counts)
    rank = np.arange(len(ordered)) - np.repeat(first, counts)
    return ordered, rank, degree


def carve_validation(
    train: np.ndarray, fraction: float = 0.1, seed: int = 2023
) -> tuple[np.ndarray, np.ndarray]:
    """Move a seeded random share of each user's train items to a validation split.

    A user with ``n >= 2`` train items gives ``max(1, round(fraction * n))`` of them to
    validation, rounded half up and capped at ``n - 1`` so the user keeps at least one train
    item. Users with fewer than 2 train items keep all of them in train.

    Args:
        train: ``int64 (n, 2)`` ``(user, item)`` pairs; duplicates are dropped.
        fraction: share of each user's items moved to validation, in ``(0, 1)``.
        seed: seed of the random choice.

    Returns:
        ``(train, valid)``, both sorted by ``(user, item)`` and disjoint.
    """
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"validation fraction {fraction} is outside (0, 1)")
    ordered, rank, degree = _shuffled_ranks(train, seed)
    n_valid = np.minimum(np.maximum(1, _round_half_up(fraction * degree)), degree - 1)
    n_valid[degree < 2] = 0
    is_valid = rank < n_valid
    return sort_unique_pairs(ordered[~is_valid]), sort_unique_pairs(ordered[is_valid])


def random_split(
    pairs: np.ndarray, seed: int, valid_fraction: float = 0.1, test_fraction: float = 0.1
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Split each user's items at random into train, validation and test.

    For a user with ``n >= 3`` items, test gets ``max(1, round(test_fraction * n))`` items and
    validation ``max(1, round(valid_fraction * n))``, each rounded half up, and train the rest.
    Users with 1 or 2 items keep them all in train, because one item cannot go to each split.
    With fractions of 0.1 each, train keeps at least one item: ``2 * round(0.1 n) < n`` for
    ``n >= 3``.

    Returns:
        ``(train, valid, test)``, each sorted by ``(user, item)``, pairwise disjoint.
    """
    if valid_fraction <= 0 or test_fraction <= 0 or valid_fraction + test_fraction >= 1:
        raise ValueError(
            f"fractions valid={valid_fraction}, test={test_fraction} must be positive "
            "and sum to less than 1"
        )
    ordered, rank, degree = _shuffled_ranks(pairs, seed)
    small = degree < 3
    n_test = np.maximum(1, _round_half_up(test_fraction * degree))
    n_valid = np.maximum(1, _round_half_up(valid_fraction * degree))
    n_test[small] = 0
    n_valid[small] = 0

    is_test = rank < n_test
    is_valid = ~is_test & (rank < n_test + n_valid)
    is_train = ~is_test & ~is_valid
    return (
        sort_unique_pairs(ordered[is_train]),
        sort_unique_pairs(ordered[is_valid]),
        sort_unique_pairs(ordered[is_test]),
    )


def random_split_80_10_10(
    pairs: np.ndarray, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Split each user's items 80/10/10 at random; see :func:`random_split` for the rounding."""
    return random_split(pairs, seed, valid_fraction=0.1, test_fraction=0.1)


def overlapping_pairs(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """Return the pairs that occur in both arrays, sorted by ``(user, item)``."""
    first = sort_unique_pairs(first)
    second = sort_unique_pairs(second)
    if len(first) == 0 or len(second) == 0:
        return np.empty((0, 2), dtype=np.int64)
    width = int(max(first[:, 1].max(), second[:, 1].max())) + 1
    first_keys = first[:, 0] * width + first[:, 1]
    second_keys = second[:, 0] * width + second[:, 1]
    # Both key arrays are sorted and unique; a binary search beats np.isin, which re-sorts.
    index = np.minimum(np.searchsorted(first_keys, second_keys), len(first_keys) - 1)
    return second[first_keys[index] == second_keys]


def ensure_disjoint(earlier: np.ndarray, later: LightGCNFile, earlier_label: str) -> None:
    """Raise if a pair of the file ``later`` also occurs in ``earlier`` (e.g. test vs train).

    Raises:
        DataFormatError: naming ``later``'s file, the line of the first shared pair and
            the pair.
    """
    shared = overlapping_pairs(earlier, later.pairs)
    if len(shared) == 0:
        return
    user, item = (int(value) for value in shared[0])
    raise DataFormatError(
        f"{later.path}: line {later.line_of_pair(user, item)}: pair (user {user}, item {item}) is also "
        f"in {earlier_label}, and {len(shared)} pair(s) in all are shared; held-out pairs must "
        f"not appear in {earlier_label}, so remove them from one of the two files"
    )
