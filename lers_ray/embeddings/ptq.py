"""PTQ: post-training row-wise quantisation of a trained table to 8 or 4 bits.

Each row is quantised on its own with asymmetric min-max quantisation::

    scale  = (max(row) - min(row)) / (2**bits - 1)       # 0 for a constant row
    offset = min(row)
    code   = clamp(round((w - offset) / scale), 0, 2**bits - 1)
    w_hat  = offset + code * scale

so ``|w - w_hat| <= scale / 2`` up to float rounding, and a constant row decodes exactly. The
``offset`` is the zero point in float form (the value that code 0 decodes to), as in the
"scale and bias" row-wise layout of FBGEMM's embedding operators.

Parameter counting: a row stores ``ceil(dim * bits / 32)`` 32-bit words of packed codes plus
its scale and offset, so ``params_stored = N * (ceil(dim * bits / 32) + 2)``. With
``dim * bits`` a multiple of 32 (``dim = 64``) that is ``N * dim * bits / 32 + 2 * N``:
sparsity ``1 - (8/32 + 2/64) = 0.71875`` at 8 bits and ``1 - (4/32 + 2/64) = 0.84375`` at 4
bits. The width is the largest one whose sparsity reaches the target (see :func:`solve_bits`).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

import torch

from lers_ray.embeddings.base import EmbeddingTable, StorageKind, StructureInfeasible
from lers_ray.embeddings.spec import POST_HOC, MethodSpec, SettingsBase, require

logger = logging.getLogger(__name__)

SUPPORTED_BITS = (8, 4)
"""Code widths, widest first: the solver takes the first one that reaches the target."""
DERIVED_BITS = 0
"""``PTQSettings.bits`` value that derives the width from the target."""


def words_per_row(dim: int, bits: int) -> int:
    """Return the number of 32-bit words that store one row's ``dim`` codes of ``bits`` bits each.

    A row whose ``dim * bits`` is not a multiple of 32 is padded to the next whole word, and
    the padding is counted as stored.
    """
    return math.ceil(dim * bits / 32)


def ptq_sparsity(dim: int, bits: int) -> float:
    """Return the sparsity of a ``bits``-bit table: ``1 - (words_per_row + 2) / dim``.

    The ``2`` is the row's scale and offset. The number of rows cancels out.
    """
    return 1.0 - (words_per_row(dim, bits) + 2) / dim


def _table_name(dim: int, num_embeddings: int | None) -> str:
    if num_embeddings is None:
        return f"a table of dim {dim}"
    return f"a {num_embeddings}x{dim} table"


def solve_bits(dim: int, target: float, num_embeddings: int | None = None) -> int:
    """Return the widest supported code width whose sparsity reaches ``target``.

    At ``dim = 64`` that is 8 bits up to target 0.71875 and 4 bits up to 0.84375. The
    achieved sparsity may exceed the target by more than 0.01 (8 bits at target 0.5), because
    no width lies closer. The trial runner logs that gap as ``sparsity_gap``.

    Args:
        dim: embedding dim.
        target: target sparsity in ``[0, 1)``.
        num_embeddings: table rows, only used to name the table in the error message.

    Raises:
        ValueError: on a target outside ``[0, 1)``.
        StructureInfeasible: when even the narrowest width stays below the target.
    """
    if not 0.0 <= target < 1.0:
        raise ValueError(f"target sparsity {target} is outside [0, 1)")
    for bits in SUPPORTED_BITS:
        if ptq_sparsity(dim, bits) >= target:
            return bits
    narrowest = min(SUPPORTED_BITS)
    best = ptq_sparsity(dim, narrowest)
    raise StructureInfeasible(
        f"ptq cannot reach target sparsity {target} for {_table_name(dim, num_embeddings)}: "
        f"the narrowest width, {narrowest} bits, stores {words_per_row(dim, narrowest)} "
        f"32-bit code words plus a scale and an offset per row, so the maximum reachable "
        f"sparsity is {best:.5f}. Lower the target to at most {best:.5f} or use another method."
    )


def check_feasible(num_embeddings: int, dim: int, target: float) -> None:
    """Raise :class:`StructureInfeasible` when no width of ptq reaches ``target``."""
    solve_bits(dim, target, num_embeddings)


def resolve_bits(num_embeddings: int, dim: int, target: float, forced_bits: int) -> int:
    """Return the width a table uses: solved from ``target``, or ``forced_bits`` if non-zero.

    Raises:
        StructureInfeasible: when the forced width, or every width, stays below the target.
    """
    if forced_bits == DERIVED_BITS:
        return solve_bits(dim, target, num_embeddings)
    reached = ptq_sparsity(dim, forced_bits)
    if reached < target:
        raise StructureInfeasible(
            f"method.settings.bits={forced_bits} reaches sparsity {reached:.5f} on "
            f"{_table_name(dim, num_embeddings)}, below the target {target}. Set "
            f"method.settings.bits to 0 to derive the width from the target, or lower the "
            f"target to at most {reached:.5f}."
        )
    return forced_bits


def quantize_rows(
    weight: torch.Tensor, bits: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Quantise each row of ``weight`` with asymmetric min-max quantisation.

    Args:
        weight: ``[rows, dim]`` float table.
        bits: code width, one of :data:`SUPPORTED_BITS`.

    Returns:
        ``(codes, scale, offset)``: uint8 ``[rows, dim]`` codes in ``[0, 2**bits - 1]``, and
        float32 ``[rows]`` scales and offsets. A constant row has scale 0 and codes 0.

    Raises:
        ValueError: on a weight that is not 2-D or has non-finite entries, or an unsupported
            width.
    """
    _check_bits(bits)
    if weight.dim() != 2:
        raise ValueError(f"weight must be a 2-D [rows, dim] table, got shape {tuple(weight.shape)}")
    values = weight.detach().to(torch.float32)
    if not bool(torch.isfinite(values).all()):
        raise ValueError("weight contains non-finite entries; cannot quantise them")

    max_code = 2**bits - 1
    offset = values.min(dim=1).values
    scale = (values.max(dim=1).values - offset) / max_code
    # A zero scale (a constant row) divides by 1 instead: every code is then 0.
    divisor = torch.where(scale > 0, scale, torch.ones_like(scale))
    levels = torch.round((values - offset.unsqueeze(1)) / divisor.unsqueeze(1))
    codes = levels.clamp_(0, max_code).to(torch.uint8)
    return codes, scale, offset


