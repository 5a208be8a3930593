from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from lers_ray.config import ConfigError
from lers_ray.embeddings.accounting import count_parameters
from lers_ray.embeddings.masked import MaskedEmbedding
from lers_ray.embeddings.pep import (
    GRANULARITIES,
    METHOD,
    PEPEmbedding,
    PEPSettings,
    keep_largest_margins,
)
from lers_ray.embeddings.registry import get_method
from lers_ray.embeddings.spec import TWO_STAGE
from lers_ray.sweep.space import load_search_space

SPACE_FILE = Path(__file__).resolve().parents[2] / "search_spaces" / "methods" / "pep.yaml"
GOWALLA_ROWS = [29858, 40981]
TARGETS = [0.5, 0.8, 0.95]


def tied_table(rows: int, dim: int, granularity: str = "element", seed: int = 0) -> PEPEmbedding:
    """A PEP table whose weights are in {-0.2, -0.1, 0.1, 0.2}: many tied margins, none zero."""
    table = PEPEmbedding(rows, dim, granularity=granularity, init_threshold=-4.0)
    generator = torch.Generator().manual_seed(seed)
    values = torch.tensor([-0.2, -0.1, 0.1, 0.2])
    with torch.no_grad():
        table.weight.copy_(values[torch.randint(0, 4, (rows, dim), generator=generator)])
    return table


def bpr_toy_loss(table: PEPEmbedding, generator: torch.Generator) -> torch.Tensor:
    """A BPR-like loss: rows ``u`` should score row ``(u + 1) mod N`` above a random row."""
    rows = table.num_embeddings
    users = torch.randint(0, rows, (64,), generator=generator)
    negatives = torch.randint(0, rows, (64,), generator=generator)
    user_emb = table(users)
    pos_score = (user_emb * table((users + 1) % rows)).sum(-1)
    neg_score = (user_emb * table(negatives)).sum(-1)
    return F.softplus(neg_score - pos_score).mean()


@pytest.mark.parametrize("shape", [(1, 1), (3, 7), (10, 64), (257, 16)])
@pytest.mark.parametrize("target", [0.0, 0.29, 0.5, 0.8, 0.95, 0.999])
def test_keep_masks_exact_count_with_ties(shape: tuple[int, int], target: float) -> None:
    rows, dim = shape
    n = rows * dim
    table = tied_table(rows, dim)
    mask = table.keep_masks(target)["weight"]
    assert mask.dtype == torch.bool
    assert mask.shape == (rows, dim)
    assert int(mask.sum()) == n - math.ceil(n * target - 1e-6)

    achieved = count_parameters([table.fixed({"weight": mask})]).sparsity
    assert achieved >= target
    assert achieved < target + 1.0 / n + 1e-12


def test_keep_masks_ranks_by_margin() -> None:
    torch.manual_seed(0)
    table = PEPEmbedding(40, 8, granularity="row", init_threshold=-3.0)
    with torch.no_grad():
        table.threshold.copy_(torch.linspace(-6.0, 0.0, 40).unsqueeze(1))
    mask = table.keep_masks(0.7)["weight"]
    margin = table.weight.detach().abs() - torch.sigmoid(table.threshold.detach())
    assert margin[mask].min() >= margin[~mask].max()


def test_keep_largest_margins_stable_on_ties() -> None:
    first, second = keep_largest_margins([torch.zeros(2, 3), torch.zeros(4)], 4)
    assert first.tolist() == [[True, True, True], [True, False, False]]
    assert second.tolist() == [False, False, False, False]


def test_keep_largest_margins_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="cannot keep 7 of 6"):
        keep_largest_margins([torch.zeros(2, 3)], 7)
    with pytest.raises(ValueError, match="non-finite"):
        keep_largest_margins([torch.tensor([0.0, math.nan])], 1)


@pytest.mark.parametrize("target", TARGETS)
def test_gowalla_sized_sparsity_meets_target(target: float) -> None:
    torch.manual_seed(1)
    fixed_tables = []
    for rows in GOWALLA_ROWS:
        table = PEPEmbedding(rows, 64, init_threshold=-2.5)
        fixed = table.fixed(table.keep_masks(target))
        achieved = count_parameters([fixed]).sparsity
        assert achieved >= target
        assert achieved < target + 1.0 / (rows * 64) + 1e-12
        fixed_tables.append(fixed)
    both = count_parameters(fixed_tables).sparsity
    assert target <= both <= target + 0.01


