"""PEP: learnable soft-threshold pruning, searched then retrained (two stages).

Every entry ``v`` of the table has a threshold parameter ``s`` (shared per row, per dimension
or per table, depending on the granularity), and the table used is
``sign(v) * relu(|v| - sigmoid(s))``: entries whose magnitude falls below their threshold are
exactly zero. Weight decay on the thresholds pulls ``s`` from its negative start towards 0, so
the thresholds rise during training and the table gets sparser.

Search stage (:func:`lers_ray.training.stages.soft_threshold_search`): train until the pruned
share reaches the target, then :meth:`PEPEmbedding.keep_masks` keeps exactly
``n - ceil(n * target)`` entries, those most above their thresholds. Retraining stage: the
initial weights with that mask fixed (:class:`MaskedEmbedding`), trained like a normal table.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from lers_ray.embeddings.base import EmbeddingTable, SoftThresholdTable, StorageKind
from lers_ray.embeddings.magprune import pruned_count
from lers_ray.embeddings.masked import MaskedEmbedding, csr_to_dense, empty_masked_table
from lers_ray.embeddings.spec import TWO_STAGE, MethodSpec, SettingsBase, require

logger = logging.getLogger(__name__)

GRANULARITIES = ("element", "row", "dimension", "field", "global")
"""Threshold sharing: one per entry, per row, per dimension, or one per table.

