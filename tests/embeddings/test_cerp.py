from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from lers_ray.config import ConfigError
from lers_ray.embeddings.accounting import count_parameters
from lers_ray.embeddings.base import StructureInfeasible
from lers_ray.embeddings.cerp import (
    METHOD,
    CERPEmbedding,
    CERPSettings,
    FixedCERPEmbedding,
    check_cerp_feasible,
    quotient_rows,
    solve_cerp,
)
from lers_ray.embeddings.registry import get_method
from lers_ray.embeddings.spec import TWO_STAGE
from lers_ray.sweep.space import load_search_space

SPACE_FILE = Path(__file__).resolve().parents[2] / "search_spaces" / "methods" / "cerp.yaml"

# Solved bucket counts at overparam 2 for the Gowalla table sizes (dim 64).
GOWALLA_BUCKETS = {
    (29858, 0.5): 14929,
    (29858, 0.8): 5972,
    (29858, 0.95): 1493,
    (40981, 0.5): 20491,
    (40981, 0.8): 8197,
    (40981, 0.95): 2050,
}


def tied_table(rows: int, dim: int, buckets: int, seed: int = 0) -> CERPEmbedding:
    """A CERP table whose weights are in {-0.2, -0.1, 0.1, 0.2}: many tied margins, none zero."""
    table = CERPEmbedding(rows, dim, buckets, init_threshold=-4.0)
    generator = torch.Generator().manual_seed(seed)
    values = torch.tensor([-0.2, -0.1, 0.1, 0.2])
    with torch.no_grad():
        for weight in (table.p_weight, table.q_weight):
            weight.copy_(values[torch.randint(0, 4, weight.shape, generator=generator)])
    return table


def toy_loss(table: CERPEmbedding | FixedCERPEmbedding, generator: torch.Generator) -> torch.Tensor:
    """A BPR-like loss: row ``u`` should score row ``(u + 1) mod N`` above a random row."""
    rows = table.num_embeddings
    users = torch.randint(0, rows, (32,), generator=generator)
    negatives = torch.randint(0, rows, (32,), generator=generator)
    user_emb = table(users)
    pos_score = (user_emb * table((users + 1) % rows)).sum(-1)
    neg_score = (user_emb * table(negatives)).sum(-1)
    return torch.nn.functional.softplus(neg_score - pos_score).mean()


