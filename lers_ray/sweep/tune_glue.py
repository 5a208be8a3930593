"""Ray Tune pieces of a sweep: the searcher, the per-study scheduler, the callback and the trainable.

Tune runs one experiment whose trials belong to many studies. The searcher and the callback are
thin adapters around :class:`~lers_ray.sweep.coordinator.SweepCoordinator`, which runs in the
driver. The scheduler keeps one ASHA instance per study, so a trial is only ever compared with
trials of its own study.
"""

from __future__ import annotations

import logging
import math
import time
import traceback
from pathlib import Path
from typing import Any

from ray import tune
from ray.tune import Callback
from ray.tune.experiment import Trial
from ray.tune.schedulers import AsyncHyperBandScheduler, FIFOScheduler
from ray.tune.search import Searcher

from lers_ray.sweep.coordinator import FINISHED, OBJECTIVE, SweepCoordinator
from lers_ray.tracking.mlflow_tracker import is_number

logger = logging.getLogger(__name__)

SCHEDULER_METRIC = "best_val_ndcg_20"
"""Best validation NDCG@20 so far; monotone, so ASHA compares trials fairly at each rung."""
TIME_ATTR = "epoch"


class StudySearcher(Searcher):
    """Tune searcher that delegates to the coordinator and so to each study's Optuna sampler."""

    def __init__(self, coordinator: SweepCoordinator) -> None:
        # No metric here: Tune would then require it in every result, final reports included.
        super().__init__(metric=None, mode=None)
        self.coordinator = coordinator

    # Ray annotates suggest as returning a dict or None, but its own protocol also accepts the
    # string Searcher.FINISHED, which ends the experiment.
    def suggest(self, trial_id: str) -> dict[str, Any] | str | None:  # type: ignore[override]
        suggestion = self.coordinator.next_trial(trial_id)
        if suggestion == FINISHED:
            return Searcher.FINISHED
        return suggestion

    def on_trial_complete(
        self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False
    ) -> None:
        # Outcomes are recorded by SweepCallback, which also receives the error text.
        return None

    def save(self, checkpoint_path: str) -> None:
        # Study state lives in the sweep's Optuna storage, so there is nothing to save here.
        return None

    def restore(self, checkpoint_path: str) -> None:
        return None


class PerStudyScheduler(FIFOScheduler):
    """Early stopping with one ASHA scheduler per study.

    Args:
        max_t: epoch budget of a trial.
        grace_period: epochs every trial runs before it can be stopped.
        reduction_factor: ASHA's halving rate.
    """

    def __init__(self, max_t: int, grace_period: int, reduction_factor: int) -> None:
        super().__init__()
        self.max_t = max_t
        self.grace_period = min(grace_period, max_t)
        self.reduction_factor = reduction_factor
        self._per_study: dict[str, AsyncHyperBandScheduler] = {}

    def _scheduler(self, trial: Trial) -> AsyncHyperBandScheduler:
        study_id = trial.config["study_id"]
        if study_id not in self._per_study:
            self._per_study[study_id] = AsyncHyperBandScheduler(
                time_attr=TIME_ATTR,
                metric=SCHEDULER_METRIC,
                mode="max",
                max_t=self.max_t,
                grace_period=self.grace_period,
                reduction_factor=self.reduction_factor,
                # A trial that reaches the budget ends by itself and sends its final report.
                stop_last_trials=False,
            )
        return self._per_study[study_id]

    def set_search_properties(self, metric: str | None, mode: str | None, **spec: Any) -> bool:
        return True

    def on_trial_add(self, tune_controller: Any, trial: Trial) -> None:
        self._scheduler(trial).on_trial_add(tune_controller, trial)

    def on_trial_result(self, tune_controller: Any, trial: Trial, result: dict[str, Any]) -> str:
        return self._scheduler(trial).on_trial_result(tune_controller, trial, result)

    def on_trial_complete(self, tune_controller: Any, trial: Trial, result: dict[str, Any]) -> None:
        self._scheduler(trial).on_trial_complete(tune_controller, trial, result)

    def on_trial_error(self, tune_controller: Any, trial: Trial) -> None:
        self._scheduler(trial).on_trial_error(tune_controller, trial)

    def on_trial_remove(self, tune_controller: Any, trial: Trial) -> None:
        self._scheduler(trial).on_trial_remove(tune_controller, trial)

    def debug_string(self) -> str:
        return f"PerStudyScheduler: ASHA in {len(self._per_study)} studies"


