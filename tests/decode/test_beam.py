"""Constrained beam search: hand-worked case, invariants against brute force, greedy, the cache and masks."""

from __future__ import annotations

import itertools
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from genrec.decode import (
    RecomputeStep,
    Trie,
    beam_search,
    candidate_mask,
    exclude_mask,
    greedy_decode,
)
from genrec.decode.beam import _positions_not, _top_sorted

SIZES = (5, 7, 11, 3)   # odd per-level codebook sizes, last one is the dedup level
N_ITEMS = 37
BATCH = 3


def random_codes(seed: int, n: int, sizes: tuple[int, ...]) -> np.ndarray:
    rng = np.random.default_rng(seed)
    flat = rng.choice(int(np.prod(sizes)), size=n, replace=False)
    return np.stack(np.unravel_index(flat, sizes), axis=1).astype(np.int64)


def log_softmax(x: np.ndarray) -> np.ndarray:
    x = x - x.max(axis=-1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=-1, keepdims=True))


class TableModel:
    """Log-probs from a random table per (request, full prefix): the most general prefix-dependent model."""

    def __init__(self, seed: int, batch: int, sizes: tuple[int, ...]) -> None:
        rng = np.random.default_rng(seed)
        self.sizes = sizes
        self.tables = [log_softmax(rng.normal(size=(batch, int(np.prod(sizes[:d])), k))) for d, k in enumerate(sizes)]

    def prefix_index(self, prefixes: np.ndarray) -> np.ndarray:
        idx = np.zeros(len(prefixes), dtype=np.int64)
        for j in range(prefixes.shape[1]):
            idx = idx * self.sizes[j] + prefixes[:, j]
        return idx

    def __call__(self, level: int, requests: np.ndarray, prefixes: np.ndarray) -> np.ndarray:
        return self.tables[level][requests, self.prefix_index(prefixes)]

    def step(self) -> RecomputeStep:
        return RecomputeStep(self)

    def path_scores(self, codes: np.ndarray) -> np.ndarray:
        """(B, n) brute-force sum of log-probs along each code tuple's path."""
        total = np.zeros((self.tables[0].shape[0], len(codes)))
        for d in range(len(self.sizes)):
            total += self.tables[d][:, self.prefix_index(codes[:, :d]), codes[:, d]]
        return total


def brute_force_topk(scores: np.ndarray, allowed: np.ndarray, k: int) -> list[list[int]]:
    out = []
    for s, a in zip(scores, allowed):
        ids = [i for i in np.flatnonzero(a)]
        out.append(sorted(ids, key=lambda i: (-s[i], i))[:k])
    return out


def random_mask(seed: int, batch: int, n: int, density: float) -> np.ndarray:
    return np.random.default_rng(seed).random((batch, n)) < density


# ---------------------------------------------------------------------- worked by hand
# Items: 0=(0,0), 1=(0,2), 2=(1,1). p(level0) = [.6, .4]; p(level1 | 0) = [.5, .2, .3]; p(level1 | 1) = [.1, .7, .2].
# Path probabilities: item0 .30, item1 .18, item2 .28; non-items (0,1) .12, (1,0) .04, (1,2) .08.
HAND_TRIE = Trie(np.array([[0, 0], [0, 2], [1, 1]]), (2, 3))
HAND_P0 = np.log([0.6, 0.4])
HAND_P1 = np.log([[0.5, 0.2, 0.3], [0.1, 0.7, 0.2]])


def hand_step(level, requests, prefixes):
    return np.tile(HAND_P0, (len(requests), 1)) if level == 0 else HAND_P1[prefixes[:, 0]]


