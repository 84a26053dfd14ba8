"""Exact top-k for prefix-independent (parallel) code heads without scoring the whole catalogue.

Item i scores ``sum_d logp_d[codes[i, d]]``: one table lookup per digit. :func:`genrec.decode.score_catalogue`
computes that for all N items; :func:`pruned_search` returns exactly the same top-k (same items, order, ties
to the lower item id, float64 scores, masks and padding) while scoring a small share of them.

Method "postings" (the default), per request, over posting lists of digit pairs (:class:`PostingIndex`:
neighbouring digits a, b form one group whose joint code's log-prob is ``logp_a + logp_b``):

1. seed: read the lists of each group's 16 best joint codes, score the items listed most often (widening
   to the best 32, 64, ... while fewer than k allowed items turn up); the k-th best score found, ``kth``,
   is a lower bound of the true k-th score;
2. bound: write ``gap_d(i) = max_d - logp_d[codes[i, d]] >= 0`` (max_d over codes some item uses), a group's
   gap the sum of its digits', and ``delta = sum_d max_d - kth``: an item reaches ``kth`` only if its gaps
   sum to at most ``delta``. Pick a per-group gap x_g (S groups, leaving out those whose every code is
   within delta / S, as their lists hold every item; the same estimated read budget for every group, the
   smallest with ``sum(x) - max(x) >= delta``, so an item must be near its best in two groups) and read
   the lists of every joint code with gap <= x_g (enumerated from the digits' sorted gaps, not by a pass
   over the K_a * K_b codes), adding ``x_g - gap`` to each listed item (one weighted bincount). An item
   absent from a group's lists has a gap > x_g there, so ``sum(x) - (its sum)`` bounds its gap total from
   below: items whose sum is at most ``sum(x) - delta`` cannot reach ``kth`` (the threshold algorithm's
   bound, sharpened with what the lists say about the groups where the item was seen);
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
HITS = 2                  # groups an item must be near its best in to stay a candidate: one hit leaves nearly every
                          # item read a candidate; three read more lists than the candidates they save cost
ALIKE = 30.0              # groups whose estimated reads at one shared x differ less than this share it: the per-group
                          # search costs more than it saves on alike groups (bench/scale.py's synthetic head), and
                          # a trained model's flat text pairs and peaked collaborative pairs differ by far more
GRID_FRACTIONS = np.geomspace(1 / 256, 1.0, 25)   # per-group thresholds x_g tried, as fractions of delta
                                                  # (steps of 1.26x)
MAX_READS = 0.4           # fall back to the dense pass when the lists to read hold more than this many
                          # entries per catalogue item: reading 0.4 N entries (and scoring the candidates)
                          # took about as long as the float32 dense pass at 1M items (bench/scale.py)
MAX_CANDIDATES = 0.15     # ... or when more than this share of the items are left to score at random
DIRECT_FRACTION = 1 / 64  # a mask allowing at most this share of items: score exactly those (candidate lists)
MIN_ITEMS = 65_536        # below this catalogue size the dense pass was as fast as pruning (bench/scale.py:
                          # crossover between 60k and 100k items for 16-digit PQ codes, batch 1 and 32)
SEED_CODES = 16           # joint codes per group whose lists seed kth (doubled while fewer than k items turn up)
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
                  method: str = "postings", max_reads: float = MAX_READS,
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
    n_items = trie.n_items
    if item_mask is not None and (item_mask.shape != (batch_size, n_items) or item_mask.dtype != bool):
        raise ValueError(f"item_mask must be a bool array of shape ({batch_size}, {n_items}), "
                         f"got {item_mask.dtype} {item_mask.shape}")
    tables = _level_tables(step, trie, batch_size)
    search = _Search(tables, trie, k, item_mask)

    path = np.full(batch_size, "pruned", dtype=object)
    # per row: count_nonzero over a whole row is a fast popcount, with axis=1 it is a slow reduction
    n_allowed = (np.array([np.count_nonzero(r) for r in item_mask]) if item_mask is not None
                 else np.full(batch_size, n_items))
    # +inf log-probs could make inf - inf sums: the dense pass reproduces them, the bounds would not
    if n_items < min_items or any(np.isposinf(t).any() for t in tables):
        path[:] = "full"
    else:
        path[n_allowed <= direct_fraction * n_items] = "allowed"
    search.score_allowed(np.flatnonzero(path == "allowed"))
    pruned = np.flatnonzero(path == "pruned")
    if len(pruned):
        if method == "postings":
            gave_up = search.postings(pruned, max_reads * n_items, max_candidates * n_items)
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
            raise ValueError(f"step({level}) must return ({batch_size}, {trie.level_sizes[level]}) log-probs "
                             f"without NaN, got shape {logp.shape}")
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
    def postings(self, rows: np.ndarray, max_reads: float, max_candidates: float) -> np.ndarray:
        """The seed + bound + score search for ``rows``; returns the rows that need the dense pass instead."""
        index: PostingIndex = self.trie.postings
        selective = np.flatnonzero(index.selective)
        n_seeds = min(SEED_ITEMS, max(4 * self.k, int(SEED_SHARE * self.n)))
        gave_up = []
        if len(selective) == 0:             # no group tells items apart: nothing to prune with
            return rows
        # Per digit and request: the best log-prob among codes some item uses (unused codes bound nothing).
        used = [np.where(u, logp, -np.inf) for u, logp in zip(index.digit_used, self.tables)]
        best = np.stack([u.max(axis=1) for u in used], axis=1)                       # (B, D)
        scale = _abs_scale(used)
        for row in rows.tolist():
            if not np.isfinite(best[row]).all():
                continue                    # a digit where every used code is -inf: every item scores -inf
            mask_row = None if self.mask is None else self.mask[row]
            gaps = _Gaps(index, [best[row, d] - u[row] for d, u in enumerate(used)])
            # 1. seed: items listed under most groups' best joint codes
            kth = self._seed(row, index, gaps, selective, n_seeds)
            if kth is None:
                gave_up.append(row)         # fewer than k allowed finite items among the seeds
                continue
            # 2. bound: an item reaches kth only if its gaps (summed over all digits) are at most delta. A
            # group whose codes all lie within delta / S (e.g. a uniform dedup digit) would list every item:
            # leave it out of the bound (its gaps are >= 0) and spread delta over the other groups.
            margin = MARGIN * (1.0 + abs(kth) + scale[row])
            delta = float(best[row].sum()) - kth + margin
            groups = list(selective)
            while groups:
                informative = [g for g in groups if gaps.widest(g) > delta / len(groups)]
                if len(informative) == len(groups):
                    break
                groups = informative
            if not groups:
                gave_up.append(row)         # every code of every group is near its best: no item can be ruled out
                continue
            x = self._thresholds(delta, groups, gaps, index)
            group_ids, codes, credits, n_read = self._to_read(groups, x, gaps, index)
            if n_read > max_reads:
                gave_up.append(row)
                continue
            items, credits = index.lists(group_ids, codes, credits)
            self.read[row] += len(items)
            credit = np.bincount(items, weights=credits, minlength=self.n)
            # sum(x) - credit < (the item's gap sum): unless it exceeds delta the item may reach kth
            # (strict: delta carries the margin, so an item on the boundary still scores below kth)
            candidates = np.flatnonzero(credit > float(x.sum()) - delta)   # a scan: gathering at the reads misses cache
            if mask_row is not None:
                candidates = candidates[mask_row[candidates]]
            if len(candidates) > max_candidates:
                gave_up.append(row)
                continue
            # 3. exact scores of the candidates (they include the seed's top k)
            self.keep(row, candidates, self.item_scores(row, candidates), kth)
        return np.asarray(gave_up, dtype=np.int64)

    @staticmethod
    def _thresholds(delta: float, groups: list[int], gaps: "_Gaps", index: PostingIndex) -> np.ndarray:
        """Per group, the gap x_g up to which its lists are read: the same read budget for every group (a flat
        group, with many items near its best, gets a small x_g; a peaked one a large x_g), the smallest budget
        with ``sum(x) - max(x) >= delta``. An item must then be near its best in two groups to stay a candidate
        (one hit adds at most max(x) of credit). Reads are estimated from counts of joint codes within x (from
        the digits' sorted gaps) times the group's mean list length, on a geometric grid of x; the bound holds
        for any x, so only the work depends on the estimate; one x for all groups (``delta / (S - 1)``) is kept
        when its estimate is lower (bench/scale.py's serve stage measures both on a trained model)."""
        hits = min(HITS, len(groups))
        uniform = delta / (len(groups) - hits + 1)                                      # one x for all groups
        if hits < 2:
            return np.full(len(groups), uniform)
        # groups alike (their estimated reads at the shared x within ALIKE of each other): keep the shared x
        shared = np.array([gaps.count(g, np.array([uniform]))[0] * index.mean_list[g] for g in groups])
        if shared.max() <= ALIKE * max(shared.min(), 1.0):
            return np.full(len(groups), uniform)
        grid = delta * GRID_FRACTIONS                                                   # (X,) candidate x, rising
        grid = np.insert(grid, int(np.searchsorted(grid, uniform)), uniform)
        reads = np.stack([gaps.count(g, grid) * index.mean_list[g] for g in groups])   # (S, X), rising along X
        budgets = np.sort(reads.reshape(-1))                                           # (T,) candidate budgets
        fits = (reads[:, :, None] <= budgets[None, None, :]).sum(axis=1) - 1           # (S, T) last x within budget
        x = np.where(fits >= 0, grid[np.maximum(fits, 0)], 0.0)
        # hits in fewer than HITS groups add at most the HITS - 1 largest x of credit: not enough to stay a candidate
        ok = x.sum(axis=0) - np.sort(x, axis=0)[len(groups) - hits + 1:].sum(axis=0) >= delta
        if not ok.any():
            return np.full(len(groups), uniform)
        t = int(np.argmax(ok))
        x = x[:, t]
        # keep one x for all groups when its estimated reads are fewer (groups alike: the grid's steps cost)
        at = int(np.searchsorted(grid, uniform))
        if reads[:, at].sum() <= np.take_along_axis(reads, np.maximum(fits[:, t:t + 1], 0), axis=1).sum():
            return np.full(len(groups), uniform)
        return np.minimum(x, np.sort(x)[-hits])        # the HITS - 1 largest x need not exceed the next one

    @staticmethod
    def _to_read(groups: list[int], x: np.ndarray, gaps: "_Gaps", index: PostingIndex
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
        """(group, joint code, credit x_g - gap) of every used code within its group's x_g, and the entries
        their lists hold."""
        found = [gaps.within(g, float(xg)) for g, xg in zip(groups, x)]
        group_ids = np.repeat(np.asarray(groups, dtype=np.int64), [len(c) for c, _ in found])
        codes = np.concatenate([c for c, _ in found])
        credits = np.concatenate([xg - gap for (_, gap), xg in zip(found, x)])
        sizes = index.list_size[index.group_offset[group_ids] + codes]
        keep = sizes > 0
        return group_ids[keep], codes[keep], credits[keep], int(sizes.sum())

    def _seed(self, row: int, index: PostingIndex, gaps: "_Gaps", selective: np.ndarray, n_seeds: int) -> float | None:
        """The k-th best score among the items listed under most groups' best joint codes (the best 16, 32, ...
        while fewer than k allowed finite items turn up, e.g. behind a mask), or None (< k found)."""
        mask_row = None if self.mask is None else self.mask[row]
        width = SEED_CODES
        while True:
            best = [gaps.best(g, width) for g in selective]
            group_ids = np.concatenate([np.full(len(c), g, dtype=np.int64) for g, c in zip(selective, best)])
            listed, _ = index.lists(group_ids, np.concatenate(best))
            self.read[row] += len(listed)
            # counts by sorting what was read (numpy's vectorised sort), not by a pass over all N items
            touched, count = _run_lengths(np.sort(listed))
            if mask_row is not None:
                allowed = mask_row[touched]
                touched, count = touched[allowed], count[allowed]
            if len(touched) > n_seeds:
                touched = touched[np.argpartition(-count, n_seeds - 1)[:n_seeds]]
            scores = self.item_scores(row, touched)
            finite = scores[scores > -np.inf]
            if len(finite) >= self.k:
                return float(np.partition(finite, len(finite) - self.k)[len(finite) - self.k])
            if all(len(c) < width for c in best):
                return None                 # every used code of every group was read
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


def _run_lengths(ordered: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(distinct values, how often each occurs) of a sorted array."""
    if len(ordered) == 0:
        return ordered, np.zeros(0, dtype=np.int64)
    starts = np.flatnonzero(np.concatenate(([True], ordered[1:] != ordered[:-1])))
    return ordered[starts], np.diff(np.append(starts, len(ordered)))


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


class _Gaps:
    """One request's gaps ``best_d - logp_d[c]`` per digit (inf for codes no item uses), each sorted once, and
    the joint codes of a digit group enumerated from them by summed gap."""

    def __init__(self, index: PostingIndex, gaps: list[np.ndarray]) -> None:
        self.index = index
        self.order = [np.argsort(g, kind="stable") for g in gaps]
        self.sorted = [g[o] for g, o in zip(gaps, self.order)]
        self.finite = [int(np.searchsorted(g, np.inf)) for g in self.sorted]     # used codes (finite gaps) per digit

    def widest(self, group: int) -> float:
        """At least the largest finite gap of the group's joint codes (the sum of its digits' largest)."""
        return float(sum(self.sorted[d][self.finite[d] - 1] for d in self.index.groups[group]))

    def within(self, group: int, x: float) -> tuple[np.ndarray, np.ndarray]:
        """(joint codes, gaps) of the group's codes whose summed gap is at most ``x`` (codes no item uses
        at one digit have infinite gaps and never appear; pairs no item uses have empty lists)."""
        digits = self.index.groups[group]
        first = digits[0]
        n_a = int(np.searchsorted(self.sorted[first], x, side="right"))
        if len(digits) == 1:
            return self.order[first][:n_a], self.sorted[first][:n_a]
        second = digits[1]
        # for each code of the first digit within x, the prefix of the second digit's sorted gaps that fits
        counts = np.searchsorted(self.sorted[second], x - self.sorted[first][:n_a], side="right")
        ia = np.repeat(np.arange(n_a), counts)
        ib = np.arange(int(counts.sum())) - np.repeat(np.cumsum(counts) - counts, counts)
        gaps = self.sorted[first][ia] + self.sorted[second][ib]
        return self._joint(first, second, ia, ib), gaps

    def count(self, group: int, xs: np.ndarray) -> np.ndarray:
        """(len(xs),) how many of the group's joint codes (used or not) have a summed gap of at most each x."""
        digits = self.index.groups[group]
        first = digits[0]
        if len(digits) == 1:
            return np.searchsorted(self.sorted[first], xs, side="right")
        n_a = int(np.searchsorted(self.sorted[first], xs[-1], side="right"))
        rest = xs[:, None] - self.sorted[first][None, :n_a]           # what the second digit may add, per x
        return np.searchsorted(self.sorted[digits[1]], rest.reshape(-1), side="right").reshape(rest.shape).sum(axis=1)

    def best(self, group: int, width: int) -> np.ndarray:
        """The ``width`` joint codes of the group with the smallest finite gaps (fewer when it has fewer)."""
        digits = self.index.groups[group]
        first = digits[0]
        if len(digits) == 1:
            return self.order[first][:min(width, self.finite[first])]
        second = digits[1]
        # the `width` smallest sums of two sorted lists use only their first `width` entries
        w_a, w_b = min(width, self.finite[first]), min(width, self.finite[second])
        block = (self.sorted[first][:w_a, None] + self.sorted[second][None, :w_b]).reshape(-1)
        top = np.argpartition(block, width - 1)[:width] if block.size > width else np.arange(block.size)
        ia, ib = np.divmod(top, w_b)
        return self._joint(first, second, ia, ib)

    def _joint(self, first: int, second: int, ia: np.ndarray, ib: np.ndarray) -> np.ndarray:
        return self.order[first][ia] * self.index.level_sizes[second] + self.order[second][ib]
