"""The sweep driver's state: one Optuna TPE study per study spec, and what each trial did.

The coordinator lives in the driver process. Ray Tune's searcher requests the next trial from
it, and Tune's callbacks tell it when trials start, report and end. It is the only writer of the
Optuna storage, the MLflow store and ``results.parquet``.

Study state is persisted in Optuna's SQLite storage (``optuna.db`` in the sweep folder), and a
killed sweep resumes from it. Finished trials (complete or failed) are kept. A trial that was
running when the driver died is marked failed with ``interrupted`` and its parameters are
enqueued again, so the study still gets its planned number of finished trials.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from lers_ray.config import ConfigError, TrialConfig
from lers_ray.edge.export import ARTIFACT_FILE
from lers_ray.sweep.edge_dispatch import EdgeDispatcher, EdgeJob
from lers_ray.sweep.results import ResultsTable, search_shortfall
from lers_ray.sweep.space import set_by_path
from lers_ray.sweep.spec import StudySpec, SweepSpec, base_trial_config, dataset_label
from lers_ray.tracking.mlflow_tracker import MlflowSweepTracker, finite_metrics, is_number
from lers_ray.tracking.provenance import provenance_tags

logger = logging.getLogger(__name__)

OBJECTIVE = "val_ndcg_20"
"""Metric every study maximises: validation NDCG@20 of the trial's selected epoch."""

FINISHED = "FINISHED"
"""Returned by :meth:`SweepCoordinator.next_trial` when no study will ask for more trials."""


class BudgetedGridSampler(optuna.samplers.GridSampler):
    """Optuna's grid sampler without the ``study.stop()`` call once the grid is exhausted.

    ``GridSampler.after_trial`` stops the study once the last grid point is reported, and
    ``Study.stop`` raises outside ``Study.optimize``. Here ``tell`` runs outside ``optimize``
    and the study's trial budget equals the grid size, so nothing needs stopping.
    """

    def after_trial(
        self,
        study: optuna.Study,
        trial: optuna.trial.FrozenTrial,
        state: TrialState,
        values: Sequence[float] | None,
    ) -> None:
        return None


@dataclass
class LiveTrial:
    """A trial handed to Ray Tune and not yet finished."""

    study_id: str
    optuna_trial: optuna.Trial
    trial_key: str
    trial_dir: Path
    config: dict[str, Any]
    run_id: str | None = None


@dataclass
class StudyState:
    """One study's spec, its Optuna study and its progress in this session."""

    spec: StudySpec
    study: optuna.Study
    in_flight: int = 0
    blocked_reason: str | None = None
    ended: bool = False

    def finished_trials(self) -> list[optuna.trial.FrozenTrial]:
        """Trials that count against the budget: complete, or failed for a reason of their own."""
        done = []
        for trial in self.study.get_trials(deepcopy=False):
            if (
                trial.state == TrialState.COMPLETE
                or trial.state == TrialState.FAIL
                and not trial.user_attrs.get("interrupted")
            ):
                done.append(trial)
        return done

    def remaining(self) -> int:
        """Trials still to hand out."""
        return self.spec.n_trials - len(self.finished_trials()) - self.in_flight

    def is_done(self) -> bool:
        """True when no trial is left to run or running, or the study is blocked."""
        return self.blocked_reason is not None or (self.remaining() <= 0 and self.in_flight == 0)

    def best_trial(self) -> optuna.trial.FrozenTrial | None:
        """Return the complete trial with the highest objective, or ``None``.

        Trials whose search stage reached the target are preferred, as in
        :func:`lers_ray.sweep.results.best_row`.
        """
        complete = [
            t for t in self.study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE
        ]
        reached = [t for t in complete if trial_shortfall(t, self.spec.target) <= 0]
        pool = reached or complete
        return max(pool, key=lambda t: float(t.value or 0.0)) if pool else None


