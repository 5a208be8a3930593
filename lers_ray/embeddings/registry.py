"""Embedding methods registered by name.

Each method module defines a :class:`MethodSpec` (its settings dataclass, builders and training
kind) and is listed here. ``MethodConfig.name`` picks the method; its settings dataclass
validates ``MethodConfig.settings``.
"""

from __future__ import annotations

from lers_ray.config import ConfigError
from lers_ray.embeddings import (
    cerp,
    dhe,
    full,
    magprune,
    optembed,
    pep,
    ptq,
    qr,
    random_prune,
    ttrec,
)
from lers_ray.embeddings.spec import MethodSpec

_REGISTRY: dict[str, MethodSpec] = {}


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


for _spec in (
    full.METHOD,
    magprune.METHOD,
    magprune.METHOD_FT,
    random_prune.METHOD,
    ptq.METHOD,
    pep.METHOD,
    cerp.METHOD,
    optembed.METHOD,
    dhe.METHOD,
    qr.METHOD,
    ttrec.METHOD,
):
    register_method(_spec)
