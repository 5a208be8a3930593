"""fetch_dataset against a local HTTP server that mirrors the published URL paths."""

from __future__ import annotations

import functools
import hashlib
import logging
import shutil
import socket
import threading
import zipfile
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from lers_ray.config import DatasetConfig
from lers_ray.data import load_dataset
from lers_ray.data.fetch import (
    CHECKSUM_FILE,
    LIGHTGCN_DATA_PATH,
    ML100K_ZIP_PATH,
    ChecksumError,
    FetchError,
    fetch_dataset,
    git_blob_sha1,
)

ML100K_FILES = ("u.data", "u.item", "u.user")


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def mirror(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """Serve an empty folder on 127.0.0.1; yield ``(base_url, folder)``."""
    root = tmp_path / "mirror"
    root.mkdir()
    handler = functools.partial(_QuietHandler, directory=str(root))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", root
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def _publish_ml100k(root: Path, source: Path, md5: str | None = None) -> bytes:
    """Build ml-100k.zip from the local files, publish it with its .md5 and return its bytes."""
    archive = root / ML100K_ZIP_PATH
    archive.parent.mkdir(parents=True)
    with zipfile.ZipFile(archive, "w") as bundle:
        for name in ML100K_FILES:
            bundle.write(source / name, f"ml-100k/{name}")
    content = archive.read_bytes()
    digest = md5 or hashlib.md5(content).hexdigest()
    archive.with_name("ml-100k.zip.md5").write_text(f"MD5 (ml-100k.zip) = {digest}\n")
    return content


def _publish_lightgcn(root: Path, source: Path, name: str) -> Path:
    folder = root / LIGHTGCN_DATA_PATH / name
    folder.mkdir(parents=True)
    for file_name in ("train.txt", "test.txt"):
        shutil.copyfile(source / file_name, folder / file_name)
    return folder


def test_ml100k_fetch_verifies_and_extracts(mirror, data_dir: Path, tmp_path: Path) -> None:
    base_url, root = mirror
    source = data_dir / "movielens-100k"
    _publish_ml100k(root, source)
    target = tmp_path / "data"

    paths = fetch_dataset("ml-100k", target, base_url=base_url)

    assert paths == [target / "movielens-100k" / name for name in ML100K_FILES]
    for name in ML100K_FILES:
        assert (target / "movielens-100k" / name).read_bytes() == (source / name).read_bytes()
    record = (target / "movielens-100k" / CHECKSUM_FILE).read_text()
    expected = hashlib.sha256((source / "u.data").read_bytes()).hexdigest()
    assert f"{expected}  u.data\n" in record
    data = load_dataset(DatasetConfig(name="ml-100k"), target, tmp_path / "cache")
    assert data.n_interactions == 55_375


def test_ml100k_md5_mismatch_rejected(mirror, data_dir: Path, tmp_path: Path) -> None:
    base_url, root = mirror
    _publish_ml100k(root, data_dir / "movielens-100k", md5="0" * 32)

    with pytest.raises(ChecksumError, match=r"ml-100k.zip .* expected MD5 0{32}"):
        fetch_dataset("ml-100k", tmp_path / "data", base_url=base_url)

    assert not (tmp_path / "data" / "movielens-100k" / "u.data").exists()


def test_gowalla_fetch_pins_test_file(mirror, data_dir: Path, tmp_path: Path, caplog) -> None:
    base_url, root = mirror
    source = data_dir / "gowalla"
    _publish_lightgcn(root, source, "gowalla")
    target = tmp_path / "data"

    with caplog.at_level(logging.WARNING, logger="lers_ray.data.fetch"):
        paths = fetch_dataset("gowalla", target, base_url=base_url)

    folder = target / "gowalla"
    assert paths == [folder / "train.txt", folder / "test.txt"]
    assert git_blob_sha1((folder / "test.txt").read_bytes()) == (
        "9ed5af4b5d21511f33740b4e22e3852f45671800"
    )
    assert (folder / "train.txt").read_bytes() == (source / "train.txt").read_bytes()
    train_sha256 = hashlib.sha256((source / "train.txt").read_bytes()).hexdigest()
    assert f"{train_sha256}  train.txt\n" in (folder / CHECKSUM_FILE).read_text()
    assert "train.txt has no published checksum" in caplog.text
    assert "test.txt has no published checksum" not in caplog.text
    assert not list(folder.glob(".*.part"))


def test_corrupt_test_file_rejected(mirror, data_dir: Path, tmp_path: Path) -> None:
    base_url, root = mirror
    published = _publish_lightgcn(root, data_dir / "gowalla", "gowalla")
    content = bytearray((published / "test.txt").read_bytes())
    content[10] = ord("9") if content[10] != ord("9") else ord("8")
    (published / "test.txt").write_bytes(bytes(content))
    target = tmp_path / "data"

    with pytest.raises(ChecksumError) as caught:
        fetch_dataset("gowalla", target, base_url=base_url)

    message = str(caught.value)
    assert "checksum mismatch for test.txt" in message
    assert "9ed5af4b5d21511f33740b4e22e3852f45671800" in message
    assert not (target / "gowalla" / "test.txt").exists()
    assert not list((target / "gowalla").glob(".*.part"))


def test_present_files_kept_unless_forced(mirror, data_dir: Path, tmp_path: Path) -> None:
    base_url, root = mirror
    _publish_lightgcn(root, data_dir / "gowalla", "gowalla")
    folder = tmp_path / "data" / "gowalla"
    folder.mkdir(parents=True)
    (folder / "train.txt").write_text("0 1\n")
    (folder / "test.txt").write_text("0 2\n")

    fetch_dataset("gowalla", tmp_path / "data", base_url=base_url)

    assert (folder / "train.txt").read_text() == "0 1\n"
    assert git_blob_sha1((folder / "test.txt").read_bytes()).startswith("9ed5af4b")

    fetch_dataset("gowalla", tmp_path / "data", base_url=base_url, force=True)

    assert (folder / "train.txt").stat().st_size == (
        data_dir / "gowalla" / "train.txt"
    ).stat().st_size


def test_missing_remote_file_names_url(mirror, tmp_path: Path) -> None:
    base_url, _ = mirror

    with pytest.raises(FetchError, match=r"HTTP 404") as caught:
        fetch_dataset("yelp2018", tmp_path / "data", base_url=base_url)

    assert f"{base_url}/{LIGHTGCN_DATA_PATH}/yelp2018/train.txt" in str(caught.value)


def test_connection_refused_names_url(tmp_path: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    base_url = f"http://127.0.0.1:{port}"

    with pytest.raises(FetchError) as caught:
        fetch_dataset("ml-100k", tmp_path / "data", base_url=base_url, timeout=5)

    message = str(caught.value)
    assert f"{base_url}/{ML100K_ZIP_PATH}.md5" in message
    assert str(tmp_path / "data" / "movielens-100k") in message


def test_unknown_dataset_rejected(tmp_path: Path) -> None:
    with pytest.raises(FetchError, match=r"cannot fetch 'ml-1m'"):
        fetch_dataset("ml-1m", tmp_path)


def test_git_blob_sha1_matches_git() -> None:
    assert git_blob_sha1(b"") == "e69de29bb2d1d6434b8b29ae775ad8c2e48c5391"
    assert git_blob_sha1(b"hello\n") == "ce013625030ba8dba906f756967f9e9ca394464a"