def test_hand_worked_example():
    res = beam_search(RecomputeStep(hand_step), HAND_TRIE, 1, 3, 3)
    assert res.items.tolist() == [[0, 2, 1]]
    np.testing.assert_allclose(np.exp(res.scores), [[0.30, 0.28, 0.18]])
    assert res.codes.tolist() == [[[0, 0], [1, 1], [0, 2]]]

    # Excluding item 0: greedy keeps prefix 0 (p .6) and must end at item 1 (.18); a beam of 2 finds item 2 (.28).
    # Scores are not renormalised over the allowed codes: item 1 scores .6 * .3, not .6 * .3 / .5.
    mask = exclude_mask([[0]], 3)
    greedy = beam_search(RecomputeStep(hand_step), HAND_TRIE, 1, 1, 1, item_mask=mask)
    assert greedy.items.tolist() == [[1]]
    np.testing.assert_allclose(np.exp(greedy.scores), [[0.18]])
    wide = beam_search(RecomputeStep(hand_step), HAND_TRIE, 1, 2, 2, item_mask=mask)
    assert wide.items.tolist() == [[2, 1]]
    # Excluding the whole subtree of prefix 0 must close it at level 0, or a single beam would die there.
    closed = beam_search(RecomputeStep(hand_step), HAND_TRIE, 1, 1, 1, item_mask=exclude_mask([[1, 0]], 3))
    assert closed.items.tolist() == [[2]]
    np.testing.assert_allclose(np.exp(closed.scores), [[0.28]])


def test_excluding_a_whole_subtree_closes_it():
    """Items 0=(0,0), 1=(0,1) under prefix 0 (p .6) and 2..4=(1,0..2) under prefix 1 (p .4, then .5/.3/.2)."""
    trie = Trie(np.array([[0, 0], [0, 1], [1, 0], [1, 1], [1, 2]]), (2, 3))

    def step(level, requests, prefixes):
        return np.log(np.tile([0.6, 0.4], (len(requests), 1)) if level == 0
                      else np.tile([0.5, 0.3, 0.2], (len(requests), 1)))

    for history in ([0, 1], [1, 0, -1]):   # the excluded ids are the sparse side of this mask
        res = beam_search(RecomputeStep(step), trie, 1, 1, 1, item_mask=exclude_mask([history], 5))
        assert res.items.tolist() == [[2]]
        np.testing.assert_allclose(np.exp(res.scores), [[0.4 * 0.5]])
    res = beam_search(RecomputeStep(step), trie, 1, 4, 4, item_mask=exclude_mask([[0, 1, 3]], 5))
    assert res.items.tolist() == [[2, 4, -1, -1]]

    # Unconstrained: the 4th best tuple (0,1) is not an item.
    free = beam_search(RecomputeStep(hand_step), HAND_TRIE, 1, 4, 4, constrained=False)
    assert free.items.tolist() == [[0, 2, 1, -1]]
    assert free.codes[0, 3].tolist() == [0, 1]
    np.testing.assert_allclose(np.exp(free.scores), [[0.30, 0.28, 0.18, 0.12]])
    # Beam 2 prunes prefix 1 after level 0 only when it is worse than 2 others: here both survive.
    assert beam_search(RecomputeStep(hand_step), HAND_TRIE, 1, 2, 2, constrained=False).items.tolist() == [[0, 2]]


# ---------------------------------------------------------------------- invariants
@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**16), density=st.sampled_from([None, 0.05, 0.3, 0.9]))
def test_beam_width_one_equals_greedy(seed, density):
    codes = random_codes(seed, N_ITEMS, SIZES)
    trie = Trie(codes, SIZES)
    model = TableModel(seed + 1, BATCH, SIZES)
    mask = None if density is None else random_mask(seed + 2, BATCH, N_ITEMS, density)
    beam = beam_search(model.step(), trie, BATCH, 1, 1, item_mask=mask)
    greedy = greedy_decode(model.step(), trie, BATCH, item_mask=mask)
    np.testing.assert_array_equal(beam.items, greedy.items)
    np.testing.assert_array_equal(beam.codes, greedy.codes)
    np.testing.assert_array_equal(beam.scores, greedy.scores)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**16), beam_width=st.integers(1, 40), uniform=st.booleans())
