from __future__ import annotations

import numpy as np
import torch

from lers_ray.training.sampler import BPRSampler


def make_sampler(train: np.ndarray, n_items: int, seed: int = 0, negatives: int = 1) -> BPRSampler:
    return BPRSampler(
        train, n_items, batch_size=7, num_negatives=negatives, rng=np.random.default_rng(seed)
    )


def test_epoch_covers_every_pair_once(data) -> None:
    sampler = make_sampler(data.train, data.n_items)
    batches = list(sampler.epoch())
    assert len(batches) == len(sampler)
    users = torch.cat([b[0] for b in batches]).numpy()
    pos = torch.cat([b[1] for b in batches]).numpy()
    seen = np.stack([users, pos], 1)
    assert len(seen) == len(data.train)
    assert np.array_equal(np.unique(seen, axis=0), np.unique(data.train, axis=0))


def test_negatives_are_not_positives(data) -> None:
    sampler = make_sampler(data.train, data.n_items, negatives=3)
    positives = {tuple(p) for p in data.train.tolist()}
    for users, _, neg in sampler.epoch():
        assert neg.shape == (users.numel(), 3)
        for user, row in zip(users.tolist(), neg.tolist()):
            assert all((user, item) not in positives for item in row)
            assert all(0 <= item < data.n_items for item in row)


def flatten(batch: tuple[torch.Tensor, ...]) -> torch.Tensor:
    return torch.cat([part.reshape(-1) for part in batch])


def test_same_seed_same_batches(data) -> None:
    first = [flatten(b) for b in make_sampler(data.train, data.n_items, seed=5).epoch()]
    second = [flatten(b) for b in make_sampler(data.train, data.n_items, seed=5).epoch()]
    other = [flatten(b) for b in make_sampler(data.train, data.n_items, seed=6).epoch()]
    assert all(torch.equal(a, b) for a, b in zip(first, second))
    assert not all(torch.equal(a, b) for a, b in zip(first, other))


def test_epochs_differ(data) -> None:
    sampler = make_sampler(data.train, data.n_items)
    first = torch.cat([b[0] for b in sampler.epoch()])
    second = torch.cat([b[0] for b in sampler.epoch()])
    assert not torch.equal(first, second)


def test_user_with_every_item_keeps_draws() -> None:
    train = np.array([[0, 0], [0, 1], [1, 0]])
    sampler = BPRSampler(
        train, 2, batch_size=4, num_negatives=2, rng=np.random.default_rng(0), max_redraws=3
    )
    negatives = sampler.sample_negatives(np.array([0, 1]))
    assert negatives.shape == (2, 2)
    assert (negatives[1] == 1).all()
