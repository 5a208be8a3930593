from __future__ import annotations

import math

import pytest
import torch

from lers_ray.config import ConfigError
from lers_ray.embeddings.accounting import count_parameters
from lers_ray.embeddings.base import StructureInfeasible
from lers_ray.embeddings.qr import (
    COMBINERS,
    QREmbedding,
    QRSettings,
    QRStructure,
    check_feasible,
    partition_stds,
    solve_qr,
)
from lers_ray.embeddings.registry import get_method

GOWALLA_ROWS = [29858, 40981]
TARGETS = [0.5, 0.8, 0.95]
DIM = 64


def build(num_embeddings: int, target: float, combiner: str, dim: int = DIM) -> QREmbedding:
    spec = get_method("qr")
    table = spec.create(num_embeddings, dim, target, QRSettings(combiner=combiner), 0.1)
    assert isinstance(table, QREmbedding)
    return table


def small_table(radices: tuple[int, ...], combiner: str, rows: int) -> QREmbedding:
    torch.manual_seed(0)
    return QREmbedding(rows, 12, QRStructure(radices, combiner))


def counted_sparsity(structure: QRStructure, rows: int, dim: int = DIM) -> float:
    table = QREmbedding(rows, dim, structure)
    return count_parameters([table]).sparsity


@pytest.mark.parametrize("rows", GOWALLA_ROWS)
@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("combiner", COMBINERS)
def test_solver_nearest_above_target(rows: int, target: float, combiner: str) -> None:
    table = build(rows, target, combiner)
    achieved = count_parameters([table]).sparsity
    assert achieved >= target
    radices = table.qr_structure.radices
    assert math.prod(radices) >= rows
    if achieved > target + 0.01:
        # The gap must come from the granularity: the next structure with more rows per
        # partition (one step smaller D) already falls below the target.
        base = radices[0]
        k = len(radices)
        assert (
            base == 2
            or counted_sparsity(
                QRStructure(
                    (base - 1,) * (k - 1) + (math.ceil(rows / (base - 1) ** (k - 1)),), combiner
                ),
                rows,
            )
            < target
        )


@pytest.mark.parametrize("rows", GOWALLA_ROWS)
def test_solver_gaps_at_half(rows: int) -> None:
    # D = 2 keeps half the rows plus two, so it misses 0.5, and D = 3 overshoots to 2/3.
    mult = build(rows, 0.5, "mult")
    assert mult.qr_structure.radices == (3, math.ceil(rows / 3))
    assert count_parameters([mult]).sparsity == pytest.approx(2 / 3, abs=0.001)
    assert counted_sparsity(QRStructure((2, math.ceil(rows / 2)), "mult"), rows) < 0.5
    # concat halves the width, so its smallest D already gives about 0.75.
    concat = build(rows, 0.5, "concat")
    assert concat.qr_structure.radices == (2, math.ceil(rows / 2))
    assert count_parameters([concat]).sparsity == pytest.approx(0.75, abs=0.001)


def test_solver_within_tolerance_at_095() -> None:
    for rows in GOWALLA_ROWS:
        for combiner in COMBINERS:
            achieved = count_parameters([build(rows, 0.95, combiner)]).sparsity
            assert 0.95 <= achieved <= 0.96, (rows, combiner, achieved)


def test_small_table_needs_three_partitions() -> None:
    table = build(943, 0.95, "mult")
    assert table.qr_structure.radices == (6, 6, 27)
    assert table.structure() == {"partitions": 3, "radices": [6, 6, 27], "combiner": "mult"}
    achieved = count_parameters([table]).sparsity
    assert 0.95 <= achieved <= 0.96
    # No two-partition structure fits: the best one, D = 31, keeps 62 rows of 943.
    assert counted_sparsity(QRStructure((31, 31), "mult"), 943) < 0.95


def test_infeasible_names_table_and_best() -> None:
    with pytest.raises(StructureInfeasible, match=r"10x4 table.*best reachable sparsity"):
        solve_qr(10, 4, 0.95, "mult")
    with pytest.raises(StructureInfeasible, match=r"10x4 table.*best reachable sparsity"):
        check_feasible(10, 4, 0.95)
    check_feasible(943, DIM, 0.95)


