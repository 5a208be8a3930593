"""Write the edge artifacts of a trained CF model and of its dataset's train graph.

Two files, so every method's artifact holds only what the method stores:

- the **model artifact** (``artifact.lers``): each table in its compact form plus the
  backbone's settings. The forms are CSR for pruned tables, packed codes and row scales for
  PTQ, partitions or cores for QR and TT-Rec, the MLP for DHE, and P and Q for CERP. Neither
  backbone has weights besides the tables, so the settings are LightGCN's layer count. The
  file's size is the trial's ``artifact_bytes``.
- the **graph artifact** (``graph.lers``): the train pairs as a user-to-items CSR, shared by
  every model of one dataset split. LightGCN propagates over it, and every query masks the
  user's train items with it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from lers_ray.data.dataset import InteractionData
from lers_ray.edge import container
from lers_ray.edge.codecs import codec_of
from lers_ray.models import CFModel, LightGCN

ARTIFACT_FILE = "artifact.lers"
"""Name of a trial's model artifact, beside its ``best_model.pt``."""
GRAPH_FILE = "graph.lers"
"""Name of a dataset's graph artifact, in a ``lers-ray train`` folder or a sweep's ``edge/``."""
MODEL_KIND = "cf_model"
GRAPH_KIND = "cf_graph"
TABLE_ROLES = ("user", "item")


def model_artifact(
    model: CFModel,
    *,
    method: str,
    target: float,
    dataset: str,
    fingerprint: str,
) -> bytes:
    """Return the model artifact's bytes.

    Args:
        model: the trained model (its tables are exported as they are in eval mode).
        method: the compression method's name, recorded for the device's report.
        target: the target sparsity (0 for ``full``).
        dataset: the dataset label, recorded so a mismatched graph is caught.
        fingerprint: the split fingerprint the model was trained on.
    """
    was_training = model.training
    model.eval()
    try:
        tensors: dict[str, torch.Tensor] = {}
        codecs: dict[str, str] = {}
        for role, table in zip(TABLE_ROLES, model.tables(), strict=True):
            codecs[role] = codec_of(table)
            with torch.no_grad():
                for key, value in table.export_artifact().items():
                    tensors[f"{role}.{key}"] = value
    finally:
        model.train(was_training)
    meta: dict[str, Any] = {
        "kind": MODEL_KIND,
        "backbone": "lightgcn" if isinstance(model, LightGCN) else "mf",
        "num_layers": model.num_layers if isinstance(model, LightGCN) else 0,
        "dim": model.user_table.dim,
        "n_users": model.n_users,
        "n_items": model.n_items,
        "tables": codecs,
        "method": method,
        "target": float(target),
        "dataset": dataset,
        "fingerprint": fingerprint,
    }
    return container.encode(meta, tensors)


def graph_artifact(
    train: np.ndarray, n_users: int, n_items: int, *, dataset: str, fingerprint: str
) -> bytes:
    """Return the graph artifact's bytes: the ``(user, item)`` train pairs as a CSR by user.

    Keys: ``crow`` ``[n_users + 1]`` (row pointers) and ``items`` ``[n_pairs]`` (item ids,
    ascending within each user), stored in the narrowest integer types.
    """
    pairs = np.asarray(train, dtype=np.int64).reshape(-1, 2)
    order = np.lexsort((pairs[:, 1], pairs[:, 0]))
    users, items = pairs[order, 0], pairs[order, 1]
    crow = np.zeros(n_users + 1, dtype=np.int64)
    np.cumsum(np.bincount(users, minlength=n_users), out=crow[1:])
    meta = {
        "kind": GRAPH_KIND,
        "n_users": int(n_users),
        "n_items": int(n_items),
        "dataset": dataset,
        "fingerprint": fingerprint,
    }
    return container.encode(
        meta, {"crow": torch.from_numpy(crow), "items": torch.from_numpy(items)}
    )


def write_model_artifact(
    path: str | Path,
    model: CFModel,
    *,
    method: str,
    target: float,
    dataset: str,
    fingerprint: str,
) -> int:
    """Write :func:`model_artifact` to ``path`` and return its size in bytes."""
    data = model_artifact(
        model, method=method, target=target, dataset=dataset, fingerprint=fingerprint
    )
    Path(path).write_bytes(data)
    return len(data)


def write_graph_artifact(path: str | Path, data: InteractionData) -> int:
    """Write the graph artifact of ``data``'s train split to ``path``; return its size."""
    blob = graph_artifact(
        data.train, data.n_users, data.n_items, dataset=data.name, fingerprint=data.fingerprint
    )
    Path(path).write_bytes(blob)
    return len(blob)