@pytest.mark.parametrize("granularity", ["element", "row", "dimension", "global"])
def test_thresholds_rise_under_training(granularity: str) -> None:
    torch.manual_seed(2)
    # Shared thresholds sum the task's pull over many entries, so they need a larger decay
    # than element thresholds to rise. 1e-2 is the top of the searched range.
    table = PEPEmbedding(
        60, 8, granularity=granularity, init_threshold=-4.0, threshold_weight_decay=1e-2
    )
    optimizer = torch.optim.Adam(
        [{"params": [table.weight]}, *table.optimizer_groups(1e-2)], lr=1e-2
    )
    generator = torch.Generator().manual_seed(0)
    start_share = table.search_sparsity()
    start_threshold = table.threshold.detach().clone()

    loss = bpr_toy_loss(table, generator)
    loss.backward()
    assert table.threshold.grad is not None
    assert table.threshold.grad.shape == table.threshold.shape
    assert bool((table.threshold.grad != 0).any())

    for _ in range(150):
        optimizer.step()
        optimizer.zero_grad()
        bpr_toy_loss(table, generator).backward()
    assert float(table.threshold.detach().mean()) > float(start_threshold.mean()) + 0.5
    assert table.search_sparsity() > start_share + 0.1


def test_optimizer_group_has_threshold_weight_decay() -> None:
    table = PEPEmbedding(5, 4, threshold_weight_decay=0.03)
    (group,) = table.optimizer_groups(0.002)
    assert group["params"] == [table.threshold]
    assert group["weight_decay"] == 0.03
    assert group["lr"] == 0.002


@pytest.mark.parametrize(
    ("granularity", "shape"),
    [
        ("element", (30, 6)),
        ("row", (30, 1)),
        ("dimension", (1, 6)),
        ("field", (1, 1)),
        ("global", (1, 1)),
    ],
)
def test_threshold_shape_by_granularity(granularity: str, shape: tuple[int, int]) -> None:
    table = PEPEmbedding(30, 6, granularity=granularity, init_threshold=-5.0)
    assert tuple(table.threshold.shape) == shape
    assert bool((table.threshold == -5.0).all())


@pytest.mark.parametrize("granularity", GRANULARITIES)
def test_lookup_matches_weight_matrix(granularity: str) -> None:
    torch.manual_seed(3)
    table = PEPEmbedding(30, 6, granularity=granularity, init_threshold=-2.0)
    with torch.no_grad():
        table.threshold.add_(torch.rand_like(table.threshold))
    ids = torch.tensor([[0, 29, 5], [5, 5, 12]])
    matrix = table.weight_matrix()
    assert torch.equal(table(ids), matrix[ids])
    assert torch.equal(table(torch.tensor(7)), matrix[7])
    assert table.search_sparsity() > 0.1
    expected = torch.sign(table.weight) * torch.relu(
        table.weight.abs() - torch.sigmoid(table.threshold)
    )
    assert torch.equal(matrix, expected)


@pytest.mark.parametrize("granularity", ["element", "row"])
def test_search_table_artifact_round_trip(granularity: str) -> None:
    torch.manual_seed(4)
    table = PEPEmbedding(300, 16, granularity=granularity, init_threshold=-2.0)
    artifact = table.export_artifact()
    assert artifact["col_indices"].dtype == torch.int8
    matrix = table.weight_matrix().detach()
    assert artifact["values"].numel() == int(torch.count_nonzero(matrix))
    decoded = PEPEmbedding.decode_artifact(artifact)
    assert torch.allclose(decoded, matrix, atol=1e-5)
    stored = count_parameters([table]).params_stored
    assert stored == int(torch.count_nonzero(matrix))


