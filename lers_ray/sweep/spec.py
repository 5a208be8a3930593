"""Sweep specs: which studies to run, with what budget, where, and how to track them.

A sweep spec is a YAML file; every (dataset, backbone, method, target sparsity) becomes one
study. ``full`` has no target, so it yields one study per (dataset, backbone). Example::

    name: ml100k_cf
    datasets: [ml-100k]
    backbones: [lightgcn]
    methods: [full, magprune]
    targets: [0.5, 0.8, 0.95]
    trials_per_study: 8
    epochs: 40
    resources_per_trial: {cpu: 1, gpu: 0}
    seed: 2023
    output_dir: runs/ml100k_cf
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from lers_ray.config import (
    CF_BACKBONES,
    ConfigError,
    DatasetConfig,
    TrialConfig,
    from_mapping,
    load_yaml_mapping,
)
from lers_ray.sweep.space import SearchSpace, load_search_space

REPO_SEARCH_SPACES = Path(__file__).resolve().parents[2] / "search_spaces"
"""The repository's ``search_spaces`` folder (present in a source checkout or editable install)."""


@dataclass
class EarlyStoppingSpec:
    """Asynchronous successive halving (ASHA), applied within each study separately."""

    enabled: bool = True
    grace_period: int = 3
    """Epochs every trial runs before it can be stopped."""
    reduction_factor: int = 2


EDGE_MODES = ("simulate", "skip")
"""What a sweep does when no node advertises the edge resource."""
EDGE_TRIALS = ("best", "all")
"""Which trials of a finished study are measured."""


@dataclass
class EdgeSpec:
    """Measurement of each study's tuned model on a Ray node that advertises ``resource``.

    The driver sends the trial's ``artifact.lers`` and the dataset's graph through Ray's
    object store to a task requiring ``{resource: 1}`` and no CPU, so the device needs no
    shared storage. Figures go to the trial's MLflow run and to ``results.parquet`` as
    ``edge.*``.
    """

    enabled: bool = True
    when_missing: str = "simulate"
    """With no node advertising ``resource``: ``simulate`` measures on the driver's node after
    the trials (tagged ``edge.simulated``), ``skip`` records the trials as skipped."""
    trials: str = "best"
    """``best``: each finished study's best trial; ``all``: every completed trial."""
    resource: str = "edge_pi"
    """Ray resource that marks an edge device."""
    threads: int = 1
    """torch threads of the measuring process."""
    repeats: int = 30
    """Timed queries per mode, after ``warmup`` untimed ones."""
    warmup: int = 5
    top_k: int = 20
    timeout_s: float = 900.0
    """Seconds one measurement may take, waiting for the device included."""


