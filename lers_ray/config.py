"""Typed configuration of one training run (a trial).

The same :class:`TrialConfig` is built by a sweep for each trial, read by ``lers-ray train`` from
a YAML file, and written by ``lers-ray export`` for the best trial of a study, so a config
round-trips through YAML without loss. Unknown keys and values of the wrong type raise
:class:`ConfigError` with the dotted key path, so a typo in a YAML file is reported, not ignored.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

CF_BACKBONES = ("mf", "lightgcn")


class ConfigError(ValueError):
    """Invalid configuration: the message names the file or key path, the value and the fix."""


@dataclass
class SyntheticConfig:
    """Seeded synthetic implicit feedback with power-law user and item degrees."""

    n_users: int = 1000
    n_items: int = 1500
    n_interactions: int = 30000
    user_exponent: float = 1.0
    """Zipf exponent of user activity: user of popularity rank r is drawn with weight r^-exponent."""
    item_exponent: float = 1.0
    """Zipf exponent of item popularity."""
    seed: int = 0


@dataclass
class DatasetConfig:
    """Dataset selection and split settings (the rules are in docs/protocol.md)."""

    name: str = "synthetic"
    """Registered dataset name (``ml-100k``, ``gowalla``, ``yelp2018``, ``ml-1m``, ``synthetic``)
    or any label when ``path`` is given."""
    path: str | None = None
    """Folder with the dataset files; overrides the registered location under the data dir."""
    format: str | None = None
    """``lightgcn`` or ``movielens``; only needed with ``path``, else taken from the registry."""
    valid_fraction: float = 0.1
    """Share of each user's train items carved out for validation when no valid file exists."""
    split_seed: int = 2023
    rating_threshold: float = 4.0
    """Explicit ratings at or above this value are implicit positives (MovieLens layout)."""
    subsample_users: int | None = None
    """Keep a seeded random subset of this many users (for quick runs); ``None`` keeps all."""
    synthetic: SyntheticConfig | None = None


@dataclass
class BackboneConfig:
    """The recommender that consumes the embeddings."""

    name: str = "lightgcn"
    """``mf`` (matrix factorisation) or ``lightgcn``."""
    dim: int = 64
    num_layers: int = 3
    """LightGCN propagation layers; ignored by MF."""


@dataclass
class TrainingConfig:
    """BPR training, early stopping and evaluation settings."""

    lr: float = 1e-3
    weight_decay: float = 1e-4
    """Coefficient of the L2 penalty on the batch's layer-0 embeddings (a loss term, not AdamW)."""
    batch_size: int = 2048
    num_negatives: int = 1
    epochs: int = 30
    """Maximum number of training epochs."""
    patience: int = 5
    """Stop after this many evaluations without a better validation NDCG@20; 0 disables it."""
    eval_every: int = 1
    """Evaluate on validation every this many epochs (the last epoch is always evaluated)."""
    init_std: float = 0.1
    """Standard deviation of the normal initialisation of embedding tables."""
    seed: int = 2023
    eval_batch_size: int = 4096
    """Users scored per batch in full-ranking evaluation."""
    num_threads: int | None = None
    """torch intra-op threads; ``None`` keeps torch's default (Ray sets it from the trial's CPUs)."""


@dataclass
class MethodConfig:
    """The embedding compression method and its target sparsity."""

    name: str = "full"
    target: float = 0.0
    """Target sparsity, ``1 - params_stored / params_full``, in [0, 1)."""
    settings: dict[str, Any] = field(default_factory=dict)
    """Method settings; validated by the method's settings dataclass in ``lers_ray.embeddings``."""


