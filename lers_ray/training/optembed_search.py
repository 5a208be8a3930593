"""OptEmbed's search stage: supernet training, then an evolutionary search of row dimensions.

A candidate gives every row of the user and the item table a kept dimension count ``d_i``
(its first ``d_i`` dimensions stay). Rows that the supernet's row mask E drops get ``d_i = 0``,
unless E drops so many rows that the rest cannot hold the budget (see :meth:`TableBudget.build`).
Each table has a budget of ``N * d - pruned_count(N * d, target)`` entries. Every candidate is
repaired to spend exactly that budget, so each table's sparsity reaches the target and exceeds it
by less than one entry's share.

The search evaluates ``population`` random candidates, then runs ``generations`` generations.
Each generation evaluates ``crossovers`` children (uniform crossover of two parents) and
``mutations`` children (each row redrawn with probability ``mutate_prob``). After each step the
``keep_top`` best candidates so far become the parents. Fitness is validation NDCG@20 with the
candidate set on both tables, so the search runs
``population + generations * (crossovers + mutations)`` validation passes.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from typing import Any

import torch

from lers_ray.embeddings.magprune import pruned_count
from lers_ray.embeddings.optembed import (
    OptEmbedSettings,
    OptEmbedSupernet,
    dim_count_probabilities,
    dim_mask,
    sample_dim_counts,
)
from lers_ray.training.stages import TABLE_NAMES, SearchContext, SearchResult
from lers_ray.training.trainer import make_optimizer, train_epoch

logger = logging.getLogger(__name__)

Candidate = tuple[torch.Tensor, ...]
"""One int64 tensor per table: the dimension counts of its kept rows, in row order."""


@dataclass
class TableBudget:
    """The search space of one table: the rows that may keep entries, their bounds and the budget.

    Candidate counts are stored for the kept rows only, each in ``[floor, dim]``.
    """

    rows: int
    dim: int
    kept: torch.Tensor
    """Bool ``[rows]``: the rows a candidate may give dimensions to."""
    budget: int
    """Entries every repaired candidate keeps: the most the target sparsity allows."""
    floor: int
    """Smallest count of a kept row: 1, or 0 when the budget is below the kept row count."""
    probabilities: torch.Tensor
    """Float64 ``[dim]`` distribution of fresh counts ``1..dim``, with mean ``budget / kept``."""
    restored: int = 0
    """Rows E drops that were kept anyway, because E's rows could not hold the budget."""

    @classmethod
    def build(
        cls, row_norms: torch.Tensor, threshold: float, dim: int, target: float
    ) -> TableBudget:
        """Derive the budget of a table from its rows' L1 norms ``[rows]`` and E's threshold.

        The rows E keeps (norm above ``threshold``) are the kept rows. When they hold fewer
        than the budget's entries, the sparsity could not come within 0.01 of the target, so
        the ``ceil(budget / dim)`` rows of largest norm are kept instead: E's ranking of the
        rows stays, only its cut-off moves.
        """
        norms = row_norms.detach().cpu()
        rows = norms.numel()
        budget = rows * dim - pruned_count(rows * dim, target)
        kept = norms > threshold
        n_needed = -(-budget // dim)
        restored = 0
        if int(kept.sum()) < n_needed:
            restored = n_needed - int(kept.sum())
            # A stable sort keeps the lower row id first among equal norms.
            order = torch.sort(norms, descending=True, stable=True).indices
            kept = torch.zeros(rows, dtype=torch.bool)
            kept[order[:n_needed]] = True
        n_kept = int(kept.sum())
        floor = 1 if budget >= n_kept else 0
        mean = budget / n_kept if n_kept else float(dim)
        probabilities = dim_count_probabilities(dim, mean)
        return cls(rows, dim, kept, budget, floor, probabilities, restored)

    @property
    def n_kept(self) -> int:
        """Number of rows a candidate may give dimensions to."""
        return int(self.kept.sum())

    def sample(self, count: int, generator: torch.Generator) -> torch.Tensor:
        """Draw ``count`` fresh dimension counts (int64)."""
        return sample_dim_counts(self.probabilities, (count,), generator)

    def full_dims(self, counts: torch.Tensor) -> torch.Tensor:
        """Return int64 ``[rows]`` counts: ``counts`` on the kept rows, 0 on the dropped ones."""
        dims = torch.zeros(self.rows, dtype=torch.int64)
        dims[self.kept] = counts
        return dims

    def sparsity(self, counts: torch.Tensor) -> float:
        """Return the table's sparsity with these counts."""
        return 1.0 - int(counts.sum()) / (self.rows * self.dim)

    def repair(self, counts: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Return ``counts`` clamped to ``[floor, dim]`` and changed to sum to exactly ``budget``.

        An excess is removed from the largest counts: they are cut down to a common level,
        and rows at that level chosen at random give up one more dimension until the sum
        is ``budget``. A shortfall is filled the same way from the smallest counts upwards.
        """
        counts = counts.clamp(self.floor, self.dim)
        total = int(counts.sum())
        if total > self.budget:
            return self._lower(counts, generator)
        if total < self.budget:
            return self._raise(counts, generator)
        return counts

    def _lower(self, counts: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        levels = torch.arange(self.dim + 1)
        histogram = torch.bincount(counts, minlength=self.dim + 1)
        # kept_at[level] = sum of max(min(count, level), floor): the total if cut at level.
        cut = torch.minimum(levels.unsqueeze(1), levels.unsqueeze(0)).clamp(min=self.floor)
        kept_at = histogram @ cut
        level = int(torch.nonzero(kept_at >= self.budget)[0])
        lowered = counts.clamp(max=level).clamp(min=self.floor)
        excess = int(kept_at[level]) - self.budget
        if excess:
            at_level = torch.nonzero(lowered == level).squeeze(1)
            chosen = at_level[torch.randperm(at_level.numel(), generator=generator)[:excess]]
            lowered[chosen] -= 1
        return lowered

    def _raise(self, counts: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        levels = torch.arange(self.dim + 1)
        histogram = torch.bincount(counts, minlength=self.dim + 1)
        # kept_at[level] = sum of max(count, level): the total if raised to level.
        kept_at = histogram @ torch.maximum(levels.unsqueeze(1), levels.unsqueeze(0))
        level = int(torch.nonzero(kept_at <= self.budget)[-1])
        raised = counts.clamp(min=level)
        deficit = self.budget - int(kept_at[level])
        if deficit:
            at_level = torch.nonzero(raised == level).squeeze(1)
            chosen = at_level[torch.randperm(at_level.numel(), generator=generator)[:deficit]]
            raised[chosen] += 1
        return raised


class _Evolution:
    """Candidate generation and selection over the budgets of both tables."""

    def __init__(
        self, budgets: list[TableBudget], settings: OptEmbedSettings, generator: torch.Generator
    ) -> None:
        self.budgets = budgets
        self.settings = settings
        self.generator = generator

    def _repaired(self, counts: list[torch.Tensor]) -> Candidate:
        return tuple(
            budget.repair(table_counts, self.generator)
            for budget, table_counts in zip(self.budgets, counts, strict=True)
        )

    def random(self) -> Candidate:
        """Return a candidate of freshly drawn counts."""
        return self._repaired([b.sample(b.n_kept, self.generator) for b in self.budgets])

    def _pick(self, parents: list[Candidate]) -> Candidate:
        return parents[int(torch.randint(len(parents), (1,), generator=self.generator))]

    def crossover(self, parents: list[Candidate]) -> Candidate:
        """Return a child taking each row's count from one of two random parents."""
        first, second = self._pick(parents), self._pick(parents)
        counts = []
        for left, right in zip(first, second, strict=True):
            from_left = torch.rand(left.numel(), generator=self.generator) < 0.5
            counts.append(torch.where(from_left, left, right))
        return self._repaired(counts)

    def mutate(self, parents: list[Candidate]) -> Candidate:
        """Return a copy of a random parent with each row redrawn with ``mutate_prob``."""
        parent = self._pick(parents)
        counts = []
        for budget, table_counts in zip(self.budgets, parent, strict=True):
            child = table_counts.clone()
            redraw = torch.rand(child.numel(), generator=self.generator) < self.settings.mutate_prob
            child[redraw] = budget.sample(int(redraw.sum()), self.generator)
            counts.append(child)
        return self._repaired(counts)


def optembed_search(context: SearchContext) -> SearchResult:
    """Train the OptEmbed supernet, then search per-row dimensions on validation NDCG@20.

    Returns:
        The best candidate's bool ``[N, d]`` masks per table, or a failure when the supernet's
        loss or every candidate's validation NDCG@20 is not finite.

    Raises:
        TypeError: if the model's tables are not :class:`OptEmbedSupernet` tables.
    """
    started = time.perf_counter()
    settings: OptEmbedSettings = context.settings
    tables = _supernet_tables(context)

    failure = _train_supernet(context, tables)
    if failure is not None:
        elapsed = {"search_seconds": time.perf_counter() - started}
        return SearchResult({}, elapsed, failure=f"search stage: {failure}")

    budgets = [
        TableBudget.build(t.row_norms(), float(t.threshold.detach()), t.dim, context.target)
        for t in tables
    ]
    _log_budgets(budgets, context.target)
    generator = torch.Generator().manual_seed(context.config.training.seed)
    best, best_score = _evolve(context, tables, budgets, _Evolution(budgets, settings, generator))
    if not math.isfinite(best_score):
        reason = "search stage: no candidate had a finite validation NDCG@20"
        return SearchResult({}, {"search_epochs": settings.supernet_epochs}, failure=reason)

    masks: dict[str, dict[str, torch.Tensor]] = {}
    for name, table, budget, counts in zip(TABLE_NAMES, tables, budgets, best, strict=True):
        dims = budget.full_dims(counts)
        table.set_candidate(dims)
        masks[name] = {"weight": dim_mask(dims, table.dim)}
    stored = sum(int(counts.sum()) for counts in best)
    full = sum(b.rows * b.dim for b in budgets)
    info: dict[str, Any] = {
        "search_epochs": settings.supernet_epochs,
        "search_generations": settings.generations,
        "search_best_val_ndcg_20": best_score,
        "search_sparsity": 1.0 - stored / full,
        "search_seconds": time.perf_counter() - started,
        "search_rows_dropped": sum(
            int((counts == 0).sum()) + b.rows - b.n_kept
            for counts, b in zip(best, budgets, strict=True)
        ),
        "search_rows_restored": sum(b.restored for b in budgets),
    }
    logger.info(
        "OptEmbed search done: val NDCG@20 %.5f at sparsity %.4f (target %.4f) in %.1f s",
        best_score,
        info["search_sparsity"],
        context.target,
        info["search_seconds"],
    )
    return SearchResult(masks, info)


def _supernet_tables(context: SearchContext) -> list[OptEmbedSupernet]:
    tables = [getattr(context.model, name) for name in TABLE_NAMES]
    for name, table in zip(TABLE_NAMES, tables, strict=True):
        if not isinstance(table, OptEmbedSupernet):
            raise TypeError(
                f"optembed_search needs OptEmbedSupernet tables, but {name} is "
                f"{type(table).__name__}"
            )
    return tables


def _train_supernet(context: SearchContext, tables: list[OptEmbedSupernet]) -> str | None:
    """Train the supernet with BPR for ``supernet_epochs`` and return a failure reason or None."""
    model = context.model
    for table in tables:
        table.set_candidate(None)
    sampler = context.make_sampler()
    optimizer = make_optimizer(model, context.config.training.lr)
    for epoch in range(1, context.settings.supernet_epochs + 1):
        loss = train_epoch(model, sampler, optimizer, epoch)
        if isinstance(loss, str):
            return loss
        kept = [int(table.rows_above_threshold().sum()) for table in tables]
        report = {
            "search_epoch": epoch,
            "search_loss": loss,
            "search_rows_kept_share": sum(kept) / sum(t.num_embeddings for t in tables),
            "search_user_threshold": float(tables[0].threshold.detach()),
            "search_item_threshold": float(tables[1].threshold.detach()),
        }
        context.report(report)
        logger.info(
            "supernet epoch %d: loss %.5f, rows kept %d of %d users and %d of %d items",
            epoch,
            loss,
            kept[0],
            tables[0].num_embeddings,
            kept[1],
            tables[1].num_embeddings,
        )
    return None


def _log_budgets(budgets: list[TableBudget], target: float) -> None:
    for name, budget in zip(TABLE_NAMES, budgets, strict=True):
        full = budget.rows * budget.dim
        if budget.restored:
            logger.warning(
                "%s: the row mask keeps only %d of %d rows, too few to hold the %d entries "
                "allowed at target %.4f; the %d rows of largest L1 norm are kept instead",
                name,
                budget.n_kept - budget.restored,
                budget.rows,
                budget.budget,
                target,
                budget.n_kept,
            )
        logger.info(
            "%s: candidates spread %d of %d entries over %d of %d rows",
            name,
            budget.budget,
            full,
            budget.n_kept,
            budget.rows,
        )


def _evolve(
    context: SearchContext,
    tables: list[OptEmbedSupernet],
    budgets: list[TableBudget],
    evolution: _Evolution,
) -> tuple[Candidate, float]:
    """Run the evolutionary search and return the best candidate and its validation NDCG@20."""
    settings: OptEmbedSettings = context.settings

    def evaluate(candidates: list[Candidate]) -> list[tuple[float, Candidate]]:
        scored = []
        for candidate in candidates:
            for table, budget, counts in zip(tables, budgets, candidate, strict=True):
                if int(counts.sum()) > budget.budget:
                    raise RuntimeError(
                        f"OptEmbed candidate keeps {int(counts.sum())} entries, over the "
                        f"budget of {budget.budget}; the repair step is broken"
                    )
                table.set_candidate(budget.full_dims(counts))
            context.model.eval()
            scored.append((context.validation_ndcg(), candidate))
        return scored

    def select(scored: list[tuple[float, Candidate]]) -> list[tuple[float, Candidate]]:
        # sorted() is stable, so among equal scores the earlier candidate stays ahead.
        return sorted(scored, key=lambda pair: -pair[0])[: settings.keep_top]

    pool = select(evaluate([evolution.random() for _ in range(settings.population)]))
    logger.info("OptEmbed search: initial population, best val NDCG@20 %.5f", pool[0][0])
    for generation in range(1, settings.generations + 1):
        parents = [candidate for _, candidate in pool]
        children = [evolution.crossover(parents) for _ in range(settings.crossovers)]
        children += [evolution.mutate(parents) for _ in range(settings.mutations)]
        pool = select(pool + evaluate(children))
        logger.info(
            "OptEmbed search: generation %d of %d, best val NDCG@20 %.5f",
            generation,
            settings.generations,
            pool[0][0],
        )
    best_score, best = pool[0]
    return best, best_score
