"""OptEmbed: a supernet with a learnable row mask and sampled dimension masks.

The method has three stages. (1) A supernet table is trained. A row is kept only while the L1
norm of its vector exceeds a learnable threshold (the row mask E). Every training lookup keeps a
randomly sampled number of leading dimensions per row (the dimension mask D). (2) An
evolutionary search picks, per row, how many leading dimensions to keep, under the target
sparsity and scored on validation NDCG@20 (:mod:`lers_ray.training.optembed_search`).
(3) The tables are rebuilt from their initial weights with the chosen masks fixed
(:class:`MaskedEmbedding`) and retrained.

The method comes from Lyu et al., "OptEmbed: Learning Optimal Embedding Table for Click-through
Rate Prediction" (CIKM 2022, arXiv:2208.04482). The paper searches one dimension count per CTR
field and samples counts uniformly. Here, as in the LERS benchmark's LightGCN variant, every row
gets its own count, and counts are drawn so that their mean matches the target's budget.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from lers_ray.embeddings.base import EmbeddingTable, SearchableTable, StorageKind
from lers_ray.embeddings.masked import MaskedEmbedding, empty_masked_table
from lers_ray.embeddings.spec import TWO_STAGE, MethodSpec, SettingsBase, require

_SLOPE_BOUND = 60.0
"""Bisection range of the slope in :func:`dim_count_probabilities`. At slope 60 the neighbour
of the favoured count has relative weight ``exp(-60)``, so the range covers every mean."""


def dim_count_probabilities(dim: int, mean_dims: float) -> torch.Tensor:
    """Return the distribution of kept dimension counts ``1..dim`` with mean ``mean_dims``.

    The distribution is a truncated geometric one, ``P(k) ∝ exp(slope * k)``: a negative slope
    favours few dimensions and a positive one favours many. The slope is found by bisection,
    because the mean grows monotonically with it. A mean at or below 1 gives all mass to 1, and a
    mean at or above ``dim`` gives all mass to ``dim``.

    Returns:
        float64 ``[dim]`` probabilities; entry ``k - 1`` is the probability of keeping ``k``.

    Raises:
        ValueError: if ``dim`` is below 1 or ``mean_dims`` is not finite.
    """
    if dim < 1:
        raise ValueError(f"dim must be >= 1, got {dim}")
    if not math.isfinite(mean_dims):
        raise ValueError(f"mean_dims must be finite, got {mean_dims}")
    counts = torch.arange(1, dim + 1, dtype=torch.float64)
    if mean_dims >= dim:
        return (counts == dim).to(torch.float64)
    if mean_dims <= 1:
        return (counts == 1).to(torch.float64)
    low, high = -_SLOPE_BOUND, _SLOPE_BOUND
    for _ in range(100):
        slope = (low + high) / 2
        mean = float((torch.softmax(slope * counts, dim=0) * counts).sum())
        if mean < mean_dims:
            low = slope
        else:
            high = slope
    return torch.softmax((low + high) / 2 * counts, dim=0)


def sample_dim_counts(
    probabilities: torch.Tensor,
    shape: tuple[int, ...],
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Draw kept dimension counts (int64, values ``1..len(probabilities)``).

    Args:
        probabilities: :func:`dim_count_probabilities`, on the device to sample on.
        shape: shape of the returned tensor.
        generator: random generator on that device, or ``None`` for torch's global one.
    """
    count = math.prod(shape)
    if count == 0:
        return torch.zeros(shape, dtype=torch.int64, device=probabilities.device)
    # Every training batch draws a count for every row, so speed matters. On CPU (torch 2.13),
    # torch.multinomial drew 40,981 counts about ten times faster than torch.searchsorted did.
    index = torch.multinomial(probabilities, count, replacement=True, generator=generator)
    return index.reshape(shape) + 1


def dim_mask(dims: torch.Tensor, dim: int) -> torch.Tensor:
    """Return the bool ``dims.shape + (dim,)`` mask keeping the first ``dims[...]`` dimensions."""
    return torch.arange(dim, device=dims.device) < dims.unsqueeze(-1)


