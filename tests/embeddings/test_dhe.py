from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import optuna
import pytest
import torch
import torch.nn.functional as F

from lers_ray.config import ConfigError
from lers_ray.embeddings.accounting import count_parameters
from lers_ray.embeddings.base import StructureInfeasible
from lers_ray.embeddings.dhe import (
    HASH_MODULUS,
    MIN_WIDTH,
    DHEmbedding,
    DHESettings,
    DHEStructure,
    check_feasible,
    dhe_params,
    hash_coefficients,
    hash_encoding,
    max_hash_count,
    solve_dhe,
)
from lers_ray.embeddings.registry import get_method
from lers_ray.models.lightgcn import LightGCN
from lers_ray.sweep.space import load_search_space

GOWALLA_ROWS = [29858, 40981]
DIM = 64
SPACE_FILE = Path(__file__).resolve().parents[2] / "search_spaces" / "methods" / "dhe.yaml"


def sparsity_of(structure: DHEStructure, rows: int, dim: int) -> float:
    return 1.0 - structure.params(dim) / (rows * dim)


def trained_table(rows: int, dim: int, structure: DHEStructure, seed: int = 0) -> DHEmbedding:
    """A table with perturbed weights and running statistics moved away from 0 and 1."""
    torch.manual_seed(seed)
    table = DHEmbedding(rows, dim, structure, hash_seed=seed)
    table.train()
    with torch.no_grad():
        for param in table.parameters():
            param.add_(0.1 * torch.randn_like(param))
        for _ in range(3):
            table.weight_matrix()
    return table.eval()


def small_primes(limit: int) -> torch.Tensor:
    """Primes up to ``limit`` by the sieve of Eratosthenes."""
    sieve = torch.ones(limit + 1, dtype=torch.bool)
    sieve[:2] = False
    for f in range(2, math.isqrt(limit) + 1):
        if sieve[f]:
            sieve[f * f :: f] = False
    return torch.nonzero(sieve).flatten()


@pytest.mark.parametrize("rows", GOWALLA_ROWS)
@pytest.mark.parametrize("target", [0.5, 0.8, 0.95])
@pytest.mark.parametrize("depth", [1, 2])
def test_solver_gowalla_within_tolerance(rows: int, target: float, depth: int) -> None:
    structure = solve_dhe(rows, DIM, target, 1024, depth)
    wider = DHEStructure(1024, depth, structure.width + 1)
    assert structure.width >= MIN_WIDTH
    assert sparsity_of(structure, rows, DIM) >= target
    assert sparsity_of(structure, rows, DIM) <= target + 0.01
    assert sparsity_of(wider, rows, DIM) < target


@pytest.mark.parametrize(
    "rows, dim, structure",
    [
        (50, 8, DHEStructure(16, 1, 4)),
        (50, 8, DHEStructure(16, 2, 5)),
        (30, 4, DHEStructure(8, 3, 6)),
    ],
)
def test_count_matches_formula(rows: int, dim: int, structure: DHEStructure) -> None:
    table = DHEmbedding(rows, dim, structure)
    count = count_parameters([table])
    assert count.params_stored == dhe_params(
        structure.hash_count, structure.depth, structure.width, dim
    )
    assert count.params_full == rows * dim


def test_gowalla_table_counted_by_accounting() -> None:
    rows, target = GOWALLA_ROWS[0], 0.95
    table = get_method("dhe").create(rows, DIM, target, DHESettings(hash_count=1024, depth=2), 0.1)
    count = count_parameters([table])
    assert table.structure() == {"hash_count": 1024, "depth": 2, "width": 78}
    assert count.sparsity >= target
    assert count.sparsity <= target + 0.01


def test_small_table_infeasible_names_fix() -> None:
    with pytest.raises(StructureInfeasible) as raised:
        solve_dhe(943, DIM, 0.95, 1024, 1)
    message = str(raised.value)
    assert "943x64" in message
    assert "0.95" in message
    assert "hash_count that fits at depth 1 is 382" in message
    assert "best reachable sparsity" in message


def test_max_hash_count_is_largest_feasible() -> None:
    largest = max_hash_count(943, DIM, 0.95)
    structure = solve_dhe(943, DIM, 0.95, largest, 1)
    assert largest == 382
    assert structure.width == MIN_WIDTH
    assert sparsity_of(structure, 943, DIM) >= 0.95
    with pytest.raises(StructureInfeasible):
        solve_dhe(943, DIM, 0.95, largest + 1, 1)


def test_max_hash_count_deeper_is_smaller() -> None:
    shallow = max_hash_count(943, DIM, 0.95, depth=1)
    deep = max_hash_count(943, DIM, 0.95, depth=3)
    assert deep < shallow
    solve_dhe(943, DIM, 0.95, deep, 3)
    with pytest.raises(StructureInfeasible):
        solve_dhe(943, DIM, 0.95, deep + 1, 3)


def test_max_hash_count_none_fits_raises() -> None:
    with pytest.raises(StructureInfeasible, match=r"10x8 table.*best reachable sparsity"):
        max_hash_count(10, 8, 0.5)


