"""CERP: compositional embeddings with soft-threshold pruning, searched then retrained.

Row ``x`` of an ``N``-row table is ``P[x mod B] + Q[x div c]`` with ``c = ceil(N / B)``: ``P``
has ``B`` rows (the buckets) and ``Q`` has the ``ceil(N / c)`` rows that quotients reach. Both
are pruned with element-wise soft thresholds as in PEP (:func:`soft_threshold`), and a
regulariser ``-gamma_t * ||tanh(100 e)||^2`` pushes the looked-up embeddings ``e`` away from zero
during the search.

The bucket count comes from the target (:func:`solve_cerp`): the unpruned ``P`` and ``Q`` hold
``overparam`` times the entries the target allows, so the search prunes about
``1 - 1 / overparam`` of them. :meth:`CERPEmbedding.keep_masks` then keeps exactly
``N * d - ceil(N * d * target)`` entries across ``P`` and ``Q``, and the retraining stage trains
a :class:`FixedCERPEmbedding` from the initial ``P`` and ``Q`` with those masks fixed.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from lers_ray.embeddings.base import (
    EmbeddingTable,
    SoftThresholdTable,
    StorageKind,
    StructureInfeasible,
)
from lers_ray.embeddings.masked import MaskedEmbedding, csr_to_dense
from lers_ray.embeddings.pep import (
    check_mask,
    keep_largest_margins,
    kept_count,
    search,
    soft_threshold,
    threshold_margin,
    validate_search_settings,
)
from lers_ray.embeddings.spec import TWO_STAGE, MethodSpec, SettingsBase, require

logger = logging.getLogger(__name__)

TANH_SCALE = 100.0
"""Slope inside the regulariser's ``tanh``: entries beyond about 0.03 in magnitude saturate."""


