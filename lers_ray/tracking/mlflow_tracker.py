"""MLflow records of a sweep as nested runs: sweep, then study, then trial.

Only the sweep driver writes, through one :class:`MlflowClient`, because SQLite stores lock under
concurrent writers. Every run carries the tag ``lers.run_key`` (``sweep``, the study id, or the
trial key ``<study id>/<trial number>``) and ``lers.sweep_id``. A resumed sweep looks runs up by
these tags and reattaches to them instead of creating duplicates.
"""

from __future__ import annotations

import logging
import math
import numbers
import re
import time
from collections.abc import Iterable, Mapping
from typing import Any, SupportsFloat, TypeGuard

import numpy as np
from mlflow.entities import Metric, Param, RunStatus, RunTag
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID, MLFLOW_RUN_NAME

logger = logging.getLogger(__name__)

_UNSAFE_KEY_CHARS = re.compile(r"[^A-Za-z0-9_\-./: ]")

RUN_KEY_TAG = "lers.run_key"
SWEEP_ID_TAG = "lers.sweep_id"
RUN_LEVEL_TAG = "lers.level"
MAX_PARAM_LENGTH = 6000
"""MLflow's limit on a param value's length; longer values are cut and tagged."""
BATCH_SIZE = 100
"""Items per log_batch call, under MLflow's per-request limits."""


