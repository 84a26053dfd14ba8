"""Non-learned baselines shown next to every model in the results tables.

Numpy only. Popularity counts come from ``Split.train`` alone, so validation and test
targets never raise an item's rank.
"""

from __future__ import annotations

import numpy as np

from genrec.data.split import EvalExamples, Split
from genrec.metrics import DEFAULT_KS, ranking_metrics, topk_from_scores

TOP_K = max(DEFAULT_KS)  # length of the ranked lists scored by the metrics


def popularity_counts(train: list[np.ndarray], n_items: int) -> np.ndarray:
    """Interactions per item over the training prefixes: (n_items,) int64."""
    flat = np.concatenate([np.asarray(s, dtype=np.int64) for s in train] + [np.zeros(0, dtype=np.int64)])
    if len(flat) and (flat.min() < 0 or flat.max() >= n_items):
        raise ValueError(f"training sequences contain item ids outside [0, {n_items}); the dataset is inconsistent")
    return np.bincount(flat, minlength=n_items).astype(np.int64)


def popularity_ranked(
    counts: np.ndarray, histories: list[np.ndarray], k: int = TOP_K, exclude_history: bool = False
) -> np.ndarray:
    """Most-popular items for every history: (n, k), best first, ties toward the lower item id.

    Without ``exclude_history`` every row is the same global list; histories only set the row count.
    """
    if not exclude_history:
        top = topk_from_scores(counts[None, :].astype(np.float64), k)[0]  # (k,)
        return np.tile(top, (len(histories), 1))
    # -1 pads rows whose history covers almost the whole catalogue (genrec.metrics convention).
    ranked = np.full((len(histories), min(k, len(counts))), -1, dtype=np.int64)
    # Only the history items can push a global top item out, so ranking top (k + longest) suffices.
    depth = min(len(counts), k + max((len(h) for h in histories), default=0))
    pool = topk_from_scores(counts[None, :].astype(np.float64), depth)[0]
    for i, h in enumerate(histories):
        keep = pool[~np.isin(pool, h)][: ranked.shape[1]]
        ranked[i, : len(keep)] = keep
    return ranked


def evaluate_popularity(
    split: Split, examples: EvalExamples, n_items: int, exclude_history: bool = False
) -> tuple[np.ndarray, dict[str, float]]:
    """Ranked (n, 20) item ids and Recall/NDCG@{5,10,20} for popularity counted on ``split.train``."""
    counts = popularity_counts(split.train, n_items)
    ranked = popularity_ranked(counts, examples.histories, TOP_K, exclude_history)
    return ranked, ranking_metrics(ranked, examples.targets)
