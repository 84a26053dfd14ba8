"""Exact pruned top-k (genrec.decode.pruned) against brute force: the same items, order, float64 scores,
masks and padding as score_catalogue, on random catalogues (hypothesis) and a fixed clustered one;
the posting-list index, its files, and the fallbacks."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import genrec.decode.exhaustive as exhaustive
import genrec.decode.postings as postings
import genrec.decode.pruned as pruned
from genrec.decode.postings import list_groups
from genrec.decode import POSTING_FILES, PostingIndex, Trie, exclude_mask, pruned_search, score_catalogue, top_items
from genrec.io import ArtifactError

from .test_beam import log_softmax, random_codes

SIZES = (5, 7, 11, 3)
N_ITEMS = 37
# every request through the search itself: no dense fallback, no "few allowed items" shortcut
FORCE = dict(min_items=0, direct_fraction=0.0, max_reads=math.inf, max_candidates=math.inf)
METHODS = ("postings", "trie")
SEARCHED = 1_000      # min_items for the 20k-item catalogue below: searched, not scored densely (MIN_ITEMS is 64k)


class TableStep:
    """A prefix-independent head: fixed (B, K_d) tables, following the step protocol's rows back to requests."""

    def __init__(self, tables: list[np.ndarray]):
        self.tables = tables
        self.calls: list[tuple[int, list[int]]] = []

    def __call__(self, level, parent_rows, last_codes):
        self.calls.append((level, np.asarray(parent_rows).tolist()))
        self.requests = np.asarray(parent_rows) if level == 0 else self.requests[parent_rows]
        return self.tables[level][self.requests]


def assert_same(got, want) -> None:
    np.testing.assert_array_equal(got.items, want.items)
    np.testing.assert_array_equal(got.scores, want.scores)    # exact float64 equality, -inf included
    np.testing.assert_array_equal(got.codes, want.codes)


def reference(tables, trie, k, mask):
    return score_catalogue(TableStep(tables), trie, len(tables[0]), k, item_mask=mask)


# ---------------------------------------------------------------------- random catalogues
@st.composite
def problems(draw):
    depth = draw(st.integers(1, 4))
    sizes = tuple(draw(st.sampled_from([1, 2, 3, 5, 7, 11])) for _ in range(depth))
    total = math.prod(sizes)
    n = draw(st.integers(1, min(total, 60)))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    # unique tuples; small codebooks make many items share a code at each digit
    codes = np.stack(np.unravel_index(rng.choice(total, n, replace=False), sizes), axis=1)
    batch = draw(st.integers(1, 4))
    kind = draw(st.sampled_from(["ties", "smooth", "peaked"]))
    if kind == "ties":   # few distinct values: tied item scores, and -inf codes
        values = np.array([-np.inf, -7.0, -2.5, -1.0, -1.0, -0.5, 0.0])
        tables = [rng.choice(values, size=(batch, k)) for k in sizes]
    else:
        tables = [log_softmax(rng.normal(size=(batch, k)) * (1.0 if kind == "smooth" else 12.0)) for k in sizes]
        for t in tables:
            t[rng.random(t.shape) < 0.1] = -np.inf
    masking = draw(st.sampled_from(["none", "history", "dense", "almost nothing"]))
    if masking == "none":
        mask = None
    elif masking == "history":
        mask = exclude_mask([rng.choice(n, rng.integers(0, n + 1), replace=True) for _ in range(batch)], n)
    elif masking == "dense":
        mask = rng.random((batch, n)) < 0.6
    else:
        mask = np.zeros((batch, n), dtype=bool)
        for row in range(batch):
            mask[row, rng.choice(n, rng.integers(0, min(n, 2) + 1), replace=False)] = True
    k = draw(st.one_of(st.integers(1, min(5, n)), st.integers(1, n + 3)))   # small k: the search runs
    return codes, sizes, tables, mask, k


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(problems(), st.sampled_from(METHODS), st.booleans())
def test_equals_score_catalogue_on_random_catalogues(problem, method, forced):
    codes, sizes, tables, mask, k = problem
    trie = Trie(codes, sizes)
    got = pruned_search(TableStep(tables), trie, len(tables[0]), k, item_mask=mask, method=method,
                        **(FORCE if forced else {}))
    assert_same(got.result, reference(tables, trie, k, mask))


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("method", METHODS)
def test_odd_sized_catalogue_takes_the_pruned_path_and_agrees(seed, method):
    codes = random_codes(seed, N_ITEMS, SIZES)
    trie = Trie(codes, SIZES)
    rng = np.random.default_rng(seed)
    tables = [log_softmax(rng.normal(size=(4, k)) * 3) for k in SIZES]
    mask = exclude_mask([[0, 5], [], [36], [1, 2, 3]], N_ITEMS)
    got = pruned_search(TableStep(tables), trie, 4, 5, item_mask=mask, method=method, **FORCE)
    assert (got.path == "pruned").all()
    assert_same(got.result, reference(tables, trie, 5, mask))


