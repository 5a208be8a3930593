from __future__ import annotations

import itertools

import pandas as pd
import pytest

from lers_ray.sweep.report import best_trials, method_target_table

TRIAL_NUMBERS = itertools.count()


def row(study: str, method: str, target: float, val: float, test: float, status="completed"):
    return {
        "trial_number": next(TRIAL_NUMBERS),
        "study_id": study,
        "dataset": "ml-100k",
        "method": method,
        "sparsity_target": target,
        "status": status,
        "val_ndcg_20": val,
        "test_ndcg_20": test,
        "test_recall_20": test * 2,
        "sparsity": target + 0.001,
    }


RESULTS = pd.DataFrame(
    [
        row("ml-100k.lightgcn.full", "full", 0.0, 0.20, 0.21),
        row("ml-100k.lightgcn.full", "full", 0.0, 0.25, 0.24),
        row("ml-100k.lightgcn.full", "full", 0.0, 0.30, 0.99, status="failed"),
        row("ml-100k.lightgcn.magprune+ft.sp50", "magprune+ft", 0.5, 0.22, 0.23),
        row("ml-100k.lightgcn.ptq.sp50", "ptq", 0.5, 0.21, 0.2),
        row("ml-100k.lightgcn.ptq.sp80", "ptq", 0.8, 0.11, 0.1),
    ]
)


def test_best_trials_pick_highest_validation_among_completed():
    best = best_trials(RESULTS)
    full = best[best["method"] == "full"].iloc[0]
    assert full["test_ndcg_20"] == 0.24


def test_table_rows_are_methods_and_columns_targets():
    table = method_target_table(RESULTS, {"ml-100k.lightgcn.ptq.sp95": "4 bits reach 0.84375"})
    lines = table.splitlines()
    assert lines[0] == "| method | 50% | 80% | 95% |"
    assert lines[2].startswith("| full | 0.2400 / 0.4800 (0.0010) |")
    assert lines[3] == "| magprune+ft | 0.2300 / 0.4600 (0.5010) | – | – |"
    assert lines[4] == (
        "| ptq | 0.2000 / 0.4000 (0.5010) | 0.1000 / 0.2000 (0.8010) | "
        "n/a (structure cannot reach the target) |"
    )


def test_edge_table_shows_size_and_latency():
    edge = {
        "edge.status": "ok",
        "edge.simulated": "false",
        "edge.artifact_bytes": 2048.0,
        "edge.per_query.p50_ms": 1.5,
        "edge.precomputed.p50_ms": 0.02,
    }
    results = RESULTS.copy()
    for column, value in edge.items():
        results[column] = None
        results.loc[results["method"] == "ptq", column] = value
    results.loc[results["study_id"].str.endswith("sp80"), "edge.status"] = "timeout"
    lines = method_target_table(results, figures="edge").splitlines()
    assert lines[2] == "| full | not measured | not measured |"
    assert lines[4] == "| ptq | 2.0 KiB, 1.50 / 0.020 ms | timeout |"
    with pytest.raises(ValueError, match="figures: 'speed' is not one of"):
        method_target_table(RESULTS, figures="speed")


def test_several_datasets_need_a_choice():
    other = RESULTS.assign(
        dataset="gowalla", study_id=RESULTS["study_id"].str.replace("ml-100k", "gowalla")
    )
    both = pd.concat([RESULTS, other])
    with pytest.raises(ValueError, match="several datasets"):
        method_target_table(both)
    assert "full" in method_target_table(both, dataset="gowalla")


def test_trials_whose_search_reached_the_target_come_first():
    results = pd.DataFrame(
        [
            {**row("d.b.pep.sp80", "pep", 0.8, 0.30, 0.30), "search_sparsity": 0.6},
            {**row("d.b.pep.sp80", "pep", 0.8, 0.20, 0.20), "search_sparsity": 0.81},
        ]
    ).assign(dataset="d")
    best = best_trials(results).iloc[0]
    assert best["val_ndcg_20"] == 0.20
    only_short = results.iloc[:1]
    assert "(search short)" in method_target_table(only_short)
