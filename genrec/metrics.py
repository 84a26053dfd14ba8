"""Top-K ranking metrics for next-item prediction with one relevant item per user.

Pure numpy functions: ``ranked`` is (n, K) item ids, best first, padded with -1 where a
model returned fewer than K items; ``targets`` is (n,). With a single relevant item,
Recall@K is the hit rate and NDCG@K = 1 / log2(rank + 1) for a hit at 1-based ``rank``.

Beyond accuracy (what the lists hold, not whether they hit): catalogue coverage, novelty, intra-list
diversity, average recommendation popularity, and Recall/NDCG per target-popularity bucket and on
cold targets; :func:`beyond_accuracy` computes them all for `genrec evaluate`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

DEFAULT_KS = (5, 10, 20)


def hit_ranks(ranked: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """1-based rank of each target in its row, or 0 when it is absent."""
    ranked = np.asarray(ranked)
    targets = np.asarray(targets)
    if ranked.ndim != 2 or targets.shape != (ranked.shape[0],):
        raise ValueError(f"expected ranked (n, K) and targets (n,), got {ranked.shape} and {targets.shape}")
    hits = ranked == targets[:, None]
    first = hits.argmax(axis=1) + 1
    return np.where(hits.any(axis=1), first, 0)


def recall_gains(ranks: np.ndarray, k: int) -> np.ndarray:
    """Per-example Recall@k (n,) float64 from :func:`hit_ranks`: 1.0 for a hit in the top k, else 0.0."""
    ranks = np.asarray(ranks)
    return ((ranks > 0) & (ranks <= k)).astype(np.float64)


def ndcg_gains(ranks: np.ndarray, k: int) -> np.ndarray:
    """Per-example NDCG@k (n,) float64 from :func:`hit_ranks`: 1 / log2(rank + 1) for a hit in the top k, else 0."""
    ranks = np.asarray(ranks)
    hit = (ranks > 0) & (ranks <= k)
    gain = np.zeros(len(ranks))
    gain[hit] = 1.0 / np.log2(ranks[hit] + 1.0)
    return gain


def recall_at_k(ranked: np.ndarray, targets: np.ndarray, k: int) -> float:
    gains = recall_gains(hit_ranks(ranked, targets), k)
    return float(gains.mean()) if len(gains) else 0.0


def ndcg_at_k(ranked: np.ndarray, targets: np.ndarray, k: int) -> float:
    gains = ndcg_gains(hit_ranks(ranked, targets), k)
    return float(gains.mean()) if len(gains) else 0.0


def per_example_metrics(ranked: np.ndarray, targets: np.ndarray, ks=DEFAULT_KS) -> dict[str, np.ndarray]:
    """``{"recall@5": (n,), ..., "ndcg@20": (n,)}``: each example's gains, whose means are :func:`ranking_metrics`.

    For evaluation that arrives in batches (Lightning validation): average every batch's gains.
    """
    ranks = hit_ranks(ranked, targets)
    out = {f"recall@{k}": recall_gains(ranks, k) for k in ks}
    return out | {f"ndcg@{k}": ndcg_gains(ranks, k) for k in ks}


def ranking_metrics(ranked: np.ndarray, targets: np.ndarray, ks=DEFAULT_KS) -> dict[str, float]:
    """``{"recall@5": ..., "ndcg@5": ..., ...}`` for every k in ``ks``; needs ranked.shape[1] >= max(ks)."""
    ranked = np.asarray(ranked)
    if ranked.shape[1] < max(ks):
        raise ValueError(f"ranked lists have {ranked.shape[1]} items; metrics @{max(ks)} need at least that many")
    return {name: float(gains.mean()) if len(gains) else 0.0
            for name, gains in per_example_metrics(ranked, targets, ks).items()}


def invalid_rate(ranked: np.ndarray, n_items: int) -> float:
    """Share of returned slots that are not a real item (id outside [0, n_items)); -1 padding counts as invalid."""
    ranked = np.asarray(ranked)
    if ranked.size == 0:
        return 0.0
    return float(np.mean((ranked < 0) | (ranked >= n_items)))


def topk_from_scores(scores: np.ndarray, k: int, exclude: list[np.ndarray] | None = None) -> np.ndarray:
    """Full-ranking top-k item ids from a dense (n, n_items) score matrix, best first.

    ``exclude[i]`` lists item ids to drop for row i (e.g. the history); ties break toward the lower id.
    """
    scores = np.array(scores, dtype=np.float64, copy=True)
    if exclude is not None:
        for i, items in enumerate(exclude):
            if len(items):
                scores[i, items] = -np.inf
    k = min(k, scores.shape[1])
    part = np.argpartition(-scores, kth=k - 1, axis=1)[:, :k]
    part_scores = np.take_along_axis(scores, part, axis=1)
    # lexsort: primary key descending score, secondary ascending id, for deterministic ties.
    order = np.lexsort((part, -part_scores), axis=1)
    return np.take_along_axis(part, order, axis=1)


# --------------------------------------------------------------------------- beyond accuracy
# What a system recommends rather than whether it hits: coverage, novelty, diversity, popularity, and
# accuracy on rare targets. ``train_counts`` is (n_items,) interactions per item in the training split
# (genrec.baselines.popularity_counts); only real items (ids in [0, n_items)) of each top-k list count.

BEYOND_KS = (10, 20)
POPULARITY_EDGES = (1, 5, 20)   # target-popularity bucket lower bounds after "never": 0 | 1-4 | 5-19 | 20+
COLD_BELOW = 5                  # a cold target has fewer training interactions than this
DIVERSITY_MEASURES = ("category", "cosine")
_CHUNK_FLOATS = 1 << 23         # (users, k, features) gathered per diversity chunk: 32 MB of float32


def _top_k(ranked: np.ndarray, k: int, n_items: int) -> tuple[np.ndarray, np.ndarray]:
    """The first k columns and which of their slots hold a real item; (n, k) each."""
    ranked = np.asarray(ranked)
    if ranked.ndim != 2 or ranked.shape[1] < k:
        raise ValueError(f"expected ranked (n, K) with K >= {k}, got {ranked.shape}")
    top = ranked[:, :k]
    return top, (top >= 0) & (top < n_items)


def _mean_per_list(ranked: np.ndarray, item_values: np.ndarray, k: int) -> float:
    """Mean over lists of the mean ``item_values`` of each list's real items; lists without one are left out."""
    top, real = _top_k(ranked, k, len(item_values))
    n_real = real.sum(axis=1)
    sums = np.where(real, item_values[np.where(real, top, 0)], 0.0).sum(axis=1)
    keep = n_real > 0
    return float((sums[keep] / n_real[keep]).mean()) if keep.any() else 0.0