def test_concat_needs_divisible_dim() -> None:
    # 5 splits into neither 2, 3 nor 4 equal parts, so concat has no structure at all.
    with pytest.raises(StructureInfeasible, match="'concat'"):
        solve_qr(1000, 5, 0.5, "concat")
    assert solve_qr(1000, 5, 0.5, "mult").partitions == 2
    with pytest.raises(ValueError, match="divisible"):
        QREmbedding(100, 5, QRStructure((10, 10), "concat"))


def test_radices_must_cover_rows() -> None:
    with pytest.raises(ValueError, match="cover 20 ids"):
        QREmbedding(21, 4, QRStructure((4, 5), "mult"))


def test_two_partitions_are_remainder_and_quotient() -> None:
    table = small_table((7, 15), "mult", 100)
    remainder, quotient = table.partitions
    rows = table.weight_matrix()
    for x in (0, 6, 7, 50, 99):
        expected = remainder[x % 7] * quotient[x // 7]
        assert torch.equal(rows[x], expected)


@pytest.mark.parametrize("combiner", COMBINERS)
@pytest.mark.parametrize("radices", [(7, 15), (3, 4, 9), (2, 3, 3, 6)])
def test_forward_matches_weight_matrix(combiner: str, radices: tuple[int, ...]) -> None:
    rows = 100
    if combiner == "concat" and 12 % len(radices) != 0:
        pytest.skip("12 is divisible by 2, 3 and 4")
    table = small_table(radices, combiner, rows)
    ids = torch.randint(0, rows, (6, 5), generator=torch.Generator().manual_seed(1))
    looked_up = table(ids)
    assert looked_up.shape == (6, 5, 12)
    assert torch.allclose(looked_up, table.weight_matrix()[ids], atol=1e-6)
    assert table.weight_matrix().shape == (rows, 12)


@pytest.mark.parametrize("combiner", COMBINERS)
def test_gradients_reach_every_partition(combiner: str) -> None:
    table = small_table((3, 4, 9), combiner, 100)
    table.weight_matrix().pow(2).sum().backward()
    for part in table.partitions:
        assert part.grad is not None
        assert bool((part.grad != 0).any())
    table.zero_grad()
    table(torch.tensor([0, 13, 99])).sum().backward()
    for part in table.partitions:
        assert part.grad is not None
        assert bool((part.grad != 0).any())


@pytest.mark.parametrize("combiner", COMBINERS)
def test_artifact_decodes_to_weight_matrix(combiner: str) -> None:
    table = build(943, 0.8, combiner)
    table.eval()
    artifact = table.export_artifact()
    for j in range(table.qr_structure.partitions):
        assert artifact[f"partition_{j}"].dtype == torch.float32
    assert artifact["radices"].dtype == torch.int64
    decoded = QREmbedding.decode_artifact(artifact)
    assert decoded.dtype == torch.float32
    assert decoded.shape == (943, DIM)
    assert torch.allclose(decoded, table.weight_matrix().detach(), atol=1e-5)


@pytest.mark.parametrize("combiner", COMBINERS)
def test_init_scale_matches_init_std(combiner: str) -> None:
    torch.manual_seed(0)
    table = get_method("qr").create(5000, DIM, 0.8, QRSettings(combiner=combiner), 0.2)
    weight = table.weight_matrix().detach()
    assert weight.std().item() == pytest.approx(0.2, rel=0.3)
    assert abs(weight.mean().item()) < 0.02


def test_partition_stds_by_combiner() -> None:
    assert partition_stds(QRStructure((3, 10), "mult"), 0.04) == pytest.approx([0.2, 0.2])
    add = partition_stds(QRStructure((3, 997), "add"), 0.1)
    assert sum(std**2 for std in add) == pytest.approx(0.01)
    # The 3-row partition is shared by hundreds of ids, so it starts far smaller.
    assert add[0] < add[1] / 10
    concat = partition_stds(QRStructure((3, 997), "concat"), 0.1)
    assert sum(std**2 for std in concat) / 2 == pytest.approx(0.01)


def test_settings_round_trip_and_bad_combiner() -> None:
    spec = get_method("qr")
    settings = spec.parse_settings({"combiner": "concat"})
    assert settings == QRSettings(combiner="concat")
    assert spec.parse_settings(settings.to_dict()) == settings
    assert spec.parse_settings(None) == QRSettings()
    with pytest.raises(ConfigError, match=r"method\.settings\.combiner"):
        spec.parse_settings({"combiner": "prod"})
    with pytest.raises(ConfigError, match="combiner"):
        spec.parse_settings({"combiner": 3})
    assert spec.check_feasible is check_feasible
