"""Embedding tables, the shared parameter counter and the method registry."""

from lers_ray.embeddings.accounting import (
    ParameterCount,
    artifact_bytes,
    count_parameters,
    count_stored,
    params_full,
    sparsity,
)
from lers_ray.embeddings.base import EmbeddingTable, StorageKind
from lers_ray.embeddings.full import FullEmbedding
from lers_ray.embeddings.magprune import MagPruneEmbedding, magnitude_prune
from lers_ray.embeddings.registry import (
    FullSettings,
    MagPruneSettings,
    MethodSpec,
    available_methods,
    get_method,
    register_method,
)

__all__ = [
    "EmbeddingTable",
    "FullEmbedding",
    "FullSettings",
    "MagPruneEmbedding",
    "MagPruneSettings",
    "MethodSpec",
    "ParameterCount",
    "StorageKind",
    "artifact_bytes",
    "available_methods",
    "count_parameters",
    "count_stored",
    "get_method",
    "magnitude_prune",
    "params_full",
    "register_method",
    "sparsity",
]
