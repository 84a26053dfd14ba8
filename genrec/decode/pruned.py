"""Exact top-k for prefix-independent (parallel) code heads without scoring the whole catalogue.

Item i scores ``sum_d logp_d[codes[i, d]]``: one table lookup per digit. :func:`genrec.decode.score_catalogue`
computes that for all N items; :func:`pruned_search` returns exactly the same top-k (same items, order, ties
to the lower item id, float64 scores, masks and padding) while scoring a small share of them.

Method "postings" (the default), per request, over per-digit posting lists (:class:`PostingIndex`):

1. seed: read the list of each digit's best code, score the items listed most often (widening to the
   best 2, 4, ... codes while fewer than k allowed items turn up); the k-th best score found, ``kth``,
   is a lower bound of the true k-th score;
2. bound: write ``gap_d(i) = max_d - logp_d[codes[i, d]] >= 0`` (max_d over codes some item uses) and
   ``delta = sum_d max_d - kth``: an item reaches ``kth`` only if its gaps sum to at most ``delta``.
   Pick ``x = delta / (S - m + 1)`` (S digits, leaving out those whose every code is within delta / S, as
   their lists hold every item; m as large as keeps the reads within ``read_growth`` of m = 1's, so an
   item must be near its best in about m digits) and read the lists of every code with gap <= x,
   adding ``x - gap`` to each listed item (one weighted bincount). An item absent from a digit's lists has
   a gap > x there, so ``x * S - (its sum)`` bounds its gap total from below: items whose sum is at most
   ``x * S - delta`` cannot reach ``kth`` (the threshold algorithm's bound, sharpened with what the lists
   say about the digits where the item was seen);
3. score the remaining candidates exactly and keep the top k.
Bounds carry a margin far above float rounding (1e-9 relative), so float sums in another order never
drop an item; the returned scores are summed in score_catalogue's order, so they are the same floats.

A request falls back to a dense pass over every item when reading the lists would cost more than that pass
(flat per-digit distributions), when too many candidates are left, or when fewer than k allowed finite
items turn up to seed with. That pass sums float32 pair tables (two digits per gather, over transposed
uint8 / uint16 codes) and rescores exactly, in float64, the items within float32's rounding bound of the
k-th best: the same top-k and floats as score_catalogue at about half the float64 pass's cost. A request
whose mask allows at most ``direct_fraction`` of the items (candidate lists) scores just those.
Catalogues below ``min_items`` are scored densely.

Method "trie" is the alternative measured in bench/scale.py: a beam search seeds ``kth``, then a
level-by-level walk of the prefix trie keeps nodes whose bound (exact prefix score + the best code of
every later digit) reaches it. Its bound knows only the first digits, so it prunes little on PQ codes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from genrec.decode.beam import BeamResult, StepFn, _top_sorted, beam_search
from genrec.decode.postings import PostingIndex
from genrec.decode.trie import Trie

METHODS = ("postings", "trie")
READ_GROWTH = 1.5         # x = delta / (S - m + 1), m as large as keeps the lists to read within this factor
                          # of m = 1's: more reads buy fewer candidates, and a scored candidate costs ~15 reads
MAX_READS = 1.0           # fall back to the dense pass when the lists to read hold more than this many
                          # entries per catalogue item: reading N entries (and scoring the candidates)
                          # took about as long as the float32 dense pass at 1M items (bench/scale.py)
MAX_CANDIDATES = 0.15     # ... or when more than this share of the items are left to score at random
DIRECT_FRACTION = 1 / 64  # a mask allowing at most this share of items: score exactly those (candidate lists)
MIN_ITEMS = 65_536        # below this catalogue size the dense pass was as fast as pruning (bench/scale.py:
                          # crossover between 60k and 100k items for 16-digit PQ codes, batch 1 and 32)
SEED_ITEMS = 1024         # items scored to seed kth (those listed under the most best codes): the closer
                          # kth is to the true k-th score, the fewer lists step 2 reads
SEED_SHARE = 0.01         # ... but at most this share of the catalogue (and at least 4 k)
SEED_BEAM = 16            # beam width of the trie method's seed search (at least k)
SCORE_BLOCK = 1 << 22     # max requests x items scored densely at once (as genrec.decode.exhaustive)
DENSE_CHUNK = 1 << 15     # items x requests summed over every digit before moving on (256 kB of float64)
MARGIN = 1e-9             # relative slack on every bound: float sums in another order differ by ~1e-15
FLOAT32_SAFE = 1e30       # the float32 dense pass needs every finite log-prob (and sum) far inside float32's range
FLOAT32_TINY = 2.0 ** -126  # ... and an absolute term for rounding near zero (below float32's normal range)
MAX_DENSE_CANDIDATES = 0.25  # ties at the cut leaving more than this share of items: the float64 pass instead
FLOAT32_MIN_ITEMS = 1 << 16  # below this the float64 pass, batched over requests, is as fast (0.3 ms a request at
                          # 10k items and batch 32, against 0.8 ms for the float32 pass's per-request overhead)


@dataclass(frozen=True)
class PrunedResult:
    """What :func:`pruned_search` returns: the top-k and the work each request took."""

    result: BeamResult          # equal to score_catalogue's
    items_scored: np.ndarray    # (B,) int64 items whose full score was computed, per request
    entries_read: np.ndarray    # (B,) int64 posting-list entries (or trie nodes) read, per request
    path: np.ndarray            # (B,) str: "pruned", "allowed" (scored its few allowed items) or "full"


def pruned_search(step: StepFn, trie: Trie, batch_size: int, k: int, *, item_mask: np.ndarray | None = None,
                  method: str = "postings", read_growth: float = READ_GROWTH, max_reads: float = MAX_READS,
                  max_candidates: float = MAX_CANDIDATES, direct_fraction: float = DIRECT_FRACTION,
                  min_items: int = MIN_ITEMS) -> PrunedResult:
    """Top-``k`` items per request, equal to ``score_catalogue(step, trie, batch_size, k, item_mask=...)``.

    Calls ``step`` as score_catalogue does (once per level, every request). The posting lists come from
    ``trie.postings`` (built on first use, or loaded with the trie). Pass ``max_reads=inf``,
    ``max_candidates=inf``, ``direct_fraction=0`` and ``min_items=0`` to keep requests off the dense pass
    (tests do).
    """
    if batch_size < 1 or k < 1:
        raise ValueError(f"batch_size and k must be >= 1, got {batch_size} and {k}")
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if read_growth < 1:
        raise ValueError(f"read_growth must be >= 1, got {read_growth}")
    n_items = trie.n_items
    if item_mask is not None and (item_mask.shape != (batch_size, n_items) or item_mask.dtype != bool):
        raise ValueError(f"item_mask must be a bool array of shape ({batch_size}, {n_items}), "
                         f"got {item_mask.dtype} {item_mask.shape}")
    tables = _level_tables(step, trie, batch_size)
    search = _Search(tables, trie, k, item_mask)

    path = np.full(batch_size, "pruned", dtype=object)
    n_allowed = np.count_nonzero(item_mask, axis=1) if item_mask is not None else np.full(batch_size, n_items)
    # +inf log-probs could make inf - inf sums: the dense pass reproduces them, the bounds would not
    if n_items < min_items or any(np.isposinf(t).any() for t in tables):
        path[:] = "full"
    else:
        path[n_allowed <= direct_fraction * n_items] = "allowed"
    search.score_allowed(np.flatnonzero(path == "allowed"))
    pruned = np.flatnonzero(path == "pruned")
    if len(pruned):
        if method == "postings":
            gave_up = search.postings(pruned, read_growth, max_reads * n_items, max_candidates * n_items)
        else:
            gave_up = search.trie_walk(pruned, max_reads * n_items)
        path[gave_up] = "full"
    search.score_full(np.flatnonzero(path == "full"))
    return PrunedResult(result=search.pack(), items_scored=search.scored, entries_read=search.read,
                        path=path.astype(str))


def _level_tables(step: StepFn, trie: Trie, batch_size: int) -> list[np.ndarray]:
    """D x (B, K_d) float64 log-probs, one step call per level exactly as score_catalogue makes them."""
    rows = np.arange(batch_size)
    no_prefix = np.zeros(batch_size, dtype=np.int64)
    tables = [np.asarray(step(level, rows, None if level == 0 else no_prefix), dtype=np.float64)
              for level in range(trie.depth)]
    for level, logp in enumerate(tables):
        if logp.shape != (batch_size, trie.level_sizes[level]) or np.isnan(logp).any():
            raise ValueError(f"step({level}) must return ({batch_size}, {trie.level_sizes[level]}) log-probs without NaN, "
                             f"got shape {logp.shape}")
    return tables


class _Search:
    """One batched search: the tables, per-request work counters, and the items that may be in each
    request's top-k (``found_*``: row, item, score; finite and allowed)."""

    def __init__(self, tables: list[np.ndarray], trie: Trie, k: int, item_mask: np.ndarray | None) -> None:
        self.tables, self.trie, self.k, self.mask = tables, trie, k, item_mask
        self.batch = len(tables[0])
        self.n = trie.n_items
        self.scored = np.zeros(self.batch, dtype=np.int64)
        self.read = np.zeros(self.batch, dtype=np.int64)
        self.found_rows = np.zeros(0, dtype=np.int64)
        self.found_items = np.zeros(0, dtype=np.int64)
        self.found_scores = np.zeros(0, dtype=np.float64)
        self.dense: dict[int, tuple[np.ndarray, np.ndarray]] = {}   # full rows: (items (k,), scores (k,))

    @property
    def codes_t(self) -> np.ndarray:
        """(D, N) transposed codes (the index's compact copy; built with the index on first use)."""
        return self.trie.postings.codes_t

    # ------------------------------------------------------------------ scoring
    def item_scores(self, row: int, items: np.ndarray) -> np.ndarray:
        """(M,) float64 scores of ``items`` for request ``row``, summed in score_catalogue's order (0 + l_0 + ...)."""
        codes_t = self.codes_t
        total = np.zeros(len(items), dtype=np.float64)
        for d, logp in enumerate(self.tables):
            total += logp[row, codes_t[d, items]]
        self.scored[row] += len(items)
        return total

    def keep(self, rows: int | np.ndarray, items: np.ndarray, scores: np.ndarray,
             kth: float | np.ndarray = -np.inf) -> None:
        """Add scored items (of request ``rows``, one or one per item) that may be in the top-k: finite, >= ``kth``."""
        ok = (scores > -np.inf) & (scores >= kth)
        rows = np.broadcast_to(np.asarray(rows, dtype=np.int64), scores.shape)
        self.found_rows = np.concatenate([self.found_rows, rows[ok]])
        self.found_items = np.concatenate([self.found_items, items[ok].astype(np.int64)])
        self.found_scores = np.concatenate([self.found_scores, scores[ok]])

    def score_allowed(self, rows: np.ndarray) -> None:
        """Score exactly the allowed items of ``rows`` (masks that allow few items)."""
        for row in rows:
            items = np.flatnonzero(self.mask[row])
            self.keep(int(row), items, self.item_scores(int(row), items))

    def score_full(self, rows: np.ndarray) -> None:
        """Every item of ``rows`` scored: a float32 pass over all items finds the few that may be in the
        top-k, which are then scored exactly (float64, score_catalogue's order); see :meth:`_dense_candidates`."""
        if len(rows) == 0:
            return
        drop = np.isin(self.found_rows, rows)         # a search that gave up may have kept some items
        self.found_rows, self.found_items, self.found_scores = (
            self.found_rows[~drop], self.found_items[~drop], self.found_scores[~drop])
        exact_rows = []
        scale = _abs_scale(self.tables)
        for row in rows.tolist():
            candidates = self._dense_candidates(row, float(scale[row])) if self.n >= FLOAT32_MIN_ITEMS else None
            if candidates is None:
                exact_rows.append(row)
                continue
            self.keep(row, candidates, self.item_scores(row, candidates))
            self.scored[row] = self.n
        self._score_full_exact(np.asarray(exact_rows, dtype=np.int64))

    def _dense_candidates(self, row: int, scale: float) -> np.ndarray | None:
        """The allowed items whose float32 score (digit pairs summed in pair tables: half the gathers of
        the float64 pass) is within twice its rounding bound of the k-th best: a superset of the top-k.

        An item i of the top-k scores s_i >= s_k >= a_k - err (the k items at or above the float32 k-th
        score a_k score at least a_k - err each), so its float32 score is >= a_k - 2 err. None (use the
        float64 pass) for +inf or huge log-probs, which float32 cannot bound, or when ties at the cut
        leave a quarter of the catalogue. ``scale``: the row's sum over digits of the largest finite |log-prob|."""
        tables = [t[row] for t in self.tables]
        if any(np.isposinf(t).any() for t in tables) or scale > FLOAT32_SAFE:
            return None
        groups = self.trie.postings.dense_groups
        pair_tables = [(tables[g[0]] if len(g) == 1 else np.add.outer(tables[g[0]], tables[g[1]]).reshape(-1))
                       .astype(np.float32) for g, _ in groups]
        approx = np.empty(self.n, dtype=np.float32)
        for lo in range(0, self.n, DENSE_CHUNK):
            part = approx[lo:lo + DENSE_CHUNK]
            np.take(pair_tables[0], groups[0][1][lo:lo + DENSE_CHUNK], out=part)
            for table, (_, codes) in zip(pair_tables[1:], groups[1:]):
                part += np.take(table, codes[lo:lo + DENSE_CHUNK])
        allowed = None if self.mask is None else self.mask[row]
        if allowed is not None:
            approx[~allowed] = -np.inf
        k_eff = min(self.k, self.n)
        kth = float(np.partition(approx, self.n - k_eff)[self.n - k_eff])
        # float32 rounding: each table entry and each running sum is off by <= 2**-24 of at most `scale`
        err = (2 * len(groups) + 4) * 2.0 ** -24 * scale + FLOAT32_TINY * len(groups)
        if kth == -np.inf:                    # fewer than k finite allowed items: every allowed item may be
            candidates = np.arange(self.n) if allowed is None else np.flatnonzero(allowed)
        else:
            candidates = np.flatnonzero(approx >= np.float32(kth - 2 * err))
        return None if len(candidates) > self.n * MAX_DENSE_CANDIDATES else candidates

    def _score_full_exact(self, rows: np.ndarray) -> None:
        """Dense float64 scoring of every item for ``rows``: score_catalogue's sums, over the transposed codes."""
        if len(rows) == 0:
            return
        codes_t = self.codes_t
        k_eff = min(self.k, self.n)
        block = max(1, SCORE_BLOCK // self.n)
        for start in range(0, len(rows), block):
            sl = rows[start:start + block]
            tables_t = [np.ascontiguousarray(logp[sl].T) for logp in self.tables]   # D x (K_d, rows)
            total_t = np.empty((self.n, len(sl)), dtype=np.float64)
            # Every digit over one slice of items at a time: the running sums stay in cache instead of
            # streaming the (N, rows) array through memory once per digit. Same order of additions
            # (0 + l_0 + l_1 + ...) as score_catalogue, so the same floats.
            step = max(1, DENSE_CHUNK // len(sl))
            for lo in range(0, self.n, step):
                part = total_t[lo:lo + step]
                part.fill(0.0)
                for level, table_t in enumerate(tables_t):
                    part += np.take(table_t, codes_t[level, lo:lo + step], axis=0)
            total = np.ascontiguousarray(total_t.T)                                  # (rows, N)
            if self.mask is not None:
                total[~self.mask[sl]] = -np.inf
            top = _top_sorted(total, k_eff)
            for j, row in enumerate(sl):
                self.dense[int(row)] = (top[j], total[j, top[j]])
            self.scored[sl] = self.n

    # ------------------------------------------------------------------ posting lists
    def postings(self, rows: np.ndarray, read_growth: float, max_reads: float, max_candidates: float) -> np.ndarray:
        """The seed + bound + score search for ``rows``; returns the rows that need the dense pass instead."""
        index: PostingIndex = self.trie.postings
        flat_items = index.items.reshape(-1)
        selective = np.flatnonzero(index.selective)
        n_sel = len(selective)
        n_seeds = min(SEED_ITEMS, max(4 * self.k, int(SEED_SHARE * self.n)))
        gave_up = []
        if n_sel == 0:                      # no digit tells items apart: nothing to prune with
            return rows
        # Per digit and request: the best log-prob among codes some item uses (unused codes bound nothing).
        used = [np.where(size > 0, logp, -np.inf) for size, logp in zip(index.sizes, self.tables)]
        best = np.stack([u.max(axis=1) for u in used], axis=1)                       # (B, D)
        scale = _abs_scale(used)
        for row in rows.tolist():
            if not np.isfinite(best[row]).all():
                continue                    # a digit where every used code is -inf: every item scores -inf
            mask_row = None if self.mask is None else self.mask[row]
            # 1. seed: items listed under the most best codes (the best 2, 4, ... codes per digit while
            # fewer than k allowed finite items turn up, e.g. behind a mask)
            kth = self._seed(row, index, flat_items, selective, used, n_seeds)
            if kth is None:
                gave_up.append(row)         # fewer than k allowed finite items among the seeds
                continue
            # 2. bound: read the lists of codes within x of their digit's best. A digit whose codes all lie
            # within delta / S (e.g. a uniform dedup digit) would list every item: leave it out of the bound
            # (its gaps are >= 0) and spread delta over the other digits.
            margin = MARGIN * (1.0 + abs(kth) + scale[row])
            delta = float(best[row].sum()) - kth + margin
            gaps = {d: best[row, d] - used[d][row] for d in selective}
            digits = list(selective)
            while digits:
                widest = {d: np.max(gaps[d], where=np.isfinite(gaps[d]), initial=0.0) for d in digits}
                informative = [d for d in digits if widest[d] > delta / len(digits)]
                if len(informative) == len(digits):
                    break
                digits = informative
            if not digits:
                gave_up.append(row)         # every code of every digit is near its best: no item can be ruled out
                continue
            x = self._spread(delta, digits, gaps, index, read_growth)
            picked = []
            for d in digits:
                codes = np.flatnonzero(gaps[d] <= x)
                picked.append((d, codes, x - gaps[d][codes]))
            n_read = sum(int(index.sizes[d][codes].sum()) for d, codes, _ in picked)
            if n_read > max_reads:
                gave_up.append(row)
                continue
            items = np.concatenate([_list(index, flat_items, d, c) for d, codes, _ in picked for c in codes.tolist()])
            weights = np.concatenate([np.repeat(w, index.sizes[d][codes]) for d, codes, w in picked])
            self.read[row] += len(items)
            credit = np.bincount(items, weights=weights, minlength=self.n)
            # len(digits) * x - credit < (the item's gap sum): unless it exceeds delta the item may reach kth
            # (strict: delta carries the margin, so an item on the boundary still scores below kth)
            candidates = np.flatnonzero(credit > len(digits) * x - delta)
            if mask_row is not None:
                candidates = candidates[mask_row[candidates]]
            if len(candidates) > max_candidates:
                gave_up.append(row)
                continue
            # 3. exact scores of the candidates (they include the seed's top k)
            self.keep(row, candidates, self.item_scores(row, candidates), kth)
        return np.asarray(gave_up, dtype=np.int64)

    @staticmethod
    def _spread(delta: float, digits: list[int], gaps: dict, index: PostingIndex, read_growth: float) -> float:
        """The per-digit gap x: ``delta / (S - m + 1)`` for the largest m (hits an item needs) whose lists hold
        at most ``read_growth`` times the entries of m = 1. Missing m digits then costs more than delta; a
        larger m leaves fewer candidates to score but reads more lists (counted here, before reading)."""
        n_dig = len(digits)
        xs = delta / (n_dig - np.arange(n_dig))                                    # m = 1 .. S
        reads = np.zeros(n_dig)
        for d in digits:
            order = np.argsort(gaps[d], kind="stable")
            listed = np.cumsum(index.sizes[d][order])
            at = np.searchsorted(gaps[d][order], xs, side="right")                 # codes with gap <= x
            reads += np.where(at > 0, listed[np.maximum(at - 1, 0)], 0)
        m = int(np.flatnonzero(reads <= read_growth * reads[0])[-1])
        return float(xs[m])

    def _seed(self, row: int, index: PostingIndex, flat_items: np.ndarray, selective: np.ndarray,
              used: list[np.ndarray], n_seeds: int) -> float | None:
        """The k-th best score among the items listed under most of the best codes, or None (< k found)."""
        mask_row = None if self.mask is None else self.mask[row]
        ranked = [np.argsort(-used[d][row], kind="stable")[:int((index.sizes[d] > 0).sum())] for d in selective]
        width = 1
        while True:
            lists = np.concatenate([_list(index, flat_items, d, int(c)) for d, codes in zip(selective, ranked)
                                    for c in codes[:width]])
            self.read[row] += len(lists)
            # counts by sorting what was read, not by a pass over all N items (the lists hold ~ D N / K)
            touched, count = np.unique(lists, return_counts=True)
            if mask_row is not None:
                allowed = mask_row[touched]
                touched, count = touched[allowed], count[allowed]
            if len(touched) > n_seeds:
                touched = touched[np.argpartition(-count, n_seeds - 1)[:n_seeds]]
            scores = self.item_scores(row, touched)
            finite = scores[scores > -np.inf]
            if len(finite) >= self.k:
                return float(np.partition(finite, len(finite) - self.k)[len(finite) - self.k])
            if width >= max(len(codes) for codes in ranked):
                return None
            width *= 2

    # ------------------------------------------------------------------ trie walk (the alternative)
    def trie_walk(self, rows: np.ndarray, max_nodes: float) -> np.ndarray:
        """Seed kth by beam search, then walk the trie keeping nodes whose bound reaches it."""
        trie, k = self.trie, self.k
        n_rows = len(rows)
        sub_tables = [t[rows] for t in self.tables]
        mask = None if self.mask is None else self.mask[rows]
        width = max(SEED_BEAM, k)
        seed = beam_search(_TableStep(sub_tables), trie, n_rows, width, width, item_mask=mask)
        self.scored[rows] += seed.n_found
        kth = seed.scores[:, k - 1]                                                 # best first, -inf padding
        # bound of a level-l prefix: its exact score + the best code of every later digit, summed in order
        top = np.stack([t.max(axis=1) for t in sub_tables], axis=1)                 # (R, D)
        node_rows = np.arange(n_rows)
        nodes = np.zeros(n_rows, dtype=np.int64)
        prefix = np.zeros(n_rows)
        gave_up = np.zeros(n_rows, dtype=bool)
        for level in range(trie.depth):
            pair, child = trie.children(level, nodes)
            node_rows = node_rows[pair]
            codes = trie.node_code[level + 1][child]
            flat = np.ascontiguousarray(sub_tables[level]).reshape(-1)
            prefix = prefix[pair] + flat[node_rows * trie.level_sizes[level] + codes]
            bound = prefix.copy()
            for d in range(level + 1, trie.depth):
                bound += top[node_rows, d]
            expanded = np.bincount(node_rows, minlength=n_rows)
            self.read[rows] += expanded
            if level == trie.depth - 1:
                self.scored[rows] += expanded          # a leaf's prefix score is the item's full score
            gave_up |= self.read[rows] > max_nodes
            ok = (bound >= kth[node_rows]) & (bound > -np.inf) & ~gave_up[node_rows]
            node_rows, nodes, prefix = node_rows[ok], child[ok], prefix[ok]
        items = trie.leaf_items(nodes)
        ok = ~gave_up[node_rows] if self.mask is None else ~gave_up[node_rows] & self.mask[rows[node_rows], items]
        self.keep(rows[node_rows[ok]], items[ok], prefix[ok], kth[node_rows[ok]])
        return rows[gave_up]

    # ------------------------------------------------------------------ result
    def pack(self) -> BeamResult:
        """(B, k) items, scores and codes: best first, ties to the lower id, -1 / -inf padding."""
        b, k = self.batch, self.k
        items = np.full((b, k), -1, dtype=np.int64)
        scores = np.full((b, k), -np.inf)
        order = np.lexsort((self.found_items, -self.found_scores, self.found_rows))
        rows = self.found_rows[order]
        rank = np.arange(len(rows)) - np.searchsorted(rows, rows)
        take = order[rank < k]
        items[self.found_rows[take], rank[rank < k]] = self.found_items[take]
        scores[self.found_rows[take], rank[rank < k]] = self.found_scores[take]
        for row, (top, top_scores) in self.dense.items():
            found = np.isfinite(top_scores)
            items[row, :len(top)] = np.where(found, top, -1)
            scores[row, :len(top)] = np.where(found, top_scores, -np.inf)
        codes = np.where(items[..., None] >= 0, self.trie.item_codes[items.clip(min=0)], -1)
        return BeamResult(items=items, scores=scores, codes=codes)


def _abs_scale(tables: list[np.ndarray]) -> np.ndarray:
    """(B,) per request: the sum over digits of the largest finite |log-prob| (a bound on any partial sum)."""
    return np.stack([np.where(np.isfinite(t), np.abs(t), 0).max(axis=1) for t in tables], axis=1).sum(axis=1)


class _TableStep:
    """StepFn over fixed per-request tables (a prefix-independent head): the trie method's seed search."""

    def __init__(self, tables: list[np.ndarray]) -> None:
        self.tables = tables
        self.requests = np.zeros(0, dtype=np.int64)

    def __call__(self, level: int, parent_rows: np.ndarray, last_codes: np.ndarray | None) -> np.ndarray:
        self.requests = np.asarray(parent_rows) if level == 0 else self.requests[parent_rows]
        return self.tables[level][self.requests]


def _list(index: PostingIndex, flat_items: np.ndarray, digit: int, code: int) -> np.ndarray:
    """The items whose code at ``digit`` is ``code`` (a view into the flattened lists)."""
    at = index.digit_offset[digit] + code
    return flat_items[index.list_start[at]:index.list_start[at + 1]]