def test_ties_go_to_the_lower_item_id():
    # every item scores the same: the top-k is items 0..k-1, whatever the search visits first
    codes = random_codes(1, N_ITEMS, SIZES)
    tables = [np.full((2, k), -1.0) for k in SIZES]
    for method in METHODS:
        got = pruned_search(TableStep(tables), Trie(codes, SIZES), 2, 6, method=method, **FORCE)
        assert got.result.items.tolist() == [list(range(6))] * 2


# ---------------------------------------------------------------------- the dense pass (float32, then exact)
@pytest.fixture
def float32_dense_pass(monkeypatch):
    """Every dense row through the float32 pair-table pass (whatever the catalogue size, digits paired, no
    fallback to the float64 pass on ties); records the rows the float64 pass still took."""
    monkeypatch.setattr(postings, "PAIR_TABLE_SHARE", 0)
    monkeypatch.setattr(pruned, "MAX_DENSE_CANDIDATES", 1.0)
    monkeypatch.setattr(pruned, "FLOAT32_MIN_ITEMS", 0)
    exact_rows = []
    original = pruned._Search._score_full_exact

    def spy(self, rows):
        exact_rows.extend(np.asarray(rows).tolist())
        return original(self, rows)

    monkeypatch.setattr(pruned._Search, "_score_full_exact", spy)
    return exact_rows


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.function_scoped_fixture])
@given(problems())
def test_float32_dense_pass_equals_score_catalogue(float32_dense_pass, problem):
    codes, sizes, tables, mask, k = problem
    trie = Trie(codes, sizes)
    got = pruned_search(TableStep(tables), trie, len(tables[0]), k, item_mask=mask, min_items=10**9)
    assert_same(got.result, reference(tables, trie, k, mask))
    assert float32_dense_pass == [] and (got.items_scored == trie.n_items).all()


@pytest.mark.parametrize("spread", [1e-12, 1e-6, 1e-5])
def test_float32_dense_pass_is_exact_below_float32_resolution(float32_dense_pass, large, spread):
    # scores near -60 that differ by less than float32 can tell apart: the rescored candidates decide
    trie, _ = large
    rng = np.random.default_rng(7)
    tables = [-60.0 / trie.depth + spread * rng.normal(size=(3, k)) for k in trie.level_sizes]
    tables[0][1, ::3] = -np.inf
    mask = exclude_mask([[0, 1], [], list(range(500))], trie.n_items)
    got = pruned_search(TableStep(tables), trie, 3, 25, item_mask=mask, min_items=10**9)
    assert_same(got.result, reference(tables, trie, 25, mask))
    assert float32_dense_pass == []
    assert any(len(g) == 2 for g, _ in trie.postings.dense_groups)


def test_dense_pass_keeps_float64_for_values_float32_cannot_hold(float32_dense_pass):
    codes = random_codes(4, N_ITEMS, SIZES)
    rng = np.random.default_rng(4)
    tables = [log_softmax(rng.normal(size=(3, k))) for k in SIZES]
    tables[1][0] *= 1e35                     # request 0: finite log-probs beyond float32's range
    tables[2][2, 3] = np.inf                 # request 2: +inf (inf - inf sums only the float64 pass reproduces)
    trie = Trie(codes, SIZES)
    got = pruned_search(TableStep(tables), trie, 3, 5)
    assert got.path.tolist() == ["full"] * 3
    assert_same(got.result, reference(tables, trie, 5, None))
    assert float32_dense_pass == [0, 2]


def test_dense_groups_pair_neighbouring_digits():
    sizes = (16, 16, 7, 300, 2)
    codes = random_codes(5, 400, sizes)
    # at 400 items no pair table is small enough (16 x 16 = 256 entries > N / 4 = 100)
    assert [g for g, _ in PostingIndex.build(codes, sizes).dense_groups] == [(0,), (1,), (2,), (3,), (4,)]
    big = np.concatenate([codes] * 6)        # the index does not need unique tuples
    index = PostingIndex.build(big, sizes)
    # at 2,400 items (N / 4 = 600): 16 x 16 and 300 x 2 pair up, 7 x 300 = 2,100 entries would not
    assert [g for g, _ in index.dense_groups] == [(0, 1), (2,), (3, 4)]
    joint = dict(index.dense_groups)
    assert joint[(0, 1)].dtype == np.uint16
    np.testing.assert_array_equal(joint[(0, 1)], big[:, 0] * 16 + big[:, 1])
    np.testing.assert_array_equal(joint[(3, 4)], big[:, 3] * 2 + big[:, 4])
    np.testing.assert_array_equal(joint[(2,)], big[:, 2])