def catalogue_coverage(ranked: np.ndarray, n_items: int, k: int) -> float:
    """Distinct real items over all users' top-k lists / catalogue size."""
    top, real = _top_k(ranked, k, n_items)
    return len(np.unique(top[real])) / n_items if n_items else 0.0


def self_information(train_counts: np.ndarray) -> np.ndarray:
    """-log2(p_i), p_i = item i's share of training interactions: (n_items,) bits.

    An item never seen in training (p_i = 0, infinite self-information) counts as seen once: log2(total),
    the highest finite value, so one unseen item neither makes a list's novelty infinite nor goes uncounted.
    """
    counts = np.asarray(train_counts, dtype=np.float64)
    total = counts.sum()
    if total <= 0:
        raise ValueError("novelty needs training interactions: train_counts sums to 0")
    return -np.log2(np.maximum(counts, 1.0) / total)


def novelty(ranked: np.ndarray, train_counts: np.ndarray, k: int) -> float:
    """Mean over users of the mean self-information (:func:`self_information`, bits) of their top-k items."""
    return _mean_per_list(ranked, self_information(train_counts), k)


def average_popularity(ranked: np.ndarray, train_counts: np.ndarray, k: int) -> float:
    """Average recommendation popularity: mean over users of the mean training count of their top-k items."""
    return _mean_per_list(ranked, np.asarray(train_counts, dtype=np.float64), k)


def category_multi_hot(categories) -> tuple[np.ndarray, list[str]]:
    """Items' category lists (None or empty = no category) as (n_items, C) bool, and the categories dropped.

    A category that every categorised item carries (a root such as "Office Products") would make every
    pair of items similar, so it is dropped and returned.
    """
    lists = [sorted(set(c)) if c is not None else [] for c in categories]
    names = sorted({c for cats in lists for c in cats})
    n_with = sum(bool(cats) for cats in lists)
    index = {c: j for j, c in enumerate(names)}
    hot = np.zeros((len(lists), len(names)), dtype=bool)
    for i, cats in enumerate(lists):
        hot[i, [index[c] for c in cats]] = True
    universal = hot.sum(axis=0) == n_with
    return hot[:, ~universal], [c for c, u in zip(names, universal) if u]


@dataclass(frozen=True)
class Diversity:
    mean: float | None      # intra-list diversity: mean over lists of the mean pairwise dissimilarity (None: no pair)
    pairs: int              # item pairs scored
    pairs_skipped: int      # pairs left out because an item has no features (no category, or a zero vector)


