"""Trie over semantic IDs: structure by hand, brute-force agreement, errors, persistence, size."""

from __future__ import annotations

import itertools
import time
import tracemalloc

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from genrec.decode import TRIE_FILES, Trie
from genrec.io import ArtifactError

SIZES = (5, 7, 11, 3)   # odd per-level codebook sizes, last one is the dedup level
N_ITEMS = 37


def random_codes(seed: int, n: int, sizes: tuple[int, ...]) -> np.ndarray:
    """n distinct code tuples, in random item order."""
    rng = np.random.default_rng(seed)
    flat = rng.choice(int(np.prod(sizes)), size=n, replace=False)
    return np.stack(np.unravel_index(flat, sizes), axis=1).astype(np.int64)


# Worked by hand. Sorted tuples: (0,1,0)=item1, (0,1,2)=item0, (0,2,2)=item4, (1,0,0)=item2, (2,2,1)=item3.
HAND_CODES = np.array([[0, 1, 2], [0, 1, 0], [1, 0, 0], [2, 2, 1], [0, 2, 2]])


def test_hand_built_trie_structure():
    trie = Trie(HAND_CODES, (3, 3, 3))
    assert trie.depth == 3 and trie.n_items == 5
    assert [trie.n_nodes(d) for d in range(4)] == [1, 3, 4, 5]
    assert trie.order.tolist() == [1, 0, 4, 2, 3]
    # Level-1 nodes are prefixes (0,), (1,), (2,) covering sorted positions [0,3), [3,4), [4,5).
    assert trie.node_start[1].tolist() == [0, 3, 4, 5]
    # Level-2 nodes: (0,1), (0,2), (1,0), (2,2).
    assert trie.node_start[2].tolist() == [0, 2, 3, 4, 5]
    assert trie.allowed(0, [0]).tolist() == [[True, True, True]]
    assert trie.allowed(1, [0, 1, 2]).tolist() == [[False, True, True], [True, False, False], [False, False, True]]
    assert trie.allowed(2, [0, 3]).tolist() == [[True, False, True], [False, True, False]]
    assert trie.child(0, [0, 0, 0], [0, 1, 2]).tolist() == [0, 1, 2]
    assert trie.child(1, [0, 0, 1, 2, 2], [1, 2, 0, 2, 0]).tolist() == [0, 1, 2, 3, -1]
    assert trie.child(2, [0, 0, 0], [0, 1, 2]).tolist() == [0, -1, 1]
    # Codes outside [0, K) and negative nodes are "no such child", not an index error.
    assert trie.child(0, [0, 0, -1], [3, -1, 0]).tolist() == [-1, -1, -1]
    assert trie.leaf_items([0, 1, 2, 3, 4]).tolist() == [1, 0, 4, 2, 3]
    assert trie.lookup(HAND_CODES).tolist() == [0, 1, 2, 3, 4]
    assert trie.lookup(np.array([[0, 0, 0], [2, 2, 2], [1, 0, 0]])).tolist() == [-1, -1, 2]
    lo, hi = trie.node_range(1, np.array([0, 2]))
    assert lo.tolist() == [0, 4] and hi.tolist() == [3, 5]


def test_single_item_trie():
    trie = Trie(np.array([[2, 0]]), (3, 1))
    assert trie.allowed(0, [0]).tolist() == [[False, False, True]]
    assert trie.allowed(1, [0]).tolist() == [[True]]
    assert trie.lookup(np.array([[2, 0], [1, 0]])).tolist() == [0, -1]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_brute_force_prefix_sets(seed):
    codes = random_codes(seed, N_ITEMS, SIZES)
    trie = Trie(codes, SIZES)
    for d in range(len(SIZES)):
        prefixes = sorted({tuple(c[:d]) for c in codes.tolist()})
        assert trie.n_nodes(d) == len(prefixes)
        nodes = np.arange(trie.n_nodes(d))
        allowed = trie.allowed(d, nodes)
        lo, hi = trie.node_range(d, nodes)
        for j, prefix in enumerate(prefixes):   # nodes are numbered in lexicographic prefix order
            under = {i for i, c in enumerate(codes.tolist()) if tuple(c[:d]) == prefix}
            assert set(trie.order[lo[j]:hi[j]].tolist()) == under
            expected_codes = {codes[i, d] for i in under}
            assert set(np.flatnonzero(allowed[j]).tolist()) == expected_codes
            for c in range(SIZES[d]):
                child = trie.child(d, np.array([j]), np.array([c]))[0]
                assert (child >= 0) == (c in expected_codes)
    assert trie.n_nodes(len(SIZES)) == N_ITEMS
    assert trie.lookup(codes).tolist() == list(range(N_ITEMS))
    np.testing.assert_array_equal(trie.item_codes, codes)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**16), queries=st.lists(st.tuples(*(st.integers(0, k - 1) for k in SIZES)), max_size=30))