def test_check_feasible_small_and_large() -> None:
    check_feasible(GOWALLA_ROWS[0], DIM, 0.95)
    check_feasible(943, DIM, 0.95)
    with pytest.raises(StructureInfeasible, match=r"target sparsity 0.5 for a 10x8 table.*best"):
        check_feasible(10, 8, 0.5)
    assert get_method("dhe").check_feasible is check_feasible


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"target": 1.0}, "outside"),
        ({"hash_count": 1}, "hash_count"),
        ({"depth": 0}, "depth"),
        ({"depth": 7}, "depth"),
    ],
)
def test_solver_rejects_bad_arguments(kwargs: dict[str, float], match: str) -> None:
    arguments = {"target": 0.5, "hash_count": 64, "depth": 1, **kwargs}
    with pytest.raises(ValueError, match=match):
        solve_dhe(
            1000, DIM, arguments["target"], int(arguments["hash_count"]), int(arguments["depth"])
        )


def test_hash_encoding_hand_computed() -> None:
    a = torch.tensor([3, 10])
    b = torch.tensor([5, 0])
    p = torch.tensor([7, 11])
    # x=2: (3*2+5) % 7 % 4 = 0 and (10*2) % 11 % 4 = 1; x=4: 17 % 7 % 4 = 3 and 40 % 11 % 4 = 3.
    encoding = hash_encoding(torch.tensor([2, 4]), a, b, p, modulus=4)
    expected = torch.tensor([[-1.0, -1.0 / 3.0], [1.0, 1.0]])
    assert encoding.dtype == torch.float32
    assert torch.allclose(encoding, expected)


def test_hash_encoding_large_ids_no_overflow() -> None:
    a, b, p = hash_coefficients(8, seed=3)
    ids = torch.tensor([2**31 - 2])
    expected = [
        ((int(a[j]) * (2**31 - 2) + int(b[j])) % int(p[j])) % HASH_MODULUS for j in range(8)
    ]
    encoding = hash_encoding(ids, a, b, p)
    hashed = torch.round((encoding[0].double() + 1.0) * (HASH_MODULUS - 1) / 2.0).long()
    assert hashed.tolist() == expected


def test_hash_coefficients_valid_ranges() -> None:
    a, b, p = hash_coefficients(64, seed=0)
    divisors = small_primes(math.isqrt(2**31))
    # Trial division by every prime up to sqrt(2^31) proves each p below 2^31 prime.
    assert bool((p.reshape(-1, 1) % divisors != 0).all())
    assert bool((p > HASH_MODULUS).all())
    assert bool((p < 2**31).all())
    assert bool((a >= 1).all())
    assert bool((a < p).all())
    assert bool((b >= 0).all())
    assert bool((b < p).all())


def test_hash_encoding_deterministic_by_seed() -> None:
    structure = DHEStructure(32, 1, 8)
    first = DHEmbedding(200, 8, structure, hash_seed=5)
    second = DHEmbedding(200, 8, structure, hash_seed=5)
    other = DHEmbedding(200, 8, structure, hash_seed=6)
    assert torch.equal(first.hash_p, second.hash_p)
    assert torch.equal(first.encoding, second.encoding)
    assert not torch.equal(first.encoding, other.encoding)
    assert float(first.encoding.min()) >= -1.0
    assert float(first.encoding.max()) <= 1.0
    assert "encoding" not in first.state_dict()


def test_forward_equals_weight_matrix_eval() -> None:
    table = trained_table(300, 16, DHEStructure(64, 2, 12))
    ids = torch.tensor([[0, 17, 299], [5, 5, 123]])
    assert table(ids).shape == (2, 3, 16)
    assert torch.allclose(table(ids), table.weight_matrix()[ids], atol=1e-6)


def test_gradients_reach_all_mlp_params() -> None:
    torch.manual_seed(0)
    table = DHEmbedding(120, 8, DHEStructure(16, 2, 6)).train()
    projection = torch.randn(120, 8)
    (table.weight_matrix() * projection).sum().backward()
    for name, param in table.named_parameters():
        assert param.grad is not None, name
        assert bool(param.grad.abs().sum() > 0), name


def test_lookup_gradients_reach_all_mlp_params() -> None:
    torch.manual_seed(0)
    table = DHEmbedding(120, 8, DHEStructure(16, 1, 6)).train()
    ids = torch.tensor([1, 4, 9, 50, 77])
    (table(ids) * torch.randn(5, 8)).sum().backward()
    for name, param in table.named_parameters():
        assert param.grad is not None, name
        assert bool(param.grad.abs().sum() > 0), name


def test_initial_output_scale_near_init_std() -> None:
    torch.manual_seed(0)
    table = DHEmbedding(2000, 32, DHEStructure(64, 1, 32), init_std=0.1).train()
    std = float(table.weight_matrix().detach().std())
    assert std == pytest.approx(0.1, rel=0.3)