class MlflowSweepTracker:
    """Create and update the nested MLflow runs of one sweep.

    Args:
        tracking_uri: any MLflow tracking URI (``sqlite:///...``, ``http://127.0.0.1:5000``).
        experiment_name: the MLflow experiment; created when missing.
        sweep_id: the sweep's stable id, stored in the sweep folder.
    """

    def __init__(self, tracking_uri: str, experiment_name: str, sweep_id: str) -> None:
        self.tracking_uri = tracking_uri
        self.client = MlflowClient(tracking_uri=tracking_uri)
        self.sweep_id = sweep_id
        experiment = self.client.get_experiment_by_name(experiment_name)
        if experiment is None:
            self.experiment_id = self.client.create_experiment(experiment_name)
        else:
            self.experiment_id = experiment.experiment_id
        self.sweep_run_id: str | None = None
        self._study_runs: dict[str, str] = {}

    # ----- lookup -------------------------------------------------------------------------

    def find_run(self, run_key: str) -> str | None:
        """Return the id of this sweep's run with ``run_key``, or ``None``."""
        filter_string = (
            f"tags.`{SWEEP_ID_TAG}` = '{self.sweep_id}' AND tags.`{RUN_KEY_TAG}` = '{run_key}'"
        )
        runs = self.client.search_runs([self.experiment_id], filter_string, max_results=2)
        if len(runs) > 1:
            logger.warning(
                "several MLflow runs have key %s; using %s", run_key, runs[0].info.run_id
            )
        return runs[0].info.run_id if runs else None

    def trial_runs(self) -> list[Any]:
        """Return every trial run of this sweep (MLflow ``Run`` objects)."""
        filter_string = (
            f"tags.`{SWEEP_ID_TAG}` = '{self.sweep_id}' AND tags.`{RUN_LEVEL_TAG}` = 'trial'"
        )
        return list(self.client.search_runs([self.experiment_id], filter_string, max_results=50000))

    # ----- creation -------------------------------------------------------------------------

    def _ensure_run(
        self,
        run_key: str,
        level: str,
        name: str,
        parent_id: str | None,
        params: Mapping[str, Any],
        tags: Mapping[str, Any],
    ) -> str:
        existing = self.find_run(run_key)
        if existing is not None:
            run = self.client.get_run(existing)
            if run.info.status != "RUNNING":
                self.client.update_run(existing, status="RUNNING")
            logger.debug("reattached to MLflow run %s (%s)", existing, run_key)
            return existing
        all_tags = {
            RUN_KEY_TAG: run_key,
            SWEEP_ID_TAG: self.sweep_id,
            RUN_LEVEL_TAG: level,
            MLFLOW_RUN_NAME: name,
        }
        if parent_id is not None:
            all_tags[MLFLOW_PARENT_RUN_ID] = parent_id
        all_tags.update({mlflow_key(key): str(value) for key, value in tags.items()})
        run = self.client.create_run(self.experiment_id, tags=all_tags, run_name=name)
        self.log_params(run.info.run_id, params)
        return run.info.run_id

    def start_sweep(self, name: str, params: Mapping[str, Any], tags: Mapping[str, Any]) -> str:
        """Create (or reattach to) the sweep's parent run."""
        self.sweep_run_id = self._ensure_run("sweep", "sweep", name, None, params, tags)
        return self.sweep_run_id

    def start_study(self, study_id: str, params: Mapping[str, Any], tags: Mapping[str, Any]) -> str:
        """Create (or reattach to) a study run nested under the sweep run."""
        if study_id not in self._study_runs:
            self._study_runs[study_id] = self._ensure_run(
                study_id, "study", study_id, self.sweep_run_id, params, tags
            )
        return self._study_runs[study_id]

    def start_trial(
        self,
        study_id: str,
        trial_key: str,
        params: Mapping[str, Any],
        tags: Mapping[str, Any],
    ) -> str:
        """Create (or reattach to) a trial run nested under its study run."""
        parent = self._study_runs.get(study_id)
        name = trial_key.replace("/", "#")
        return self._ensure_run(trial_key, "trial", name, parent, params, tags)

    # ----- logging --------------------------------------------------------------------------

    def log_params(self, run_id: str, params: Mapping[str, Any]) -> None:
        """Log params, cutting values longer than MLflow accepts (and tagging the cut)."""
        items: list[Param] = []
        cut: list[str] = []
        for key, value in params.items():
            text = str(value)
            if len(text) > MAX_PARAM_LENGTH:
                cut.append(key)
                text = text[:MAX_PARAM_LENGTH]
            items.append(Param(mlflow_key(key), text))
        for start in range(0, len(items), BATCH_SIZE):
            self.client.log_batch(run_id, params=items[start : start + BATCH_SIZE])
        if cut:
            self.client.set_tag(run_id, "lers.params_truncated", ",".join(cut))

    def log_metrics(self, run_id: str, metrics: Mapping[str, float], step: int = 0) -> None:
        """Log numeric metrics at ``step``; non-numeric values are skipped, NaN is kept."""
        now = int(time.time() * 1000)
        items = [
            Metric(mlflow_key(key), float(value), now, step)
            for key, value in metrics.items()
            if is_number(value)
        ]
        for start in range(0, len(items), BATCH_SIZE):
            self.client.log_batch(run_id, metrics=items[start : start + BATCH_SIZE])

    def set_tags(self, run_id: str, tags: Mapping[str, Any]) -> None:
        """Set string tags on a run."""
        items = [RunTag(mlflow_key(key), str(value)) for key, value in tags.items()]
        for start in range(0, len(items), BATCH_SIZE):
            self.client.log_batch(run_id, tags=items[start : start + BATCH_SIZE])

    def end_run(self, run_id: str, status: str) -> None:
        """Mark a run ``FINISHED``, ``FAILED`` or ``KILLED``."""
        RunStatus.from_string(status)
        self.client.set_terminated(run_id, status=status)

    def end_study(self, study_id: str, status: str = "FINISHED") -> None:
        """End a study run, if this tracker opened it."""
        run_id = self._study_runs.get(study_id)
        if run_id is not None:
            self.end_run(run_id, status)

    def kill_running_trials(self, keep: Iterable[str] = ()) -> list[str]:
        """Mark this sweep's trial runs still ``RUNNING`` as ``KILLED`` (after a crash).

        Args:
            keep: trial keys to leave alone.

        Returns:
            The trial keys that were marked.
        """
        keep_set = set(keep)
        marked = []
        for run in self.trial_runs():
            key = run.data.tags.get(RUN_KEY_TAG, "")
            if run.info.status == "RUNNING" and key not in keep_set:
                self.client.set_tag(run.info.run_id, "lers.interrupted", "true")
                self.client.set_tag(
                    run.info.run_id,
                    "failure_reason",
                    "interrupted: the sweep driver stopped; the trial's parameters run again",
                )
                self.client.set_terminated(run.info.run_id, status="KILLED")
                marked.append(key)
        return marked


def mlflow_key(key: str) -> str:
    """Return ``key`` with characters MLflow refuses in names replaced by ``_``.

    MLflow allows letters, digits, ``_ - . / :`` and spaces; a method name such as
    ``magprune+ft`` inside a flattened key becomes ``magprune_ft``.
    """
    return _UNSAFE_KEY_CHARS.sub("_", key)


def is_number(value: Any) -> TypeGuard[SupportsFloat]:
    """Return True for real numbers, numpy scalars included, and False for booleans."""
    return isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))


def finite_metrics(metrics: Mapping[str, Any]) -> dict[str, float]:
    """Keep the finite numeric entries of ``metrics`` (for summaries that reject NaN)."""
    return {
        key: float(value)
        for key, value in metrics.items()
        if is_number(value) and math.isfinite(value)
    }
