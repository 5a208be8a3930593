"""The entry point of one trial, used by ``lers-ray train`` and by Ray Tune trials."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from lers_ray.config import ConfigError, TrialConfig
from lers_ray.data.dataset import InteractionData
from lers_ray.embeddings.accounting import artifact_bytes, count_parameters
from lers_ray.embeddings.registry import get_method
from lers_ray.models import CFModel, build_model
from lers_ray.training.checkpoint import (
    build_tables,
    load_checkpoint,
    read_checkpoint,
    save_checkpoint,
)
from lers_ray.training.memory import peak_rss_mb, reset_peak_rss
from lers_ray.training.outcome import COMPLETED, FAILED, TrialOutcome
from lers_ray.training.trainer import Evaluators, evaluate_split, train

logger = logging.getLogger(__name__)


def run_trial(
    config: TrialConfig,
    out_dir: Path,
    data: InteractionData | None = None,
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
) -> TrialOutcome:
    """Run one trial and write ``out_dir/outcome.json`` and ``out_dir/best_model.pt``.

    Methods that train (``full``) train the backbone. Post-hoc methods (``magprune``) load the
    full model at ``config.base_checkpoint`` (training ``config.base`` into ``out_dir/base``
    first when that file does not exist), derive their tables from it, and evaluate without
    training, reporting one epoch numbered 0 with ``train_loss`` 0.0.

    ``on_epoch`` receives after every evaluated epoch::

        {"epoch", "train_loss", "epoch_seconds", "val_recall_K", "val_ndcg_K" (every K),
         "best": {"epoch", "val_recall_K", "val_ndcg_K", "test_recall_K", "test_ndcg_K",
                  "params_full", "params_stored", "sparsity", "sparsity_target"}}

    ``epoch_seconds`` is the training time of that epoch, without evaluation.

    Raises:
        ConfigError: on an invalid config or a missing or mismatched base checkpoint.
    """
    config.validate()
    reset_peak_rss()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if config.training.num_threads:
        torch.set_num_threads(config.training.num_threads)
    if data is None:
        from lers_ray.data import load_dataset

        data = load_dataset(config.dataset)
    spec = get_method(config.method.name)
    spec.parse_settings(config.method.settings)

    if spec.post_hoc:
        outcome = _run_post_hoc(config, out_dir, data, on_epoch)
    else:
        outcome = _run_training(config, out_dir, data, on_epoch)
    outcome.metrics["peak_rss_mb"] = peak_rss_mb()
    outcome.write_json(out_dir / "outcome.json")
    logger.info(
        "trial %s in %s: best epoch %d, val NDCG@20 %s",
        outcome.status,
        out_dir,
        outcome.best_epoch,
        outcome.metrics.get("val_ndcg_20"),
    )
    return outcome


def _run_training(
    config: TrialConfig,
    out_dir: Path,
    data: InteractionData,
    on_epoch: Callable[[dict[str, Any]], None] | None,
) -> TrialOutcome:
    torch.manual_seed(config.training.seed)
    user_table, item_table = build_tables(config, data.n_users, data.n_items)
    model = build_model(
        config.backbone, user_table, item_table, data.train, config.training.weight_decay
    )
    param_info = _param_info(model, config.method.target)
    result = train(model, data, config, out_dir, param_info, on_epoch=on_epoch)
    metrics = {key: value for key, value in result.best.items() if key != "epoch"}
    if not metrics:
        metrics = dict(param_info)
    metrics["train_seconds"] = result.train_seconds
    return TrialOutcome(
        status=result.status,
        failure_reason=result.failure_reason,
        best_epoch=result.best_epoch,
        epochs_run=result.epochs_run,
        metrics=metrics,
        checkpoint_path=result.checkpoint_path,
        history=result.history,
    )


def _run_post_hoc(
    config: TrialConfig,
    out_dir: Path,
    data: InteractionData,
    on_epoch: Callable[[dict[str, Any]], None] | None,
) -> TrialOutcome:
    started = time.perf_counter()
    base_path = _resolve_base_checkpoint(config, out_dir, data)
    if isinstance(base_path, TrialOutcome):
        return base_path
    _check_base_matches(config, base_path, data)
    base_model, _ = load_checkpoint(base_path, data)

    spec = get_method(config.method.name)
    settings = spec.parse_settings(config.method.settings)
    if spec.from_trained is None:
        raise ConfigError(f"method.name: {spec.name!r} is post hoc but has no from_trained")
    target = config.method.target
    try:
        user_table = spec.from_trained(base_model.user_table, target, settings)
        item_table = spec.from_trained(base_model.item_table, target, settings)
    except ValueError as error:
        raise ConfigError(f"method.settings: {error}") from error
    adjacency = getattr(base_model, "adjacency", None)
    model = build_model(
        config.backbone,
        user_table,
        item_table,
        data.train,
        config.training.weight_decay,
        adjacency,
    )
    param_info = _param_info(model, target)
    epoch_seconds = time.perf_counter() - started

    evaluators = Evaluators.for_data(data, config.ks, config.training.eval_batch_size)
    valid = evaluate_split(model, evaluators.valid, "val_")
    test = evaluate_split(model, evaluators.test, "test_") if isinstance(valid, dict) else valid
    metrics: dict[str, Any] = dict(param_info)
    metrics["train_seconds"] = time.perf_counter() - started
    if isinstance(valid, str) or isinstance(test, str):
        reason = f"{valid if isinstance(valid, str) else test} after pruning"
        return TrialOutcome(FAILED, reason, -1, 0, metrics, None, [])

    checkpoint_path = out_dir / "best_model.pt"
    save_checkpoint(checkpoint_path, model, config, data, epoch=0)
    best = {"epoch": 0, **valid, **test, **param_info}
    report: dict[str, Any] = {
        "epoch": 0,
        "train_loss": 0.0,
        "epoch_seconds": epoch_seconds,
        **valid,
    }
    report["best"] = best
    if on_epoch is not None:
        on_epoch(report)
    metrics.update(valid)
    metrics.update(test)
    return TrialOutcome(COMPLETED, None, 0, 0, metrics, str(checkpoint_path), [report])


def _resolve_base_checkpoint(
    config: TrialConfig, out_dir: Path, data: InteractionData
) -> Path | TrialOutcome:
    """Return the base model's checkpoint path, training ``config.base`` when it is missing.

    Returns a failed :class:`TrialOutcome` when training the base model fails.
    """
    if config.base_checkpoint and Path(config.base_checkpoint).is_file():
        return Path(config.base_checkpoint)
    if config.base is None:
        where = config.base_checkpoint or "(not set)"
        raise ConfigError(
            f"base_checkpoint: {where} not found and no base config is given; "
            f"method {config.method.name!r} needs a trained full model: set base_checkpoint "
            "to its best_model.pt or give base to train it"
        )
    if get_method(config.base.method.name).post_hoc:
        raise ConfigError(
            f"base.method.name: {config.base.method.name!r} is post hoc itself; "
            "the base must be a trained method such as 'full'"
        )
    logger.info("base checkpoint missing; training the base model into %s", out_dir / "base")
    base_outcome = run_trial(config.base, out_dir / "base", data=data)
    if base_outcome.status != COMPLETED or base_outcome.checkpoint_path is None:
        reason = f"base model training failed: {base_outcome.failure_reason}"
        return TrialOutcome(FAILED, reason, -1, 0, {}, None, [])
    return Path(base_outcome.checkpoint_path)


def _check_base_matches(config: TrialConfig, path: Path, data: InteractionData) -> None:
    """Raise :class:`ConfigError` unless the base checkpoint is a full model of this backbone."""
    payload = read_checkpoint(path)
    base = TrialConfig.from_dict(payload["config"], source=f"{path}: config")
    if get_method(base.method.name).post_hoc:
        raise ConfigError(
            f"base_checkpoint: {path} contains a {base.method.name!r} model; "
            "a post-hoc method needs a trained full model"
        )
    if base.backbone != config.backbone:
        raise ConfigError(
            f"base_checkpoint: {path} has backbone {base.backbone}, but this trial uses "
            f"{config.backbone}; use a base model trained with the same backbone settings"
        )
    if payload["data_fingerprint"] != data.fingerprint:
        raise ConfigError(
            f"base_checkpoint: {path} was trained on split {payload['data_fingerprint']}, "
            f"this trial uses {data.fingerprint}; use a base model of the same dataset split"
        )


def _param_info(model: CFModel, target: float) -> dict[str, Any]:
    counts = count_parameters([model.user_table, model.item_table])
    return {
        "params_full": counts.params_full,
        "params_stored": counts.params_stored,
        "sparsity": counts.sparsity,
        "sparsity_target": float(target),
        "artifact_bytes": artifact_bytes([model.user_table, model.item_table]),
    }
