"""The result of one trial, as returned by ``run_trial`` and written to ``outcome.json``."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

COMPLETED = "completed"
FAILED = "failed"


@dataclass
class TrialOutcome:
    """Status, selected-model metrics and history of one trial.

    ``metrics`` contains the ``val_*`` and ``test_*`` figures of the selected (best validation
    NDCG@20) model, ``params_full``, ``params_stored``, ``sparsity``, ``sparsity_target``,
    ``artifact_bytes``, ``train_seconds`` and ``peak_rss_mb``. A failed trial keeps the metrics
    of its best model before the failure, if it had one.
    """

    status: str
    failure_reason: str | None
    best_epoch: int
    epochs_run: int
    metrics: dict[str, float]
    checkpoint_path: str | None
    history: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """Return the outcome as JSON-serialisable builtins (non-finite floats become None)."""
        return _json_safe(
            {
                "status": self.status,
                "failure_reason": self.failure_reason,
                "best_epoch": self.best_epoch,
                "epochs_run": self.epochs_run,
                "metrics": self.metrics,
                "checkpoint_path": self.checkpoint_path,
                "history": self.history,
            }
        )

    def write_json(self, path: str | Path) -> None:
        """Write :meth:`to_dict` to ``path`` as indented JSON."""
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n", encoding="utf-8")


def _json_safe(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(key): _json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(item) for item in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if hasattr(value, "item") and callable(value.item):
        return _json_safe(value.item())
    return value
