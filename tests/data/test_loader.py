"""load_dataset on the real datasets, on small custom folders, and with its Parquet cache."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from lers_ray.config import ConfigError, DatasetConfig, SyntheticConfig
from lers_ray.data import DataFormatError, InteractionData, load_dataset
from lers_ray.data.splits import fingerprint, overlapping_pairs


def _assert_consistent(data: InteractionData) -> None:
    """Check the InteractionData invariants: ids in range, unique pairs, disjoint splits."""
    for part in (data.train, data.valid, data.test):
        assert part.dtype == np.int64
        assert part.ndim == 2
        assert part.shape[1] == 2
        if len(part):
            assert part[:, 0].min() >= 0
            assert part[:, 0].max() < data.n_users
            assert part[:, 1].min() >= 0
            assert part[:, 1].max() < data.n_items
            assert len(np.unique(part, axis=0)) == len(part)
    assert len(overlapping_pairs(data.train, data.valid)) == 0
    assert len(overlapping_pairs(data.train, data.test)) == 0
    assert len(overlapping_pairs(data.valid, data.test)) == 0
    assert data.fingerprint == fingerprint(data.train, data.valid, data.test)


def test_ml100k_counts(data_dir: Path, session_cache_dir: Path) -> None:
    data = load_dataset(DatasetConfig(name="ml-100k"), data_dir, session_cache_dir)

    assert data.n_users == 943
    assert data.n_items == 1682
    assert data.n_interactions == 55_375
    assert len(data.valid) > 0
    assert len(data.test) > 0
    assert len(data.train) > 0.75 * data.n_interactions
    _assert_consistent(data)


def test_ml100k_threshold_changes_positives(data_dir: Path, session_cache_dir: Path) -> None:
    config = DatasetConfig(name="ml-100k", rating_threshold=3.0)

    data = load_dataset(config, data_dir, session_cache_dir)

    assert data.n_interactions == 34_174 + 21_201 + 27_145
    assert (data.n_users, data.n_items) == (943, 1682)


def test_gowalla_counts(gowalla: InteractionData) -> None:
    assert gowalla.n_users == 29_858
    assert gowalla.n_items == 40_981
    assert len(gowalla.train) + len(gowalla.valid) == 810_128
    assert len(gowalla.test) == 217_242
    _assert_consistent(gowalla)


def test_gowalla_valid_carved_per_user(gowalla: InteractionData) -> None:
    train_degree = np.bincount(gowalla.train[:, 0], minlength=gowalla.n_users)
    valid_degree = np.bincount(gowalla.valid[:, 0], minlength=gowalla.n_users)
    total = train_degree + valid_degree
    expected = np.maximum(1, np.floor(0.1 * total + 0.5)).astype(int)

    assert np.array_equal(valid_degree, expected)


def test_ml1m_uses_given_valid(data_dir: Path, session_cache_dir: Path) -> None:
    data = load_dataset(DatasetConfig(name="ml-1m"), data_dir, session_cache_dir)

    assert (data.n_users, data.n_items) == (6_039, 3_628)
    assert len(data.train) == 590_733
    assert len(data.valid) == 80_897
    assert len(data.test) == 164_848
    _assert_consistent(data)


def test_yelp2018_missing_train_is_explained(data_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(DataFormatError) as caught:
        load_dataset(DatasetConfig(name="yelp2018"), data_dir, tmp_path)

    message = str(caught.value)
    assert str(data_dir / "yelp2018" / "train.txt") in message
    assert "file not found" in message
    assert "lers-ray data fetch yelp2018" in message


def test_subsample_users_reindexes(data_dir: Path, session_cache_dir: Path) -> None:
    config = DatasetConfig(name="gowalla", subsample_users=300)

    data = load_dataset(config, data_dir, session_cache_dir)
    again = load_dataset(config, data_dir, session_cache_dir)

    assert data.n_users == 300
    assert data.n_items == len(np.unique(np.concatenate([data.train, data.valid])[:, 1]))
    assert data.n_items < 40_981
    assert again.fingerprint == data.fingerprint
    _assert_consistent(data)


def test_subsample_changes_fingerprint(data_dir: Path, session_cache_dir: Path) -> None:
    small = load_dataset(
        DatasetConfig(name="ml-100k", subsample_users=100), data_dir, session_cache_dir
    )
    full = load_dataset(DatasetConfig(name="ml-100k"), data_dir, session_cache_dir)

    assert small.n_users == 100
    assert small.fingerprint != full.fingerprint


def test_subsample_users_rejects_zero() -> None:
    with pytest.raises(ConfigError, match="subsample_users"):
        load_dataset(DatasetConfig(name="synthetic", subsample_users=0))


def test_synthetic_loads_without_files() -> None:
    config = DatasetConfig(
        name="synthetic", synthetic=SyntheticConfig(n_users=50, n_items=80, n_interactions=600)
    )

    data = load_dataset(config)

    assert (data.n_users, data.n_items, data.n_interactions) == (50, 80, 600)
    assert data.source.startswith("synthetic:")
    _assert_consistent(data)


def test_unknown_name_lists_choices(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown dataset 'netflix'.*gowalla"):
        load_dataset(DatasetConfig(name="netflix"), tmp_path, tmp_path)


def test_custom_lightgcn_with_valid_file(tmp_path: Path, write_lines) -> None:
    folder = tmp_path / "mine"
    write_lines(folder / "train.txt", ["0 0 1 2", "1 2 3", "2 4"])
    write_lines(folder / "valid.txt", ["0 3", "1 0"])
    write_lines(folder / "test.txt", ["0 4", "1 1", "3"])
    config = DatasetConfig(name="mine", path=str(folder), format="lightgcn")

    data = load_dataset(config, cache_dir=tmp_path / "cache")

    assert (data.n_users, data.n_items) == (4, 5)
    assert data.valid.tolist() == [[0, 3], [1, 0]]
    assert data.test.tolist() == [[0, 4], [1, 1]]
    assert len(data.train) == 6


def test_custom_lightgcn_carves_without_valid(tmp_path: Path, write_lines) -> None:
    folder = tmp_path / "mine"
    write_lines(folder / "train.txt", ["0 0 1 2 3 4", "1 2"])
    write_lines(folder / "test.txt", ["0 5", "1 3"])
    config = DatasetConfig(name="mine", path=str(folder))

    data = load_dataset(config, cache_dir=tmp_path / "cache")

    assert len(data.valid) == 1
    assert data.valid[0, 0] == 0
    assert len(data.train) == 5


def test_custom_movielens_detected(tmp_path: Path, write_lines) -> None:
    rows = [f"{user}\t{item}\t5\t0" for user in (1, 2) for item in range(1, 11)]
    folder = tmp_path / "ratings"
    write_lines(folder / "u.data", rows)

    data = load_dataset(DatasetConfig(name="r", path=str(folder)), cache_dir=tmp_path / "c")

    assert (data.n_users, data.n_items) == (2, 10)
    assert (len(data.train), len(data.valid), len(data.test)) == (16, 2, 2)


def test_custom_folder_without_layout(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="neither u.data nor train.txt"):
        load_dataset(DatasetConfig(name="x", path=str(tmp_path)), cache_dir=tmp_path)


def test_format_mismatch_rejected(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not match"):
        load_dataset(DatasetConfig(name="gowalla", format="movielens"), tmp_path, tmp_path)


@pytest.mark.parametrize(
    ("file_name", "lines", "expected"),
    [
        ("train.txt", ["0 1 2", "1 2 oops"], r"train.txt: line 2: id 'oops' is not an integer"),
        ("train.txt", ["0 1 2", "1 2 -4"], r"train.txt: line 2: negative id -4"),
        ("test.txt", [], r"test.txt: line 1: the file is empty"),
        ("test.txt", ["0 3", "1 5", "1 2"], r"test.txt: line 3: pair \(user 1, item 2\)"),
        ("valid.txt", ["1 9", "0 2"], r"valid.txt: line 2: pair \(user 0, item 2\)"),
    ],
)
def test_loader_errors_name_file_and_line(
    tmp_path: Path, write_lines, file_name: str, lines: list[str], expected: str
) -> None:
    folder = tmp_path / "mine"
    write_lines(folder / "train.txt", ["0 1 2", "1 2 3"])
    write_lines(folder / "test.txt", ["0 4", "1 5"])
    write_lines(folder / file_name, lines)
    config = DatasetConfig(name="mine", path=str(folder), format="lightgcn")

    with pytest.raises(DataFormatError, match=expected) as caught:
        load_dataset(config, cache_dir=tmp_path / "cache")

    assert str(folder / file_name) in str(caught.value)


def test_loader_missing_file_hint(tmp_path: Path, write_lines) -> None:
    write_lines(tmp_path / "gowalla" / "train.txt", ["0 1"])

    with pytest.raises(DataFormatError) as caught:
        load_dataset(DatasetConfig(name="gowalla"), tmp_path, tmp_path / "cache")

    message = str(caught.value)
    assert str(tmp_path / "gowalla" / "test.txt") in message
    assert "lers-ray data fetch gowalla" in message
    assert "--data-dir / LERS_DATA_DIR" in message


def test_cache_hit_and_invalidation(tmp_path: Path, write_lines, caplog) -> None:
    folder = tmp_path / "mine"
    write_lines(
        folder / "train.txt", [f"{user} " + " ".join(map(str, range(10))) for user in range(5)]
    )
    write_lines(folder / "test.txt", [f"{user} 10" for user in range(5)])
    cache_dir = tmp_path / "cache"
    config = DatasetConfig(name="mine", path=str(folder), format="lightgcn")

    first = load_dataset(config, cache_dir=cache_dir)
    cache_files = sorted(cache_dir.glob("*.parquet"))
    with caplog.at_level(logging.INFO, logger="lers_ray.data"):
        second = load_dataset(config, cache_dir=cache_dir)

    assert len(cache_files) == 1
    assert cache_files[0].name.startswith("mine-")
    assert "from cache" in caplog.text
    assert second.fingerprint == first.fingerprint
    for part, cached_part in zip(
        (first.train, first.valid, first.test), (second.train, second.valid, second.test)
    ):
        assert np.array_equal(part, cached_part)
    assert (second.n_users, second.n_items) == (first.n_users, first.n_items)

    write_lines(folder / "test.txt", [f"{user} 11" for user in range(5)])
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="lers_ray.data"):
        changed = load_dataset(config, cache_dir=cache_dir)

    assert "from cache" not in caplog.text
    assert len(list(cache_dir.glob("*.parquet"))) == 2
    assert changed.n_items == 12
    assert changed.fingerprint != first.fingerprint


def test_cache_key_includes_split_settings(tmp_path: Path, write_lines) -> None:
    folder = tmp_path / "mine"
    write_lines(
        folder / "train.txt", [f"{user} " + " ".join(map(str, range(20))) for user in range(5)]
    )
    write_lines(folder / "test.txt", [f"{user} 20" for user in range(5)])
    cache_dir = tmp_path / "cache"

    first = load_dataset(DatasetConfig(name="m", path=str(folder)), cache_dir=cache_dir)
    other = load_dataset(
        DatasetConfig(name="m", path=str(folder), split_seed=1), cache_dir=cache_dir
    )

    assert len(list(cache_dir.glob("*.parquet"))) == 2
    assert other.fingerprint != first.fingerprint


def test_unwritable_cache_dir_warns(tmp_path: Path, write_lines, caplog) -> None:
    folder = tmp_path / "mine"
    write_lines(folder / "train.txt", ["0 1 2", "1 2 3"])
    write_lines(folder / "test.txt", ["0 4", "1 5"])
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the cache dir's parent should be")

    with caplog.at_level(logging.WARNING, logger="lers_ray.data"):
        data = load_dataset(DatasetConfig(name="m", path=str(folder)), cache_dir=blocker / "cache")

    assert len(data.test) == 2
    assert "cannot write dataset cache" in caplog.text


def test_corrupt_cache_file_is_rebuilt(tmp_path: Path, write_lines, caplog) -> None:
    folder = tmp_path / "mine"
    write_lines(folder / "train.txt", ["0 1 2", "1 2 3"])
    write_lines(folder / "test.txt", ["0 4", "1 5"])
    cache_dir = tmp_path / "cache"
    config = DatasetConfig(name="m", path=str(folder))
    first = load_dataset(config, cache_dir=cache_dir)
    (cache_file,) = cache_dir.glob("*.parquet")
    cache_file.write_bytes(b"not parquet")

    with caplog.at_level(logging.WARNING, logger="lers_ray.data"):
        again = load_dataset(config, cache_dir=cache_dir)

    assert "unreadable dataset cache" in caplog.text
    assert again.fingerprint == first.fingerprint
