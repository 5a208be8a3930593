from __future__ import annotations

import math

import pytest
import torch

from lers_ray.config import ConfigError
from lers_ray.embeddings.accounting import count_parameters
from lers_ray.embeddings.base import StructureInfeasible
from lers_ray.embeddings.registry import get_method
from lers_ray.embeddings.ttrec import (
    TTRecEmbedding,
    TTRecSettings,
    TTStructure,
    check_feasible,
    column_factors,
    rank_caps,
    row_digits,
    row_factors,
    solve_ttrec,
)

GOWALLA_ROWS = [29858, 40981]
TARGETS = [0.5, 0.8, 0.95]
DIM = 64


def build(num_embeddings: int, target: float, num_cores: int) -> TTRecEmbedding:
    spec = get_method("ttrec")
    table = spec.create(num_embeddings, DIM, target, TTRecSettings(num_cores=num_cores), 0.1)
    assert isinstance(table, TTRecEmbedding)
    return table


def small_table(num_cores: int) -> TTRecEmbedding:
    torch.manual_seed(0)
    ranks = (3, 5) if num_cores == 3 else (3, 5, 2)
    structure = TTStructure(row_factors(100, num_cores), column_factors(16, num_cores), ranks)
    return TTRecEmbedding(100, 16, structure)


@pytest.mark.parametrize("rows", [*GOWALLA_ROWS, 943])
@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("num_cores", [3, 4])
def test_solver_within_tolerance(rows: int, target: float, num_cores: int) -> None:
    table = build(rows, target, num_cores)
    achieved = count_parameters([table]).sparsity
    assert target <= achieved <= target + 0.01
    structure = table.tt_structure
    assert all(
        r <= cap
        for r, cap in zip(structure.ranks, rank_caps(structure.p_shapes, structure.q_shapes))
    )
    assert math.prod(structure.p_shapes) >= rows
    assert math.prod(structure.q_shapes) == DIM


def test_solver_gowalla_structures() -> None:
    assert build(40981, 0.8, 3).structure() == {
        "p_shapes": [34, 35, 35],
        "q_shapes": [4, 4, 4],
        "ranks": [60, 60],
    }
    assert build(29858, 0.95, 4).structure()["q_shapes"] == [4, 2, 2, 4]


def test_row_factors_balanced_and_smallest() -> None:
    assert row_factors(40981, 3) == (34, 35, 35)
    assert row_factors(29858, 3) == (31, 31, 32)
    assert row_factors(64, 3) == (4, 4, 4)
    assert row_factors(65, 3) == (4, 4, 5)
    assert row_factors(1, 4) == (1, 1, 1, 1)
    for rows in (2, 943, 29858, 40981, 123457):
        for cores in (3, 4):
            factors = row_factors(rows, cores)
            assert math.prod(factors) >= rows
            assert max(factors) - min(factors) <= 1
            # Lowering the largest factor, the next smaller balanced choice, no longer covers.
            smaller = (*factors[:-1], factors[-1] - 1)
            assert math.prod(smaller) < rows


def test_column_factors() -> None:
    assert column_factors(64, 3) == (4, 4, 4)
    assert column_factors(64, 4) == (4, 2, 2, 4)
    assert column_factors(16, 3) == (4, 2, 2)
    assert column_factors(7, 3) == (7, 1, 1)
    with pytest.raises(ValueError, match="dim"):
        column_factors(0, 3)


def test_infeasible_names_table_and_best() -> None:
    with pytest.raises(StructureInfeasible, match=r"10x64 table.*best reachable sparsity"):
        solve_ttrec(10, DIM, 0.99, 3)
    with pytest.raises(StructureInfeasible, match=r"10x64 table.*best reachable sparsity"):
        check_feasible(10, DIM, 0.99)
    check_feasible(943, DIM, 0.95)
    with pytest.raises(ValueError, match="num_cores 5"):
        solve_ttrec(943, DIM, 0.5, 5)


def test_structure_validation() -> None:
    with pytest.raises(ValueError, match="cover 27 rows"):
        TTRecEmbedding(30, 8, TTStructure((3, 3, 3), (2, 2, 2), (2, 2)))
    with pytest.raises(ValueError, match="dim=8"):
        TTRecEmbedding(27, 8, TTStructure((3, 3, 3), (2, 2, 3), (2, 2)))
    with pytest.raises(ValueError, match="internal ranks"):
        TTRecEmbedding(27, 8, TTStructure((3, 3, 3), (2, 2, 2), (2,)))


