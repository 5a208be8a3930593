"""Export the best config of every study as a self-contained YAML, and reproduce one.

An exported file contains the resolved trial config (no search space), the seed, the split
fingerprint, the validation and test metrics, the achieved sparsity, and the versions that
produced it. A post-hoc method's file embeds its full model's config under ``config.base`` and
drops the checkpoint path, so ``lers-ray reproduce`` retrains the full model first and needs
nothing from the original sweep folder.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lers_ray.config import ConfigError, TrialConfig, dump_yaml, load_yaml_mapping
from lers_ray.sweep.results import best_row, read_results
from lers_ray.tracking.mlflow_tracker import is_number

logger = logging.getLogger(__name__)

EXPORT_FORMAT = 1
COMPARED_METRICS = (
    "val_recall_20",
    "val_ndcg_20",
    "test_recall_20",
    "test_ndcg_20",
    "sparsity",
)


def export_best_configs(sweep_dir: str | Path, out_dir: str | Path) -> list[Path]:
    """Write one YAML per study with the config of its best completed trial.

    The best trial is the one with the highest validation NDCG@20; test metrics never select.

    Returns:
        The written files, one per study that has a completed trial.

    Raises:
        FileNotFoundError: if the sweep has no ``results.parquet``.
        ConfigError: if the sweep has no completed trial at all.
    """
    from lers_ray.sweep.runner import load_sweep_dir
    from lers_ray.tracking.provenance import git_commit, package_versions

    sweep_dir = Path(sweep_dir).expanduser().resolve()
    spec, state = load_sweep_dir(sweep_dir)
    results = read_results(sweep_dir)
    completed = results[results["status"] == "completed"]
    if completed.empty:
        raise ConfigError(f"{sweep_dir}: no completed trial to export")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for study_id, group in completed.groupby("study_id", sort=True):
        best = best_row(group)
        config = json.loads(best["config"])
        config["base_checkpoint"] = None
        stopped_at = None
        if bool(best.get("stopped_early")) and _number(best.get("epochs_run")) is not None:
            # The early-stopping scheduler ended this trial after epochs_run epochs; retraining
            # the full budget could select a later epoch, so the export trains exactly as long.
            stopped_at = int(best["epochs_run"])
            config["training"]["epochs"] = stopped_at
        document = {
            "lers_ray_export": EXPORT_FORMAT,
            "study_id": study_id,
            "sweep": spec.name,
            "trial_key": best["trial_key"],
            "seed": config["training"]["seed"],
            "split_fingerprint": best["split_fingerprint"],
            "metrics": {
                "validation": _prefixed(best, "val_"),
                "test": _prefixed(best, "test_"),
            },
            "sparsity": {
                "target": float(best["sparsity_target"]),
                "achieved": _number(best.get("sparsity")),
                "params_full": _integer(best.get("params_full")),
                "params_stored": _integer(best.get("params_stored")),
            },
            "best_epoch": _integer(best.get("best_epoch")),
            "stopped_early_at_epoch": stopped_at,
            "versions": package_versions(),
            "git_commit": git_commit(),
            "mlflow": {"tracking_uri": state["tracking_uri"], "run_id": best["mlflow_run_id"]},
            "config": config,
        }
        path = out / f"{study_id}.yaml"
        dump_yaml(document, path)
        written.append(path)
        logger.info("exported %s (trial %s) to %s", study_id, best["trial_key"], path)
    return written


def _prefixed(row: Any, prefix: str) -> dict[str, float]:
    return {
        key.removeprefix(prefix): float(row[key])
        for key in row.index
        if key.startswith(prefix) and _number(row[key]) is not None
    }


def _integer(value: Any) -> int | None:
    number = _number(value)
    return None if number is None else int(number)


def _number(value: Any) -> float | None:
    if is_number(value) and math.isfinite(value):
        return float(value)
    return None


@dataclass
class Reproduction:
    """The outcome of retraining an exported config."""

    rows: list[tuple[str, float | None, float | None, float | None]]
    """(metric, exported value, reproduced value, relative difference)."""
    test_ndcg_relative_difference: float
    fingerprint_matches: bool
    passed: bool


def reproduce(
    export_file: str | Path,
    out_dir: str | Path,
    tolerance: float = 0.02,
    data_dir: str | Path | None = None,
) -> Reproduction:
    """Retrain an exported config and compare its metrics with the exported ones.

    Args:
        export_file: a file written by :func:`export_best_configs`.
        out_dir: folder for the retrained model.
        tolerance: largest accepted relative difference of test NDCG@20 (0.02 = 2%).
        data_dir: dataset folder (default: ``LERS_DATA_DIR``, then the per-user cache).

    Raises:
        ConfigError: if the file is not an export or its config is invalid.
    """
    from lers_ray.data import load_dataset
    from lers_ray.data.paths import resolve_data_dir
    from lers_ray.training.runner import run_trial

    document = load_yaml_mapping(export_file)
    if document.get("lers_ray_export") != EXPORT_FORMAT or "config" not in document:
        raise ConfigError(
            f"{export_file}: not a lers_ray export (expected 'lers_ray_export: {EXPORT_FORMAT}' "
            "and a 'config' section); create one with 'lers-ray export SWEEP_DIR --out DIR'"
        )
    config = TrialConfig.from_dict(document["config"], source=f"{export_file}: config")
    data = load_dataset(
        config.dataset, data_dir=resolve_data_dir(str(data_dir) if data_dir is not None else None)
    )
    fingerprint_matches = data.fingerprint == document.get("split_fingerprint")
    if not fingerprint_matches:
        logger.error(
            "split fingerprint %s differs from the exported %s: the data or split changed",
            data.fingerprint,
            document.get("split_fingerprint"),
        )
    outcome = run_trial(config, Path(out_dir), data=data)
    reproduced = outcome.metrics
    exported = {f"val_{k}": v for k, v in document["metrics"]["validation"].items()}
    exported.update({f"test_{k}": v for k, v in document["metrics"]["test"].items()})
    exported["sparsity"] = document["sparsity"]["achieved"]
    rows = []
    for name in COMPARED_METRICS:
        before, after = exported.get(name), reproduced.get(name)
        rows.append((name, before, after, _relative_difference(before, after)))
    ndcg_difference = _relative_difference(
        exported.get("test_ndcg_20"), reproduced.get("test_ndcg_20")
    )
    difference = math.inf if ndcg_difference is None else ndcg_difference
    passed = outcome.status == "completed" and fingerprint_matches and difference <= tolerance
    return Reproduction(rows, difference, fingerprint_matches, passed)


def _relative_difference(before: float | None, after: float | None) -> float | None:
    if before is None or after is None or not math.isfinite(after):
        return None
    if before == 0:
        return 0.0 if after == 0 else math.inf
    return abs(after - before) / abs(before)