def intra_list_diversity(ranked: np.ndarray, item_features: np.ndarray, k: int, measure: str) -> Diversity:
    """Mean over users of the mean dissimilarity of the pairs of distinct slots in their top-k list.

    ``measure`` "category": ``item_features`` is :func:`category_multi_hot`'s (n_items, C) bool and two
    items are 1 apart when they share no category, else 0. "cosine": (n_items, d) vectors, 1 - cosine
    similarity (0..2). An item with no category or a zero vector has no features: its pairs are skipped
    (and counted); a list with no scored pair is left out of the mean.
    """
    if measure not in DIVERSITY_MEASURES:
        raise ValueError(f"measure must be one of {DIVERSITY_MEASURES}, got {measure!r}")
    features = np.asarray(item_features, dtype=np.float32)
    if measure == "cosine":
        norms = np.linalg.norm(features, axis=1, keepdims=True)
        features = features / np.where(norms > 0, norms, 1.0)
    known_item = features.any(axis=1)
    top, real = _top_k(ranked, k, len(features))
    upper = np.triu(np.ones((k, k), dtype=bool), 1)             # each unordered pair of slots once
    sums, counts, skipped = [], [], 0
    step = max(1, _CHUNK_FLOATS // max(1, k * features.shape[1]))
    for start in range(0, len(top), step):
        rows, ok = top[start:start + step], real[start:start + step]
        x = features[np.where(ok, rows, 0)]                       # (c, k, C or d)
        gram = x @ x.transpose(0, 2, 1)                           # (c, k, k)
        dissim = (gram <= 0).astype(np.float64) if measure == "category" else 1.0 - gram.astype(np.float64)
        both_real = ok[:, :, None] & ok[:, None, :] & upper
        known = known_item[np.where(ok, rows, 0)] & ok
        scored = both_real & known[:, :, None] & known[:, None, :]
        skipped += int(both_real.sum() - scored.sum())
        sums.append(np.where(scored, dissim, 0.0).sum(axis=(1, 2)))
        counts.append(scored.sum(axis=(1, 2)))
    sums = np.concatenate(sums) if sums else np.zeros(0)
    counts = np.concatenate(counts) if counts else np.zeros(0, dtype=np.int64)
    keep = counts > 0
    mean = float((sums[keep] / counts[keep]).mean()) if keep.any() else None
    return Diversity(mean=mean, pairs=int(counts.sum()), pairs_skipped=skipped)


def bucket_labels(edges: tuple[int, ...] = POPULARITY_EDGES) -> list[str]:
    """Names of the buckets :func:`popularity_bucket` returns: ["never", "1-4", "5-19", "20+"] for the default edges."""
    bounds = [0, *edges]
    labels = [f"{lo}-{hi - 1}" if hi - 1 > lo else f"{lo}" for lo, hi in zip(bounds, bounds[1:])]
    return [label if label != "0" else "never" for label in labels] + [f"{bounds[-1]}+"]


def popularity_bucket(counts: np.ndarray, edges: tuple[int, ...] = POPULARITY_EDGES) -> np.ndarray:
    """Training count of each target -> bucket index (0 = never seen in training)."""
    return np.searchsorted(np.asarray(edges), np.asarray(counts), side="right")


def slice_metrics(ranked: np.ndarray, targets: np.ndarray, rows: np.ndarray, ks=BEYOND_KS) -> dict:
    """{n_users, share, recall@k and ndcg@k for k in ks} over the users ``rows`` (bool, (n,)) selects.

    An empty slice has only n_users (0) and share: no metric is reported for nobody.
    """
    rows = np.asarray(rows, dtype=bool)
    out = {"n_users": int(rows.sum()), "share": float(rows.mean()) if len(rows) else 0.0}
    if rows.any():
        out |= ranking_metrics(np.asarray(ranked)[rows], np.asarray(targets)[rows], ks)
    return out


def popularity_bucket_metrics(ranked: np.ndarray, targets: np.ndarray, train_counts: np.ndarray,
                              edges: tuple[int, ...] = POPULARITY_EDGES, ks=BEYOND_KS) -> dict[str, dict]:
    """label -> :func:`slice_metrics` of the users whose target's training count falls in that bucket."""
    buckets = popularity_bucket(np.asarray(train_counts)[np.asarray(targets)], edges)
    return {label: slice_metrics(ranked, targets, buckets == i, ks) for i, label in enumerate(bucket_labels(edges))}


def cold_target_metrics(ranked: np.ndarray, targets: np.ndarray, train_counts: np.ndarray,
                        below: int = COLD_BELOW, ks=BEYOND_KS) -> dict:
    """:func:`slice_metrics` of the users whose target has fewer than ``below`` training interactions."""
    return slice_metrics(ranked, targets, np.asarray(train_counts)[np.asarray(targets)] < below, ks)


def beyond_accuracy(ranked: np.ndarray, targets: np.ndarray, train_counts: np.ndarray, *,
                    item_features: np.ndarray | None = None, measure: str | None = None, ks=BEYOND_KS) -> dict:
    """Every beyond-accuracy figure for one system's ranked lists, as `genrec evaluate` stores them.

    Coverage, novelty, average popularity and (when ``item_features`` are given) intra-list diversity
    at each k, then Recall/NDCG per target-popularity bucket and on cold targets.
    """
    n_items = len(train_counts)
    out: dict = {}
    for k in ks:
        out[f"coverage@{k}"] = catalogue_coverage(ranked, n_items, k)
        out[f"novelty@{k}"] = novelty(ranked, train_counts, k)
        out[f"avg_popularity@{k}"] = average_popularity(ranked, train_counts, k)
        if item_features is not None:
            div = intra_list_diversity(ranked, item_features, k, measure)
            out[f"diversity@{k}"] = div.mean
            out[f"diversity_pairs_skipped@{k}"] = div.pairs_skipped
    out["diversity_measure"] = measure if item_features is not None else None
    out["by_target_popularity"] = popularity_bucket_metrics(ranked, targets, train_counts, ks=ks)
    out["cold_targets"] = cold_target_metrics(ranked, targets, train_counts, ks=ks)
    return out