def test_lookups_update_stats_until_full_pass() -> None:
    torch.manual_seed(0)
    table = DHEmbedding(100, 8, DHEStructure(16, 1, 6)).train()
    norm = table.norms[0]
    assert isinstance(norm, torch.nn.BatchNorm1d)
    assert norm.running_mean is not None
    table(torch.arange(10))
    after_lookup = norm.running_mean.clone()
    assert not torch.equal(after_lookup, torch.zeros(6))

    table.weight_matrix()
    after_full = norm.running_mean.clone()
    table(torch.arange(10))
    assert not torch.equal(after_full, after_lookup)
    assert torch.equal(norm.running_mean, after_full)


def test_single_row_lookup_in_training() -> None:
    table = trained_table(50, 4, DHEStructure(8, 1, 4)).train()
    row = table(torch.tensor([7]))
    table.eval()
    assert torch.allclose(row, table.weight_matrix()[7:8], atol=1e-6)


def test_decode_artifact_matches_eval() -> None:
    # 9000 rows span two decode chunks of 8192.
    table = trained_table(9000, 8, DHEStructure(16, 2, 6))
    artifact = table.export_artifact()
    decoded = DHEmbedding.decode_artifact(artifact)
    with torch.no_grad():
        expected = table.weight_matrix()
    assert decoded.dtype == torch.float32
    assert decoded.shape == (9000, 8)
    assert torch.allclose(decoded, expected, atol=1e-5)


def test_artifact_dtypes_and_structure() -> None:
    table = DHEmbedding(40, 8, DHEStructure(16, 2, 6))
    artifact = table.export_artifact()
    assert artifact["hash_p"].dtype == torch.int32
    assert artifact["hidden.1.weight"].dtype == torch.float32
    assert artifact["norm.0.running_var"].shape == (6,)
    assert artifact["structure"].tolist() == [40, 8, 16, 2, 6, HASH_MODULUS]


def test_checkpoint_reload_rebuilds_encoding() -> None:
    structure = DHEStructure(32, 2, 8)
    table = trained_table(150, 8, structure, seed=1)
    reloaded = DHEmbedding(150, 8, structure, hash_seed=2)
    reloaded.load_state_dict(table.state_dict())
    reloaded.eval()
    assert torch.equal(reloaded.encoding, table.encoding)
    with torch.no_grad():
        assert torch.equal(reloaded.weight_matrix(), table.weight_matrix())


def test_create_solves_structure() -> None:
    spec = get_method("dhe")
    table = spec.create(2000, 16, 0.8, DHESettings(hash_count=64, depth=2), 0.1)
    expected = solve_dhe(2000, 16, 0.8, 64, 2)
    assert isinstance(table, DHEmbedding)
    assert table.structure() == {"hash_count": 64, "depth": 2, "width": expected.width}
    assert count_parameters([table]).params_stored == expected.params(16)


def test_settings_round_trip() -> None:
    spec = get_method("dhe")
    settings = spec.parse_settings({"hash_count": 256, "depth": 3, "hash_seed": 7})
    assert settings == DHESettings(hash_count=256, depth=3, hash_seed=7)
    assert spec.parse_settings(settings.to_dict()) == settings
    assert spec.parse_settings(None) == DHESettings()


@pytest.mark.parametrize(
    "settings, key",
    [
        ({"hash_count": 1}, "method.settings.hash_count"),
        ({"depth": 0}, "method.settings.depth"),
        ({"depth": 7}, "method.settings.depth"),
        ({"hash_seed": -1}, "method.settings.hash_seed"),
        ({"width": 64}, "width"),
        ({"depth": "2"}, "depth"),
    ],
)
def test_settings_errors_name_key(settings: dict[str, object], key: str) -> None:
    with pytest.raises(ConfigError, match=key):
        get_method("dhe").parse_settings(settings)


def test_search_space_file() -> None:
    space = load_search_space(SPACE_FILE)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    counts = set()
    for _ in range(30):
        params = space.sample(study.ask(), {"max_dhe_hashes": 61, "max_row_floor": 3})
        counts.add(params["method.settings.hash_count"])
        assert 16 <= params["method.settings.hash_count"] <= 61
        assert params["method.settings.depth"] in (1, 2, 3)
    assert len(counts) > 5


def test_lightgcn_batch_trains_dhe_tables() -> None:
    torch.manual_seed(0)
    train = np.array([[u, (u * 7 + j) % 40] for u in range(30) for j in range(4)], dtype=np.int64)
    structure = DHEStructure(16, 1, 6)
    users, items = DHEmbedding(30, 8, structure), DHEmbedding(40, 8, structure, hash_seed=1)
    model = LightGCN(users, items, train, num_layers=2, weight_decay=1e-4).train()
    norm = items.norms[0]
    assert isinstance(norm, torch.nn.BatchNorm1d)
    assert norm.running_mean is not None
    batch = torch.from_numpy(train[:16])
    loss, l2 = model.bpr_batch(batch[:, 0], batch[:, 1], torch.randint(0, 40, (16,)))
    (loss + l2).backward()
    # The full pass updated the running mean once; the L2 lookups that followed did not.
    with torch.no_grad():
        expected = 0.1 * F.mish(items.hidden[0](items.encoding)).mean(0)
    assert torch.allclose(norm.running_mean, expected, atol=1e-6)
    for name, param in model.named_parameters():
        assert param.grad is not None, name