@dataclass
class SweepSpec:
    """A parsed sweep spec (see the module docstring for the YAML form)."""

    INTERNAL_FIELDS: ClassVar[tuple[str, ...]] = ("spec_path",)
    """Fields set by the loader, never read from the YAML file."""

    name: str = "sweep"
    """Sweep name; also the MLflow experiment's name."""
    datasets: list[DatasetConfig] = field(default_factory=lambda: [DatasetConfig()])
    """Registered names (``ml-100k``) or ``DatasetConfig`` mappings (``name``, ``path``, ...)."""
    backbones: list[str] = field(default_factory=lambda: ["lightgcn"])
    """``mf`` and/or ``lightgcn``; ``backbone: NAME`` is accepted for one."""
    methods: list[str] = field(default_factory=lambda: ["full"])
    """Compression methods; ``full`` gets one study per (dataset, backbone), no target."""
    targets: list[float] = field(default_factory=lambda: [0.5, 0.8, 0.95])
    """Target sparsities in (0, 1); each compressed method gets one study per target."""
    trials_per_study: int = 8
    """Trial budget of each study (fewer when its space has fewer distinct configs)."""
    epochs: int = 30
    """Epoch budget per trial (``training.epochs``)."""
    patience: int = 5
    """Evaluations without a better validation NDCG@20 before a trial stops; 0 disables it."""
    eval_every: int = 1
    """Validation interval in epochs (the scheduler acts on these reports)."""
    dim: int = 64
    """Embedding dimension of every table."""
    ks: list[int] = field(default_factory=lambda: [10, 20, 50])
    """Cut-offs for Recall@K and NDCG@K; must include 20, which selects models."""
    resources_per_trial: dict[str, float] = field(default_factory=lambda: {"cpu": 1, "gpu": 0})
    """Ray resources of one trial; ``cpu`` also sets its torch threads (GPU training is not
    supported yet)."""
    max_concurrent_trials: int | None = None
    """Trials running at once over all studies; ``None`` lets Ray fill the cluster."""
    seed: int = 2023
    """Seed of training and, combined with each study's id, of its sampler."""
    output_dir: str = "runs/sweep"
    """Sweep folder, relative to the current directory unless absolute."""
    tracking_uri: str | None = None
    """MLflow tracking URI; ``None`` uses ``sqlite:///<output_dir>/mlflow.db``."""
    ray_address: str | None = None
    """Address of an existing Ray cluster; ``None`` starts a local one."""
    search_space_dir: str | None = None
    """Folder with ``backbones/`` and ``methods/`` space files (default: see ``space_dir``)."""
    overrides: dict[str, Any] = field(default_factory=dict)
    """Dotted config paths set in every trial, e.g. ``{training.batch_size: 1024}``."""
    method_overrides: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Per method, dotted config paths set in that method's trials after ``overrides``, e.g.
    ``{pep: {method.settings.search_epochs: 5}}``; like ``overrides``, they are not searched."""

    def overrides_for(self, method: str) -> dict[str, Any]:
        """Return the overrides that apply to ``method``'s trials, in the order they apply."""
        return {**self.overrides, **self.method_overrides.get(method, {})}

    early_stopping: EarlyStoppingSpec = field(default_factory=EarlyStoppingSpec)
    edge: EdgeSpec = field(default_factory=EdgeSpec)
    spec_path: str | None = None
    """The file the spec was read from (set by the loader)."""

    def space_dir(self) -> Path:
        """Return the folder of default search spaces.

        Order: ``search_space_dir`` (relative to the spec file), then the ``search_spaces``
        folder that contains the spec file, then the repository's ``search_spaces``.
        """
        spec_dir = Path(self.spec_path).resolve().parent if self.spec_path else Path.cwd()
        if self.search_space_dir:
            candidate = Path(self.search_space_dir)
            return candidate if candidate.is_absolute() else spec_dir / candidate
        for parent in [spec_dir, *spec_dir.parents]:
            if parent.name == "search_spaces":
                return parent
        return REPO_SEARCH_SPACES

    def output_path(self) -> Path:
        """Return the absolute sweep folder."""
        return Path(self.output_dir).expanduser().resolve()

    def to_dict(self) -> dict[str, Any]:
        """Return the spec as plain data (written to the sweep folder for ``--resume``)."""
        data = dataclasses.asdict(self)
        data.pop("spec_path")
        return data


@dataclass
class StudySpec:
    """One Optuna study: a (dataset, backbone, method, target sparsity) group."""

    study_id: str
    dataset: DatasetConfig
    backbone: str
    method: str
    target: float
    n_trials: int
    space: SearchSpace
    depends_on: str | None = None
    """Study whose best trained model this study starts from (post-hoc methods)."""
    table_rows: tuple[int, int] | None = None
    """Rows of the user and item tables, once the dataset is loaded (structure bounds)."""


def load_sweep_spec(path: str | Path) -> SweepSpec:
    """Read and validate a sweep spec file.

    Raises:
        ConfigError: naming the file and the invalid key or value.
    """
    data = load_yaml_mapping(path)
    spec = parse_sweep_spec(data, source=str(path))
    spec.spec_path = str(Path(path).resolve())
    return spec


