"""``lers-ray edge-bench``: the standalone measurement of an artifact, without Ray."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from lers_ray.config import BackboneConfig
from lers_ray.data.dataset import InteractionData
from lers_ray.edge.export import write_graph_artifact, write_model_artifact
from lers_ray.embeddings.full import FullEmbedding
from lers_ray.embeddings.magprune import prune_table
from lers_ray.models import build_model


def small_data() -> InteractionData:
    rng = np.random.default_rng(0)
    pairs = np.unique(np.stack([rng.integers(0, 50, 600), rng.integers(0, 80, 600)], 1), axis=0)
    empty = np.zeros((0, 2), dtype=np.int64)
    return InteractionData("tiny", 50, 80, pairs, empty, empty, "tiny-split")


def write_artifacts(folder: Path, data: InteractionData) -> Path:
    torch.manual_seed(0)
    tables = [prune_table(FullEmbedding(rows, 16), 0.8) for rows in (data.n_users, data.n_items)]
    model = build_model(BackboneConfig(name="lightgcn", dim=16), *tables, data.train, 0.0)
    artifact = folder / "studies" / "s" / "trial_0000" / "artifact.lers"
    artifact.parent.mkdir(parents=True)
    write_model_artifact(
        artifact, model, method="magprune", target=0.8, dataset="tiny", fingerprint="tiny-split"
    )
    return artifact


def test_edge_bench_writes_figures(tmp_path: Path, run_cli) -> None:
    data = small_data()
    artifact = write_artifacts(tmp_path, data)
    (tmp_path / "edge").mkdir()
    write_graph_artifact(tmp_path / "edge" / "tiny.graph.lers", data)
    out = tmp_path / "figures.json"
    result = run_cli(
        ["edge-bench", str(artifact), "--repeats", "5", "--warmup", "1", "--out", str(out)],
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert "tiny.graph.lers" in result.stdout
    figures = json.loads(out.read_text())
    metrics, tags = figures["metrics"], figures["tags"]
    assert metrics["edge.artifact_bytes"] == artifact.stat().st_size
    for mode in ("per_query", "precomputed"):
        assert metrics[f"edge.{mode}.p50_ms"] > 0
        assert metrics[f"edge.{mode}.p95_ms"] >= metrics[f"edge.{mode}.p50_ms"]
        assert metrics[f"edge.{mode}.peak_rss_mb"] > 0
    assert metrics["edge.load_peak_rss_mb"] >= metrics["edge.rss_baseline_mb"]
    assert tags["edge.repeats"] == "5"
    assert tags["edge.threads"] == "1"
    assert tags["edge.codecs"] == '{"item": "csr", "user": "csr"}'
    # The measuring process loads the artifact without Ray, Optuna, MLflow or pandas.
    assert tags["edge.sweep_stack_loaded"] == ""


def test_edge_bench_missing_graph(tmp_path: Path, run_cli) -> None:
    artifact = write_artifacts(tmp_path, small_data())
    result = run_cli(["edge-bench", str(artifact)], cwd=tmp_path)
    assert result.returncode == 2
    assert "no graph artifact of split tiny-split found" in result.stderr
    assert "--graph" in result.stderr


def test_edge_bench_rejects_a_checkpoint_file(tmp_path: Path, run_cli) -> None:
    checkpoint = tmp_path / "best_model.pt"
    torch.save({"x": 1}, checkpoint)
    result = run_cli(["edge-bench", str(checkpoint), "--graph", str(checkpoint)], cwd=tmp_path)
    assert result.returncode == 2
    assert "best_model.pt: not a lers_ray edge artifact" in result.stderr


def test_edge_bench_bad_options_fail_before_measuring(tmp_path: Path, run_cli) -> None:
    data = small_data()
    artifact = write_artifacts(tmp_path, data)
    graph = tmp_path / "graph.lers"
    write_graph_artifact(graph, data)
    cases = [
        (["--repeats", "0"], "--repeats must be at least 1, got 0"),
        (["--out", str(tmp_path)], "is a folder; give a file name such as figures.json"),
    ]
    for extra, message in cases:
        result = run_cli(["edge-bench", str(artifact), "--graph", str(graph), *extra], tmp_path)
        assert result.returncode == 2, extra
        assert message in result.stderr, extra
    folder = run_cli(["edge-bench", str(artifact.parent)], tmp_path)
    assert folder.returncode == 2
    assert "is a folder; give the artifact.lers file inside it" in folder.stderr


def test_edge_bench_out_and_timeout(tmp_path: Path, run_cli) -> None:
    data = small_data()
    artifact = write_artifacts(tmp_path, data)
    graph = tmp_path / "graph.lers"
    write_graph_artifact(graph, data)
    out = tmp_path / "new" / "folder" / "figures.json"
    args = ["edge-bench", str(artifact), "--graph", str(graph), "--repeats", "2"]
    written = run_cli([*args, "--out", str(out)], tmp_path)
    assert written.returncode == 0, written.stderr
    assert json.loads(out.read_text())["tags"]["edge.repeats"] == "2"
    late = run_cli([*args, "--timeout", "0.01"], tmp_path)
    assert late.returncode == 1
    assert "timed out after 0.01 s" in late.stderr
