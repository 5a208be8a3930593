from __future__ import annotations

import numpy as np
import pytest
import torch

from lers_ray.config import BackboneConfig, ConfigError
from lers_ray.embeddings.full import FullEmbedding
from lers_ray.models import MF, LightGCN, build_model
from lers_ray.models.graph import layer_mean

TRAIN = np.array([[0, 0], [0, 1], [1, 1], [2, 3], [3, 2], [3, 3]])


def tables(seed: int = 0) -> tuple[FullEmbedding, FullEmbedding]:
    torch.manual_seed(seed)
    return FullEmbedding(4, 6, init_std=0.5), FullEmbedding(5, 6, init_std=0.5)


def test_mf_bpr_matches_formula() -> None:
    users_table, items_table = tables()
    model = MF(users_table, items_table, weight_decay=0.1)
    users, pos, neg = torch.tensor([0, 2]), torch.tensor([1, 3]), torch.tensor([4, 0])
    loss, l2 = model.bpr_batch(users, pos, neg)

    e_u, e_p, e_n = users_table.weight[users], items_table.weight[pos], items_table.weight[neg]
    margin = (e_u * e_p).sum(1) - (e_u * e_n).sum(1)
    expected_loss = -torch.nn.functional.logsigmoid(margin).mean()
    squared = e_u.pow(2).sum() + e_p.pow(2).sum() + e_n.pow(2).sum()
    assert torch.allclose(loss, expected_loss)
    assert torch.allclose(l2, 0.1 * squared / (2 * 2))


def test_bpr_several_negatives_shape() -> None:
    model = MF(*tables(), weight_decay=0.0)
    neg = torch.tensor([[4, 0, 2], [1, 1, 2]])
    loss, l2 = model.bpr_batch(torch.tensor([0, 2]), torch.tensor([1, 3]), neg)
    assert loss.dim() == 0
    assert l2.item() == 0.0


def test_lightgcn_final_embeddings_are_layer_mean() -> None:
    users_table, items_table = tables()
    model = LightGCN(users_table, items_table, TRAIN, num_layers=2, weight_decay=0.0)
    users, items = model.final_embeddings()
    ego = torch.cat([users_table.weight, items_table.weight])
    expected = layer_mean(model.adjacency, ego, 2)
    assert torch.allclose(users, expected[:4])
    assert torch.allclose(items, expected[4:])


def test_lightgcn_batch_embeddings_match_final() -> None:
    model = LightGCN(*tables(), TRAIN, num_layers=3, weight_decay=1e-3)
    users_all, items_all = model.final_embeddings()
    users, items = torch.tensor([3, 0, 3]), torch.tensor([4, 1, 1, 0])
    batch_users, batch_items = model.batch_embeddings(users, items)
    assert torch.allclose(batch_users, users_all[users], atol=1e-6)
    assert torch.allclose(batch_items, items_all[items], atol=1e-6)


def test_lightgcn_l2_on_layer_zero() -> None:
    users_table, items_table = tables()
    model = LightGCN(users_table, items_table, TRAIN, num_layers=3, weight_decay=0.5)
    users, pos, neg = torch.tensor([1]), torch.tensor([2]), torch.tensor([0])
    _, l2 = model.bpr_batch(users, pos, neg)
    squared = (
        users_table.weight[1].pow(2).sum()
        + items_table.weight[2].pow(2).sum()
        + items_table.weight[0].pow(2).sum()
    )
    assert torch.allclose(l2, 0.5 * squared / 2)


def test_adjacency_not_in_state_dict() -> None:
    model = LightGCN(*tables(), TRAIN, num_layers=1, weight_decay=0.0)
    assert set(model.state_dict()) == {"user_table.weight", "item_table.weight"}


def test_build_model_by_name() -> None:
    assert isinstance(build_model(BackboneConfig(name="mf"), *tables(), TRAIN, 0.0), MF)
    model = build_model(BackboneConfig(name="lightgcn", num_layers=2), *tables(), TRAIN, 0.0)
    assert isinstance(model, LightGCN)
    assert model.num_layers == 2
    with pytest.raises(ConfigError, match="unknown backbone 'gcn'"):
        build_model(BackboneConfig(name="gcn"), *tables(), TRAIN, 0.0)


def test_mismatched_table_dims_raise() -> None:
    with pytest.raises(ValueError, match="same dim"):
        MF(FullEmbedding(3, 4), FullEmbedding(3, 5), weight_decay=0.0)
