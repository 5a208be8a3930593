"""Comparison tables of a finished sweep: methods as rows, target sparsities as columns.

Each cell is the best trial of its study (highest validation NDCG@20 among completed trials,
preferring trials whose search stage reached the target): its test NDCG@20 and Recall@20 and
the sparsity it achieved. A cell whose trial's search stage ended below the target is marked
``(search short)``. A study skipped because its method
cannot reach the target shows ``n/a``.

With ``figures="edge"`` the cells hold the best trial's edge figures instead: artifact size
and the per-query and precomputed p50 latencies.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd

from lers_ray.sweep.results import best_row, read_results, search_shortfall

SELECT_BY = "val_ndcg_20"


def best_trials(results: pd.DataFrame) -> pd.DataFrame:
    """Return the best completed trial of every study (one row per ``study_id``).

    The choice is :func:`lers_ray.sweep.results.best_row`: trials whose search stage reached
    the target first, then the highest validation NDCG@20.
    """
    done = results[(results["status"] == "completed") & results[SELECT_BY].notna()]
    if done.empty:
        return done
    rows = [best_row(group) for _, group in done.groupby("study_id", sort=True)]
    return pd.DataFrame(rows).sort_values(["dataset", "method", "sparsity_target"])


FIGURES = ("accuracy", "edge")
"""Cell contents that :func:`method_target_table` can show."""


def method_target_table(
    results: pd.DataFrame,
    skipped: dict[str, str] | None = None,
    dataset: str | None = None,
    figures: str = "accuracy",
) -> str:
    """Return a Markdown table: one row per method, one column per target sparsity.

    With ``figures="accuracy"``, cells read ``NDCG@20 / Recall@20 (sparsity)`` on the test
    split. With ``figures="edge"``, cells read ``KiB, per-query p50 / precomputed p50 ms`` of
    the trial's artifact, or the edge status when it was not measured. The full model has one
    value, shown in its own row under every target. ``dataset`` picks one dataset when the
    sweep has several.

    Raises:
        ValueError: if the results hold several datasets and none is chosen, or ``figures``
            is unknown.
    """
    if figures not in FIGURES:
        raise ValueError(f"figures: {figures!r} is not one of {', '.join(FIGURES)}")
    best = best_trials(results)
    datasets = sorted(set(best["dataset"]))
    if dataset is None and len(datasets) > 1:
        raise ValueError(f"the sweep has several datasets ({', '.join(datasets)}); pick one")
    if dataset is not None:
        best = best[best["dataset"] == dataset]
    targets = sorted(t for t in set(best["sparsity_target"]) if t > 0)
    for study_id in skipped or {}:
        target = _target_of(study_id)
        if target is not None and target not in targets:
            targets.append(target)
    targets.sort()
    methods = sorted(set(best["method"]) | {_method_of(s) for s in skipped or {}})
    methods.sort(key=lambda name: (name != "full", name))

    lines = [
        "| method | " + " | ".join(f"{t:.0%}" for t in targets) + " |",
        "|---|" + "---|" * len(targets),
    ]
    for method in methods:
        rows = best[best["method"] == method]
        cells = []
        for target in targets:
            row = rows if method == "full" else rows[rows["sparsity_target"] == target]
            study = next(
                (s for s in skipped or {} if _method_of(s) == method and _target_of(s) == target),
                None,
            )
            if study is not None:
                cells.append("n/a (structure cannot reach the target)")
            elif row.empty:
                cells.append("–")
            elif figures == "edge":
                cells.append(_edge_cell(row.iloc[0]))
            else:
                first = row.iloc[0]
                short = search_shortfall(first.get("search_sparsity"), first["sparsity_target"])
                cells.append(
                    f"{first['test_ndcg_20']:.4f} / {first['test_recall_20']:.4f} "
                    f"({first['sparsity']:.4f})" + (" (search short)" if short > 0 else "")
                )
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _edge_cell(row: pd.Series) -> str:
    status = row.get("edge.status")
    if not isinstance(status, str):
        return "not measured"
    if status != "ok":
        return status
    simulated = " (simulated)" if row.get("edge.simulated") == "true" else ""
    return (
        f"{row['edge.artifact_bytes'] / 1024:.1f} KiB, {row['edge.per_query.p50_ms']:.2f} / "
        f"{row['edge.precomputed.p50_ms']:.3f} ms{simulated}"
    )


def sweep_table(
    sweep_dir: str | Path, dataset: str | None = None, figures: str = "accuracy"
) -> str:
    """Read a sweep folder's results and skipped studies and return :func:`method_target_table`."""
    sweep_dir = Path(sweep_dir)
    skipped_file = sweep_dir / "skipped_studies.json"
    skipped = json.loads(skipped_file.read_text()) if skipped_file.is_file() else {}
    return method_target_table(read_results(sweep_dir), skipped, dataset, figures)


_STUDY_ID = re.compile(r"^[^.]+\.[^.]+\.(?P<method>[^.]+)(\.sp(?P<target>[0-9.]+))?$")
"""``dataset.backbone.method[.spNN]``, as :func:`lers_ray.sweep.spec.study_id_for` writes it."""


def _method_of(study_id: str) -> str:
    match = _STUDY_ID.match(study_id)
    return match["method"] if match else study_id


def _target_of(study_id: str) -> float | None:
    match = _STUDY_ID.match(study_id)
    if not match or match["target"] is None:
        return None
    return round(float(match["target"]) / 100, 6)
