"""Parsers for the two implicit-feedback file layouts: LightGCN text files and GroupLens ratings.

Both parsers convert whole columns with numpy in one pass. Only when that fails do they scan
the file line by line, to name the first bad line in the :class:`DataFormatError`.
"""

from __future__ import annotations

import itertools
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)


class DataFormatError(ValueError):
    """A dataset file is missing or malformed; the message names the file, line and fix."""


def missing_file_error(
    path: Path, dataset: str | None = None, detail: str = "", fetchable: bool = True
) -> DataFormatError:
    """Build the error for a dataset file that does not exist, with a hint on how to get it.

    ``fetchable`` is whether ``lers-ray data fetch`` can download the dataset ``dataset``.
    """
    extra = f" {detail}" if detail else ""
    folder_hint = (
        "place the file at that path, or set --data-dir / LERS_DATA_DIR to a data dir that has it"
    )
    if fetchable:
        hint = f"run 'lers-ray data fetch {dataset or 'NAME'}', or {folder_hint}"
    else:
        hint = folder_hint
    return DataFormatError(f"{path}: file not found.{extra} To fix: {hint}")


def _read_nonempty(path: Path, dataset: str | None) -> bytes:
    """Return the bytes of ``path``, raising :class:`DataFormatError` if missing or empty."""
    if not path.is_file():
        raise missing_file_error(path, dataset)
    data = path.read_bytes()
    if not data.strip():
        raise DataFormatError(
            f"{path}: line 1: the file is empty; download it again "
            f"('lers-ray data fetch {dataset or 'NAME'}') or point --data-dir to a complete copy"
        )
    return data


@dataclass(frozen=True)
class LightGCNFile:
    """The pairs of one LightGCN text file and the line each user was read from."""

    path: Path
    pairs: np.ndarray
    """``int64`` array of shape ``(n, 2)``: ``(user, item)`` in file order, duplicates kept."""
    line_users: np.ndarray
    """User id of each non-blank line, in file order."""
    line_numbers: np.ndarray
    """1-based line number of each entry of ``line_users``."""
    pair_lines: np.ndarray
    """1-based line number of each row of ``pairs``."""

    def line_of_user(self, user: int) -> int:
        """Return the 1-based number of the first line that starts with ``user``, or 0 if none."""
        hits = np.flatnonzero(self.line_users == user)
        return int(self.line_numbers[hits[0]]) if len(hits) else 0

    def line_of_pair(self, user: int, item: int) -> int:
        """Return the 1-based number of the first line with the pair, or 0 if none."""
        hits = np.flatnonzero((self.pairs[:, 0] == user) & (self.pairs[:, 1] == item))
        return int(self.pair_lines[hits[0]]) if len(hits) else 0


def read_lightgcn_file(path: str | Path, dataset: str | None = None) -> LightGCNFile:
    """Parse a LightGCN text file: one line per user, ``user item item ...``, 0-based ids.

    Tokens are separated by any whitespace. A line with only a user id is a user without
    items in this file, and blank lines are skipped. ``dataset`` only fills the fetch hint.

    Raises:
        DataFormatError: if the file is missing or empty, or an id is not a non-negative
            integer. The message names the file and the 1-based line number.
    """
    path = Path(path)
    data = _read_nonempty(path, dataset)

    numbered = [(number, line.split()) for number, line in enumerate(data.splitlines(), 1)]
    numbered = [(number, tokens) for number, tokens in numbered if tokens]
    line_numbers = np.fromiter((number for number, _ in numbered), np.int64, len(numbered))
    lengths = np.fromiter((len(tokens) for _, tokens in numbered), np.int64, len(numbered))
    flat = list(itertools.chain.from_iterable(tokens for _, tokens in numbered))

    try:
        values = np.fromiter(map(int, flat), np.int64, len(flat))
    except ValueError:
        _raise_first_non_integer(path, numbered)
        raise  # unreachable: the scan above always finds the bad token
    starts = np.concatenate(([0], np.cumsum(lengths)[:-1]))

    negative = np.flatnonzero(values < 0)
    if len(negative):
        line_index = int(np.searchsorted(starts, negative[0], side="right") - 1)
        raise DataFormatError(
            f"{path}: line {line_numbers[line_index]}: negative id {values[negative[0]]}; "
            "ids in LightGCN files are 0-based, so fix or remove that line"
        )

    line_users = values[starts]
    is_item = np.ones(len(values), dtype=bool)
    is_item[starts] = False
    users = np.repeat(line_users, lengths - 1)
    pairs = np.stack([users, values[is_item]], axis=1)
    pair_lines = np.repeat(line_numbers, lengths - 1)
    logger.debug("read %d pairs on %d lines from %s", len(pairs), len(line_users), path)
    return LightGCNFile(path, pairs, line_users, line_numbers, pair_lines)


