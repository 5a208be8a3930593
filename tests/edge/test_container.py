"""The edge artifact file format: exact round trips, narrow integer storage, clear errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from lers_ray.edge import container
from lers_ray.edge.container import ArtifactError


def test_round_trip_keeps_values_dtypes_and_shapes() -> None:
    tensors = {
        "values": torch.randn(5, 3),
        "crow": torch.tensor([0, 2, 300, 70000], dtype=torch.int64),
        "cols": torch.tensor([0, 63, 5], dtype=torch.int8),
        "signed": torch.tensor([-5, 7], dtype=torch.int32),
        "scalar": torch.tensor(1e-5, dtype=torch.float64),
        "codes": torch.tensor([[1, 255]], dtype=torch.uint8),
        "empty": torch.zeros(0, dtype=torch.int64),
    }
    meta, back = container.decode(container.encode({"kind": "x", "n": 3}, tensors))
    assert meta == {"kind": "x", "n": 3}
    assert list(back) == list(tensors)
    for name, tensor in tensors.items():
        assert back[name].dtype == tensor.dtype, name
        assert torch.equal(back[name], tensor), name


def test_integers_stored_in_narrowest_type() -> None:
    small = {"ids": torch.arange(200, dtype=torch.int64)}
    wide = {"ids": torch.tensor([0, 70000], dtype=torch.int64)}
    # 200 values of one byte each, against 2 values of four bytes (uint32 for 70000).
    assert len(container.encode({}, small)) - len(container.encode({}, {})) < 200 + 60
    assert container.narrowest_integer_dtype(np.array([0, 255])) == np.uint8
    assert container.narrowest_integer_dtype(np.array([-1, 100])) == np.int8
    assert container.narrowest_integer_dtype(np.array([0, 65535])) == np.uint16
    assert container.narrowest_integer_dtype(np.array([0, 70000])) == np.uint32
    assert container.narrowest_integer_dtype(np.array([-1, 2**40])) == np.int64
    assert torch.equal(container.decode(container.encode({}, wide))[1]["ids"], wide["ids"])


def test_bad_files_get_errors_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "model.lers"
    container.write(path, {"kind": "x"}, {"w": torch.ones(100)})
    data = path.read_bytes()

    (tmp_path / "other.pt").write_bytes(b"PK\x03\x04 a zip file")
    with pytest.raises(ArtifactError, match=r"other\.pt: not a lers_ray edge artifact"):
        container.read(tmp_path / "other.pt")
    (tmp_path / "cut.lers").write_bytes(data[:-10])
    with pytest.raises(ArtifactError, match=r"cut\.lers: tensor 'w' ends at byte"):
        container.read(tmp_path / "cut.lers")
    with pytest.raises(ArtifactError, match="missing.lers: artifact file not found"):
        container.read(tmp_path / "missing.lers")
    future = data.replace(b'"version":1', b'"version":9')
    with pytest.raises(ArtifactError, match="format version 9 is not supported"):
        container.decode(future, source="future.lers")


def test_unsupported_dtype_is_named() -> None:
    with pytest.raises(ArtifactError, match="tensor 'z' has dtype torch.complex64"):
        container.encode({}, {"z": torch.zeros(2, dtype=torch.complex64)})


def test_read_meta_reads_only_the_header(tmp_path: Path) -> None:
    path = tmp_path / "g.lers"
    container.write(path, {"kind": "cf_graph", "fingerprint": "abc"}, {"x": torch.ones(3)})
    assert container.read_meta(path) == {"kind": "cf_graph", "fingerprint": "abc"}