``field`` and ``global`` both mean one threshold per table, because a CF table is one field.
"""


def threshold_shape(granularity: str, rows: int, dim: int) -> tuple[int, int]:
    """Return the shape of the threshold parameter of a ``[rows, dim]`` table.

    Raises:
        ValueError: on a granularity not in :data:`GRANULARITIES`.
    """
    if granularity == "element":
        return rows, dim
    if granularity == "row":
        return rows, 1
    if granularity == "dimension":
        return 1, dim
    if granularity in ("field", "global"):
        return 1, 1
    raise ValueError(
        f"unknown threshold granularity {granularity!r}; choose one of {', '.join(GRANULARITIES)}"
    )


def soft_threshold(weight: torch.Tensor, threshold: torch.Tensor) -> torch.Tensor:
    """Return ``sign(weight) * relu(|weight| - sigmoid(threshold))``, broadcasting ``threshold``."""
    return torch.sign(weight) * torch.relu(weight.abs() - torch.sigmoid(threshold))


def threshold_margin(weight: torch.Tensor, threshold: torch.Tensor) -> torch.Tensor:
    """Return ``|weight| - sigmoid(threshold)`` with the shape of ``weight`` (detached).

    An entry is non-zero after :func:`soft_threshold` exactly when its margin is positive.
    """
    margin = weight.detach().abs() - torch.sigmoid(threshold.detach())
    return margin.expand_as(weight)


def kept_count(n: int, target: float) -> int:
    """Return how many of ``n`` entries a table keeps at ``target``: ``n - ceil(n * target)``."""
    return n - pruned_count(n, target)


def keep_largest_margins(margins: Sequence[torch.Tensor], keep: int) -> list[torch.Tensor]:
    """Build keep-masks that keep the ``keep`` largest margins across all tensors jointly.

    Margins are ranked in descending order with a stable sort over the tensors flattened and
    concatenated in the given order, so ties go to the earlier entry and the count is exact.

    Args:
        margins: tensors of any shapes, on one device.
        keep: number of entries to keep, between 0 and the total number of entries.

    Returns:
        One bool mask per tensor, with its shape, ``True`` where the entry is kept.

    Raises:
        ValueError: on a ``keep`` outside that range or a non-finite margin.
    """
    flat = torch.cat([margin.detach().reshape(-1).to(torch.float32) for margin in margins])
    if not 0 <= keep <= flat.numel():
        raise ValueError(f"cannot keep {keep} of {flat.numel()} entries")
    if not bool(torch.isfinite(flat).all()):
        raise ValueError("margins contain non-finite values; cannot rank the entries")
    order = torch.sort(flat, descending=True, stable=True).indices
    kept = torch.zeros(flat.numel(), dtype=torch.bool, device=flat.device)
    kept[order[:keep]] = True
    masks = []
    start = 0
    for margin in margins:
        masks.append(kept[start : start + margin.numel()].reshape(margin.shape))
        start += margin.numel()
    return masks


def check_mask(masks: dict[str, torch.Tensor], name: str, shape: tuple[int, ...]) -> torch.Tensor:
    """Return ``masks[name]`` after checking that it is a bool tensor of ``shape``.

    Raises:
        ValueError: if the mask is missing or has the wrong dtype or shape.
    """
    if name not in masks:
        raise ValueError(f"mask {name!r} is missing; got masks {sorted(masks)}")
    mask = masks[name]
    if mask.dtype != torch.bool or tuple(mask.shape) != shape:
        raise ValueError(
            f"mask {name!r} must be a bool tensor of shape {shape}, "
            f"got {mask.dtype} of shape {tuple(mask.shape)}"
        )
    return mask


class PEPEmbedding(SoftThresholdTable):
    """The PEP search table: weight ``v`` ``[N, d]`` and learnable thresholds ``s``.

    Looked-up vectors are ``sign(v) * relu(|v| - sigmoid(s))``. ``s`` has shape ``[N, d]``
    (``element``), ``[N, 1]`` (``row``), ``[1, d]`` (``dimension``) or ``[1, 1]`` (``field``,
    ``global``) and starts at ``init_threshold``. It is trained with its own Adam weight decay
    (:meth:`optimizer_groups`).

    Example:
        >>> table = PEPEmbedding(100, 8, init_threshold=-4.0)
        >>> table(torch.tensor([[0, 3]])).shape
        torch.Size([1, 2, 8])
    """

    def __init__(
        self,
        num_embeddings: int,
        dim: int,
        granularity: str = "element",
        init_threshold: float = -8.0,
        threshold_weight_decay: float = 1e-4,
        init_std: float = 0.1,
    ) -> None:
        super().__init__(num_embeddings, dim)
        self.granularity = granularity
        self.threshold_weight_decay = float(threshold_weight_decay)
        self.weight = nn.Parameter(torch.empty(num_embeddings, dim))
        nn.init.normal_(self.weight, mean=0.0, std=init_std)
        shape = threshold_shape(granularity, num_embeddings, dim)
        self.threshold = nn.Parameter(torch.full(shape, float(init_threshold)))

    def _lookup_threshold(self, ids: torch.Tensor) -> torch.Tensor:
        """Return the thresholds of the looked-up rows, broadcastable to ``S + (dim,)``."""
        if self.granularity in ("element", "row"):
            return F.embedding(ids, self.threshold)
        return self.threshold.reshape(-1)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        """Look up ``ids`` (any shape ``S``) and return the pruned ``S + (dim,)`` vectors."""
        return soft_threshold(F.embedding(ids, self.weight), self._lookup_threshold(ids))

    def weight_matrix(self) -> torch.Tensor:
        """Return the pruned ``[num_embeddings, dim]`` table (differentiable in ``v`` and ``s``)."""
        return soft_threshold(self.weight, self.threshold)

    def inference_tensors(self) -> dict[str, tuple[torch.Tensor, StorageKind]]:
        """Return the pruned weight, counted by its non-zeros (thresholds are training-only)."""
        return {"weight": (self.weight_matrix().detach(), StorageKind.SPARSE)}

    def export_artifact(self) -> dict[str, torch.Tensor]:
        """Return the pruned table in the CSR form of :meth:`MaskedEmbedding.export_artifact`."""
        pruned = self.weight_matrix().detach()
        return MaskedEmbedding.from_weight(pruned, pruned != 0).export_artifact()

    @classmethod
    def decode_artifact(cls, artifact: dict[str, torch.Tensor]) -> torch.Tensor:
        """Rebuild the dense pruned table from its CSR arrays."""
        return csr_to_dense(artifact)

    def structure(self) -> dict[str, Any]:
        """Return the threshold granularity and the number of thresholds."""
        return {"granularity": self.granularity, "thresholds": int(self.threshold.numel())}

    def optimizer_groups(self, lr: float) -> list[dict[str, Any]]:
        """Put the thresholds in their own Adam group with ``threshold_weight_decay``."""
        return [{"params": [self.threshold], "lr": lr, "weight_decay": self.threshold_weight_decay}]

    @torch.no_grad()
    def search_sparsity(self) -> float:
        """Return the share of zero entries of the pruned table."""
        nonzero = int(torch.count_nonzero(self.weight_matrix()).item())
        return 1.0 - nonzero / (self.num_embeddings * self.dim)

    def keep_masks(self, target: float) -> dict[str, torch.Tensor]:
        """Keep the ``n - ceil(n * target)`` entries with the largest ``|v| - sigmoid(s)``.

        Returns:
            ``{"weight": mask}``, a bool ``[num_embeddings, dim]`` mask for :meth:`fixed`.
        """
        keep = kept_count(self.num_embeddings * self.dim, target)
        margin = threshold_margin(self.weight, self.threshold)
        (mask,) = keep_largest_margins([margin], keep)
        return {"weight": mask}

    def fixed(self, masks: dict[str, torch.Tensor]) -> EmbeddingTable:
        """Return a :class:`MaskedEmbedding` of the current raw ``v`` with ``masks["weight"]``.

        The retraining stage calls it on a table holding the initial weights, so the result
        contains those weights at the kept positions and zeros elsewhere.
        """
        mask = check_mask(masks, "weight", (self.num_embeddings, self.dim))
        return MaskedEmbedding.from_weight(self.weight.detach(), mask)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, granularity={self.granularity}"


@dataclass
class PEPSettings(SettingsBase):
    """Settings of PEP's search stage."""

    granularity: str = "element"
    """Threshold sharing: ``element``, ``row``, ``dimension``, or ``field``/``global``
    (one threshold per table)."""
    init_threshold: float = -8.0
    """Initial threshold parameter ``s``. The pruning threshold starts at ``sigmoid(s)``."""
    threshold_weight_decay: float = 1e-4
    """Adam weight decay on the thresholds, which pulls them up towards ``sigmoid(0) = 0.5``."""
    search_epochs: int = 50
    """Maximum search epochs. If the target is not reached by then, the masks are fixed anyway."""