def read_lightgcn(path: str | Path, dataset: str | None = None) -> np.ndarray:
    """Parse a LightGCN text file and return its ``(user, item)`` pairs as ``int64 (n, 2)``.

    See :func:`read_lightgcn_file` for the format and the errors raised.
    """
    return read_lightgcn_file(path, dataset).pairs


def _raise_first_non_integer(path: Path, numbered: list[tuple[int, list[bytes]]]) -> None:
    for number, tokens in numbered:
        for token in tokens:
            try:
                int(token)
            except ValueError:
                raise DataFormatError(
                    f"{path}: line {number}: id {token.decode(errors='replace')!r} is not an "
                    "integer; every field must be a whole-number id, so fix or remove that line"
                ) from None


@dataclass(frozen=True)
class MovieLensRatings:
    """Implicit positives read from a GroupLens ratings file, with 0-based ids."""

    pairs: np.ndarray
    """``int64 (n, 2)`` ``(user, item)`` pairs whose rating is at or above the threshold."""
    n_users: int
    """Largest user id in the file (over all ratings, not only positives)."""
    n_items: int
    """Largest item id in the file (over all ratings, not only positives)."""
    n_ratings: int


def read_movielens(
    path: str | Path, rating_threshold: float = 4.0, dataset: str | None = None
) -> MovieLensRatings:
    """Parse a GroupLens ratings file (``u.data``) into implicit positives.

    Each line is ``user, item, rating, timestamp`` with 1-based ids, separated by tabs
    (``u.data``) or by ``::`` (``ratings.dat`` of ML-1M). A rating ``>= rating_threshold`` is a
    positive. User id ``u`` becomes row ``u - 1`` and item ``i`` becomes ``i - 1``, and the
    table sizes are the largest ids over all ratings. So users and items without positives
    still have rows, and ids missing from the file are rows without interactions
    (for ML-100K: 943 users, 1682 items).

    Raises:
        DataFormatError: if the file is missing or empty, a line does not have 4 fields,
            an id is not an integer or is below 1, or a rating is not a number.
    """
    path = Path(path)
    data = _read_nonempty(path, dataset)
    lines = [(number, line) for number, line in enumerate(data.splitlines(), 1) if line.strip()]
    separator = b"::" if b"::" in lines[0][1] else b"\t"
    rows = [line.split(separator) for _, line in lines]

    bad_width = [index for index, row in enumerate(rows) if len(row) != 4]
    if bad_width:
        number, _ = lines[bad_width[0]]
        raise DataFormatError(
            f"{path}: line {number}: expected 4 fields (user, item, rating, timestamp) "
            f"separated by {separator.decode()!r}, found {len(rows[bad_width[0]])}; "
            "fix that line or check that this is a GroupLens ratings file"
        )

    user_column, item_column, rating_column, _ = zip(*rows)
    try:
        users = np.fromiter(map(int, user_column), np.int64, len(rows))
        items = np.fromiter(map(int, item_column), np.int64, len(rows))
        ratings = np.fromiter(map(float, rating_column), np.float64, len(rows))
    except ValueError:
        _raise_first_bad_rating_line(path, lines, rows)
        raise  # unreachable: the scan above always finds the bad field

    below_one = np.flatnonzero((users < 1) | (items < 1))
    if len(below_one):
        index = int(below_one[0])
        raise DataFormatError(
            f"{path}: line {lines[index][0]}: id {min(users[index], items[index])} is below 1; "
            "GroupLens ids are 1-based, so fix that line (0-based files use the lightgcn format)"
        )

    positive = ratings >= rating_threshold
    pairs = np.stack([users[positive] - 1, items[positive] - 1], axis=1)
    return MovieLensRatings(pairs, int(users.max()), int(items.max()), len(rows))


def _raise_first_bad_rating_line(
    path: Path, lines: list[tuple[int, bytes]], rows: list[list[bytes]]
) -> None:
    for (number, _), row in zip(lines, rows):
        for field_name, value, parse in (
            ("user id", row[0], int),
            ("item id", row[1], int),
            ("rating", row[2], float),
        ):
            try:
                parse(value)
            except ValueError:
                kind = "an integer" if parse is int else "a number"
                raise DataFormatError(
                    f"{path}: line {number}: {field_name} "
                    f"{value.decode(errors='replace')!r} is not {kind}; fix or remove that line"
                ) from None
