"""Deep Hash Embedding (DHE): no table, an MLP over a fixed hash encoding of the id.

Kang et al., "Learning to Embed Categorical Features without Embedding Tables for
Recommendation" (KDD 2021). Id ``x`` is encoded by ``k`` universal hashes
``h_j(x) = ((a_j * x + b_j) mod p_j) mod m`` with ``m = 10^6``, each mapped to ``[-1, 1]`` by
``2 * h_j / (m - 1) - 1``. An MLP of ``depth`` hidden layers of equal width ``w``
(Linear, then Mish, then BatchNorm1d, the order the LightGCN reference uses) and a final
``Linear(w, d)`` turns the ``[k]`` encoding into the ``d``-dimensional embedding.

The target sparsity fixes the width (:func:`solve_dhe`); the search tunes ``k`` and the depth.
Stored numbers: every MLP weight and bias, the BatchNorm affine weights and running statistics,
and the three coefficients ``(a_j, b_j, p_j)`` of each hash. The ``[N, k]`` encoding is a cache
rebuilt from the coefficients, so it is not counted.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from lers_ray.embeddings.base import EmbeddingTable, StorageKind, StructureInfeasible
from lers_ray.embeddings.masked import narrowest_index_dtype
from lers_ray.embeddings.spec import TRAIN, MethodSpec, SettingsBase, require

logger = logging.getLogger(__name__)

HASH_MODULUS = 1_000_000
"""``m``: every hash value is reduced to ``[0, m)`` before it is mapped to ``[-1, 1]``."""

MIN_WIDTH = 4
"""Narrowest hidden layer the solver accepts.