@pytest.mark.parametrize(("rows", "buckets"), [(1, 1), (10, 3), (100, 7), (100, 100), (97, 40)])
def test_quotient_rows_cover_all_ids(rows: int, buckets: int) -> None:
    table = CERPEmbedding(rows, 4, buckets)
    assert int(table.p_index.max()) == buckets - 1
    assert int(table.q_index.max()) == table.q_rows - 1
    assert table.q_rows == quotient_rows(rows, buckets) <= buckets
    assert table.q_index.tolist() == [x // math.ceil(rows / buckets) for x in range(rows)]


@pytest.mark.parametrize(("rows", "target"), list(GOWALLA_BUCKETS))
def test_gowalla_buckets_and_sparsity(rows: int, target: float) -> None:
    buckets = solve_cerp(rows, 64, target, 2.0)
    assert buckets == GOWALLA_BUCKETS[(rows, target)]
    budget = rows * 64 - math.ceil(rows * 64 * target - 1e-6)
    stored_unpruned = (buckets + quotient_rows(rows, buckets)) * 64
    assert 2.0 * budget <= stored_unpruned < 2.0 * budget + 2 * 64

    torch.manual_seed(0)
    table = CERPEmbedding(rows, 64, buckets, init_threshold=-2.5)
    masks = table.keep_masks(target)
    assert int(masks["P"].sum() + masks["Q"].sum()) == budget
    achieved = count_parameters([table.fixed(masks)]).sparsity
    assert achieved >= target
    assert achieved < target + 1.0 / (rows * 64) + 1e-12


@pytest.mark.parametrize("overparam", [1.0, 1.5, 3.0, 10.0])
@pytest.mark.parametrize("target", [0.0, 0.5, 0.9, 0.99])
def test_solver_holds_budget(overparam: float, target: float) -> None:
    rows, dim = 1000, 8
    buckets = solve_cerp(rows, dim, target, overparam)
    budget = rows * dim - math.ceil(rows * dim * target - 1e-6)
    entries = (buckets + quotient_rows(rows, buckets)) * dim
    assert 1 <= buckets <= rows
    assert entries >= min(overparam * budget, 2 * rows * dim)
    if buckets > 1:
        smaller = buckets - 1
        assert (smaller + quotient_rows(rows, smaller)) * dim < overparam * budget


def test_solver_rejects_bad_input() -> None:
    with pytest.raises(StructureInfeasible, match=r"2x3 table at target 0.9999999.*1 - 1/6"):
        solve_cerp(2, 3, 0.9999999, 2.0)
    with pytest.raises(ValueError, match="overparam 0.5"):
        solve_cerp(100, 8, 0.5, 0.5)
    with pytest.raises(ValueError, match="outside"):
        check_cerp_feasible(100, 8, 1.0)
    check_cerp_feasible(100, 8, 0.99)


@pytest.mark.parametrize("target", [0.0, 0.3, 0.5, 0.8, 0.95])
def test_keep_masks_exact_count_with_ties(target: float) -> None:
    rows, dim = 90, 6
    table = tied_table(rows, dim, solve_cerp(rows, dim, target, 2.0))
    masks = table.keep_masks(target)
    assert masks["P"].shape == (table.buckets, dim)
    assert masks["Q"].shape == (table.q_rows, dim)
    n = rows * dim
    assert int(masks["P"].sum() + masks["Q"].sum()) == n - math.ceil(n * target - 1e-6)
    achieved = count_parameters([table.fixed(masks)]).sparsity
    assert target <= achieved < target + 1.0 / n + 1e-12


def test_keep_masks_ranks_jointly_by_margin() -> None:
    torch.manual_seed(1)
    table = CERPEmbedding(200, 8, 50, init_threshold=-3.0)
    with torch.no_grad():
        table.q_threshold.add_(torch.rand_like(table.q_threshold) * 2)
    masks = table.keep_masks(0.8)
    margins = [
        (weight.detach().abs() - torch.sigmoid(threshold.detach())).reshape(-1)
        for weight, threshold in (
            (table.p_weight, table.p_threshold),
            (table.q_weight, table.q_threshold),
        )
    ]
    kept = torch.cat([masks["P"].reshape(-1), masks["Q"].reshape(-1)])
    margin = torch.cat(margins)
    assert margin[kept].min() >= margin[~kept].max()


def test_hand_set_small_buckets_keep_everything() -> None:
    table = CERPEmbedding(100, 4, 2)
    masks = table.keep_masks(0.5)
    assert bool(masks["P"].all())
    assert bool(masks["Q"].all())


def test_lookup_matches_weight_matrix_and_artifact() -> None:
    torch.manual_seed(2)
    table = CERPEmbedding(97, 6, 40, init_threshold=-2.0)
    ids = torch.tensor([[0, 96, 5], [40, 41, 80]])
    matrix = table.weight_matrix()
    assert torch.equal(table(ids), matrix[ids])
    assert torch.equal(table(torch.tensor(7)), matrix[7])

    p_table, q_table = table.pruned_tables()
    assert torch.equal(matrix[60], p_table[60 % 40] + q_table[60 // 3])
    assert 0.0 < table.search_sparsity() < 1.0
    stored = int(torch.count_nonzero(p_table) + torch.count_nonzero(q_table))
    assert count_parameters([table]).params_stored == stored

    artifact = table.export_artifact()
    assert artifact["p_col_indices"].dtype == torch.int8
    assert artifact["q_values"].numel() == int(torch.count_nonzero(q_table))
    assert artifact["buckets"].tolist() == [40]
    decoded = CERPEmbedding.decode_artifact(artifact)
    assert decoded.shape == (97, 6)
    assert torch.allclose(decoded, matrix.detach(), atol=1e-5)


def test_thresholds_get_gradients_and_rise() -> None:
    torch.manual_seed(3)
    table = CERPEmbedding(80, 8, 20, init_threshold=-4.0, gamma_init=0.0)
    optimizer = torch.optim.Adam(
        [{"params": [table.p_weight, table.q_weight]}, *table.optimizer_groups(1e-2)], lr=1e-2
    )
    generator = torch.Generator().manual_seed(0)
    start_share = table.search_sparsity()
    toy_loss(table, generator).backward()
    assert table.p_threshold.grad is not None and table.q_threshold.grad is not None
    assert bool((table.p_threshold.grad != 0).any())
    for _ in range(150):
        optimizer.step()
        optimizer.zero_grad()
        toy_loss(table, generator).backward()
    assert float(table.p_threshold.detach().mean()) > -3.5
    assert table.search_sparsity() > start_share + 0.1


def test_penalty_negative_decays_and_has_gradient() -> None:
    torch.manual_seed(4)
    table = CERPEmbedding(50, 8, 10, gamma_init=1e-3, gamma_decay=0.5)
    ids = torch.tensor([1, 2, 3, 3])
    values = []
    for epoch in (1, 2, 3):
        table.start_epoch(epoch)
        penalty = table.penalty(ids)
        assert penalty is not None
        values.append(penalty)
    first = values[0]
    assert float(first.detach()) < 0
    assert table.gamma() == pytest.approx(1e-3 * 0.25)
    assert float(values[1].detach()) == pytest.approx(float(first.detach()) / 2)
    assert float(values[2].detach()) == pytest.approx(float(first.detach()) / 4)
    saturated = torch.tanh(100 * table(ids).detach()).pow(2).sum() / ids.numel()
    assert float(first.detach()) == pytest.approx(-1e-3 * float(saturated), rel=1e-5)

    first.backward()
    assert table.p_weight.grad is not None
    assert bool((table.p_weight.grad != 0).any())
    assert CERPEmbedding(5, 2, 2, gamma_init=0.0).penalty(ids % 5) is None
    with pytest.raises(ValueError, match="epoch"):
        table.start_epoch(0)


def test_fixed_table_retrains_initial_weights() -> None:
    torch.manual_seed(5)
    search_table = CERPEmbedding(60, 8, 15, init_threshold=-3.0)
    initial = {key: value.clone() for key, value in search_table.state_dict().items()}
    optimizer = torch.optim.Adam(search_table.parameters(), lr=1e-2)
    generator = torch.Generator().manual_seed(1)
    for _ in range(20):
        optimizer.zero_grad()
        toy_loss(search_table, generator).backward()
        optimizer.step()
    masks = search_table.keep_masks(0.7)

    fresh = CERPEmbedding(60, 8, 15, init_threshold=-3.0)
    fresh.load_state_dict(initial)
    fixed = fresh.fixed(masks)
    assert isinstance(fixed, FixedCERPEmbedding)
    assert torch.equal(fixed.p_weight.detach(), initial["p_weight"] * masks["P"])
    assert torch.equal(fixed.q_weight.detach(), initial["q_weight"] * masks["Q"])
    assert torch.equal(fixed.p_mask, masks["P"])
    assert fixed.structure() == {"buckets": 15, "q_rows": 15, "ids_per_q_row": 4}

    ids = torch.tensor([[3, 59], [17, 17]])
    assert torch.equal(fixed(ids), fixed.weight_matrix()[ids])
    optimizer = torch.optim.Adam(fixed.parameters(), lr=1e-2)
    for _ in range(5):
        optimizer.zero_grad()
        (toy_loss(fixed, generator) + fixed.weight_matrix().pow(2).mean()).backward()
        optimizer.step()
    assert bool((fixed.p_weight.detach()[~masks["P"]] == 0).all())
    assert bool((fixed.q_weight.detach()[~masks["Q"]] == 0).all())
    assert not torch.equal(fixed.p_weight.detach(), initial["p_weight"] * masks["P"])
    assert count_parameters([fixed]).sparsity >= 0.7

    decoded = FixedCERPEmbedding.decode_artifact(fixed.export_artifact())
    assert torch.allclose(decoded, fixed.weight_matrix().detach(), atol=1e-5)


def test_fixed_state_dict_loads_into_empty_table() -> None:
    settings = CERPSettings()
    search_table = METHOD.create(120, 4, 0.8, settings, 0.1)
    assert isinstance(search_table, CERPEmbedding)
    fixed = search_table.fixed(search_table.keep_masks(0.8))
    empty = METHOD.empty_table(120, 4, 0.8, settings)
    assert isinstance(empty, FixedCERPEmbedding)
    empty.load_state_dict(fixed.state_dict())
    assert torch.equal(empty.weight_matrix(), fixed.weight_matrix())


def test_fixed_rejects_wrong_masks() -> None:
    table = CERPEmbedding(20, 3, 5)
    good = {"P": torch.ones(5, 3, dtype=torch.bool), "Q": torch.ones(5, 3, dtype=torch.bool)}
    table.fixed(good)
    with pytest.raises(ValueError, match="'Q' is missing"):
        table.fixed({"P": good["P"]})
    with pytest.raises(ValueError, match="bool tensor of shape"):
        table.fixed({**good, "P": torch.ones(5, 3)})


def test_method_spec() -> None:
    spec = get_method("cerp")
    assert spec is METHOD
    assert spec.kind == TWO_STAGE
    assert spec.search is not None
    assert spec.check_feasible is check_cerp_feasible
    settings = spec.parse_settings({"overparam": 3.0, "gamma_init": 1e-3})
    table = spec.create(1000, 8, 0.8, settings, 0.1)
    assert isinstance(table, CERPEmbedding)
    assert table.structure() == {
        "buckets": 334,
        "q_rows": 334,
        "ids_per_q_row": 3,
        "overparam": 3.0,
    }
    assert table.gamma_init == 1e-3


def test_settings_round_trip() -> None:
    settings = METHOD.parse_settings({"overparam": 1.5, "gamma_decay": 0.9, "search_epochs": 7})
    assert settings == CERPSettings(overparam=1.5, gamma_decay=0.9, search_epochs=7)
    assert METHOD.parse_settings(settings.to_dict()) == settings


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("overparam", 0.9),
        ("gamma_init", -1e-4),
        ("gamma_decay", 0.0),
        ("gamma_decay", 1.5),
        ("init_threshold", math.nan),
        ("threshold_weight_decay", -1.0),
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
        "method.settings.gamma_init",
        "method.settings.init_threshold",
        "method.settings.threshold_weight_decay",
    }
    assert params["method.settings.gamma_init"].type == "log_float"
    threshold = params["method.settings.init_threshold"]
    assert (threshold.type, threshold.low, threshold.high) == ("float", -8.0, -4.0)