def test_lookup_finds_exactly_the_catalogue(seed, queries):
    codes = random_codes(seed, N_ITEMS, SIZES)
    trie = Trie(codes, SIZES)
    index = {tuple(c): i for i, c in enumerate(codes.tolist())}
    q = np.array(queries, dtype=np.int64).reshape(-1, len(SIZES))
    assert trie.lookup(q).tolist() == [index.get(tuple(t), -1) for t in q.tolist()]


def test_children_pairs_are_grouped_by_row_in_code_order():
    trie = Trie(random_codes(3, N_ITEMS, SIZES), SIZES)
    nodes = np.array([4, 0, 4, 2])
    rows, child = trie.children(1, nodes)
    assert np.all(np.diff(rows) >= 0)
    for r in range(len(nodes)):
        codes = trie.node_code[2][child[rows == r]]
        assert codes.tolist() == sorted(np.flatnonzero(trie.allowed(1, nodes[r:r + 1])[0]).tolist())


def test_duplicate_codes_name_both_items():
    codes = np.array([[0, 1], [1, 1], [2, 0], [1, 1]])
    with pytest.raises(ValueError, match=r"sid/codes\.npy: items 1 and 3 share the semantic ID \[1, 1\]"):
        Trie(codes, (3, 2), source="sid/codes.npy")


@pytest.mark.parametrize(
    ("codes", "sizes", "message"),
    [
        (np.array([[0, 1], [2, 3]]), (3, 3), r"item 1 has code 3 at level 1, expected \[0, 3\)"),
        (np.array([[0, 1], [-1, 0]]), (3, 3), r"item 1 has code -1 at level 0"),
        (np.array([[0, 1], [1, 0]]), (3, 3, 3), r"codes have 2 levels but level_sizes has 3"),
        (np.array([0, 1, 2]), (3,), r"expected codes of shape \(n_items, n_levels\)"),
        (np.array([[0.0, 1.0]]), (3, 3), r"codes must be integers"),
        (np.zeros((0, 2), dtype=np.int64), (3, 3), r"catalogue is empty"),
        (np.array([[0, 0]]), (3, 0), r"level_sizes must all be >= 1"),
    ],
)
def test_invalid_codes_are_rejected_with_the_reason(codes, sizes, message):
    with pytest.raises(ValueError, match=message):
        Trie(codes, sizes)


def test_save_load_round_trip(tmp_path):
    codes = random_codes(5, N_ITEMS, SIZES)
    trie = Trie(codes, SIZES)
    names = trie.save(tmp_path / "export")
    assert names == sorted(TRIE_FILES.values())
    assert sorted(p.name for p in (tmp_path / "export").iterdir()) == names
    loaded = Trie.load(tmp_path / "export")
    assert loaded.level_sizes == SIZES
    np.testing.assert_array_equal(loaded.item_codes, codes)
    np.testing.assert_array_equal(loaded.order, trie.order)
    for d in range(len(SIZES) + 1):
        np.testing.assert_array_equal(loaded.node_start[d], trie.node_start[d])
        if d < len(SIZES):
            np.testing.assert_array_equal(loaded.child_start[d], trie.child_start[d])
            nodes = np.arange(trie.n_nodes(d))
            np.testing.assert_array_equal(loaded.allowed(d, nodes), trie.allowed(d, nodes))
    assert loaded.lookup(codes).tolist() == list(range(N_ITEMS))


def test_load_rejects_missing_or_inconsistent_tables(tmp_path):
    trie = Trie(random_codes(6, N_ITEMS, SIZES), SIZES)
    folder = tmp_path / "t"
    trie.save(folder)

    starts = np.load(folder / TRIE_FILES["node_start"])
    starts[2] += 1   # shift one level-1 boundary
    np.save(folder / TRIE_FILES["node_start"], starts)
    with pytest.raises(ArtifactError, match="node ranges disagree"):
        Trie.load(folder)

    trie.save(folder)
    order = np.load(folder / TRIE_FILES["order"])
    order[[0, 1]] = order[[1, 0]]   # still a permutation, but no longer lexicographic
    np.save(folder / TRIE_FILES["order"], order)
    with pytest.raises(ArtifactError, match="not in lexicographic order.*re-run `genrec export`"):
        Trie.load(folder)

    (folder / TRIE_FILES["order"]).unlink()
    with pytest.raises(ArtifactError, match="trie_order.npy not found"):
        Trie.load(folder)


