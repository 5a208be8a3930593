"""Kill a real sweep process mid-run, resume it, and check nothing finished runs twice."""

from __future__ import annotations

import collections
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import psutil
import pytest
import yaml
from mlflow.tracking import MlflowClient

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]


def sweep_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "lers_ray.cli.main", "sweep", *args]


def kill_tree(process: subprocess.Popen) -> None:
    """SIGKILL the sweep driver and every process it started (its local Ray cluster)."""
    parent = psutil.Process(process.pid)
    family = parent.children(recursive=True) + [parent]
    for member in family:
        try:
            member.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(family, timeout=30)
    process.wait(timeout=30)


def finished_rows(sweep_dir: Path) -> pd.DataFrame:
    path = sweep_dir / "results.parquet"
    return pd.read_parquet(path) if path.exists() else pd.DataFrame()


def test_killed_sweep_resumes_without_rerunning(tmp_path, small_spec, run_cli):
    sweep_dir = tmp_path / "sweep"
    spec = small_spec(
        name="resume_check",
        datasets=[
            {
                "name": "synthetic",
                "synthetic": {"n_users": 400, "n_items": 600, "n_interactions": 10000},
            }
        ],
        trials_per_study=4,
        epochs=6,
        seed=11,
        output_dir=str(sweep_dir),
    )
    spec_path = tmp_path / "spec.yaml"
    spec_path.write_text(yaml.safe_dump(spec))
    env = dict(os.environ)
    log = (tmp_path / "first.log").open("w")
    first = subprocess.Popen(
        sweep_command(str(spec_path), "--num-cpus", "2"),
        cwd=tmp_path,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 240
        while len(finished_rows(sweep_dir)) < 2:
            assert first.poll() is None, (tmp_path / "first.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "no trial finished within 240 s"
            time.sleep(0.5)
    finally:
        kill_tree(first)
    before = finished_rows(sweep_dir)
    assert 2 <= len(before) < 8, "the kill must land mid-sweep"
    finished_before = dict(zip(before["trial_key"], before["finished_at"]))

    second = run_cli(["sweep", "--resume", str(sweep_dir), "--num-cpus", "2"], cwd=tmp_path)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    assert "magprune.sp80" in second.stdout  # the final table of best trials

    after = finished_rows(sweep_dir)
    # No trial that had finished before the kill ran again: its row is untouched.
    for key, finished_at in finished_before.items():
        row = after[after["trial_key"] == key].iloc[0]
        assert row["finished_at"] == finished_at, key
    per_study = after.groupby("study_id")["status"].apply(list).to_dict()
    assert sorted(per_study) == ["synthetic.mf.full", "synthetic.mf.magprune.sp80"]
    for study_id, statuses in per_study.items():
        assert statuses.count("completed") == 4, (study_id, statuses)

    # Exactly one MLflow run per trial: trial keys are unique, every row's run exists, and a
    # trial interrupted by the kill keeps its own run, marked KILLED.
    state = json.loads((sweep_dir / "sweep.json").read_text())
    client = MlflowClient(state["tracking_uri"])
    (experiment,) = [e for e in client.search_experiments() if e.name == "resume_check"]
    runs = client.search_runs([experiment.experiment_id], max_results=1000)
    trial_runs = [r for r in runs if r.data.tags.get("lers.level") == "trial"]
    counts = collections.Counter(r.data.tags["lers.run_key"] for r in trial_runs)
    assert all(count == 1 for count in counts.values()), counts
    run_by_key = {r.data.tags["lers.run_key"]: r for r in trial_runs}
    for _, row in after.iterrows():
        assert run_by_key[row["trial_key"]].info.run_id == row["mlflow_run_id"]
        assert run_by_key[row["trial_key"]].info.status == "FINISHED"
    extra = set(run_by_key) - set(after["trial_key"])
    for key in extra:
        assert run_by_key[key].info.status == "KILLED"
        assert run_by_key[key].data.tags.get("lers.interrupted") == "true"
    sweep_runs = [r for r in runs if r.data.tags.get("lers.level") == "sweep"]
    study_runs = [r for r in runs if r.data.tags.get("lers.level") == "study"]
    assert len(sweep_runs) == 1
    assert len(study_runs) == 2
