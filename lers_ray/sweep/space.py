"""Search spaces: YAML-defined, sampled define-by-run through an Optuna trial.

A space file has a ``params`` mapping from a dotted config path (``training.lr``,
``backbone.num_layers``, ``method.settings.row_floor_k``) to a distribution::

    params:
      training.lr: {type: log_float, low: 5.0e-4, high: 1.0e-2}
      backbone.num_layers: {type: int, low: 1, high: 4}
      training.batch_size: {type: categorical, choices: [1024, 2048]}
      training.init_std: {type: fixed, value: 0.1}
      training.num_negatives: {type: int, low: 1, high: 4, when: {training.batch_size: 1024}}

Types: ``float`` (``low``, ``high``, optional ``step``), ``log_float``, ``int`` (optional ``step``
and ``log``), ``categorical`` (``choices``) and ``fixed`` (``value``). A bound may name a value
that depends on the study instead of a number; see :data:`CONTEXT_BOUNDS`. ``when`` makes a
parameter conditional on parameters listed before it: it is sampled only when each named
parameter has the given value (or one of a list of values).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna

from lers_ray.config import ConfigError, load_yaml_mapping

TYPES = ("float", "log_float", "int", "categorical", "fixed")

CONTEXT_BOUNDS = {
    "max_row_floor": "floor(dim * (1 - target)): the largest per-row floor k that still lets a "
    "pruned table reach the target sparsity",
    "max_dhe_hashes": "the largest DHE hash count (at most 1024) for which a 3-layer MLP of "
    "width 16 still fits the target's budget in both tables of the study",
}
"""Names a bound may use in place of a number, with their meaning."""

_ALLOWED_KEYS = {
    "float": {"type", "low", "high", "step", "when", "description"},
    "log_float": {"type", "low", "high", "when", "description"},
    "int": {"type", "low", "high", "step", "log", "when", "description"},
    "categorical": {"type", "choices", "when", "description"},
    "fixed": {"type", "value", "when", "description"},
}


@dataclass
class ParamSpec:
    """One searched parameter: its dotted config path and distribution."""

    path: str
    type: str
    low: float | int | str | None = None
    high: float | int | str | None = None
    step: float | int | None = None
    log: bool = False
    choices: list[Any] | None = None
    value: Any = None
    when: dict[str, list[Any]] = field(default_factory=dict)


@dataclass
class SearchSpace:
    """An ordered list of parameters, sampled in order so ``when`` can refer to earlier ones."""

    params: list[ParamSpec] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)
    """Files (or ``inline``) the parameters came from, for error messages and tags."""

    def merged(self, other: SearchSpace) -> SearchSpace:
        """Return this space followed by ``other``; a path in both keeps ``other``'s spec."""
        replaced = {param.path for param in other.params}
        kept = [param for param in self.params if param.path not in replaced]
        return SearchSpace(kept + list(other.params), self.sources + other.sources)

    def without(self, paths: set[str]) -> SearchSpace:
        """Return the space with the given parameter paths removed."""
        return SearchSpace([p for p in self.params if p.path not in paths], list(self.sources))

    def grid(self, context: dict[str, float]) -> dict[str, list[Any]] | None:
        """Return every value of each searched parameter, or ``None`` if the space is not a grid.

        A space is a grid when every parameter is categorical, fixed, or a linear integer
        range, and none is conditional. Fixed parameters are not searched, so they are left out.
        """
        values: dict[str, list[Any]] = {}
        for param in self.params:
            if param.when:
                return None
            if param.type == "categorical":
                assert param.choices is not None
                values[param.path] = list(param.choices)
            elif param.type == "int" and not param.log:
                low = math.ceil(_resolve_bound(param.low, context, param.path))
                high = math.floor(_resolve_bound(param.high, context, param.path))
                values[param.path] = list(range(low, high + 1, int(param.step or 1)))
            elif param.type != "fixed":
                return None
        return values

    def sample(self, trial: optuna.Trial, context: dict[str, float]) -> dict[str, Any]:
        """Sample every active parameter through ``trial`` (define-by-run).

        Args:
            trial: the Optuna trial that records the choices.
            context: values for named bounds (see :data:`CONTEXT_BOUNDS`).

        Returns:
            Mapping from dotted config path to the sampled value; inactive conditional
            parameters are absent.
        """
        chosen: dict[str, Any] = {}
        for param in self.params:
            if not _condition_holds(param, chosen):
                continue
            chosen[param.path] = _suggest(trial, param, context)
        return chosen


