"""A sweep logging to a real ``mlflow server`` on 127.0.0.1, read back with the MLflow client."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from lers_ray.sweep.runner import run_sweep
from lers_ray.sweep.spec import parse_sweep_spec
from lers_ray.tracking.mlflow_tracker import mlflow_key

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def mlflow_server(tmp_path):
    port = free_port()
    env = dict(os.environ, MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false")
    log = (tmp_path / "server.log").open("w")
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mlflow",
            "server",
            "--backend-store-uri",
            f"sqlite:///{tmp_path / 'server.db'}",
            "--default-artifact-root",
            str(tmp_path / "artifacts"),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert server.poll() is None, (tmp_path / "server.log").read_text()[-3000:]
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                    if response.status == 200:
                        break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            assert time.monotonic() < deadline, "mlflow server did not answer /health in 120 s"
            time.sleep(0.5)
        yield url
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(timeout=20)


def test_nested_runs_on_mlflow_server(tmp_path, mlflow_server, ray_session, small_spec):
    epochs = 3
    spec = parse_sweep_spec(
        small_spec(
            name="server_check",
            epochs=epochs,
            output_dir=str(tmp_path / "sweep"),
            edge={"repeats": 30, "warmup": 1},
        )
    )
    outcome = run_sweep(spec, tracking_uri=mlflow_server)
    assert outcome.complete
    assert outcome.tracking_uri == mlflow_server

    client = MlflowClient(mlflow_server)
    experiment = client.get_experiment_by_name("server_check")
    runs = client.search_runs([experiment.experiment_id], max_results=100)
    by_level: dict[str, list] = {"sweep": [], "study": [], "trial": []}
    for run in runs:
        by_level[run.data.tags["lers.level"]].append(run)
    (sweep_run,) = by_level["sweep"]
    assert len(by_level["study"]) == 2
    assert len(by_level["trial"]) == 4
    assert sweep_run.info.status == "FINISHED"
    assert sweep_run.data.params["trials_per_study"] == "2"

    study_ids = {}
    for study in by_level["study"]:
        assert study.data.tags["mlflow.parentRunId"] == sweep_run.info.run_id
        assert study.info.status == "FINISHED"
        assert "val_ndcg_20" in study.data.metrics  # the best trial's metrics
        study_ids[study.info.run_id] = study.data.tags["study_id"]
    assert sorted(study_ids.values()) == ["synthetic.mf.full", "synthetic.mf.magprune.sp80"]

    for trial in by_level["trial"]:
        tags, metrics, params = trial.data.tags, trial.data.metrics, trial.data.params
        parent = tags["mlflow.parentRunId"]
        assert study_ids[parent] == tags["study_id"]
        assert trial.info.status == "FINISHED"
        for key in (
            "dataset",
            "backbone",
            "method",
            "sparsity_target",
            "trial_key",
            "split_fingerprint",
            "git_commit",
            "version.torch",
            "version.ray",
        ):
            assert tags.get(key), key
        for key in (
            "val_recall_20",
            "val_ndcg_20",
            "test_recall_20",
            "test_ndcg_20",
            "params_full",
            "params_stored",
            "sparsity",
            "train_seconds",
            "peak_rss_mb",
        ):
            assert key in metrics, key
        assert params["training.lr"]
        assert tags["artifact.model.path"] == str(Path(tags["trial_dir"]) / "best_model.pt")
        assert len(tags["artifact.model.sha256"]) == 64
        assert 0 < metrics["peak_rss_mb"] < 4096
        assert params["method.name"] == tags["method"]
        history = client.get_metric_history(trial.info.run_id, "epoch_val_ndcg_20")
        assert len(client.get_metric_history(trial.info.run_id, "val_ndcg_20")) == 1
        steps = sorted(point.step for point in history)
        if tags["method"] == "full":
            assert steps == list(range(1, epochs + 1))
            assert len(client.get_metric_history(trial.info.run_id, "train_loss")) == epochs
            assert metrics["sparsity"] == 0.0
            assert "artifact.base_model.path" not in tags
        else:
            assert steps == [0]
            # The pruned model and the full model it came from, referenced by path and hash.
            assert tags["artifact.base_model.path"].endswith("best_model.pt")
            assert len(tags["artifact.base_model.sha256"]) == 64
            assert 0.8 <= metrics["sparsity"] <= 0.81

    # Each study's best trial got its edge figures over HTTP after its run had ended.
    measured = [t for t in by_level["trial"] if "edge.status" in t.data.tags]
    assert sorted(t.data.tags["study_id"] for t in measured) == sorted(study_ids.values())
    for trial in measured:
        assert trial.data.tags["edge.status"] == "ok"
        assert trial.data.metrics["edge.per_query.p50_ms"] > 0
        assert trial.data.metrics["edge.artifact_bytes"] == trial.data.metrics["artifact_bytes"]


def test_mlflow_key_replaces_refused_characters():
    assert mlflow_key("method_overrides.magprune+ft.method.settings.lr") == (
        "method_overrides.magprune_ft.method.settings.lr"
    )
    assert mlflow_key("structure.user.radices") == "structure.user.radices"