@dataclass
class TrialConfig:
    """Everything one training run needs; resolved, with no search space left in it."""

    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    method: MethodConfig = field(default_factory=MethodConfig)
    ks: list[int] = field(default_factory=lambda: [10, 20, 50])
    """Cut-offs for Recall@K and NDCG@K; 20 must be among them (it selects models)."""
    base: TrialConfig | None = None
    """For post-hoc methods (magprune): the config of the full model they start from.
    ``lers-ray train`` and ``reproduce`` train it first when ``base_checkpoint`` is missing."""
    base_checkpoint: str | None = None
    """Path to the trained full model that a post-hoc method starts from."""

    def validate(self) -> None:
        """Check cross-field rules that single-field types cannot express.

        Raises:
            ConfigError: naming the key and the fix.
        """
        if self.backbone.name not in CF_BACKBONES:
            raise ConfigError(
                f"backbone.name: unknown backbone {self.backbone.name!r}; "
                f"choose one of {', '.join(CF_BACKBONES)}"
            )
        if not 0.0 <= self.method.target < 1.0:
            raise ConfigError(
                f"method.target: {self.method.target} is outside [0, 1); "
                "give the target sparsity as a fraction, e.g. 0.8 for 80% fewer parameters"
            )
        if 20 not in self.ks:
            raise ConfigError(f"ks: {self.ks} must contain 20, the cut-off used to select models")
        if self.backbone.dim <= 0:
            raise ConfigError(f"backbone.dim: {self.backbone.dim} must be positive")
        if self.training.batch_size <= 0 or self.training.epochs < 0:
            raise ConfigError("training.batch_size must be positive and training.epochs >= 0")
        if not 0.0 < self.dataset.valid_fraction < 1.0:
            raise ConfigError(
                f"dataset.valid_fraction: {self.dataset.valid_fraction} is outside (0, 1)"
            )
        if self.base is not None:
            self.base.validate()

    def to_dict(self) -> dict[str, Any]:
        """Return a plain dict of builtins (YAML- and JSON-serialisable)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "config") -> TrialConfig:
        """Build and validate a config from a mapping; ``source`` names it in errors.

        ``dataset: NAME`` is accepted for ``dataset: {name: NAME}``, in ``base`` too.
        """
        config = from_mapping(cls, _expand_dataset_shorthand(data), source)
        config.validate()
        return config

    @classmethod
    def from_yaml(cls, path: str | Path) -> TrialConfig:
        """Read a config from a YAML file (a top-level ``config`` key is also accepted).

        Raises:
            ConfigError: if the file is missing, not YAML, or has invalid keys or values.
        """
        data = load_yaml_mapping(path)
        if "config" in data and isinstance(data["config"], dict):
            data = data["config"]
        return cls.from_dict(data, source=str(path))


def load_yaml_mapping(path: str | Path) -> dict[str, Any]:
    """Read a YAML file whose top level must be a mapping.

    Raises:
        ConfigError: naming the file (and line for syntax errors).
    """
    # Imported here: the edge loader imports this module and needs no YAML on a device.
    import yaml

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: file not found")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{path}:{where} invalid YAML: {error}") from error
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    return data


def dump_yaml(data: dict[str, Any], path: str | Path) -> None:
    """Write a mapping as block-style YAML, keeping key order."""
    import yaml

    Path(path).write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")


def _expand_dataset_shorthand(data: dict[str, Any]) -> dict[str, Any]:
    """Turn ``dataset: NAME`` into ``dataset: {name: NAME}``, recursing into ``base``."""
    if isinstance(data.get("dataset"), str):
        data = {**data, "dataset": {"name": data["dataset"]}}
    if isinstance(data.get("base"), dict):
        data = {**data, "base": _expand_dataset_shorthand(data["base"])}
    return data


def from_mapping(cls: type[T], data: Any, path: str) -> T:
    """Build dataclass ``cls`` from ``data``, checking keys and value types recursively.

    ``path`` is the dotted location used in error messages (e.g. ``spec.yaml: training``).

    Raises:
        ConfigError: on unknown keys or values of the wrong type.
    """
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    internal = set(getattr(cls, "INTERNAL_FIELDS", ()))
    known = {
        f.name: f
        for f in dataclasses.fields(cls)  # type: ignore[arg-type]
        if f.name not in internal
    }
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise ConfigError(
            f"{path}: unknown key(s) {', '.join(map(repr, unknown))}; "
            f"valid keys are {', '.join(known)}"
        )
    values = {name: _coerce(hints[name], value, _child(path, name)) for name, value in data.items()}
    return cls(**values)


def _child(path: str, name: str) -> str:
    """Return the error location of key ``name`` under ``path`` (``spec.yaml: training.lr``)."""
    return f"{path}.{name}" if ": " in path else f"{path}: {name}"


def _coerce(hint: Any, value: Any, path: str) -> Any:
    """Check ``value`` against the type ``hint`` and convert where lossless (int to float)."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(hint)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _coerce(option, value, path)
            except ConfigError as error:
                errors.append(str(error))
        raise ConfigError(errors[0] if len(errors) == 1 else f"{path}: invalid value {value!r}")
    if dataclasses.is_dataclass(hint):
        return from_mapping(hint, value, path)  # type: ignore[arg-type]
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{path}: expected a list, got {value!r}")
        (item_hint,) = typing.get_args(hint) or (Any,)
        return [_coerce(item_hint, item, f"{path}[{i}]") for i, item in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{path}: expected a mapping, got {value!r}")
        return dict(value)
    if hint is Any:
        return value
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{path}: expected true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{path}: expected an integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{path}: expected a number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{path}: expected a string, got {value!r}")
        return value
    return value
