from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from lers_ray.models.graph import (
    layer_mean,
    layer_mean_rows,
    normalized_adjacency,
    propagate,
    select_rows,
)


def tiny_graph() -> torch.Tensor:
    # Users 0-1, items 0-2; item 2 has no edge. Nodes: u0, u1, i0, i1, i2 = 0..4.
    train = np.array([[0, 0], [0, 1], [1, 1]])
    return normalized_adjacency(train, n_users=2, n_items=3)


def random_graph(seed: int = 0) -> tuple[torch.Tensor, int]:
    rng = np.random.default_rng(seed)
    n_users, n_items = 9, 12
    pairs = np.stack([rng.integers(0, n_users, 40), rng.integers(0, n_items, 40)], axis=1)
    adjacency = normalized_adjacency(np.unique(pairs, axis=0), n_users, n_items)
    return adjacency.to(torch.float64), n_users + n_items


def dense_layer_mean(adjacency: torch.Tensor, x: torch.Tensor, num_layers: int) -> torch.Tensor:
    dense = adjacency.to_dense()
    total, layer = x, x
    for _ in range(num_layers):
        layer = dense @ layer
        total = total + layer
    return total / (num_layers + 1)


def test_adjacency_hand_computed_values() -> None:
    adjacency = tiny_graph()
    assert adjacency.layout == torch.sparse_csr
    assert adjacency.dtype == torch.float32
    expected = torch.zeros(5, 5)
    # Degrees: u0 = 2, u1 = 1, i0 = 1, i1 = 2, i2 = 0.
    expected[0, 2] = expected[2, 0] = 1 / math.sqrt(2 * 1)
    expected[0, 3] = expected[3, 0] = 1 / math.sqrt(2 * 2)
    expected[1, 3] = expected[3, 1] = 1 / math.sqrt(1 * 2)
    assert torch.allclose(adjacency.to_dense(), expected)


def test_adjacency_isolated_node_is_zero() -> None:
    dense = tiny_graph().to_dense()
    assert torch.isfinite(dense).all()
    assert dense[4].abs().sum() == 0
    assert dense[:, 4].abs().sum() == 0


def test_adjacency_ignores_duplicate_pairs() -> None:
    train = np.array([[0, 0], [0, 0], [0, 1], [1, 1]])
    assert torch.allclose(normalized_adjacency(train, 2, 3).to_dense(), tiny_graph().to_dense())


def test_propagate_gradcheck() -> None:
    adjacency, n_nodes = random_graph()
    x = torch.randn(n_nodes, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda value: propagate(adjacency, value), (x,))


def test_propagate_grad_matches_dense_autograd() -> None:
    adjacency, n_nodes = random_graph(1)
    x = torch.randn(n_nodes, 4, dtype=torch.float64, requires_grad=True)
    weights = torch.randn(n_nodes, 4, dtype=torch.float64)
    (grad,) = torch.autograd.grad((layer_mean(adjacency, x, 3) * weights).sum(), x)
    (expected,) = torch.autograd.grad((dense_layer_mean(adjacency, x, 3) * weights).sum(), x)
    assert torch.allclose(grad, expected)


def test_select_rows_matches_dense() -> None:
    adjacency, _ = random_graph(2)
    rows = torch.tensor([3, 0, 3, 17])
    block = select_rows(adjacency, rows)
    assert block.layout == torch.sparse_csr
    assert torch.equal(block.to_dense(), adjacency.to_dense()[rows])


@pytest.mark.parametrize("num_layers", [0, 1, 2, 3, 4])
def test_layer_mean_rows_matches_dense(num_layers: int) -> None:
    adjacency, n_nodes = random_graph(3)
    x = torch.randn(n_nodes, 5, dtype=torch.float64, requires_grad=True)
    rows = torch.tensor([0, 4, 10, 20, 4])
    out = layer_mean_rows(adjacency, x, rows, num_layers)
    expected = dense_layer_mean(adjacency, x, num_layers)[rows]
    assert torch.allclose(out, expected)

    weights = torch.randn_like(out)
    (grad,) = torch.autograd.grad((out * weights).sum(), x)
    (expected_grad,) = torch.autograd.grad((expected * weights).sum(), x)
    assert torch.allclose(grad, expected_grad)


def test_layer_mean_rows_gradcheck() -> None:
    adjacency, n_nodes = random_graph(4)
    x = torch.randn(n_nodes, 2, dtype=torch.float64, requires_grad=True)
    rows = torch.tensor([1, 2, 11])
    assert torch.autograd.gradcheck(lambda value: layer_mean_rows(adjacency, value, rows, 3), (x,))
