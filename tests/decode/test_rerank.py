"""rerank_candidates: a beam's items re-ordered by beam score + an extra score, against a sort done by hand."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from genrec.decode import BeamResult, rerank_candidates


def _beam(items: np.ndarray, scores: np.ndarray) -> BeamResult:
    codes = np.where(items[:, :, None] >= 0, np.stack([items // 3, items % 3], -1), -1)
    return BeamResult(items=items, scores=np.where(items >= 0, scores, -np.inf), codes=codes)


def test_hand_worked():
    # beam order 7, 2, 5 (scores -1, -2, -3); extra +0, +2, +1.5 -> totals -1, 0, -1.5 -> 2, 7, 5
    beam = _beam(np.array([[7, 2, 5, -1]]), np.array([[-1.0, -2.0, -3.0, 0.0]]))
    out = rerank_candidates(beam, np.array([[0.0, 2.0, 1.5, 9.0]]), k=4)
    np.testing.assert_array_equal(out.items, [[2, 7, 5, -1]])
    np.testing.assert_allclose(out.scores, [[0.0, -1.0, -1.5, -np.inf]])
    np.testing.assert_array_equal(out.codes[0, 0], [0, 2])
    np.testing.assert_array_equal(out.codes[0, 3], [-1, -1])
    # k wider than the beam pads like beam search
    wide = rerank_candidates(beam, np.zeros((1, 4)), k=6)
    np.testing.assert_array_equal(wide.items, [[7, 2, 5, -1, -1, -1]])


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 4), st.integers(1, 8), st.integers(1, 8), st.integers(0, 2**31 - 1))
def test_matches_a_sort_by_hand(b, w, k, seed):
    rng = np.random.default_rng(seed)
    items = np.stack([rng.permutation(20)[:w] for _ in range(b)])
    items[rng.random((b, w)) < 0.3] = -1                              # padding slots
    scores = rng.integers(-3, 1, (b, w)).astype(float)                # small integers: many ties
    extra = rng.integers(-2, 3, (b, w)).astype(float)
    out = rerank_candidates(_beam(items, scores), extra, k)
    for row in range(b):
        real = [(scores[row, j] + extra[row, j], int(items[row, j])) for j in range(w) if items[row, j] >= 0]
        want = [i for _, i in sorted(real, key=lambda t: (-t[0], t[1]))][:k]
        got = out.items[row]
        assert list(got[:len(want)]) == want and (got[len(want):] == -1).all()


def test_rejects_a_mismatched_extra():
    beam = _beam(np.array([[1, 2]]), np.zeros((1, 2)))
    with pytest.raises(ValueError, match="extra scores have shape"):
        rerank_candidates(beam, np.zeros((1, 3)), k=2)
