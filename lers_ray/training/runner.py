"""The entry point of one trial, used by ``lers-ray train`` and by Ray Tune trials."""

from __future__ import annotations

import copy
import logging
import numbers
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from lers_ray.config import ConfigError, TrialConfig
from lers_ray.data.dataset import InteractionData
from lers_ray.edge.export import ARTIFACT_FILE, model_artifact, write_model_artifact
from lers_ray.embeddings.accounting import count_parameters
from lers_ray.embeddings.base import EmbeddingTable, SearchableTable, StructureInfeasible
from lers_ray.embeddings.registry import get_method
from lers_ray.embeddings.spec import POST_HOC, TWO_STAGE
from lers_ray.memory import peak_rss_mb, reset_peak_rss
from lers_ray.models import CFModel, build_model
from lers_ray.training.checkpoint import (
    build_tables,
    load_checkpoint,
    read_checkpoint,
    save_checkpoint,
)
from lers_ray.training.outcome import COMPLETED, FAILED, TrialOutcome
from lers_ray.training.stages import TABLE_NAMES, SearchContext, SearchResult
from lers_ray.training.trainer import Evaluators, evaluate_split, train

logger = logging.getLogger(__name__)

SPARSITY_TOLERANCE = 0.01
"""A trial meets its target when ``0 <= sparsity - target <= SPARSITY_TOLERANCE``."""
INITIAL_WEIGHTS_FILE = "initial_weights.pt"
"""Two-stage methods: the search tables' weights before any training, by table name."""
MASKS_FILE = "masks.pt"
"""Two-stage methods: the masks the search stage chose, by table name."""