def test_dense_groups_pair_a_one_code_digit_with_a_65536_code_digit(monkeypatch):
    # the largest pair table (1 x 2**16 entries): its joint codes still fit uint16
    monkeypatch.setattr(postings, "PAIR_TABLE_SHARE", 0)
    codes = np.stack([np.zeros(5, dtype=np.int64), np.array([0, 1, 2, 65534, 65535])], axis=1)
    groups = PostingIndex.build(codes, (1, 1 << 16)).dense_groups
    assert [g for g, _ in groups] == [(0, 1)]
    assert groups[0][1].dtype == np.uint16 and groups[0][1].tolist() == [0, 1, 2, 65534, 65535]


# ---------------------------------------------------------------------- a larger clustered catalogue
def clustered(n: int = 20_011, digits: int = 6, k: int = 16, seed: int = 0):
    """PQ-like codes: items of a cluster share most digits; a dedup digit keeps tuples unique."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, k, (211, digits))
    cluster = rng.integers(0, len(base), n)
    codes = base[cluster]
    flip = rng.random(codes.shape) < 0.35
    codes[flip] = rng.integers(0, k, int(flip.sum()))
    _, group = np.unique(codes, axis=0, return_inverse=True)
    group = group.reshape(-1)
    order = np.lexsort((np.arange(n), group))
    first = np.r_[0, np.flatnonzero(np.diff(group[order])) + 1]
    dedup = np.empty(n, dtype=np.int64)
    dedup[order] = np.arange(n) - np.repeat(first, np.diff(np.r_[first, n]))
    codes = np.concatenate([codes, dedup[:, None]], axis=1)
    return codes, (k,) * digits + (int(dedup.max()) + 1,), base


def cluster_head(base: np.ndarray, sizes, batch: int, seed: int) -> list[np.ndarray]:
    """Per-request tables peaked on one cluster's codes (a confident model), the dedup digit uniform."""
    rng = np.random.default_rng(seed)
    target = base[rng.integers(0, len(base), batch)]
    tables = []
    for d, k in enumerate(sizes):
        logits = rng.normal(size=(batch, k))
        if d < base.shape[1]:
            logits[np.arange(batch), target[:, d]] += 4.0
        tables.append(log_softmax(logits))
    return tables


@pytest.fixture(scope="module")
def large():
    codes, sizes, base = clustered()
    return Trie(codes, sizes), base


@pytest.mark.parametrize("k", [10, 100])
def test_large_clustered_catalogue_equals_score_catalogue_and_scores_few_items(large, k):
    trie, base = large
    n = trie.n_items
    batch = 6
    tables = cluster_head(base, trie.level_sizes, batch, seed=k)
    rng = np.random.default_rng(k)
    mask = exclude_mask([rng.choice(n, 20, replace=False) for _ in range(batch)], n)
    mask[4] &= np.isin(np.arange(n), rng.choice(n, 250, replace=False))   # a candidate list: scored directly
    mask[5, : n - 2_000] = False                                            # most items excluded
    got = pruned_search(TableStep(tables), trie, batch, k, item_mask=mask, min_items=SEARCHED)
    assert_same(got.result, reference(tables, trie, k, mask))
    assert got.path[4] == "allowed" and got.items_scored[4] == mask[4].sum()
    if k == 10:
        # the work claim (not a timing): a confident head leaves a small share of the items to score
        assert (got.path[:4] == "pruned").all()
        assert (got.items_scored[:4] < n / 5).all(), got.items_scored


def test_top_items_routes_exact_decoding_through_the_pruned_search(large, monkeypatch):
    trie, base = large
    tables = cluster_head(base, trie.level_sizes, 3, seed=1)
    calls = []

    def spy(*args, **kwargs):
        calls.append(kwargs)
        return pruned_search(*args, **kwargs)

    monkeypatch.setattr(exhaustive, "pruned_search", spy)
    got = top_items(TableStep(tables), trie, 3, 10, exact=True, beam_width=1)
    assert len(calls) == 1
    assert_same(got, reference(tables, trie, 10, None))