def test_trie_of_every_tuple_equals_unconstrained(seed, beam_width, uniform):
    sizes = (3, 5, 2)
    every = np.array(list(itertools.product(*(range(k) for k in sizes))))
    items = np.random.default_rng(seed).permutation(len(every))   # item ids unrelated to code order
    codes = np.empty_like(every)
    codes[items] = every
    trie = Trie(codes, sizes)
    model = TableModel(seed, BATCH, sizes)
    if uniform:   # every path ties: exercises the deterministic tie-breaking of both modes
        model.tables = [np.full_like(t, -np.log(t.shape[-1])) for t in model.tables]
    k = max(1, beam_width // 2)
    constrained = beam_search(model.step(), trie, BATCH, beam_width, k)
    free = beam_search(model.step(), trie, BATCH, beam_width, k, constrained=False)
    np.testing.assert_array_equal(constrained.items, free.items)
    np.testing.assert_array_equal(constrained.codes, free.codes)
    np.testing.assert_array_equal(constrained.scores, free.scores)


def test_beam_wider_than_valid_continuations_returns_all_valid_items():
    codes = random_codes(11, N_ITEMS, SIZES)
    trie = Trie(codes, SIZES)
    model = TableModel(12, BATCH, SIZES)
    allowed = [[3, 30, 7, 19, 0, 36], [5], []]
    mask = candidate_mask(allowed, N_ITEMS)
    res = beam_search(model.step(), trie, BATCH, 50, 45, item_mask=mask)
    expected = brute_force_topk(model.path_scores(codes), mask, 45)
    for b in range(BATCH):
        n = len(allowed[b])
        assert res.items[b, :n].tolist() == expected[b]
        assert np.all(res.items[b, n:] == -1) and np.all(res.scores[b, n:] == -np.inf)
        assert np.all(res.codes[b, n:] == -1)
        np.testing.assert_array_equal(res.codes[b, :n], codes[expected[b]])
    assert res.n_found.tolist() == [6, 1, 0]


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**16),
    beam_width=st.integers(1, 25),
    density=st.floats(0.0, 1.0),
    kind=st.sampled_from(["exclude", "candidates", "random"]),
)
def test_outputs_are_allowed_unique_catalogue_items(seed, beam_width, density, kind):
    rng = np.random.default_rng(seed)
    codes = random_codes(seed, N_ITEMS, SIZES)
    trie = Trie(codes, SIZES)
    model = TableModel(seed + 3, BATCH, SIZES)
    if kind == "exclude":
        mask = exclude_mask([rng.choice(N_ITEMS, size=rng.integers(0, N_ITEMS + 1), replace=False)
                             for _ in range(BATCH)], N_ITEMS)
    elif kind == "candidates":
        mask = candidate_mask([rng.choice(N_ITEMS, size=rng.integers(0, 12), replace=False)
                               for _ in range(BATCH)], N_ITEMS)
    else:
        mask = random_mask(seed, BATCH, N_ITEMS, density)
    k = int(rng.integers(1, beam_width + 1))
    res = beam_search(model.step(), trie, BATCH, beam_width, k, item_mask=mask)
    assert res.items.shape == (BATCH, k) and res.codes.shape == (BATCH, k, len(SIZES))
    truth = model.path_scores(codes)
    for b in range(BATCH):
        found = res.items[b][res.items[b] >= 0]
        assert len(set(found.tolist())) == len(found)                       # unique
        assert np.all(mask[b, found])                                        # allowed for this request
        # Every kept beam still leads to an allowed item, so nothing is lost: min(k, #allowed) results.
        assert len(found) == min(k, int(mask[b].sum()))
        np.testing.assert_array_equal(res.codes[b, :len(found)], codes[found])
        np.testing.assert_allclose(res.scores[b, :len(found)], truth[b, found])
        assert np.all(np.diff(res.scores[b, :len(found)]) <= 0)             # best first
        assert np.all(res.items[b, len(found):] == -1)                       # padding only at the end


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2**16), k=st.integers(1, N_ITEMS), density=st.sampled_from([None, 0.2, 0.7]))
def test_beam_covering_the_catalogue_returns_brute_force_topk(seed, k, density):
    """With beam >= N nothing is ever pruned, so the result is exactly the top-k paths by score."""
    codes = random_codes(seed, N_ITEMS, SIZES)
    trie = Trie(codes, SIZES)
    model = TableModel(seed + 5, BATCH, SIZES)
    mask = np.ones((BATCH, N_ITEMS), bool) if density is None else random_mask(seed, BATCH, N_ITEMS, density)
    res = beam_search(model.step(), trie, BATCH, N_ITEMS, k, item_mask=None if density is None else mask)
    truth = model.path_scores(codes)
    expected = brute_force_topk(truth, mask, k)
    for b in range(BATCH):
        n = len(expected[b])
        assert res.items[b, :n].tolist() == expected[b]
        np.testing.assert_allclose(res.scores[b, :n], truth[b, expected[b]])
        assert np.all(res.items[b, n:] == -1)


