"""What a registered embedding method provides: settings, builders and its training kind."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from lers_ray.config import ConfigError, from_mapping
from lers_ray.embeddings.base import EmbeddingTable

TRAIN = "train"
"""The method's tables are trained from scratch with the backbone (full, qr, ttrec, dhe)."""
POST_HOC = "post_hoc"
"""The method derives its tables from a trained full model (magprune, random_prune, ptq)."""
TWO_STAGE = "two_stage"
"""A search stage fixes masks, then the tables are retrained from their initial weights."""
KINDS = (TRAIN, POST_HOC, TWO_STAGE)

CreateTable = Callable[[int, int, float, Any, float], EmbeddingTable]
"""``(num_embeddings, dim, target, settings, init_std) -> table``."""
EmptyTable = Callable[[int, int, float, Any], EmbeddingTable]
"""``(num_embeddings, dim, target, settings) -> table`` to load a checkpoint into."""
FromTrained = Callable[[EmbeddingTable, float, Any], EmbeddingTable]
"""``(trained_full_table, target, settings) -> table``."""
CheckFeasible = Callable[[int, int, float], None]
"""``(num_embeddings, dim, target) -> None``; raises ``StructureInfeasible``."""


class SettingsBase:
    """Base of the settings dataclasses: plain-dict export for configs and YAML."""

    def to_dict(self) -> dict[str, Any]:
        """Return the settings as a plain dict."""
        return dataclasses.asdict(self)  # type: ignore[call-overload,no-any-return]


@dataclass(frozen=True)
class MethodSpec:
    """A registered embedding method."""

    name: str
    settings_cls: type
    kind: str
    create: CreateTable
    """Fresh tables to train; for two-stage methods, the tables the search stage trains."""
    create_final: EmptyTable | None = None
    """Empty tables of the class a finished trial saves (post-hoc and two-stage methods)."""
    from_trained: FromTrained | None = None
    search: Callable[..., Any] | None = None
    """Two-stage methods: ``search(context) -> SearchResult`` (see ``training.stages``)."""
    finetune: bool = False
    """Post-hoc methods that train the derived tables for ``settings.finetune_epochs``."""
    check_feasible: CheckFeasible | None = None
    validate: Callable[[Any], None] | None = None
    description: str = ""

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"method {self.name!r}: kind {self.kind!r} is not one of {KINDS}")
        if self.kind == POST_HOC and self.from_trained is None:
            raise ValueError(f"method {self.name!r} is post hoc but has no from_trained")
        if self.kind == TWO_STAGE and self.search is None:
            raise ValueError(f"method {self.name!r} has two stages but no search")

    @property
    def post_hoc(self) -> bool:
        """True when the method starts from a trained full model instead of training tables."""
        return self.kind == POST_HOC

    def parse_settings(self, data: dict[str, Any] | None) -> Any:
        """Build the settings dataclass from ``MethodConfig.settings``.

        Raises:
            ConfigError: on an unknown key or a value of the wrong type, naming the key.
        """
        settings: Any = from_mapping(self.settings_cls, dict(data or {}), "method.settings")
        if self.validate is not None:
            self.validate(settings)
        return settings

    def empty_table(
        self, num_embeddings: int, dim: int, target: float, settings: Any
    ) -> EmbeddingTable:
        """Return a table of the class a finished trial of this method saves."""
        if self.create_final is not None:
            return self.create_final(num_embeddings, dim, target, settings)
        return self.create(num_embeddings, dim, target, settings, 0.1)


def require(condition: bool, key: str, message: str) -> None:
    """Raise :class:`ConfigError` naming ``method.settings.<key>`` unless ``condition`` holds."""
    if not condition:
        raise ConfigError(f"method.settings.{key}: {message}")
