"""Exact catalogue scoring for prefix-independent heads: brute force, masks, ties, padding, and the
agreement with beam search when the beam covers the catalogue."""

from __future__ import annotations

import numpy as np
import pytest

from genrec.decode import Trie, beam_search, exclude_mask, score_catalogue, top_items

from .test_beam import log_softmax, random_codes

SIZES = (5, 7, 11, 3)
N_ITEMS = 37
BATCH = 4


class ParallelToy:
    """Per-request, per-level log-probs that ignore the prefix (what a parallel head produces)."""

    def __init__(self, seed: int, batch: int = BATCH, sizes: tuple[int, ...] = SIZES):
        rng = np.random.default_rng(seed)
        self.tables = [log_softmax(rng.normal(size=(batch, k)) * 2) for k in sizes]
        self.calls: list[tuple[int, np.ndarray]] = []

    def __call__(self, level, parent_rows, last_codes):
        self.calls.append((level, np.array(parent_rows)))
        # the step protocol: rows index the previous call's rows; follow them back to requests
        self.requests = np.array(parent_rows) if level == 0 else self.requests[parent_rows]
        return self.tables[level][self.requests]

    def item_scores(self, codes: np.ndarray) -> np.ndarray:
        """(B, N) sum over levels of log p(code) for every item: the brute-force reference."""
        return sum(t[:, codes[:, d]] for d, t in enumerate(self.tables))


def test_hand_worked_example():
    # Two levels of two codes; three items. Request 0: p(level0) = (.5, .5), p(level1) = (.8, .2).
    codes = np.array([[0, 0], [0, 1], [1, 1]])
    trie = Trie(codes, (2, 2))
    tables = [np.log([[0.5, 0.5]]), np.log([[0.8, 0.2]])]
    res = score_catalogue(lambda level, rows, last: tables[level][rows], trie, 1, 3)
    assert res.items.tolist() == [[0, 1, 2]]          # .4, then .1 and .1 tied: lower id first
    np.testing.assert_allclose(np.exp(res.scores), [[0.4, 0.1, 0.1]], rtol=1e-6)
    assert res.codes[0].tolist() == codes.tolist()


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("k", [1, 10, N_ITEMS])
def test_equals_brute_force_top_k(seed, k):
    codes = random_codes(seed, N_ITEMS, SIZES)
    toy = ParallelToy(seed)
    res = score_catalogue(toy, Trie(codes, SIZES), BATCH, k)
    brute = toy.item_scores(codes)
    for b in range(BATCH):
        want = np.lexsort((np.arange(N_ITEMS), -brute[b]))[:k]
        assert res.items[b].tolist() == want.tolist()
        np.testing.assert_allclose(res.scores[b], brute[b, want], rtol=1e-5)
    # one call per level, each for every request (the step protocol's level-0 rows)
    assert [level for level, _ in toy.calls] == list(range(len(SIZES)))
    assert all(rows.tolist() == list(range(BATCH)) for _, rows in toy.calls)


@pytest.mark.parametrize("seed", range(3))
def test_equals_beam_search_whose_beam_covers_the_catalogue(seed):
    codes = random_codes(seed, N_ITEMS, SIZES)
    trie = Trie(codes, SIZES)
    mask = exclude_mask([[0, 5], [], [36], [1, 2, 3]], N_ITEMS)
    exact = score_catalogue(ParallelToy(seed), trie, BATCH, 10, item_mask=mask)
    beam = beam_search(ParallelToy(seed), trie, BATCH, N_ITEMS, 10, item_mask=mask)
    assert exact.items.tolist() == beam.items.tolist()
    np.testing.assert_allclose(exact.scores, beam.scores, rtol=1e-5)
    via_dispatch = top_items(ParallelToy(seed), trie, BATCH, 10, exact=True, beam_width=1, item_mask=mask)
    assert via_dispatch.items.tolist() == exact.items.tolist()


def test_masked_items_never_returned_and_short_rows_are_padded():
    codes = random_codes(3, N_ITEMS, SIZES)
    allowed = np.zeros((BATCH, N_ITEMS), dtype=bool)
    allowed[0, [4, 9]] = True            # fewer allowed items than k
    allowed[1] = True
    allowed[2, 30] = True                # request 3 may receive nothing
    res = score_catalogue(ParallelToy(3), Trie(codes, SIZES), BATCH, 5, item_mask=allowed)
    assert sorted(res.items[0, :2].tolist()) == [4, 9] and res.items[0, 2:].tolist() == [-1] * 3
    assert np.isneginf(res.scores[0, 2:]).all() and (res.codes[0, 2:] == -1).all()
    assert res.items[2].tolist() == [30, -1, -1, -1, -1]
    assert res.items[3].tolist() == [-1] * 5
    assert set(res.items[1].tolist()) <= set(range(N_ITEMS))


def test_scores_in_blocks_match_one_block(monkeypatch):
    import genrec.decode.exhaustive as exhaustive

    codes = random_codes(4, N_ITEMS, SIZES)
    whole = score_catalogue(ParallelToy(4), Trie(codes, SIZES), BATCH, 7)
    monkeypatch.setattr(exhaustive, "SCORE_BLOCK", N_ITEMS)   # one request per block
    blocked = score_catalogue(ParallelToy(4), Trie(codes, SIZES), BATCH, 7)
    assert whole.items.tolist() == blocked.items.tolist()


def test_bad_step_output_is_rejected():
    trie = Trie(random_codes(0, N_ITEMS, SIZES), SIZES)
    with pytest.raises(ValueError, match="log-probs"):
        score_catalogue(lambda level, rows, last: np.zeros((BATCH, 2)), trie, BATCH, 3)
    with pytest.raises(ValueError, match="NaN"):
        score_catalogue(lambda level, rows, last: np.full((BATCH, SIZES[level]), np.nan), trie, BATCH, 3)
    with pytest.raises(ValueError, match="item_mask"):
        score_catalogue(ParallelToy(0), trie, BATCH, 3, item_mask=np.ones((BATCH, 3), dtype=bool))
