"""Embedding methods registered by name, each with a typed settings dataclass and builders.

A method is looked up by the name in ``MethodConfig.name``. Its settings dataclass validates
``MethodConfig.settings``. Non-post-hoc methods build fresh tables with ``create``. Post-hoc
methods (``post_hoc=True``) instead derive tables from a trained full table with
``from_trained``, and use ``create`` only for an empty table to load a checkpoint into.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from lers_ray.config import ConfigError, from_mapping
from lers_ray.embeddings.base import EmbeddingTable
from lers_ray.embeddings.full import FullEmbedding
from lers_ray.embeddings.magprune import MagPruneEmbedding


@dataclass
class FullSettings:
    """The full table has no settings."""

    def to_dict(self) -> dict[str, Any]:
        """Return the settings as a plain dict."""
        return dataclasses.asdict(self)


@dataclass
class MagPruneSettings:
    """Settings of post-hoc magnitude pruning."""

    row_floor_k: int = 0
    """Each row keeps at least its k largest-magnitude entries."""

    def to_dict(self) -> dict[str, Any]:
        """Return the settings as a plain dict."""
        return dataclasses.asdict(self)


CreateTable = Callable[[int, int, Any, float], EmbeddingTable]
"""``(num_embeddings, dim, settings, init_std) -> table``."""
FromTrained = Callable[[EmbeddingTable, float, Any], EmbeddingTable]
"""``(trained_full_table, target, settings) -> table``."""


@dataclass(frozen=True)
class MethodSpec:
    """A registered embedding method."""

    name: str
    settings_cls: type
    post_hoc: bool
    """True when the method starts from a trained full model instead of training its tables."""
    create: CreateTable
    from_trained: FromTrained | None = None
    validate: Callable[[Any], None] | None = None

    def parse_settings(self, data: dict[str, Any] | None) -> Any:
        """Build the settings dataclass from ``MethodConfig.settings``.

        Raises:
            ConfigError: on an unknown key or a value of the wrong type, naming the key.
        """
        settings: Any = from_mapping(self.settings_cls, dict(data or {}), "method.settings")
        if self.validate is not None:
            self.validate(settings)
        return settings


def _validate_magprune(settings: MagPruneSettings) -> None:
    if settings.row_floor_k < 0:
        raise ConfigError(f"method.settings.row_floor_k: {settings.row_floor_k} must be >= 0")


def _create_full(num_embeddings: int, dim: int, settings: Any, init_std: float) -> EmbeddingTable:
    return FullEmbedding(num_embeddings, dim, init_std=init_std)


def _create_magprune(
    num_embeddings: int, dim: int, settings: Any, init_std: float
) -> EmbeddingTable:
    return MagPruneEmbedding(num_embeddings, dim)


def _magprune_from_trained(
    trained: EmbeddingTable, target: float, settings: MagPruneSettings
) -> EmbeddingTable:
    return MagPruneEmbedding.from_full(trained, target, settings.row_floor_k)


_REGISTRY: dict[str, MethodSpec] = {
    "full": MethodSpec(name="full", settings_cls=FullSettings, post_hoc=False, create=_create_full),
    "magprune": MethodSpec(
        name="magprune",
        settings_cls=MagPruneSettings,
        post_hoc=True,
        create=_create_magprune,
        from_trained=_magprune_from_trained,
        validate=_validate_magprune,
    ),
}


def register_method(spec: MethodSpec) -> None:
    """Add a method to the registry.

    Raises:
        ValueError: if a method of that name is already registered.
    """
    if spec.name in _REGISTRY:
        raise ValueError(f"method {spec.name!r} is already registered")
    _REGISTRY[spec.name] = spec


def available_methods() -> list[str]:
    """Return the registered method names, sorted."""
    return sorted(_REGISTRY)


def get_method(name: str) -> MethodSpec:
    """Return the method registered as ``name``.

    Raises:
        ConfigError: if no method has that name, listing the known ones.
    """
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ConfigError(
            f"method.name: unknown method {name!r}; known methods are "
            f"{', '.join(available_methods())}"
        ) from None
