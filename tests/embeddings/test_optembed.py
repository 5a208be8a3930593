from __future__ import annotations

import math

import pytest
import torch

from lers_ray.config import ConfigError
from lers_ray.embeddings.accounting import count_parameters
from lers_ray.embeddings.masked import MaskedEmbedding
from lers_ray.embeddings.optembed import (
    OptEmbedSettings,
    OptEmbedSupernet,
    dim_count_probabilities,
    dim_mask,
    sample_dim_counts,
)
from lers_ray.embeddings.registry import get_method
from lers_ray.embeddings.spec import TWO_STAGE


def norm_table(threshold: float = 1.0) -> OptEmbedSupernet:
    """Four rows of 4 positive entries with L1 norms 0.4, 0.8, 1.5 and 3.0."""
    table = OptEmbedSupernet(4, 4, target=0.0, threshold_init=threshold)
    with torch.no_grad():
        norms = torch.tensor([0.4, 0.8, 1.5, 3.0])
        table.weight.copy_(norms.unsqueeze(1).expand(4, 4) / 4)
    return table


def test_row_mask_drops_small_norms() -> None:
    table = norm_table().eval()
    matrix = table.weight_matrix().detach()
    assert torch.equal(matrix[:2], torch.zeros(2, 4))
    assert torch.equal(matrix[2:], table.weight.detach()[2:])
    assert table.rows_above_threshold().tolist() == [False, False, True, True]
    assert table.structure()["rows_above_threshold"] == 2


def test_row_mask_threshold_gradient() -> None:
    # Target 0 keeps every dimension in train mode, so only E masks the rows.
    table = norm_table().train()
    table.weight_matrix().sum().backward()
    assert table.threshold.grad is not None
    # d/dt sum_i E_i * ||v_i||_1, with the triangle surrogate max(0, 1 - |norm - t|).
    expected = -(0.4 * 0.4 + 0.8 * 0.8 + 1.5 * 0.5 + 3.0 * 0.0)
    assert float(table.threshold.grad) == pytest.approx(expected, rel=1e-5)
    assert table.weight.grad is not None
    assert float(table.weight.grad[3].abs().sum()) > 0


def test_penalty_gradient_on_threshold() -> None:
    table = OptEmbedSupernet(5, 3, target=0.5, alpha=0.01, threshold_init=0.5)
    penalty = table.penalty(torch.tensor([0, 1]))
    assert penalty is not None
    assert float(penalty.detach()) == pytest.approx(0.01 * math.exp(-0.5))
    penalty.backward()
    assert table.threshold.grad is not None
    assert float(table.threshold.grad) == pytest.approx(-0.01 * math.exp(-0.5))
    assert OptEmbedSupernet(5, 3, target=0.5, alpha=0.0).penalty(torch.tensor([0])) is None


def test_threshold_has_own_lr_group() -> None:
    table = OptEmbedSupernet(5, 3, target=0.5, threshold_lr=3e-3)
    groups = table.optimizer_groups(1e-3)
    assert len(groups) == 1
    assert groups[0]["params"] == [table.threshold]
    assert groups[0]["lr"] == 3e-3


def test_candidate_sets_exact_masks() -> None:
    table = OptEmbedSupernet(6, 5, target=0.5, threshold_init=100.0).eval()
    dims = torch.tensor([0, 1, 5, 3, 2, 4])
    table.set_candidate(dims)
    expected = torch.arange(5).unsqueeze(0) < dims.unsqueeze(1)
    # The threshold of 100 would drop every row, but a candidate alone decides the mask.
    assert torch.equal(table.keep_mask(), expected)
    assert torch.equal(table.weight_matrix() != 0, expected)
    assert count_parameters([table]).params_stored == int(dims.sum())
    table.set_candidate(None)
    assert int(table.keep_mask().sum()) == 0


@pytest.mark.parametrize("with_candidate", [False, True])
def test_eval_forward_matches_weight_matrix(with_candidate: bool) -> None:
    torch.manual_seed(0)
    table = OptEmbedSupernet(50, 8, target=0.8, threshold_init=0.6).eval()
    if with_candidate:
        table.set_candidate(torch.randint(0, 9, (50,)))
    ids = torch.randint(0, 50, (7, 3))
    assert torch.equal(table(ids), table.weight_matrix()[ids])


def test_export_decode_round_trip() -> None:
    torch.manual_seed(1)
    table = OptEmbedSupernet(40, 8, target=0.8, threshold_init=0.5).eval()
    table.set_candidate(torch.randint(0, 9, (40,)))
    artifact = table.export_artifact()
    decoded = OptEmbedSupernet.decode_artifact(artifact)
    assert decoded.dtype == torch.float32
    assert torch.allclose(decoded, table.weight_matrix().detach(), atol=1e-5)
    assert artifact["col_indices"].dtype == torch.int8


