"""Run a sweep: set up its folder, MLflow and Ray, then let Ray Tune schedule the trials.

The sweep folder contains everything needed to resume: the resolved spec (``spec.yaml``), the
sweep id and tracking URI (``sweep.json``), Optuna's study storage (``optuna.db``), the results
table (``results.parquet``), per-trial folders under ``studies/``, Tune's own files under
``tune/``, and by default the MLflow store (``mlflow.db``).
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lers_ray.config import ConfigError, dump_yaml, load_yaml_mapping
from lers_ray.sweep.spec import (
    StudySpec,
    SweepSpec,
    build_studies,
    dataset_label,
    parse_sweep_spec,
)

if TYPE_CHECKING:
    from lers_ray.sweep.coordinator import SweepCoordinator

logger = logging.getLogger(__name__)

STATE_FILE = "sweep.json"
SPEC_FILE = "spec.yaml"
SKIPPED_FILE = "skipped_studies.json"
"""Studies left out because their method cannot reach the target, with the reason."""


@dataclass
class SweepOutcome:
    """Result of a finished (or interrupted) sweep."""

    sweep_dir: Path
    tracking_uri: str
    studies: list[dict[str, Any]]
    """One row per study: progress and the best trial's metrics."""
    complete: bool
    """True when every study finished its planned trials (or is blocked)."""
    skipped: dict[str, str] = field(default_factory=dict)
    """Studies not run because no structure of their method reaches the target, with why."""


def default_tracking_uri(sweep_dir: Path) -> str:
    """Return the embedded default tracking store: SQLite in the sweep folder."""
    return f"sqlite:///{sweep_dir / 'mlflow.db'}"


def prepare_sweep_dir(
    spec: SweepSpec, tracking_uri: str | None, data_dir: Path
) -> tuple[Path, dict[str, Any]]:
    """Create a new sweep folder and write its spec and state files.

    Raises:
        ConfigError: if the folder already contains a sweep (resume it instead).
    """
    sweep_dir = spec.output_path()
    if (sweep_dir / STATE_FILE).exists():
        raise ConfigError(
            f"{sweep_dir} already contains a sweep; resume it with 'lers-ray sweep --resume "
            f"{sweep_dir}' or set a new output_dir"
        )
    sweep_dir.mkdir(parents=True, exist_ok=True)
    # The stored spec points at absolute paths so a resume from another directory finds them.
    spec.search_space_dir = str(spec.space_dir())
    spec.output_dir = str(sweep_dir)
    for dataset in spec.datasets:
        if dataset.path:
            dataset.path = str(Path(dataset.path).expanduser().resolve())
    state = {
        "sweep_id": uuid.uuid4().hex,
        "name": spec.name,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "tracking_uri": tracking_uri or spec.tracking_uri or default_tracking_uri(sweep_dir),
        "data_dir": str(data_dir),
    }
    dump_yaml(spec.to_dict(), sweep_dir / SPEC_FILE)
    (sweep_dir / STATE_FILE).write_text(json.dumps(state, indent=2))
    return sweep_dir, state


def load_sweep_dir(sweep_dir: Path) -> tuple[SweepSpec, dict[str, Any]]:
    """Read the spec and state of an existing sweep folder.

    Raises:
        ConfigError: if the folder is not a sweep folder.
    """
    sweep_dir = sweep_dir.expanduser().resolve()
    if not (sweep_dir / STATE_FILE).exists():
        raise ConfigError(
            f"{sweep_dir} is not a sweep folder ({STATE_FILE} not found); give the output_dir "
            "of a sweep that was started with 'lers-ray sweep SPEC'"
        )
    state = json.loads((sweep_dir / STATE_FILE).read_text())
    spec = parse_sweep_spec(load_yaml_mapping(sweep_dir / SPEC_FILE), str(sweep_dir / SPEC_FILE))
    spec.output_dir = str(sweep_dir)
    return spec, state