class _HardStep(torch.autograd.Function):
    """Straight-through step: forward ``1[x > 0]``, backward the gradient of a smooth step.

    The surrogate is the piecewise-quadratic step that rises from 0 at ``x = -1`` to 1 at
    ``x = 1``. Its derivative, used as the backward pass, is the triangle ``max(0, 1 - |x|)``.
    """

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x)
        return (x > 0).to(x.dtype)

    @staticmethod
    def backward(ctx: Any, grad_output: torch.Tensor) -> torch.Tensor:
        (x,) = ctx.saved_tensors
        return grad_output * (1.0 - x.abs()).clamp_(min=0.0)


def hard_step(x: torch.Tensor) -> torch.Tensor:
    """Return ``1[x > 0]`` with the straight-through gradient of :class:`_HardStep`."""
    result: torch.Tensor = _HardStep.apply(x)  # type: ignore[no-untyped-call]
    return result


class OptEmbedSupernet(SearchableTable):
    """The OptEmbed supernet: weight ``v`` ``[N, d]`` with a row mask E and a dimension mask D.

    Row mask E keeps row ``i`` while ``||v_i||_1 > t``, where ``t`` is one learnable scalar
    threshold per table (:func:`hard_step`, straight-through). :meth:`penalty` adds
    ``alpha * exp(-t)`` once per batch, which pushes ``t`` up and so prunes rows with small norms.

    Dimension mask D keeps the first ``d_i`` dimensions of row ``i``:

    - In train mode every call of :meth:`weight_matrix` or :meth:`forward` draws a fresh ``d_i``
      for each row it returns, from :func:`dim_count_probabilities` with mean
      ``d * (1 - target)``, using torch's global random generator.
    - In eval mode the candidate of :meth:`set_candidate` decides the whole mask (``d_i = 0``
      drops row ``i``; E is not applied on top). Without a candidate, all dimensions of the rows
      E keeps are used.

    NOTE: the BPR loss's L2 term looks rows up again with :meth:`forward`, so in train mode it
    uses its own draw of ``d_i``, not the one behind the batch's scores.
    """

    candidate_dims: torch.Tensor | None
    dim_probabilities: torch.Tensor

    def __init__(
        self,
        num_embeddings: int,
        dim: int,
        target: float,
        init_std: float = 0.1,
        alpha: float = 1e-4,
        threshold_lr: float = 1e-4,
        threshold_init: float = 0.0,
    ) -> None:
        super().__init__(num_embeddings, dim)
        if not 0.0 <= target < 1.0:
            raise ValueError(f"target sparsity {target} is outside [0, 1)")
        self.target = float(target)
        self.alpha = float(alpha)
        self.threshold_lr = float(threshold_lr)
        self.weight = nn.Parameter(torch.empty(num_embeddings, dim))
        nn.init.normal_(self.weight, mean=0.0, std=init_std)
        self.threshold = nn.Parameter(torch.tensor(float(threshold_init)))
        self.train_mean_dims = dim * (1.0 - self.target)
        probabilities = dim_count_probabilities(dim, self.train_mean_dims).to(torch.float32)
        self.register_buffer("dim_probabilities", probabilities, persistent=False)
        self.register_buffer("candidate_dims", None, persistent=False)

    def set_candidate(self, dims: torch.Tensor | None) -> None:
        """Fix the eval-mode mask to the first ``dims[i]`` dimensions of each row ``i``.

        Args:
            dims: integer ``[num_embeddings]`` counts in ``[0, dim]`` (0 drops the row), or
                ``None`` to go back to all dimensions of the rows E keeps.

        Raises:
            ValueError: on a wrong shape, a non-integer dtype or a count outside ``[0, dim]``.
        """
        if dims is None:
            self.candidate_dims = None
            return
        if dims.shape != (self.num_embeddings,):
            raise ValueError(
                f"candidate dims must have shape ({self.num_embeddings},), got {tuple(dims.shape)}"
            )
        if dims.is_floating_point() or dims.is_complex() or dims.dtype == torch.bool:
            raise ValueError(f"candidate dims must be an integer tensor, got {dims.dtype}")
        if dims.numel() and (int(dims.min()) < 0 or int(dims.max()) > self.dim):
            raise ValueError(
                f"candidate dims must lie in [0, {self.dim}], got "
                f"[{int(dims.min())}, {int(dims.max())}]"
            )
        self.candidate_dims = dims.detach().to(device=self.weight.device, dtype=torch.int64)

    def row_norms(self) -> torch.Tensor:
        """Return the detached L1 norms ``||v_i||_1`` of all rows, ``[num_embeddings]``."""
        with torch.no_grad():
            return self.weight.abs().sum(1)

    def rows_above_threshold(self) -> torch.Tensor:
        """Return the bool ``[num_embeddings]`` row mask E: ``||v_i||_1 > t``."""
        with torch.no_grad():
            return self.row_norms() > self.threshold

    def keep_mask(self) -> torch.Tensor:
        """Return the bool ``[num_embeddings, dim]`` eval-mode mask (candidate, else E)."""
        if self.candidate_dims is not None:
            return dim_mask(self.candidate_dims, self.dim)
        return self.rows_above_threshold().unsqueeze(1).expand(-1, self.dim)

    def _row_gate(self, rows: torch.Tensor) -> torch.Tensor:
        """Return E (0/1, straight-through) for ``rows`` of shape ``S + (dim,)``, shape ``S + (1,)``."""
        return hard_step(rows.abs().sum(-1) - self.threshold).unsqueeze(-1)

    def _masked(self, rows: torch.Tensor, ids: torch.Tensor | None) -> torch.Tensor:
        """Apply the mode's masks to ``rows`` (all rows when ``ids`` is None, else ``ids``)."""
        if self.training:
            dims = sample_dim_counts(self.dim_probabilities, tuple(rows.shape[:-1]))
            return rows * self._row_gate(rows) * dim_mask(dims, self.dim).to(rows.dtype)
        if self.candidate_dims is not None:
            dims = self.candidate_dims if ids is None else self.candidate_dims[ids]
            return rows * dim_mask(dims, self.dim).to(rows.dtype)
        return rows * self._row_gate(rows)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        """Look up ``ids`` (any shape ``S``) and return masked ``S + (dim,)`` vectors."""
        return self._masked(F.embedding(ids, self.weight), ids)

    def weight_matrix(self) -> torch.Tensor:
        """Return the masked ``[num_embeddings, dim]`` table (freshly sampled D in train mode)."""
        return self._masked(self.weight, None)

    def _as_masked_embedding(self) -> MaskedEmbedding:
        return MaskedEmbedding.from_weight(self.weight.detach(), self.keep_mask())

    def inference_tensors(self) -> dict[str, tuple[torch.Tensor, StorageKind]]:
        """Return the eval-mode masked weight, counted by its non-zeros (``t`` is not counted)."""
        weight = (self.weight * self.keep_mask()).detach()
        return {"weight": (weight, StorageKind.SPARSE)}

    def export_artifact(self) -> dict[str, torch.Tensor]:
        """Return the eval-mode masked table in the CSR form of :class:`MaskedEmbedding`."""
        return self._as_masked_embedding().export_artifact()

    @classmethod
    def decode_artifact(cls, artifact: dict[str, torch.Tensor]) -> torch.Tensor:
        """Rebuild the dense table from its CSR arrays."""
        return MaskedEmbedding.decode_artifact(artifact)

    def structure(self) -> dict[str, Any]:
        """Return the threshold, the rows E keeps and the mean sampled dimension count."""
        info: dict[str, Any] = {
            "row_threshold": float(self.threshold.detach()),
            "rows_above_threshold": int(self.rows_above_threshold().sum()),
            "train_mean_dims": self.train_mean_dims,
        }
        if self.candidate_dims is not None:
            info["candidate_entries"] = int(self.candidate_dims.sum())
        return info

    def penalty(self, ids: torch.Tensor) -> torch.Tensor | None:
        """Return ``alpha * exp(-t)`` whatever the ``ids``, or ``None`` when ``alpha`` is 0."""
        if self.alpha == 0.0:
            return None
        return self.alpha * torch.exp(-self.threshold)

    def optimizer_groups(self, lr: float) -> list[dict[str, Any]]:
        """Return the threshold's Adam group with its own ``threshold_lr``.

        NOTE: the LERS benchmark code (chenxing1999/recsys-benchmark, LightGCN OptEmbed script)
        updates ``t`` with plain SGD. Here Adam updates it, and Adam normalises the gradient's
        scale, so ``alpha`` only sets the balance against the loss's gradient on ``t``.
        """
        return [{"params": [self.threshold], "lr": self.threshold_lr, "weight_decay": 0.0}]

    def fixed(self, masks: dict[str, torch.Tensor]) -> EmbeddingTable:
        """Return a :class:`MaskedEmbedding` of this table's weight with ``masks["weight"]``.

        Raises:
            ValueError: if ``masks`` has no bool ``[num_embeddings, dim]`` ``"weight"`` mask.
        """
        mask = masks.get("weight")
        shape = (self.num_embeddings, self.dim)
        if mask is None or mask.dtype != torch.bool or tuple(mask.shape) != shape:
            found = "none" if mask is None else f"{mask.dtype} {tuple(mask.shape)}"
            raise ValueError(
                f"OptEmbed needs masks['weight'] as a bool {shape} tensor, got {found}"
            )
        return MaskedEmbedding.from_weight(self.weight.detach(), mask.to(self.weight.device))

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, target={self.target}, alpha={self.alpha}"


