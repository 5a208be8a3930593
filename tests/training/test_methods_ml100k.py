"""Every registered method trains on MovieLens-100K at target 0.5 and its artifact scores
like the trained model.

"Untrained" is the model the trial builds before any update: fresh tables for methods that
train, the untrained full model compressed for post-hoc methods, the initial search tables for
two-stage methods.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from lers_ray.config import TrialConfig
from lers_ray.data import load_dataset
from lers_ray.data.dataset import InteractionData
from lers_ray.edge.export import ARTIFACT_FILE, write_graph_artifact
from lers_ray.embeddings.full import FullEmbedding
from lers_ray.embeddings.registry import available_methods, get_method
from lers_ray.embeddings.spec import POST_HOC
from lers_ray.models import CFModel, build_model
from lers_ray.training.checkpoint import build_tables, load_checkpoint
from lers_ray.training.outcome import COMPLETED
from lers_ray.training.runner import run_trial
from lers_ray.training.trainer import Evaluators, evaluate_split

pytestmark = pytest.mark.slow

TARGET = 0.5
EPOCHS = 5

SETTINGS: dict[str, dict[str, Any]] = {
    "magprune+ft": {"finetune_epochs": 2},
    "pep": {"search_epochs": 10, "init_threshold": -4.0},
    "cerp": {"search_epochs": 10, "init_threshold": -4.0},
    "optembed": {
        "supernet_epochs": 3,
        "generations": 2,
        "population": 6,
        "crossovers": 3,
        "mutations": 3,
        "keep_top": 4,
    },
}
"""Settings that keep each method's extra stages short enough for a test."""

EDGE_USERS = [0, 5, 100, 942]
FRESH_LOAD = """
import json, sys
import torch
from lers_ray.edge.loader import MODES, EdgeRecommender, load_graph, load_model

artifact, graph, out = sys.argv[1:4]
recommender = EdgeRecommender(load_model(artifact), load_graph(graph))
recommender.precompute()
found = {}
for user in json.loads(sys.argv[4]):
    for mode in MODES:
        ids, values = recommender.recommend(user, 20, mode)
        found[f"{mode}/{user}"] = (recommender.scores(user, mode), ids, values)
torch.save(found, out)
print(json.dumps(sorted(m for m in ("ray", "optuna", "mlflow") if m in sys.modules)))
"""
"""Run in a fresh Python process: load the artifact from disk and score ``EDGE_USERS``."""


def trial_dict(method: str) -> dict[str, Any]:
    return {
        "dataset": "ml-100k",
        "backbone": {"name": "lightgcn", "dim": 64, "num_layers": 2},
        "training": {
            "epochs": EPOCHS,
            "lr": 5e-3,
            "batch_size": 2048,
            "patience": 0,
            "seed": 7,
            "num_threads": 1,
        },
        "method": {
            "name": method,
            "target": 0.0 if method == "full" else TARGET,
            "settings": SETTINGS.get(method, {}),
        },
        "ks": [20],
    }


@pytest.fixture(scope="module")
def ml100k(data_dir: Path) -> InteractionData:
    return load_dataset(TrialConfig.from_dict(trial_dict("full")).dataset, data_dir=data_dir)


@pytest.fixture(scope="module")
def full_checkpoint(ml100k: InteractionData, tmp_path_factory: pytest.TempPathFactory) -> str:
    config = TrialConfig.from_dict(trial_dict("full"))
    outcome = run_trial(config, tmp_path_factory.mktemp("full"), data=ml100k)
    assert outcome.status == COMPLETED
    assert outcome.checkpoint_path is not None
    return outcome.checkpoint_path


def method_config(method: str, full_checkpoint: str) -> TrialConfig:
    data = trial_dict(method)
    if get_method(method).post_hoc:
        data["base"] = trial_dict("full")
        data["base_checkpoint"] = full_checkpoint
    return TrialConfig.from_dict(data)


