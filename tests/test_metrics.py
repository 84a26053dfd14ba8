"""genrec.metrics against arithmetic done by hand (RecBole's habit), and its per-example gains against the means."""

from __future__ import annotations

import math

import numpy as np
import pytest

import genrec.metrics as metrics
from genrec.metrics import (
    average_popularity,
    beyond_accuracy,
    bucket_labels,
    catalogue_coverage,
    category_multi_hot,
    cold_target_metrics,
    hit_ranks,
    intra_list_diversity,
    ndcg_at_k,
    ndcg_gains,
    novelty,
    per_example_metrics,
    popularity_bucket,
    popularity_bucket_metrics,
    ranking_metrics,
    recall_at_k,
    recall_gains,
    self_information,
    slice_metrics,
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


# --------------------------------------------------------------------------- beyond accuracy
# 7 items; training counts sum to 13; items 2 and 6 never occur in training.
COUNTS = np.array([6, 3, 0, 1, 1, 2, 0])
# Three top-3 lists: a full one, one padded with -1, one holding an id outside the catalogue (9).
LISTS = np.array([[0, 1, 2],
                  [0, 5, -1],
                  [3, 0, 9]])
CATEGORIES = [["Root", "A"], ["Root", "A", "A1"], ["Root", "B"], ["Root", "B"], None, ["Root"], ["Root", "C"]]


def test_catalogue_coverage_by_hand():
    assert catalogue_coverage(LISTS, 7, 3) == 5 / 7        # {0, 1, 2, 5, 3}: padding and id 9 are not items
    assert catalogue_coverage(LISTS, 7, 2) == 4 / 7        # {0, 1, 5, 3}
    assert catalogue_coverage(np.full((2, 3), -1), 7, 3) == 0.0
    with pytest.raises(ValueError, match="K >= 4"):
        catalogue_coverage(LISTS, 7, 4)


def test_novelty_by_hand_and_unseen_items_count_as_seen_once():
    bits = self_information(COUNTS)
    assert bits[0] == pytest.approx(math.log2(13 / 6)) and bits[5] == pytest.approx(math.log2(13 / 2))
    # item 2 never occurs in training: p = 0 would be infinite; it counts as seen once, as item 3 is
    assert bits[2] == bits[3] == pytest.approx(math.log2(13)) and np.isfinite(bits).all()
    user0 = (math.log2(13 / 6) + math.log2(13 / 3) + math.log2(13)) / 3    # items 0, 1, 2
    user1 = (math.log2(13 / 6) + math.log2(13 / 2)) / 2                    # items 0, 5 (padding left out)
    user2 = (math.log2(13) + math.log2(13 / 6)) / 2                        # items 3, 0 (id 9 left out)
    assert novelty(LISTS, COUNTS, 3) == pytest.approx((user0 + user1 + user2) / 3)
    with pytest.raises(ValueError, match="sums to 0"):
        self_information(np.zeros(7))


def test_average_recommendation_popularity_by_hand():
    # per list: (6 + 3 + 0) / 3 = 3, (6 + 2) / 2 = 4, (1 + 6) / 2 = 3.5; mean 10.5 / 3
    assert average_popularity(LISTS, COUNTS, 3) == pytest.approx(3.5)
    assert average_popularity(LISTS, COUNTS, 1) == pytest.approx((6 + 6 + 1) / 3)


def test_category_multi_hot_drops_the_category_every_item_carries():
    hot, dropped = category_multi_hot(CATEGORIES)
    assert dropped == ["Root"]                              # item 4 has none, so "Root" is on every categorised item
    assert hot.shape == (7, 4)                              # A, A1, B, C
    assert hot.astype(int).tolist() == [[1, 0, 0, 0], [1, 1, 0, 0], [0, 0, 1, 0], [0, 0, 1, 0],
                                        [0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 1]]


def test_intra_list_diversity_by_category_by_hand(monkeypatch):
    hot, _ = category_multi_hot(CATEGORIES)
    # list 0 (0, 1, 2): 0-1 share A -> 0, 0-2 -> 1, 1-2 -> 1: mean 2/3
    # list 1 (0, 5): item 5 has only the dropped root, so its one pair is skipped and the list left out
    # list 2 (3, 0): B vs A -> 1 (id 9 is no item, so it makes no pair)
    div = intra_list_diversity(LISTS, hot, 3, "category")
    assert div.mean == pytest.approx((2 / 3 + 1) / 2) and (div.pairs, div.pairs_skipped) == (4, 1)
    assert intra_list_diversity(LISTS, hot, 2, "category").mean == pytest.approx((0 + 1) / 2)  # list 1 left out
    monkeypatch.setattr(metrics, "_CHUNK_FLOATS", 1)                 # one user per chunk: the same figures
    assert intra_list_diversity(LISTS, hot, 3, "category") == div
    assert intra_list_diversity(np.array([[4, 5, -1]]), hot, 3, "category").mean is None   # no pair to score
    with pytest.raises(ValueError, match="measure must be one of"):
        intra_list_diversity(LISTS, hot, 3, "jaccard")


def test_intra_list_diversity_by_cosine_distance_by_hand():
    vectors = np.array([[1, 0], [0, 1], [1, 1], [0, 0], [3, 4], [-2, 0], [5, 5]], dtype=np.float32)
    # list 0: d(0,1) = 1 - 0, d(0,2) = d(1,2) = 1 - 1/sqrt(2): mean (3 - sqrt(2)) / 3
    # list 1: d(0,5) = 1 - (-1) = 2; list 2: item 3 is a zero vector, its pair with 0 is skipped
    div = intra_list_diversity(LISTS, vectors, 3, "cosine")
    assert div.mean == pytest.approx(((3 - math.sqrt(2)) / 3 + 2) / 2) and (div.pairs, div.pairs_skipped) == (4, 1)


# Targets: user 0 -> item 2 (count 0, rank 3), user 1 -> item 6 (count 0, missed), user 2 -> item 0 (count 6, rank 2).
TARGETS_3 = np.array([2, 6, 0])


def test_popularity_buckets_by_hand():
    assert bucket_labels() == ["never", "1-4", "5-19", "20+"]
    assert bucket_labels((2, 3)) == ["0-1", "2", "3+"]                   # "never" only when the first edge is 1
    assert popularity_bucket(np.array([0, 1, 4, 5, 19, 20, 300])).tolist() == [0, 1, 1, 2, 2, 3, 3]
    out = popularity_bucket_metrics(LISTS, TARGETS_3, COUNTS, ks=(1, 3))
    assert out["never"] == {"n_users": 2, "share": 2 / 3, "recall@1": 0.0, "recall@3": 1 / 2,
                            "ndcg@1": 0.0, "ndcg@3": pytest.approx((1 / math.log2(4) + 0) / 2)}
    assert out["1-4"] == out["20+"] == {"n_users": 0, "share": 0.0}          # nobody: no metric
    assert out["5-19"] == {"n_users": 1, "share": 1 / 3, "recall@1": 0.0, "recall@3": 1.0,
                           "ndcg@1": 0.0, "ndcg@3": pytest.approx(1 / math.log2(3))}


def test_cold_target_slice_by_hand():
    cold = cold_target_metrics(LISTS, TARGETS_3, COUNTS, ks=(1, 3))            # counts 0, 0 < 5; 6 is not cold
    assert cold == {"n_users": 2, "share": 2 / 3, "recall@1": 0.0, "recall@3": 0.5, "ndcg@1": 0.0, "ndcg@3": 0.25}
    everyone = cold_target_metrics(LISTS, TARGETS_3, COUNTS, below=7, ks=(3,))
    assert everyone["n_users"] == 3 and everyone["recall@3"] == pytest.approx(2 / 3)
    assert everyone["ndcg@3"] == pytest.approx((1 / 2 + 0 + 1 / math.log2(3)) / 3)
    assert slice_metrics(LISTS, TARGETS_3, np.zeros(3, dtype=bool), (3,)) == {"n_users": 0, "share": 0.0}


def test_beyond_accuracy_collects_each_function_at_each_k():
    ranked = np.concatenate([LISTS, np.full((3, 17), -1)], axis=1)             # 20 slots for the default ks
    hot, _ = category_multi_hot(CATEGORIES)
    out = beyond_accuracy(ranked, TARGETS_3, COUNTS, item_features=hot, measure="category")
    assert out["diversity_measure"] == "category"
    for k in (10, 20):                                                         # padding adds nothing past k = 3
        assert out[f"coverage@{k}"] == 5 / 7 and out[f"avg_popularity@{k}"] == pytest.approx(3.5)
        assert out[f"novelty@{k}"] == novelty(LISTS, COUNTS, 3)
        assert out[f"diversity@{k}"] == pytest.approx(5 / 6) and out[f"diversity_pairs_skipped@{k}"] == 1
    assert list(out["by_target_popularity"]) == ["never", "1-4", "5-19", "20+"]
    assert out["cold_targets"]["n_users"] == 2 and out["cold_targets"]["recall@20"] == 0.5
    plain = beyond_accuracy(ranked, TARGETS_3, COUNTS)                         # no item features: no diversity
    assert plain["diversity_measure"] is None and "diversity@10" not in plain


def test_evaluate_compares_items_by_category_else_by_text_else_not_at_all(tmp_path):
    """genrec.evaluate.diversity_features: which item features intra-list diversity reads, and the record of it."""
    import json
    from types import SimpleNamespace

    import polars as pl

    from genrec.evaluate import diversity_features
    from genrec.io import ArtifactError

    def dataset(categories):
        return SimpleNamespace(items=pl.DataFrame({"categories": categories}, schema={"categories": pl.List(pl.Utf8)}),
                               n_items=len(categories))

    hot, measure, record = diversity_features(tmp_path, dataset(CATEGORIES[:4] + [["Root", "C"]] * 3))
    assert measure == "category" and record["categories_dropped_as_universal"] == ["Root"] and hot.shape == (7, 4)
    sparse = dataset([["A"], ["B"]] + [None] * 5)                     # 2 of 7 items: too few for categories
    vectors, measure, record = diversity_features(tmp_path, sparse)
    assert (vectors, measure, record["measure"], record["items_with_category"]) == (None, None, None, round(2 / 7, 4))
    features = tmp_path / "features"
    features.mkdir()
    text = np.arange(14, dtype=np.float32).reshape(7, 2) + 1
    np.save(features / "text.npy", text)
    np.save(features / "text_mask.npy", np.array([1, 1, 1, 0, 1, 1, 1], dtype=bool))
    (features / "manifest.json").write_text(json.dumps({"modalities": {"text": {"file": "text.npy",
                                                                               "mask_file": "text_mask.npy"}}}))
    vectors, measure, record = diversity_features(tmp_path, sparse)
    assert measure == "cosine" and record["source"] == "features/text.npy"
    assert vectors[3].tolist() == [0, 0] and np.array_equal(np.delete(vectors, 3, 0), np.delete(text, 3, 0))
    with pytest.raises(ArtifactError, match="has 7 rows but the dataset has 8 items"):
        diversity_features(tmp_path, dataset([None] * 8))