def dequantize(codes: torch.Tensor, scale: torch.Tensor, offset: torch.Tensor) -> torch.Tensor:
    """Return float32 ``offset + codes * scale`` for codes ``[..., dim]`` and rows ``[...]``."""
    return offset.unsqueeze(-1) + codes.to(torch.float32) * scale.unsqueeze(-1)


def pack_codes(codes: torch.Tensor, bits: int) -> torch.Tensor:
    """Pack uint8 codes ``[..., dim]`` into bytes ``[..., ceil(dim * bits / 8)]``.

    A byte contains ``8 // bits`` codes, the first one in the lowest bits. A row whose codes do
    not fill its last byte is padded with zero codes.
    """
    _check_bits(bits)
    per_byte = 8 // bits
    if per_byte == 1:
        return codes.to(torch.uint8)
    padding = (-codes.shape[-1]) % per_byte
    if padding:
        zeros = codes.new_zeros((*codes.shape[:-1], padding))
        codes = torch.cat([codes, zeros], dim=-1)
    grouped = codes.to(torch.int64).reshape(*codes.shape[:-1], -1, per_byte)
    shifts = torch.arange(per_byte, device=codes.device) * bits
    return (grouped << shifts).sum(dim=-1).to(torch.uint8)


def unpack_codes(packed: torch.Tensor, bits: int, dim: int) -> torch.Tensor:
    """Unpack bytes ``[..., ceil(dim * bits / 8)]`` from :func:`pack_codes` into uint8 ``[..., dim]``."""
    _check_bits(bits)
    per_byte = 8 // bits
    if per_byte == 1:
        return packed[..., :dim]
    shifts = torch.arange(per_byte, dtype=torch.uint8, device=packed.device) * bits
    codes = (packed.unsqueeze(-1) >> shifts) & (2**bits - 1)
    return codes.reshape(*packed.shape[:-1], -1)[..., :dim]


def code_words(packed: torch.Tensor) -> torch.Tensor:
    """Return packed code bytes ``[rows, bytes]`` as 32-bit words ``[rows, ceil(bytes / 4)]``.

    The words reinterpret the bytes in the machine's byte order, zero-padded to whole words.
    Their ``numel`` is the count of stored 32-bit numbers.
    """
    padding = (-packed.shape[-1]) % 4
    if padding:
        zeros = packed.new_zeros((*packed.shape[:-1], padding))
        packed = torch.cat([packed, zeros], dim=-1)
    return packed.contiguous().view(torch.int32)


def _check_bits(bits: int) -> None:
    if bits not in SUPPORTED_BITS:
        raise ValueError(f"bits={bits} is not a supported code width; use one of {SUPPORTED_BITS}")


