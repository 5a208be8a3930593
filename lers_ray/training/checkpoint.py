"""Saving and loading trained CF models with the config that built them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from lers_ray.config import ConfigError, TrialConfig
from lers_ray.data.dataset import InteractionData
from lers_ray.embeddings.base import EmbeddingTable
from lers_ray.embeddings.registry import get_method
from lers_ray.embeddings.spec import TRAIN, TWO_STAGE
from lers_ray.models import CFModel, build_model

CHECKPOINT_FORMAT = "lers_ray.cf_model/1"


def build_tables(
    config: TrialConfig, n_users: int, n_items: int, stage: str = "final"
) -> tuple[EmbeddingTable, EmbeddingTable]:
    """Create fresh user ``[n_users, dim]`` and item ``[n_items, dim]`` tables of the method.

    With ``stage="final"``, post-hoc and two-stage methods get empty tables of the class a
    finished trial saves, to load a checkpoint into. With ``stage="search"``, a two-stage
    method gets freshly initialised search tables.
    """
    spec = get_method(config.method.name)
    settings = spec.parse_settings(config.method.settings)
    dim = config.backbone.dim
    target = config.method.target
    if spec.kind != TRAIN and not (stage == "search" and spec.kind == TWO_STAGE):
        return (
            spec.empty_table(n_users, dim, target, settings),
            spec.empty_table(n_items, dim, target, settings),
        )
    init_std = config.training.init_std
    return (
        spec.create(n_users, dim, target, settings, init_std),
        spec.create(n_items, dim, target, settings, init_std),
    )


def save_checkpoint(
    path: str | Path, model: CFModel, config: TrialConfig, data: InteractionData, epoch: int
) -> None:
    """Write the model state, the trial config and the split fingerprint to ``path``."""
    torch.save(
        {
            "format": CHECKPOINT_FORMAT,
            "config": config.to_dict(),
            "state_dict": model.state_dict(),
            "epoch": epoch,
            "n_users": data.n_users,
            "n_items": data.n_items,
            "data_fingerprint": data.fingerprint,
        },
        path,
    )


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint file written by :func:`save_checkpoint`.

    Raises:
        ConfigError: if the file is missing or is not such a checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: checkpoint not found")
    payload = torch.load(path, map_location="cpu", weights_only=False)
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise ConfigError(f"{path}: not a lers_ray model checkpoint ({CHECKPOINT_FORMAT})")
    return payload


def load_checkpoint(
    path: str | Path, data: InteractionData, adjacency: torch.Tensor | None = None
) -> tuple[CFModel, TrialConfig]:
    """Rebuild the model saved at ``path`` for ``data`` and return it with its config.

    Raises:
        ConfigError: if the file is missing or was trained on a different split.
    """
    payload = read_checkpoint(path)
    if payload["data_fingerprint"] != data.fingerprint:
        raise ConfigError(
            f"{path}: checkpoint was trained on split {payload['data_fingerprint']}, but the "
            f"data given has split {data.fingerprint}; load the dataset config it was trained on"
        )
    config = TrialConfig.from_dict(payload["config"], source=f"{path}: config")
    user_table, item_table = build_tables(config, data.n_users, data.n_items)
    model = build_model(
        config.backbone,
        user_table,
        item_table,
        data.train,
        config.training.weight_decay,
        adjacency,
    )
    model.load_state_dict(payload["state_dict"])
    model.eval()
    return model, config
