"""Top-K ranking metrics for next-item prediction with one relevant item per user.

Pure numpy functions: ``ranked`` is (n, K) item ids, best first, padded with -1 where a
model returned fewer than K items; ``targets`` is (n,). With a single relevant item,
Recall@K is the hit rate and NDCG@K = 1 / log2(rank + 1) for a hit at 1-based ``rank``.
"""

from __future__ import annotations

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
