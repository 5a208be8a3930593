"""MagPrune: zero the smallest-magnitude entries of a trained table, post hoc.

The pruned count is exact: ``ceil(n * target)`` entries of an ``n``-entry table are zeroed,
ranked by ``|w|`` with a stable sort, so ties never change the count. An optional per-row floor
``k`` protects each row's ``k`` largest entries. Because the count is rounded up, the achieved
sparsity reaches the target and exceeds it by less than ``1 / n``.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import torch

from lers_ray.embeddings.base import EmbeddingTable
from lers_ray.embeddings.masked import MaskedEmbedding, empty_masked_table
from lers_ray.embeddings.spec import POST_HOC, MethodSpec, SettingsBase, require

logger = logging.getLogger(__name__)


def pruned_count(n: int, target: float) -> int:
    """Return ``ceil(n * target)``: the fewest zeroed entries whose sparsity reaches ``target``.

    Zeroing ``floor(n * target)`` instead would leave the achieved sparsity just under the
    target whenever ``n * target`` is not a whole number, which the rule
    ``sparsity >= target`` rejects. The two counts differ by at most one entry.
    A product within 1e-6 of an integer is read as that integer, so decimal targets behave as
    written: ``100 * 0.29`` is ``28.999999999999996`` in floating point and prunes 29 entries.
    """
    return math.ceil(n * target - 1e-6)


def max_row_floor(rows: int, dim: int, target: float) -> int:
    """Return the largest per-row floor ``k`` that still lets ``pruned_count(n, target)`` be pruned."""
    n = rows * dim
    return (n - pruned_count(n, target)) // rows


def magnitude_prune(weight: torch.Tensor, target: float, row_floor_k: int = 0) -> torch.Tensor:
    """Build the keep-mask that zeroes exactly ``pruned_count(n, target)`` smallest-|w| entries.

    Args:
        weight: ``[rows, dim]`` table.
        target: share of entries to zero, in ``[0, 1)``.
        row_floor_k: each row keeps at least its ``k`` largest-|w| entries; the pruned entries
            are then the smallest among the unprotected ones.

    Returns:
        Bool ``[rows, dim]`` mask, ``True`` where the entry is kept.

    Raises:
        ValueError: on a target outside ``[0, 1)``, a non-finite weight, a negative ``k``, or a
            ``k`` so large that the exact count cannot be pruned.
    """
    if weight.dim() != 2:
        raise ValueError(f"weight must be a 2-D [rows, dim] table, got shape {tuple(weight.shape)}")
    if not 0.0 <= target < 1.0:
        raise ValueError(f"target sparsity {target} is outside [0, 1)")
    if row_floor_k < 0:
        raise ValueError(f"row_floor_k must be >= 0, got {row_floor_k}")
    rows, dim = weight.shape
    n = rows * dim
    n_prune = pruned_count(n, target)
    max_k = max_row_floor(rows, dim, target)
    if row_floor_k > max_k:
        raise ValueError(
            f"row_floor_k={row_floor_k} is infeasible at target {target} for a {rows}x{dim} "
            f"table: protecting k entries per row leaves too few to prune; "
            f"the max feasible k is {max_k} (floor(dim * (1 - target)) = "
            f"{math.floor(dim * (1 - target))})"
        )
    magnitude = weight.detach().abs().to(torch.float32)
    if not bool(torch.isfinite(magnitude).all()):
        raise ValueError("weight contains non-finite entries; cannot rank them by magnitude")

    if row_floor_k > 0:
        # Protected entries get +inf so that they sort after every unprotected one.
        protected = torch.topk(magnitude, row_floor_k, dim=1).indices
        magnitude = magnitude.clone()
        magnitude.scatter_(1, protected, math.inf)

    order = torch.sort(magnitude.reshape(-1), stable=True).indices
    mask = torch.ones(n, dtype=torch.bool, device=weight.device)
    mask[order[:n_prune]] = False
    return mask.reshape(rows, dim)


def prune_table(full_table: EmbeddingTable, target: float, row_floor_k: int = 0) -> MaskedEmbedding:
    """Prune a trained table at ``target`` sparsity (see :func:`magnitude_prune`)."""
    weight = full_table.weight_matrix().detach()
    mask = magnitude_prune(weight, target, row_floor_k)
    table = MaskedEmbedding.from_weight(weight, mask)
    logger.debug(
        "pruned a %dx%d table at target %.4f with row floor %d: %d entries kept",
        table.num_embeddings,
        table.dim,
        target,
        row_floor_k,
        int(mask.sum()),
    )
    return table


@dataclass
class MagPruneSettings(SettingsBase):
    """Settings of post-hoc magnitude pruning."""

    row_floor_k: int = 0
    """Each row keeps at least its k largest-magnitude entries."""


@dataclass
class MagPruneFtSettings(MagPruneSettings):
    """Magnitude pruning, then fine-tuning of the kept entries with the mask fixed."""

    finetune_epochs: int = 5
    """Training epochs after pruning; the best validation epoch (0 = no fine-tuning) is kept."""
    finetune_lr: float = 1.0e-3
    """Adam learning rate of the fine-tuning epochs."""


def _validate(settings: MagPruneSettings) -> None:
    require(settings.row_floor_k >= 0, "row_floor_k", f"{settings.row_floor_k} must be >= 0")
    if isinstance(settings, MagPruneFtSettings):
        require(
            settings.finetune_epochs >= 1,
            "finetune_epochs",
            f"{settings.finetune_epochs} must be >= 1 (use magprune for no fine-tuning)",
        )
        require(settings.finetune_lr > 0, "finetune_lr", f"{settings.finetune_lr} must be > 0")


def _create(
    num_embeddings: int, dim: int, target: float, settings: object, init_std: float
) -> EmbeddingTable:
    return empty_masked_table(num_embeddings, dim, target, settings)


def _from_trained(
    trained: EmbeddingTable, target: float, settings: MagPruneSettings
) -> EmbeddingTable:
    return prune_table(trained, target, settings.row_floor_k)


METHOD = MethodSpec(
    name="magprune",
    settings_cls=MagPruneSettings,
    kind=POST_HOC,
    create=_create,
    create_final=empty_masked_table,
    from_trained=_from_trained,
    validate=_validate,
    description="zero the smallest-|w| entries of the trained full model, per table",
)

METHOD_FT = MethodSpec(
    name="magprune+ft",
    settings_cls=MagPruneFtSettings,
    kind=POST_HOC,
    create=_create,
    create_final=empty_masked_table,
    from_trained=_from_trained,
    finetune=True,
    validate=_validate,
    description="magprune, then fine-tune the kept entries with the mask fixed",
)
