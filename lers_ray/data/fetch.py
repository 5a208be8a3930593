"""Download registered datasets from their published locations and verify them.

Files are written into ``<data_dir>/<folder>/`` through a temporary file and a rename, and
only after their checksum is verified. Each fetch also records the SHA-256 of the files it
wrote in ``CHECKSUMS.lers`` in that folder (``sha256sum -c`` format), so a later copy can be
compared with what was downloaded.

Checksums per published file:

* ``ml-100k.zip`` (GroupLens): MD5 from the ``ml-100k.zip.md5`` file published beside it.
  Both come from the same server, so this catches a broken download, not a changed source.
* ``gowalla/test.txt`` and ``yelp2018/test.txt`` (LightGCN repository): pinned git blob SHA-1.
* ``gowalla/train.txt`` and ``yelp2018/train.txt``: no published checksum is known, so they
  are not verified (a warning is logged).
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import re
import tempfile
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

from lers_ray.data.registry import REGISTRY

logger = logging.getLogger(__name__)

CHECKSUM_FILE = "CHECKSUMS.lers"
DEFAULT_TIMEOUT_S = 60.0

GROUPLENS_HOST = "https://files.grouplens.org"
GITHUB_RAW_HOST = "https://raw.githubusercontent.com"
LIGHTGCN_DATA_PATH = "kuandeng/LightGCN/master/Data"
ML100K_ZIP_PATH = "datasets/movielens/ml-100k.zip"
ML100K_MEMBERS = ("u.data", "u.item", "u.user")


class FetchError(RuntimeError):
    """A download failed; the message names the URL and how to place the files by hand."""


class ChecksumError(FetchError):
    """A downloaded file does not match its expected checksum."""


@dataclass(frozen=True)
class RemoteFile:
    """One published file and the checksum it must have, if one is known."""

    path: str
    """URL path below the host, kept unchanged when ``base_url`` replaces the host."""
    name: str
    """File name inside the dataset folder."""
    git_blob_sha1: str | None
    """SHA-1 of ``b"blob <size>\\0" + content`` (``git hash-object``), or ``None`` if unknown."""


# The test pins are the git blobs of the LightGCN test files as copied verbatim into
# geon0325/LightGCNpp (data/<name>/test.txt) and chenxing1999/recsys-benchmark
# (dataset/cf/<name>/test.txt); both copies carry the same blob.
# NOTE: these blobs were not read from kuandeng/LightGCN itself. If that repository's file
# differs from the copies, the fetch raises ChecksumError instead of accepting it.
LIGHTGCN_FILES: dict[str, tuple[RemoteFile, ...]] = {
    "gowalla": (
        # NOTE: no published checksum of the original train.txt is known (the local copy is
        # rebuilt, so its hash is not the original's). It is downloaded unverified.
        RemoteFile(f"{LIGHTGCN_DATA_PATH}/gowalla/train.txt", "train.txt", None),
        RemoteFile(
            f"{LIGHTGCN_DATA_PATH}/gowalla/test.txt",
            "test.txt",
            "9ed5af4b5d21511f33740b4e22e3852f45671800",
        ),
    ),
    "yelp2018": (
        RemoteFile(f"{LIGHTGCN_DATA_PATH}/yelp2018/train.txt", "train.txt", None),
        RemoteFile(
            f"{LIGHTGCN_DATA_PATH}/yelp2018/test.txt",
            "test.txt",
            "30dfbc3437b27b74cb2970b435a5ec93ad9f2468",
        ),
    ),
}

FETCHABLE = ("ml-100k", *LIGHTGCN_FILES)


def git_blob_sha1(content: bytes) -> str:
    """Return the git blob hash of ``content``, as ``git hash-object`` prints it."""
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


def _url(host: str, path: str, base_url: str | None) -> str:
    return f"{(base_url or host).rstrip('/')}/{path}"


def _download(url: str, folder: Path, timeout: float) -> bytes:
    """Return the body of ``url``, raising :class:`FetchError` that names it on failure."""
    logger.info("downloading %s", url)
    manual = f"download it yourself and place the files in {folder}"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.read()
    except urllib.error.HTTPError as error:
        raise FetchError(
            f"download failed: {url}: HTTP {error.code} {error.reason}; {manual}"
        ) from error
    except (urllib.error.URLError, TimeoutError, OSError) as error:
        reason = getattr(error, "reason", error)
        raise FetchError(
            f"download failed: cannot reach {url} ({reason}); check the network "
            f"connection, or {manual}"
        ) from error


def _write_atomic(path: Path, content: bytes) -> None:
    """Write ``content`` to ``path`` through a temporary file in the same folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}-", suffix=".part")
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(content)
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise


def _record_checksums(folder: Path, written: dict[str, bytes]) -> None:
    """Add or update the SHA-256 lines of the written files in the folder's CHECKSUMS.lers."""
    record = folder / CHECKSUM_FILE
    entries: dict[str, str] = {}
    if record.is_file():
        for line in record.read_text(encoding="utf-8").splitlines():
            digest, _, name = line.partition("  ")
            if name:
                entries[name] = digest
    for name, content in written.items():
        entries[name] = hashlib.sha256(content).hexdigest()
    text = "".join(f"{digest}  {name}\n" for name, digest in sorted(entries.items()))
    _write_atomic(record, text.encode("utf-8"))


