"""Embedding tables, the shared parameter counter and the method registry."""

from lers_ray.embeddings.accounting import (
    ParameterCount,
    artifact_bytes,
    count_parameters,
    count_stored,
    params_full,
    sparsity,
)
from lers_ray.embeddings.base import (
    EmbeddingTable,
    SearchableTable,
    SoftThresholdTable,
    StorageKind,
    StructureInfeasible,
)
from lers_ray.embeddings.full import FullEmbedding, FullSettings
from lers_ray.embeddings.magprune import MagPruneSettings, magnitude_prune, prune_table
from lers_ray.embeddings.masked import MaskedEmbedding
from lers_ray.embeddings.registry import available_methods, get_method, register_method
from lers_ray.embeddings.spec import MethodSpec

__all__ = [
    "EmbeddingTable",
    "FullEmbedding",
    "FullSettings",
    "MagPruneSettings",
    "MaskedEmbedding",
    "MethodSpec",
    "ParameterCount",
    "SearchableTable",
    "SoftThresholdTable",
    "StorageKind",
    "StructureInfeasible",
    "artifact_bytes",
    "available_methods",
    "count_parameters",
    "count_stored",
    "get_method",
    "magnitude_prune",
    "params_full",
    "prune_table",
    "register_method",
    "sparsity",
]