The output layer is linear, so all ``N`` embeddings lie in a ``(w + 1)``-dimensional affine
subspace of ``R^d``. Below 4 the model collapses to a handful of latent factors and BatchNorm
normalises almost nothing, so such a target is reported as infeasible instead of trained.
"""

MIN_HASH_COUNT = 2
MAX_DEPTH = 6
FEASIBILITY_HASH_COUNT = 8
"""The smallest hash count searched; :func:`check_feasible` tests the target with it at depth 1."""

MAX_ID = 2**31 - 1
"""Ids and hash coefficients stay below ``2^31`` so ``a * x + b`` fits in int64."""

_PRIME_LOW = 2**30
_ENCODE_CHUNK_ROWS = 4096
_DECODE_CHUNK_ROWS = 8192


def dhe_params(hash_count: int, depth: int, width: int, dim: int) -> int:
    """Return the stored numbers of a DHE table: ``(L-1) w^2 + (k + 5L + d) w + d + 3k``.

    Terms: the first hidden layer ``k w + w``, each further hidden layer ``w^2 + w``, four
    BatchNorm vectors per hidden layer (weight, bias, running mean and variance), the output
    layer ``w d + d`` and three coefficients per hash.
    """
    k, layers, w, d = hash_count, depth, width, dim
    return (layers - 1) * w * w + (k + 5 * layers + d) * w + d + 3 * k


@dataclass(frozen=True)
class DHEStructure:
    """The shape of a DHE MLP: ``hash_count`` inputs, ``depth`` hidden layers of ``width``."""

    hash_count: int
    depth: int
    width: int

    def params(self, dim: int) -> int:
        """Return the stored numbers of this structure for embedding size ``dim``."""
        return dhe_params(self.hash_count, self.depth, self.width, dim)


def _meets_target(params: int, full: int, target: float) -> bool:
    # The same expression as accounting.sparsity, so the solver and the counter agree exactly.
    return 1.0 - params / full >= target


def _check_arguments(num_embeddings: int, dim: int, target: float, depth: int) -> None:
    if num_embeddings <= 0 or dim <= 0:
        raise ValueError(f"num_embeddings ({num_embeddings}) and dim ({dim}) must both be positive")
    if not 0.0 <= target < 1.0:
        raise ValueError(f"target sparsity {target} is outside [0, 1)")
    if not 1 <= depth <= MAX_DEPTH:
        raise ValueError(f"depth {depth} is outside 1..{MAX_DEPTH}")


def _max_width(num_embeddings: int, dim: int, target: float, hash_count: int, depth: int) -> int:
    """Return the largest width whose structure meets the target, or 0 if none does.

    The count is quadratic in ``w``, so the closed-form root gives a start that is then moved
    by single steps until the exact count confirms it.
    """
    full = num_embeddings * dim
    budget = (1.0 - target) * full
    quadratic = depth - 1
    linear = hash_count + 5 * depth + dim
    constant = dim + 3 * hash_count - budget
    if quadratic == 0:
        estimate = -constant / linear
    else:
        discriminant = linear * linear - 4.0 * quadratic * constant
        estimate = (-linear + math.sqrt(max(discriminant, 0.0))) / (2.0 * quadratic)
    width = max(math.floor(estimate), 0)

    def fits(w: int) -> bool:
        return _meets_target(dhe_params(hash_count, depth, w, dim), full, target)

    while fits(width + 1):
        width += 1
    while width > 0 and not fits(width):
        width -= 1
    return width


def _best_sparsity(num_embeddings: int, dim: int) -> float:
    """Return the sparsity of the smallest DHE structure (2 hashes, depth 1, ``MIN_WIDTH``)."""
    full = num_embeddings * dim
    return 1.0 - dhe_params(MIN_HASH_COUNT, 1, MIN_WIDTH, dim) / full


def max_hash_count(
    num_embeddings: int,
    dim: int,
    target: float,
    depth: int = 1,
    min_width: int = MIN_WIDTH,
) -> int:
    """Return the largest hash count whose MLP of ``depth`` layers reaches ``min_width``.

    The sweep uses it to bound the searched ``hash_count`` of a study: any hash count up to the
    returned value is feasible at this depth and at every smaller depth.

    Raises:
        ValueError: on a non-positive size, a target outside ``[0, 1)`` or a bad depth.
        StructureInfeasible: if not even ``MIN_HASH_COUNT`` hashes fit.
    """
    _check_arguments(num_embeddings, dim, target, depth)
    full = num_embeddings * dim
    budget = (1.0 - target) * full
    w = min_width
    # The count is linear in k: k (w + 3) + (L-1) w^2 + (5L + d) w + d.
    rest = (depth - 1) * w * w + (5 * depth + dim) * w + dim
    count = max(math.floor((budget - rest) / (w + 3)), 0)

    def fits(k: int) -> bool:
        return _meets_target(dhe_params(k, depth, w, dim), full, target)

    while fits(count + 1):
        count += 1
    while count > 0 and not fits(count):
        count -= 1
    if count < MIN_HASH_COUNT:
        raise StructureInfeasible(
            f"DHE cannot reach target sparsity {target} for a {num_embeddings}x{dim} table "
            f"(params_full {full}) at depth {depth}: even {MIN_HASH_COUNT} hashes with width "
            f"{min_width} exceed the budget of {math.floor(budget)} numbers; the best "
            f"reachable sparsity is {_best_sparsity(num_embeddings, dim):.4f}"
        )
    return count


def solve_dhe(
    num_embeddings: int, dim: int, target: float, hash_count: int, depth: int
) -> DHEStructure:
    """Return the widest DHE structure whose sparsity reaches ``target``.

    Raising the width by one adds ``2 (L-1) w + k + 5L + d`` numbers, well under 1% of
    ``N * d`` for the tables of this benchmark, so the achieved sparsity lands within 0.01
    above the target. Small tables with many hashes can exceed that gap; the widest feasible
    structure is then still the nearest one at or above the target.

    Raises:
        ValueError: on a non-positive size, a target outside ``[0, 1)``, fewer than
            ``MIN_HASH_COUNT`` hashes or a depth outside ``1..MAX_DEPTH``.
        StructureInfeasible: if the widest structure is narrower than ``MIN_WIDTH``; the
            message names the largest hash count that fits at this depth.
    """
    _check_arguments(num_embeddings, dim, target, depth)
    if hash_count < MIN_HASH_COUNT:
        raise ValueError(f"hash_count {hash_count} is below the minimum {MIN_HASH_COUNT}")
    width = _max_width(num_embeddings, dim, target, hash_count, depth)
    full = num_embeddings * dim
    if width < MIN_WIDTH:
        try:
            largest = max_hash_count(num_embeddings, dim, target, depth)
            hint = f"the largest hash_count that fits at depth {depth} is {largest}"
        except StructureInfeasible:
            hint = f"no hash_count >= {MIN_HASH_COUNT} fits at depth {depth}"
        raise StructureInfeasible(
            f"DHE cannot reach target sparsity {target} for a {num_embeddings}x{dim} table "
            f"(params_full {full}) with hash_count {hash_count} and depth {depth}: the widest "
            f"MLP within the budget of {math.floor((1.0 - target) * full)} numbers is {width} "
            f"wide, below the minimum width {MIN_WIDTH}. Lower method.settings.hash_count: "
            f"{hint}. The best reachable sparsity (hash_count {MIN_HASH_COUNT}, depth 1, "
            f"width {MIN_WIDTH}) is {_best_sparsity(num_embeddings, dim):.4f}"
        )
    structure = DHEStructure(hash_count=hash_count, depth=depth, width=width)
    achieved = 1.0 - structure.params(dim) / full
    logger.debug(
        "DHE structure for a %dx%d table at target %.4f: %s, sparsity %.6f",
        num_embeddings,
        dim,
        target,
        structure,
        achieved,
    )
    return structure


def check_feasible(num_embeddings: int, dim: int, target: float) -> None:
    """Check that the smallest searched structure (8 hashes, depth 1) reaches ``target``.

    Raises:
        StructureInfeasible: with the best reachable sparsity, if it does not.
    """
    solve_dhe(num_embeddings, dim, target, FEASIBILITY_HASH_COUNT, 1)


def _is_prime(n: int) -> bool:
    """Return whether ``n`` is prime (deterministic Miller-Rabin, exact for ``n < 3.2e9``)."""
    if n < 2:
        return False
    bases = (2, 3, 5, 7)
    for small in bases:
        if n % small == 0:
            return n == small
    d, s = n - 1, 0
    while d % 2 == 0:
        d //= 2
        s += 1
    # Bases 2, 3, 5 and 7 have no common strong pseudoprime below 3,215,031,751 > 2^31.
    for base in bases:
        x = pow(base, d, n)
        if x in (1, n - 1):
            continue
        for _ in range(s - 1):
            x = x * x % n
            if x == n - 1:
                break
        else:
            return False
    return True


def hash_coefficients(
    hash_count: int, seed: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Draw the coefficients ``(a, b, p)`` of ``hash_count`` universal hashes from ``seed``.

    Each ``p_j`` is a random prime in ``(2^30, 2^31)``, ``a_j`` is in ``[1, p_j)`` and ``b_j``
    in ``[0, p_j)``. The same seed gives the same coefficients on every machine, because they
    come from a CPU ``torch.Generator``.

    Returns:
        Three int64 tensors of shape ``[hash_count]``, all below ``2^31``.
    """
    generator = torch.Generator().manual_seed(seed)
    primes: list[int] = []
    while len(primes) < hash_count:
        # Odd numbers in (2^30, 2^31). About one in ten of them is prime.
        halves = torch.randint(_PRIME_LOW // 2, _PRIME_LOW, (16 * hash_count,), generator=generator)
        for candidate in (halves * 2 + 1).tolist():
            if _is_prime(candidate):
                primes.append(candidate)
                if len(primes) == hash_count:
                    break
    p = torch.tensor(primes, dtype=torch.int64)
    a = torch.randint(0, 2**62, (hash_count,), generator=generator) % (p - 1) + 1
    b = torch.randint(0, 2**62, (hash_count,), generator=generator) % p
    return a, b, p


def hash_encoding(
    ids: torch.Tensor,
    a: torch.Tensor,
    b: torch.Tensor,
    p: torch.Tensor,
    modulus: int = HASH_MODULUS,
) -> torch.Tensor:
    """Encode ``ids`` ``[n]`` as ``[n, k]`` float32 values in ``[-1, 1]``.

    ``h_j(x) = ((a_j x + b_j) mod p_j) mod modulus``, mapped by ``2 h / (modulus - 1) - 1``.
    The products stay in int64 without overflow because ``a_j`` and ``x`` are below ``2^31``.
    """
    x = ids.to(torch.int64).reshape(-1, 1)
    hashed = x * a.to(torch.int64)
    hashed.add_(b.to(torch.int64)).remainder_(p.to(torch.int64)).remainder_(modulus)
    # Values below 10^6 are exact in float32. In-place steps avoid [n, k] temporaries.
    return hashed.to(torch.float32).mul_(2.0 / (modulus - 1)).sub_(1.0)


def encode_rows(
    num_rows: int, a: torch.Tensor, b: torch.Tensor, p: torch.Tensor, modulus: int = HASH_MODULUS
) -> torch.Tensor:
    """Return the ``[num_rows, k]`` encoding of ids ``0..num_rows-1``, built in row chunks."""
    encoding = torch.empty(num_rows, a.numel(), dtype=torch.float32, device=a.device)
    for start in range(0, num_rows, _ENCODE_CHUNK_ROWS):
        stop = min(start + _ENCODE_CHUNK_ROWS, num_rows)
        ids = torch.arange(start, stop, device=a.device)
        encoding[start:stop] = hash_encoding(ids, a, b, p, modulus)
    return encoding


class DHEmbedding(EmbeddingTable):
    """A DHE table: ``[N, k]`` hash encoding, ``depth`` hidden layers of ``width``, output ``d``.

    The encoding of all ``N`` ids is precomputed once into a non-persistent buffer, so
    :meth:`weight_matrix` is one MLP pass over ``[N, k]``. The hash coefficients are persistent
    buffers, so a checkpoint carries them; loading one rebuilds the encoding.

    BatchNorm in training mode normalises with the statistics of the rows it is given.
    :meth:`weight_matrix` passes all ``N`` rows; :meth:`forward` passes only the looked-up ids.
    Once :meth:`weight_matrix` has run in training mode (LightGCN calls it every batch), only
    full passes update the running statistics, so that evaluation normalises like the full
    passes the model was trained with. Until then (MF looks up batches only), batch lookups
    update them. A training-mode lookup of a single row, whose batch variance is undefined,
    normalises with the running statistics.

    Example:
        >>> table = DHEmbedding(100, 16, DHEStructure(hash_count=32, depth=1, width=8))
        >>> table(torch.tensor([[0, 5], [7, 7]])).shape
        torch.Size([2, 2, 16])
    """

    encoding: torch.Tensor
    hash_a: torch.Tensor
    hash_b: torch.Tensor
    hash_p: torch.Tensor
    _encoded_from: tuple[torch.Tensor, torch.Tensor, torch.Tensor]
    """CPU copies of the coefficients the current encoding was built from."""

    def __init__(
        self,
        num_embeddings: int,
        dim: int,
        structure: DHEStructure,
        hash_seed: int = 0,
        init_std: float = 0.1,
    ) -> None:
        """Build the table and precompute its encoding.

        Hidden layers use PyTorch's default Linear initialisation. The output layer's weight is
        drawn from ``N(0, init_std^2 / width)`` and its bias is zero. The BatchNorm outputs
        feeding it have unit variance per channel in training mode, so each initial embedding
        entry has a standard deviation of about ``init_std``. A plain table starts at that scale.

        Raises:
            ValueError: on more than ``2^31 - 1`` rows, where the int64 hash products could
                overflow, or on a structure narrower than one unit.
        """
        super().__init__(num_embeddings, dim)
        if num_embeddings > MAX_ID:
            raise ValueError(
                f"num_embeddings {num_embeddings} exceeds {MAX_ID}; DHE hashes ids in int64 "
                "and needs ids below 2^31"
            )
        if structure.width < 1 or structure.depth < 1 or structure.hash_count < 1:
            raise ValueError(f"invalid DHE structure {structure}: every size must be >= 1")
        self.hash_count = structure.hash_count
        self.depth = structure.depth
        self.width = structure.width

        a, b, p = hash_coefficients(structure.hash_count, hash_seed)
        self.register_buffer("hash_a", a)
        self.register_buffer("hash_b", b)
        self.register_buffer("hash_p", p)
        self.register_buffer("encoding", encode_rows(num_embeddings, a, b, p), persistent=False)
        self._encoded_from = (a.clone(), b.clone(), p.clone())
        self.register_load_state_dict_post_hook(_reencode_after_load)

        inputs = [structure.hash_count] + [structure.width] * (structure.depth - 1)
        self.hidden = nn.ModuleList(nn.Linear(n_in, structure.width) for n_in in inputs)
        self.norms = nn.ModuleList(nn.BatchNorm1d(structure.width) for _ in inputs)
        self.output = nn.Linear(structure.width, dim)
        with torch.no_grad():
            nn.init.normal_(self.output.weight, mean=0.0, std=init_std / math.sqrt(self.width))
            nn.init.zeros_(self.output.bias)
        self._full_passes_track_stats = False

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        """Look up ``ids`` (int64, any shape ``S``) and return ``S + (dim,)`` vectors."""
        flat = ids.reshape(-1)
        # NOTE: under MF the running statistics come from training batches, which sample ids by
        # popularity, yet evaluation normalises every row with them.
        update = not self._full_passes_track_stats
        out = self._mlp(self.encoding[flat], update_stats=update)
        return out.reshape(*ids.shape, self.dim)

    def weight_matrix(self) -> torch.Tensor:
        """Return all ``[num_embeddings, dim]`` rows from one MLP pass over the encoding."""
        if self.training:
            self._full_passes_track_stats = True
        return self._mlp(self.encoding, update_stats=True)

    def _mlp(self, x: torch.Tensor, update_stats: bool) -> torch.Tensor:
        for linear, norm in zip(self.hidden, self.norms, strict=True):
            x = F.mish(linear(x))
            x = self._normalize(norm, x, update_stats)
        out: torch.Tensor = self.output(x)
        return out

    def _normalize(self, norm: nn.Module, x: torch.Tensor, update_stats: bool) -> torch.Tensor:
        assert isinstance(norm, nn.BatchNorm1d)
        if self.training and x.shape[0] > 1:
            if update_stats:
                normalized: torch.Tensor = norm(x)
                return normalized
            return F.batch_norm(x, None, None, norm.weight, norm.bias, True, 0.0, norm.eps)
        return F.batch_norm(
            x, norm.running_mean, norm.running_var, norm.weight, norm.bias, False, 0.0, norm.eps
        )

    def inference_tensors(self) -> dict[str, tuple[torch.Tensor, StorageKind]]:
        """Return the hash coefficients, MLP weights and biases and BatchNorm tensors (dense).

        BatchNorm's ``num_batches_tracked`` (a training counter), its ``eps`` and the modulus
        ``m`` are not learned numbers, so they are not listed.
        """
        dense = StorageKind.DENSE
        tensors: dict[str, tuple[torch.Tensor, StorageKind]] = {
            "hash_a": (self.hash_a, dense),
            "hash_b": (self.hash_b, dense),
            "hash_p": (self.hash_p, dense),
        }
        for name, tensor in self._mlp_tensors().items():
            tensors[name] = (tensor, dense)
        return tensors

    def _mlp_tensors(self) -> dict[str, torch.Tensor]:
        tensors: dict[str, torch.Tensor] = {}
        for i, (linear, norm) in enumerate(zip(self.hidden, self.norms, strict=True)):
            assert isinstance(linear, nn.Linear) and isinstance(norm, nn.BatchNorm1d)
            assert norm.running_mean is not None and norm.running_var is not None
            tensors[f"hidden.{i}.weight"] = linear.weight
            tensors[f"hidden.{i}.bias"] = linear.bias
            tensors[f"norm.{i}.weight"] = norm.weight
            tensors[f"norm.{i}.bias"] = norm.bias
            tensors[f"norm.{i}.running_mean"] = norm.running_mean
            tensors[f"norm.{i}.running_var"] = norm.running_var
        tensors["output.weight"] = self.output.weight
        tensors["output.bias"] = self.output.bias
        return tensors

    def export_artifact(self) -> dict[str, torch.Tensor]:
        """Return the coefficients, the MLP in float32 and the structure.

        Keys:

        - ``hash_a``, ``hash_b``, ``hash_p``: ``[k]`` int32, the narrowest dtype for values
          below ``2^31``.
        - ``hidden.{i}.weight`` and ``hidden.{i}.bias`` for each hidden layer ``i``, with
          ``norm.{i}.weight``, ``norm.{i}.bias``, ``norm.{i}.running_mean`` and
          ``norm.{i}.running_var`` (float32) and ``norm.{i}.eps`` (float64 scalar).
        - ``output.weight`` ``[d, w]`` and ``output.bias`` ``[d]`` (float32).
        - ``structure``: int64 ``[num_embeddings, dim, hash_count, depth, width, modulus]``.
        """
        coefficients = {"hash_a": self.hash_a, "hash_b": self.hash_b, "hash_p": self.hash_p}
        largest = max(int(t.max()) for t in coefficients.values())
        dtype = narrowest_index_dtype(largest)
        artifact = {name: t.detach().cpu().to(dtype) for name, t in coefficients.items()}
        for name, tensor in self._mlp_tensors().items():
            artifact[name] = tensor.detach().cpu().to(torch.float32).clone()
        for i, norm in enumerate(self.norms):
            assert isinstance(norm, nn.BatchNorm1d)
            artifact[f"norm.{i}.eps"] = torch.tensor(norm.eps, dtype=torch.float64)
        artifact["structure"] = torch.tensor(
            [self.num_embeddings, self.dim, self.hash_count, self.depth, self.width, HASH_MODULUS],
            dtype=torch.int64,
        )
        return artifact

    @classmethod
    def decode_artifact(cls, artifact: dict[str, torch.Tensor]) -> torch.Tensor:
        """Rebuild the ``[num_embeddings, dim]`` float32 table with torch functional ops.

        Rows are encoded and passed through the MLP in chunks of 8192, so peak memory stays
        near ``8192 * k`` floats instead of the whole ``[N, k]`` encoding.
        """
        num_embeddings, dim, _, depth, _, modulus = (int(v) for v in artifact["structure"])
        a, b, p = (artifact[name].to(torch.int64) for name in ("hash_a", "hash_b", "hash_p"))
        table = torch.empty(num_embeddings, dim, dtype=torch.float32)
        for start in range(0, num_embeddings, _DECODE_CHUNK_ROWS):
            stop = min(start + _DECODE_CHUNK_ROWS, num_embeddings)
            x = hash_encoding(torch.arange(start, stop), a, b, p, modulus)
            for i in range(depth):
                x = F.mish(
                    F.linear(x, artifact[f"hidden.{i}.weight"], artifact[f"hidden.{i}.bias"])
                )
                x = F.batch_norm(
                    x,
                    artifact[f"norm.{i}.running_mean"],
                    artifact[f"norm.{i}.running_var"],
                    artifact[f"norm.{i}.weight"],
                    artifact[f"norm.{i}.bias"],
                    training=False,
                    momentum=0.0,
                    eps=float(artifact[f"norm.{i}.eps"]),
                )
            table[start:stop] = F.linear(x, artifact["output.weight"], artifact["output.bias"])
        return table

    def structure(self) -> dict[str, Any]:
        """Return ``{"hash_count": k, "depth": L, "width": w}``."""
        return {"hash_count": self.hash_count, "depth": self.depth, "width": self.width}

    def extra_repr(self) -> str:
        return (
            f"{super().extra_repr()}, hash_count={self.hash_count}, depth={self.depth}, "
            f"width={self.width}"
        )


def _reencode_after_load(module: nn.Module, incompatible_keys: Any) -> None:
    """Rebuild the encoding cache if a loaded checkpoint brought other hash coefficients."""
    assert isinstance(module, DHEmbedding)
    loaded = (module.hash_a, module.hash_b, module.hash_p)
    previous = module._encoded_from
    if all(torch.equal(new.cpu(), old) for new, old in zip(loaded, previous, strict=True)):
        return
    logger.debug("DHE hash coefficients changed on load; rebuilding the encoding")
    module.encoding = encode_rows(module.num_embeddings, *loaded).to(module.encoding.device)
    a, b, p = (t.detach().cpu().clone() for t in loaded)
    module._encoded_from = (a, b, p)


@dataclass
class DHESettings(SettingsBase):
    """Settings of Deep Hash Embedding; the MLP width is solved from the target."""

    hash_count: int = 1024
    """Number of hashes ``k``: the MLP's input size."""
    depth: int = 1
    """Number of hidden layers, each of the solved width."""
    hash_seed: int = 0
    """Seed of the hash coefficients; the same seed gives the same encoding."""


def _validate(settings: DHESettings) -> None:
    require(
        settings.hash_count >= MIN_HASH_COUNT,
        "hash_count",
        f"{settings.hash_count} must be >= {MIN_HASH_COUNT}",
    )
    require(
        1 <= settings.depth <= MAX_DEPTH,
        "depth",
        f"{settings.depth} must be between 1 and {MAX_DEPTH}",
    )
    require(
        0 <= settings.hash_seed < 2**63,
        "hash_seed",
        f"{settings.hash_seed} must be between 0 and 2^63 - 1",
    )


def _create(
    num_embeddings: int, dim: int, target: float, settings: DHESettings, init_std: float
) -> EmbeddingTable:
    structure = solve_dhe(num_embeddings, dim, target, settings.hash_count, settings.depth)
    return DHEmbedding(num_embeddings, dim, structure, settings.hash_seed, init_std)


METHOD = MethodSpec(
    name="dhe",
    settings_cls=DHESettings,
    kind=TRAIN,
    create=_create,
    check_feasible=check_feasible,
    validate=_validate,
    description="deep hash embedding: k universal hashes of the id fed to an MLP whose width "
    "is solved from the target",
)
