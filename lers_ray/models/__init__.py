"""Collaborative-filtering backbones (MF-BPR, LightGCN) over pluggable embedding tables."""

from __future__ import annotations

import numpy as np
import torch

from lers_ray.config import CF_BACKBONES, BackboneConfig, ConfigError
from lers_ray.embeddings.base import EmbeddingTable
from lers_ray.models.base import CFModel
from lers_ray.models.graph import normalized_adjacency
from lers_ray.models.lightgcn import LightGCN
from lers_ray.models.mf import MF


def build_model(
    backbone: BackboneConfig,
    user_table: EmbeddingTable,
    item_table: EmbeddingTable,
    train: np.ndarray,
    weight_decay: float,
    adjacency: torch.Tensor | None = None,
) -> CFModel:
    """Build the backbone named in ``backbone`` over the given tables.

    Raises:
        ConfigError: on an unknown backbone name.
    """
    if backbone.name == "mf":
        return MF(user_table, item_table, weight_decay)
    if backbone.name == "lightgcn":
        return LightGCN(user_table, item_table, train, backbone.num_layers, weight_decay, adjacency)
    raise ConfigError(
        f"backbone.name: unknown backbone {backbone.name!r}; choose one of "
        f"{', '.join(CF_BACKBONES)}"
    )


__all__ = ["MF", "CFModel", "LightGCN", "build_model", "normalized_adjacency"]