class QuantizedEmbedding(EmbeddingTable):
    """A row-wise quantised table: packed codes plus a float32 scale and offset per row.

    Buffers: ``codes`` uint8 ``[N, ceil(dim * bits / 8)]`` (see :func:`pack_codes`), and
    ``scale`` and ``offset`` float32 ``[N]``. Nothing is trainable. :meth:`forward` and
    :meth:`weight_matrix` return the dequantised float32 values without a gradient.

    Example::

        table = QuantizedEmbedding.from_weight(torch.randn(100, 64), bits=4)
        table(torch.tensor([0, 7])).shape  # torch.Size([2, 64])
    """

    codes: torch.Tensor
    scale: torch.Tensor
    offset: torch.Tensor

    def __init__(self, num_embeddings: int, dim: int, bits: int) -> None:
        super().__init__(num_embeddings, dim)
        _check_bits(bits)
        self.bits = int(bits)
        row_bytes = math.ceil(dim * bits / 8)
        self.register_buffer("codes", torch.zeros(num_embeddings, row_bytes, dtype=torch.uint8))
        self.register_buffer("scale", torch.zeros(num_embeddings, dtype=torch.float32))
        self.register_buffer("offset", torch.zeros(num_embeddings, dtype=torch.float32))

    @classmethod
    def from_weight(cls, weight: torch.Tensor, bits: int) -> QuantizedEmbedding:
        """Return the ``bits``-bit quantisation of a ``[rows, dim]`` weight (see :func:`quantize_rows`)."""
        codes, scale, offset = quantize_rows(weight, bits)
        rows, dim = codes.shape
        table = cls(rows, dim, bits).to(weight.device)
        table.codes.copy_(pack_codes(codes, bits))
        table.scale.copy_(scale)
        table.offset.copy_(offset)
        return table

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        """Look up ``ids`` (any shape ``S``) and return dequantised ``S + (dim,)`` vectors."""
        codes = unpack_codes(self.codes[ids], self.bits, self.dim)
        return dequantize(codes, self.scale[ids], self.offset[ids])

    def weight_matrix(self) -> torch.Tensor:
        """Return the dequantised float32 ``[num_embeddings, dim]`` table."""
        return dequantize(unpack_codes(self.codes, self.bits, self.dim), self.scale, self.offset)

    def inference_tensors(self) -> dict[str, tuple[torch.Tensor, StorageKind]]:
        """Return the codes as 32-bit words ``[N, words_per_row]``, and the scales and offsets."""
        return {
            "codes": (code_words(self.codes), StorageKind.DENSE),
            "scale": (self.scale, StorageKind.DENSE),
            "offset": (self.offset, StorageKind.DENSE),
        }

    def export_artifact(self) -> dict[str, torch.Tensor]:
        """Return the packed codes and the row parameters.

        Keys: ``codes`` (uint8 ``[N, ceil(dim * bits / 8)]``, two codes per byte at 4 bits),
        ``scale`` and ``offset`` (float32 ``[N]``), ``bits`` (int64 scalar) and ``shape``
        (int64 ``[N, dim]``).
        """
        return {
            "codes": self.codes.detach().cpu().clone(),
            "scale": self.scale.detach().cpu().clone(),
            "offset": self.offset.detach().cpu().clone(),
            "bits": torch.tensor(self.bits, dtype=torch.int64),
            "shape": torch.tensor([self.num_embeddings, self.dim], dtype=torch.int64),
        }

    @classmethod
    def decode_artifact(cls, artifact: dict[str, torch.Tensor]) -> torch.Tensor:
        """Rebuild the dequantised dense float32 table from :meth:`export_artifact`."""
        bits = int(artifact["bits"])
        _, dim = (int(value) for value in artifact["shape"])
        codes = unpack_codes(artifact["codes"], bits, dim)
        return dequantize(codes, artifact["scale"], artifact["offset"])

    def structure(self) -> dict[str, Any]:
        """Return the code width, ``{"bits": 8}`` or ``{"bits": 4}``."""
        return {"bits": self.bits}

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, bits={self.bits}"


@dataclass
class PTQSettings(SettingsBase):
    """Settings of post-training quantisation."""

    bits: int = DERIVED_BITS
    """Code width: 0 derives it from the target (the default), 8 or 4 forces it."""


def _validate(settings: PTQSettings) -> None:
    allowed = (DERIVED_BITS, *SUPPORTED_BITS)
    require(
        settings.bits in allowed,
        "bits",
        f"{settings.bits} is not supported; use 0 (derived from the target), 8 or 4",
    )


def _empty(num_embeddings: int, dim: int, target: float, settings: PTQSettings) -> EmbeddingTable:
    bits = resolve_bits(num_embeddings, dim, target, settings.bits)
    return QuantizedEmbedding(num_embeddings, dim, bits)


def _create(
    num_embeddings: int, dim: int, target: float, settings: PTQSettings, init_std: float
) -> EmbeddingTable:
    return _empty(num_embeddings, dim, target, settings)


def _from_trained(trained: EmbeddingTable, target: float, settings: PTQSettings) -> EmbeddingTable:
    bits = resolve_bits(trained.num_embeddings, trained.dim, target, settings.bits)
    table = QuantizedEmbedding.from_weight(trained.weight_matrix().detach(), bits)
    logger.debug(
        "quantised a %dx%d table to %d bits at target %.4f: sparsity %.5f",
        table.num_embeddings,
        table.dim,
        bits,
        target,
        ptq_sparsity(table.dim, bits),
    )
    return table


METHOD = MethodSpec(
    name="ptq",
    settings_cls=PTQSettings,
    kind=POST_HOC,
    create=_create,
    create_final=_empty,
    from_trained=_from_trained,
    check_feasible=check_feasible,
    validate=_validate,
    description="row-wise min-max quantisation of the trained full model to 8 or 4 bits",
)
