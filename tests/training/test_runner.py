from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch

from lers_ray.config import (
    BackboneConfig,
    ConfigError,
    MethodConfig,
    TrainingConfig,
    TrialConfig,
)
from lers_ray.training.checkpoint import load_checkpoint
from lers_ray.training.metrics import RankingEvaluator
from lers_ray.training.runner import run_trial


def make_config(backbone: str = "lightgcn", **training: Any) -> TrialConfig:
    settings: dict[str, Any] = {
        "lr": 0.02,
        "batch_size": 128,
        "epochs": 8,
        "patience": 0,
        "init_std": 0.1,
        "seed": 1,
    }
    settings.update(training)
    return TrialConfig(
        backbone=BackboneConfig(name=backbone, dim=16, num_layers=2),
        training=TrainingConfig(**settings),
    )


def best_keys(ks: list[int]) -> set[str]:
    keys = {
        "epoch",
        "params_full",
        "params_stored",
        "sparsity",
        "sparsity_target",
        "sparsity_gap",
        "meets_target",
        "artifact_bytes",
    }
    for k in ks:
        keys |= {f"{split}_{name}_{k}" for split in ("val", "test") for name in ("recall", "ndcg")}
    return keys


@pytest.mark.parametrize("backbone", ["mf", "lightgcn"])
def test_training_improves_validation_ndcg(backbone: str, data, tmp_path: Path) -> None:
    untrained = run_trial(make_config(backbone, epochs=0), tmp_path / "untrained", data=data)
    trained = run_trial(make_config(backbone), tmp_path / "trained", data=data)
    assert untrained.status == "completed"
    assert trained.status == "completed"
    assert untrained.best_epoch == 0
    assert trained.metrics["val_ndcg_20"] > untrained.metrics["val_ndcg_20"] + 0.1


def test_epoch_reports_have_contract_shape(data, tmp_path: Path) -> None:
    reports: list[dict[str, Any]] = []
    config = make_config(epochs=3, eval_every=2)
    outcome = run_trial(config, tmp_path, data=data, on_epoch=reports.append)

    assert [report["epoch"] for report in reports] == [2, 3]
    expected_top = {"epoch", "train_loss", "epoch_seconds", "best"}
    expected_top |= {f"val_{name}_{k}" for k in config.ks for name in ("recall", "ndcg")}
    for report in reports:
        assert set(report) == expected_top
        assert set(report["best"]) == best_keys(config.ks)
        assert report["best"]["params_full"] == (data.n_users + data.n_items) * 16
        assert report["best"]["sparsity"] == 0.0
    assert outcome.history == reports
    assert outcome.epochs_run == 3

    written = json.loads((tmp_path / "outcome.json").read_text())
    assert written["status"] == "completed"
    assert written["best_epoch"] == outcome.best_epoch
    for key in ("test_ndcg_20", "params_stored", "train_seconds", "peak_rss_mb", "artifact_bytes"):
        assert key in written["metrics"]


def test_overflowing_init_fails_with_reason(data, tmp_path: Path) -> None:
    outcome = run_trial(make_config(init_std=1e30, epochs=3), tmp_path, data=data)
    assert outcome.status == "failed"
    assert outcome.failure_reason is not None
    assert "non-finite train loss" in outcome.failure_reason
    assert "epoch 1" in outcome.failure_reason
    assert outcome.checkpoint_path is None
    assert json.loads((tmp_path / "outcome.json").read_text())["status"] == "failed"


def test_early_stopping_honours_patience(data, tmp_path: Path) -> None:
    # lr = 0 never changes the model, so only the first evaluation is an improvement.
    reports: list[dict[str, Any]] = []
    outcome = run_trial(
        make_config(lr=0.0, epochs=20, patience=3), tmp_path, data=data, on_epoch=reports.append
    )
    assert outcome.status == "completed"
    assert outcome.best_epoch == 1
    assert outcome.epochs_run == 4
    assert len(reports) == 4