def _fetch_lightgcn(
    name: str, folder: Path, base_url: str | None, timeout: float, force: bool
) -> list[Path]:
    written: dict[str, bytes] = {}
    paths = []
    for remote in LIGHTGCN_FILES[name]:
        target = folder / remote.name
        paths.append(target)
        if target.is_file() and not force:
            present = target.read_bytes()
            if remote.git_blob_sha1 is None or git_blob_sha1(present) == remote.git_blob_sha1:
                logger.info(
                    "%s is already present; keeping it (pass force=True to download)", target
                )
                continue
            logger.warning("%s is present but fails its checksum; downloading it again", target)

        url = _url(GITHUB_RAW_HOST, remote.path, base_url)
        content = _download(url, folder, timeout)
        if remote.git_blob_sha1 is None:
            logger.warning(
                "%s has no published checksum, so it is not verified; its SHA-256 is "
                "recorded in %s",
                url,
                folder / CHECKSUM_FILE,
            )
        else:
            actual = git_blob_sha1(content)
            if actual != remote.git_blob_sha1:
                raise ChecksumError(
                    f"checksum mismatch for {remote.name} downloaded from {url}: expected git "
                    f"blob {remote.git_blob_sha1}, got {actual}; the download is corrupt or the "
                    f"published file changed. Retry, or place a verified copy in {folder}"
                )
        _write_atomic(target, content)
        written[remote.name] = content
    if written:
        _record_checksums(folder, written)
    return paths


def _fetch_movielens_100k(
    folder: Path, base_url: str | None, timeout: float, force: bool
) -> list[Path]:
    paths = [folder / member for member in ML100K_MEMBERS]
    if not force and all(path.is_file() for path in paths):
        logger.info("%s already has %s; keeping them", folder, ", ".join(ML100K_MEMBERS))
        return paths

    zip_url = _url(GROUPLENS_HOST, ML100K_ZIP_PATH, base_url)
    md5_url = zip_url + ".md5"
    md5_text = _download(md5_url, folder, timeout).decode("ascii", errors="replace")
    match = re.search(r"\b[0-9a-fA-F]{32}\b", md5_text)
    if match is None:
        raise FetchError(
            f"no MD5 checksum found in {md5_url}; place the files in {folder} yourself"
        )
    expected = match.group(0).lower()

    archive = _download(zip_url, folder, timeout)
    actual = hashlib.md5(archive).hexdigest()
    if actual != expected:
        raise ChecksumError(
            f"checksum mismatch for ml-100k.zip downloaded from {zip_url}: expected MD5 "
            f"{expected} (from {md5_url}), got {actual}; the download is corrupt. Retry, or "
            f"place u.data, u.item and u.user in {folder}"
        )

    written: dict[str, bytes] = {}
    try:
        with zipfile.ZipFile(io.BytesIO(archive)) as bundle:
            for member in ML100K_MEMBERS:
                written[member] = bundle.read(f"ml-100k/{member}")
    except (zipfile.BadZipFile, KeyError) as error:
        raise FetchError(f"{zip_url}: not the expected MovieLens-100K archive ({error})") from error
    for member, content in written.items():
        _write_atomic(folder / member, content)
    _record_checksums(folder, written)
    return paths


def fetch_dataset(
    name: str,
    data_dir: str | Path,
    base_url: str | None = None,
    timeout: float = DEFAULT_TIMEOUT_S,
    force: bool = False,
) -> list[Path]:
    """Download dataset ``name`` into ``<data_dir>/<folder>/`` and return the file paths.

    Fetchable: ``ml-100k`` (GroupLens ``ml-100k.zip``, MD5-checked; ``u.data``, ``u.item``
    and ``u.user`` are extracted), ``gowalla`` and ``yelp2018`` (LightGCN ``train.txt`` and
    ``test.txt``). Files already present are kept unless ``force`` is set, except a pinned
    file whose checksum fails, which is downloaded again.

    Args:
        base_url: replaces the scheme and host (``https://files.grouplens.org``,
            ``https://raw.githubusercontent.com``); the URL path is kept, so a mirror or a
            test server must serve the same paths, e.g.
            ``<base_url>/kuandeng/LightGCN/master/Data/gowalla/test.txt``.
        timeout: seconds to wait on each connection and read.

    Raises:
        FetchError: for an unknown name or a failed download (naming the URL).
        ChecksumError: when a download does not match its checksum (naming the file).
    """
    if name not in FETCHABLE:
        known = ", ".join(FETCHABLE)
        raise FetchError(f"cannot fetch {name!r}: downloads exist only for {known}")
    folder_name = REGISTRY[name].folder
    assert folder_name is not None
    folder = Path(data_dir).expanduser() / folder_name
    try:
        if name == "ml-100k":
            return _fetch_movielens_100k(folder, base_url, timeout, force)
        return _fetch_lightgcn(name, folder, base_url, timeout, force)
    except PermissionError as error:
        raise FetchError(
            f"cannot write to {folder} ({error}); choose a writable --data-dir"
        ) from error