def validate_search_settings(settings: Any) -> None:
    """Check the settings PEP and CERP share, naming the key of an invalid value.

    Raises:
        ConfigError: on a non-finite threshold, a negative or non-finite weight decay, or fewer
            than one search epoch.
    """
    require(
        math.isfinite(settings.init_threshold),
        "init_threshold",
        f"{settings.init_threshold} must be a finite number (for example -8)",
    )
    require(
        math.isfinite(settings.threshold_weight_decay) and settings.threshold_weight_decay >= 0,
        "threshold_weight_decay",
        f"{settings.threshold_weight_decay} must be a finite number >= 0",
    )
    require(
        settings.search_epochs >= 1,
        "search_epochs",
        f"{settings.search_epochs} must be >= 1",
    )


def _validate(settings: PEPSettings) -> None:
    require(
        settings.granularity in GRANULARITIES,
        "granularity",
        f"{settings.granularity!r} is not one of {', '.join(GRANULARITIES)}",
    )
    validate_search_settings(settings)


def _create(
    num_embeddings: int, dim: int, target: float, settings: PEPSettings, init_std: float
) -> EmbeddingTable:
    return PEPEmbedding(
        num_embeddings,
        dim,
        granularity=settings.granularity,
        init_threshold=settings.init_threshold,
        threshold_weight_decay=settings.threshold_weight_decay,
        init_std=init_std,
    )


def search(context: Any) -> Any:
    """Run :func:`lers_ray.training.stages.soft_threshold_search` on ``context``.

    The import is deferred because the training stack imports the method registry, which
    imports this module, and so that the edge worker can import the tables without it.
    """
    from lers_ray.training.stages import soft_threshold_search

    return soft_threshold_search(context)


METHOD = MethodSpec(
    name="pep",
    settings_cls=PEPSettings,
    kind=TWO_STAGE,
    create=_create,
    create_final=empty_masked_table,
    search=search,
    validate=_validate,
    description="learnable soft thresholds prune the tables until the target is reached; "
    "the initial weights are then retrained with that mask fixed",
)
