"""Load edge artifacts and score one user against all items, as a device does.

Needs torch and numpy only (plus lers_ray's table decoders and LightGCN's graph functions,
which use nothing else).

A query scores one user against every item, masks the user's train items and returns the
top K. It runs in one of two modes:

- ``per_query``: the tables are decoded from their compact form and (LightGCN) propagated
  over the whole graph on every query, so only the compact artifact stays in memory;
- ``precomputed``: the final user and item embeddings are computed once
  (:meth:`EdgeRecommender.precompute`) and each query is a matrix-vector product.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lers_ray.edge import container
from lers_ray.edge.codecs import decoder
from lers_ray.edge.container import ArtifactError

MODES = ("per_query", "precomputed")
"""Query modes: decode (and propagate) per query, or once up front."""

Source = str | Path | bytes | bytearray | memoryview


def _read(source: Source) -> tuple[dict[str, Any], dict[str, torch.Tensor], str, int]:
    if isinstance(source, str | Path):
        path = Path(source)
        if not path.is_file():
            raise ArtifactError(f"{path}: artifact file not found")
        data = path.read_bytes()
        meta, tensors = container.decode(data, source=str(path))
        return meta, tensors, str(path), len(data)
    meta, tensors = container.decode(source)
    return meta, tensors, "artifact bytes", len(source)


def _expect_kind(meta: dict[str, Any], kind: str, name: str, hint: str) -> None:
    if meta.get("kind") != kind:
        raise ArtifactError(
            f"{name}: expected a {kind!r} artifact, found {meta.get('kind')!r}. {hint}"
        )


class _Counts:
    """User and item counts read from an artifact's ``meta``."""

    meta: dict[str, Any]

    @property
    def n_users(self) -> int:
        """Number of users (rows of the user table)."""
        return int(self.meta["n_users"])

    @property
    def n_items(self) -> int:
        """Number of items (rows of the item table)."""
        return int(self.meta["n_items"])


@dataclass
class EdgeModel(_Counts):
    """A CF model artifact: its settings and each table's compact tensors."""

    meta: dict[str, Any]
    parts: dict[str, dict[str, torch.Tensor]]
    """Compact tensors by table role (``user``, ``item``) and key."""
    nbytes: int
    """Size of the artifact in bytes."""

    @property
    def backbone(self) -> str:
        """``mf`` or ``lightgcn``."""
        return str(self.meta["backbone"])

    @property
    def num_layers(self) -> int:
        """LightGCN propagation layers (0 for MF)."""
        return int(self.meta["num_layers"])

    def decode_tables(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Return the dense float32 user ``[U, d]`` and item ``[I, d]`` tables."""
        with torch.no_grad():
            users = decoder(self.meta["tables"]["user"])(self.parts["user"])
            items = decoder(self.meta["tables"]["item"])(self.parts["item"])
        return users, items


@dataclass
class EdgeGraph(_Counts):
    """The train pairs of a dataset split as a CSR by user."""

    meta: dict[str, Any]
    crow: torch.Tensor
    """``[n_users + 1]`` int64 row pointers."""
    items: torch.Tensor
    """``[n_pairs]`` int64 item ids."""
    nbytes: int

    def pairs(self) -> np.ndarray:
        """Return the ``[n_pairs, 2]`` int64 ``(user, item)`` pairs."""
        counts = (self.crow[1:] - self.crow[:-1]).numpy()
        users = np.repeat(np.arange(self.n_users, dtype=np.int64), counts)
        return np.stack([users, self.items.numpy()], axis=1)

    def train_items(self, user: int) -> torch.Tensor:
        """Return the item ids ``user`` has in train."""
        return self.items[int(self.crow[user]) : int(self.crow[user + 1])]


def load_model(source: Source) -> EdgeModel:
    """Read a model artifact (a path, or its bytes).

    Raises:
        ArtifactError: naming the file when it is not a model artifact.
    """
    meta, tensors, name, nbytes = _read(source)
    _expect_kind(meta, "cf_model", name, "Give the trial's artifact.lers as the model")
    parts: dict[str, dict[str, torch.Tensor]] = {"user": {}, "item": {}}
    for key, tensor in tensors.items():
        role, _, field = key.partition(".")
        if role not in parts:
            raise ArtifactError(f"{name}: tensor {key!r} belongs to no table")
        parts[role][field] = tensor
    for role in parts:
        # Resolving the decoders here imports them at load time and rejects unknown codecs.
        decoder(meta["tables"][role])
    return EdgeModel(meta, parts, nbytes)


def load_graph(source: Source) -> EdgeGraph:
    """Read a graph artifact (a path, or its bytes).

    Raises:
        ArtifactError: naming the file when it is not a graph artifact.
    """
    meta, tensors, name, nbytes = _read(source)
    _expect_kind(meta, "cf_graph", name, "Give the dataset's graph.lers as the graph")
    return EdgeGraph(meta, tensors["crow"], tensors["items"], nbytes)


class EdgeRecommender:
    """Top-K recommendation for one user from a model artifact and its graph.

    Raises:
        ArtifactError: when the graph is of another dataset split than the model.
    """

    def __init__(self, model: EdgeModel, graph: EdgeGraph) -> None:
        if (model.n_users, model.n_items) != (graph.n_users, graph.n_items) or model.meta.get(
            "fingerprint"
        ) != graph.meta.get("fingerprint"):
            raise ArtifactError(
                f"the model was trained on {model.meta.get('dataset')} split "
                f"{model.meta.get('fingerprint')} ({model.n_users} users, {model.n_items} "
                f"items), but the graph is of {graph.meta.get('dataset')} split "
                f"{graph.meta.get('fingerprint')} ({graph.n_users} users, {graph.n_items} "
                "items); use the graph.lers written for the model's dataset"
            )
        self.model = model
        self.graph = graph
        self.adjacency: torch.Tensor | None = None
        if model.backbone == "lightgcn":
            from lers_ray.models.graph import normalized_adjacency

            self.adjacency = normalized_adjacency(graph.pairs(), model.n_users, model.n_items)
        self._final: tuple[torch.Tensor, torch.Tensor] | None = None

    def embeddings(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Decode the tables and (LightGCN) propagate: final users ``[U, d]``, items ``[I, d]``."""
        users, items = self.model.decode_tables()
        if self.adjacency is None:
            return users, items
        from lers_ray.models.graph import layer_mean

        with torch.no_grad():
            nodes = layer_mean(self.adjacency, torch.cat([users, items]), self.model.num_layers)
        return nodes[: self.model.n_users], nodes[self.model.n_users :]

    def precompute(self) -> None:
        """Compute and keep the final embeddings for ``precomputed`` queries."""
        self._final = self.embeddings()

    def scores(self, user: int, mode: str) -> torch.Tensor:
        """Return the raw scores ``[n_items]`` of ``user`` (train items not masked).

        Raises:
            ValueError: on an unknown mode, or ``precomputed`` before :meth:`precompute`.
        """
        if mode == "per_query":
            users, items = self.embeddings()
        elif mode == "precomputed":
            if self._final is None:
                raise ValueError("call precompute() before precomputed queries")
            users, items = self._final
        else:
            raise ValueError(f"mode: unknown query mode {mode!r}; choose one of {MODES}")
        with torch.no_grad():
            return items @ users[user]

    def recommend(self, user: int, k: int, mode: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Return the top-``k`` item ids and scores of ``user``, train items excluded."""
        scores = self.scores(user, mode)
        scores[self.graph.train_items(user)] = float("-inf")
        top = torch.topk(scores, min(k, scores.numel()))
        return top.indices, top.values