def test_step_is_called_as_score_catalogue_calls_it(large):
    trie, base = large
    mine, theirs = (TableStep(cluster_head(base, trie.level_sizes, 3, 2)),
                    TableStep(cluster_head(base, trie.level_sizes, 3, 2)))
    pruned_search(mine, trie, 3, 10, min_items=SEARCHED)
    score_catalogue(theirs, trie, 3, 10)
    assert mine.calls == theirs.calls == [(level, [0, 1, 2]) for level in range(trie.depth)]


# ---------------------------------------------------------------------- fallbacks and work counts
def test_fallbacks_are_reported_with_their_work(large):
    trie, base = large
    n = trie.n_items
    tables = cluster_head(base, trie.level_sizes, 3, seed=3)
    mask = np.ones((3, n), dtype=bool)
    mask[1] = False
    mask[1, [7, 70, 700]] = True                  # three allowed items: scored directly, no search
    mask[2] = False
    mask[2, ::2] = True                           # half the items: the search runs
    got = pruned_search(TableStep(tables), trie, 3, 10, item_mask=mask, min_items=SEARCHED)
    assert got.path.tolist() == ["pruned", "allowed", "pruned"]
    assert got.items_scored[1] == 3 and got.result.items[1, 3:].tolist() == [-1] * 7
    assert_same(got.result, reference(tables, trie, 10, mask))
    # a small catalogue is scored densely: every item, once
    small = Trie(random_codes(0, N_ITEMS, SIZES), SIZES)
    small_tables = [log_softmax(np.random.default_rng(0).normal(size=(2, k))) for k in SIZES]
    dense = pruned_search(TableStep(small_tables), small, 2, 4)
    assert dense.path.tolist() == ["full", "full"] and dense.items_scored.tolist() == [N_ITEMS] * 2
    assert_same(dense.result, reference(small_tables, small, 4, None))
    # flat tables: reading the lists would cost more than a dense pass, so the row falls back to it
    flat = [np.zeros((1, k)) for k in trie.level_sizes]
    flat[0][0, 0] = -1e-3
    fell_back = pruned_search(TableStep(flat), trie, 1, 10, min_items=SEARCHED)
    assert fell_back.path.tolist() == ["full"] and fell_back.items_scored.tolist() == [n]
    assert_same(fell_back.result, reference(flat, trie, 10, None))


def test_fewer_finite_items_than_k_are_padded():
    codes = random_codes(2, N_ITEMS, SIZES)
    rng = np.random.default_rng(2)
    tables = [log_softmax(rng.normal(size=(3, k))) for k in SIZES]
    tables[0][0, :] = -np.inf                    # request 0: every item scores -inf
    tables[1][1, 1:] = -np.inf                   # request 1: only items with code 0 at digit 1 are finite
    trie = Trie(codes, SIZES)
    for method in METHODS:
        got = pruned_search(TableStep(tables), trie, 3, 30, method=method, **FORCE)
        assert_same(got.result, reference(tables, trie, 30, None))
        assert got.result.items[0].tolist() == [-1] * 30


def test_positive_infinite_log_probs_use_the_dense_pass():
    codes = random_codes(3, N_ITEMS, SIZES)
    tables = [log_softmax(np.random.default_rng(3).normal(size=(2, k))) for k in SIZES]
    tables[2][0, 4] = np.inf
    trie = Trie(codes, SIZES)
    got = pruned_search(TableStep(tables), trie, 2, 5, **FORCE)
    assert got.path.tolist() == ["full", "full"]
    assert_same(got.result, reference(tables, trie, 5, None))


def test_bad_arguments_are_rejected():
    trie = Trie(random_codes(0, N_ITEMS, SIZES), SIZES)
    tables = [np.zeros((2, k)) for k in SIZES]
    with pytest.raises(ValueError, match="method must be one of"):
        pruned_search(TableStep(tables), trie, 2, 3, method="fagin")
    with pytest.raises(ValueError, match="item_mask"):
        pruned_search(TableStep(tables), trie, 2, 3, item_mask=np.ones((2, 3), dtype=bool))
    with pytest.raises(ValueError, match="without NaN"):
        pruned_search(TableStep([np.full((2, k), np.nan) for k in SIZES]), trie, 2, 3)


# ---------------------------------------------------------------------- the index and its files
def test_digit_groups_pair_neighbours_while_their_joint_codebook_is_small():
    assert list_groups((5, 7, 11, 3), 37) == ((0, 1), (2, 3))
    assert list_groups((256,) * 16 + (2,), 10**6) == tuple((d, d + 1) for d in range(0, 16, 2)) + ((16,),)
    assert list_groups((300, 300, 2), 10**6) == ((0,), (1, 2))   # 300 x 300 joint codes > MAX_JOINT
    assert list_groups((1 << 16, 1), 10**6) == ((0, 1),) and list_groups((7,), 5) == ((0,),)
    # fewer items than joint codes: one list per digit (pair lists would be mostly empty)
    assert list_groups((256,) * 4, 65_535) == ((0,), (1,), (2,), (3,))
    assert list_groups((256,) * 4, 65_536) == ((0, 1), (2, 3))


