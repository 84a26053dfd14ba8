"""genrec.metrics against arithmetic done by hand (RecBole's habit), and its per-example gains against the means."""

from __future__ import annotations

import math

import numpy as np
import pytest

from genrec.metrics import (
    hit_ranks,
    ndcg_at_k,
    ndcg_gains,
    per_example_metrics,
    ranking_metrics,
    recall_at_k,
    recall_gains,
)

# Four users, top-5 lists; targets at rank 1, rank 4, absent, rank 5.
RANKED = np.array([[7, 2, 9, 4, 1],
                   [3, 8, 6, 5, 0],
                   [1, 2, 3, 4, 6],
                   [9, 8, 7, 6, 5]])
TARGETS = np.array([7, 5, 0, 5])


def test_hit_ranks_by_hand():
    assert hit_ranks(RANKED, TARGETS).tolist() == [1, 4, 0, 5]
    assert hit_ranks(np.array([[-1, -1]]), np.array([3])).tolist() == [0]      # -1 padding is never a hit
    with pytest.raises(ValueError, match=r"expected ranked \(n, K\)"):
        hit_ranks(RANKED, TARGETS[:2])


def test_recall_and_ndcg_by_hand():
    assert recall_at_k(RANKED, TARGETS, 1) == 1 / 4
    assert recall_at_k(RANKED, TARGETS, 4) == 2 / 4
    assert recall_at_k(RANKED, TARGETS, 5) == 3 / 4
    assert ndcg_at_k(RANKED, TARGETS, 1) == pytest.approx(1 / 4)
    assert ndcg_at_k(RANKED, TARGETS, 4) == pytest.approx((1 + 1 / math.log2(5)) / 4)
    assert ndcg_at_k(RANKED, TARGETS, 5) == pytest.approx((1 + 1 / math.log2(5) + 1 / math.log2(6)) / 4)
    empty = np.zeros((0, 5), dtype=np.int64)
    assert recall_at_k(empty, np.zeros(0, dtype=np.int64), 5) == ndcg_at_k(empty, np.zeros(0, dtype=np.int64), 5) == 0.0


def test_per_example_gains_by_hand_and_their_means_are_ranking_metrics():
    ranks = hit_ranks(RANKED, TARGETS)
    assert recall_gains(ranks, 4).tolist() == [1.0, 1.0, 0.0, 0.0]
    assert ndcg_gains(ranks, 5).tolist() == pytest.approx([1.0, 1 / math.log2(5), 0.0, 1 / math.log2(6)])
    ranked = np.concatenate([RANKED, np.full((4, 15), -1)], axis=1)          # 20 slots for the default ks
    gains = per_example_metrics(ranked, TARGETS)
    means = ranking_metrics(ranked, TARGETS)
    assert list(gains) == list(means) == ["recall@5", "recall@10", "recall@20", "ndcg@5", "ndcg@10", "ndcg@20"]
    assert {name: float(g.mean()) for name, g in gains.items()} == means
    with pytest.raises(ValueError, match="metrics @20 need at least that many"):
        ranking_metrics(RANKED, TARGETS)


def old_ranking_metrics(ranked, targets, ks=(5, 10, 20)):
    """genrec.metrics.ranking_metrics before the per-example gains were factored out."""
    def ranks_of(ranked, targets):
        hits = ranked == targets[:, None]
        return np.where(hits.any(axis=1), hits.argmax(axis=1) + 1, 0)

    ranks = ranks_of(ranked, targets)
    out = {f"recall@{k}": float(np.mean((ranks > 0) & (ranks <= k))) for k in ks}
    for k in ks:
        hit = (ranks > 0) & (ranks <= k)
        gain = np.zeros(len(ranks))
        gain[hit] = 1.0 / np.log2(ranks[hit] + 1.0)
        out[f"ndcg@{k}"] = float(gain.mean())
    return out


def test_ranking_metrics_equal_the_former_implementation_bit_for_bit():
    rng = np.random.default_rng(0)
    for n in (1, 37, 1001):
        ranked = np.stack([rng.permutation(53)[:20] for _ in range(n)])
        targets = rng.integers(0, 53, size=n)
        assert ranking_metrics(ranked, targets) == old_ranking_metrics(ranked, targets)