@pytest.mark.parametrize("num_cores", [3, 4])
def test_weight_matrix_is_core_product(num_cores: int) -> None:
    table = small_table(num_cores)
    structure = table.tt_structure
    weight = table.weight_matrix()
    assert weight.shape == (100, 16)
    for x in (0, 1, 37, 99):
        digits = [int(d) for d in row_digits(torch.tensor(x), structure.p_shapes)]
        assert x == sum(d * math.prod(structure.p_shapes[i + 1 :]) for i, d in enumerate(digits))
        for column in (0, 5, 15):
            rest = column
            col_digits = []
            for q in reversed(structure.q_shapes):
                col_digits.append(rest % q)
                rest //= q
            col_digits.reverse()
            product = torch.ones(1, 1)
            for core, i, j in zip(table.cores, digits, col_digits):
                product = product @ core[:, i, j, :]
            assert weight[x, column].item() == pytest.approx(product.item(), abs=1e-6)


@pytest.mark.parametrize("num_cores", [3, 4])
def test_forward_matches_weight_matrix(num_cores: int) -> None:
    table = small_table(num_cores)
    limit = table.per_id_limit()
    assert limit >= 1
    generator = torch.Generator().manual_seed(1)
    per_id = torch.randint(0, 100, (limit,), generator=generator)
    whole_table = torch.randint(0, 100, (3, limit + 1), generator=generator)
    for ids in (per_id, whole_table):
        looked_up = table(ids)
        assert looked_up.shape == (*ids.shape, 16)
        assert torch.allclose(looked_up, table.weight_matrix()[ids], atol=1e-6)


@pytest.mark.parametrize("num_cores", [3, 4])
def test_forward_per_id_on_gowalla_table(num_cores: int) -> None:
    table = build(40981, 0.95, num_cores)
    assert 16 < table.per_id_limit() < 2048
    ids = torch.randint(0, 40981, (4, 4), generator=torch.Generator().manual_seed(2))
    looked_up = table(ids)
    assert looked_up.shape == (4, 4, DIM)
    assert torch.allclose(looked_up, table.weight_matrix()[ids], atol=1e-6)


@pytest.mark.parametrize("num_cores", [3, 4])
def test_gradients_reach_every_core(num_cores: int) -> None:
    table = small_table(num_cores)
    table.weight_matrix().pow(2).sum().backward()
    for core in table.cores:
        assert core.grad is not None
        assert bool((core.grad != 0).any())
    table.zero_grad()
    table(torch.tensor([0, 42, 99])).pow(2).sum().backward()
    for core in table.cores:
        assert core.grad is not None
        assert bool((core.grad != 0).any())


@pytest.mark.parametrize("num_cores", [3, 4])
def test_artifact_decodes_to_weight_matrix(num_cores: int) -> None:
    table = build(943, 0.8, num_cores)
    table.eval()
    artifact = table.export_artifact()
    for i in range(num_cores):
        assert artifact[f"core_{i}"].dtype == torch.float32
    for key in ("p_shapes", "q_shapes", "ranks"):
        assert artifact[key].dtype == torch.int64
    assert artifact["ranks"].tolist() == list(table.tt_structure.ranks)
    decoded = TTRecEmbedding.decode_artifact(artifact)
    assert decoded.dtype == torch.float32
    assert decoded.shape == (943, DIM)
    assert torch.allclose(decoded, table.weight_matrix().detach(), atol=1e-5)


@pytest.mark.parametrize("num_cores", [3, 4])
def test_init_scale_matches_init_std(num_cores: int) -> None:
    torch.manual_seed(0)
    table = get_method("ttrec").create(5000, DIM, 0.8, TTRecSettings(num_cores=num_cores), 0.2)
    weight = table.weight_matrix().detach()
    assert weight.std().item() == pytest.approx(0.2, rel=0.3)


def test_settings_round_trip_and_bad_num_cores() -> None:
    spec = get_method("ttrec")
    settings = spec.parse_settings({"num_cores": 4})
    assert settings == TTRecSettings(num_cores=4)
    assert spec.parse_settings(settings.to_dict()) == settings
    assert spec.parse_settings(None) == TTRecSettings()
    with pytest.raises(ConfigError, match=r"method\.settings\.num_cores"):
        spec.parse_settings({"num_cores": 2})
    with pytest.raises(ConfigError, match="num_cores"):
        spec.parse_settings({"num_cores": "3"})
    assert spec.check_feasible is check_feasible
