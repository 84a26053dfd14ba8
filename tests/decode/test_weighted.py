"""Per-digit weights (genrec.decode.weighted): every search ranks by sum_d w_d * logp_d, exactly as brute force
does on the weighted sums; the exact searches stay exact under weights; bad weights are refused."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from genrec.decode import (Trie, WeightedStep, beam_search, check_level_weights, check_modality_weights, exclude_mask,
                           pruned_search, score_catalogue, weighted_step)
from genrec.decode.threshold import threshold_search

from .test_beam import TableModel, brute_force_topk, random_codes, random_mask
from .test_pruned import FORCE, TableStep

SIZES = (5, 7, 11, 3)
N_ITEMS = 37
BATCH = 3
weights_st = st.lists(st.sampled_from([0.1, 0.33, 0.5, 1.0, 2.0, 3.0]), min_size=len(SIZES), max_size=len(SIZES))


def parallel_tables(seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    tables = [rng.normal(size=(BATCH, k)) for k in SIZES]
    return [t - np.log(np.exp(t).sum(-1, keepdims=True)) for t in tables]


def weighted_sums(tables, codes, weights) -> np.ndarray:
    """(B, n) brute force: sum over digits of weight x the item's code log-prob."""
    return sum(w * t[:, codes[:, d]] for d, (t, w) in enumerate(zip(tables, weights)))


def weighted_path_scores(model: TableModel, codes: np.ndarray, weights) -> np.ndarray:
    """(B, n) brute force for a prefix-dependent model: sum over levels of weight x log-prob along the path."""
    return sum(w * model.tables[d][:, model.prefix_index(codes[:, :d]), codes[:, d]] for d, w in enumerate(weights))


def test_weights_worked_by_hand():
    """Two items on two digits: logp = [log .9, log .1] at digit 0, [log .2, log .8] at digit 1.
    Unweighted, item (0, 0) wins: .9 * .2 = .18 > .1 * .8 = .08. With digit 0 weighted 0.25,
    item (1, 1) wins: .25 log .1 + log .8 = -0.799 > .25 log .9 + log .2 = -1.636."""
    trie = Trie(np.array([[0, 0], [1, 1]]), (2, 2))
    tables = [np.log([[0.9, 0.1]]), np.log([[0.2, 0.8]])]
    plain = score_catalogue(TableStep(tables), trie, 1, 2)
    tempered = score_catalogue(weighted_step(TableStep(tables), [0.25, 1.0]), trie, 1, 2)
    assert plain.items.tolist() == [[0, 1]] and tempered.items.tolist() == [[1, 0]]
    np.testing.assert_allclose(tempered.scores[0], [0.25 * np.log(0.1) + np.log(0.8),
                                                    0.25 * np.log(0.9) + np.log(0.2)], rtol=1e-12)


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10_000), k=st.integers(1, 12), weights=weights_st,
       density=st.sampled_from([None, 0.3, 0.9]))
def test_exact_and_pruned_parallel_searches_rank_by_the_weighted_sum(seed, k, weights, density):
    codes = random_codes(seed, N_ITEMS, SIZES)
    trie = Trie(codes, SIZES)
    tables = parallel_tables(seed + 1)
    mask = None if density is None else random_mask(seed + 2, BATCH, N_ITEMS, density)
    dense = score_catalogue(weighted_step(TableStep(tables), weights), trie, BATCH, k, item_mask=mask)
    want = brute_force_topk(weighted_sums(tables, codes, weights),
                            np.ones((BATCH, N_ITEMS), bool) if mask is None else mask, k)
    for b in range(BATCH):
        assert [int(i) for i in dense.items[b] if i >= 0] == want[b]
    pruned = pruned_search(weighted_step(TableStep(tables), weights), trie, BATCH, k, item_mask=mask, **FORCE).result
    np.testing.assert_array_equal(pruned.items, dense.items)
    np.testing.assert_array_equal(pruned.scores, dense.scores)


AUTOREGRESSIVE = {
    # threshold_search's bound needs each weighted log-prob <= 0 only, so it stays exact under weights
    "threshold": lambda model, weights, trie, k, mask: threshold_search(
        lambda: weighted_step(model.step(), weights), trie, BATCH, k, beam_width=max(k, 4), item_mask=mask)[0],
    # beam search adds the weighted log-probs level by level; kept as wide as the trie, it is the brute force
    "beam": lambda model, weights, trie, k, mask: beam_search(
        weighted_step(model.step(), weights), trie, BATCH, beam_width=N_ITEMS, k=k, item_mask=mask),
}


@pytest.mark.parametrize("search", sorted(AUTOREGRESSIVE))
@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10_000), k=st.integers(1, 10), weights=weights_st)
def test_autoregressive_searches_rank_by_the_weighted_path_sum(search, seed, k, weights):
    codes = random_codes(seed, N_ITEMS, SIZES)
    trie = Trie(codes, SIZES)
    model = TableModel(seed + 1, BATCH, SIZES)
    mask = exclude_mask([[0, 1], [], [5]], N_ITEMS)
    result = AUTOREGRESSIVE[search](model, weights, trie, k, mask)
    total = weighted_path_scores(model, codes, weights)
    assert [[int(i) for i in row if i >= 0] for row in result.items] == brute_force_topk(total, mask, k)


def test_all_ones_or_none_leave_the_step_itself():
    step = TableStep(parallel_tables(0))
    assert weighted_step(step, None) is step and weighted_step(step, [1, 1.0, 1, 1]) is step
    assert isinstance(weighted_step(step, [1, 0.5, 1, 1]), WeightedStep)


def test_a_weighted_step_forwards_the_wrapped_steps_state():
    """Search "rerank" reads ``step.state`` (the causal state before any code step) through the wrapper."""
    step = TableStep(parallel_tables(0))
    step.state = np.ones((BATCH, 4))
    assert weighted_step(step, [1, 0.5, 1, 1]).state is step.state


@pytest.mark.parametrize("bad, match", [
    ([1, 1, 1], "has 3 entries; the codes have 4 digits"),
    ([1, 0, 1, 1], "finite and > 0"),
    ([1, -0.5, 1, 1], "finite and > 0"),
    ([1, math.nan, 1, 1], "finite and > 0"),
    ([1, math.inf, 1, 1], "finite and > 0"),
])
def test_bad_weights_are_refused(bad, match):
    with pytest.raises(ValueError, match=match):
        check_level_weights(bad, len(SIZES))


@pytest.mark.parametrize("bad", [{"text": 0}, {"text": -1.0}, {"text": None}, {"text": "abc"}, {"text": math.nan},
                                 {"text": True}])
def test_bad_modality_weights_name_the_modality(bad):
    with pytest.raises(ValueError, match=r"modality_weights\['text'\] must be a finite number > 0"):
        check_modality_weights(bad)
    assert check_modality_weights({"text": 1, "collab": 0.5}) == {"text": 1.0, "collab": 0.5}
