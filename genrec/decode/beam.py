"""Batched beam search over semantic IDs, constrained to catalogue items by a :class:`Trie`.

Only numpy: evaluation (torch model) and the ONNX server share this code through the
:class:`StepFn` callback. All work is vectorised over requests and beams; Python loops
run over the D code levels only.

Step protocol (one search calls ``step`` exactly once per level ``d = 0 .. D-1``, in order)
------------------------------------------------------------------------------------------
``step(level, parent_rows, last_codes) -> log_probs``

- ``level == 0``: ``parent_rows = arange(B)`` (row ``r`` is request ``r``), ``last_codes is None``.
  The model encodes the requests, runs its first decoder step, and returns ``(B, K_0)``.
- ``level == d > 0``: one row per live beam, ``R_d = len(parent_rows) <= B * beam_width``
  (``R_d >= 1``; when no beam is left the search stops early without calling ``step``).
  ``parent_rows[r]`` is the row of the level-(d-1) call that beam ``r`` extends and
  ``last_codes[r]`` the code it chose at level d-1. A KV-cached model does
  ``cache = cache[parent_rows]`` (and the same for any per-request tensor, e.g. encoder
  output), feeds ``last_codes`` as the next input token, and returns ``(R_d, K_d)``.
  Rows are grouped by request (ascending) and, within a request, ordered best beam first.
- The returned array holds log-probabilities over *all* K_d codes of the level (any float
  dtype; ``-inf`` is allowed, NaN is an error). Masked codes are NOT renormalised: a beam's
  score is the sum of the raw model log-probs along its path, so scores stay comparable
  with the unconstrained model and equal ``log p(item codes | history)``.

Models without a cache can wrap a ``fn(level, requests, prefixes)`` in :class:`RecomputeStep`.

Constraints
-----------
With ``constrained=True`` (default) a beam may choose a code only if the resulting prefix
still leads to at least one item allowed for its request (``item_mask``, e.g. history
excluded or a candidate subset). Every returned item is then a real, allowed, distinct item.
Ties are broken deterministically: during the search by (beam rank, code); in the returned
list by lower item id.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Protocol, Sequence

import numpy as np

from genrec.decode.trie import Trie

# Valid candidates are clipped to this key so a model's -inf log-prob still ranks above "not allowed".
_LOWEST = np.finfo(np.float64).min


class StepFn(Protocol):
    def __call__(self, level: int, parent_rows: np.ndarray, last_codes: np.ndarray | None) -> np.ndarray:
        """Log-probs (rows, K_level) for the next code; see the module docstring for the protocol."""
        ...


@dataclass(frozen=True)
class BeamResult:
    """Top-k items per request, best first; slots past the number of valid items are padded."""

    items: np.ndarray   # (B, k) int64 item ids, -1 padding (and -1 for non-item tuples when unconstrained)
    scores: np.ndarray  # (B, k) float64 summed log-probs, -inf padding
    codes: np.ndarray   # (B, k, D) int64 code tuples, -1 padding

    @property
    def n_found(self) -> np.ndarray:
        """(B,) number of returned paths per request (padding excluded)."""
        return (self.codes[:, :, 0] >= 0).sum(axis=1)


class RecomputeStep:
    """Adapts ``fn(level, requests (R,), prefixes (R, level)) -> (R, K_level)`` to :class:`StepFn`.

    For models that recompute from the full prefix instead of caching (and for tests): it
    tracks each row's request index and its code prefix from ``parent_rows``/``last_codes``.
    """

    def __init__(self, fn: Callable[[int, np.ndarray, np.ndarray], np.ndarray]) -> None:
        self._fn = fn
        self._requests = np.zeros(0, dtype=np.int64)          # (R,)
        self._prefixes = np.zeros((0, 0), dtype=np.int64)     # (R, level)

    def __call__(self, level: int, parent_rows: np.ndarray, last_codes: np.ndarray | None) -> np.ndarray:
        if level == 0:
            self._requests = np.asarray(parent_rows, dtype=np.int64).copy()
            self._prefixes = np.zeros((len(parent_rows), 0), dtype=np.int64)
        else:
            self._requests = self._requests[parent_rows]
            self._prefixes = np.concatenate([self._prefixes[parent_rows], np.asarray(last_codes)[:, None]], axis=1)
        return self._fn(level, self._requests, self._prefixes)


# ---------------------------------------------------------------------- masks
def exclude_mask(histories: Sequence[Sequence[int]] | np.ndarray, n_items: int, *,
                 out: np.ndarray | None = None, rows: Sequence[int] | None = None) -> np.ndarray:
    """(B, n_items) bool, True = allowed: every item except those in ``histories[b]``.

    ``histories`` is a list of id sequences or a (B, L) int array; negative ids are padding. With ``out``
    (a bool mask), clears ``histories[b]``'s ids in row ``rows[b]`` of it (default row b) and returns it:
    ``out[rows] &= exclude_mask(histories)`` without allocating another (B, n_items) array.
    """
    b, ids = _flatten_ids(histories, n_items, "histories")
    if out is None:
        mask = np.ones((_n_rows(histories), n_items), dtype=bool)
        mask[b, ids] = False
        return mask
    target = np.arange(_n_rows(histories)) if rows is None else np.asarray(rows, dtype=np.int64)
    if len(target) != _n_rows(histories) or out.dtype != bool or out.ndim != 2 or out.shape[1] != n_items:
        raise ValueError(f"out must be a bool (R, {n_items}) mask and rows hold one row per history")
    out[target[b], ids] = False
    return out


def candidate_mask(candidates: Sequence[Sequence[int]] | np.ndarray, n_items: int) -> np.ndarray:
    """(B, n_items) bool, True = allowed: only the items in ``candidates[b]`` (negative ids are padding)."""
    rows, ids = _flatten_ids(candidates, n_items, "candidates")
    mask = np.zeros((_n_rows(candidates), n_items), dtype=bool)
    mask[rows, ids] = True
    return mask


def _n_rows(seqs) -> int:
    return int(seqs.shape[0]) if isinstance(seqs, np.ndarray) else len(seqs)


def _flatten_ids(seqs, n_items: int, what: str) -> tuple[np.ndarray, np.ndarray]:
    """(row, id) pairs of all non-negative ids, checked to be < n_items."""
    if isinstance(seqs, np.ndarray):
        if seqs.ndim != 2:
            raise ValueError(f"{what}: expected a (B, L) array or a list of sequences, got shape {seqs.shape}")
        rows, cols = np.nonzero(seqs >= 0)
        ids = seqs[rows, cols].astype(np.int64)
    else:
        lengths = [len(s) for s in seqs]
        ids = np.concatenate([np.asarray(s, dtype=np.int64).reshape(-1) for s in seqs] + [np.zeros(0, np.int64)])
        rows = np.repeat(np.arange(len(lengths)), lengths)
        keep = ids >= 0
        rows, ids = rows[keep], ids[keep]
    bad = ids >= n_items
    if bad.any():
        j = int(np.argmax(bad))
        raise ValueError(f"{what}[{int(rows[j])}] holds item id {int(ids[j])}, but the catalogue has {n_items} items "
                         f"(ids 0..{n_items - 1}); map ids with the same dataset the trie was built from")
    return rows, ids


class _ItemFilter:
    """Answers "does request r have an allowed item in sorted positions [lo, hi)?" for an item mask.

    Most ranges are settled by their first item (one gather from the mask). The rest are counted
    with two searchsorted calls over the sparser side of the mask (allowed ids for candidate
    lists, excluded ids for histories) stored as sorted keys ``request * (N + 1) + position``.
    """

    def __init__(self, trie: Trie, item_mask: np.ndarray, batch_size: int) -> None:
        item_mask = np.asarray(item_mask)
        if item_mask.shape != (batch_size, trie.n_items) or item_mask.dtype != np.bool_:
            raise ValueError(f"item_mask must be a bool array of shape (batch_size, n_items) = "
                             f"({batch_size}, {trie.n_items}), got {item_mask.dtype} {item_mask.shape}; "
                             "build it with exclude_mask/candidate_mask")
        self.trie = trie
        self.flat_mask = np.ascontiguousarray(item_mask).reshape(-1)                    # (B * N,)
        n_allowed = int(np.count_nonzero(self.flat_mask))
        self.store_allowed = 2 * n_allowed <= item_mask.size   # else store the excluded ids
        requests, items = np.divmod(_positions_not(self.flat_mask, not self.store_allowed), trie.n_items)
        self.per_request = np.bincount(requests, minlength=batch_size)                 # (B,) stored ids
        self.stride = trie.n_items + 1
        self.keys = np.sort(requests * self.stride + trie.position[items])             # (E,)

    def any_allowed(self, requests: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
        size = hi - lo
        allowed = np.take(self.flat_mask, requests * self.trie.n_items + self.trie.order[lo])
        undecided = ~allowed & (size > 1)
        if not self.store_allowed:
            # A range larger than the request's whole exclusion list surely keeps an item.
            surely = undecided & (size > self.per_request[requests])
            allowed |= surely
            undecided &= ~surely
        check = np.flatnonzero(undecided)
        if len(check):
            base = requests[check] * self.stride
            inside = np.searchsorted(self.keys, base + hi[check]) - np.searchsorted(self.keys, base + lo[check])
            allowed[check] = inside > 0 if self.store_allowed else inside < size[check]
        return allowed


def _positions_not(flat: np.ndarray, value: bool) -> np.ndarray:
    """Sorted indices where the bool array ``flat`` is not ``value``, for a sparse answer: eight bytes
    are compared at a time and only the words that differ are looked into (a history's few excluded
    items in a 1M-item mask cost a 125k-word scan instead of a 1M-element nonzero)."""
    n_words = len(flat) // 8
    words = flat[:n_words * 8].view(np.uint64)
    same = np.uint64(0x0101010101010101) if value else np.uint64(0)   # numpy stores True as byte 1
    word = np.flatnonzero(words != same)
    inside = (word[:, None] * 8 + np.arange(8)).reshape(-1)
    tail = np.arange(n_words * 8, len(flat))
    candidates = np.concatenate([inside, tail])
    return candidates[flat[candidates] != value]


# ---------------------------------------------------------------------- shared per-level helpers
def _call_step(step: StepFn, level: int, parent_rows: np.ndarray, last_codes: np.ndarray | None,
               n_codes: int) -> np.ndarray:
    out = np.asarray(step(level, parent_rows, last_codes))
    if out.shape != (len(parent_rows), n_codes):
        raise ValueError(f"step returned shape {out.shape} at level {level}; expected (rows, K_{level}) = "
                         f"({len(parent_rows)}, {n_codes}): one row per parent_rows entry, one column per code")
    if out.dtype.kind != "f":
        raise ValueError(f"step returned dtype {out.dtype} at level {level}; expected float log-probs")
    if np.isnan(out).any():
        raise ValueError(f"step returned NaN log-probs at level {level} "
                         f"(rows {np.flatnonzero(np.isnan(out).any(axis=1))[:5].tolist()}…); check the model output")
    return out


def _allowed_pairs(trie: Trie, level: int, nodes: np.ndarray, requests: np.ndarray,
                   item_filter: _ItemFilter | None) -> tuple[np.ndarray, np.ndarray]:
    """(row, child) pairs whose child prefix still holds an item allowed for the row's request.

    Pairs come grouped by row in row order, children in increasing code order.
    """
    rows, child = trie.children(level, nodes)
    if item_filter is not None:
        lo, hi = trie.node_range(level + 1, child)
        keep = item_filter.any_allowed(requests[rows], lo, hi)
        rows, child = rows[keep], child[keep]
    return rows, child


def _top_sorted(values: np.ndarray, width: int) -> np.ndarray:
    """(n, min(width, m)) column indices of the largest ``values`` (n, m) per row: value desc, index asc.

    Exact under ties (the lowest indices among equal values win), which argpartition alone is not.
    """
    n_rows, m = values.shape
    row = np.arange(n_rows)[:, None]
    if m <= width:
        part = np.broadcast_to(np.arange(m), (n_rows, m))
    else:
        part = np.argpartition(-values, width - 1, axis=1)[:, :width]
        kth = values[row, part[:, width - 1:]]                                        # (n, 1) width-th largest
        # Rows where more than `width` entries reach the threshold have a tie at the cut.
        surplus = ((values >= kth).sum(axis=1) > width) & (kth[:, 0] > -np.inf)
        if surplus.any():
            r = np.flatnonzero(surplus)
            sub, v = values[r], kth[r]
            above = sub > v
            tied = sub == v
            need = width - above.sum(axis=1, keepdims=True)
            take = above | (tied & (np.cumsum(tied, axis=1) <= need))
            part = part.copy()
            part[r] = np.nonzero(take)[1].reshape(len(r), width)
    order = np.lexsort((part, -values[row, part]), axis=1)
    return part[row, order]


def _select(pair_requests: np.ndarray, keys: np.ndarray, batch_size: int, width: int) -> np.ndarray:
    """Indices of the best ``width`` candidates of each request, grouped by request, best first.

    ``pair_requests`` (M,) is non-decreasing; within a request, candidate order breaks ties.
    """
    if len(keys) == 0:
        return np.zeros(0, dtype=np.int64)
    count = np.bincount(pair_requests, minlength=batch_size)                          # (B,)
    start = np.cumsum(count) - count
    # Padded (B, max candidates) view: -inf marks padding, allowed candidates are > -inf.
    if batch_size == 1:
        padded = keys[None]   # the common serving case: nothing to pad
    else:
        padded = np.full((batch_size, int(count.max())), -np.inf)
        padded[pair_requests, np.arange(len(keys)) - start[pair_requests]] = keys
    top = _top_sorted(padded, width)                                                  # (B, W')
    req, rank = np.nonzero(padded[np.arange(batch_size)[:, None], top] > -np.inf)
    return start[req] + top[req, rank]


def _check_sizes(batch_size: int, beam_width: int, k: int) -> None:
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if beam_width < 1:
        raise ValueError(f"beam_width must be >= 1, got {beam_width}")
    if not 1 <= k <= beam_width:
        raise ValueError(f"k must be in [1, beam_width={beam_width}], got {k}: "
                         "a beam search can return at most beam_width items, so raise beam_width")


# ---------------------------------------------------------------------- decoders
def beam_search(step: StepFn, trie: Trie, batch_size: int, beam_width: int, k: int, *,
                item_mask: np.ndarray | None = None, constrained: bool = True) -> BeamResult:
    """Top-``k`` items per request by beam search with ``beam_width`` beams per request.

    ``item_mask`` (B, N) bool marks the items each request may receive (see
    :func:`exclude_mask`, :func:`candidate_mask`). ``constrained=False`` ignores the trie
    while decoding (every code tuple is reachable) and maps the final tuples to item ids,
    -1 where a tuple is not an item; use it only to measure invalid_rate.
    """
    _check_sizes(batch_size, beam_width, k)
    if not constrained and item_mask is not None:
        raise ValueError("item_mask needs constrained decoding: pass constrained=True or drop item_mask")
    item_filter = _ItemFilter(trie, item_mask, batch_size) if item_mask is not None else None

    # Live beams, one row each, grouped by request and best first: all (R,) or (R, d).
    requests = np.arange(batch_size, dtype=np.int64)
    nodes = np.zeros(batch_size, dtype=np.int64)          # trie node of each prefix (the root at level 0)
    scores = np.zeros(batch_size, dtype=np.float64)
    prefixes = np.zeros((batch_size, 0), dtype=np.int64)
    parent_rows, last_codes = requests, None

    for level in range(trie.depth):
        n_codes = trie.level_sizes[level]
        log_probs = _call_step(step, level, parent_rows, last_codes, n_codes)        # (R, K)
        # Candidates are (row, code) pairs, grouped by row, codes ascending; values are path scores.
        if constrained:
            rows, child = _allowed_pairs(trie, level, nodes, requests, item_filter)       # (M,)
            codes = trie.node_code[level + 1][child]
            values = scores[rows] + log_probs[rows, codes]
        else:
            rows = np.repeat(np.arange(len(requests)), n_codes)
            codes = np.tile(np.arange(n_codes), len(requests))
            values = (scores[:, None] + log_probs).reshape(-1)
        pick = _select(requests[rows], np.maximum(values, _LOWEST), batch_size, beam_width)
        parent_rows, last_codes, scores = rows[pick], codes[pick], values[pick]
        requests = requests[parent_rows]
        prefixes = np.concatenate([prefixes[parent_rows], last_codes[:, None]], axis=1)
        if constrained:
            nodes = child[pick]
        if len(requests) == 0:
            break

    if prefixes.shape[1] < trie.depth:   # every beam died: no request had an allowed item
        prefixes = np.zeros((0, trie.depth), dtype=np.int64)
    items = trie.leaf_items(nodes) if constrained else trie.lookup(prefixes)
    return _pack(requests, scores, prefixes, items, batch_size, beam_width, k, trie.n_items)


def greedy_decode(step: StepFn, trie: Trie, batch_size: int, *, item_mask: np.ndarray | None = None) -> BeamResult:
    """The single best allowed code at every level (argmax, ties to the lower code); returns k = 1."""
    item_filter = _ItemFilter(trie, item_mask, batch_size) if item_mask is not None else None
    requests = np.arange(batch_size, dtype=np.int64)
    nodes = np.zeros(batch_size, dtype=np.int64)
    scores = np.zeros(batch_size, dtype=np.float64)
    prefixes = np.zeros((batch_size, 0), dtype=np.int64)
    parent_rows, last_codes = np.arange(batch_size, dtype=np.int64), None
    for level in range(trie.depth):
        totals = scores[:, None] + _call_step(step, level, parent_rows, last_codes, trie.level_sizes[level])
        keys = np.full(totals.shape, -np.inf)
        rows, child = _allowed_pairs(trie, level, nodes, requests, item_filter)
        codes = trie.node_code[level + 1][child]
        keys[rows, codes] = np.maximum(totals[rows, codes], _LOWEST)
        best = keys.argmax(axis=1)                                                    # (R,)
        parent_rows = np.flatnonzero(keys[np.arange(len(best)), best] > -np.inf)
        last_codes = best[parent_rows]
        scores = totals[parent_rows, last_codes]
        prefixes = np.concatenate([prefixes[parent_rows], last_codes[:, None]], axis=1)
        nodes = trie.child(level, nodes[parent_rows], last_codes)
        requests = requests[parent_rows]
        if len(requests) == 0:
            break
    done = prefixes.shape[1] == trie.depth
    items = trie.leaf_items(nodes) if done else np.zeros(0, np.int64)
    prefixes = prefixes if done else np.zeros((0, trie.depth), np.int64)
    return _pack(requests, scores, prefixes, items, batch_size, 1, 1, trie.n_items)


def _pack(requests: np.ndarray, scores: np.ndarray, prefixes: np.ndarray, items: np.ndarray,
          batch_size: int, width: int, k: int, n_items: int) -> BeamResult:
    """Scatter final beams (grouped by request) into (B, width), order rows by score desc then item id asc, keep k."""
    depth = prefixes.shape[1]
    ranks = np.arange(len(requests)) - np.searchsorted(requests, requests)           # position within request
    dense_items = np.full((batch_size, width), -1, dtype=np.int64)
    dense_scores = np.full((batch_size, width), -np.inf)
    dense_codes = np.full((batch_size, width, depth), -1, dtype=np.int64)
    present = np.zeros((batch_size, width), dtype=bool)
    dense_items[requests, ranks] = items
    dense_scores[requests, ranks] = scores
    dense_codes[requests, ranks] = prefixes
    present[requests, ranks] = True
    # Non-item tuples (unconstrained mode) tie-break after real items, keeping their beam rank order.
    tiebreak = np.where(dense_items >= 0, dense_items, n_items + np.arange(width))
    order = np.lexsort((tiebreak, -dense_scores, ~present), axis=1)[:, :k]
    row = np.arange(batch_size)[:, None]
    return BeamResult(items=dense_items[row, order], scores=dense_scores[row, order], codes=dense_codes[row, order])
