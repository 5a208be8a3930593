"""Parquet cache of parsed and split datasets, keyed by source file contents and split settings.

A cache file contains one row per pair with columns ``user``, ``item`` (``int64``) and ``split``
(``int8``: 0 train, 1 valid, 2 test), plus the table sizes and fingerprint in the schema
metadata. Files are written to a temporary name and renamed, so a reader never sees a partial
file.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from lers_ray.data.dataset import InteractionData

logger = logging.getLogger(__name__)

CACHE_FORMAT_VERSION = 1
"""Bump when parsing or splitting changes, so old cache files stop matching."""

_METADATA_KEY = b"lers_ray"
_CHUNK_BYTES = 1 << 20


def file_sha256(path: Path) -> str:
    """Return the hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(_CHUNK_BYTES), b""):
            digest.update(chunk)
    return digest.hexdigest()


def cache_key(files: list[Path], settings: dict[str, Any]) -> str:
    """Return a hex key over the files' names and contents and the split settings."""
    description = {
        "version": CACHE_FORMAT_VERSION,
        "files": [[path.name, file_sha256(path)] for path in files],
        "settings": settings,
    }
    encoded = json.dumps(description, sort_keys=True).encode()
    return hashlib.sha256(encoded).hexdigest()


def cache_path(cache_dir: Path, name: str, key: str) -> Path:
    """Return the cache file for dataset ``name`` and ``key`` inside ``cache_dir``."""
    safe_name = re.sub(r"[^A-Za-z0-9._-]+", "_", name) or "dataset"
    return cache_dir / f"{safe_name}-{key[:20]}.parquet"


def read_cache(path: Path, name: str, source: str) -> InteractionData | None:
    """Load a cached dataset, or return ``None`` when the file is absent or unreadable.

    ``name`` and ``source`` are not cached: the caller supplies them for the returned data.
    """
    if not path.is_file():
        return None
    try:
        with pq.ParquetFile(path) as parquet_file:
            table = parquet_file.read()
        meta = json.loads(table.schema.metadata[_METADATA_KEY])
        users = table.column("user").to_numpy()
        items = table.column("item").to_numpy()
        splits = table.column("split").to_numpy()
    except (OSError, KeyError, ValueError, pa.ArrowException) as error:
        logger.warning("ignoring unreadable dataset cache %s: %s", path, error)
        return None

    pairs = np.stack([users, items], axis=1).astype(np.int64)
    train, valid, test = (pairs[splits == code] for code in range(3))
    logger.info("loaded %s from cache %s", name, path)
    return InteractionData(
        name=name,
        n_users=int(meta["n_users"]),
        n_items=int(meta["n_items"]),
        train=train,
        valid=valid,
        test=test,
        fingerprint=str(meta["fingerprint"]),
        source=source,
    )


def write_cache(path: Path, data: InteractionData) -> bool:
    """Write ``data`` to ``path`` atomically; return ``False`` (and log) if that fails.

    A cache that cannot be written (a read-only folder, a file in the way, a full disk) is not
    an error, so loading continues without it.
    """
    pairs = np.concatenate([data.train, data.valid, data.test]).astype(np.int64)
    codes = np.repeat(
        np.arange(3, dtype=np.int8), [len(data.train), len(data.valid), len(data.test)]
    )
    meta = {"n_users": data.n_users, "n_items": data.n_items, "fingerprint": data.fingerprint}
    table = pa.table({"user": pairs[:, 0], "item": pairs[:, 1], "split": codes})
    table = table.replace_schema_metadata({_METADATA_KEY: json.dumps(meta).encode()})

    temporary: str | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(
            dir=path.parent, prefix=f".{path.stem}-", suffix=".tmp"
        )
        os.close(handle)
        pq.write_table(table, temporary)
        os.replace(temporary, path)
    except (OSError, pa.ArrowException) as error:
        logger.warning(
            "cannot write dataset cache %s (%s); continuing without a cache. "
            "Set LERS_CACHE_DIR to a writable folder to cache parsed datasets",
            path,
            error,
        )
        if temporary is not None and os.path.exists(temporary):
            os.unlink(temporary)
        return False
    logger.info("cached %s at %s", data.name, path)
    return True