class SweepCoordinator:
    """Hand out trials across studies, record their outcomes, and resume after a crash.

    Args:
        spec: the sweep spec.
        studies: the studies expanded from the spec.
        sweep_dir: the sweep folder (absolute).
        tracker: the MLflow tracker of this sweep.
        data_dir: the resolved data folder passed to every trial.
    """

    def __init__(
        self,
        spec: SweepSpec,
        studies: list[StudySpec],
        sweep_dir: Path,
        tracker: MlflowSweepTracker,
        data_dir: Path,
    ) -> None:
        self.spec = spec
        self.sweep_dir = sweep_dir
        self.tracker = tracker
        self.data_dir = data_dir
        self.results = ResultsTable(sweep_dir)
        self.edge = EdgeDispatcher(spec.edge, sweep_dir, data_dir, tracker, self.results)
        self.storage = optuna.storages.RDBStorage(f"sqlite:///{sweep_dir / 'optuna.db'}")
        self.studies: dict[str, StudyState] = {}
        self.live: dict[str, LiveTrial] = {}
        self._turn = 0
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        for study_spec in studies:
            self.studies[study_spec.study_id] = StudyState(study_spec, self._open_study(study_spec))

    # ----- set-up and resume ------------------------------------------------------------------

    def _open_study(self, study_spec: StudySpec) -> optuna.Study:
        seed = stable_seed(self.spec.seed, study_spec.study_id)
        grid = study_spec.space.grid(study_context(self.spec, study_spec))
        grid_size = math.prod(len(values) for values in grid.values()) if grid is not None else 0
        sampler: optuna.samplers.BaseSampler
        if grid is not None and grid_size <= study_spec.n_trials:
            # Every distinct config fits in the budget: try each once instead of letting TPE
            # repeat configs whose results are identical (same seed, same data).
            if grid_size < study_spec.n_trials:
                logger.info(
                    "[%s] the search space has %d distinct config(s); running %d trial(s) "
                    "instead of %d",
                    study_spec.study_id,
                    grid_size,
                    grid_size,
                    study_spec.n_trials,
                )
                study_spec.n_trials = grid_size
            sampler = (
                BudgetedGridSampler(grid, seed=seed)
                if grid
                else optuna.samplers.RandomSampler(seed=seed)
            )
        else:
            sampler = optuna.samplers.TPESampler(
                seed=seed,
                # Optuna's default is 10 random start-up trials; small budgets get a third of
                # theirs, but at least 2 so TPE never models a single observation.
                n_startup_trials=max(2, min(10, study_spec.n_trials // 3)),
                constant_liar=True,
            )
        return optuna.create_study(
            study_name=study_spec.study_id,
            storage=self.storage,
            sampler=sampler,
            direction="maximize",
            load_if_exists=True,
        )

    def recover_interrupted(self) -> list[str]:
        """Mark trials left running by a killed driver as failed, and enqueue them again.

        Returns:
            The trial keys that were interrupted.
        """
        interrupted = []
        for state in self.studies.values():
            for frozen in state.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
                key = trial_key(state.spec.study_id, frozen.number)
                handle = optuna.trial.Trial(state.study, frozen._trial_id)
                handle.set_user_attr("interrupted", True)
                handle.set_user_attr("failure_reason", "interrupted: the sweep driver stopped")
                state.study.tell(frozen.number, state=TrialState.FAIL)
                state.study.enqueue_trial(frozen.params, user_attrs={"retry_of": frozen.number})
                interrupted.append(key)
        if interrupted:
            logger.warning("re-queued %d interrupted trial(s): %s", len(interrupted), interrupted)
        killed = self.tracker.kill_running_trials()
        if killed:
            logger.info("marked %d MLflow trial run(s) of the killed sweep as KILLED", len(killed))
        return interrupted

    def start_tracking(self) -> None:
        """Open (or reattach to) the sweep and study runs in MLflow."""
        self.tracker.start_sweep(self.spec.name, flatten(self.spec.to_dict()), provenance_tags())
        for state in self.studies.values():
            self.tracker.start_study(
                state.spec.study_id,
                {
                    "n_trials": state.spec.n_trials,
                    "search_space": ", ".join(state.spec.space.sources),
                },
                study_tags(state.spec),
            )

    # ----- handing out trials ------------------------------------------------------------------

    def trials_to_run(self) -> int:
        """Return how many trials are still to be handed out over all studies."""
        return sum(max(0, state.remaining()) for state in self.studies.values())

    def next_trial(self, tune_trial_id: str) -> dict[str, Any] | str | None:
        """Return the Tune config of the next trial, ``None`` to wait, or :data:`FINISHED`."""
        self._update_blocked()
        self._end_finished_studies()
        if all(state.is_done() for state in self.studies.values()):
            return FINISHED
        ready = [s for s in self.studies.values() if s.remaining() > 0 and self._dependency_met(s)]
        if not ready:
            pending = [s.spec.study_id for s in self.studies.values() if s.remaining() > 0]
            if pending and not self.live:
                return FINISHED
            return None
        state = ready[self._turn % len(ready)]
        self._turn += 1
        return self._ask(state, tune_trial_id)

    def _ask(self, state: StudyState, tune_trial_id: str) -> dict[str, Any]:
        trial = state.study.ask()
        params = state.spec.space.sample(trial, study_context(self.spec, state.spec))
        base = None
        if state.spec.depends_on is not None:
            base = self._base_of(state.spec.depends_on)
        config = trial_config_for(self.spec, state.spec, params, base)
        TrialConfig.from_dict(config, source=f"study {state.spec.study_id}")
        key = trial_key(state.spec.study_id, trial.number)
        trial_dir = self.sweep_dir / "studies" / state.spec.study_id / f"trial_{trial.number:04d}"
        trial.set_user_attr("trial_dir", str(trial_dir))
        trial.set_user_attr("config", json.dumps(config))
        state.in_flight += 1
        self.live[tune_trial_id] = LiveTrial(state.spec.study_id, trial, key, trial_dir, config)
        shown = ", ".join(
            f"{path}={value:.4g}" if isinstance(value, float) else f"{path}={value}"
            for path, value in params.items()
        )
        logger.info("[%s] trial %d starts: %s", state.spec.study_id, trial.number, shown or "-")
        return {
            "study_id": state.spec.study_id,
            "trial_key": key,
            "trial_dir": str(trial_dir),
            "data_dir": str(self.data_dir),
            "trial_config": config,
        }

    def _dependency_met(self, state: StudyState) -> bool:
        if state.spec.depends_on is None:
            return True
        parent = self.studies[state.spec.depends_on]
        return parent.is_done() and parent.best_trial() is not None

    def _update_blocked(self) -> None:
        for state in self.studies.values():
            if state.blocked_reason or state.spec.depends_on is None or state.is_done():
                continue
            parent = self.studies[state.spec.depends_on]
            if parent.is_done() and parent.best_trial() is None:
                state.blocked_reason = (
                    f"study {parent.spec.study_id} has no completed trial to start from"
                )
                logger.error("[%s] blocked: %s", state.spec.study_id, state.blocked_reason)
                self.tracker.set_tags(
                    self.tracker.start_study(state.spec.study_id, {}, {}),
                    {"lers.blocked": state.blocked_reason},
                )

    def _base_of(self, study_id: str) -> tuple[dict[str, Any], str]:
        best = self.studies[study_id].best_trial()
        assert best is not None, "dependency checked before asking"
        config = json.loads(best.user_attrs["config"])
        checkpoint = str(Path(best.user_attrs["trial_dir"]) / "best_model.pt")
        return config, checkpoint

    # ----- trial events -----------------------------------------------------------------------

    def trial_started(self, tune_trial_id: str) -> None:
        """Open the MLflow run of a trial that Tune started."""
        live = self.live.get(tune_trial_id)
        if live is None or live.run_id is not None:
            return
        state = self.studies[live.study_id]
        tags = study_tags(state.spec)
        tags.update(provenance_tags())
        tags.update(
            {
                "trial_key": live.trial_key,
                "trial_number": live.optuna_trial.number,
                "trial_dir": str(live.trial_dir),
            }
        )
        retry_of = live.optuna_trial.user_attrs.get("retry_of")
        if retry_of is not None:
            tags["retry_of"] = trial_key(live.study_id, int(retry_of))
        live.run_id = self.tracker.start_trial(
            live.study_id, live.trial_key, flatten(live.config), tags
        )

    def trial_result(self, tune_trial_id: str, result: dict[str, Any]) -> None:
        """Log one epoch report of a trial to MLflow."""
        live = self.live.get(tune_trial_id)
        if live is None:
            return
        if live.run_id is None:
            self.trial_started(tune_trial_id)
        if "epoch" not in result or result.get("final"):
            return
        # Curves get their own names so that val_* always means the selected epoch's value.
        epoch_metrics = {
            (f"epoch_{key}" if key.startswith("val_") else key): value
            for key, value in result.items()
            if key in ("train_loss", "epoch_seconds") or key.startswith("val_")
        }
        assert live.run_id is not None
        self.tracker.log_metrics(live.run_id, epoch_metrics, step=int(result["epoch"]))

    def trial_ended(
        self, tune_trial_id: str, result: dict[str, Any] | None, error: str | None
    ) -> None:
        """Record a finished trial in Optuna, MLflow and ``results.parquet``.

        Args:
            tune_trial_id: Tune's id of the trial.
            result: the trial's last reported result (``None`` if it reported nothing).
            error: the error text if the trial raised, else ``None``.
        """
        if tune_trial_id not in self.live:
            return
        # A trial that failed before its first report still gets an MLflow run.
        self.trial_started(tune_trial_id)
        live = self.live.pop(tune_trial_id)
        state = self.studies[live.study_id]
        state.in_flight -= 1
        outcome = summarise_outcome(result or {}, error)
        value = outcome["metrics"].get(OBJECTIVE)
        status = outcome["status"]
        if status == "completed" and not (isinstance(value, float) and math.isfinite(value)):
            status = "failed"
            outcome["failure_reason"] = f"no finite {OBJECTIVE} was reported"
        trial = live.optuna_trial
        for key, metric in finite_metrics(outcome["metrics"]).items():
            trial.set_user_attr(f"metric.{key}", metric)
        if status == "completed":
            # A search stage that ended below the target is a violated constraint, so TPE
            # learns which thresholds and decays let PEP and CERP reach it.
            shortfall = search_shortfall(
                outcome["metrics"].get("search_sparsity"), state.spec.target
            )
            trial.set_constraint(SEARCH_CONSTRAINT, shortfall)
            state.study.tell(trial, value)
        else:
            trial.set_user_attr("failure_reason", outcome["failure_reason"])
            state.study.tell(trial, state=TrialState.FAIL)
        self._record(live, state, status, outcome)
        self._log_progress(state, live, status, outcome)

    def _record(
        self, live: LiveTrial, state: StudyState, status: str, outcome: dict[str, Any]
    ) -> None:
        metrics = outcome["metrics"]
        if live.run_id is not None:
            best_epoch = metrics.get("best_epoch")
            step = int(float(best_epoch)) if is_number(best_epoch) else 0
            self.tracker.log_metrics(live.run_id, metrics, step=step)
            tags = {"status": status, "stopped_early": outcome["stopped_early"]}
            if outcome.get("fingerprint"):
                tags["split_fingerprint"] = outcome["fingerprint"]
            if outcome.get("failure_reason"):
                tags["failure_reason"] = outcome["failure_reason"][:5000]
            for key, value in metrics.items():
                if key.startswith("structure."):
                    tags[key] = json.dumps(value) if isinstance(value, list) else value
            for name, path in self._artifact_files(live).items():
                tags[f"artifact.{name}.path"] = str(path)
                tags[f"artifact.{name}.sha256"] = file_sha256(path)
            self.tracker.set_tags(live.run_id, tags)
            self.tracker.end_run(live.run_id, "FINISHED" if status == "completed" else "FAILED")
        row: dict[str, Any] = {
            "sweep": self.spec.name,
            "study_id": state.spec.study_id,
            "dataset": dataset_label(state.spec.dataset),
            "backbone": state.spec.backbone,
            "method": state.spec.method,
            "sparsity_target": state.spec.target,
            "trial_number": live.optuna_trial.number,
            "trial_key": live.trial_key,
            "status": status,
            "failure_reason": outcome.get("failure_reason"),
            "stopped_early": outcome["stopped_early"],
            "split_fingerprint": outcome.get("fingerprint"),
            "node_ip": outcome.get("node_ip"),
            "config": json.dumps(live.config, sort_keys=True),
            "trial_dir": str(live.trial_dir),
            "mlflow_run_id": live.run_id,
            "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "structure": json.dumps(
                {key: value for key, value in metrics.items() if key.startswith("structure.")},
                sort_keys=True,
            ),
        }
        for key in RESULT_METRICS:
            value = metrics.get(key)
            if not is_number(value):
                row[key] = None
            elif key in INTEGER_METRICS:
                row[key] = int(float(value))
            else:
                row[key] = float(value)
        for key, value in metrics.items():
            if key not in row and is_number(value):
                row[key] = int(float(value)) if key in INTEGER_METRICS else float(value)
        self.results.upsert(row)
        outcome_file = live.trial_dir / "outcome.json"
        if not outcome_file.exists():
            # A trial stopped by the scheduler never wrote its own outcome file.
            live.trial_dir.mkdir(parents=True, exist_ok=True)
            summary = {key: row[key] for key in ("status", "failure_reason", "stopped_early")}
            summary["metrics"] = finite_metrics(metrics)
            outcome_file.write_text(json.dumps(summary, indent=2))

    def _artifact_files(self, live: LiveTrial) -> dict[str, Path]:
        """Return the trial's model file, its edge artifact, its stage files (two-stage
        methods) and, for a post-hoc method, the model it started from."""
        files = {}
        model = live.trial_dir / "best_model.pt"
        if model.is_file():
            files["model"] = model
        edge = live.trial_dir / ARTIFACT_FILE
        if edge.is_file():
            files["edge"] = edge
        for stage_file in sorted((live.trial_dir / "stages").glob("*.pt")):
            files[f"stage.{stage_file.stem}"] = stage_file
        base = live.config.get("base_checkpoint")
        if base and Path(base).is_file():
            files["base_model"] = Path(base)
        return files

    def _log_progress(
        self, state: StudyState, live: LiveTrial, status: str, outcome: dict[str, Any]
    ) -> None:
        finished = len(state.finished_trials())
        best = state.best_trial()
        best_text = f"{best.value:.4f}" if best is not None else "n/a"
        if status == "completed":
            what = f"val NDCG@20 {outcome['metrics'].get(OBJECTIVE, float('nan')):.4f}"
        else:
            what = f"FAILED ({outcome.get('failure_reason')})"
        logger.info(
            "[%s] trial %d finished: %s | %d/%d trials finished, best val NDCG@20 %s",
            state.spec.study_id,
            live.optuna_trial.number,
            what,
            finished,
            state.spec.n_trials,
            best_text,
        )

    def _end_finished_studies(self) -> None:
        for state in self.studies.values():
            if state.ended or not state.is_done():
                continue
            state.ended = True
            run_id = self.tracker.start_study(state.spec.study_id, {}, {})
            best = state.best_trial()
            if best is not None:
                best_metrics = {
                    key.removeprefix("metric."): value
                    for key, value in best.user_attrs.items()
                    if key.startswith("metric.")
                }
                self.tracker.log_metrics(run_id, best_metrics)
                self.tracker.set_tags(
                    run_id, {"best_trial_key": trial_key(state.spec.study_id, best.number)}
                )
            status = "FAILED" if state.blocked_reason or best is None else "FINISHED"
            self.tracker.end_study(state.spec.study_id, status)
            self._queue_edge(state)

    def _queue_edge(self, state: StudyState) -> None:
        """Hand the study's best trial (or every completed one) to the edge dispatcher."""
        if self.spec.edge.trials == "best":
            best = state.best_trial()
            chosen = [best] if best is not None else []
        else:
            chosen = state.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        for frozen in chosen:
            key = trial_key(state.spec.study_id, frozen.number)
            trial_dir = Path(frozen.user_attrs["trial_dir"])
            run_id = self.results.value(key, "mlflow_run_id")
            self.edge.add(
                EdgeJob(
                    trial_key=key,
                    study_id=state.spec.study_id,
                    dataset=state.spec.dataset,
                    artifact=trial_dir / ARTIFACT_FILE,
                    run_id=str(run_id) if run_id is not None else None,
                )
            )

    def close_done_studies(self) -> None:
        """End the MLflow runs of studies with nothing left to run and queue their edge work.

        A resumed sweep calls it first, so studies finished in an earlier session still get
        their edge measurement.
        """
        self._update_blocked()
        self._end_finished_studies()

    def run_edge(self) -> None:
        """Queue the edge work of every done study and wait until it is measured."""
        self.close_done_studies()
        self.edge.drain()

    def finish(self) -> None:
        """Close study runs of done studies and the sweep run (called after Tune returns)."""
        self.close_done_studies()
        all_done = all(state.is_done() for state in self.studies.values())
        if self.tracker.sweep_run_id is not None:
            self.tracker.end_run(self.tracker.sweep_run_id, "FINISHED" if all_done else "KILLED")

    def summary(self) -> list[dict[str, Any]]:
        """Return one row per study: its best trial's metrics, edge figures and progress."""
        rows = []
        for state in self.studies.values():
            best = state.best_trial()
            finished = state.finished_trials()
            failed = sum(1 for t in finished if t.state == TrialState.FAIL)
            row: dict[str, Any] = {
                "study": state.spec.study_id,
                "finished": len(finished),
                "planned": state.spec.n_trials,
                "failed": failed,
                "best_trial": best.number if best is not None else None,
                "blocked": state.blocked_reason,
            }
            if best is not None:
                for key, value in best.user_attrs.items():
                    if key.startswith("metric."):
                        row[key.removeprefix("metric.")] = value
                key = trial_key(state.spec.study_id, best.number)
                for column in EDGE_SUMMARY:
                    row[column] = self.results.value(key, column)
            rows.append(row)
        return rows


EDGE_SUMMARY = (
    "edge.status",
    "edge.simulated",
    "edge.per_query.p50_ms",
    "edge.precomputed.p50_ms",
)
"""Edge figures of the best trial that :meth:`SweepCoordinator.summary` adds to each row."""

RESULT_METRICS = (
    "val_recall_20",
    "val_ndcg_20",
    "test_recall_20",
    "test_ndcg_20",
    "params_full",
    "params_stored",
    "sparsity",
    "sparsity_target",
    "sparsity_gap",
    "meets_target",
    "artifact_bytes",
    "best_epoch",
    "epochs_run",
    "train_seconds",
    "peak_rss_mb",
)
"""Columns every ``results.parquet`` row has (``None`` where a trial did not reach them)."""

INTEGER_METRICS = frozenset(
    {"params_full", "params_stored", "best_epoch", "epochs_run", "artifact_bytes", "meets_target"}
)


def summarise_outcome(result: dict[str, Any], error: str | None) -> dict[str, Any]:
    """Turn a trial's last Tune result into status, failure reason and final metrics.

    A trial that ended by itself sends a final report (``final: True``) carrying its
    ``status``. A trial stopped by the early-stopping scheduler ends on an epoch report; its
    ``best`` section contains the selected epoch's validation and test metrics, so it counts as
    completed with ``stopped_early``.
    """
    best = result.get("best") or {}
    metrics = {key: value for key, value in best.items() if key != "epoch"}
    if "epoch" in best:
        metrics["best_epoch"] = best["epoch"]
    for key in ("train_seconds", "peak_rss_mb", "epochs_run"):
        if result.get(key) is not None:
            metrics[key] = result[key]
    if "epochs_run" not in metrics and "epoch" in result:
        # Stopped by the scheduler after this epoch's report: that is how far it trained.
        metrics["epochs_run"] = result["epoch"]
    status: str
    reason: str | None
    if error is not None:
        status, reason = "failed", error
    elif result.get("final"):
        status, reason = str(result.get("status", "failed")), result.get("failure_reason")
    elif result:
        status, reason = "completed", None
    else:
        status, reason = "failed", "the trial reported no result"
    return {
        "status": status,
        "failure_reason": reason,
        "metrics": metrics,
        "stopped_early": bool(result) and not result.get("final") and error is None,
        "fingerprint": result.get("split_fingerprint"),
        "node_ip": result.get("node_ip"),
    }


def file_sha256(path: Path) -> str:
    """Return the SHA-256 hex digest of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


DHE_HASH_CAP = 1024
"""The reference's hash count; the searched count never exceeds it."""
DHE_BOUND_DEPTH = 3
DHE_BOUND_WIDTH = 16


def study_context(spec: SweepSpec, study: StudySpec) -> dict[str, float]:
    """Return the values that named search-space bounds resolve to in this study.

    See :data:`lers_ray.sweep.space.CONTEXT_BOUNDS`. Bounds that depend on table sizes use
    ``study.table_rows`` once the dataset is loaded, and their cap before that.
    """
    from lers_ray.embeddings.base import StructureInfeasible
    from lers_ray.embeddings.dhe import MIN_HASH_COUNT, max_hash_count

    hashes = DHE_HASH_CAP
    for rows in study.table_rows or ():
        try:
            fits = max_hash_count(
                rows, spec.dim, study.target, depth=DHE_BOUND_DEPTH, min_width=DHE_BOUND_WIDTH
            )
        except StructureInfeasible:
            fits = MIN_HASH_COUNT
        hashes = min(hashes, fits)
    return {
        "max_row_floor": math.floor(spec.dim * (1.0 - study.target) + 1e-9),
        "max_dhe_hashes": hashes,
    }


def trial_config_for(
    spec: SweepSpec,
    study: StudySpec,
    params: dict[str, Any],
    base: tuple[dict[str, Any], str] | None,
) -> dict[str, Any]:
    """Build a trial's config: study defaults, then the spec's overrides, then sampled values.

    Args:
        base: for a post-hoc study, the config and checkpoint of the model it starts from;
            its backbone and training settings are kept.
    """
    config = base_trial_config(spec, study)
    if base is not None:
        base_config, checkpoint = base
        config["backbone"] = copy.deepcopy(base_config["backbone"])
        config["training"] = copy.deepcopy(base_config["training"])
        config["base"] = copy.deepcopy(base_config)
        config["base_checkpoint"] = checkpoint
    for path, value in spec.overrides_for(study.method).items():
        set_by_path(config, path, value)
    for path, value in params.items():
        set_by_path(config, path, value)
    return config


def check_study_configs(spec: SweepSpec, studies: list[StudySpec]) -> None:
    """Sample every study's space once in memory, so a bad space or override fails at once.

    Raises:
        ConfigError: naming the study, its space files and the invalid key.
    """
    # The probe studies live in memory; Optuna would log each one's creation at INFO.
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    for study in studies:
        probe = optuna.create_study(direction="maximize")
        params = study.space.sample(probe.ask(), study_context(spec, study))
        config = trial_config_for(spec, study, params, base=None)
        try:
            TrialConfig.from_dict(config, source=f"study {study.study_id}")
        except ConfigError as error:
            raise ConfigError(
                f"study {study.study_id} gets an invalid trial config from the spec's overrides "
                f"or its search space ({', '.join(study.space.sources)}): {error}"
            ) from error


def trial_key(study_id: str, number: int) -> str:
    """Return the key of trial ``number`` of a study (unique within a sweep)."""
    return f"{study_id}/{number}"


def stable_seed(seed: int, name: str) -> int:
    """Derive a per-study seed from the sweep seed and the study id (stable across runs)."""
    digest = hashlib.sha256(f"{seed}:{name}".encode()).digest()
    return int.from_bytes(digest[:4], "little")


SEARCH_CONSTRAINT = "search_shortfall"
"""Optuna constraint of every completed trial: how far its search stage ended below target."""


def trial_shortfall(trial: optuna.trial.FrozenTrial, target: float) -> float:
    """Return how far the trial's search stage ended below ``target`` (0 if it reached it)."""
    return search_shortfall(trial.user_attrs.get("metric.search_sparsity"), target)


def study_tags(study: StudySpec) -> dict[str, Any]:
    """Return the tags that identify a study in MLflow."""
    return {
        "dataset": dataset_label(study.dataset),
        "backbone": study.backbone,
        "method": study.method,
        "sparsity_target": study.target,
        "study_id": study.study_id,
    }


def flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Flatten nested mappings into dotted keys (``{'a': {'b': 1}}`` to ``{'a.b': 1}``)."""
    flat: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat
