"""Per-user splits, the split fingerprint and overlap checks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from lers_ray.data.formats import DataFormatError, read_lightgcn_file
from lers_ray.data.splits import (
    carve_validation,
    ensure_disjoint,
    fingerprint,
    overlapping_pairs,
    random_split,
    random_split_80_10_10,
    sort_unique_pairs,
)


def _pairs_with_degrees(degrees: list[int]) -> np.ndarray:
    """Return pairs where user u has items 0..degrees[u]-1."""
    return np.array(
        [(user, item) for user, degree in enumerate(degrees) for item in range(degree)],
        dtype=np.int64,
    ).reshape(-1, 2)


def _degree(pairs: np.ndarray, user: int) -> int:
    return int((pairs[:, 0] == user).sum())


def _as_set(pairs: np.ndarray) -> set[tuple[int, int]]:
    return {(int(user), int(item)) for user, item in pairs}


def test_sort_unique_pairs_drops_repeats() -> None:
    pairs = np.array([[2, 1], [0, 5], [2, 1], [0, 3]])

    assert sort_unique_pairs(pairs).tolist() == [[0, 3], [0, 5], [2, 1]]


@pytest.mark.parametrize(
    ("degree", "expected_valid"),
    [(0, 0), (1, 0), (2, 1), (5, 1), (14, 1), (15, 2), (30, 3), (100, 10)],
)
def test_carve_validation_count_per_user(degree: int, expected_valid: int) -> None:
    pairs = _pairs_with_degrees([degree, 20])

    train, valid = carve_validation(pairs, fraction=0.1, seed=1)

    assert _degree(valid, 0) == expected_valid
    assert _degree(train, 0) == degree - expected_valid
    assert _degree(valid, 1) == 2


def test_carve_validation_keeps_one_train_item() -> None:
    pairs = _pairs_with_degrees([2, 3, 10])

    train, _ = carve_validation(pairs, fraction=0.9, seed=0)

    for user in range(3):
        assert _degree(train, user) == 1


def test_carve_validation_is_disjoint_and_complete() -> None:
    pairs = _pairs_with_degrees([1, 2, 7, 33, 120])

    train, valid = carve_validation(pairs, fraction=0.1, seed=5)

    assert len(overlapping_pairs(train, valid)) == 0
    assert _as_set(train) | _as_set(valid) == _as_set(pairs)


def test_carve_validation_seeded_and_order_free() -> None:
    pairs = _pairs_with_degrees([40, 50, 60])
    shuffled = pairs[np.random.default_rng(0).permutation(len(pairs))]

    first = carve_validation(pairs, 0.1, seed=3)
    again = carve_validation(shuffled, 0.1, seed=3)
    other_seed = carve_validation(pairs, 0.1, seed=4)

    assert np.array_equal(first[1], again[1])
    assert np.array_equal(first[0], again[0])
    assert not np.array_equal(first[1], other_seed[1])


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.1])
def test_carve_validation_rejects_bad_fraction(fraction: float) -> None:
    with pytest.raises(ValueError, match="outside"):
        carve_validation(_pairs_with_degrees([5]), fraction, seed=0)


@pytest.mark.parametrize(
    ("degree", "expected"),
    [
        (1, (1, 0, 0)),
        (2, (2, 0, 0)),
        (3, (1, 1, 1)),
        (10, (8, 1, 1)),
        (15, (11, 2, 2)),
        (20, (16, 2, 2)),
        (100, (80, 10, 10)),
    ],
)
def test_random_split_counts_per_user(degree: int, expected: tuple[int, int, int]) -> None:
    train, valid, test = random_split_80_10_10(_pairs_with_degrees([degree]), seed=0)

    assert (_degree(train, 0), _degree(valid, 0), _degree(test, 0)) == expected


def test_random_split_is_disjoint_and_complete() -> None:
    pairs = _pairs_with_degrees([3, 4, 9, 27, 81])

    train, valid, test = random_split_80_10_10(pairs, seed=11)

    assert len(overlapping_pairs(train, valid)) == 0
    assert len(overlapping_pairs(train, test)) == 0
    assert len(overlapping_pairs(valid, test)) == 0
    assert _as_set(train) | _as_set(valid) | _as_set(test) == _as_set(pairs)


def test_random_split_seeded() -> None:
    pairs = _pairs_with_degrees([50] * 20)

    first = random_split_80_10_10(pairs, seed=7)
    again = random_split_80_10_10(pairs, seed=7)
    other_seed = random_split_80_10_10(pairs, seed=8)

    for part, part_again in zip(first, again):
        assert np.array_equal(part, part_again)
    assert not np.array_equal(first[2], other_seed[2])


def test_random_split_rejects_bad_fractions() -> None:
    with pytest.raises(ValueError, match="sum to less than 1"):
        random_split(_pairs_with_degrees([5]), seed=0, valid_fraction=0.5, test_fraction=0.5)


def test_fingerprint_stable_and_sensitive() -> None:
    train, valid, test = random_split_80_10_10(_pairs_with_degrees([10, 20, 30]), seed=0)
    base = fingerprint(train, valid, test)

    reordered = fingerprint(train[::-1], valid[::-1], test[::-1])
    changed_item = train.copy()
    changed_item[0, 1] = 999
    moved = fingerprint(train[1:], np.concatenate([valid, train[:1]]), test)

    assert len(base) == 16
    assert int(base, 16) >= 0
    assert reordered == base
    assert fingerprint(changed_item, valid, test) != base
    assert moved != base
    assert fingerprint(valid, train, test) != base


def test_ensure_disjoint_names_test_file_line_and_pair(tmp_path: Path, write_lines) -> None:
    test_path = write_lines(tmp_path / "test.txt", ["0 9", "1 4", "2 8 5"])
    train = np.array([[0, 1], [2, 2], [2, 5]])

    with pytest.raises(DataFormatError) as caught:
        ensure_disjoint(train, read_lightgcn_file(test_path), "the train file train.txt")

    message = str(caught.value)
    assert message.startswith(f"{test_path}: line 3:")
    assert "(user 2, item 5)" in message
    assert "train.txt" in message


def test_ensure_disjoint_accepts_disjoint(tmp_path: Path, write_lines) -> None:
    test_path = write_lines(tmp_path / "test.txt", ["0 9", "1"])

    ensure_disjoint(np.array([[0, 1]]), read_lightgcn_file(test_path), "train")
