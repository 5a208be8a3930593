"""Load a dataset by config: parse its files, check and split them, and cache the result."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from lers_ray.config import DatasetConfig, SyntheticConfig
from lers_ray.data.cache import cache_key, cache_path, read_cache, write_cache
from lers_ray.data.dataset import InteractionData
from lers_ray.data.formats import (
    LightGCNFile,
    missing_file_error,
    read_lightgcn_file,
    read_movielens,
)
from lers_ray.data.paths import resolve_cache_dir, resolve_data_dir
from lers_ray.data.registry import (
    LIGHTGCN_TEST,
    LIGHTGCN_TRAIN,
    LIGHTGCN_VALID,
    MOVIELENS_RATINGS,
    DatasetSpec,
    resolve_spec,
)
from lers_ray.data.splits import (
    carve_validation,
    ensure_disjoint,
    fingerprint,
    random_split_80_10_10,
    sort_unique_pairs,
)
from lers_ray.data.subsample import subsample_users
from lers_ray.data.synthetic import generate_synthetic_pairs

logger = logging.getLogger(__name__)


def load_dataset(
    config: DatasetConfig,
    data_dir: str | Path | None = None,
    cache_dir: str | Path | None = None,
) -> InteractionData:
    """Load, check and split the dataset that ``config`` names.

    Registered names are ``ml-100k``, ``gowalla``, ``yelp2018``, ``ml-1m`` and ``synthetic``;
    ``config.path`` (with ``config.format``) loads a custom folder instead. Files are read
    from ``data_dir`` (default: :func:`~lers_ray.data.paths.resolve_data_dir`). The parsed and
    split result is cached as Parquet in ``cache_dir`` (default:
    :func:`~lers_ray.data.paths.resolve_cache_dir`), keyed by the SHA-256 of the source files
    and the split settings, so a changed file or setting is parsed again. An unwritable cache
    dir only logs a warning. Synthetic data is generated on every call and not cached.

    ``config.subsample_users`` keeps a seeded subset of users (seed ``config.split_seed``)
    after parsing and before any split is drawn, so the fingerprint covers the subset.

    Raises:
        ConfigError: for an unknown dataset name or format, or invalid synthetic sizes.
        DataFormatError: for a missing or malformed file, or a held-out pair that is also in
            train; the message names the file and line.
    """
    spec, folder = resolve_spec(
        config, resolve_data_dir(None if data_dir is None else str(data_dir))
    )
    if folder is None:
        return _load_synthetic(config)

    files = _source_files(spec, folder)
    source = f"{spec.name}: {folder} ({', '.join(path.name for path in files)})"
    settings = _split_settings(spec, config)
    cache_file = cache_path(
        Path(cache_dir) if cache_dir is not None else resolve_cache_dir(),
        config.name,
        cache_key(files, settings),
    )
    cached = read_cache(cache_file, config.name, source)
    if cached is not None:
        return cached

    if spec.format == "movielens":
        data = _build_movielens(config, folder, source)
    else:
        data = _build_lightgcn(config, spec, folder, source)
    logger.info(
        "loaded %s: %d users, %d items, %d/%d/%d train/valid/test pairs, fingerprint %s",
        data.name,
        data.n_users,
        data.n_items,
        len(data.train),
        len(data.valid),
        len(data.test),
        data.fingerprint,
    )
    write_cache(cache_file, data)
    return data


def _source_files(spec: DatasetSpec, folder: Path) -> list[Path]:
    """Return the files to read, raising a missing-file error for a required one."""
    if spec.format == "movielens":
        required = [MOVIELENS_RATINGS]
        optional: list[str] = []
    else:
        required = [LIGHTGCN_TRAIN, LIGHTGCN_TEST]
        optional = [LIGHTGCN_VALID]
    for name in required:
        if not (folder / name).is_file():
            raise missing_file_error(
                folder / name, spec.name, spec.missing_detail.get(name, ""), spec.fetchable
            )
    return [folder / name for name in required + optional if (folder / name).is_file()]


def _split_settings(spec: DatasetSpec, config: DatasetConfig) -> dict[str, Any]:
    """Return the settings that change the split, for the cache key."""
    settings: dict[str, Any] = {
        "format": spec.format,
        "split_seed": config.split_seed,
        "subsample_users": config.subsample_users,
    }
    if spec.format == "movielens":
        settings["rating_threshold"] = config.rating_threshold
    else:
        settings["valid_fraction"] = config.valid_fraction
    return settings


def _unique(pairs: np.ndarray, label: str) -> np.ndarray:
    """Drop repeated pairs, logging how many there were."""
    unique = sort_unique_pairs(pairs)
    if len(unique) < len(pairs):
        logger.warning(
            "%s: dropped %d repeated (user, item) pairs", label, len(pairs) - len(unique)
        )
    return unique


def _finish(
    config: DatasetConfig,
    n_users: int,
    n_items: int,
    splits: tuple[np.ndarray, np.ndarray, np.ndarray],
    source: str,
) -> InteractionData:
    train, valid, test = splits
    return InteractionData(
        name=config.name,
        n_users=n_users,
        n_items=n_items,
        train=train,
        valid=valid,
        test=test,
        fingerprint=fingerprint(train, valid, test),
        source=source,
    )


def _build_movielens(config: DatasetConfig, folder: Path, source: str) -> InteractionData:
    path = folder / MOVIELENS_RATINGS
    ratings = read_movielens(path, config.rating_threshold, config.name)
    pairs = _unique(ratings.pairs, str(path))
    n_users, n_items = ratings.n_users, ratings.n_items
    if config.subsample_users is not None:
        n_users, n_items, pairs, _ = subsample_users(
            n_users, n_items, pairs, [], config.subsample_users, config.split_seed
        )
    splits = random_split_80_10_10(pairs, config.split_seed)
    return _finish(config, n_users, n_items, splits, source)


def _table_sizes(files: list[LightGCNFile]) -> tuple[int, int]:
    """Return (users, items) as one more than the largest id over all files."""
    max_user = max(int(file.line_users.max()) for file in files)
    max_item = max((int(file.pairs[:, 1].max()) for file in files if len(file.pairs)), default=-1)
    return max_user + 1, max_item + 1


def _build_lightgcn(
    config: DatasetConfig, spec: DatasetSpec, folder: Path, source: str
) -> InteractionData:
    train_file = read_lightgcn_file(folder / LIGHTGCN_TRAIN, spec.name)
    test_file = read_lightgcn_file(folder / LIGHTGCN_TEST, spec.name)
    valid_path = folder / LIGHTGCN_VALID
    valid_file = read_lightgcn_file(valid_path, spec.name) if valid_path.is_file() else None
    files = [f for f in (train_file, valid_file, test_file) if f is not None]
    n_users, n_items = _table_sizes(files)

    train = _unique(train_file.pairs, str(train_file.path))
    test = _unique(test_file.pairs, str(test_file.path))
    ensure_disjoint(train, test_file, f"the train file {train_file.path}")
    held_out = [test]
    if valid_file is not None:
        valid = _unique(valid_file.pairs, str(valid_file.path))
        ensure_disjoint(train, valid_file, f"the train file {train_file.path}")
        ensure_disjoint(valid, test_file, f"the validation file {valid_file.path}")
        held_out.append(valid)

    if config.subsample_users is not None:
        n_users, n_items, train, held_out = subsample_users(
            n_users, n_items, train, held_out, config.subsample_users, config.split_seed
        )
    test = held_out[0]
    if valid_file is not None:
        valid = held_out[1]
    else:
        train, valid = carve_validation(train, config.valid_fraction, config.split_seed)
    return _finish(config, n_users, n_items, (train, valid, test), source)


def _load_synthetic(config: DatasetConfig) -> InteractionData:
    synthetic = config.synthetic or SyntheticConfig()
    pairs = generate_synthetic_pairs(synthetic)
    n_users, n_items = synthetic.n_users, synthetic.n_items
    if config.subsample_users is not None:
        n_users, n_items, pairs, _ = subsample_users(
            n_users, n_items, pairs, [], config.subsample_users, config.split_seed
        )
    splits = random_split_80_10_10(pairs, config.split_seed)
    source = (
        f"synthetic: {synthetic.n_users} users, {synthetic.n_items} items, "
        f"{synthetic.n_interactions} pairs, exponents {synthetic.user_exponent}/"
        f"{synthetic.item_exponent}, seed {synthetic.seed}"
    )
    return _finish(config, n_users, n_items, splits, source)
