"""Exact top-k for autoregressive code heads over the trie, without visiting every prefix.

A beam search is not exact: it drops a prefix whose first codes look worse than ``beam_width``
others, even when one of its items would have ranked first. Exhaustive search is exact but keeps
every prefix. This search is both exact and cheap, in two passes over the same history:

1. a beam search of width ``beam_width`` returns k real items per request; the k-th one's score
   ``tau`` is a score that at least k allowed items reach, so the true k-th best scores >= tau;
2. a level-by-level search keeps every allowed prefix whose score is >= tau (minus a float margin),
   and returns the best k leaves.

Why pass 2 is exact: an item's score is the sum of its codes' log-probs, each <= 0, so a prefix
scores at least as much as any item below it. Every true top-k item scores >= tau, hence so do
all its prefixes, and none is pruned. Why it is cheap: at one level the probabilities of all
prefixes sum to at most 1, so at most ``exp(-tau)`` prefixes per level can score >= tau (e.g.
1,000 when the k-th item has probability 0.1%), whatever the catalogue size.

The search calls the model twice per request, so it takes a step *factory*: ``make_step()``
returns a fresh :class:`~genrec.decode.beam.StepFn` for the same batch of requests.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from genrec.decode.beam import (
    BeamResult,
    StepFn,
    _allowed_pairs,
    _call_step,
    _check_sizes,
    _ItemFilter,
    _LOWEST,
    _pack,
    _select,
    beam_search,
)
from genrec.decode.trie import Trie

# Pass 2 keeps prefixes scoring >= tau - margin: the same path can sum to a slightly different float
# when the model computes it inside another batch (BLAS blocking), and log-softmax may return +1e-7.
MARGIN_ABS = 1e-4
MARGIN_REL = 1e-5


def threshold_search(make_step: Callable[[], StepFn], trie: Trie, batch_size: int, k: int, *, beam_width: int,
                     item_mask: np.ndarray | None = None) -> tuple[BeamResult, int]:
    """Exact top-``k`` items per request for a prefix-dependent head -> (result, rows pass 2 scored).

    Same result as a beam search wide enough to keep every prefix (tests/decode/test_threshold.py),
    including ``item_mask`` (B, N) restrictions and ties (by lower item id).
    """
    _check_sizes(batch_size, beam_width, k)
    first = beam_search(make_step(), trie, batch_size, beam_width, k, item_mask=item_mask)
    tau = first.scores[:, k - 1]                        # -inf when fewer than k items are allowed
    bound = tau - (MARGIN_ABS + MARGIN_REL * np.abs(np.where(np.isfinite(tau), tau, 0.0)))
    item_filter = _ItemFilter(trie, item_mask, batch_size) if item_mask is not None else None

    step = make_step()
    requests = np.arange(batch_size, dtype=np.int64)
    nodes = np.zeros(batch_size, dtype=np.int64)
    scores = np.zeros(batch_size, dtype=np.float64)
    prefixes = np.zeros((batch_size, 0), dtype=np.int64)
    parent_rows, last_codes = requests, None
    scored = 0
    for level in range(trie.depth):
        log_probs = _call_step(step, level, parent_rows, last_codes, trie.level_sizes[level])
        scored += len(parent_rows)
        rows, child = _allowed_pairs(trie, level, nodes, requests, item_filter)
        codes = trie.node_code[level + 1][child]
        values = scores[rows] + log_probs[rows, codes]
        keep = np.flatnonzero(values >= bound[requests[rows]])
        if level == trie.depth - 1:   # leaves: the best k per request, best first
            keep = keep[_select(requests[rows[keep]], np.maximum(values[keep], _LOWEST), batch_size, k)]
        else:                         # the step protocol wants each request's rows best first
            keep = keep[np.lexsort((-values[keep], requests[rows[keep]]))]
        parent_rows, last_codes, scores, nodes = rows[keep], codes[keep], values[keep], child[keep]
        requests = requests[parent_rows]
        prefixes = np.concatenate([prefixes[parent_rows], last_codes[:, None]], axis=1)
        if len(requests) == 0:
            break
    if prefixes.shape[1] < trie.depth:
        prefixes = np.zeros((0, trie.depth), dtype=np.int64)
    items = trie.leaf_items(nodes) if len(nodes) and prefixes.shape[0] else np.zeros(0, np.int64)
    return _pack(requests, scores, prefixes, items, batch_size, k, k, trie.n_items), scored
