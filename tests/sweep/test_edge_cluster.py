"""Edge measurement on a worker node that advertises ``edge_pi``, on a loopback cluster."""

from __future__ import annotations

import json
import subprocess
import sys

import pandas as pd
import pytest
import yaml
from mlflow.tracking import MlflowClient

pytestmark = pytest.mark.slow

NODES = """
import json, sys, ray
ray.init(address=sys.argv[1], logging_level="ERROR")
print(json.dumps({n["NodeManagerAddress"]: n["NodeID"] for n in ray.nodes() if n["Alive"]}))
"""


def node_ids(address: str, env: dict[str, str]) -> dict[str, str]:
    found = subprocess.run(
        [sys.executable, "-c", NODES, address],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    return dict(json.loads(found.stdout.strip().splitlines()[-1]))


def test_edge_tasks_run_on_the_edge_worker(tmp_path, ray_head_and_edge, small_spec, run_cli):
    cluster = ray_head_and_edge
    spec = small_spec(name="edge_cluster", edge={"repeats": 30, "warmup": 2})
    spec_path = tmp_path / "spec.yaml"
    spec_path.write_text(yaml.safe_dump(spec))
    sweep_dir = tmp_path / "sweep"
    result = run_cli(
        ["sweep", str(spec_path), "--address", cluster.address, "--output-dir", str(sweep_dir)],
        cwd=tmp_path,
        env=cluster.env,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    assert "no Ray node advertises" not in result.stderr

    ids = node_ids(cluster.address, cluster.env)
    results = pd.read_parquet(sweep_dir / "results.parquet")
    measured = results[results["edge.status"].notna()]
    # One measurement per study (its best trial), on the edge worker; trials on the head.
    assert sorted(measured["study_id"]) == sorted(results["study_id"].unique())
    assert set(results["node_ip"]) == {"127.0.0.2"}
    assert set(measured["edge.status"]) == {"ok"}
    assert set(measured["edge.simulated"]) == {"false"}
    assert set(measured["edge.node_ip"]) == {"127.0.0.3"}
    assert set(measured["edge.node_id"]) == {ids["127.0.0.3"]}
    assert ids["127.0.0.3"] != ids["127.0.0.2"]
    for column in ("edge.per_query.p95_ms", "edge.precomputed.p50_ms", "edge.load_ms"):
        assert (measured[column] > 0).all(), column
    assert (measured["edge.artifact_bytes"] == measured["artifact_bytes"]).all()
    assert set(measured["edge.repeats"]) == {"30"}
    assert set(measured["edge.sweep_stack_loaded"]) == {""}
    assert (sweep_dir / "edge" / "synthetic.graph.lers").is_file()

    client = MlflowClient(f"sqlite:///{sweep_dir / 'mlflow.db'}")
    for row in measured.itertuples():
        run = client.get_run(row.mlflow_run_id)
        assert run.data.tags["edge.node_id"] == ids["127.0.0.3"]
        assert run.data.tags["edge.machine"]
        assert run.data.tags["edge.ray"]
        assert run.data.metrics["edge.per_query.p50_ms"] > 0
        assert run.data.metrics["edge.precomputed.peak_rss_mb"] > 0
        assert run.data.tags["artifact.edge.sha256"]
    assert "edge p50 ms" in result.stdout