def quotient_divisor(num_embeddings: int, buckets: int) -> int:
    """Return ``c = ceil(N / B)``, the number of ids that share one ``Q`` row."""
    return -(-num_embeddings // buckets)


def quotient_rows(num_embeddings: int, buckets: int) -> int:
    """Return the number of ``Q`` rows ids ``0 .. N - 1`` reach: ``ceil(N / ceil(N / B))``.

    It is at most ``B``. Rows beyond it would never be looked up, so ``Q`` does not have them.
    """
    return quotient_divisor(num_embeddings, quotient_divisor(num_embeddings, buckets))


def check_cerp_feasible(num_embeddings: int, dim: int, target: float) -> None:
    """Check that a CERP table of ``num_embeddings`` rows can be pruned to ``target``.

    Any bucket count can be pruned down to the target's budget, and ``B = N`` gives ``P`` and
    ``Q`` ``2 * N * d`` entries, more than any budget. The target is infeasible only when its
    budget ``N * d - ceil(N * d * target)`` is zero, which leaves every embedding zero.

    Raises:
        ValueError: on a target outside ``[0, 1)``.
        StructureInfeasible: when the target keeps no entry at all.
    """
    if not 0.0 <= target < 1.0:
        raise ValueError(f"target sparsity {target} is outside [0, 1)")
    full = num_embeddings * dim
    if kept_count(full, target) < 1:
        raise StructureInfeasible(
            f"CERP: a {num_embeddings}x{dim} table at target {target} keeps no entry; "
            f"the highest sparsity that keeps one entry is 1 - 1/{full} = {1.0 - 1.0 / full:.8f}"
        )


def solve_cerp(num_embeddings: int, dim: int, target: float, overparam: float) -> int:
    """Return the bucket count ``B`` whose unpruned ``P`` and ``Q`` hold ``overparam`` budgets.

    The budget is ``k = N * d - ceil(N * d * target)`` entries. ``B`` is the smallest value in
    ``[1, N]`` with ``(B + quotient_rows(N, B)) * d >= overparam * k``, or ``N`` when even that
    is too small. With ``N / B`` a whole number, ``Q`` has ``B`` rows as well, so this is
    ``2 * B * d = overparam * k``. Because ``overparam >= 1``, ``P`` and ``Q`` always hold at
    least ``k`` entries, so keeping exactly ``k`` reaches the target with less than one entry's
    share to spare.

    NOTE: ``quotient_rows`` jumps where ``ceil(N / B)`` changes, so for ``B`` near ``N / 2`` or
    ``N / 3`` the solved ``P`` and ``Q`` can hold noticeably more than ``overparam`` budgets
    (for ``N = 1000``, ``d = 8``, target 0.8 and ``overparam`` 3 they hold 3.3). The search then
    prunes a little more.

    Raises:
        ValueError: on ``overparam < 1`` or a target outside ``[0, 1)``.
        StructureInfeasible: see :func:`check_cerp_feasible`.
    """
    if not (math.isfinite(overparam) and overparam >= 1.0):
        raise ValueError(f"overparam {overparam} must be a finite number >= 1")
    check_cerp_feasible(num_embeddings, dim, target)
    needed_rows = overparam * kept_count(num_embeddings * dim, target) / dim

    # B + quotient_rows(N, B) strictly increases with B, so bisect for the smallest B that fits.
    low, high = 1, num_embeddings
    while low < high:
        middle = (low + high) // 2
        if middle + quotient_rows(num_embeddings, middle) >= needed_rows:
            high = middle
        else:
            low = middle + 1
    return low


def export_cerp(
    num_embeddings: int, p_table: torch.Tensor, q_table: torch.Tensor
) -> dict[str, torch.Tensor]:
    """Return the artifact of a CERP table from its pruned ``P`` ``[B, d]`` and ``Q``.

    Keys: ``p_``- and ``q_``-prefixed CSR arrays as in :meth:`MaskedEmbedding.export_artifact`
    (narrowest index dtypes), ``num_embeddings`` (int64 ``[1]``) and ``buckets`` (int64 ``[1]``).
    """
    artifact: dict[str, torch.Tensor] = {
        "num_embeddings": torch.tensor([num_embeddings], dtype=torch.int64),
        "buckets": torch.tensor([p_table.shape[0]], dtype=torch.int64),
    }
    for prefix, table in (("p_", p_table), ("q_", q_table)):
        table = table.detach()
        csr = MaskedEmbedding.from_weight(table, table != 0).export_artifact()
        artifact.update({prefix + key: value for key, value in csr.items()})
    return artifact


def decode_cerp(artifact: dict[str, torch.Tensor]) -> torch.Tensor:
    """Rebuild the dense float32 ``[N, d]`` table from :func:`export_cerp`'s artifact."""
    num_embeddings = int(artifact["num_embeddings"][0])
    buckets = int(artifact["buckets"][0])
    tables = []
    for prefix in ("p_", "q_"):
        keys = ("crow_indices", "col_indices", "values", "shape")
        tables.append(csr_to_dense({key: artifact[prefix + key] for key in keys}))
    ids = torch.arange(num_embeddings)
    p_table, q_table = tables
    return p_table[ids % buckets] + q_table[ids // quotient_divisor(num_embeddings, buckets)]


class _CERPIndex(EmbeddingTable):
    """Index arithmetic of both CERP tables: row ``x`` reads ``P[x mod B]`` and ``Q[x div c]``."""

    p_index: torch.Tensor
    q_index: torch.Tensor

    def __init__(self, num_embeddings: int, dim: int, buckets: int) -> None:
        super().__init__(num_embeddings, dim)
        if not 1 <= buckets <= num_embeddings:
            raise ValueError(f"buckets ({buckets}) must be in [1, num_embeddings={num_embeddings}]")
        self.buckets = int(buckets)
        self.divisor = quotient_divisor(num_embeddings, buckets)
        self.q_rows = quotient_rows(num_embeddings, buckets)
        ids = torch.arange(num_embeddings)
        # Precomputed for weight_matrix, which LightGCN calls on every batch.
        self.register_buffer("p_index", ids % self.buckets, persistent=False)
        self.register_buffer("q_index", ids // self.divisor, persistent=False)

    def split_ids(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return the ``P`` and ``Q`` row ids of ``ids`` (non-negative int64, any shape)."""
        return ids % self.buckets, torch.div(ids, self.divisor, rounding_mode="floor")

    def structure(self) -> dict[str, Any]:
        """Return the bucket count ``B``, the ``Q`` rows and ids per ``Q`` row."""
        return {"buckets": self.buckets, "q_rows": self.q_rows, "ids_per_q_row": self.divisor}

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, buckets={self.buckets}, q_rows={self.q_rows}"


class CERPEmbedding(_CERPIndex, SoftThresholdTable):
    """The CERP search table: ``P`` ``[B, d]``, ``Q`` ``[q_rows, d]`` and their thresholds.

    Row ``x`` is ``soft_threshold(P, s_P)[x mod B] + soft_threshold(Q, s_Q)[x div c]`` with
    element-wise thresholds starting at ``init_threshold``. ``P`` and ``Q`` are drawn from
    ``N(0, init_std^2 / 2)`` so that their sum starts with the variance of a full table.

    Example:
        >>> table = CERPEmbedding(1000, 8, buckets=100)
        >>> table(torch.tensor([5, 999])).shape
        torch.Size([2, 8])
    """

    def __init__(
        self,
        num_embeddings: int,
        dim: int,
        buckets: int,
        init_threshold: float = -8.0,
        threshold_weight_decay: float = 1e-4,
        gamma_init: float = 1e-4,
        gamma_decay: float = 0.5,
        init_std: float = 0.1,
        overparam: float | None = None,
    ) -> None:
        super().__init__(num_embeddings, dim, buckets)
        self.threshold_weight_decay = float(threshold_weight_decay)
        self.gamma_init = float(gamma_init)
        self.gamma_decay = float(gamma_decay)
        self.overparam = overparam
        self.epoch = 1
        std = init_std / math.sqrt(2.0)
        self.p_weight = nn.Parameter(torch.randn(self.buckets, dim) * std)
        self.q_weight = nn.Parameter(torch.randn(self.q_rows, dim) * std)
        self.p_threshold = nn.Parameter(torch.full((self.buckets, dim), float(init_threshold)))
        self.q_threshold = nn.Parameter(torch.full((self.q_rows, dim), float(init_threshold)))

    def pruned_tables(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Return the soft-thresholded ``P`` ``[B, d]`` and ``Q`` ``[q_rows, d]``."""
        return (
            soft_threshold(self.p_weight, self.p_threshold),
            soft_threshold(self.q_weight, self.q_threshold),
        )

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        """Look up ``ids`` (any shape ``S``) and return ``S + (dim,)`` vectors ``P + Q``."""
        p_ids, q_ids = self.split_ids(ids)
        p_part = soft_threshold(
            F.embedding(p_ids, self.p_weight), F.embedding(p_ids, self.p_threshold)
        )
        q_part = soft_threshold(
            F.embedding(q_ids, self.q_weight), F.embedding(q_ids, self.q_threshold)
        )
        return p_part + q_part

    def weight_matrix(self) -> torch.Tensor:
        """Return the ``[num_embeddings, dim]`` table, differentiable in weights and thresholds."""
        p_table, q_table = self.pruned_tables()
        return F.embedding(self.p_index, p_table) + F.embedding(self.q_index, q_table)

    def inference_tensors(self) -> dict[str, tuple[torch.Tensor, StorageKind]]:
        """Return the pruned ``P`` and ``Q``, counted by their non-zeros."""
        p_table, q_table = self.pruned_tables()
        return {
            "P": (p_table.detach(), StorageKind.SPARSE),
            "Q": (q_table.detach(), StorageKind.SPARSE),
        }

    def export_artifact(self) -> dict[str, torch.Tensor]:
        """Return the pruned ``P`` and ``Q`` in CSR form (see :func:`export_cerp`)."""
        p_table, q_table = self.pruned_tables()
        return export_cerp(self.num_embeddings, p_table, q_table)

    @classmethod
    def decode_artifact(cls, artifact: dict[str, torch.Tensor]) -> torch.Tensor:
        """Rebuild the dense table (see :func:`decode_cerp`)."""
        return decode_cerp(artifact)

    def structure(self) -> dict[str, Any]:
        """Return the bucket layout and, when known, the ``overparam`` it was solved with."""
        info = super().structure()
        if self.overparam is not None:
            info["overparam"] = float(self.overparam)
        return info

    def gamma(self) -> float:
        """Return the regulariser weight ``gamma_init * gamma_decay ** (epoch - 1)``."""
        return self.gamma_init * self.gamma_decay ** (self.epoch - 1)

    def start_epoch(self, epoch: int) -> None:
        """Set the epoch (1-based) that :meth:`gamma` decays with."""
        if epoch < 1:
            raise ValueError(f"epoch must be >= 1, got {epoch}")
        self.epoch = int(epoch)

    def penalty(self, ids: torch.Tensor) -> torch.Tensor | None:
        """Return ``-gamma_t * sum ||tanh(100 e)||^2 / ids.numel()`` over the looked-up ``e``.

        Dividing by the number of looked-up rows makes the term a mean over embeddings, in
        ``[-gamma_t * d, 0]``, whatever the batch size or the number of negatives. It is
        negative, so minimising the loss pushes entries away from zero. Returns ``None`` when
        ``gamma_t`` is zero.
        """
        gamma = self.gamma()
        if gamma == 0.0 or ids.numel() == 0:
            return None
        saturated = torch.tanh(TANH_SCALE * self(ids))
        return -gamma * saturated.pow(2).sum() / ids.numel()

    def optimizer_groups(self, lr: float) -> list[dict[str, Any]]:
        """Put both thresholds in their own Adam group with ``threshold_weight_decay``."""
        return [
            {
                "params": [self.p_threshold, self.q_threshold],
                "lr": lr,
                "weight_decay": self.threshold_weight_decay,
            }
        ]

    @torch.no_grad()
    def search_sparsity(self) -> float:
        """Return ``1 - (nnz(P) + nnz(Q)) / (N * d)``.

        NOTE: before pruning, ``P`` and ``Q`` can hold more than ``N * d`` entries (``B`` near
        ``N``), so the value can be negative early in the search.
        """
        stored = sum(int(torch.count_nonzero(table).item()) for table in self.pruned_tables())
        return 1.0 - stored / (self.num_embeddings * self.dim)

    def keep_masks(self, target: float) -> dict[str, torch.Tensor]:
        """Keep the ``N * d - ceil(N * d * target)`` entries of ``P``, ``Q`` with the top margins.

        Entries of both tables are ranked jointly by ``|w| - sigmoid(s)``. If ``P`` and ``Q``
        hold fewer entries than that (a bucket count set by hand below the solved one), all
        of them are kept and the sparsity ends above the target.

        Returns:
            ``{"P": mask [B, d], "Q": mask [q_rows, d]}`` for :meth:`fixed`.
        """
        margins = [
            threshold_margin(self.p_weight, self.p_threshold),
            threshold_margin(self.q_weight, self.q_threshold),
        ]
        available = sum(margin.numel() for margin in margins)
        keep = kept_count(self.num_embeddings * self.dim, target)
        if keep > available:
            logger.warning(
                "CERP table with %d buckets has %d entries, fewer than the %d that target "
                "%.4f allows, so all of them are kept",
                self.buckets,
                available,
                keep,
                target,
            )
            keep = available
        p_mask, q_mask = keep_largest_margins(margins, keep)
        return {"P": p_mask, "Q": q_mask}

    def fixed(self, masks: dict[str, torch.Tensor]) -> EmbeddingTable:
        """Return a :class:`FixedCERPEmbedding` of the current raw ``P``, ``Q`` and ``masks``."""
        return FixedCERPEmbedding.from_weights(
            self.num_embeddings,
            self.p_weight.detach(),
            self.q_weight.detach(),
            check_mask(masks, "P", (self.buckets, self.dim)),
            check_mask(masks, "Q", (self.q_rows, self.dim)),
        )


class FixedCERPEmbedding(_CERPIndex):
    """A CERP table with fixed keep-masks on ``P`` and ``Q``: the retraining stage's table.

    Row ``x`` is ``(P * mask_P)[x mod B] + (Q * mask_Q)[x div c]``. Masked entries get zero
    gradient and are stored as zero, so they stay zero under training. The search stage's
    regulariser is not applied here.
    """

    p_mask: torch.Tensor
    q_mask: torch.Tensor

    def __init__(self, num_embeddings: int, dim: int, buckets: int) -> None:
        super().__init__(num_embeddings, dim, buckets)
        self.p_weight = nn.Parameter(torch.zeros(self.buckets, dim))
        self.q_weight = nn.Parameter(torch.zeros(self.q_rows, dim))
        self.register_buffer("p_mask", torch.ones(self.buckets, dim, dtype=torch.bool))
        self.register_buffer("q_mask", torch.ones(self.q_rows, dim, dtype=torch.bool))

    @classmethod
    def from_weights(
        cls,
        num_embeddings: int,
        p_weight: torch.Tensor,
        q_weight: torch.Tensor,
        p_mask: torch.Tensor,
        q_mask: torch.Tensor,
    ) -> FixedCERPEmbedding:
        """Return a table holding ``P * p_mask`` and ``Q * q_mask`` with the masks fixed.

        Raises:
            ValueError: if ``Q`` does not have the rows ``B = P.shape[0]`` implies.
        """
        buckets, dim = p_weight.shape
        table = cls(num_embeddings, dim, buckets)
        if tuple(q_weight.shape) != (table.q_rows, dim):
            raise ValueError(
                f"Q must have shape {(table.q_rows, dim)} for {num_embeddings} rows and "
                f"{buckets} buckets, got {tuple(q_weight.shape)}"
            )
        with torch.no_grad():
            table.p_weight.copy_(p_weight.detach() * p_mask)
            table.q_weight.copy_(q_weight.detach() * q_mask)
            table.p_mask.copy_(p_mask)
            table.q_mask.copy_(q_mask)
        return table

    def masked_tables(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``P * p_mask`` ``[B, d]`` and ``Q * q_mask`` ``[q_rows, d]``."""
        return self.p_weight * self.p_mask, self.q_weight * self.q_mask

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        """Look up ``ids`` (any shape ``S``) and return ``S + (dim,)`` vectors ``P + Q``."""
        p_ids, q_ids = self.split_ids(ids)
        p_part = F.embedding(p_ids, self.p_weight) * self.p_mask[p_ids]
        q_part = F.embedding(q_ids, self.q_weight) * self.q_mask[q_ids]
        return p_part + q_part

    def weight_matrix(self) -> torch.Tensor:
        """Return the ``[num_embeddings, dim]`` table."""
        p_table, q_table = self.masked_tables()
        return F.embedding(self.p_index, p_table) + F.embedding(self.q_index, q_table)

    def inference_tensors(self) -> dict[str, tuple[torch.Tensor, StorageKind]]:
        """Return the masked ``P`` and ``Q``, counted by their non-zeros."""
        p_table, q_table = self.masked_tables()
        return {
            "P": (p_table.detach(), StorageKind.SPARSE),
            "Q": (q_table.detach(), StorageKind.SPARSE),
        }

    def export_artifact(self) -> dict[str, torch.Tensor]:
        """Return the masked ``P`` and ``Q`` in CSR form (see :func:`export_cerp`)."""
        p_table, q_table = self.masked_tables()
        return export_cerp(self.num_embeddings, p_table, q_table)

    @classmethod
    def decode_artifact(cls, artifact: dict[str, torch.Tensor]) -> torch.Tensor:
        """Rebuild the dense table (see :func:`decode_cerp`)."""
        return decode_cerp(artifact)


@dataclass
class CERPSettings(SettingsBase):
    """Settings of CERP's search stage. The bucket count is solved from the target."""

    overparam: float = 2.0
    """Unpruned ``P`` and ``Q`` hold this many times the target's entry budget (>= 1)."""
    init_threshold: float = -8.0
    """Initial threshold parameter ``s`` of every entry. The threshold is ``sigmoid(s)``."""
    threshold_weight_decay: float = 1e-4
    """Adam weight decay on the thresholds, which pulls them up towards ``sigmoid(0) = 0.5``."""
    gamma_init: float = 1e-4
    """Weight of the ``-||tanh(100 e)||^2`` regulariser in the first search epoch."""
    gamma_decay: float = 0.5
    """Factor the regulariser weight is multiplied by each epoch."""
    search_epochs: int = 50
    """Maximum search epochs. If the target is not reached by then, the masks are fixed anyway."""


def _validate(settings: CERPSettings) -> None:
    require(
        math.isfinite(settings.overparam) and settings.overparam >= 1.0,
        "overparam",
        f"{settings.overparam} must be a finite number >= 1, or P and Q cannot hold the "
        "target's entries",
    )
    require(
        math.isfinite(settings.gamma_init) and settings.gamma_init >= 0,
        "gamma_init",
        f"{settings.gamma_init} must be a finite number >= 0 (0 turns the regulariser off)",
    )
    require(
        0.0 < settings.gamma_decay <= 1.0,
        "gamma_decay",
        f"{settings.gamma_decay} must be in (0, 1]",
    )
    validate_search_settings(settings)


def _create(
    num_embeddings: int, dim: int, target: float, settings: CERPSettings, init_std: float
) -> EmbeddingTable:
    buckets = solve_cerp(num_embeddings, dim, target, settings.overparam)
    return CERPEmbedding(
        num_embeddings,
        dim,
        buckets,
        init_threshold=settings.init_threshold,
        threshold_weight_decay=settings.threshold_weight_decay,
        gamma_init=settings.gamma_init,
        gamma_decay=settings.gamma_decay,
        init_std=init_std,
        overparam=settings.overparam,
    )


def _empty(num_embeddings: int, dim: int, target: float, settings: CERPSettings) -> EmbeddingTable:
    buckets = solve_cerp(num_embeddings, dim, target, settings.overparam)
    return FixedCERPEmbedding(num_embeddings, dim, buckets)


METHOD = MethodSpec(
    name="cerp",
    settings_cls=CERPSettings,
    kind=TWO_STAGE,
    create=_create,
    create_final=_empty,
    search=search,
    check_feasible=check_cerp_feasible,
    validate=_validate,
    description="two bucket tables P and Q (embedding = P[x mod B] + Q[x div ceil(N/B)]) "
    "pruned by soft thresholds to the target; then retrained from the initial weights",
)
