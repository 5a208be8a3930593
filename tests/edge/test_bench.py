"""The measuring process: figures in its JSON, and its exit when its parent is killed."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psutil
import torch

from lers_ray.config import BackboneConfig
from lers_ray.data.dataset import InteractionData
from lers_ray.edge.export import write_graph_artifact, write_model_artifact
from lers_ray.embeddings.full import FullEmbedding
from lers_ray.models import build_model


def write_artifacts(folder: Path) -> tuple[Path, Path]:
    rng = np.random.default_rng(0)
    pairs = np.unique(np.stack([rng.integers(0, 40, 400), rng.integers(0, 60, 400)], 1), axis=0)
    empty = np.zeros((0, 2), dtype=np.int64)
    data = InteractionData("tiny", 40, 60, pairs, empty, empty, "tiny-split")
    torch.manual_seed(0)
    tables = [FullEmbedding(rows, 8) for rows in (40, 60)]
    model = build_model(BackboneConfig(name="mf", dim=8), *tables, pairs, 0.0)
    artifact, graph = folder / "artifact.lers", folder / "graph.lers"
    write_model_artifact(
        artifact, model, method="full", target=0.0, dataset="tiny", fingerprint="tiny-split"
    )
    write_graph_artifact(graph, data)
    return artifact, graph


def test_module_prints_figures_as_json(tmp_path: Path) -> None:
    artifact, graph = write_artifacts(tmp_path)
    done = subprocess.run(
        [sys.executable, "-m", "lers_ray.edge.bench", str(artifact), str(graph), "--repeats=3"],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    figures = json.loads(done.stdout)
    assert figures["metrics"]["edge.per_query.p50_ms"] > 0
    assert figures["tags"]["edge.repeats"] == "3"
    assert figures["tags"]["edge.backbone"] == "mf"


def test_measurement_exits_when_its_parent_is_killed(tmp_path: Path) -> None:
    artifact, graph = write_artifacts(tmp_path)
    command = (
        f"{sys.executable} -m lers_ray.edge.bench {artifact} {graph} --repeats=10000000 "
        "--exit-with-parent & echo $!; wait"
    )
    parent = subprocess.Popen(["bash", "-c", command], stdout=subprocess.PIPE, text=True)
    assert parent.stdout is not None
    child = psutil.Process(int(parent.stdout.readline()))
    time.sleep(3.0)
    assert child.is_running()
    parent.kill()
    parent.wait(timeout=30)
    exited, _ = psutil.wait_procs([child], timeout=15)
    assert exited == [child]
