"""BPR training with periodic validation, early stopping and best-model checkpoints."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lers_ray.config import ConfigError, TrialConfig
from lers_ray.data.dataset import InteractionData
from lers_ray.models import CFModel
from lers_ray.training.checkpoint import save_checkpoint
from lers_ray.training.metrics import RankingEvaluator
from lers_ray.training.outcome import COMPLETED, FAILED
from lers_ray.training.sampler import BPRSampler

logger = logging.getLogger(__name__)

EpochCallback = Callable[[dict[str, Any]], None]


@dataclass
class TrainResult:
    """Result of :func:`train`: status, the best model's metrics and the epoch reports."""

    status: str
    failure_reason: str | None
    best_epoch: int
    epochs_run: int
    best: dict[str, Any]
    """The ``best`` block of the last report (empty when no epoch was evaluated)."""
    history: list[dict[str, Any]] = field(default_factory=list)
    checkpoint_path: str | None = None
    train_seconds: float = 0.0


@dataclass
class Evaluators:
    """Validation (train masked) and test (train and validation masked) evaluators."""

    valid: RankingEvaluator
    test: RankingEvaluator

    @classmethod
    def for_data(cls, data: InteractionData, ks: list[int], batch_size: int) -> Evaluators:
        """Prepare both evaluators for ``data``."""
        return cls(
            valid=RankingEvaluator(data.valid, [data.train], data.n_items, ks, batch_size),
            test=RankingEvaluator(
                data.test, [data.train, data.valid], data.n_items, ks, batch_size
            ),
        )


def make_optimizer(model: CFModel, lr: float) -> torch.optim.Optimizer:
    """Return Adam over the model's parameters, fused where torch supports it.

    Parameters a table lists in :meth:`EmbeddingTable.optimizer_groups` get their group's
    ``lr`` and ``weight_decay``; all others use ``lr`` and no weight decay.
    """
    groups: list[dict[str, Any]] = []
    grouped: set[int] = set()
    for table in model.tables():
        for group in table.optimizer_groups(lr):
            params = [p for p in group["params"] if p.requires_grad]
            grouped.update(id(p) for p in params)
            if params:
                groups.append({**group, "params": params})
    rest = [p for p in model.parameters() if p.requires_grad and id(p) not in grouped]
    if rest:
        groups.insert(0, {"params": rest})
    try:
        return torch.optim.Adam(groups, lr=lr, fused=True)
    except (RuntimeError, ValueError) as error:
        logger.info("fused Adam unavailable (%s); using the foreach implementation", error)
        return torch.optim.Adam(groups, lr=lr, foreach=True)


@torch.no_grad()
def evaluate_split(
    model: CFModel, evaluator: RankingEvaluator, prefix: str
) -> dict[str, float] | str:
    """Evaluate ``model`` on one split and prefix the metric names (``val_``, ``test_``).

    Returns:
        The metrics, or a failure reason when the embeddings or a metric are not finite.
    """
    model.eval()
    users, items = model.final_embeddings()
    if not (bool(torch.isfinite(users).all()) and bool(torch.isfinite(items).all())):
        return "non-finite embeddings"
    metrics = {f"{prefix}{name}": value for name, value in evaluator.evaluate(users, items).items()}
    bad = [name for name, value in metrics.items() if not math.isfinite(value)]
    if bad:
        return f"non-finite metric {bad[0]}"
    return metrics