def test_ties_break_toward_lower_item_ids():
    codes = random_codes(21, N_ITEMS, SIZES)
    trie = Trie(codes, SIZES)
    model = TableModel(0, 1, SIZES)
    model.tables = [np.full_like(t, -np.log(t.shape[-1])) for t in model.tables]   # all paths score the same
    res = beam_search(model.step(), trie, 1, N_ITEMS, 10)
    assert res.items.tolist() == [list(range(10))]


def test_top_sorted_is_exact_under_ties_at_the_cut():
    values = np.array([[1.0, 3.0, 2.0, 2.0, 2.0, 0.0, 2.0], [-np.inf, 5.0, -np.inf, 5.0, 4.0, 5.0, 5.0]])
    assert _top_sorted(values, 3).tolist() == [[1, 2, 3], [1, 3, 5]]
    assert _top_sorted(values, 1).tolist() == [[1], [1]]
    assert _top_sorted(values, 9).tolist() == [[1, 2, 3, 4, 6, 0, 5], [1, 3, 5, 6, 4, 0, 2]]


# ---------------------------------------------------------------------- the cache
class RecurrentToy:
    """h_0 = tanh(ctx_b); logits_d = h_d W_d; h_{d+1} = tanh(h_d A + E_d[code] + ctx_b C).

    The log-probs depend on the whole prefix and on the request (like cross-attention to an
    encoder), computed either from scratch or incrementally from a gathered cache.
    """

    def __init__(self, seed: int, batch: int, sizes: tuple[int, ...], hidden: int = 13) -> None:
        rng = np.random.default_rng(seed)
        self.ctx = rng.normal(size=(batch, hidden))
        self.A = rng.normal(size=(hidden, hidden)) / np.sqrt(hidden)
        self.C = rng.normal(size=(hidden, hidden)) / np.sqrt(hidden)
        self.E = [rng.normal(size=(k, hidden)) for k in sizes]
        self.W = [rng.normal(size=(hidden, k)) * 2.0 for k in sizes]

    def recompute(self, level: int, requests: np.ndarray, prefixes: np.ndarray) -> np.ndarray:
        ctx = self.ctx[requests]
        h = np.tanh(ctx)
        for j in range(level):
            h = np.tanh(h @ self.A + self.E[j][prefixes[:, j]] + ctx @ self.C)
        return log_softmax(h @ self.W[level])

    def cached_step(self, buggy_width: int | None = None):
        state: dict[str, np.ndarray] = {}

        def step(level, parent_rows, last_codes):
            if level == 0:
                state["ctx"] = self.ctx[parent_rows]
                state["h"] = np.tanh(state["ctx"])
            else:
                if buggy_width:   # assumes row r serves request r // beam_width instead of following parent_rows
                    state["ctx"] = self.ctx[np.minimum(np.arange(len(parent_rows)) // buggy_width, len(self.ctx) - 1)]
                else:
                    state["ctx"] = state["ctx"][parent_rows]
                h = state["h"][parent_rows]
                state["h"] = np.tanh(h @ self.A + self.E[level - 1][last_codes] + state["ctx"] @ self.C)
            return log_softmax(state["h"] @ self.W[level])

        return step


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
@pytest.mark.parametrize("beam_width", [1, 4, 20])
def test_kv_cache_equals_recompute(seed, beam_width):
    codes = random_codes(seed, N_ITEMS, SIZES)
    trie = Trie(codes, SIZES)
    toy = RecurrentToy(seed, BATCH, SIZES)
    mask = exclude_mask(np.random.default_rng(seed).integers(-1, N_ITEMS, size=(BATCH, 9)), N_ITEMS)
    k = min(beam_width, 10)
    fresh = beam_search(RecomputeStep(toy.recompute), trie, BATCH, beam_width, k, item_mask=mask)
    cached = beam_search(toy.cached_step(), trie, BATCH, beam_width, k, item_mask=mask)
    np.testing.assert_array_equal(cached.items, fresh.items)
    np.testing.assert_array_equal(cached.codes, fresh.codes)
    np.testing.assert_allclose(cached.scores, fresh.scores, rtol=1e-12)
    # The recompute path is the ground truth: its scores are the brute-force path scores.
    truth = np.stack([
        sum(toy.recompute(d, np.full(N_ITEMS, b), codes[:, :d])[np.arange(N_ITEMS), codes[:, d]]
            for d in range(len(SIZES)))
        for b in range(BATCH)
    ])
    found = fresh.items >= 0
    np.testing.assert_allclose(fresh.scores[found], np.take_along_axis(truth, np.maximum(fresh.items, 0), 1)[found])


def test_a_cache_that_ignores_parent_rows_is_caught():
    """The equality above is a real check: a cache using a fixed row layout decodes differently."""
    codes = random_codes(0, N_ITEMS, SIZES)
    trie = Trie(codes, SIZES)
    toy = RecurrentToy(0, BATCH, SIZES)
    fresh = beam_search(RecomputeStep(toy.recompute), trie, BATCH, 20, 10)
    buggy = beam_search(toy.cached_step(buggy_width=20), trie, BATCH, 20, 10)
    assert not np.allclose(buggy.scores, fresh.scores)


# ---------------------------------------------------------------------- protocol and degenerate cases
def test_step_protocol_rows_and_parents():
    codes = random_codes(8, N_ITEMS, SIZES)
    trie = Trie(codes, SIZES)
    model = TableModel(8, BATCH, SIZES)
    calls = []
    inner = model.step()

    def step(level, parent_rows, last_codes):
        calls.append((level, parent_rows.copy(), None if last_codes is None else last_codes.copy()))
        return inner(level, parent_rows, last_codes)

    beam_width = 6
    beam_search(step, trie, BATCH, beam_width, 3)
    assert [c[0] for c in calls] == list(range(len(SIZES)))
    assert calls[0][1].tolist() == list(range(BATCH)) and calls[0][2] is None
    requests = np.arange(BATCH)
    for (level, parents, last), (_, prev_parents, _) in zip(calls[1:], calls[:-1]):
        assert len(parents) <= BATCH * beam_width and len(parents) == len(last)
        assert parents.min() >= 0 and parents.max() < len(prev_parents)
        assert np.all((last >= 0) & (last < SIZES[level - 1]))
        requests = requests[parents]
        assert np.all(np.diff(requests) >= 0)   # grouped by request
        assert np.bincount(requests, minlength=BATCH).max() <= beam_width
    # Level 1 can only have K_0 = 5 < beam_width distinct prefixes per request (compacted rows).
    assert len(calls[1][1]) <= BATCH * SIZES[0]


def test_requests_without_allowed_items_get_padding_and_stop_early():
    trie = Trie(random_codes(9, N_ITEMS, SIZES), SIZES)
    model = TableModel(9, 2, SIZES)
    calls = []

    def step(level, parent_rows, last_codes):
        calls.append(level)
        return model.step()(level, parent_rows, last_codes)

    res = beam_search(step, trie, 2, 5, 5, item_mask=np.zeros((2, N_ITEMS), bool))
    assert calls == [0]   # no beam survives level 0, so the model is not called again
    assert np.all(res.items == -1) and np.all(res.scores == -np.inf) and np.all(res.codes == -1)
    greedy = greedy_decode(model.step(), trie, 2, item_mask=np.zeros((2, N_ITEMS), bool))
    assert greedy.items.tolist() == [[-1], [-1]]


def test_minus_inf_log_probs_still_count_as_allowed():
    """A model may assign -inf; the path stays a valid (if worst) answer and never loses to a disallowed code."""
    def step(level, parent_rows, last_codes):
        out = np.zeros((len(parent_rows), HAND_TRIE.level_sizes[level]))
        if level == 0:
            out[:, 0] = -np.inf   # code 0 (items 0 and 1) gets zero probability
        return out

    res = beam_search(step, HAND_TRIE, 1, 3, 3)
    assert res.items.tolist() == [[2, 0, 1]]
    assert res.scores[0, 0] == 0.0 and np.all(res.scores[0, 1:] == -np.inf)


def test_mask_helpers():
    assert exclude_mask([[0, 2], [], [4, -1]], 5).tolist() == [
        [False, True, False, True, True], [True] * 5, [True, True, True, True, False]]
    padded = np.array([[3, -1, -1], [0, 1, 1]])
    assert candidate_mask(padded, 4).tolist() == [[False, False, False, True], [True, True, False, False]]
    with pytest.raises(ValueError, match=r"histories\[1\] holds item id 5, but the catalogue has 5 items"):
        exclude_mask([[1], [5]], 5)
    with pytest.raises(ValueError, match=r"candidates\[0\] holds item id 9"):
        candidate_mask(np.array([[9]]), 4)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"beam_width": 2, "k": 3}, r"k must be in \[1, beam_width=2\]"),
        ({"beam_width": 0, "k": 1}, r"beam_width must be >= 1"),
        ({"beam_width": 2, "k": 1, "item_mask": np.ones((2, 3), bool)}, r"item_mask must be a bool array of shape"),
        ({"beam_width": 2, "k": 1, "item_mask": np.ones((1, 3), int)}, r"item_mask must be a bool array"),
        ({"beam_width": 2, "k": 1, "item_mask": np.ones((1, 3), bool), "constrained": False},
         r"item_mask needs constrained decoding"),
    ],
)
def test_bad_arguments_are_rejected(kwargs, message):
    with pytest.raises(ValueError, match=message):
        beam_search(RecomputeStep(hand_step), HAND_TRIE, 1, **kwargs)


