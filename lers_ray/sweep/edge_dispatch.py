"""Edge measurement during a sweep: send tuned models to the edge device, record the figures.

When a study finishes, the coordinator hands its best trial (or every completed trial) to the
:class:`EdgeDispatcher`. The dispatcher reads the trial's ``artifact.lers`` and the dataset's
graph artifact, puts both in Ray's object store and runs
:func:`lers_ray.edge.remote.measure_on_node` as a task that requires the edge resource and no
CPU. Figures are logged to the trial's MLflow run and added to its ``results.parquet`` row as
``edge.*``; ``edge.status`` is ``ok``, ``failed``, ``timeout`` or ``skipped``.

Ray keeps a task that requests a resource no node has pending forever. So the dispatcher
checks the cluster's resources before every submission and gives every task a deadline.
Without an edge node, the spec's ``edge.when_missing`` decides: ``simulate`` measures on the
driver's node once the trials are done (one at a time, tagged ``edge.simulated``), ``skip``
records the trials as skipped. A trial already measured (``edge.status`` ``ok``) is not
measured again when a sweep resumes.
"""

from __future__ import annotations

import collections
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lers_ray.config import DatasetConfig
from lers_ray.data.dataset import InteractionData
from lers_ray.sweep.results import ResultsTable
from lers_ray.sweep.spec import EdgeSpec, dataset_label
from lers_ray.tracking.mlflow_tracker import MlflowSweepTracker

logger = logging.getLogger(__name__)

EDGE_DIR = "edge"
"""Sweep subfolder with each dataset's graph artifact."""
STATUS = "edge.status"
OK = "ok"
DEVICE = "device"
SIMULATE = "simulate"
SKIP = "skip"
OFF = "off"
LOOK_EVERY_S = 30.0
"""While no edge node is known, how often the dispatcher checks whether one joined."""


@dataclass
class EdgeJob:
    """One trial to measure."""

    trial_key: str
    study_id: str
    dataset: DatasetConfig
    artifact: Path
    run_id: str | None


@dataclass
class _Running:
    job: EdgeJob
    ref: Any
    deadline: float
    simulated: bool


