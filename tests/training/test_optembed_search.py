from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import torch

from lers_ray.config import BackboneConfig, MethodConfig, TrainingConfig, TrialConfig
from lers_ray.data.dataset import InteractionData
from lers_ray.embeddings.accounting import count_parameters
from lers_ray.embeddings.full import FullEmbedding
from lers_ray.embeddings.magprune import pruned_count
from lers_ray.embeddings.optembed import OptEmbedSupernet
from lers_ray.embeddings.registry import get_method
from lers_ray.models import build_model
from lers_ray.training.optembed_search import TableBudget, optembed_search
from lers_ray.training.stages import TABLE_NAMES, SearchContext, SearchResult
from lers_ray.training.trainer import Evaluators

DIM = 16
SETTINGS = {
    "supernet_epochs": 1,
    "generations": 2,
    "population": 6,
    "crossovers": 3,
    "mutations": 3,
    "keep_top": 4,
}
EVALUATIONS = 6 + 2 * (3 + 3)


@dataclass
class RecordingContext(SearchContext):
    """A search context that records each evaluated candidate's per-row dims."""

    evaluated: list[list[torch.Tensor]] = field(default_factory=list)
    reports: list[dict[str, Any]] = field(default_factory=list)

    def validation_ndcg(self) -> float:
        tables = [getattr(self.model, name) for name in TABLE_NAMES]
        self.evaluated.append([table.candidate_dims.clone() for table in tables])
        return super().validation_ndcg()


def make_context(
    data: InteractionData,
    tmp_path: Path,
    target: float,
    seed: int = 7,
    lr: float = 1e-2,
    **settings: Any,
) -> RecordingContext:
    config = TrialConfig(
        backbone=BackboneConfig(name="lightgcn", dim=DIM, num_layers=1),
        training=TrainingConfig(lr=lr, batch_size=256, seed=seed, eval_batch_size=512),
        method=MethodConfig(name="optembed", target=target, settings={**SETTINGS, **settings}),
    )
    spec = get_method("optembed")
    parsed = spec.parse_settings(config.method.settings)
    torch.manual_seed(seed)
    user_table = spec.create(data.n_users, DIM, target, parsed, 0.1)
    item_table = spec.create(data.n_items, DIM, target, parsed, 0.1)
    model = build_model(config.backbone, user_table, item_table, data.train, 1e-4)
    evaluators = Evaluators.for_data(data, config.ks, 512)
    context = RecordingContext(model, data, config, parsed, evaluators, tmp_path)
    context.report = context.reports.append
    return context


def fixed_tables(context: SearchContext, result: SearchResult) -> list[Any]:
    return [getattr(context.model, name).fixed(result.masks[name]) for name in TABLE_NAMES]


@pytest.mark.parametrize("target", [0.8, 0.95])
def test_search_candidates_meet_target(
    data: InteractionData, tmp_path: Path, target: float
) -> None:
    context = make_context(data, tmp_path, target)
    result = optembed_search(context)
    assert result.failure is None
    assert len(context.evaluated) == EVALUATIONS
    rows = (data.n_users, data.n_items)
    for candidate in context.evaluated:
        for dims, n in zip(candidate, rows, strict=True):
            assert int(dims.sum()) <= n * DIM - pruned_count(n * DIM, target)

    for table in fixed_tables(context, result):
        sparsity = count_parameters([table]).sparsity
        assert target <= sparsity <= target + 0.01
    assert set(result.masks) == set(TABLE_NAMES)
    for name in TABLE_NAMES:
        mask = result.masks[name]["weight"]
        assert torch.equal(mask, torch.arange(DIM) < mask.sum(1).unsqueeze(1))
    assert result.info["search_epochs"] == 1
    assert result.info["search_generations"] == 2
    assert target <= result.info["search_sparsity"] <= target + 0.01
    assert result.info["search_best_val_ndcg_20"] > 0
    assert result.info["search_seconds"] > 0
    assert [report["search_epoch"] for report in context.reports] == [1]
    assert context.reports[0]["search_loss"] > 0


def test_search_same_seed_same_masks(data: InteractionData, tmp_path: Path) -> None:
    first = optembed_search(make_context(data, tmp_path, 0.8, seed=3))
    second = optembed_search(make_context(data, tmp_path, 0.8, seed=3))
    other = optembed_search(make_context(data, tmp_path, 0.8, seed=4))
    for name in TABLE_NAMES:
        assert torch.equal(first.masks[name]["weight"], second.masks[name]["weight"])
    assert first.info["search_best_val_ndcg_20"] == second.info["search_best_val_ndcg_20"]
    assert not torch.equal(first.masks["item_table"]["weight"], other.masks["item_table"]["weight"])


def test_search_gives_dropped_rows_no_dims(data: InteractionData, tmp_path: Path) -> None:
    # Initial L1 norms are about 16 * 0.08 = 1.28, so a threshold of 1.3 drops about half.
    context = make_context(data, tmp_path, 0.8, threshold_init=1.3)
    tables: list[OptEmbedSupernet] = [getattr(context.model, n) for n in TABLE_NAMES]
    result = optembed_search(context)
    assert result.failure is None
    for name, table in zip(TABLE_NAMES, tables, strict=True):
        dropped = ~table.rows_above_threshold()
        assert int(dropped.sum()) > 0
        assert not bool(result.masks[name]["weight"][dropped].any())
    for table in fixed_tables(context, result):
        assert 0.8 <= count_parameters([table]).sparsity <= 0.81


def test_search_restores_rows_for_budget(data: InteractionData, tmp_path: Path) -> None:
    # A threshold of 1.6 drops most rows, too many to hold half of the entries.
    context = make_context(data, tmp_path, 0.5, threshold_init=1.6)
    result = optembed_search(context)
    assert result.failure is None
    assert result.info["search_rows_restored"] > 0
    rows = (data.n_users, data.n_items)
    for candidate in context.evaluated:
        for dims, n in zip(candidate, rows, strict=True):
            assert int(dims.sum()) == n * DIM - pruned_count(n * DIM, 0.5)
    for table in fixed_tables(context, result):
        assert 0.5 <= count_parameters([table]).sparsity <= 0.51


def test_search_non_finite_loss_fails(data: InteractionData, tmp_path: Path) -> None:
    result = optembed_search(make_context(data, tmp_path, 0.8, lr=1e30))
    assert result.failure is not None
    assert result.failure.startswith("search stage: non-finite train loss")
    assert result.masks == {}


def test_search_rejects_other_tables(data: InteractionData, tmp_path: Path) -> None:
    context = make_context(data, tmp_path, 0.8)
    context.model.user_table = FullEmbedding(data.n_users, DIM)
    with pytest.raises(TypeError, match="user_table is FullEmbedding"):
        optembed_search(context)


def budget_of(kept_rows: int, dropped_rows: int, dim: int, target: float) -> TableBudget:
    """Kept rows have L1 norm 2, and dropped rows have rising norms below the threshold of 1."""
    dropped_norms = torch.arange(dropped_rows) / (dropped_rows + 1)
    norms = torch.cat([torch.full((kept_rows,), 2.0), dropped_norms])
    return TableBudget.build(norms, 1.0, dim, target)


def test_repair_lowers_largest_counts() -> None:
    budget = budget_of(4, 0, 10, 0.625)  # 40 entries, budget 15
    assert budget.budget == 15
    repaired = budget.repair(torch.tensor([1, 2, 10, 10]), torch.Generator().manual_seed(0))
    assert repaired.tolist() == [1, 2, 6, 6]
    # Cutting at level 5 leaves 16 entries, so one of the three rows at 5 gives up one more.
    repaired = budget.repair(torch.tensor([1, 9, 10, 10]), torch.Generator().manual_seed(0))
    assert int(repaired.sum()) == 15
    assert sorted(repaired.tolist()) == [1, 4, 5, 5]


def test_repair_raises_smallest_counts() -> None:
    budget = budget_of(3, 0, 8, 0.5)  # 24 entries, budget 12
    repaired = budget.repair(torch.tensor([1, 1, 8]), torch.Generator().manual_seed(0))
    assert repaired.tolist() == [2, 2, 8]
    # Raising to level 2 gives 11 entries, so one of the two rows at 2 gets one more.
    repaired = budget.repair(torch.tensor([1, 1, 7]), torch.Generator().manual_seed(0))
    assert sorted(repaired.tolist()) == [2, 3, 7]


@pytest.mark.parametrize("target", [0.0, 0.3, 0.8, 0.95, 0.99])
def test_repair_fills_budget_in_bounds(target: float) -> None:
    budget = budget_of(300, 100, 16, target)
    generator = torch.Generator().manual_seed(1)
    for _ in range(5):
        counts = torch.randint(0, 30, (budget.n_kept,), generator=generator)
        repaired = budget.repair(counts, generator)
        assert int(repaired.sum()) == budget.budget
        assert int(repaired.min()) >= budget.floor
        assert int(repaired.max()) <= 16


def test_budget_restores_rows_of_largest_norm() -> None:
    # 10 of 100 rows pass E at target 0.5: 160 entries, below the budget of 800 (50 rows).
    budget = budget_of(10, 90, 16, 0.5)
    assert budget.budget == 800
    assert budget.restored == 40
    assert budget.kept[:10].all()
    assert budget.kept[-40:].all()
    assert not budget.kept[10:60].any()
    assert budget.floor == 1
    repaired = budget.repair(torch.ones(50, dtype=torch.int64), torch.Generator())
    assert int(repaired.sum()) == 800


def test_budget_keeps_row_mask_when_it_fits() -> None:
    budget = budget_of(30, 70, 16, 0.8)  # budget 320 entries fits in 30 rows of 16
    assert budget.restored == 0
    assert budget.kept.tolist() == [True] * 30 + [False] * 70
    # At target 0.99 the budget (16 entries) is below the 30 kept rows, so rows may get 0.
    tight = budget_of(30, 70, 16, 0.99)
    assert tight.budget == 16
    assert tight.floor == 0
    assert tight.restored == 0