def test_fixed_table_retrains_initial_weights() -> None:
    torch.manual_seed(5)
    search_table = PEPEmbedding(50, 8, init_threshold=-3.0)
    initial = {key: value.clone() for key, value in search_table.state_dict().items()}

    # The search moves weights and thresholds, and the masks come from the trained table.
    optimizer = torch.optim.Adam(search_table.parameters(), lr=1e-2)
    generator = torch.Generator().manual_seed(1)
    for _ in range(20):
        optimizer.zero_grad()
        bpr_toy_loss(search_table, generator).backward()
        optimizer.step()
    masks = search_table.keep_masks(0.6)

    fresh = PEPEmbedding(50, 8, init_threshold=-3.0)
    fresh.load_state_dict(initial)
    fixed = fresh.fixed(masks)
    assert isinstance(fixed, MaskedEmbedding)
    mask = masks["weight"]
    assert torch.equal(fixed.weight.detach(), initial["weight"] * mask)
    assert torch.equal(fixed.mask, mask)

    optimizer = torch.optim.Adam(fixed.parameters(), lr=1e-2)
    for _ in range(5):
        optimizer.zero_grad()
        matrix = fixed.weight_matrix()
        (matrix.sum(-1).pow(2).mean() - fixed(torch.tensor([1, 2])).sum()).backward()
        optimizer.step()
    assert bool((fixed.weight.detach()[~mask] == 0).all())
    assert bool((fixed.weight_matrix().detach()[~mask] == 0).all())
    assert not torch.equal(fixed.weight.detach(), initial["weight"] * mask)
    decoded = MaskedEmbedding.decode_artifact(fixed.export_artifact())
    assert torch.allclose(decoded, fixed.weight_matrix().detach(), atol=1e-5)
    assert count_parameters([fixed]).sparsity >= 0.6


def test_fixed_rejects_wrong_mask() -> None:
    table = PEPEmbedding(4, 3)
    with pytest.raises(ValueError, match="'weight' is missing"):
        table.fixed({"P": torch.ones(4, 3, dtype=torch.bool)})
    with pytest.raises(ValueError, match=r"shape \(4, 3\)"):
        table.fixed({"weight": torch.ones(3, 4, dtype=torch.bool)})


def test_method_spec_builds_tables() -> None:
    spec = get_method("pep")
    assert spec is METHOD
    assert spec.kind == TWO_STAGE
    assert spec.search is not None
    settings = spec.parse_settings({"granularity": "row", "init_threshold": -6.0})
    table = spec.create(20, 4, 0.8, settings, 0.1)
    assert isinstance(table, PEPEmbedding)
    assert tuple(table.threshold.shape) == (20, 1)
    assert table.structure() == {"granularity": "row", "thresholds": 20}
    assert isinstance(spec.empty_table(20, 4, 0.8, settings), MaskedEmbedding)


def test_settings_round_trip() -> None:
    settings = METHOD.parse_settings(
        {"granularity": "dimension", "init_threshold": -12, "threshold_weight_decay": 0.5}
    )
    assert settings == PEPSettings("dimension", -12.0, 0.5, 50)
    assert METHOD.parse_settings(settings.to_dict()) == settings
    assert METHOD.parse_settings(None) == PEPSettings()


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("granularity", "column"),
        ("init_threshold", math.inf),
        ("threshold_weight_decay", -1e-4),
        ("search_epochs", 0),
    ],
)
def test_bad_setting_names_key(key: str, value: object) -> None:
    with pytest.raises(ConfigError, match=rf"method\.settings\.{key}"):
        METHOD.parse_settings({key: value})


def test_search_space_file() -> None:
    space = load_search_space(SPACE_FILE)
    params = {param.path: param for param in space.params}
    assert set(params) == {
        "method.settings.granularity",
        "method.settings.init_threshold",
        "method.settings.threshold_weight_decay",
    }
    assert params["method.settings.granularity"].choices == [
        "element",
        "row",
        "dimension",
        "global",
    ]
    assert (
        params["method.settings.init_threshold"].low,
        params["method.settings.init_threshold"].high,
    ) == (-8, -4)
    decay = params["method.settings.threshold_weight_decay"]
    assert decay.type == "log_float"
    assert (decay.low, decay.high) == (1e-5, 1e-1)
    for choice in params["method.settings.granularity"].choices:
        METHOD.parse_settings({"granularity": choice})
