"""A model rebuilt from its artifact bytes scores like the model itself, in both modes."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

from lers_ray.config import BackboneConfig
from lers_ray.data.dataset import InteractionData
from lers_ray.edge.codecs import codec_of
from lers_ray.edge.container import ArtifactError
from lers_ray.edge.export import graph_artifact, model_artifact
from lers_ray.edge.loader import MODES, EdgeRecommender, load_graph, load_model
from lers_ray.embeddings.base import EmbeddingTable
from lers_ray.models import CFModel, build_model

USERS = (0, 1, 17, 500, 942)
CODEC_METHODS = {
    "dense": "full",
    "csr": "magprune",
    "ptq": "ptq",
    "qr": "qr",
    "ttrec": "ttrec",
    "dhe": "dhe",
    "cerp": "cerp",
}
"""A method whose finished tables are stored with each codec."""
TableFactory = Callable[[str, int, int, float], EmbeddingTable]


def artifacts(
    finished_table: TableFactory, method: str, backbone: str, data: InteractionData
) -> tuple[CFModel, bytes, bytes]:
    torch.manual_seed(0)
    user_table = finished_table(method, data.n_users, 32, 0.8)
    item_table = finished_table(method, data.n_items, 32, 0.8)
    backbone_config = BackboneConfig(name=backbone, dim=32, num_layers=2)
    model = build_model(backbone_config, user_table, item_table, data.train, 0.0).eval()
    blob = model_artifact(
        model, method=method, target=0.8, dataset=data.name, fingerprint=data.fingerprint
    )
    graph = graph_artifact(
        data.train, data.n_users, data.n_items, dataset=data.name, fingerprint=data.fingerprint
    )
    return model, blob, graph


@pytest.mark.parametrize("backbone", ["mf", "lightgcn"])
@pytest.mark.parametrize("codec", list(CODEC_METHODS))
def test_artifact_matches_model_scores(
    codec: str, backbone: str, ml100k: InteractionData, finished_table: TableFactory
) -> None:
    model, blob, graph = artifacts(finished_table, CODEC_METHODS[codec], backbone, ml100k)
    assert codec_of(model.user_table) == codec
    recommender = EdgeRecommender(load_model(blob), load_graph(graph))
    recommender.precompute()
    with torch.no_grad():
        users, items = model.final_embeddings()
    for user in USERS:
        expected = items @ users[user]
        masked = expected.clone()
        masked[ml100k.train[ml100k.train[:, 0] == user, 1]] = float("-inf")
        top = torch.topk(masked, 20)
        for mode in MODES:
            scores = recommender.scores(user, mode)
            assert torch.allclose(scores, expected, atol=1e-5, rtol=0), (mode, user)
            ids, values = recommender.recommend(user, 20, mode)
            assert torch.allclose(values, top.values, atol=1e-5, rtol=0), (mode, user)
            # Same items, up to swaps among scores tied within 1e-5.
            assert torch.allclose(expected[ids], values, atol=1e-5, rtol=0), (mode, user)


def test_train_items_are_never_recommended(
    ml100k: InteractionData, finished_table: TableFactory
) -> None:
    _, blob, graph = artifacts(finished_table, "magprune", "mf", ml100k)
    recommender = EdgeRecommender(load_model(blob), load_graph(graph))
    for user in USERS:
        ids, _ = recommender.recommend(user, 20, "per_query")
        seen = set(recommender.graph.train_items(user).tolist())
        assert not seen & set(ids.tolist())


def test_graph_of_another_split_is_refused(
    ml100k: InteractionData, finished_table: TableFactory
) -> None:
    _, blob, _ = artifacts(finished_table, "full", "mf", ml100k)
    other = graph_artifact(
        ml100k.train, ml100k.n_users, ml100k.n_items, dataset="ml-100k", fingerprint="other"
    )
    with pytest.raises(ArtifactError, match="use the graph.lers written for the model's dataset"):
        EdgeRecommender(load_model(blob), load_graph(other))


def test_model_and_graph_files_are_not_interchangeable(
    ml100k: InteractionData, finished_table: TableFactory
) -> None:
    _, blob, graph = artifacts(finished_table, "full", "mf", ml100k)
    with pytest.raises(ArtifactError, match="expected a 'cf_model' artifact, found 'cf_graph'"):
        load_model(graph)
    with pytest.raises(ArtifactError, match="expected a 'cf_graph' artifact, found 'cf_model'"):
        load_graph(blob)


def test_unknown_mode_is_named(ml100k: InteractionData, finished_table: TableFactory) -> None:
    _, blob, graph = artifacts(finished_table, "full", "mf", ml100k)
    recommender = EdgeRecommender(load_model(blob), load_graph(graph))
    with pytest.raises(ValueError, match="unknown query mode 'cached'"):
        recommender.scores(0, "cached")
    with pytest.raises(ValueError, match="call precompute"):
        recommender.scores(0, "precomputed")
