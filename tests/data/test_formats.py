"""Parsers of LightGCN text files and GroupLens ratings, including their error messages."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from lers_ray.data.formats import DataFormatError, read_lightgcn, read_lightgcn_file, read_movielens


def test_lightgcn_parses_pairs_and_item_less_user(tmp_path: Path, write_lines) -> None:
    path = write_lines(tmp_path / "train.txt", ["0 5 3", "1", "", "2\t7  7 "])

    parsed = read_lightgcn_file(path)

    assert parsed.pairs.dtype == np.int64
    assert parsed.pairs.tolist() == [[0, 5], [0, 3], [2, 7], [2, 7]]
    assert parsed.line_users.tolist() == [0, 1, 2]
    assert parsed.line_of_user(2) == 4
    assert parsed.line_of_user(9) == 0
    assert parsed.pair_lines.tolist() == [1, 1, 4, 4]
    assert parsed.line_of_pair(2, 7) == 4
    assert parsed.line_of_pair(0, 7) == 0


@pytest.mark.parametrize(
    ("lines", "line_number", "pattern"),
    [
        (["0 1 2", "1 x 3"], 2, r"'x' is not an integer"),
        (["0 1 2", "1 3", "2 4.5"], 3, r"'4.5' is not an integer"),
        (["0 1", "1 -3"], 2, r"negative id -3"),
        (["-1 2"], 1, r"negative id -1"),
    ],
)
def test_lightgcn_bad_id_names_file_and_line(
    tmp_path: Path, write_lines, lines: list[str], line_number: int, pattern: str
) -> None:
    path = write_lines(tmp_path / "train.txt", lines)

    with pytest.raises(DataFormatError, match=pattern) as caught:
        read_lightgcn(path)

    assert str(caught.value).startswith(f"{path}: line {line_number}:")


@pytest.mark.parametrize("content", ["", "\n\n", "  \n"])
def test_empty_file_is_rejected(tmp_path: Path, content: str) -> None:
    path = tmp_path / "test.txt"
    path.write_text(content)

    with pytest.raises(DataFormatError, match=r"line 1: the file is empty") as caught:
        read_lightgcn(path)

    assert str(path) in str(caught.value)


def test_missing_file_gives_fetch_hint(tmp_path: Path) -> None:
    path = tmp_path / "gowalla" / "train.txt"

    with pytest.raises(DataFormatError) as caught:
        read_lightgcn(path, dataset="gowalla")

    message = str(caught.value)
    assert str(path) in message
    assert "file not found" in message
    assert "lers-ray data fetch gowalla" in message
    assert "--data-dir / LERS_DATA_DIR" in message


def test_movielens_threshold_and_id_shift(tmp_path: Path, write_lines) -> None:
    path = write_lines(
        tmp_path / "u.data",
        ["1\t1\t5\t100", "1\t3\t3\t101", "2\t2\t4\t102", "3\t1\t3.5\t103"],
    )

    ratings = read_movielens(path, rating_threshold=4.0)

    assert ratings.pairs.tolist() == [[0, 0], [1, 1]]
    assert ratings.n_users == 3
    assert ratings.n_items == 3
    assert ratings.n_ratings == 4
    assert read_movielens(path, rating_threshold=3.5).pairs.tolist() == [
        [0, 0],
        [1, 1],
        [2, 0],
    ]


def test_movielens_double_colon_separator(tmp_path: Path, write_lines) -> None:
    path = write_lines(tmp_path / "ratings.dat", ["1::10::5::978300760", "2::3::2::978302109"])

    ratings = read_movielens(path)

    assert ratings.pairs.tolist() == [[0, 9]]
    assert (ratings.n_users, ratings.n_items) == (2, 10)


@pytest.mark.parametrize(
    ("bad_line", "pattern"),
    [
        ("2\t7\t4", r"expected 4 fields .* found 3"),
        ("2\t7\t4\t1\t9", r"expected 4 fields .* found 5"),
        ("two\t7\t4\t1", r"user id 'two' is not an integer"),
        ("2\t7.5\t4\t1", r"item id '7.5' is not an integer"),
        ("2\t7\tfive\t1", r"rating 'five' is not a number"),
        ("0\t7\t4\t1", r"id 0 is below 1"),
        ("2\t-7\t4\t1", r"id -7 is below 1"),
    ],
)
def test_movielens_bad_line_names_file_and_line(
    tmp_path: Path, write_lines, bad_line: str, pattern: str
) -> None:
    path = write_lines(tmp_path / "u.data", ["1\t1\t5\t100", "1\t2\t4\t100", bad_line])

    with pytest.raises(DataFormatError, match=pattern) as caught:
        read_movielens(path)

    assert str(caught.value).startswith(f"{path}: line 3:")


def test_data_format_error_is_value_error() -> None:
    assert issubclass(DataFormatError, ValueError)


def test_gowalla_train_parses_all_pairs(data_dir: Path) -> None:
    pairs = read_lightgcn(data_dir / "gowalla" / "train.txt")

    assert pairs.shape == (810_128, 2)
    assert pairs[:, 0].max() == 29_857
    assert pairs.dtype == np.int64