def test_checkpoint_reload_gives_identical_scores(data, tmp_path: Path) -> None:
    outcome = run_trial(make_config(epochs=4), tmp_path, data=data)
    assert outcome.checkpoint_path is not None
    model, config = load_checkpoint(outcome.checkpoint_path, data)
    assert config.training.epochs == 4

    evaluator = RankingEvaluator(data.valid, [data.train], data.n_items, config.ks)
    users, items = model.final_embeddings()
    reloaded = evaluator.evaluate(users, items)
    for key, value in reloaded.items():
        assert outcome.metrics[f"val_{key}"] == value

    again, _ = load_checkpoint(outcome.checkpoint_path, data)
    assert torch.equal(again.final_embeddings()[0], users)


def test_reload_rejects_other_split(data, tmp_path: Path) -> None:
    outcome = run_trial(make_config(epochs=1), tmp_path, data=data)
    other = type(data)(**{**data.__dict__, "fingerprint": "other"})
    with pytest.raises(ConfigError, match="split"):
        load_checkpoint(outcome.checkpoint_path, other)


def magprune_config(target: float, row_floor_k: int = 0, **fields: Any) -> TrialConfig:
    config = make_config(epochs=3)
    config.method = MethodConfig(
        name="magprune", target=target, settings={"row_floor_k": row_floor_k}
    )
    for name, value in fields.items():
        setattr(config, name, value)
    return config


@pytest.fixture(scope="module")
def base_checkpoint(data, tmp_path_factory: pytest.TempPathFactory) -> str:
    outcome = run_trial(make_config(epochs=3), tmp_path_factory.mktemp("base"), data=data)
    assert outcome.checkpoint_path is not None
    return outcome.checkpoint_path


@pytest.mark.parametrize(("target", "row_floor_k"), [(0.5, 0), (0.8, 2), (0.95, 0)])
def test_magprune_reaches_exact_sparsity(
    data, tmp_path: Path, base_checkpoint: str, target: float, row_floor_k: int
) -> None:
    reports: list[dict[str, Any]] = []
    config = magprune_config(target, row_floor_k, base_checkpoint=base_checkpoint)
    outcome = run_trial(config, tmp_path, data=data, on_epoch=reports.append)

    assert outcome.status == "completed"
    assert len(reports) == 1
    assert reports[0]["epoch"] == 0
    assert set(reports[0]["best"]) == best_keys(config.ks)
    pruned = math.floor(data.n_users * 16 * target + 1e-6)
    pruned += math.floor(data.n_items * 16 * target + 1e-6)
    full = (data.n_users + data.n_items) * 16
    assert outcome.metrics["params_full"] == full
    assert outcome.metrics["params_stored"] == full - pruned
    assert outcome.metrics["sparsity"] == pytest.approx(pruned / full)
    assert outcome.metrics["sparsity_target"] == target
    assert "test_ndcg_20" in outcome.metrics

    model, _ = load_checkpoint(outcome.checkpoint_path, data)
    assert int(model.user_table.mask.sum(dim=1).min()) >= row_floor_k


def test_magprune_trains_missing_base(data, tmp_path: Path) -> None:
    config = magprune_config(0.5, base=make_config(epochs=2))
    outcome = run_trial(config, tmp_path, data=data)
    assert outcome.status == "completed"
    assert (tmp_path / "base" / "best_model.pt").is_file()
    assert (tmp_path / "best_model.pt").is_file()


def test_magprune_without_base_raises(data, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="base_checkpoint"):
        run_trial(magprune_config(0.5), tmp_path, data=data)


def test_magprune_rejects_other_backbone(data, tmp_path: Path, base_checkpoint: str) -> None:
    config = magprune_config(0.5, base_checkpoint=base_checkpoint)
    config.backbone = BackboneConfig(name="lightgcn", dim=16, num_layers=3)
    with pytest.raises(ConfigError, match="backbone"):
        run_trial(config, tmp_path, data=data)


def test_magprune_infeasible_row_floor_raises(data, tmp_path: Path, base_checkpoint: str) -> None:
    config = magprune_config(0.95, row_floor_k=1, base_checkpoint=base_checkpoint)
    with pytest.raises(ValueError, match="max feasible k is 0"):
        run_trial(config, tmp_path, data=data)


def test_eval_every_zero_raises(data, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="eval_every"):
        run_trial(make_config(eval_every=0), tmp_path, data=data)
