from __future__ import annotations

import pytest
import torch

from lers_ray.config import ConfigError
from lers_ray.embeddings.accounting import artifact_bytes, count_parameters
from lers_ray.embeddings.base import StructureInfeasible
from lers_ray.embeddings.full import FullEmbedding
from lers_ray.embeddings.ptq import (
    PTQSettings,
    QuantizedEmbedding,
    check_feasible,
    pack_codes,
    ptq_sparsity,
    quantize_rows,
    solve_bits,
    unpack_codes,
)
from lers_ray.embeddings.registry import get_method

GOWALLA_ROWS = (29858, 40981)


def random_weight(rows: int, dim: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(rows, dim, generator=torch.Generator().manual_seed(seed))


def test_solver_int8_at_half() -> None:
    assert solve_bits(64, 0.5) == 8
    assert ptq_sparsity(64, 8) == 0.71875


def test_solver_int4_at_point_eight() -> None:
    assert solve_bits(64, 0.8) == 4
    assert ptq_sparsity(64, 4) == 0.84375


def test_solver_boundaries_inclusive() -> None:
    assert solve_bits(64, 0.71875) == 8
    assert solve_bits(64, 0.72) == 4
    assert solve_bits(64, 0.84375) == 4


def test_solver_infeasible_message() -> None:
    pattern = r"0\.95.*40981x64.*4 bits.*maximum reachable sparsity is 0\.84375"
    with pytest.raises(StructureInfeasible, match=pattern):
        check_feasible(40981, 64, 0.95)
    with pytest.raises(StructureInfeasible, match=r"dim 64.*0\.84375"):
        solve_bits(64, 0.95)


def test_solver_target_out_of_range() -> None:
    with pytest.raises(ValueError, match="outside"):
        solve_bits(64, 1.0)


def test_padded_row_sparsity() -> None:
    """dim 6 at 4 bits needs 24 bits, padded to one 32-bit word."""
    assert ptq_sparsity(6, 4) == pytest.approx(1 - 3 / 6)
    table = QuantizedEmbedding.from_weight(random_weight(5, 6), 4)
    assert count_parameters([table]).params_stored == 5 * (1 + 2)


@pytest.mark.parametrize("target, bits", [(0.5, 8), (0.8, 4)])
def test_count_gowalla_tables(target: float, bits: int) -> None:
    spec = get_method("ptq")
    settings = PTQSettings()
    tables = [spec.empty_table(rows, 64, target, settings) for rows in GOWALLA_ROWS]
    assert [table.structure() for table in tables] == [{"bits": bits}] * 2
    count = count_parameters(tables)
    rows = sum(GOWALLA_ROWS)
    assert count.params_full == rows * 64
    assert count.params_stored == rows * 64 * bits // 32 + 2 * rows
    assert count.sparsity == ptq_sparsity(64, bits)
    assert count.sparsity >= target


@pytest.mark.parametrize("bits", [8, 4])
def test_error_at_most_half_scale(bits: int) -> None:
    weight = random_weight(200, 64, seed=bits)
    table = QuantizedEmbedding.from_weight(weight, bits)
    error = (table.weight_matrix() - weight).abs().max(dim=1).values
    assert bool((error <= table.scale / 2 + 1e-6).all())
    assert bool((table.scale > 0).all())


@pytest.mark.parametrize("bits", [8, 4])
def test_codes_span_full_range(bits: int) -> None:
    codes, _, _ = quantize_rows(random_weight(50, 64), bits)
    assert codes.dtype == torch.uint8
    assert bool((codes.min(dim=1).values == 0).all())
    assert bool((codes.max(dim=1).values == 2**bits - 1).all())


@pytest.mark.parametrize("bits", [8, 4])
def test_constant_row_exact(bits: int) -> None:
    weight = random_weight(4, 64)
    weight[1] = 0.3721
    weight[3] = -2.5
    table = QuantizedEmbedding.from_weight(weight, bits)
    decoded = table.weight_matrix()
    assert torch.equal(decoded[1], weight[1])
    assert torch.equal(decoded[3], weight[3])
    assert table.scale[1].item() == 0.0


@pytest.mark.parametrize("bits, dim", [(8, 64), (4, 64), (4, 7), (8, 3)])
def test_artifact_round_trip(bits: int, dim: int) -> None:
    table = QuantizedEmbedding.from_weight(random_weight(33, dim), bits)
    artifact = table.export_artifact()
    assert artifact["codes"].dtype == torch.uint8
    assert artifact["codes"].shape == (33, -(-dim * bits // 8))
    assert artifact["scale"].dtype == torch.float32
    assert artifact["offset"].dtype == torch.float32
    assert artifact["bits"].dtype == torch.int64
    assert artifact["shape"].tolist() == [33, dim]
    decoded = QuantizedEmbedding.decode_artifact(artifact)
    assert decoded.dtype == torch.float32
    torch.testing.assert_close(decoded, table.weight_matrix(), rtol=0.0, atol=1e-5)


def test_int4_artifact_about_half_of_int8() -> None:
    weight = random_weight(1000, 64)
    int8 = artifact_bytes([QuantizedEmbedding.from_weight(weight, 8)])
    int4 = artifact_bytes([QuantizedEmbedding.from_weight(weight, 4)])
    assert 1000 * 64 <= int8 < 1000 * (64 + 9) + 64
    assert 0.5 < int4 / int8 < 0.6


@pytest.mark.parametrize("dim", [1, 5, 64])
def test_pack_unpack_round_trip(dim: int) -> None:
    codes = torch.randint(0, 16, (3, 2, dim), dtype=torch.uint8)
    packed = pack_codes(codes, 4)
    assert packed.shape == (3, 2, (dim + 1) // 2)
    assert torch.equal(unpack_codes(packed, 4, dim), codes)
    assert torch.equal(unpack_codes(pack_codes(codes * 15, 8), 8, dim), codes * 15)


def test_pack_low_nibble_first() -> None:
    packed = pack_codes(torch.tensor([[1, 2, 15]], dtype=torch.uint8), 4)
    assert packed.tolist() == [[1 + 2 * 16, 15]]


def test_lookup_matches_weight_matrix() -> None:
    table = QuantizedEmbedding.from_weight(random_weight(20, 8), 4)
    ids = torch.tensor([[0, 5], [19, 5]])
    matrix = table.weight_matrix()
    assert torch.equal(table(ids), matrix[ids])
    assert table(torch.tensor(3)).shape == (8,)
    assert not matrix.requires_grad
    assert list(table.parameters()) == []


def test_state_dict_round_trip() -> None:
    table = QuantizedEmbedding.from_weight(random_weight(12, 64), 4)
    empty = QuantizedEmbedding(12, 64, 4)
    empty.load_state_dict(table.state_dict())
    assert torch.equal(empty.weight_matrix(), table.weight_matrix())


def test_state_dict_other_width_rejected() -> None:
    table = QuantizedEmbedding.from_weight(random_weight(12, 64), 4)
    with pytest.raises(RuntimeError, match="codes"):
        QuantizedEmbedding(12, 64, 8).load_state_dict(table.state_dict())


def test_non_finite_weight_raises() -> None:
    weight = random_weight(3, 4)
    weight[0, 0] = float("nan")
    with pytest.raises(ValueError, match="non-finite"):
        quantize_rows(weight, 8)


def test_from_trained_derives_bits() -> None:
    spec = get_method("ptq")
    assert spec.post_hoc
    assert spec.from_trained is not None
    full = FullEmbedding(30, 64)
    table = spec.from_trained(full, 0.8, PTQSettings())
    assert isinstance(table, QuantizedEmbedding)
    assert table.structure() == {"bits": 4}
    error = (table.weight_matrix() - full.weight.detach()).abs().max()
    assert error.item() <= table.scale.max().item() / 2 + 1e-6


def test_forced_bits() -> None:
    spec = get_method("ptq")
    assert spec.from_trained is not None
    full = FullEmbedding(30, 64)
    forced = spec.from_trained(full, 0.5, PTQSettings(bits=4))
    assert forced.structure() == {"bits": 4}
    with pytest.raises(StructureInfeasible, match=r"method.settings.bits=8.*0\.71875.*0\.8"):
        spec.from_trained(full, 0.8, PTQSettings(bits=8))
    with pytest.raises(StructureInfeasible, match="0.95"):
        spec.from_trained(full, 0.95, PTQSettings())


def test_settings_round_trip() -> None:
    spec = get_method("ptq")
    for data in ({}, {"bits": 8}, {"bits": 4}):
        settings = spec.parse_settings(data)
        assert spec.parse_settings(settings.to_dict()) == settings
    assert spec.parse_settings({}) == PTQSettings(bits=0)


@pytest.mark.parametrize("value", [3, 16, -4, "8"])
def test_bad_bits_names_key(value: object) -> None:
    with pytest.raises(ConfigError, match=r"method\.settings.*bits"):
        get_method("ptq").parse_settings({"bits": value})
