from __future__ import annotations

import pytest
import torch

from lers_ray.config import ConfigError
from lers_ray.embeddings.full import FullEmbedding
from lers_ray.embeddings.magprune import magnitude_prune, max_row_floor, pruned_count
from lers_ray.embeddings.masked import MaskedEmbedding
from lers_ray.embeddings.random_prune import (
    RandomPruneSettings,
    random_prune,
    random_prune_table,
)
from lers_ray.embeddings.registry import get_method

SHAPES = [(1, 1), (3, 7), (10, 64), (100, 3), (257, 16)]
TARGETS = [0.0, 0.1, 0.29, 0.5, 0.8, 0.95, 0.999]


def tied_weight(rows: int, dim: int, seed: int = 0) -> torch.Tensor:
    """Integers in [-2, 2]: many ties, including ties at zero."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(-2, 3, (rows, dim), generator=generator).to(torch.float32)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("target", TARGETS)
def test_random_prune_count_exact_with_ties(shape: tuple[int, int], target: float) -> None:
    weight = tied_weight(*shape)
    mask = random_prune(weight, target, seed=5)
    assert mask.dtype == torch.bool
    assert mask.shape == weight.shape
    assert int((~mask).sum()) == pruned_count(shape[0] * shape[1], target)


@pytest.mark.parametrize("shape", [(3, 7), (10, 64), (257, 16)])
@pytest.mark.parametrize("target", [0.1, 0.5, 0.8, 0.95])
def test_row_floor_exact_count(shape: tuple[int, int], target: float) -> None:
    rows, dim = shape
    weight = tied_weight(rows, dim, seed=3)
    max_k = max_row_floor(rows, dim, target)
    for k in sorted({0, min(1, max_k), max_k}):
        mask = random_prune(weight, target, row_floor_k=k, seed=1)
        assert int((~mask).sum()) == pruned_count(rows * dim, target)
        assert int(mask.sum(dim=1).min()) >= k


def test_row_floor_protects_largest_entries() -> None:
    weight = torch.randn(40, 16, generator=torch.Generator().manual_seed(2))
    k = 3
    mask = random_prune(weight, 0.8, row_floor_k=k, seed=4)
    largest = torch.topk(weight.abs(), k, dim=1).indices
    assert bool(mask.gather(1, largest).all())


def test_same_seed_same_mask() -> None:
    weight = torch.randn(50, 8, generator=torch.Generator().manual_seed(1))
    first = random_prune(weight, 0.5, row_floor_k=1, seed=7)
    second = random_prune(weight, 0.5, row_floor_k=1, seed=7)
    assert torch.equal(first, second)


def test_different_seed_different_mask() -> None:
    weight = torch.randn(50, 8, generator=torch.Generator().manual_seed(1))
    first = random_prune(weight, 0.5, seed=7)
    second = random_prune(weight, 0.5, seed=8)
    assert not torch.equal(first, second)


def test_mask_differs_from_magprune() -> None:
    weight = torch.randn(50, 8, generator=torch.Generator().manual_seed(1))
    random_mask = random_prune(weight, 0.5)
    magnitude_mask = magnitude_prune(weight, 0.5)
    assert not torch.equal(random_mask, magnitude_mask)
    # Random pruning removes some large entries that magnitude pruning keeps.
    magnitude = weight.abs()
    assert magnitude[~random_mask].max() > magnitude[random_mask].min()


def test_mask_ignores_magnitudes_without_floor() -> None:
    """Without a floor the mask depends on the seed and shape only, not on the values."""
    generator = torch.Generator().manual_seed(1)
    first = random_prune(torch.randn(30, 8, generator=generator), 0.6, seed=3)
    second = random_prune(torch.randn(30, 8, generator=generator), 0.6, seed=3)
    assert torch.equal(first, second)


def test_row_floor_infeasible_raises() -> None:
    weight = torch.randn(10, 64)
    assert max_row_floor(10, 64, 0.8) == 12
    random_prune(weight, 0.8, row_floor_k=12)
    with pytest.raises(ValueError, match=r"row_floor_k=13.*max feasible k is 12"):
        random_prune(weight, 0.8, row_floor_k=13)
    with pytest.raises(ValueError, match=r"row_floor_k=65.*max feasible k is 12"):
        random_prune(weight, 0.8, row_floor_k=65)


@pytest.mark.parametrize("target", [-0.1, 1.0])
def test_target_out_of_range_raises(target: float) -> None:
    with pytest.raises(ValueError, match="outside"):
        random_prune(torch.randn(3, 3), target, row_floor_k=1)


def test_non_finite_weight_raises() -> None:
    weight = torch.randn(3, 3)
    weight[1, 1] = float("inf")
    with pytest.raises(ValueError, match="non-finite"):
        random_prune(weight, 0.5)


def test_table_holds_masked_weight() -> None:
    torch.manual_seed(0)
    full = FullEmbedding(20, 8, init_std=1.0)
    table = random_prune_table(full, 0.75, seed=2)
    assert isinstance(table, MaskedEmbedding)
    expected = full.weight.detach() * table.mask
    assert torch.equal(table.weight_matrix(), expected)
    ids = torch.tensor([[0, 5], [19, 5]])
    assert torch.equal(table(ids), expected[ids])
    assert int(table.mask.sum()) == 20 * 8 - 120


def test_method_builds_masked_table() -> None:
    spec = get_method("random_prune")
    assert spec.post_hoc
    settings = spec.parse_settings({"row_floor_k": 2, "seed": 9})
    assert settings == RandomPruneSettings(row_floor_k=2, seed=9)
    assert spec.parse_settings(settings.to_dict()) == settings
    assert spec.from_trained is not None
    table = spec.from_trained(FullEmbedding(30, 8), 0.5, settings)
    assert isinstance(table, MaskedEmbedding)
    assert int(table.mask.sum()) == 120
    assert int(table.mask.sum(dim=1).min()) >= 2
    assert isinstance(spec.empty_table(30, 8, 0.5, settings), MaskedEmbedding)


@pytest.mark.parametrize("key, value", [("row_floor_k", -1), ("seed", -3), ("seed", "1")])
def test_bad_settings_name_key(key: str, value: object) -> None:
    with pytest.raises(ConfigError, match=rf"method\.settings.*{key}"):
        get_method("random_prune").parse_settings({key: value})
