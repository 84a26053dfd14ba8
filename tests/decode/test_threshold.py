"""Exact autoregressive top-k (threshold_search) equals brute force, with masks, ties and a peaked model."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from genrec.decode import RecomputeStep, Trie, beam_search, exclude_mask
from genrec.decode.threshold import threshold_search
from .test_beam import TableModel, brute_force_topk, random_codes, random_mask

SIZES = (5, 7, 11, 3)
N_ITEMS = 37
BATCH = 3


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), k=st.integers(1, 10), width=st.integers(1, 12),
       density=st.sampled_from([None, 0.05, 0.5, 0.95]))
def test_equals_brute_force(seed, k, width, density):
    width = max(width, k)
    codes = random_codes(seed, N_ITEMS, SIZES)
    trie = Trie(codes, SIZES)
    model = TableModel(seed + 1, BATCH, SIZES)
    allowed = np.ones((BATCH, N_ITEMS), bool) if density is None else random_mask(seed + 2, BATCH, N_ITEMS, density)
    result, _ = threshold_search(model.step, trie, BATCH, k, beam_width=width,
                                 item_mask=None if density is None else allowed)
    want = brute_force_topk(model.path_scores(codes), allowed, k)
    for b in range(BATCH):
        got = [int(i) for i in result.items[b] if i >= 0]
        assert got == want[b]
        np.testing.assert_allclose(result.scores[b, :len(got)], model.path_scores(codes)[b, got], rtol=1e-12)


def test_beats_a_narrow_beam_where_the_beam_prunes_the_best_item():
    """Worked case: the best item hides under a first code the beam drops."""
    codes = np.array([[0, 0], [0, 1], [1, 0], [1, 1]])
    trie = Trie(codes, (2, 2))
    # p(code0): 0.6 / 0.4; under 0 the mass is split evenly, under 1 it sits on one child.
    logp = {0: np.log([[0.6, 0.4]]), (0,): np.log([[0.5, 0.5]]), (1,): np.log([[0.99, 0.01]])}

    def fn(level, requests, prefixes):
        return logp[0] if level == 0 else np.concatenate([logp[(int(p[0]),)] for p in prefixes])

    beam = beam_search(RecomputeStep(fn), trie, 1, beam_width=1, k=1)
    exact, _ = threshold_search(lambda: RecomputeStep(fn), trie, 1, 1, beam_width=1)
    assert beam.items[0, 0] in (0, 1)          # the beam kept code 0 (0.6) and found 0.3
    assert exact.items[0, 0] == 2              # 0.4 * 0.99 = 0.396 is the best item
    assert exact.scores[0, 0] == pytest.approx(np.log(0.4 * 0.99))


def test_pass_two_scores_few_rows_for_a_peaked_model():
    """At most exp(-tau) prefixes per level can pass the bound: a confident model keeps few."""
    rng = np.random.default_rng(0)
    sizes = (16, 16, 16)
    codes = random_codes(0, 2000, sizes)
    trie = Trie(codes, sizes)
    model = TableModel(1, 2, sizes)
    for t in model.tables:           # sharpen: one code per prefix takes most of the mass
        t *= 8.0
        t -= np.log(np.exp(t).sum(-1, keepdims=True))
    result, scored = threshold_search(model.step, trie, 2, 10, beam_width=20)
    exhaustive = sum(trie.n_nodes(level) for level in range(trie.depth)) * 2
    assert scored < exhaustive / 5
    assert [list(r) for r in result.items] == brute_force_topk(model.path_scores(codes), np.ones((2, 2000), bool), 10)
    del rng


def test_history_exclusion():
    codes = random_codes(3, N_ITEMS, SIZES)
    trie = Trie(codes, SIZES)
    model = TableModel(4, BATCH, SIZES)
    hist = [[0, 1, 2], [5], []]
    result, _ = threshold_search(model.step, trie, BATCH, 5, beam_width=5, item_mask=exclude_mask(hist, N_ITEMS))
    for b, h in enumerate(hist):
        assert not set(h) & set(result.items[b].tolist())
