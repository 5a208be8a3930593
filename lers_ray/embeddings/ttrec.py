"""TT-Rec: tensor-train embedding tables in pure PyTorch, so they run on CPU and edge devices.

The ``[N, d]`` table is viewed as a ``prod(p) x prod(q)`` matrix with ``prod(p) >= N`` and
``prod(q) = d``, and stored as ``k`` cores ``G_i`` of shape ``[r_{i-1}, p_i, q_i, r_i]`` with
``r_0 = r_k = 1``. Row ``x`` has mixed-radix digits ``(i_1, ..., i_k)`` over ``p``, most
significant first, and column ``c`` digits ``(j_1, ..., j_k)`` over ``q``. The entry is the
product of the core slices ``G_1[:, i_1, j_1, :] @ ... @ G_k[:, i_k, j_k, :]``.

The target sparsity fixes the internal ranks (:func:`solve_ttrec`), and the search tunes the
number of cores.
"""

from __future__ import annotations

import itertools
import logging
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from lers_ray.embeddings.base import EmbeddingTable, StorageKind, StructureInfeasible
from lers_ray.embeddings.spec import TRAIN, MethodSpec, SettingsBase, require

logger = logging.getLogger(__name__)

NUM_CORES = (3, 4)
"""Core counts the method supports."""

TOLERANCE = 0.01
"""The solver prefers structures whose sparsity exceeds the target by at most this much."""


@dataclass(frozen=True)
class TTStructure:
    """Row and column factorisations and internal TT ranks of a TT-Rec table."""

    p_shapes: tuple[int, ...]
    """Row factors, ``prod(p_shapes) >= num_embeddings``."""
    q_shapes: tuple[int, ...]
    """Column factors, ``prod(q_shapes) == dim``."""
    ranks: tuple[int, ...]
    """The ``k - 1`` internal ranks ``r_1 .. r_{k-1}``. The outer ranks are always 1."""

    @property
    def full_ranks(self) -> tuple[int, ...]:
        """Return ``(1, r_1, ..., r_{k-1}, 1)``."""
        return (1, *self.ranks, 1)

    def core_shapes(self) -> list[tuple[int, int, int, int]]:
        """Return the shape ``[r_{i-1}, p_i, q_i, r_i]`` of each core."""
        r = self.full_ranks
        return [
            (r[i], p, q, r[i + 1]) for i, (p, q) in enumerate(zip(self.p_shapes, self.q_shapes))
        ]

    def params(self) -> int:
        """Return the stored numbers: the sum of core sizes."""
        return sum(math.prod(shape) for shape in self.core_shapes())


def _meets_target(params: int, full: int, target: float) -> bool:
    # The same expression as accounting.sparsity, so the solver and the counter agree exactly.
    return 1.0 - params / full >= target


def row_factors(num_embeddings: int, num_cores: int) -> tuple[int, ...]:
    """Return ``num_cores`` row factors, ascending, that differ by at most one and whose
    product is the smallest such product ``>= num_embeddings``.

    Starting from the floor of the ``k``-th root, the smallest factor is raised until the
    product covers ``num_embeddings``.
    """
    if num_embeddings < 1 or num_cores < 1:
        raise ValueError(
            f"num_embeddings ({num_embeddings}) and num_cores ({num_cores}) must be positive"
        )
    base = max(1, math.floor(num_embeddings ** (1.0 / num_cores)))
    # A floating-point root can land on either side of an exact integer root
    # (64 ** (1/3) is 3.9999999999999996), so the floor is corrected both ways.
    while base > 1 and base**num_cores > num_embeddings:
        base -= 1
    while (base + 1) ** num_cores <= num_embeddings:
        base += 1
    factors = [base] * num_cores
    index = 0
    while math.prod(factors) < num_embeddings:
        factors[index % num_cores] += 1
        index += 1
    return tuple(sorted(factors))


