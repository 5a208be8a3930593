"""MagPrune: zero the smallest-magnitude entries of a trained table, post hoc.

The pruned count is exact: ``ceil(n * target)`` entries of an ``n``-entry table are zeroed,
ranked by ``|w|`` with a stable sort, so ties never change the count. An optional per-row floor
``k`` protects each row's ``k`` largest entries. Because the count is rounded up, the achieved
sparsity reaches the target and exceeds it by less than ``1 / n``.
"""

from __future__ import annotations

import logging
import math
import warnings

import torch
import torch.nn.functional as F
from torch import nn

from lers_ray.embeddings.base import EmbeddingTable, StorageKind

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


class MagPruneEmbedding(EmbeddingTable):
    """A table with a fixed keep-mask; looked-up vectors have the pruned entries zeroed.

    ``weight`` stays a parameter so a variant can fine-tune the kept entries with the mask fixed.
    """

    mask: torch.Tensor

    def __init__(self, num_embeddings: int, dim: int) -> None:
        super().__init__(num_embeddings, dim)
        self.weight = nn.Parameter(torch.zeros(num_embeddings, dim))
        self.register_buffer("mask", torch.ones(num_embeddings, dim, dtype=torch.bool))

    @classmethod
    def from_full(
        cls, full_table: EmbeddingTable, target: float, row_floor_k: int = 0
    ) -> MagPruneEmbedding:
        """Prune a trained table at ``target`` sparsity (see :func:`magnitude_prune`)."""
        weight = full_table.weight_matrix().detach()
        mask = magnitude_prune(weight, target, row_floor_k)
        table = cls(full_table.num_embeddings, full_table.dim)
        with torch.no_grad():
            table.weight.copy_(weight * mask)
            table.mask.copy_(mask)
        logger.debug(
            "pruned a %dx%d table at target %.4f with row floor %d: %d entries kept",
            table.num_embeddings,
            table.dim,
            target,
            row_floor_k,
            int(mask.sum()),
        )
        return table

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        """Look up ``ids`` (any shape ``S``) and return masked ``S + (dim,)`` vectors."""
        return F.embedding(ids, self.weight) * self.mask[ids]

    def weight_matrix(self) -> torch.Tensor:
        """Return the masked ``[num_embeddings, dim]`` table."""
        return self.weight * self.mask

    def inference_tensors(self) -> dict[str, tuple[torch.Tensor, StorageKind]]:
        """Return the masked weight, counted by its non-zeros."""
        return {"weight": (self.weight_matrix().detach(), StorageKind.SPARSE)}

    def export_artifact(self) -> dict[str, torch.Tensor]:
        """Return the masked table in CSR form with the narrowest index dtypes that fit.

        Keys: ``crow_indices`` ``[rows + 1]``, ``col_indices`` ``[nnz]``, ``values`` ``[nnz]``
        (float32) and ``shape`` (int64 ``[rows, dim]``).
        """
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
            csr = self.weight_matrix().detach().cpu().to_sparse_csr()
        crow = csr.crow_indices()
        col = csr.col_indices()
        return {
            "crow_indices": crow.to(narrowest_index_dtype(int(crow[-1]))),
            "col_indices": col.to(narrowest_index_dtype(self.dim - 1)),
            "values": csr.values().to(torch.float32).clone(),
            "shape": torch.tensor([self.num_embeddings, self.dim], dtype=torch.int64),
        }


def narrowest_index_dtype(max_value: int) -> torch.dtype:
    """Return the smallest signed integer dtype that can store ``0..max_value``."""
    for dtype in (torch.int8, torch.int16, torch.int32):
        if max_value <= torch.iinfo(dtype).max:
            return dtype
    return torch.int64