def run_sweep(
    spec: SweepSpec | None = None,
    *,
    resume_dir: Path | None = None,
    address: str | None = None,
    tracking_uri: str | None = None,
    data_dir: str | Path | None = None,
    num_cpus: int | None = None,
) -> SweepOutcome:
    """Run (or resume) a sweep to completion.

    Args:
        spec: the sweep to start; ``None`` when resuming.
        resume_dir: folder of a sweep to resume; finished trials are not run again.
        address: Ray cluster address; overrides the spec's ``ray_address``. ``None`` and no
            address in the spec start a local cluster.
        tracking_uri: MLflow URI; overrides the spec's and the stored one.
        data_dir: dataset folder; overrides ``LERS_DATA_DIR`` and the stored one.
        num_cpus: CPUs of a local Ray cluster (default: all).

    Raises:
        ConfigError: on an invalid spec, search space or sweep folder.
    """
    import ray

    from lers_ray.data.paths import resolve_data_dir
    from lers_ray.sweep.coordinator import SweepCoordinator, check_study_configs
    from lers_ray.tracking.mlflow_tracker import MlflowSweepTracker

    if resume_dir is not None:
        spec, state = load_sweep_dir(Path(resume_dir))
        if tracking_uri:
            state["tracking_uri"] = tracking_uri
        if data_dir is not None:
            state["data_dir"] = str(resolve_data_dir(str(data_dir)))
        resolved_data = Path(state["data_dir"])
    else:
        if spec is None:
            raise ValueError("run_sweep needs a spec or a resume_dir")
        resolved_data = resolve_data_dir(str(data_dir) if data_dir is not None else None)

    # Everything that can be checked without Ray is checked before the sweep folder is
    # written, so a typo never leaves a folder that can be neither resumed nor restarted.
    studies = build_studies(spec)
    table_rows = check_datasets(spec, resolved_data)
    for study in studies:
        study.table_rows = table_rows[dataset_label(study.dataset)]
    studies, skipped = split_infeasible(studies, spec.dim)
    check_study_configs(spec, studies)

    if resume_dir is not None:
        sweep_dir = spec.output_path()
        (sweep_dir / STATE_FILE).write_text(json.dumps(state, indent=2))
        logger.info("resuming sweep %s in %s", spec.name, sweep_dir)
    else:
        sweep_dir, state = prepare_sweep_dir(spec, tracking_uri, resolved_data)
        logger.info("starting sweep %s in %s", spec.name, sweep_dir)

    (sweep_dir / SKIPPED_FILE).write_text(json.dumps(skipped, indent=2) + "\n")
    tracker = MlflowSweepTracker(state["tracking_uri"], spec.name, state["sweep_id"])
    coordinator = SweepCoordinator(spec, studies, sweep_dir, tracker, resolved_data)
    coordinator.recover_interrupted()
    coordinator.start_tracking()
    logger.info(
        "%d studies, %d trials planned, %d to run; MLflow: %s",
        len(studies),
        sum(s.n_trials for s in studies),
        coordinator.trials_to_run(),
        state["tracking_uri"],
    )
    # Studies finished in an earlier session queue their edge measurement here.
    coordinator.close_done_studies()
    if coordinator.trials_to_run() == 0 and not coordinator.edge.pending():
        coordinator.finish()
        return SweepOutcome(sweep_dir, state["tracking_uri"], coordinator.summary(), True, skipped)

    started_ray = False
    ray_address = address or spec.ray_address
    if not ray.is_initialized():
        ray.init(
            address=ray_address,
            num_cpus=None if ray_address else num_cpus,
            include_dashboard=False,
            logging_level=logging.WARNING,
        )
        started_ray = True
    try:
        coordinator.edge.start()
        if coordinator.trials_to_run() > 0:
            # Only a cluster this call started is known to be complete. Nodes may still join
            # another one (or an autoscaler may add them), so there a too-large trial only warns.
            _run_tune(spec, coordinator, sweep_dir, local=started_ray and not ray_address)
        coordinator.run_edge()
    finally:
        coordinator.finish()
        if started_ray:
            ray.shutdown()
    summary = coordinator.summary()
    complete = all(state.is_done() for state in coordinator.studies.values())
    return SweepOutcome(sweep_dir, state["tracking_uri"], summary, complete, skipped)


