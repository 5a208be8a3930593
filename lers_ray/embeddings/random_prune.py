"""Random pruning: the control for MagPrune, zeroing randomly chosen entries of a trained table.

The pruned count and the optional per-row floor are MagPrune's (see
:mod:`lers_ray.embeddings.magprune`): ``ceil(n * target)`` entries of an ``n``-entry table are
zeroed, and a floor ``k`` protects each row's ``k`` largest-|w| entries. Only the choice among
the unprotected entries differs: it is uniformly random, drawn from a ``torch.Generator``
seeded with ``RandomPruneSettings.seed``, so a run is reproducible.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

from lers_ray.embeddings.base import EmbeddingTable
from lers_ray.embeddings.magprune import magnitude_prune, max_row_floor
from lers_ray.embeddings.masked import MaskedEmbedding, empty_masked_table
from lers_ray.embeddings.spec import POST_HOC, MethodSpec, SettingsBase, require

logger = logging.getLogger(__name__)

_PROTECTED_SCORE = 2.0
"""Rank score of a row-floor entry: above every random score, which lies in ``[0, 1)``."""


def random_prune(
    weight: torch.Tensor, target: float, row_floor_k: int = 0, seed: int = 0
) -> torch.Tensor:
    """Build the keep-mask that zeroes exactly ``pruned_count(n, target)`` random entries.

    Each entry gets a random score in ``[0, 1)``, and the row-floor entries (each row's ``k``
    largest ``|w|``) get a score above all of them. :func:`magprune.magnitude_prune` then
    zeroes the lowest scores, so the count, the floor check and their error messages are
    MagPrune's own.

    Args:
        weight: ``[rows, dim]`` table.
        target: share of entries to zero, in ``[0, 1)``.
        row_floor_k: each row keeps at least its ``k`` largest-|w| entries.
        seed: seed of the generator that draws the scores; the same seed and shape give the
            same mask.

    Returns:
        Bool ``[rows, dim]`` mask, ``True`` where the entry is kept, on ``weight``'s device.

    Raises:
        ValueError: on a weight that is not 2-D or has non-finite entries, a target outside
            ``[0, 1)``, a negative ``k``, or a ``k`` so large that the exact count cannot be
            pruned.
    """
    if weight.dim() != 2:
        raise ValueError(f"weight must be a 2-D [rows, dim] table, got shape {tuple(weight.shape)}")
    magnitude = weight.detach().abs().to(torch.float32).cpu()
    if not bool(torch.isfinite(magnitude).all()):
        raise ValueError("weight contains non-finite entries; cannot rank them by magnitude")

    generator = torch.Generator().manual_seed(seed)
    # NOTE: float32 scores can tie in tables of millions of entries. Among tied entries at
    # the cut-off, the stable sort prunes the one with the lower flat index.
    scores = torch.rand(magnitude.shape, generator=generator)
    rows, dim = magnitude.shape
    target_valid = 0.0 <= target < 1.0
    if target_valid and 0 < row_floor_k <= max_row_floor(rows, dim, target):
        protected = torch.topk(magnitude, row_floor_k, dim=1).indices
        scores.scatter_(1, protected, _PROTECTED_SCORE)
    # An invalid target or k reaches magnitude_prune unchanged, which raises for it.
    return magnitude_prune(scores, target, row_floor_k).to(weight.device)


def random_prune_table(
    full_table: EmbeddingTable, target: float, row_floor_k: int = 0, seed: int = 0
) -> MaskedEmbedding:
    """Prune a trained table at random to ``target`` sparsity (see :func:`random_prune`)."""
    weight = full_table.weight_matrix().detach()
    mask = random_prune(weight, target, row_floor_k, seed)
    table = MaskedEmbedding.from_weight(weight, mask)
    logger.debug(
        "randomly pruned a %dx%d table at target %.4f with row floor %d and seed %d: "
        "%d entries kept",
        table.num_embeddings,
        table.dim,
        target,
        row_floor_k,
        seed,
        int(mask.sum()),
    )
    return table


@dataclass
class RandomPruneSettings(SettingsBase):
    """Settings of post-hoc random pruning."""

    row_floor_k: int = 0
    """Each row keeps at least its k largest-magnitude entries."""
    seed: int = 0
    """Seed of the generator that chooses the pruned entries."""


def _validate(settings: RandomPruneSettings) -> None:
    require(settings.row_floor_k >= 0, "row_floor_k", f"{settings.row_floor_k} must be >= 0")
    require(settings.seed >= 0, "seed", f"{settings.seed} must be >= 0")


def _create(
    num_embeddings: int, dim: int, target: float, settings: object, init_std: float
) -> EmbeddingTable:
    return empty_masked_table(num_embeddings, dim, target, settings)


def _from_trained(
    trained: EmbeddingTable, target: float, settings: RandomPruneSettings
) -> EmbeddingTable:
    return random_prune_table(trained, target, settings.row_floor_k, settings.seed)


METHOD = MethodSpec(
    name="random_prune",
    settings_cls=RandomPruneSettings,
    kind=POST_HOC,
    create=_create,
    create_final=empty_masked_table,
    from_trained=_from_trained,
    validate=_validate,
    description="zero randomly chosen entries of the trained full model, per table (a control)",
)