def run_trial(
    config: TrialConfig,
    out_dir: Path,
    data: InteractionData | None = None,
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
) -> TrialOutcome:
    """Run one trial and write ``out_dir/outcome.json`` and ``out_dir/best_model.pt``.

    Methods that train (``full``, ``qr``, ``ttrec``, ``dhe``) train the backbone. Post-hoc
    methods (``magprune``, ``random_prune``, ``ptq``) load the full model at
    ``config.base_checkpoint`` (training ``config.base`` into ``out_dir/base`` first when that
    file does not exist), derive their tables from it, and evaluate without training,
    reporting one epoch numbered 0 with ``train_loss`` 0.0; ``magprune+ft`` then fine-tunes
    with the mask fixed, keeping epoch 0 if no epoch beats it. Two-stage methods (``pep``,
    ``cerp``, ``optembed``) run their search stage, save its files in ``out_dir/stages``, and
    retrain from the saved initial weights with the chosen masks fixed.

    A method whose structure cannot reach the target ends ``failed`` with the reason.

    ``on_epoch`` receives after every evaluated epoch::

        {"epoch", "train_loss", "epoch_seconds", "val_recall_K", "val_ndcg_K" (every K),
         "best": {"epoch", "val_recall_K", "val_ndcg_K", "test_recall_K", "test_ndcg_K",
                  "params_full", "params_stored", "sparsity", "sparsity_target",
                  "sparsity_gap", "meets_target", "artifact_bytes",
                  "structure.user.*", "structure.item.*"}}

    ``structure.*`` holds what the method derived from the target (buckets, ranks, widths).
    Two-stage methods add the search stage's figures (``search_epochs``, ...) to ``best``.

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

    try:
        if spec.kind == POST_HOC:
            outcome = _run_post_hoc(config, out_dir, data, on_epoch)
        elif spec.kind == TWO_STAGE:
            outcome = _run_two_stage(config, out_dir, data, on_epoch)
        else:
            outcome = _run_training(config, out_dir, data, on_epoch)
    except StructureInfeasible as error:
        reason = f"infeasible structure: {error}"
        logger.warning("trial in %s cannot run: %s", out_dir, reason)
        outcome = TrialOutcome(FAILED, reason, -1, 0, {}, None, [])
    if outcome.status == COMPLETED and outcome.checkpoint_path is not None:
        outcome.metrics["artifact_bytes"] = export_edge_artifact(
            config, Path(outcome.checkpoint_path), data, out_dir / ARTIFACT_FILE
        )
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
    return _train_and_summarise(model, config, out_dir, data, on_epoch)


def export_edge_artifact(
    config: TrialConfig, checkpoint: Path, data: InteractionData, path: Path
) -> int:
    """Write the edge artifact of the model saved at ``checkpoint``; return its size in bytes."""
    model, _ = load_checkpoint(checkpoint, data)
    return write_model_artifact(
        path,
        model,
        method=config.method.name,
        target=config.method.target,
        dataset=data.name,
        fingerprint=data.fingerprint,
    )


def _train_and_summarise(
    model: CFModel,
    config: TrialConfig,
    out_dir: Path,
    data: InteractionData,
    on_epoch: Callable[[dict[str, Any]], None] | None,
    extra: dict[str, Any] | None = None,
    evaluate_start: bool = False,
) -> TrialOutcome:
    """Train ``model`` and return the outcome; ``extra`` figures join every ``best`` block."""
    param_info = {**_param_info(model, config, data), **(extra or {})}
    result = train(
        model, data, config, out_dir, param_info, on_epoch=on_epoch, evaluate_start=evaluate_start
    )
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


def _run_two_stage(
    config: TrialConfig,
    out_dir: Path,
    data: InteractionData,
    on_epoch: Callable[[dict[str, Any]], None] | None,
) -> TrialOutcome:
    """Search stage, then retraining from the saved initial weights with the masks fixed."""
    spec = get_method(config.method.name)
    settings = spec.parse_settings(config.method.settings)
    assert spec.search is not None
    stage_dir = out_dir / "stages"
    stage_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()

    torch.manual_seed(config.training.seed)
    user_table, item_table = build_tables(config, data.n_users, data.n_items, stage="search")
    model = build_model(
        config.backbone, user_table, item_table, data.train, config.training.weight_decay
    )
    adjacency = getattr(model, "adjacency", None)
    initial_path = stage_dir / INITIAL_WEIGHTS_FILE
    torch.save(
        {name: table.state_dict() for name, table in zip(TABLE_NAMES, model.tables(), strict=True)},
        initial_path,
    )
    evaluators = Evaluators.for_data(data, config.ks, config.training.eval_batch_size)
    context = SearchContext(model, data, config, settings, evaluators, stage_dir)
    result: SearchResult = spec.search(context)
    search_info: dict[str, float] = {
        key: float(value) for key, value in result.info.items() if isinstance(value, numbers.Real)
    }
    search_info["search_seconds"] = time.perf_counter() - started
    if result.failure is not None:
        return TrialOutcome(FAILED, result.failure, -1, 0, search_info, None, [])
    masks_path = stage_dir / MASKS_FILE
    torch.save(result.masks, masks_path)
    del model, context

    retrain_tables = retrain_tables_from_stage(config, data, stage_dir)
    retrain_model = build_model(
        config.backbone, *retrain_tables, data.train, config.training.weight_decay, adjacency
    )
    return _train_and_summarise(retrain_model, config, out_dir, data, on_epoch, search_info)


def retrain_tables_from_stage(
    config: TrialConfig, data: InteractionData, stage_dir: Path
) -> tuple[EmbeddingTable, EmbeddingTable]:
    """Rebuild the search tables from the saved initial weights and fix the saved masks.

    Raises:
        ConfigError: if the stage files are missing.
    """
    initial_path = stage_dir / INITIAL_WEIGHTS_FILE
    masks_path = stage_dir / MASKS_FILE
    for path in (initial_path, masks_path):
        if not path.is_file():
            raise ConfigError(f"{path}: stage file missing; rerun the trial's search stage")
    initial = torch.load(initial_path, map_location="cpu", weights_only=True)
    masks = torch.load(masks_path, map_location="cpu", weights_only=True)
    tables = build_tables(config, data.n_users, data.n_items, stage="search")
    fixed: list[EmbeddingTable] = []
    for name, table in zip(TABLE_NAMES, tables, strict=True):
        table.load_state_dict(initial[name])
        if not isinstance(table, SearchableTable):
            raise TypeError(
                f"method {config.method.name!r}: {type(table).__name__} cannot fix masks"
            )
        fixed.append(table.fixed(masks[name]))
    return fixed[0], fixed[1]


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
    if spec.finetune:
        finetune = copy.deepcopy(config)
        finetune.training.epochs = settings.finetune_epochs
        finetune.training.lr = settings.finetune_lr
        finetune.training.patience = 0
        return _train_and_summarise(model, finetune, out_dir, data, on_epoch, evaluate_start=True)
    param_info = _param_info(model, config, data)
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


def _param_info(model: CFModel, config: TrialConfig, data: InteractionData) -> dict[str, Any]:
    """Return the parameter figures of the model's tables and the structure they use.

    ``sparsity_gap`` is ``sparsity - target``; ``meets_target`` is 1 when the gap is within
    the protocol's tolerance ``[0, 0.01]`` and 0 when the structure could not get that close.
    ``artifact_bytes`` is the size of the model's edge artifact file.
    """
    target = config.method.target
    tables = model.tables()
    counts = count_parameters(tables)
    gap = counts.sparsity - float(target)
    info: dict[str, Any] = {
        "params_full": counts.params_full,
        "params_stored": counts.params_stored,
        "sparsity": counts.sparsity,
        "sparsity_target": float(target),
        "sparsity_gap": gap,
        "meets_target": int(-1e-12 <= gap <= SPARSITY_TOLERANCE + 1e-12),
        "artifact_bytes": len(
            model_artifact(
                model,
                method=config.method.name,
                target=target,
                dataset=data.name,
                fingerprint=data.fingerprint,
            )
        ),
    }
    for name, table in zip(("user", "item"), tables, strict=True):
        for key, value in table.structure().items():
            info[f"structure.{name}.{key}"] = value
    if not info["meets_target"] and target > 0:
        logger.warning(
            "achieved sparsity %.5f is %.5f from target %.2f: the method's structure cannot "
            "get closer",
            counts.sparsity,
            gap,
            target,
        )
    return info