def _run_tune(spec: SweepSpec, coordinator: SweepCoordinator, sweep_dir: Path, local: bool) -> None:
    """Run the trials still to run as one Ray Tune experiment."""
    import ray
    from ray import tune

    from lers_ray.sweep.tune_glue import (
        PerStudyScheduler,
        StudySearcher,
        SweepCallback,
        train_trial,
    )

    resources = {key: float(value) for key, value in spec.resources_per_trial.items()}
    check_trial_fits(resources, local=local)
    max_concurrent = spec.max_concurrent_trials or _fill_cluster(resources, ray.cluster_resources())
    scheduler = None
    if spec.early_stopping.enabled:
        scheduler = PerStudyScheduler(
            max_t=spec.epochs,
            grace_period=spec.early_stopping.grace_period,
            reduction_factor=spec.early_stopping.reduction_factor,
        )
    tuner = tune.Tuner(
        tune.with_resources(train_trial, resources),
        tune_config=tune.TuneConfig(
            search_alg=StudySearcher(coordinator),
            scheduler=scheduler,
            num_samples=max(1, coordinator.trials_to_run()),
            max_concurrent_trials=max_concurrent,
            reuse_actors=True,
            trial_name_creator=_trial_name,
            trial_dirname_creator=_trial_name,
        ),
        run_config=tune.RunConfig(
            name=f"session-{time.strftime('%Y%m%d-%H%M%S')}",
            storage_path=str(sweep_dir / "tune"),
            callbacks=[SweepCallback(coordinator)],
            verbose=0,
        ),
    )
    tuner.fit()


def split_infeasible(studies: list[StudySpec], dim: int) -> tuple[list[StudySpec], dict[str, str]]:
    """Separate the studies whose method has no structure that reaches their target.

    PTQ at 0.95, for instance, cannot store fewer than 4 bits per entry plus row scales.
    Such a study is skipped with a warning instead of failing all its trials.

    Returns:
        The runnable studies, and the skipped study ids with the reason.
    """
    from lers_ray.embeddings.base import StructureInfeasible
    from lers_ray.embeddings.registry import get_method

    runnable: list[StudySpec] = []
    skipped: dict[str, str] = {}
    for study in studies:
        check = get_method(study.method).check_feasible
        try:
            if check is not None and study.table_rows is not None:
                for rows in study.table_rows:
                    check(rows, dim, study.target)
        except StructureInfeasible as error:
            skipped[study.study_id] = str(error)
            logger.warning("skipping study %s: %s", study.study_id, error)
            continue
        runnable.append(study)
    return runnable, skipped


def check_datasets(spec: SweepSpec, data_dir: Path) -> dict[str, tuple[int, int]]:
    """Load every dataset of the spec once in the driver, so a missing file fails at once.

    This also fills the Parquet cache that the trials then read.

    Returns:
        ``(n_users, n_items)`` by dataset label: the row counts of the two tables.

    Raises:
        ConfigError: on an unknown dataset name.
        DataFormatError: naming the missing or invalid file and how to fix it.
    """
    from lers_ray.data import load_dataset

    rows: dict[str, tuple[int, int]] = {}
    for dataset in spec.datasets:
        data = load_dataset(dataset, data_dir=data_dir)
        rows[dataset_label(dataset)] = (data.n_users, data.n_items)
        logger.info(
            "dataset %s: %d users, %d items, %d train / %d validation / %d test pairs, split %s",
            dataset_label(dataset),
            data.n_users,
            data.n_items,
            len(data.train),
            len(data.valid),
            len(data.test),
            data.fingerprint,
        )
    return rows


def check_trial_fits(resources: dict[str, float], local: bool) -> None:
    """Fail when no node of the Ray cluster has the CPUs that one trial requests.

    Ray would otherwise keep such trials pending forever. On a cluster started elsewhere an
    autoscaler may still add a large enough node, so there it is only a warning.

    Raises:
        ConfigError: on a local cluster too small for one trial.
    """
    import ray

    need = resources.get("cpu", 0.0)
    largest = max(
        (node["Resources"].get("CPU", 0.0) for node in ray.nodes() if node.get("Alive")),
        default=0.0,
    )
    if need <= largest:
        return
    message = (
        f"resources_per_trial: cpu is {need:g}, but the largest Ray node has {largest:g} CPUs; "
        "lower cpu in the spec or run on a cluster with larger nodes"
    )
    if local:
        raise ConfigError(message)
    logger.warning("%s (trials stay pending until such a node joins)", message)


def _trial_name(trial: Any) -> str:
    return str(trial.config["trial_key"]).replace("/", "_")


def _fill_cluster(resources: dict[str, float], cluster: dict[str, float]) -> int:
    """Return how many trials of this size fit on the cluster at once (at least 1)."""
    fits = []
    for key, name in (("cpu", "CPU"), ("gpu", "GPU")):
        need = resources.get(key, 0.0)
        if need > 0:
            fits.append(int(cluster.get(name, 0.0) // need))
    return max(1, min(fits) if fits else 1)
