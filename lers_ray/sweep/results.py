"""``results.parquet``: one row per finished trial, written as trials finish.

Rows are upserted by ``trial_key``, and the file is rewritten through a temporary file and an
atomic rename, so a sweep killed at any moment leaves the last complete table behind.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import pandas as pd

RESULTS_FILE = "results.parquet"


class ResultsTable:
    """The sweep's results file with upsert-by-trial-key semantics."""

    def __init__(self, sweep_dir: Path) -> None:
        self.path = sweep_dir / RESULTS_FILE
        self._rows: dict[str, dict[str, Any]] = {}
        if self.path.exists():
            for row in pd.read_parquet(self.path).to_dict("records"):
                self._rows[str(row["trial_key"])] = row

    def keys(self) -> set[str]:
        """Return the trial keys already recorded."""
        return set(self._rows)

    def upsert(self, row: dict[str, Any]) -> None:
        """Add or replace the row of ``row['trial_key']`` and rewrite the file atomically."""
        self._rows[str(row["trial_key"])] = row
        frame = pd.DataFrame(list(self._rows.values()))
        temporary = self.path.with_suffix(".parquet.tmp")
        frame.to_parquet(temporary, index=False)
        os.replace(temporary, self.path)

    def value(self, trial_key: str, column: str) -> Any:
        """Return one cell of a trial's row, or ``None`` when the row or the column is missing."""
        row = self._rows.get(trial_key)
        if row is None:
            return None
        value = row.get(column)
        if isinstance(value, float) and math.isnan(value):
            return None
        return value

    def update(self, trial_key: str, values: dict[str, Any]) -> None:
        """Set ``values`` in the row of ``trial_key`` (which must exist) and rewrite the file.

        Raises:
            KeyError: if no row has ``trial_key``.
        """
        self.upsert({**self._rows[trial_key], **values})

    def frame(self) -> pd.DataFrame:
        """Return all rows as a DataFrame."""
        return pd.DataFrame(list(self._rows.values()))


def read_results(sweep_dir: str | Path) -> pd.DataFrame:
    """Read a sweep's ``results.parquet``.

    Raises:
        FileNotFoundError: if the sweep has no results yet.
    """
    path = Path(sweep_dir) / RESULTS_FILE
    if not path.exists():
        raise FileNotFoundError(
            f"{path} not found: the sweep folder has no finished trials yet "
            "(is it the folder given as output_dir?)"
        )
    return pd.read_parquet(path)


def search_shortfall(search_sparsity: Any, target: float) -> float:
    """Return how far a two-stage trial's search stage ended below the target sparsity.

    PEP and CERP search until their pruned share reaches the target, up to a number of
    epochs. When the budget runs out first, the trial still fixes exactly the target's count
    of entries, but the thresholds did not get there. The shortfall is ``target -
    search_sparsity`` then, and 0 when the search reached the target or the method has no
    search stage (``search_sparsity`` missing).
    """
    if search_sparsity is None:
        return 0.0
    try:
        value = float(search_sparsity)
    except (TypeError, ValueError):
        return 0.0
    if math.isnan(value):
        return 0.0
    return max(0.0, float(target) - value)


def best_row(group: pd.DataFrame) -> pd.Series:
    """Return the best completed trial of one study's rows.

    Trials whose search stage reached the target come first (see :func:`search_shortfall`);
    among them the highest validation NDCG@20 wins, ties going to the lower trial number.
    When no trial's search reached the target, the best of all is returned.
    """
    shortfall = group.apply(
        lambda row: search_shortfall(row.get("search_sparsity"), row["sparsity_target"]), axis=1
    )
    ranked = group.assign(_reached=shortfall <= 0).sort_values(
        ["_reached", "val_ndcg_20", "trial_number"], ascending=[False, False, True]
    )
    return ranked.drop(columns="_reached").iloc[0]