def _factorisations(value: int, count: int) -> Iterator[tuple[int, ...]]:
    """Yield every non-decreasing tuple of ``count`` integers ``>= 1`` with product ``value``."""
    if count == 1:
        yield (value,)
        return
    for first in range(1, value + 1):
        if first**count > value:
            break
        if value % first == 0:
            for rest in _factorisations(value // first, count - 1):
                if rest[0] >= first:
                    yield (first, *rest)


def column_factors(dim: int, num_cores: int) -> tuple[int, ...]:
    """Return a balanced factorisation of ``dim`` into ``num_cores`` integers ``>= 1``.

    The factorisation with the smallest maximum factor wins, then the one with the largest
    minimum factor. The largest factors go to the outer cores, so the middle cores, whose
    size grows with the product of two ranks, stay small: ``64`` gives ``(4, 4, 4)`` for
    three cores and ``(4, 2, 2, 4)`` for four.

    Raises:
        ValueError: if ``dim`` or ``num_cores`` is not positive.
    """
    if dim < 1 or num_cores < 1:
        raise ValueError(
            f"cannot factor dim ({dim}) into num_cores ({num_cores}) integers >= 1: "
            "both must be positive"
        )
    best = min(_factorisations(dim, num_cores), key=lambda f: (max(f), -min(f)))
    largest_first = sorted(best, reverse=True)
    arranged = [0] * num_cores
    left, right = 0, num_cores - 1
    for i, factor in enumerate(largest_first):
        if i % 2 == 0:
            arranged[left] = factor
            left += 1
        else:
            arranged[right] = factor
            right -= 1
    return tuple(arranged)


def rank_caps(p_shapes: tuple[int, ...], q_shapes: tuple[int, ...]) -> tuple[int, ...]:
    """Return the full-rank bound of each internal rank: ``min(prod left p*q, prod right p*q)``.

    A rank above this bound adds parameters without making the table more expressive.
    """
    sizes = [p * q for p, q in zip(p_shapes, q_shapes)]
    return tuple(
        min(math.prod(sizes[: i + 1]), math.prod(sizes[i + 1 :])) for i in range(len(sizes) - 1)
    )


def _candidates(
    p_shapes: tuple[int, ...],
    q_shapes: tuple[int, ...],
    full: int,
    target: float,
) -> Iterator[TTStructure]:
    """Yield, for every value of the other ranks, the largest middle rank that keeps
    sparsity ``>= target``.

    Parameters are linear in the middle rank, so its largest fitting value has a closed form,
    which is then confirmed with the exact sparsity. Other values of the middle rank are never
    better: they have fewer parameters and a smaller or equal minimum rank.
    """
    caps = rank_caps(p_shapes, q_shapes)
    count = len(caps)
    middle = (count - 1) // 2
    others = [i for i in range(count) if i != middle]
    budget = (1.0 - target) * full
    for values in itertools.product(*(range(1, caps[i] + 1) for i in others)):
        ranks = [1] * count
        for i, value in zip(others, values):
            ranks[i] = value
        ranks[middle] = 0
        base = TTStructure(p_shapes, q_shapes, tuple(ranks)).params()
        ranks[middle] = 1
        slope = TTStructure(p_shapes, q_shapes, tuple(ranks)).params() - base
        if not _meets_target(base + slope, full, target):
            continue
        # The closed form can be one off after float rounding; the exact check settles it.
        high = min(caps[middle], max(1, math.floor((budget - base) / slope)))
        while high > 1 and not _meets_target(base + slope * high, full, target):
            high -= 1
        while high < caps[middle] and _meets_target(base + slope * (high + 1), full, target):
            high += 1
        ranks[middle] = high
        yield TTStructure(p_shapes, q_shapes, tuple(ranks))


def solve_ttrec(num_embeddings: int, dim: int, target: float, num_cores: int = 3) -> TTStructure:
    """Derive the TT shapes and internal ranks that reach ``target`` sparsity.

    Row factors come from :func:`row_factors` and column factors from :func:`column_factors`.
    Ranks range up to their full-rank bounds (:func:`rank_caps`). Among rank choices with
    sparsity in ``[target, target + TOLERANCE]``, the one with the largest minimum rank wins,
    because the smallest rank limits what the table can express, then the one with the most
    parameters. When no choice is that close, the one with the most parameters that still
    reaches the target (the nearest above) wins.

    Raises:
        ValueError: on a ``num_cores`` other than 3 or 4, or a non-positive size.
        StructureInfeasible: when even all ranks equal to 1 exceed the budget.
    """
    if num_cores not in NUM_CORES:
        raise ValueError(f"num_cores {num_cores} is not one of {NUM_CORES}")
    p_shapes = row_factors(num_embeddings, num_cores)
    q_shapes = column_factors(dim, num_cores)
    full = num_embeddings * dim
    smallest = TTStructure(p_shapes, q_shapes, (1,) * (num_cores - 1))
    if not _meets_target(smallest.params(), full, target):
        best = 1.0 - smallest.params() / full
        raise StructureInfeasible(
            f"ttrec: {num_cores} cores with all ranks 1 (p={list(p_shapes)}, "
            f"q={list(q_shapes)}) store {smallest.params()} numbers, too many to reach "
            f"sparsity {target} on a {num_embeddings}x{dim} table. The best reachable "
            f"sparsity is {best:.4f}. Lower the target or try another num_cores."
        )
    floor_params = (1.0 - target - TOLERANCE) * full
    close: TTStructure | None = None
    largest: TTStructure = smallest
    for candidate in _candidates(p_shapes, q_shapes, full, target):
        params = candidate.params()
        if params > largest.params():
            largest = candidate
        key = (min(candidate.ranks), params)
        if params >= floor_params and (close is None or key > (min(close.ranks), close.params())):
            close = candidate
    return close if close is not None else largest


def check_feasible(num_embeddings: int, dim: int, target: float) -> None:
    """Check that some core count reaches ``target`` on a ``num_embeddings x dim`` table.

    Raises:
        StructureInfeasible: if neither 3 nor 4 cores with all ranks 1 fit the budget.
    """
    full = num_embeddings * dim
    best = -math.inf
    for num_cores in NUM_CORES:
        structure = TTStructure(
            row_factors(num_embeddings, num_cores),
            column_factors(dim, num_cores),
            (1,) * (num_cores - 1),
        )
        if _meets_target(structure.params(), full, target):
            return
        best = max(best, 1.0 - structure.params() / full)
    raise StructureInfeasible(
        f"ttrec: neither 3 nor 4 cores reach sparsity {target} on a {num_embeddings}x{dim} "
        f"table. The best reachable sparsity (all ranks 1) is {best:.4f}. Lower the target."
    )


def full_table(cores: list[torch.Tensor], num_embeddings: int) -> torch.Tensor:
    """Reconstruct the ``[num_embeddings, dim]`` table from cores ``[r_{i-1}, p_i, q_i, r_i]``.

    The cores are contracted left to right as matrix products, giving a
    ``[p_1 q_1 ... p_k q_k]`` tensor that is permuted to ``[p_1 .. p_k, q_1 .. q_k]``,
    reshaped to ``[prod(p), dim]`` and cut to ``num_embeddings`` rows.
    """
    p_shapes = [int(c.shape[1]) for c in cores]
    q_shapes = [int(c.shape[2]) for c in cores]
    result = cores[0].reshape(-1, cores[0].shape[-1])
    for core in cores[1:]:
        rank_in = int(core.shape[0])
        result = (result @ core.reshape(rank_in, -1)).reshape(-1, int(core.shape[-1]))
    count = len(cores)
    grid = [size for pair in zip(p_shapes, q_shapes) for size in pair]
    order = list(range(0, 2 * count, 2)) + list(range(1, 2 * count, 2))
    table = result.reshape(grid).permute(order)
    return table.reshape(math.prod(p_shapes), math.prod(q_shapes))[:num_embeddings]


def row_digits(ids: torch.Tensor, p_shapes: tuple[int, ...]) -> list[torch.Tensor]:
    """Return the mixed-radix digits of ``ids`` over ``p_shapes``, most significant first."""
    result = []
    rest = ids
    for p in reversed(p_shapes[1:]):
        result.append(torch.remainder(rest, p))
        rest = torch.div(rest, p, rounding_mode="floor")
    result.append(rest)
    return list(reversed(result))


class TTRecEmbedding(EmbeddingTable):
    """A TT-Rec table (see the module docstring) with cores as parameters.

    Cores are drawn from ``N(0, s^2)``. An entry is a sum of ``prod(ranks)`` products of
    ``k`` independent core entries, so its variance is ``prod(ranks) * s^(2k)``. ``s`` is set
    so that this equals ``init_std^2``.

    Example::

        table = TTRecEmbedding(1000, 64, solve_ttrec(1000, 64, 0.8))
        table(torch.tensor([0, 999])).shape  # torch.Size([2, 64])
    """

    def __init__(
        self, num_embeddings: int, dim: int, structure: TTStructure, init_std: float = 0.1
    ) -> None:
        super().__init__(num_embeddings, dim)
        if math.prod(structure.p_shapes) < num_embeddings:
            raise ValueError(
                f"p_shapes {list(structure.p_shapes)} cover {math.prod(structure.p_shapes)} "
                f"rows, fewer than num_embeddings={num_embeddings}"
            )
        if math.prod(structure.q_shapes) != dim:
            raise ValueError(f"q_shapes {list(structure.q_shapes)} do not multiply to dim={dim}")
        if len(structure.ranks) != len(structure.p_shapes) - 1:
            raise ValueError(
                f"ranks {list(structure.ranks)} must list the {len(structure.p_shapes) - 1} "
                "internal ranks"
            )
        self.tt_structure = structure
        count = len(structure.p_shapes)
        std = (init_std**2 / math.prod(structure.ranks)) ** (1.0 / (2 * count))
        self.cores = nn.ParameterList(
            [nn.Parameter(torch.randn(shape) * std) for shape in structure.core_shapes()]
        )

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        """Look up ``ids`` (int64, any shape ``S``) and return ``S + (dim,)`` vectors.

        Small lookups gather each id's core slices and contract them with batched matrix
        products. Larger ones rebuild the whole table and index it, because gathering a
        ``[r, q, r]`` middle-core slice per id costs more than one full contraction once
        there are more than a few hundred ids (see :meth:`per_id_limit`).
        """
        flat = ids.reshape(-1)
        if flat.numel() > self.per_id_limit():
            return self.weight_matrix()[ids]
        return self._contract_rows(flat).reshape(*ids.shape, self.dim)

    def per_id_limit(self) -> int:
        """Return the largest number of ids that :meth:`forward` contracts one by one.

        NOTE: the limit is an estimate. Per-id contraction is used while 128 times the
        gathered slice entries stay below the multiply-adds of a full reconstruction. In
        forward plus backward timings on a shared 2-core CPU (torch 2.13) of 40,981 x 64
        tables at sparsity 0.5 and 0.95 with 3 and 4 cores, per-id contraction stopped paying
        off between 64 and 256 ids. The factor 128 puts the limit at 90 to 200 ids there.
        """
        shapes = self.tt_structure.core_shapes()
        slice_entries = sum(r_in * q * r_out for r_in, _, q, r_out in shapes)
        full_flops = 0
        rows = shapes[0][1] * shapes[0][2]
        for r_in, p, q, r_out in shapes[1:]:
            full_flops += rows * r_in * p * q * r_out
            rows *= p * q
        # A single id never needs the whole table.
        return max(1, full_flops // (128 * slice_entries))

    def _contract_rows(self, flat: torch.Tensor) -> torch.Tensor:
        """Return the ``[B, dim]`` rows of the 1-D ids ``flat`` from gathered core slices."""
        slices = [
            core.permute(1, 0, 2, 3)[digit]
            for core, digit in zip(self.cores, row_digits(flat, self.tt_structure.p_shapes))
        ]
        batch = flat.shape[0]
        result = slices[0].reshape(batch, -1, slices[0].shape[-1])
        for piece in slices[1:]:
            rank_in = piece.shape[1]
            result = torch.bmm(result, piece.reshape(batch, rank_in, -1))
            result = result.reshape(batch, -1, piece.shape[-1])
        return result.reshape(batch, self.dim)

    def weight_matrix(self) -> torch.Tensor:
        """Return the whole differentiable ``[num_embeddings, dim]`` table."""
        return full_table(list(self.cores), self.num_embeddings)

    def inference_tensors(self) -> dict[str, tuple[torch.Tensor, StorageKind]]:
        """Return every core, stored densely."""
        return {f"core_{i}": (core, StorageKind.DENSE) for i, core in enumerate(self.cores)}

    def export_artifact(self) -> dict[str, torch.Tensor]:
        """Return the cores and the shapes needed to rebuild the table.

        Keys: ``core_<i>`` (float32 ``[r_{i-1}, p_i, q_i, r_i]``), ``p_shapes``, ``q_shapes``
        (int64 ``[k]``), ``ranks`` (int64 ``[k - 1]``, internal ranks) and ``shape`` (int64
        ``[N, dim]``).
        """
        artifact = {
            f"core_{i}": core.detach().cpu().to(torch.float32).clone()
            for i, core in enumerate(self.cores)
        }
        structure = self.tt_structure
        artifact["p_shapes"] = torch.tensor(structure.p_shapes, dtype=torch.int64)
        artifact["q_shapes"] = torch.tensor(structure.q_shapes, dtype=torch.int64)
        artifact["ranks"] = torch.tensor(structure.ranks, dtype=torch.int64)
        artifact["shape"] = torch.tensor([self.num_embeddings, self.dim], dtype=torch.int64)
        return artifact

    @classmethod
    def decode_artifact(cls, artifact: dict[str, torch.Tensor]) -> torch.Tensor:
        """Rebuild the dense float32 ``[N, dim]`` table from :meth:`export_artifact`."""
        count = int(artifact["p_shapes"].numel())
        cores = [artifact[f"core_{i}"].to(torch.float32) for i in range(count)]
        with torch.no_grad():
            return full_table(cores, int(artifact["shape"][0]))

    def structure(self) -> dict[str, Any]:
        """Return the row factors, column factors and internal ranks."""
        return {
            "p_shapes": list(self.tt_structure.p_shapes),
            "q_shapes": list(self.tt_structure.q_shapes),
            "ranks": list(self.tt_structure.ranks),
        }

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, {self.structure()}"


@dataclass
class TTRecSettings(SettingsBase):
    """Settings of TT-Rec. The target fixes the shapes and ranks."""

    num_cores: int = 3
    """Number of TT cores, 3 or 4."""


def _validate(settings: TTRecSettings) -> None:
    require(
        settings.num_cores in NUM_CORES,
        "num_cores",
        f"{settings.num_cores} is not one of {', '.join(map(str, NUM_CORES))}",
    )


def _create(
    num_embeddings: int, dim: int, target: float, settings: TTRecSettings, init_std: float
) -> EmbeddingTable:
    structure = solve_ttrec(num_embeddings, dim, target, settings.num_cores)
    table = TTRecEmbedding(num_embeddings, dim, structure, init_std=init_std)
    logger.debug(
        "ttrec table %dx%d at target %.4f: p %s, q %s, ranks %s, %d parameters",
        num_embeddings,
        dim,
        target,
        list(structure.p_shapes),
        list(structure.q_shapes),
        list(structure.ranks),
        structure.params(),
    )
    return table


METHOD = MethodSpec(
    name="ttrec",
    settings_cls=TTRecSettings,
    kind=TRAIN,
    create=_create,
    check_feasible=check_feasible,
    validate=_validate,
    description="tensor-train cores in pure PyTorch; the target fixes the TT ranks",
)
