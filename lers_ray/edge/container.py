"""The file format of edge artifacts: a small JSON header followed by raw tensor bytes.

Layout, all integers little-endian::

    b"LERSEDGE"  (8 bytes)
    header length H  (uint32)
    header  (H bytes of UTF-8 JSON): {"version": 1, "meta": {...}, "tensors": [...]}
    tensor data  (the tensors' bytes back to back, in header order)

Each tensor entry is ``[name, stored dtype, restored dtype, shape, nbytes]``. Integer tensors
are stored in the narrowest integer type that fits their values, for instance ``uint8`` for
CSR column indices when ``dim <= 256``. Reading restores their original dtype. So index
arrays cost what their values need and no more. Floats are stored as they are.

Reading needs numpy and torch only, so a device can load artifacts without the sweep stack.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

import numpy as np
import torch

MAGIC = b"LERSEDGE"
FORMAT_VERSION = 1
_LENGTH = struct.Struct("<I")

_INTEGER_CHOICES = (np.uint8, np.int8, np.uint16, np.int16, np.uint32, np.int32, np.int64)
"""Storage candidates for integer tensors, smallest first."""

_TORCH_DTYPES = {
    "bool": torch.bool,
    "uint8": torch.uint8,
    "int8": torch.int8,
    "int16": torch.int16,
    "int32": torch.int32,
    "int64": torch.int64,
    "float16": torch.float16,
    "float32": torch.float32,
    "float64": torch.float64,
}
_NUMPY_OF_TORCH = {name: np.dtype(name) for name in _TORCH_DTYPES}


NOT_AN_ARTIFACT = (
    f"not a lers_ray edge artifact (it does not start with {MAGIC!r}). Give the artifact.lers "
    "that a trial wrote beside its best_model.pt, or a graph.lers for a graph"
)


class ArtifactError(ValueError):
    """An artifact file is not a valid lers_ray edge artifact."""


def narrowest_integer_dtype(values: np.ndarray) -> np.dtype:
    """Return the smallest integer dtype that fits every value of ``values``."""
    if values.size == 0:
        return np.dtype(np.uint8)
    low, high = int(values.min()), int(values.max())
    for candidate in _INTEGER_CHOICES:
        info = np.iinfo(candidate)
        if info.min <= low and high <= info.max:
            return np.dtype(candidate)
    raise ArtifactError(f"integer values {low}..{high} do not fit in int64")


def encode(meta: dict[str, Any], tensors: dict[str, torch.Tensor]) -> bytes:
    """Return the artifact bytes of ``meta`` (JSON-serialisable) and ``tensors``.

    Raises:
        ArtifactError: on a tensor dtype the format does not store (complex, bfloat16).
    """
    entries: list[list[Any]] = []
    blobs: list[bytes] = []
    for name, tensor in tensors.items():
        torch_name = str(tensor.dtype).removeprefix("torch.")
        if torch_name not in _TORCH_DTYPES:
            raise ArtifactError(
                f"tensor {name!r} has dtype {tensor.dtype}, which edge artifacts do not store; "
                f"convert it to one of {', '.join(_TORCH_DTYPES)}"
            )
        array = tensor.detach().cpu().contiguous().numpy()
        stored = array.dtype
        if np.issubdtype(array.dtype, np.integer):
            stored = narrowest_integer_dtype(array)
        data = np.ascontiguousarray(array.astype(stored.newbyteorder("<"), copy=False)).tobytes()
        entries.append([name, stored.name, torch_name, list(array.shape), len(data)])
        blobs.append(data)
    header = json.dumps(
        {"version": FORMAT_VERSION, "meta": meta, "tensors": entries}, separators=(",", ":")
    ).encode("utf-8")
    return b"".join([MAGIC, _LENGTH.pack(len(header)), header, *blobs])


def decode(
    data: bytes | bytearray | memoryview, source: str = "artifact"
) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """Parse artifact bytes into ``(meta, tensors)``; tensors get their original dtypes.

    Args:
        data: the artifact's bytes.
        source: what to call the artifact in error messages (its path, usually).

    Raises:
        ArtifactError: naming ``source`` when the bytes are not a complete artifact.
    """
    view = memoryview(data)
    prefix = len(MAGIC) + _LENGTH.size
    if len(view) < prefix or bytes(view[: len(MAGIC)]) != MAGIC:
        raise ArtifactError(f"{source}: {NOT_AN_ARTIFACT}")
    (header_length,) = _LENGTH.unpack(view[len(MAGIC) : prefix])
    if len(view) < prefix + header_length:
        raise ArtifactError(f"{source}: truncated header; copy the file again")
    try:
        header = json.loads(bytes(view[prefix : prefix + header_length]).decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ArtifactError(f"{source}: header is not valid JSON ({error})") from error
    version = header.get("version")
    if version != FORMAT_VERSION:
        raise ArtifactError(
            f"{source}: format version {version} is not supported (this lers_ray reads "
            f"version {FORMAT_VERSION}); export the artifact with a matching lers_ray"
        )
    tensors: dict[str, torch.Tensor] = {}
    offset = prefix + header_length
    for name, stored, restored, shape, nbytes in header["tensors"]:
        if offset + nbytes > len(view):
            raise ArtifactError(
                f"{source}: tensor {name!r} ends at byte {offset + nbytes}, past the end of "
                f"the file ({len(view)} bytes); the file is truncated, copy it again"
            )
        stored_dtype = np.dtype(stored).newbyteorder("<")
        array = np.frombuffer(
            view, dtype=stored_dtype, count=nbytes // stored_dtype.itemsize, offset=offset
        )
        target = _NUMPY_OF_TORCH.get(restored)
        if target is None:
            raise ArtifactError(f"{source}: tensor {name!r} has unknown dtype {restored!r}")
        # astype copies into an aligned, writable, native-order array that torch can own.
        tensors[name] = torch.from_numpy(array.astype(target).reshape(shape))
        offset += nbytes
    return header["meta"], tensors


def read_meta(path: str | Path) -> dict[str, Any]:
    """Return an artifact file's ``meta`` without reading its tensors.

    Raises:
        ArtifactError: naming the file when it is not an artifact.
    """
    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"{path}: artifact file not found")
    with path.open("rb") as handle:
        prefix = handle.read(len(MAGIC) + _LENGTH.size)
        if len(prefix) < len(MAGIC) + _LENGTH.size or prefix[: len(MAGIC)] != MAGIC:
            raise ArtifactError(f"{path}: {NOT_AN_ARTIFACT}")
        (header_length,) = _LENGTH.unpack(prefix[len(MAGIC) :])
        try:
            header = json.loads(handle.read(header_length).decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise ArtifactError(f"{path}: header is not valid JSON ({error})") from error
    meta: dict[str, Any] = header.get("meta", {})
    return meta


def write(path: str | Path, meta: dict[str, Any], tensors: dict[str, torch.Tensor]) -> int:
    """Write an artifact file and return its size in bytes."""
    data = encode(meta, tensors)
    Path(path).write_bytes(data)
    return len(data)


def read(path: str | Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """Read an artifact file written by :func:`write`.

    Raises:
        ArtifactError: naming the file when it is missing or not an artifact.
    """
    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"{path}: artifact file not found")
    return decode(path.read_bytes(), source=str(path))