def test_large_catalogue_is_small_and_fast():
    """100k items, 4 levels of 256 codes: no dense (nodes x K) tables, so a few MB and well under 2 s."""
    sizes = (256, 256, 256, 256)
    rng = np.random.default_rng(0)
    flat = np.unique(rng.integers(0, 256**4, size=101_000))
    flat = rng.permutation(flat)[:100_000]
    codes = np.stack(np.unravel_index(flat, sizes), axis=1).astype(np.int64)
    tracemalloc.start()
    start = time.perf_counter()
    trie = Trie(codes, sizes)
    elapsed = time.perf_counter() - start
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert elapsed < 2.0, f"building took {elapsed:.2f} s"
    assert trie.nbytes < 50e6, f"trie tables take {trie.nbytes / 1e6:.1f} MB"
    assert peak < 100e6, f"peak memory while building was {peak / 1e6:.1f} MB"
    sample = rng.choice(100_000, size=500, replace=False)
    assert trie.lookup(codes[sample]).tolist() == sample.tolist()
    assert trie.allowed(0, [0]).sum() == len(np.unique(codes[:, 0]))


def test_every_tuple_trie_allows_everything():
    sizes = (3, 2, 5)
    codes = np.array(list(itertools.product(*(range(k) for k in sizes))))
    trie = Trie(codes[::-1].copy(), sizes)
    for d, k in enumerate(sizes):
        nodes = np.arange(trie.n_nodes(d))
        assert trie.allowed(d, nodes).all() and trie.allowed(d, nodes).shape == (len(nodes), k)


def test_loaded_tables_are_memory_mapped_and_node_tables_wait_for_first_use(tmp_path):
    """Trie.load maps the codes, the order and the posting lists (shared by server workers) and builds no node
    table until something walks the trie; exact decoding (every item, and the posting-list search) never does,
    and every decoding path returns what the eagerly built trie returns."""
    from genrec.decode import beam_search, pruned_search, score_catalogue

    sizes = (7, 5, 11, 3)
    codes = random_codes(9, 301, sizes)
    built = Trie(codes, sizes)
    built.save(tmp_path, postings=True)
    loaded = Trie.load(tmp_path)

    def mapped(a):
        return isinstance(a, np.memmap) or isinstance(getattr(a, "base", None), np.memmap)

    assert mapped(loaded.item_codes) and mapped(loaded.order) and mapped(loaded.postings.items)
    assert not loaded.node_tables_built and loaded.nbytes == loaded.item_codes.nbytes + loaded.order.nbytes

    rng = np.random.default_rng(3)
    tables = [np.log(rng.dirichlet(np.ones(k), size=4)) for k in sizes]

    def step(level, parent_rows, last_codes):     # a parallel head: per request, one table per digit
        step.rows = np.asarray(parent_rows) if level == 0 else step.rows[parent_rows]
        return tables[level][step.rows]

    mask = rng.random((4, len(codes))) < 0.8
    want = score_catalogue(step, built, 4, 10, item_mask=mask)
    for got in (score_catalogue(step, loaded, 4, 10, item_mask=mask),
                pruned_search(step, loaded, 4, 10, item_mask=mask, method="postings", min_items=0).result):
        np.testing.assert_array_equal(got.items, want.items)
        np.testing.assert_array_equal(got.scores, want.scores)
    assert not loaded.node_tables_built
    beam_loaded = beam_search(step, loaded, 4, 12, 10, item_mask=mask)
    beam_built = beam_search(step, built, 4, 12, 10, item_mask=mask)
    np.testing.assert_array_equal(beam_loaded.items, beam_built.items)
    assert loaded.node_tables_built
    for d in range(len(sizes) + 1):
        np.testing.assert_array_equal(loaded.node_start[d], built.node_start[d])


def test_node_starts_are_saved_as_int32(tmp_path):
    """The largest trie file (~15 N entries for 17-digit PQ codes) holds positions < N: int32 is enough."""
    Trie(random_codes(2, N_ITEMS, SIZES), SIZES).save(tmp_path)
    assert np.load(tmp_path / TRIE_FILES["node_start"]).dtype == np.int32