class EdgeDispatcher:
    """Queue, submit and record edge measurements of one sweep.

    Args:
        spec: the sweep's ``edge`` block.
        sweep_dir: the sweep folder; graph artifacts go to its ``edge/`` subfolder.
        data_dir: the resolved data folder, to build graph artifacts from.
        tracker: the sweep's MLflow tracker.
        results: the sweep's results table.
    """

    def __init__(
        self,
        spec: EdgeSpec,
        sweep_dir: Path,
        data_dir: Path,
        tracker: MlflowSweepTracker,
        results: ResultsTable,
    ) -> None:
        self.spec = spec
        self.sweep_dir = sweep_dir
        self.data_dir = data_dir
        self.tracker = tracker
        self.results = results
        self.mode = OFF if not spec.enabled else None
        self.queue: collections.deque[EdgeJob] = collections.deque()
        self.running: list[_Running] = []
        self._graph_refs: dict[str, Any] = {}
        self._datasets: dict[str, InteractionData] = {}
        self._known: set[str] = set()
        self._next_look = 0.0

    # ----- set-up -----------------------------------------------------------------------------

    def start(self) -> None:
        """Choose where measurements run, and log one warning if no node has the resource.

        Call it once Ray is initialised.
        """
        if self.mode == OFF:
            logger.info("edge measurement is off (edge.enabled is false in the spec)")
            return
        units = self._edge_units()
        if units >= 1:
            self.mode = DEVICE
            logger.info(
                "edge measurement: %d unit(s) of Ray resource %r in the cluster",
                units,
                self.spec.resource,
            )
            return
        self.mode = self.spec.when_missing
        self._warn_missing("at start")

    def _warn_missing(self, when: str) -> None:
        action = (
            "each study's model is measured on this node after the trials, tagged "
            "edge.simulated=true"
            if self.mode == SIMULATE
            else "edge measurement is skipped (edge.when_missing: skip)"
        )
        logger.warning(
            "no Ray node advertises the resource %r (%s): %s. Join an edge device with "
            "clusters/pi/join.sh to measure on it",
            self.spec.resource,
            when,
            action,
        )

    def _edge_units(self) -> int:
        import ray

        return int(ray.cluster_resources().get(self.spec.resource, 0.0))

    # ----- queueing ---------------------------------------------------------------------------

    def add(self, job: EdgeJob) -> None:
        """Queue ``job`` unless it is queued, running or already measured."""
        if self.mode == OFF or job.trial_key in self._known:
            return
        if self.results.value(job.trial_key, STATUS) == OK:
            return
        self._known.add(job.trial_key)
        self.queue.append(job)

    def pending(self) -> int:
        """Return the number of measurements queued or running."""
        return len(self.queue) + len(self.running)

    # ----- running ----------------------------------------------------------------------------

    def poll(self) -> None:
        """Record finished measurements and submit queued ones to edge devices, without waiting.

        Simulated measurements are submitted only by :meth:`drain`, after the trials, so they
        do not share the CPUs with running trials.
        """
        if self.mode in (None, OFF):
            return
        self._collect(timeout=0.0)
        self._look_for_edge_node()
        if self.mode == DEVICE:
            self._submit()
        elif self.mode == SKIP:
            self._skip_queued()

    def _look_for_edge_node(self) -> None:
        """Switch to the device once an edge node joins a sweep that started without one."""
        if self.mode == DEVICE or time.monotonic() < self._next_look:
            return
        self._next_look = time.monotonic() + LOOK_EVERY_S
        if self._edge_units() >= 1:
            self.mode = DEVICE
            logger.info(
                "edge: a node advertising %r joined; measuring there from now on",
                self.spec.resource,
            )

    def drain(self) -> None:
        """Run every queued measurement and wait for all of them (each within its deadline)."""
        if self.mode in (None, OFF):
            return
        if self.pending():
            logger.info("edge: %d measurement(s) to finish", self.pending())
        self._look_for_edge_node()
        while self.pending():
            if self.mode == SKIP:
                self._skip_queued()
            else:
                self._submit()
            self._collect(timeout=1.0)

    def _capacity(self) -> int:
        if self.mode == SIMULATE:
            return 1
        units = self._edge_units()
        if units < 1:
            self.mode = self.spec.when_missing
            self._warn_missing("the edge node left the cluster")
            return 1 if self.mode == SIMULATE else 0
        return units

    def _submit(self) -> None:
        while self.queue and len(self.running) < self._capacity():
            if self.mode == SKIP:
                return
            job = self.queue.popleft()
            if not job.artifact.is_file() and not self._export_missing_artifact(job):
                reason = f"{job.artifact} not found, and no best_model.pt beside it to export"
                self._record(job, "failed", reason=reason, simulated=False)
                continue
            self.running.append(self._launch(job))

    def _export_missing_artifact(self, job: EdgeJob) -> bool:
        """Write the artifact of a trial that ended before writing it; False without a model.

        A trial stopped by the early-stopping scheduler never reaches the end of ``run_trial``,
        where the artifact is written, but it has saved its best epoch's ``best_model.pt``.
        """
        from lers_ray.config import TrialConfig
        from lers_ray.training.checkpoint import read_checkpoint
        from lers_ray.training.runner import export_edge_artifact

        checkpoint = job.artifact.with_name("best_model.pt")
        if not checkpoint.is_file():
            return False
        config = TrialConfig.from_dict(read_checkpoint(checkpoint)["config"], str(checkpoint))
        export_edge_artifact(config, checkpoint, self._dataset(job.dataset), job.artifact)
        logger.info("[%s] edge: wrote %s from %s", job.study_id, job.artifact, checkpoint)
        return True

    def _dataset(self, dataset: DatasetConfig) -> InteractionData:
        """Return the loaded dataset, loading each one once per sweep."""
        from lers_ray.data import load_dataset

        label = dataset_label(dataset)
        if label not in self._datasets:
            self._datasets[label] = load_dataset(dataset, data_dir=self.data_dir)
        return self._datasets[label]

    def _launch(self, job: EdgeJob) -> _Running:
        import ray
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        from lers_ray.edge.options import BenchOptions
        from lers_ray.edge.remote import measure_remote

        simulated = self.mode == SIMULATE
        options = BenchOptions(
            self.spec.threads, self.spec.repeats, self.spec.warmup, self.spec.top_k
        )
        if simulated:
            driver_node = ray.get_runtime_context().get_node_id()
            task = measure_remote.options(
                num_cpus=0,
                scheduling_strategy=NodeAffinitySchedulingStrategy(driver_node, soft=False),
            )
        else:
            task = measure_remote.options(num_cpus=0, resources={self.spec.resource: 1})
        model_ref = ray.put(job.artifact.read_bytes())
        # The measuring process gets a little less time than the task, so it is stopped
        # first and the task reports why.
        ref = task.remote(
            model_ref,
            self._graph_ref(job.dataset),
            vars(options),
            max(1.0, self.spec.timeout_s - 5.0),
        )
        logger.info(
            "[%s] edge: measuring %s%s",
            job.study_id,
            job.trial_key,
            " on this node (simulated)" if simulated else "",
        )
        return _Running(job, ref, time.monotonic() + self.spec.timeout_s, simulated)

    def _graph_ref(self, dataset: DatasetConfig) -> Any:
        import ray

        label = dataset_label(dataset)
        if label not in self._graph_refs:
            self._graph_refs[label] = ray.put(self.graph_file(dataset).read_bytes())
        return self._graph_refs[label]

    def graph_file(self, dataset: DatasetConfig) -> Path:
        """Return the dataset's graph artifact in the sweep's ``edge/`` folder, writing it once."""
        from lers_ray.edge.export import write_graph_artifact

        path = self.sweep_dir / EDGE_DIR / f"{dataset_label(dataset)}.graph.lers"
        if not path.is_file():
            path.parent.mkdir(parents=True, exist_ok=True)
            temporary = path.with_suffix(".tmp")
            write_graph_artifact(temporary, self._dataset(dataset))
            temporary.replace(path)
        return path

    def _collect(self, timeout: float) -> None:
        import ray

        if not self.running:
            return
        refs = [running.ref for running in self.running]
        ready, _ = ray.wait(refs, num_returns=len(refs), timeout=timeout)
        finished = set(ready)
        still: list[_Running] = []
        for running in self.running:
            if running.ref in finished:
                self._finish(running)
            elif time.monotonic() > running.deadline:
                ray.cancel(running.ref, force=True)
                reason = (
                    f"no result within edge.timeout_s={self.spec.timeout_s:g} s; the task was "
                    "cancelled (is the edge node busy, or missing lers_ray?)"
                )
                self._record(running.job, "timeout", reason=reason, simulated=running.simulated)
            else:
                still.append(running)
        self.running = still

    def _finish(self, running: _Running) -> None:
        import ray

        try:
            result = ray.get(running.ref)
        except Exception as error:  # noqa: BLE001 - any task error becomes a failed record.
            lines = [line for line in str(error).splitlines() if line.strip()]
            reason = lines[-1] if lines else type(error).__name__
            self._record(running.job, "failed", reason=reason, simulated=running.simulated)
            return
        self._record(running.job, OK, result=result, simulated=running.simulated)

    def _skip_queued(self) -> None:
        while self.queue:
            job = self.queue.popleft()
            reason = f"no Ray node advertises {self.spec.resource!r}"
            self._record(job, "skipped", reason=reason, simulated=False)

    # ----- recording --------------------------------------------------------------------------

    def _record(
        self,
        job: EdgeJob,
        status: str,
        *,
        simulated: bool,
        result: dict[str, dict[str, Any]] | None = None,
        reason: str | None = None,
    ) -> None:
        metrics: dict[str, float] = dict(result["metrics"]) if result else {}
        tags: dict[str, str] = dict(result["tags"]) if result else {}
        tags[STATUS] = status
        tags["edge.simulated"] = "true" if simulated else "false"
        if reason:
            tags["edge.failure_reason"] = reason[:5000]
        if job.run_id is not None:
            self.tracker.log_metrics(job.run_id, metrics)
            self.tracker.set_tags(job.run_id, tags)
        self.results.update(job.trial_key, {**metrics, **tags})
        if status == OK:
            logger.info(
                "[%s] edge: %s measured on %s%s: artifact %d bytes, per-query p50 %.2f ms, "
                "precomputed p50 %.3f ms",
                job.study_id,
                job.trial_key,
                tags.get("edge.node_ip", "?"),
                " (simulated)" if simulated else "",
                int(metrics.get("edge.artifact_bytes", 0)),
                metrics.get("edge.per_query.p50_ms", float("nan")),
                metrics.get("edge.precomputed.p50_ms", float("nan")),
            )
        else:
            logger.warning("[%s] edge: %s %s: %s", job.study_id, job.trial_key, status, reason)