def test_posting_lists_match_brute_force():
    codes = random_codes(4, N_ITEMS, SIZES)
    index = PostingIndex.build(codes, SIZES)
    assert index.groups == ((0, 1), (2, 3))
    assert index.items.dtype == np.int32 and index.items.shape == (2, N_ITEMS)
    for g, (a, b) in enumerate(index.groups):
        joint = codes[:, a] * SIZES[b] + codes[:, b]
        for c in range(SIZES[a] * SIZES[b]):
            listed = index.items[g, index.starts[g][c]:index.starts[g][c + 1]]
            assert listed.tolist() == np.flatnonzero(joint == c).tolist()   # ascending ids
    for d, k in enumerate(SIZES):
        np.testing.assert_array_equal(index.digit_used[d], np.bincount(codes[:, d], minlength=k) > 0)
    np.testing.assert_array_equal(index.codes_t, codes.T)
    assert index.codes_t.dtype == np.uint8
    # one gather for any mix of (group, joint code) lists, each list's weight repeated per listed item
    groups, joint = np.array([1, 0, 1]), np.array([codes[3, 2] * 3 + codes[3, 3], codes[0, 0] * 7 + codes[0, 1], 0])
    listed, weights = index.lists(groups, joint, np.array([0.5, 1.5, 2.5]))
    want = [index.items[g, index.starts[g][c]:index.starts[g][c + 1]] for g, c in zip(groups, joint)]
    assert listed.tolist() == np.concatenate(want).tolist()
    assert weights.tolist() == np.repeat([0.5, 1.5, 2.5], [len(w) for w in want]).tolist()
    # a group where one code holds more than half the items is never read
    dedup = np.zeros((10, 3), dtype=np.int64)
    dedup[:, 0] = np.arange(10)
    dedup[9, 2] = 1
    assert list_groups((10, 1 << 13, 300), 10) == ((0,), (1,), (2,))    # no joint codebook small enough
    spread = PostingIndex.build(dedup, (10, 1 << 13, 300))
    assert spread.selective.tolist() == [True, False, False]       # digit 1: one code; digit 2: 9 of 10 items


def test_postings_are_saved_beside_the_trie_and_memory_mapped_back(tmp_path, large):
    trie, base = large
    names = trie.save(tmp_path / "export", postings=True)
    assert set(POSTING_FILES.values()) <= set(names)
    loaded = Trie.load(tmp_path / "export")
    assert isinstance(loaded._postings.items, np.memmap)      # loaded with the trie, not rebuilt
    np.testing.assert_array_equal(loaded.postings.items, trie.postings.items)
    tables = cluster_head(base, trie.level_sizes, 2, seed=5)
    assert_same(pruned_search(TableStep(tables), loaded, 2, 10, min_items=SEARCHED).result,
                reference(tables, trie, 10, None))
    # an export written before the index (trie files only) still loads; the index is built on first use
    trie.save(tmp_path / "old")
    old = Trie.load(tmp_path / "old")
    assert old._postings is None
    assert_same(pruned_search(TableStep(tables), old, 2, 10, min_items=SEARCHED).result,
                reference(tables, trie, 10, None))


def test_load_rejects_posting_lists_of_another_catalogue(tmp_path):
    codes = random_codes(6, N_ITEMS, SIZES)
    trie = Trie(codes, SIZES)
    folder = tmp_path / "t"
    trie.save(folder, postings=True)
    items = np.load(folder / POSTING_FILES["items"])
    g = 1
    a, b = items[g, 0], items[g, -1]             # two items with different joint codes at digits 2-3
    items[g, 0], items[g, -1] = b, a
    np.save(folder / POSTING_FILES["items"], items)
    with pytest.raises(ArtifactError, match="the posting lists of digits 2-3 disagree"):
        Trie.load(folder)
    np.save(folder / POSTING_FILES["items"], items[:, :-1])
    with pytest.raises(ArtifactError, match="expected int32/int64 item ids of shape"):
        Trie.load(folder)
    (folder / POSTING_FILES["starts"]).unlink()
    with pytest.raises(ArtifactError, match="trie_postings_starts.npy not found"):
        PostingIndex.load(folder, codes, SIZES)
    assert Trie.load(folder)._postings is None    # one file of the pair missing: the index is not loaded
