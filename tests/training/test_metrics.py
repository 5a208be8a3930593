from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from lers_ray.training.metrics import RankingEvaluator

# With identity item embeddings, user embeddings are the score rows themselves.
ITEMS = torch.eye(5)
SCORES = torch.tensor(
    [
        [0.9, 0.8, 0.7, 0.6, 0.5],
        [0.1, 0.2, 0.3, 0.4, 0.5],
        [0.5, 0.4, 0.3, 0.2, 0.1],
    ]
)
D2 = 1 / math.log2(3)
D3 = 1 / math.log2(4)


def pairs(*items: tuple[int, int]) -> np.ndarray:
    return np.array(items, dtype=np.int64).reshape(-1, 2)


@pytest.mark.parametrize("batch_size", [1, 2, 4096])
def test_recall_ndcg_hand_computed(batch_size: int) -> None:
    # User 0: item 0 is in train and masked; ranking 1, 2, 3, 4; held out 2 and 4.
    # User 1: ranking 4, 3, 2, 1, 0; held out 4. User 2 has nothing held out: skipped.
    heldout = pairs((0, 2), (0, 4), (1, 4))
    train = pairs((0, 0), (2, 1))
    evaluator = RankingEvaluator(heldout, [train], 5, ks=[1, 2, 3], batch_size=batch_size)
    metrics = evaluator.evaluate(SCORES, ITEMS)

    assert evaluator.n_users == 2
    assert metrics["recall_1"] == pytest.approx((0 + 1) / 2)
    assert metrics["ndcg_1"] == pytest.approx((0 + 1) / 2)
    assert metrics["recall_2"] == pytest.approx((1 / 2 + 1) / 2)
    assert metrics["ndcg_2"] == pytest.approx((D2 / (1 + D2) + 1) / 2)
    assert metrics["recall_3"] == pytest.approx((1 / 2 + 1) / 2)
    assert metrics["ndcg_3"] == pytest.approx((D2 / (1 + D2) + 1) / 2)


def test_recall_not_capped_when_heldout_exceeds_k() -> None:
    # User 0 ranks 0, 1, 2, ...; held out 0, 1, 2; K = 2 finds 2 of 3.
    evaluator = RankingEvaluator(pairs((0, 0), (0, 1), (0, 2)), [], 5, ks=[2, 5])
    metrics = evaluator.evaluate(SCORES[:1], ITEMS)
    assert metrics["recall_2"] == pytest.approx(2 / 3)
    assert metrics["ndcg_2"] == pytest.approx(1.0)
    assert metrics["recall_5"] == pytest.approx(1.0)
    assert metrics["ndcg_5"] == pytest.approx(1.0)


def test_ndcg_ideal_over_min_heldout_k() -> None:
    # User 0 held out 1 and 4 with ranking 0, 1, 2, 3, 4: hits at ranks 2 and 5.
    evaluator = RankingEvaluator(pairs((0, 1), (0, 4)), [], 5, ks=[1, 5])
    metrics = evaluator.evaluate(SCORES[:1], ITEMS)
    assert metrics["ndcg_1"] == 0.0
    ideal = 1 + D2
    assert metrics["ndcg_5"] == pytest.approx((D2 + 1 / math.log2(6)) / ideal)


def test_validation_items_masked_at_test() -> None:
    # User 0: train item 0, valid item 1, test item 3. Ranking without masks: 0, 1, 2, 3.
    train, valid, test = pairs((0, 0)), pairs((0, 1)), pairs((0, 3))
    only_train = RankingEvaluator(test, [train], 5, ks=[2]).evaluate(SCORES[:1], ITEMS)
    assert only_train["recall_2"] == 0.0
    masked = RankingEvaluator(test, [train, valid], 5, ks=[2]).evaluate(SCORES[:1], ITEMS)
    assert masked["recall_2"] == 1.0
    assert masked["ndcg_2"] == pytest.approx(D2 / 1.0)


def test_excluded_pairs_of_other_users_ignored() -> None:
    evaluator = RankingEvaluator(pairs((1, 4)), [pairs((0, 4), (2, 4))], 5, ks=[1])
    assert evaluator.evaluate(SCORES, ITEMS)["recall_1"] == 1.0


def test_k_larger_than_item_count() -> None:
    evaluator = RankingEvaluator(pairs((0, 4)), [], 5, ks=[20])
    metrics = evaluator.evaluate(SCORES[:1], ITEMS)
    assert metrics["recall_20"] == 1.0
    assert metrics["ndcg_20"] == pytest.approx(1 / math.log2(6))


def test_no_heldout_users_gives_zeros() -> None:
    evaluator = RankingEvaluator(pairs(), [], 5, ks=[20])
    assert evaluator.evaluate(SCORES, ITEMS) == {"recall_20": 0.0, "ndcg_20": 0.0}


def test_matches_dense_reference_on_random_data() -> None:
    rng = np.random.default_rng(0)
    n_users, n_items, dim = 37, 50, 8
    all_pairs = np.unique(
        np.stack([rng.integers(0, n_users, 600), rng.integers(0, n_items, 600)], 1), axis=0
    )
    split = rng.integers(0, 3, len(all_pairs))
    train, heldout = all_pairs[split == 0], all_pairs[split == 1]
    users, items = torch.randn(n_users, dim), torch.randn(n_items, dim)
    metrics = RankingEvaluator(heldout, [train], n_items, ks=[10], batch_size=7).evaluate(
        users, items
    )

    scores = users @ items.T
    scores[train[:, 0], train[:, 1]] = -math.inf
    recalls, ndcgs = [], []
    for user in np.unique(heldout[:, 0]):
        truth = set(heldout[heldout[:, 0] == user, 1].tolist())
        top = torch.topk(scores[user], 10).indices.tolist()
        hits = [1.0 if item in truth else 0.0 for item in top]
        recalls.append(sum(hits) / len(truth))
        dcg = sum(h / math.log2(rank + 2) for rank, h in enumerate(hits))
        ideal = sum(1 / math.log2(rank + 2) for rank in range(min(len(truth), 10)))
        ndcgs.append(dcg / ideal)
    assert metrics["recall_10"] == pytest.approx(float(np.mean(recalls)))
    assert metrics["ndcg_10"] == pytest.approx(float(np.mean(ndcgs)))


def test_invalid_ks_raise() -> None:
    with pytest.raises(ValueError, match="ks"):
        RankingEvaluator(pairs((0, 1)), [], 5, ks=[0])
