"""Quotient-remainder (compositional) embeddings over a mixed radix.

Id ``x`` is written in the mixed radix ``(b_1, ..., b_k)`` with ``prod(b_j) >= N``: digit ``j``
is ``(x // (b_1 * ... * b_{j-1})) % b_j``. Partition ``j`` is a table of ``b_j`` rows, and the
embedding of ``x`` combines the ``k`` rows its digits pick: element-wise product (``mult``),
sum (``add``) or concatenation (``concat``, each partition ``d / k`` wide). With ``k = 2``,
``b_1 = D`` and ``b_2 = ceil(N / D)`` this is the quotient-remainder trick: digit 1 is the
remainder ``x mod D`` and digit 2 the quotient ``x div D``.

The target sparsity fixes the radices (:func:`solve_qr`), and the search tunes the combiner.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from lers_ray.embeddings.base import EmbeddingTable, StorageKind, StructureInfeasible
from lers_ray.embeddings.spec import TRAIN, MethodSpec, SettingsBase, require

logger = logging.getLogger(__name__)

COMBINERS = ("mult", "add", "concat")
"""Combiner names, in the order of their artifact codes."""

MAX_PARTITIONS = 4
"""The solver tries 2, 3, then 4 partitions before declaring a target infeasible."""


@dataclass(frozen=True)
class QRStructure:
    """The radices of a mixed-radix QR table and how its partitions are combined."""

    radices: tuple[int, ...]
    """Row count of each partition. Partition 0 takes the least significant digit."""
    combiner: str

    @property
    def partitions(self) -> int:
        """Number of partitions ``k``."""
        return len(self.radices)

    def width(self, dim: int) -> int:
        """Return the width of each partition: ``dim`` (mult, add) or ``dim / k`` (concat)."""
        return dim // self.partitions if self.combiner == "concat" else dim

    def params(self, dim: int) -> int:
        """Return the stored numbers: ``sum(b_j) * width``."""
        return sum(self.radices) * self.width(dim)


def _check_combiner(combiner: str) -> None:
    if combiner not in COMBINERS:
        raise ValueError(f"combiner {combiner!r} is not one of {', '.join(COMBINERS)}")


def _meets_target(params: int, full: int, target: float) -> bool:
    # The same expression as accounting.sparsity, so the solver and the counter agree exactly.
    return 1.0 - params / full >= target


def _radices(num_embeddings: int, base: int, partitions: int) -> tuple[int, ...]:
    """Return ``(D, ..., D, ceil(N / D^(k-1)))`` for ``k = partitions`` and ``D = base``."""
    lower = base ** (partitions - 1)
    return (base,) * (partitions - 1) + (math.ceil(num_embeddings / lower),)


def _max_base(num_embeddings: int, partitions: int) -> int:
    """Return the largest ``D`` worth trying: a little above the ``k``-th root of ``N``.

    ``sum(b_j)`` stops shrinking once ``D`` passes the root, so larger ``D`` never help.
    """
    return max(2, math.ceil(num_embeddings ** (1.0 / partitions)) + 1)


def _smallest_structure(
    num_embeddings: int, dim: int, combiner: str, partitions: int
) -> QRStructure | None:
    """Return the ``partitions``-way structure with the fewest parameters, or ``None`` when
    ``concat`` cannot split ``dim`` into that many equal parts."""
    if combiner == "concat" and dim % partitions != 0:
        return None
    best: QRStructure | None = None
    for base in range(2, _max_base(num_embeddings, partitions) + 1):
        candidate = QRStructure(_radices(num_embeddings, base, partitions), combiner)
        if best is None or candidate.params(dim) < best.params(dim):
            best = candidate
    return best


def best_reachable_sparsity(num_embeddings: int, dim: int, combiner: str) -> float:
    """Return the highest sparsity any 2- to 4-partition structure with ``combiner`` reaches."""
    _check_combiner(combiner)
    full = num_embeddings * dim
    best = -math.inf
    for partitions in range(2, MAX_PARTITIONS + 1):
        structure = _smallest_structure(num_embeddings, dim, combiner, partitions)
        if structure is not None:
            best = max(best, 1.0 - structure.params(dim) / full)
    return best


def solve_qr(num_embeddings: int, dim: int, target: float, combiner: str = "mult") -> QRStructure:
    """Derive the radices that reach ``target`` sparsity with the fewest partitions.

    With ``k = 2`` the smallest ``D >= 2`` whose ``(D + ceil(N / D)) * width`` fits the budget
    ``(1 - target) * N * dim`` is chosen: ``sum(b_j)`` falls as ``D`` grows towards
    ``sqrt(N)``, so the smallest fitting ``D`` is the structure closest to the target from
    above. When no ``D`` fits, ``k = 3`` (``b_1 = b_2 = D``, ``b_3 = ceil(N / D^2)``) and then
    ``k = 4`` are tried the same way. The step between neighbouring ``D`` can exceed 0.01 of
    sparsity at small ``D``, so the result may overshoot the target by more than 0.01.

    Raises:
        ValueError: on an unknown combiner.
        StructureInfeasible: when no structure of up to four partitions reaches the target.
    """
    _check_combiner(combiner)
    full = num_embeddings * dim
    for partitions in range(2, MAX_PARTITIONS + 1):
        if combiner == "concat" and dim % partitions != 0:
            continue
        for base in range(2, _max_base(num_embeddings, partitions) + 1):
            structure = QRStructure(_radices(num_embeddings, base, partitions), combiner)
            if _meets_target(structure.params(dim), full, target):
                return structure
    best = best_reachable_sparsity(num_embeddings, dim, combiner)
    raise StructureInfeasible(
        f"qr: no structure of 2 to {MAX_PARTITIONS} partitions with combiner {combiner!r} "
        f"reaches sparsity {target} on a {num_embeddings}x{dim} table. The best reachable "
        f"sparsity is {best:.4f}. Lower the target or try another combiner."
    )


def check_feasible(num_embeddings: int, dim: int, target: float) -> None:
    """Check that some combiner reaches ``target`` on a ``num_embeddings x dim`` table.

    Raises:
        StructureInfeasible: if no combiner does, with the best reachable sparsity.
    """
    for combiner in COMBINERS:
        try:
            solve_qr(num_embeddings, dim, target, combiner)
        except StructureInfeasible:
            continue
        return
    best = max(best_reachable_sparsity(num_embeddings, dim, c) for c in COMBINERS)
    raise StructureInfeasible(
        f"qr: no combiner reaches sparsity {target} on a {num_embeddings}x{dim} table with up "
        f"to {MAX_PARTITIONS} partitions. The best reachable sparsity is {best:.4f}. "
        "Lower the target."
    )


def digits(ids: torch.Tensor, radices: tuple[int, ...]) -> list[torch.Tensor]:
    """Return the mixed-radix digits of ``ids``, least significant (partition 0) first.

    The last digit is not reduced modulo its radix, because ``prod(radices) >= N`` keeps it
    in range for valid ids.
    """
    result = []
    rest = ids
    for radix in radices[:-1]:
        result.append(torch.remainder(rest, radix))
        rest = torch.div(rest, radix, rounding_mode="floor")
    result.append(rest)
    return result


def combine_rows(rows: list[torch.Tensor], combiner: str) -> torch.Tensor:
    """Combine the looked-up partition rows (each ``S + (width,)``) into ``S + (dim,)``."""
    if combiner == "concat":
        return torch.cat(rows, dim=-1)
    result = rows[0]
    for row in rows[1:]:
        result = result * row if combiner == "mult" else result + row
    return result


def full_table(partitions: list[torch.Tensor], combiner: str, num_embeddings: int) -> torch.Tensor:
    """Return all ``num_embeddings`` rows ``[N, dim]`` from the partition tables.

    Id ``x`` sits at position ``(digit_k, ..., digit_1)`` of the row-major grid
    ``b_k x ... x b_1``, so the whole table is the partitions broadcast against each other
    over that grid, flattened, and cut to ``N`` rows. Broadcasting avoids index tensors, and
    its backward pass is a plain sum over the broadcast axes.
    """
    count = len(partitions)
    radices = [int(p.shape[0]) for p in partitions]
    grid = list(reversed(radices))
    views = []
    for j, part in enumerate(partitions):
        shape = [1] * count + [int(part.shape[1])]
        shape[count - 1 - j] = radices[j]
        views.append(part.reshape(shape))
    if combiner == "concat":
        expanded = [v.expand(*grid, v.shape[-1]) for v in views]
        grid_table = torch.cat(expanded, dim=-1)
    else:
        grid_table = combine_rows(views, combiner)
    return grid_table.reshape(math.prod(radices), -1)[:num_embeddings]


def partition_stds(structure: QRStructure, init_std: float) -> list[float]:
    """Return the initial std of each partition, so embeddings start with std ``init_std``.

    ``mult``: every partition gets ``init_std^(1/k)``. A product of ``k`` independent zero-mean
    entries then has std ``init_std``, and two ids that share a partition row still get
    uncorrelated embeddings.

    ``add`` and ``concat``: partition ``j`` gets a variance share proportional to its rows
    ``b_j``. A sum then has variance ``init_std^2``, and a concatenation has that mean
    variance over its entries. A partition with few rows is shared by many ids, and at full
    scale it would add a component common to those ids that the graph propagation sums up
    by item degree. Untrained scores would then rank items by popularity instead of at
    random.
    """
    radices = structure.radices
    if structure.combiner == "mult":
        return [init_std ** (1.0 / len(radices))] * len(radices)
    scale = len(radices) if structure.combiner == "concat" else 1
    total = sum(radices)
    return [init_std * math.sqrt(scale * radix / total) for radix in radices]


class QREmbedding(EmbeddingTable):
    """A mixed-radix quotient-remainder table (see the module docstring).

    Partition tables are ``[b_j, width]`` parameters, where width is ``dim`` for mult and add
    and ``dim / k`` for concat.

    Partitions are initialised from zero-mean normals (see :func:`partition_stds`).

    Example::

        table = QREmbedding(1000, 64, QRStructure((10, 100), "mult"))
        table(torch.tensor([0, 999])).shape  # torch.Size([2, 64])
    """

    def __init__(
        self, num_embeddings: int, dim: int, structure: QRStructure, init_std: float = 0.1
    ) -> None:
        super().__init__(num_embeddings, dim)
        _check_combiner(structure.combiner)
        if math.prod(structure.radices) < num_embeddings:
            raise ValueError(
                f"radices {list(structure.radices)} cover {math.prod(structure.radices)} ids, "
                f"fewer than num_embeddings={num_embeddings}"
            )
        if structure.combiner == "concat" and dim % structure.partitions != 0:
            raise ValueError(
                f"combiner 'concat' needs dim ({dim}) divisible by the number of partitions "
                f"({structure.partitions})"
            )
        self.qr_structure = structure
        width = structure.width(dim)
        stds = partition_stds(structure, init_std)
        self.partitions = nn.ParameterList(
            [
                nn.Parameter(torch.randn(radix, width) * std)
                for radix, std in zip(structure.radices, stds)
            ]
        )

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        """Look up ``ids`` (int64, any shape ``S``) and return ``S + (dim,)`` vectors."""
        radices = self.qr_structure.radices
        rows = [part[digit] for part, digit in zip(self.partitions, digits(ids, radices))]
        return combine_rows(rows, self.qr_structure.combiner)

    def weight_matrix(self) -> torch.Tensor:
        """Return the whole differentiable ``[num_embeddings, dim]`` table."""
        return full_table(list(self.partitions), self.qr_structure.combiner, self.num_embeddings)

    def inference_tensors(self) -> dict[str, tuple[torch.Tensor, StorageKind]]:
        """Return every partition table, stored densely."""
        return {f"partition_{j}": (p, StorageKind.DENSE) for j, p in enumerate(self.partitions)}

    def export_artifact(self) -> dict[str, torch.Tensor]:
        """Return the partition tables and the metadata needed to rebuild the table.

        Keys: ``partition_<j>`` (float32 ``[b_j, width]``), ``radices`` (int64 ``[k]``),
        ``combiner`` (int64 index into :data:`COMBINERS`) and ``shape`` (int64 ``[N, dim]``).
        """
        artifact = {
            f"partition_{j}": p.detach().cpu().to(torch.float32).clone()
            for j, p in enumerate(self.partitions)
        }
        artifact["radices"] = torch.tensor(self.qr_structure.radices, dtype=torch.int64)
        artifact["combiner"] = torch.tensor(
            COMBINERS.index(self.qr_structure.combiner), dtype=torch.int64
        )
        artifact["shape"] = torch.tensor([self.num_embeddings, self.dim], dtype=torch.int64)
        return artifact

    @classmethod
    def decode_artifact(cls, artifact: dict[str, torch.Tensor]) -> torch.Tensor:
        """Rebuild the dense float32 ``[N, dim]`` table from :meth:`export_artifact`."""
        count = int(artifact["radices"].numel())
        partitions = [artifact[f"partition_{j}"].to(torch.float32) for j in range(count)]
        combiner = COMBINERS[int(artifact["combiner"])]
        num_embeddings = int(artifact["shape"][0])
        with torch.no_grad():
            return full_table(partitions, combiner, num_embeddings)

    def structure(self) -> dict[str, Any]:
        """Return the number of partitions, the radices and the combiner."""
        return {
            "partitions": self.qr_structure.partitions,
            "radices": list(self.qr_structure.radices),
            "combiner": self.qr_structure.combiner,
        }

    def extra_repr(self) -> str:
        return (
            f"{super().extra_repr()}, radices={list(self.qr_structure.radices)}, "
            f"combiner={self.qr_structure.combiner!r}"
        )


@dataclass
class QRSettings(SettingsBase):
    """Settings of quotient-remainder embeddings. The target fixes the radices."""

    combiner: str = "mult"
    """Combiner of the looked-up partition rows: mult (element-wise product), add or concat."""


def _validate(settings: QRSettings) -> None:
    require(
        settings.combiner in COMBINERS,
        "combiner",
        f"{settings.combiner!r} is not one of {', '.join(COMBINERS)}",
    )


def _create(
    num_embeddings: int, dim: int, target: float, settings: QRSettings, init_std: float
) -> EmbeddingTable:
    structure = solve_qr(num_embeddings, dim, target, settings.combiner)
    table = QREmbedding(num_embeddings, dim, structure, init_std=init_std)
    logger.debug(
        "qr table %dx%d at target %.4f: radices %s, combiner %s, %d parameters",
        num_embeddings,
        dim,
        target,
        list(structure.radices),
        structure.combiner,
        structure.params(dim),
    )
    return table


METHOD = MethodSpec(
    name="qr",
    settings_cls=QRSettings,
    kind=TRAIN,
    create=_create,
    check_feasible=check_feasible,
    validate=_validate,
    description="quotient-remainder compositional tables; the target fixes the radices",
)