def parse_sweep_spec(data: dict[str, Any], source: str = "sweep spec") -> SweepSpec:
    """Build a :class:`SweepSpec` from a mapping, accepting short forms.

    ``backbone: x`` is accepted for ``backbones: [x]``, and a dataset may be given by name
    (``ml-100k``) instead of a mapping.

    Raises:
        ConfigError: naming ``source`` and the invalid key or value.
    """
    data = copy.deepcopy(data)
    if "backbone" in data:
        if "backbones" in data:
            raise ConfigError(f"{source}: give either 'backbone' or 'backbones', not both")
        data["backbones"] = [data.pop("backbone")]
    if "datasets" in data:
        raw = data["datasets"]
        if not isinstance(raw, list) or not raw:
            raise ConfigError(f"{source}: datasets must be a non-empty list")
        data["datasets"] = [{"name": item} if isinstance(item, str) else item for item in raw]
    spec = from_mapping(SweepSpec, data, source)
    _validate(spec, source)
    return spec


def _validate(spec: SweepSpec, source: str) -> None:
    from lers_ray.embeddings.registry import available_methods

    for backbone in spec.backbones:
        if backbone not in CF_BACKBONES:
            raise ConfigError(
                f"{source}: backbones: unknown backbone {backbone!r}; "
                f"choose from {', '.join(CF_BACKBONES)}"
            )
    known = available_methods()
    for method in spec.methods:
        if method not in known:
            raise ConfigError(
                f"{source}: methods: unknown method {method!r}; choose from {', '.join(known)}"
            )
    for method, paths in spec.method_overrides.items():
        if method not in spec.methods:
            raise ConfigError(
                f"{source}: method_overrides: {method!r} is not in methods "
                f"({', '.join(spec.methods)}); remove it or add the method"
            )
        if not isinstance(paths, dict):
            raise ConfigError(
                f"{source}: method_overrides.{method}: expected a mapping of dotted config "
                f"paths to values, got {paths!r}"
            )
    for target in spec.targets:
        if not 0.0 < target < 1.0:
            raise ConfigError(
                f"{source}: targets: {target} is outside (0, 1); give the target sparsity "
                "as a fraction, e.g. 0.8"
            )
    if spec.trials_per_study < 1:
        raise ConfigError(f"{source}: trials_per_study must be at least 1")
    if spec.epochs < 1:
        raise ConfigError(f"{source}: epochs must be at least 1")
    unknown_resources = set(spec.resources_per_trial) - {"cpu", "gpu"}
    if unknown_resources:
        raise ConfigError(
            f"{source}: resources_per_trial: unknown key(s) {sorted(unknown_resources)}; "
            "use cpu and gpu"
        )
    if spec.resources_per_trial.get("gpu", 0) > 0:
        # NOTE: the trainer has no device handling yet, so a reserved GPU would sit idle.
        raise ConfigError(
            f"{source}: resources_per_trial: gpu is {spec.resources_per_trial['gpu']}, but "
            "trials train on CPU only in this version; set gpu: 0 (cpu sets torch's threads)"
        )
    from lers_ray.data.registry import registered_names

    for dataset in spec.datasets:
        if dataset.path is None and dataset.name not in registered_names():
            raise ConfigError(
                f"{source}: datasets: unknown dataset {dataset.name!r}; choose one of "
                f"{', '.join(registered_names())}, or give 'path' (and 'format') for your own"
            )
    if len(set(spec.targets)) != len(spec.targets):
        raise ConfigError(f"{source}: targets: duplicate target in {spec.targets}")
    names = [dataset_label(d) for d in spec.datasets]
    if len(set(names)) != len(names):
        raise ConfigError(f"{source}: datasets: duplicate dataset name in {names}")
    if 20 not in spec.ks:
        raise ConfigError(f"{source}: ks: {spec.ks} must contain 20")
    _validate_edge(spec.edge, source)