def untrained_model(config: TrialConfig, data: InteractionData) -> CFModel:
    """Build the model the trial starts from, before any update."""
    spec = get_method(config.method.name)
    torch.manual_seed(config.training.seed)
    if spec.kind == POST_HOC:
        dim = config.backbone.dim
        settings = spec.parse_settings(config.method.settings)
        assert spec.from_trained is not None
        tables = [
            spec.from_trained(FullEmbedding(rows, dim), config.method.target, settings)
            for rows in (data.n_users, data.n_items)
        ]
    else:
        tables = list(build_tables(config, data.n_users, data.n_items, stage="search"))
    return build_model(config.backbone, tables[0], tables[1], data.train, 0.0)


def val_ndcg(model: CFModel, data: InteractionData) -> float:
    evaluators = Evaluators.for_data(data, [20], 4096)
    metrics = evaluate_split(model, evaluators.valid, "val_")
    assert isinstance(metrics, dict)
    return metrics["val_ndcg_20"]


@pytest.mark.parametrize("method", available_methods())
def test_method_trains_and_artifact_scores_match(
    method: str, ml100k: InteractionData, full_checkpoint: str, tmp_path: Path
) -> None:
    config = method_config(method, full_checkpoint)
    untrained = val_ndcg(untrained_model(config, ml100k), ml100k)

    outcome = run_trial(config, tmp_path / method, data=ml100k)
    assert outcome.status == COMPLETED, outcome.failure_reason
    trained = outcome.metrics["val_ndcg_20"]
    assert trained >= 3 * untrained, (method, trained, untrained)
    if method != "full":
        assert outcome.metrics["sparsity"] >= TARGET

    assert outcome.checkpoint_path is not None
    model, _ = load_checkpoint(outcome.checkpoint_path, ml100k)
    # The artifact alone rebuilds each table; a full-table model over those tables must score
    # every (user, item) pair as the trained model does.
    rebuilt = []
    for table in model.tables():
        dense = type(table).decode_artifact(table.export_artifact())
        with torch.no_grad():
            assert torch.allclose(dense, table.weight_matrix(), atol=1e-5, rtol=0)
        full = FullEmbedding(table.num_embeddings, table.dim)
        with torch.no_grad():
            full.weight.copy_(dense)
        rebuilt.append(full)
    adjacency = getattr(model, "adjacency", None)
    replica = build_model(
        config.backbone, rebuilt[0], rebuilt[1], ml100k.train, 0.0, adjacency
    ).eval()
    with torch.no_grad():
        users, items = model.final_embeddings()
        replica_users, replica_items = replica.final_embeddings()
        scores = users @ items.T
        replica_scores = replica_users @ replica_items.T
    assert torch.allclose(scores, replica_scores, atol=1e-5, rtol=0)
    assert val_ndcg(replica, ml100k) == pytest.approx(trained, abs=1e-6)

    # The artifact file the trial wrote, loaded in a fresh process without the sweep stack,
    # gives the trained model's scores and top 20 (train items masked) in both query modes.
    artifact = tmp_path / method / ARTIFACT_FILE
    assert outcome.metrics["artifact_bytes"] == artifact.stat().st_size
    graph = tmp_path / "graph.lers"
    write_graph_artifact(graph, ml100k)
    found_file = tmp_path / "found.pt"
    loaded = subprocess.run(
        [
            sys.executable,
            "-c",
            FRESH_LOAD,
            str(artifact),
            str(graph),
            str(found_file),
            json.dumps(EDGE_USERS),
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )
    assert json.loads(loaded.stdout) == []
    found = torch.load(found_file)
    for user in EDGE_USERS:
        expected = scores[user]
        masked = expected.clone()
        masked[ml100k.train[ml100k.train[:, 0] == user, 1]] = float("-inf")
        top = torch.topk(masked, 20)
        for mode in ("per_query", "precomputed"):
            raw, ids, values = found[f"{mode}/{user}"]
            assert torch.allclose(raw, expected, atol=1e-5, rtol=0), (mode, user)
            assert torch.allclose(values, top.values, atol=1e-5, rtol=0), (mode, user)
            # The same items, up to swaps among scores tied within 1e-5.
            assert torch.allclose(expected[ids], values, atol=1e-5, rtol=0), (mode, user)
