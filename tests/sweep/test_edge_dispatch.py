"""The edge dispatcher on a local Ray cluster: fallback when the edge node is gone, errors."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch

from lers_ray.config import BackboneConfig, DatasetConfig, SyntheticConfig, TrialConfig
from lers_ray.data import load_dataset
from lers_ray.edge.export import write_model_artifact
from lers_ray.embeddings.full import FullEmbedding
from lers_ray.models import build_model
from lers_ray.sweep.edge_dispatch import DEVICE, EdgeDispatcher, EdgeJob
from lers_ray.sweep.results import ResultsTable
from lers_ray.sweep.spec import EdgeSpec
from lers_ray.tracking.mlflow_tracker import MlflowSweepTracker
from lers_ray.training.checkpoint import save_checkpoint

pytestmark = pytest.mark.slow

DATASET = DatasetConfig(
    name="synthetic", synthetic=SyntheticConfig(n_users=60, n_items=90, n_interactions=900)
)


def make_dispatcher(tmp_path: Path, when_missing: str) -> tuple[EdgeDispatcher, EdgeJob]:
    data = load_dataset(DATASET)
    torch.manual_seed(0)
    config = TrialConfig(dataset=DATASET, backbone=BackboneConfig(name="mf", dim=8))
    tables = [FullEmbedding(rows, 8) for rows in (data.n_users, data.n_items)]
    model = build_model(config.backbone, *tables, data.train, 0.0)
    artifact = tmp_path / "trial" / "artifact.lers"
    artifact.parent.mkdir(parents=True)
    write_model_artifact(
        artifact, model, method="full", target=0.0, dataset=data.name, fingerprint=data.fingerprint
    )
    save_checkpoint(artifact.with_name("best_model.pt"), model, config, data, epoch=1)
    results = ResultsTable(tmp_path)
    results.upsert({"trial_key": "s/0", "status": "completed"})
    tracker = MlflowSweepTracker(f"sqlite:///{tmp_path / 'mlflow.db'}", "edge", "sweep-id")
    spec = EdgeSpec(when_missing=when_missing, repeats=3, warmup=1, timeout_s=120)
    dispatcher = EdgeDispatcher(spec, tmp_path, tmp_path, tracker, results)
    return dispatcher, EdgeJob("s/0", "s", DATASET, artifact, run_id=None)


def test_edge_node_gone_falls_back_to_simulation(ray_session, tmp_path, caplog) -> None:
    dispatcher, job = make_dispatcher(tmp_path, "simulate")
    dispatcher.start()
    # As if an edge node had been there at start and left before the submission.
    dispatcher.mode = DEVICE
    dispatcher._next_look = float("inf")
    dispatcher.add(job)
    with caplog.at_level(logging.WARNING, logger="lers_ray"):
        dispatcher.drain()
    assert "the edge node left the cluster" in caplog.text
    assert dispatcher.results.value("s/0", "edge.status") == "ok"
    assert dispatcher.results.value("s/0", "edge.simulated") == "true"
    assert (tmp_path / "edge" / "synthetic.graph.lers").is_file()


def test_measured_trial_is_not_queued_again(ray_session, tmp_path) -> None:
    dispatcher, job = make_dispatcher(tmp_path, "simulate")
    dispatcher.start()
    dispatcher.add(job)
    dispatcher.drain()
    assert dispatcher.results.value("s/0", "edge.status") == "ok"
    again, _ = make_dispatcher(tmp_path / "again", "simulate")
    again.results = dispatcher.results
    again.start()
    again.add(job)
    assert again.pending() == 0


def test_missing_artifact_is_exported_from_checkpoint(ray_session, tmp_path) -> None:
    """A trial stopped early has its best_model.pt but never wrote its artifact."""
    dispatcher, job = make_dispatcher(tmp_path, "simulate")
    expected = job.artifact.read_bytes()
    job.artifact.unlink()
    dispatcher.start()
    dispatcher.add(job)
    dispatcher.drain()
    assert dispatcher.results.value("s/0", "edge.status") == "ok"
    assert job.artifact.read_bytes() == expected


def test_missing_artifact_and_model_fail(ray_session, tmp_path) -> None:
    dispatcher, job = make_dispatcher(tmp_path, "simulate")
    job.artifact.unlink()
    job.artifact.with_name("best_model.pt").unlink()
    dispatcher.start()
    dispatcher.add(job)
    dispatcher.drain()
    assert dispatcher.results.value("s/0", "edge.status") == "failed"
    reason = dispatcher.results.value("s/0", "edge.failure_reason")
    assert "artifact.lers not found, and no best_model.pt beside it" in reason