def test_bad_step_outputs_are_rejected():
    with pytest.raises(ValueError, match=r"step returned shape \(1, 3\) at level 0; expected .* \(1, 2\)"):
        beam_search(lambda lv, p, c: np.zeros((len(p), 3)), HAND_TRIE, 1, 2, 2)
    with pytest.raises(ValueError, match="NaN log-probs at level 0"):
        beam_search(lambda lv, p, c: np.full((len(p), 2), np.nan), HAND_TRIE, 1, 2, 2)
    with pytest.raises(ValueError, match="expected float log-probs"):
        beam_search(lambda lv, p, c: np.zeros((len(p), 2), dtype=np.int64), HAND_TRIE, 1, 2, 2)


def test_decode_package_does_not_import_torch():
    code = "import sys, genrec.decode; assert 'torch' not in sys.modules, 'genrec.decode imported torch'"
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("n", [0, 1, 7, 8, 9, 64, 1001])
@pytest.mark.parametrize("value", [True, False])
def test_positions_not_equals_flatnonzero(n, value):
    # the word-at-a-time scan behind _ItemFilter equals the plain one, sparse or dense, any length
    rng = np.random.default_rng(n)
    for share in (0.0, 0.01, 0.5, 1.0):
        flat = rng.random(n) < share
        np.testing.assert_array_equal(_positions_not(flat, value), np.flatnonzero(flat != value))
    # bool bytes other than 0 / 1 (a uint8 buffer viewed as bool) still read as True
    raw = rng.integers(0, 3, n).astype(np.uint8).view(np.bool_)
    np.testing.assert_array_equal(_positions_not(raw, value), np.flatnonzero(raw != value))


def test_exclude_mask_in_place_equals_anding_a_new_mask():
    rng = np.random.default_rng(3)
    base = rng.random((5, 40)) < 0.8
    histories = [[1, 2, 39], [], [0, 0, 7, -1]]
    rows = [4, 0, 2]
    want = base.copy()
    want[rows] &= exclude_mask(histories, 40)
    got = exclude_mask(histories, 40, out=base.copy(), rows=rows)
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(exclude_mask(histories, 40, out=np.ones((3, 40), bool)), exclude_mask(histories, 40))
    with pytest.raises(ValueError, match="one row per history"):
        exclude_mask(histories, 40, out=base.copy(), rows=[0])
    with pytest.raises(ValueError, match="holds item id 40, but the catalogue has 40 items"):
        exclude_mask([[40]], 40, out=base.copy(), rows=[0])