@dataclass
class OptEmbedSettings(SettingsBase):
    """Settings of OptEmbed's supernet training and evolutionary search."""

    supernet_epochs: int = 10
    """BPR epochs of supernet training before the search."""
    generations: int = 30
    """Generations of the evolutionary search, each evaluating ``crossovers + mutations``."""
    population: int = 20
    """Random candidates evaluated before the first generation."""
    crossovers: int = 10
    """Children per generation made by uniform crossover of two kept candidates."""
    mutations: int = 10
    """Children per generation made by mutating one kept candidate."""
    mutate_prob: float = 0.1
    """Probability that a mutation redraws a row's dimension count."""
    keep_top: int = 15
    """Best candidates kept as parents after each generation."""
    alpha: float = 1e-4
    """Weight of the threshold penalty ``alpha * exp(-t)``."""
    threshold_lr: float = 1e-4
    """Adam learning rate of the row-mask threshold ``t``."""
    threshold_init: float = 0.0
    """Initial value of ``t``."""


def _validate(settings: OptEmbedSettings) -> None:
    for key in ("supernet_epochs", "population", "keep_top"):
        value = getattr(settings, key)
        require(value >= 1, key, f"{value} must be >= 1")
    for key in ("generations", "crossovers", "mutations"):
        value = getattr(settings, key)
        require(value >= 0, key, f"{value} must be >= 0")
    require(
        0.0 < settings.mutate_prob <= 1.0,
        "mutate_prob",
        f"{settings.mutate_prob} is outside (0, 1]",
    )
    require(
        math.isfinite(settings.alpha) and settings.alpha >= 0,
        "alpha",
        f"{settings.alpha} must be a finite value >= 0 (0 turns the threshold penalty off)",
    )
    require(
        math.isfinite(settings.threshold_lr) and settings.threshold_lr > 0,
        "threshold_lr",
        f"{settings.threshold_lr} must be a finite value > 0",
    )
    require(
        math.isfinite(settings.threshold_init),
        "threshold_init",
        f"{settings.threshold_init} must be finite",
    )


def _create(
    num_embeddings: int, dim: int, target: float, settings: OptEmbedSettings, init_std: float
) -> EmbeddingTable:
    return OptEmbedSupernet(
        num_embeddings,
        dim,
        target,
        init_std=init_std,
        alpha=settings.alpha,
        threshold_lr=settings.threshold_lr,
        threshold_init=settings.threshold_init,
    )


def _search(context: Any) -> Any:
    # Imported here because the training package imports the embeddings package.
    from lers_ray.training.optembed_search import optembed_search

    return optembed_search(context)


METHOD = MethodSpec(
    name="optembed",
    settings_cls=OptEmbedSettings,
    kind=TWO_STAGE,
    create=_create,
    create_final=empty_masked_table,
    search=_search,
    validate=_validate,
    description=(
        "supernet with a learnable row mask and sampled dimension masks, evolutionary search "
        "of per-row dimensions on validation, retraining with the masks fixed"
    ),
)
