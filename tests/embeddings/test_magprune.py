from __future__ import annotations

import math

import pytest
import torch

from lers_ray.embeddings.full import FullEmbedding
from lers_ray.embeddings.magprune import (
    magnitude_prune,
    max_row_floor,
    prune_table,
    pruned_count,
)
from lers_ray.embeddings.masked import MaskedEmbedding

SHAPES = [(1, 1), (1, 7), (3, 7), (10, 64), (100, 3), (257, 16)]
TARGETS = [0.0, 0.1, 0.29, 0.5, 0.8, 0.95, 0.999]


def tied_weight(rows: int, dim: int, seed: int = 0) -> torch.Tensor:
    """Integers in [-2, 2]: many ties, including ties at zero."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(-2, 3, (rows, dim), generator=generator).to(torch.float32)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("target", TARGETS)
def test_prune_count_exact_with_ties(shape: tuple[int, int], target: float) -> None:
    weight = tied_weight(*shape)
    mask = magnitude_prune(weight, target)
    n = shape[0] * shape[1]
    assert mask.dtype == torch.bool
    assert mask.shape == weight.shape
    assert int((~mask).sum()) == math.ceil(n * target - 1e-6)


@pytest.mark.parametrize("target", [0.3, 0.5, 0.9])
def test_prune_removes_smallest_magnitudes(target: float) -> None:
    weight = torch.randn(50, 8, generator=torch.Generator().manual_seed(1))
    mask = magnitude_prune(weight, target)
    magnitude = weight.abs()
    assert magnitude[~mask].max() <= magnitude[mask].min()


def test_pruned_count_reads_decimal_targets() -> None:
    assert pruned_count(100, 0.29) == 29
    assert pruned_count(100, 0.295) == 30
    assert pruned_count(7, 0.5) == 4
    assert pruned_count(60352, 0.8) == 48282  # MovieLens-100K users x 64: sparsity >= 0.8


@pytest.mark.parametrize("shape", [(3, 7), (10, 64), (100, 3), (257, 16)])
@pytest.mark.parametrize("target", [0.1, 0.5, 0.8, 0.95])
def test_row_floor_count_exact_and_rows_kept(shape: tuple[int, int], target: float) -> None:
    rows, dim = shape
    weight = tied_weight(rows, dim, seed=3)
    n = rows * dim
    max_k = max_row_floor(rows, dim, target)
    for k in sorted({0, min(1, max_k), max_k}):
        mask = magnitude_prune(weight, target, row_floor_k=k)
        assert int((~mask).sum()) == math.ceil(n * target - 1e-6)
        assert int(mask.sum(dim=1).min()) >= k


def test_row_floor_keeps_each_rows_largest() -> None:
    weight = torch.tensor(
        [
            [0.01, 0.02, 0.03, 0.04],
            [5.0, 6.0, 7.0, 8.0],
        ]
    )
    # Without a floor the 4 smallest entries (all of row 0) go.
    assert magnitude_prune(weight, 0.5)[0].sum() == 0
    mask = magnitude_prune(weight, 0.5, row_floor_k=1)
    assert mask[0].tolist() == [False, False, False, True]
    assert mask[1].tolist() == [False, True, True, True]


def test_row_floor_infeasible_raises() -> None:
    weight = torch.randn(10, 64)
    max_k = max_row_floor(10, 64, 0.8)
    assert max_k == 12
    magnitude_prune(weight, 0.8, row_floor_k=max_k)
    with pytest.raises(ValueError, match=r"row_floor_k=13.*0\.8.*max feasible k is 12"):
        magnitude_prune(weight, 0.8, row_floor_k=13)


@pytest.mark.parametrize("target", [-0.1, 1.0])
def test_prune_target_out_of_range_raises(target: float) -> None:
    with pytest.raises(ValueError, match="outside"):
        magnitude_prune(torch.randn(3, 3), target)


def test_prune_non_finite_weight_raises() -> None:
    weight = torch.randn(3, 3)
    weight[1, 1] = math.nan
    with pytest.raises(ValueError, match="non-finite"):
        magnitude_prune(weight, 0.5)


def test_magprune_embedding_lookup_masked() -> None:
    torch.manual_seed(0)
    full = FullEmbedding(20, 8, init_std=1.0)
    table = prune_table(full, 0.75)
    ids = torch.tensor([[0, 5], [19, 5]])
    expected = (full.weight.detach() * table.mask)[ids]
    assert torch.equal(table(ids), expected)
    assert torch.equal(table.weight_matrix(), full.weight.detach() * table.mask)
    assert int(table.mask.sum()) == 20 * 8 - 120


def test_magprune_artifact_is_narrow_csr() -> None:
    torch.manual_seed(0)
    full = FullEmbedding(300, 64)
    table = prune_table(full, 0.8)
    artifact = table.export_artifact()
    assert artifact["col_indices"].dtype == torch.int8
    assert artifact["crow_indices"].dtype == torch.int16
    assert artifact["values"].dtype == torch.float32
    assert artifact["values"].numel() == int(table.mask.sum())
    rebuilt = torch.sparse_csr_tensor(
        artifact["crow_indices"].long(),
        artifact["col_indices"].long(),
        artifact["values"],
        tuple(artifact["shape"].tolist()),
        check_invariants=True,
    ).to_dense()
    assert torch.equal(rebuilt, table.weight_matrix().detach())


def test_magprune_state_dict_round_trip() -> None:
    torch.manual_seed(0)
    table = prune_table(FullEmbedding(12, 4), 0.5)
    empty = MaskedEmbedding(12, 4)
    empty.load_state_dict(table.state_dict())
    assert torch.equal(empty.weight_matrix(), table.weight_matrix())


@pytest.mark.parametrize("rows, dim", [(943, 64), (1682, 64), (29858, 64), (7, 3)])
@pytest.mark.parametrize("target", [0.5, 0.8, 0.95])
def test_pruned_sparsity_meets_target(rows: int, dim: int, target: float) -> None:
    """Achieved sparsity is in [target, target + 1/n], inside the protocol's 0.01 tolerance."""
    n = rows * dim
    achieved = pruned_count(n, target) / n
    assert achieved >= target
    assert achieved - target < 1.0 / n + 1e-12