def _validate_edge(edge: EdgeSpec, source: str) -> None:
    if edge.when_missing not in EDGE_MODES:
        raise ConfigError(
            f"{source}: edge.when_missing: {edge.when_missing!r} is not one of "
            f"{', '.join(EDGE_MODES)}"
        )
    if edge.trials not in EDGE_TRIALS:
        raise ConfigError(
            f"{source}: edge.trials: {edge.trials!r} is not one of {', '.join(EDGE_TRIALS)}"
        )
    for key in ("threads", "repeats", "top_k"):
        if getattr(edge, key) < 1:
            raise ConfigError(f"{source}: edge.{key} must be at least 1, got {getattr(edge, key)}")
    if edge.warmup < 0:
        raise ConfigError(f"{source}: edge.warmup must be at least 0, got {edge.warmup}")
    if edge.timeout_s <= 0:
        raise ConfigError(f"{source}: edge.timeout_s must be positive, got {edge.timeout_s}")
    if not edge.resource:
        raise ConfigError(f"{source}: edge.resource must name a Ray resource, e.g. edge_pi")


def dataset_label(dataset: DatasetConfig) -> str:
    """Return the dataset's name as used in study ids (with the subsample size, if any)."""
    if dataset.subsample_users:
        return f"{dataset.name}-u{dataset.subsample_users}"
    return dataset.name


def study_id_for(dataset: DatasetConfig, backbone: str, method: str, target: float) -> str:
    """Return the id of a study, unique within a sweep, e.g. ``ml-100k.lightgcn.magprune.sp80``."""
    label = f"{dataset_label(dataset)}.{backbone}.{method}"
    if method == "full":
        return label
    return f"{label}.sp{round(target * 100, 2):g}"


def build_studies(spec: SweepSpec) -> list[StudySpec]:
    """Expand a spec into its studies; full-model studies come first.

    Raises:
        ConfigError: if a space file is missing or invalid, or a post-hoc method has no
            ``full`` study to start from.
    """
    from lers_ray.embeddings.registry import get_method

    space_dir = spec.space_dir()
    studies: list[StudySpec] = []
    for dataset in spec.datasets:
        for backbone in spec.backbones:
            backbone_space = load_search_space(_space_file(space_dir, "backbones", backbone))
            full_id = study_id_for(dataset, backbone, "full", 0.0)
            for method in spec.methods:
                method_space = load_search_space(_space_file(space_dir, "methods", method))
                post_hoc = get_method(method).post_hoc
                if post_hoc and "full" not in spec.methods:
                    raise ConfigError(
                        f"{spec.spec_path or 'sweep spec'}: method {method!r} prunes a trained "
                        "full model, so 'full' must be in methods too"
                    )
                # A post-hoc method keeps the full model's backbone and training settings,
                # so only its own knobs are searched.
                space = method_space if post_hoc else backbone_space.merged(method_space)
                # An override fixes a value in every trial, so it is not searched.
                space = space.without(set(spec.overrides_for(method)))
                targets = [0.0] if method == "full" else list(spec.targets)
                for target in targets:
                    studies.append(
                        StudySpec(
                            study_id=study_id_for(dataset, backbone, method, target),
                            dataset=dataset,
                            backbone=backbone,
                            method=method,
                            target=target,
                            n_trials=spec.trials_per_study,
                            space=space,
                            depends_on=full_id if post_hoc else None,
                        )
                    )
    studies.sort(key=lambda study: study.depends_on is not None)
    return studies


def _space_file(space_dir: Path, kind: str, name: str) -> Path:
    path = space_dir / kind / f"{name}.yaml"
    if not path.is_file():
        raise ConfigError(
            f"search space file {path} not found; create it or set search_space_dir in the "
            f"sweep spec to a folder with {kind}/{name}.yaml"
        )
    return path


def base_trial_config(spec: SweepSpec, study: StudySpec) -> dict[str, Any]:
    """Return the trial config of ``study`` before searched values are set (plain data)."""
    config = TrialConfig()
    config.dataset = copy.deepcopy(study.dataset)
    config.backbone.name = study.backbone
    config.backbone.dim = spec.dim
    config.training.epochs = spec.epochs
    config.training.patience = spec.patience
    config.training.eval_every = spec.eval_every
    config.training.seed = spec.seed
    cpus = spec.resources_per_trial.get("cpu", 1)
    config.training.num_threads = max(1, int(cpus))
    config.method.name = study.method
    config.method.target = study.target
    config.ks = list(spec.ks)
    return config.to_dict()
