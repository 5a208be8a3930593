"""The interface every embedding table (full, pruned, compositional, ...) implements."""

from __future__ import annotations

import abc
import enum
from typing import Any

import torch
from torch import nn


class StorageKind(enum.Enum):
    """How a tensor needed at inference time is stored, which decides how it is counted."""

    DENSE = "dense"
    """Every entry is stored: counted as ``numel``."""
    SPARSE = "sparse"
    """Only non-zero entries are stored (a pruned table): counted as the number of non-zeros."""


class StructureInfeasible(ValueError):
    """No structure of a method reaches the target sparsity for the given table size."""


class EmbeddingTable(nn.Module, abc.ABC):
    """A lookup from ids in ``[0, num_embeddings)`` to ``dim``-dimensional vectors.

    Subclasses define how the vectors are produced and stored. The parameter counter in
    :mod:`lers_ray.embeddings.accounting` reads :meth:`inference_tensors`, so every method is
    counted by the same rule.

    Training hooks (:meth:`penalty`, :meth:`start_epoch`, :meth:`optimizer_groups`) have
    no-op defaults; methods that learn thresholds or use a regulariser override them.
    """

    def __init__(self, num_embeddings: int, dim: int) -> None:
        super().__init__()
        if num_embeddings <= 0 or dim <= 0:
            raise ValueError(
                f"num_embeddings ({num_embeddings}) and dim ({dim}) must both be positive"
            )
        self.num_embeddings = int(num_embeddings)
        self.dim = int(dim)

    @abc.abstractmethod
    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        """Look up ``ids`` (int64, any shape ``S``) and return vectors of shape ``S + (dim,)``."""

    @abc.abstractmethod
    def weight_matrix(self) -> torch.Tensor:
        """Return the whole table as a dense, differentiable ``[num_embeddings, dim]`` tensor."""

    @abc.abstractmethod
    def inference_tensors(self) -> dict[str, tuple[torch.Tensor, StorageKind]]:
        """Return every tensor needed at inference time, by name, with its storage kind.

        Numbers used only during training (thresholds, optimiser state) are left out.
        """

    @abc.abstractmethod
    def export_artifact(self) -> dict[str, torch.Tensor]:
        """Return the compact state an edge device loads (detached CPU tensors)."""

    @classmethod
    @abc.abstractmethod
    def decode_artifact(cls, artifact: dict[str, torch.Tensor]) -> torch.Tensor:
        """Rebuild the dense float32 ``[num_embeddings, dim]`` table from :meth:`export_artifact`.

        Uses torch only, so a device can score from the artifact without this table's class
        state. The result equals :meth:`weight_matrix` in eval mode up to float rounding.
        """

    def structure(self) -> dict[str, Any]:
        """Return the structure the method derived from the target (buckets, ranks, widths).

        Values are ints, floats, strings or lists of ints; they are logged with the trial.
        """
        return {}

    def penalty(self, ids: torch.Tensor) -> torch.Tensor | None:
        """Return an extra loss term for the batch's looked-up ``ids``, or ``None``."""
        return None

    def start_epoch(self, epoch: int) -> None:
        """Called before each training epoch (1-based); a schedule may read it."""

    def optimizer_groups(self, lr: float) -> list[dict[str, Any]]:
        """Return Adam parameter groups with their own ``lr`` or ``weight_decay``.

        Parameters not listed here are trained with the trial's ``lr`` and no Adam weight
        decay (the backbone's L2 term is part of the loss instead).
        """
        return []

    def extra_repr(self) -> str:
        return f"num_embeddings={self.num_embeddings}, dim={self.dim}"


class SearchableTable(EmbeddingTable):
    """A table trained by a search stage that decides which entries to keep (PEP, CERP,
    OptEmbed's supernet).

    After the search, :meth:`fixed` rebuilds a table from (initial) weights with the masks the
    search chose, for the retraining stage.
    """

    @abc.abstractmethod
    def fixed(self, masks: dict[str, torch.Tensor]) -> EmbeddingTable:
        """Return a table with this table's current weights and ``masks`` fixed.

        The retraining stage calls it on a table holding the search stage's initial weights.
        """


class SoftThresholdTable(SearchableTable):
    """A table pruned by learnable soft thresholds (PEP, CERP).

    The search stage trains it until :meth:`search_sparsity` reaches the target, then
    :meth:`keep_masks` fixes the kept entries.
    """

    @abc.abstractmethod
    def search_sparsity(self) -> float:
        """Return the share of this table's ``params_full`` currently pruned (0 to 1)."""

    @abc.abstractmethod
    def keep_masks(self, target: float) -> dict[str, torch.Tensor]:
        """Return bool masks, by parameter name, keeping the entries most above threshold.

        Exactly as many entries are kept as the target allows, so the retrained table's
        sparsity reaches ``target`` and exceeds it by less than one entry's share.
        """
