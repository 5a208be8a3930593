from __future__ import annotations

from pathlib import Path

import optuna
import pytest

from lers_ray.config import ConfigError
from lers_ray.sweep.space import load_search_space, set_by_path

REPO_SPACES = Path(__file__).resolve().parents[2] / "search_spaces"


def sample(space, context=None, seed=0):
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    return space.sample(study.ask(), context or {})


def test_space_types_sample_within_bounds():
    space = load_search_space(
        {
            "params": {
                "training.lr": {"type": "log_float", "low": 1e-4, "high": 1e-2},
                "training.init_std": {"type": "float", "low": 0.01, "high": 0.2, "step": 0.01},
                "backbone.num_layers": {"type": "int", "low": 1, "high": 4},
                "training.batch_size": {"type": "categorical", "choices": [512, 1024]},
                "training.patience": {"type": "fixed", "value": 7},
            }
        }
    )
    for seed in range(20):
        values = sample(space, seed=seed)
        assert 1e-4 <= values["training.lr"] <= 1e-2
        assert 0.01 <= values["training.init_std"] <= 0.2
        assert values["backbone.num_layers"] in {1, 2, 3, 4}
        assert values["training.batch_size"] in {512, 1024}
        assert values["training.patience"] == 7


def test_space_conditional_parameter():
    space = load_search_space(
        {
            "params": {
                "training.batch_size": {"type": "categorical", "choices": [512, 1024]},
                "training.num_negatives": {
                    "type": "int",
                    "low": 2,
                    "high": 3,
                    "when": {"training.batch_size": 512},
                },
            }
        }
    )
    seen = {512: 0, 1024: 0}
    for seed in range(30):
        values = sample(space, seed=seed)
        seen[values["training.batch_size"]] += 1
        if values["training.batch_size"] == 512:
            assert values["training.num_negatives"] in {2, 3}
        else:
            assert "training.num_negatives" not in values
    assert seen[512] and seen[1024]


def test_space_context_bound():
    space = load_search_space(REPO_SPACES / "methods" / "magprune.yaml")
    for seed in range(20):
        values = sample(space, {"max_row_floor": 3}, seed=seed)
        assert 0 <= values["method.settings.row_floor_k"] <= 3


@pytest.mark.parametrize(
    "params, fragment",
    [
        ({"x": {"type": "gaussian"}}, "invalid type 'gaussian'"),
        ({"x": {"type": "float", "low": 1}}, "missing 'high'"),
        ({"x": {"type": "float", "low": 2, "high": 1}}, "greater than high"),
        ({"x": {"type": "log_float", "low": 0, "high": 1}}, "low > 0"),
        ({"x": {"type": "int", "low": 0, "high": "max_rows"}}, "'high' is 'max_rows'"),
        ({"x": {"type": "categorical", "choices": []}}, "non-empty list"),
        ({"x": {"type": "float", "low": 0, "high": 1, "stepp": 1}}, "unknown key(s) ['stepp']"),
        ({"x": {"type": "fixed", "value": 1, "when": {"y": 1}}}, "'when' refers to 'y'"),
    ],
)
def test_space_errors_name_parameter(params, fragment):
    with pytest.raises(ConfigError) as error:
        load_search_space({"params": params})
    assert fragment in str(error.value)
    assert "x" in str(error.value)


def test_space_file_error_names_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("params:\n  training.lr: {type: float, low: 1\n")
    with pytest.raises(ConfigError) as error:
        load_search_space(path)
    assert str(path) in str(error.value)
    assert "line" in str(error.value)


def test_set_by_path_creates_sections():
    config = {"training": {"lr": 1.0}}
    set_by_path(config, "training.lr", 0.5)
    set_by_path(config, "method.settings.row_floor_k", 2)
    assert config == {"training": {"lr": 0.5}, "method": {"settings": {"row_floor_k": 2}}}
    with pytest.raises(ConfigError):
        set_by_path(config, "training.lr.x", 1)


def test_repository_spaces_load():
    files = sorted((REPO_SPACES / "backbones").glob("*.yaml")) + sorted(
        (REPO_SPACES / "methods").glob("*.yaml")
    )
    assert files
    for path in files:
        load_search_space(path)


def test_grid_of_discrete_space():
    space = load_search_space(
        {
            "params": {
                "method.settings.row_floor_k": {"type": "int", "low": 0, "high": "max_row_floor"},
                "training.batch_size": {"type": "categorical", "choices": [512, 1024]},
                "training.patience": {"type": "fixed", "value": 3},
            }
        }
    )
    assert space.grid({"max_row_floor": 2}) == {
        "method.settings.row_floor_k": [0, 1, 2],
        "training.batch_size": [512, 1024],
    }


def test_grid_none_for_continuous_space():
    space = load_search_space(
        {
            "params": {
                "training.lr": {"type": "log_float", "low": 1e-4, "high": 1e-2},
            }
        }
    )
    assert space.grid({}) is None


def test_grid_sampler_tells_whole_grid_outside_optimize():
    from lers_ray.sweep.coordinator import BudgetedGridSampler

    study = optuna.create_study(sampler=BudgetedGridSampler({"k": [0, 1]}, seed=0))
    seen = []
    for _ in range(2):
        trial = study.ask()
        seen.append(trial.suggest_int("k", 0, 1))
        study.tell(trial, 1.0)  # plain GridSampler raises here on the last grid point
    assert sorted(seen) == [0, 1]