def test_train_mode_samples_prefix_masks() -> None:
    torch.manual_seed(2)
    table = OptEmbedSupernet(4000, 16, target=0.75, threshold_init=-1.0).train()
    kept = table.weight_matrix().detach() != 0
    counts = kept.sum(1)
    # Every row keeps a non-empty prefix of its dimensions.
    assert torch.equal(kept, dim_mask(counts, 16))
    assert int(counts.min()) >= 1
    assert float(counts.float().mean()) == pytest.approx(16 * 0.25, rel=0.05)
    # A second call draws new counts.
    assert not torch.equal(table.weight_matrix().detach() != 0, kept)
    looked_up = table(torch.randint(0, 4000, (7, 3))).detach() != 0
    assert looked_up.shape == (7, 3, 16)
    assert torch.equal(looked_up, dim_mask(looked_up.sum(-1), 16))
    assert table(torch.zeros(0, dtype=torch.int64)).shape == (0, 16)


@pytest.mark.parametrize("mean", [1.5, 4.0, 8.5, 12.8, 31.9])
def test_dim_distribution_hits_mean(mean: float) -> None:
    dim = 64 if mean > 16 else 16
    probabilities = dim_count_probabilities(dim, mean)
    counts = torch.arange(1, dim + 1, dtype=torch.float64)
    assert float(probabilities.sum()) == pytest.approx(1.0)
    assert float((probabilities * counts).sum()) == pytest.approx(mean, abs=1e-6)
    generator = torch.Generator().manual_seed(0)
    sample = sample_dim_counts(probabilities, (20000,), generator)
    assert int(sample.min()) >= 1
    assert int(sample.max()) <= dim
    assert float(sample.double().mean()) == pytest.approx(mean, rel=0.03)


def test_dim_distribution_edges() -> None:
    assert dim_count_probabilities(8, 8.0).tolist() == [0.0] * 7 + [1.0]
    assert dim_count_probabilities(8, 0.3).tolist() == [1.0] + [0.0] * 7
    with pytest.raises(ValueError, match="dim"):
        dim_count_probabilities(0, 1.0)


def test_set_candidate_rejects_bad_dims() -> None:
    table = OptEmbedSupernet(3, 4, target=0.5)
    with pytest.raises(ValueError, match="shape"):
        table.set_candidate(torch.tensor([1, 2]))
    with pytest.raises(ValueError, match="integer"):
        table.set_candidate(torch.tensor([1.0, 2.0, 3.0]))
    with pytest.raises(ValueError, match=r"\[0, 4\]"):
        table.set_candidate(torch.tensor([1, 5, 0]))


def test_fixed_builds_masked_embedding() -> None:
    table = OptEmbedSupernet(6, 4, target=0.5)
    mask = dim_mask(torch.tensor([0, 1, 2, 3, 4, 2]), 4)
    fixed = table.fixed({"weight": mask})
    assert isinstance(fixed, MaskedEmbedding)
    assert torch.equal(fixed.mask, mask)
    assert torch.equal(fixed.weight_matrix().detach(), table.weight.detach() * mask)
    with pytest.raises(ValueError, match="bool"):
        table.fixed({"weight": mask.float()})
    with pytest.raises(ValueError, match="none"):
        table.fixed({})


def test_method_spec_builds_tables() -> None:
    spec = get_method("optembed")
    assert spec.kind == TWO_STAGE
    settings = spec.parse_settings({"alpha": 1e-3, "threshold_init": 0.25})
    table = spec.create(30, 8, 0.8, settings, 0.5)
    assert isinstance(table, OptEmbedSupernet)
    assert float(table.threshold.detach()) == 0.25
    assert table.alpha == 1e-3
    assert table.weight.std().item() == pytest.approx(0.5, rel=0.3)
    assert isinstance(spec.empty_table(30, 8, 0.8, settings), MaskedEmbedding)


def test_settings_round_trip() -> None:
    spec = get_method("optembed")
    settings = spec.parse_settings({"generations": 3, "mutate_prob": 0.2, "threshold_lr": 1e-3})
    assert settings == OptEmbedSettings(generations=3, mutate_prob=0.2, threshold_lr=1e-3)
    assert spec.parse_settings(settings.to_dict()) == settings
    assert spec.parse_settings(None) == OptEmbedSettings()


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("supernet_epochs", 0),
        ("population", 0),
        ("keep_top", 0),
        ("generations", -1),
        ("crossovers", -1),
        ("mutations", -2),
        ("mutate_prob", 0.0),
        ("mutate_prob", 1.5),
        ("alpha", -1e-4),
        ("threshold_lr", 0.0),
        ("threshold_init", math.inf),
        ("population", "20"),
    ],
)
def test_settings_bad_value_names_key(key: str, value: object) -> None:
    with pytest.raises(ConfigError, match=f"method.settings.*{key}"):
        get_method("optembed").parse_settings({key: value})