def load_search_space(source: str | Path | dict[str, Any]) -> SearchSpace:
    """Read a search space from a YAML file or an inline mapping.

    Raises:
        ConfigError: naming the file, the parameter and the invalid key or value.
    """
    if isinstance(source, dict):
        data, name = source, "inline search space"
    else:
        data, name = load_yaml_mapping(source), str(source)
    unknown = sorted(set(data) - {"params", "description"})
    if unknown:
        raise ConfigError(f"{name}: unknown top-level key(s) {unknown}; expected 'params'")
    raw_params = data.get("params") or {}
    if not isinstance(raw_params, dict):
        raise ConfigError(f"{name}: 'params' must map config paths to distributions")
    params = [_parse_param(name, path, spec) for path, spec in raw_params.items()]
    seen: set[str] = set()
    for param in params:
        for condition_path in param.when:
            if condition_path not in seen:
                raise ConfigError(
                    f"{name}: {param.path}: 'when' refers to {condition_path!r}, which is not "
                    "a parameter listed before it"
                )
        seen.add(param.path)
    return SearchSpace(params, [name])


def _parse_param(source: str, path: str, spec: Any) -> ParamSpec:
    where = f"{source}: {path}"
    if not isinstance(spec, dict):
        raise ConfigError(f"{where}: expected a mapping with a 'type', got {spec!r}")
    kind = spec.get("type")
    if kind not in TYPES:
        raise ConfigError(f"{where}: invalid type {kind!r}; choose one of {', '.join(TYPES)}")
    unknown = sorted(set(spec) - _ALLOWED_KEYS[kind])
    if unknown:
        raise ConfigError(
            f"{where}: unknown key(s) {unknown} for type {kind}; "
            f"allowed: {sorted(_ALLOWED_KEYS[kind])}"
        )
    when = {
        key: value if isinstance(value, list) else [value]
        for key, value in (spec.get("when") or {}).items()
    }
    param = ParamSpec(path=path, type=kind, when=when)
    if kind == "categorical":
        choices = spec.get("choices")
        if not isinstance(choices, list) or not choices:
            raise ConfigError(f"{where}: 'choices' must be a non-empty list")
        param.choices = choices
    elif kind == "fixed":
        if "value" not in spec:
            raise ConfigError(f"{where}: a fixed parameter needs 'value'")
        param.value = spec["value"]
    else:
        for bound in ("low", "high"):
            value = spec.get(bound)
            if value is None:
                raise ConfigError(f"{where}: missing '{bound}'")
            if isinstance(value, str) and value not in CONTEXT_BOUNDS:
                raise ConfigError(
                    f"{where}: '{bound}' is {value!r}; use a number or one of "
                    f"{', '.join(CONTEXT_BOUNDS)}"
                )
            if isinstance(value, bool) or not isinstance(value, (int, float, str)):
                raise ConfigError(f"{where}: '{bound}' must be a number, got {value!r}")
        param.low, param.high = spec["low"], spec["high"]
        param.step = spec.get("step")
        param.log = kind == "log_float" or bool(spec.get("log", False))
        numbers = [v for v in (param.low, param.high) if not isinstance(v, str)]
        if len(numbers) == 2 and numbers[0] > numbers[1]:
            raise ConfigError(f"{where}: low {param.low} is greater than high {param.high}")
        if param.log and any(v <= 0 for v in numbers):
            raise ConfigError(f"{where}: a log-scaled range needs low > 0, got {param.low}")
    return param


def _condition_holds(param: ParamSpec, chosen: dict[str, Any]) -> bool:
    return all(path in chosen and chosen[path] in values for path, values in param.when.items())


def _resolve_bound(value: float | str | None, context: dict[str, float], path: str) -> float:
    if isinstance(value, str):
        if value not in context:
            raise ConfigError(f"{path}: bound {value!r} has no value for this study")
        return context[value]
    assert value is not None
    return value


def _suggest(trial: optuna.Trial, param: ParamSpec, context: dict[str, float]) -> Any:
    if param.type == "fixed":
        return param.value
    if param.type == "categorical":
        assert param.choices is not None
        return trial.suggest_categorical(param.path, param.choices)
    low = _resolve_bound(param.low, context, param.path)
    high = _resolve_bound(param.high, context, param.path)
    if param.type == "int":
        low_int, high_int = math.ceil(low), math.floor(high)
        if low_int > high_int:
            raise ConfigError(f"{param.path}: empty integer range [{low}, {high}]")
        return trial.suggest_int(
            param.path, low_int, high_int, step=int(param.step or 1), log=param.log
        )
    step = None if param.log else param.step
    return trial.suggest_float(param.path, float(low), float(high), step=step, log=param.log)


def set_by_path(config: dict[str, Any], path: str, value: Any) -> None:
    """Set ``config[a][b][c] = value`` for ``path`` ``a.b.c``, creating mappings as needed.

    Raises:
        ConfigError: if an intermediate key has a non-mapping value.
    """
    keys = path.split(".")
    node = config
    for key in keys[:-1]:
        child = node.setdefault(key, {})
        if not isinstance(child, dict):
            raise ConfigError(f"{path}: {key!r} is not a section of the config")
        node = child
    node[keys[-1]] = value
