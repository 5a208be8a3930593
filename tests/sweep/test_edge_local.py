"""Sweeps on a cluster without an ``edge_pi`` node: simulate, skip, time out, resume."""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd
import pytest
import yaml
from mlflow.tracking import MlflowClient

from lers_ray.sweep.runner import run_sweep
from lers_ray.sweep.spec import parse_sweep_spec

pytestmark = pytest.mark.slow

WARNING = "no Ray node advertises the resource 'edge_pi'"


def sweep(small_spec, tmp_path: Path, name: str, edge: dict, caplog) -> tuple[Path, pd.DataFrame]:
    data = small_spec(name=name, methods=["full"], output_dir=str(tmp_path / name), edge=edge)
    with caplog.at_level(logging.INFO, logger="lers_ray"):
        outcome = run_sweep(parse_sweep_spec(data))
    assert outcome.complete
    return outcome.sweep_dir, pd.read_parquet(outcome.sweep_dir / "results.parquet")


def test_no_edge_node_warns_and_simulates(ray_session, small_spec, tmp_path, caplog):
    sweep_dir, results = sweep(small_spec, tmp_path, "simulated", {"repeats": 30}, caplog)
    assert caplog.text.count(WARNING) == 1
    assert "measured on this node after the trials" in caplog.text
    measured = results[results["edge.status"].notna()]
    assert len(measured) == 1
    row = measured.iloc[0]
    assert row["edge.status"] == "ok"
    assert row["edge.simulated"] == "true"
    assert row["edge.per_query.p50_ms"] > 0
    assert row["edge.per_query.p95_ms"] >= row["edge.per_query.p50_ms"]
    run = MlflowClient(f"sqlite:///{sweep_dir / 'mlflow.db'}").get_run(row["mlflow_run_id"])
    assert run.data.tags["edge.simulated"] == "true"
    assert run.data.metrics["edge.load_ms"] > 0


def test_no_edge_node_skip_mode(ray_session, small_spec, tmp_path, caplog):
    _, results = sweep(small_spec, tmp_path, "skipped", {"when_missing": "skip"}, caplog)
    assert caplog.text.count(WARNING) == 1
    assert "edge measurement is skipped" in caplog.text
    measured = results[results["edge.status"].notna()]
    assert list(measured["edge.status"]) == ["skipped"]
    assert "edge.per_query.p50_ms" not in results.columns


def test_measurement_timeout_is_recorded(ray_session, small_spec, tmp_path, caplog):
    _, results = sweep(small_spec, tmp_path, "timeout", {"timeout_s": 0.2}, caplog)
    measured = results[results["edge.status"].notna()]
    assert list(measured["edge.status"]) == ["timeout"]
    assert "edge.timeout_s=0.2" in measured.iloc[0]["edge.failure_reason"]


def test_resume_measures_missing_trials_only(ray_session, small_spec, tmp_path, caplog):
    sweep_dir, before = sweep(small_spec, tmp_path, "resumed", {"when_missing": "skip"}, caplog)
    spec_file = sweep_dir / "spec.yaml"
    stored = yaml.safe_load(spec_file.read_text())
    stored["edge"]["when_missing"] = "simulate"
    spec_file.write_text(yaml.safe_dump(stored))

    outcome = run_sweep(resume_dir=sweep_dir)
    assert outcome.complete
    after = pd.read_parquet(sweep_dir / "results.parquet")
    assert sorted(after["trial_key"]) == sorted(before["trial_key"])
    assert sorted(after["finished_at"]) == sorted(before["finished_at"])
    assert list(after.loc[after["edge.status"].notna(), "edge.status"]) == ["ok"]


def test_trials_all_measures_every_trial(ray_session, small_spec, tmp_path, caplog):
    edge = {"when_missing": "skip", "trials": "all"}
    _, results = sweep(small_spec, tmp_path, "every_trial", edge, caplog)
    assert len(results) == 2
    assert list(results["edge.status"]) == ["skipped", "skipped"]
