from __future__ import annotations

from pathlib import Path

import optuna
import pytest
import torch

from lers_ray.config import ConfigError
from lers_ray.embeddings.full import FullEmbedding, FullSettings
from lers_ray.embeddings.magprune import MagPruneSettings
from lers_ray.embeddings.masked import MaskedEmbedding
from lers_ray.embeddings.registry import (
    available_methods,
    get_method,
)
from lers_ray.sweep.space import load_search_space, set_by_path


def test_registry_lists_full_and_magprune() -> None:
    assert {"full", "magprune"} <= set(available_methods())
    assert get_method("full").post_hoc is False
    assert get_method("magprune").post_hoc is True


def test_unknown_method_lists_known_names() -> None:
    with pytest.raises(ConfigError, match=r"unknown method 'nope'.*full.*magprune"):
        get_method("nope")


def test_settings_round_trip() -> None:
    spec = get_method("magprune")
    settings = spec.parse_settings({"row_floor_k": 3})
    assert settings == MagPruneSettings(row_floor_k=3)
    assert spec.parse_settings(settings.to_dict()) == settings
    assert get_method("full").parse_settings({}) == FullSettings()
    assert get_method("full").parse_settings(None).to_dict() == {}


def test_settings_unknown_key_named() -> None:
    with pytest.raises(ConfigError, match="row_floor"):
        get_method("magprune").parse_settings({"row_floor": 3})
    with pytest.raises(ConfigError, match="extra"):
        get_method("full").parse_settings({"extra": 1})


def test_settings_wrong_type_and_negative_k() -> None:
    with pytest.raises(ConfigError, match="row_floor_k"):
        get_method("magprune").parse_settings({"row_floor_k": "3"})
    with pytest.raises(ConfigError, match="row_floor_k"):
        get_method("magprune").parse_settings({"row_floor_k": -1})


def test_builders_make_tables() -> None:
    full_spec = get_method("full")
    table = full_spec.create(30, 8, 0.0, FullSettings(), 0.5)
    assert isinstance(table, FullEmbedding)
    assert table.weight.std().item() == pytest.approx(0.5, rel=0.3)

    prune_spec = get_method("magprune")
    assert prune_spec.from_trained is not None
    pruned = prune_spec.from_trained(table, 0.5, MagPruneSettings(row_floor_k=2))
    assert isinstance(pruned, MaskedEmbedding)
    assert int(pruned.mask.sum()) == 120
    assert int(pruned.mask.sum(dim=1).min()) >= 2
    empty = prune_spec.create(30, 8, 0.5, MagPruneSettings(), 0.1)
    assert torch.count_nonzero(empty.weight_matrix()) == 0


REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("method", available_methods())
def test_default_settings_round_trip(method: str) -> None:
    spec = get_method(method)
    settings = spec.parse_settings({})
    assert spec.parse_settings(settings.to_dict()) == settings


@pytest.mark.parametrize("method", available_methods())
def test_search_space_samples_valid_settings(method: str) -> None:
    space = load_search_space(REPO / "search_spaces" / "methods" / f"{method}.yaml")
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    spec = get_method(method)
    for _ in range(5):
        params = space.sample(study.ask(), {"max_row_floor": 12, "max_dhe_hashes": 100})
        config: dict = {"method": {"name": method, "target": 0.8, "settings": {}}}
        for path, value in params.items():
            set_by_path(config, path, value)
        settings = spec.parse_settings(config["method"]["settings"])
        assert spec.parse_settings(settings.to_dict()) == settings