def train(
    model: CFModel,
    data: InteractionData,
    config: TrialConfig,
    out_dir: Path,
    param_info: dict[str, Any],
    evaluators: Evaluators | None = None,
    on_epoch: EpochCallback | None = None,
    evaluate_start: bool = False,
) -> TrainResult:
    """Train ``model`` with BPR and Adam and keep the best validation NDCG@20 model.

    Validation runs every ``eval_every`` epochs and after the last one. When validation
    NDCG@20 improves, test is evaluated and the model is saved to ``out_dir/best_model.pt``,
    so a trial stopped after any epoch still has its best validation and test metrics.
    With ``epochs = 0``, or with ``evaluate_start``, the model as given is evaluated as epoch 0
    before any update (fine-tuning keeps it when no later epoch beats it).

    Args:
        param_info: ``params_full``, ``params_stored``, ``sparsity`` and ``sparsity_target``,
            copied into every report's ``best`` block.
        on_epoch: called with each evaluated epoch's report (see ``run_trial``).

    Returns:
        A :class:`TrainResult`. A non-finite loss, embedding or metric ends training with
        status ``failed`` and a reason; it never raises for that.

    Raises:
        ConfigError: if ``training.eval_every`` is below 1.
    """
    tcfg = config.training
    if tcfg.eval_every < 1:
        raise ConfigError(f"training.eval_every: {tcfg.eval_every} must be at least 1")
    out_dir.mkdir(parents=True, exist_ok=True)
    checkpoint_path = out_dir / "best_model.pt"
    evaluators = evaluators or Evaluators.for_data(data, config.ks, tcfg.eval_batch_size)
    sampler = BPRSampler(
        data.train,
        data.n_items,
        tcfg.batch_size,
        tcfg.num_negatives,
        np.random.default_rng(tcfg.seed),
    )
    optimizer = make_optimizer(model, tcfg.lr)
    state = _BestTracker(param_info)
    history: list[dict[str, Any]] = []
    started = time.perf_counter()
    epochs_run = 0
    failure: str | None = None
    evaluations_since_best = 0

    first_epoch = 0 if tcfg.epochs == 0 or evaluate_start else 1
    for epoch in range(first_epoch, tcfg.epochs + 1):
        epoch_started = time.perf_counter()
        train_loss = 0.0
        if epoch > 0:
            loss_or_failure = train_epoch(model, sampler, optimizer, epoch)
            if isinstance(loss_or_failure, str):
                failure = loss_or_failure
                break
            train_loss = loss_or_failure
            epochs_run = epoch
        epoch_seconds = time.perf_counter() - epoch_started

        if epoch % tcfg.eval_every != 0 and epoch != tcfg.epochs:
            continue
        valid = evaluate_split(model, evaluators.valid, "val_")
        if isinstance(valid, str):
            failure = f"{valid} at epoch {epoch} (validation)"
            break
        if valid["val_ndcg_20"] > state.best_score:
            test = evaluate_split(model, evaluators.test, "test_")
            if isinstance(test, str):
                failure = f"{test} at epoch {epoch} (test)"
                break
            state.update(epoch, valid, test)
            save_checkpoint(checkpoint_path, model, config, data, epoch)
            evaluations_since_best = 0
        else:
            evaluations_since_best += 1

        report: dict[str, Any] = {
            "epoch": epoch,
            "train_loss": train_loss,
            "epoch_seconds": epoch_seconds,
        }
        report.update(valid)
        report["best"] = state.block()
        history.append(report)
        logger.info(
            "epoch %d: train loss %.5f in %.1f s, val NDCG@20 %.5f (best %.5f at epoch %d)",
            epoch,
            train_loss,
            epoch_seconds,
            valid["val_ndcg_20"],
            state.best_score,
            state.epoch,
        )
        if on_epoch is not None:
            on_epoch(report)
        if tcfg.patience > 0 and evaluations_since_best >= tcfg.patience:
            logger.info(
                "early stop after epoch %d: %d evaluations without a better val NDCG@20",
                epoch,
                evaluations_since_best,
            )
            break

    if failure is not None:
        logger.warning("training failed: %s", failure)
    return TrainResult(
        status=FAILED if failure else COMPLETED,
        failure_reason=failure,
        best_epoch=state.epoch,
        epochs_run=epochs_run,
        best=state.block() if state.epoch >= 0 else {},
        history=history,
        checkpoint_path=str(checkpoint_path) if state.epoch >= 0 else None,
        train_seconds=time.perf_counter() - started,
    )


def train_epoch(
    model: CFModel,
    sampler: BPRSampler,
    optimizer: torch.optim.Optimizer,
    epoch: int,
    stop_after_batch: Callable[[], bool] | None = None,
) -> float | str:
    """Run one epoch of BPR updates.

    ``stop_after_batch`` is checked after every update; when it returns True the epoch ends
    there (a search stage uses it to stop as soon as its tables reach the target).

    Returns:
        The mean per-triple objective (BPR + L2), or a failure reason when a batch's loss is
        not finite (the epoch stops at that batch).
    """
    model.train()
    for table in model.tables():
        table.start_epoch(epoch)
    total = 0.0
    count = 0
    for batch_index, (users, pos, neg) in enumerate(sampler.epoch()):
        optimizer.zero_grad(set_to_none=True)
        loss, l2 = model.bpr_batch(users, pos, neg)
        objective = loss + l2
        value = float(objective.item())
        if not math.isfinite(value):
            return f"non-finite train loss ({value}) at epoch {epoch}, batch {batch_index}"
        objective.backward()
        optimizer.step()
        total += value * users.numel()
        count += users.numel()
        if stop_after_batch is not None and stop_after_batch():
            break
    return total / max(count, 1)


class _BestTracker:
    """The best epoch so far and its validation and test metrics."""

    def __init__(self, param_info: dict[str, Any]) -> None:
        self.param_info = dict(param_info)
        self.epoch = -1
        self.best_score = -math.inf
        self.metrics: dict[str, float] = {}

    def update(self, epoch: int, valid: dict[str, float], test: dict[str, float]) -> None:
        self.epoch = epoch
        self.best_score = valid["val_ndcg_20"]
        self.metrics = {**valid, **test}

    def block(self) -> dict[str, Any]:
        return {"epoch": self.epoch, **self.metrics, **self.param_info}