class SweepCallback(Callback):
    """Forward Tune's trial events to the coordinator (MLflow, Optuna, results.parquet) and
    let the edge dispatcher make progress on every step of Tune's loop."""

    def __init__(self, coordinator: SweepCoordinator) -> None:
        self.coordinator = coordinator

    def on_step_begin(self, iteration: int, trials: list[Trial], **info: Any) -> None:
        # Edge measurements of finished studies run beside the trials; collect and submit.
        self.coordinator.edge.poll()

    def on_trial_start(
        self, iteration: int, trials: list[Trial], trial: Trial, **info: Any
    ) -> None:
        self.coordinator.trial_started(trial.trial_id)

    def on_trial_result(
        self, iteration: int, trials: list[Trial], trial: Trial, result: dict[str, Any], **info: Any
    ) -> None:
        self.coordinator.trial_result(trial.trial_id, result)

    def on_trial_complete(
        self, iteration: int, trials: list[Trial], trial: Trial, **info: Any
    ) -> None:
        self.coordinator.trial_ended(trial.trial_id, trial.last_result, error=None)

    def on_trial_error(
        self, iteration: int, trials: list[Trial], trial: Trial, **info: Any
    ) -> None:
        self.coordinator.trial_ended(trial.trial_id, trial.last_result, error=_error_text(trial))


def _error_text(trial: Trial) -> str:
    """Return the last line of a failed trial's traceback (the exception and its message)."""
    error_file = trial.error_file
    if error_file and Path(error_file).exists():
        lines = [line for line in Path(error_file).read_text().splitlines() if line.strip()]
        if lines:
            return f"error: {lines[-1].strip()}"
    return "error: the trial raised an exception (no error file was written)"


def train_trial(tune_config: dict[str, Any]) -> None:
    """Run one trial as the Tune trainable and report every evaluated epoch.

    ``tune_config`` is what :meth:`SweepCoordinator.next_trial` returned. Results go back to the
    driver through ``tune.report``; the trial writes only into its own trial folder.
    """
    # Imported here so the driver's import of this module stays light.
    from lers_ray.config import TrialConfig
    from lers_ray.data import load_dataset
    from lers_ray.memory import peak_rss_mb
    from lers_ray.training.runner import run_trial

    config = TrialConfig.from_dict(tune_config["trial_config"], source=tune_config["trial_key"])
    trial_dir = Path(tune_config["trial_dir"])
    trial_dir.mkdir(parents=True, exist_ok=True)
    data = load_dataset(config.dataset, data_dir=tune_config["data_dir"])
    static = {"split_fingerprint": data.fingerprint, "study_id": tune_config["study_id"]}
    started = time.perf_counter()

    def report(epoch_report: dict[str, Any]) -> None:
        result = dict(epoch_report)
        result.update(static)
        # Running figures, so a trial stopped by the scheduler still has them in its last
        # result: wall time so far (evaluation included, as in the final report) and peak RSS.
        result["train_seconds"] = time.perf_counter() - started
        result["peak_rss_mb"] = peak_rss_mb()
        best_value = (result.get("best") or {}).get(OBJECTIVE)
        if is_number(best_value) and math.isfinite(best_value):
            result[SCHEDULER_METRIC] = float(best_value)
        tune.report(result)

    try:
        outcome = run_trial(config, trial_dir, data=data, on_epoch=report)
    except Exception:
        logger.error("[%s] trial crashed:\n%s", tune_config["trial_key"], traceback.format_exc())
        raise
    final = outcome.to_dict()

    metrics = final.get("metrics", {})
    best = {
        key: value
        for key, value in metrics.items()
        if key not in ("train_seconds", "peak_rss_mb", "best_epoch", "epochs_run")
    }
    best["epoch"] = final.get("best_epoch")
    tune.report(
        {
            **static,
            "final": True,
            "status": final["status"],
            "failure_reason": final.get("failure_reason"),
            "best": best,
            "train_seconds": metrics.get("train_seconds"),
            "peak_rss_mb": metrics.get("peak_rss_mb"),
            "epochs_run": final.get("epochs_run"),
        }
    )
