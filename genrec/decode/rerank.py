"""Re-scoring a beam's items with a second, per-item score.

The autoregressive head's beam proposes real items through the trie; a second score the model
also trained (the item-level logit of its state) is added to each item's summed log-prob, and the
best k of the sum are kept. numpy only, so evaluation and the ONNX server share it.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from genrec.decode.beam import BeamResult, StepFn, beam_search
from genrec.decode.trie import Trie


def rerank_search(step: StepFn, trie: Trie, batch_size: int, k: int, *, beam_width: int, state: np.ndarray,
                  item_table: np.ndarray | Callable[[np.ndarray], np.ndarray],
                  item_mask: np.ndarray | None = None) -> BeamResult:
    """Trie beam search of ``beam_width`` keeps that many real, allowed items per request; each is re-scored
    by its summed code log-prob plus ``state[b] . item_table[item]`` and the best ``k`` are returned.

    ``state`` (B, d) is the request's state before any code step (what an item-level loss scores; read it
    before ``step`` runs, which may replace it) and ``item_table`` (N, d) the item vectors it is scored against
    (a memory-map is fine: only the beam's rows are read), or a function ``ids (M,) -> (M, d)`` that computes
    just those rows. Evaluation and the ONNX server both call this.
    """
    if beam_width < k:
        raise ValueError(f"beam_width ({beam_width}) must be >= k ({k}): the beam is the candidate set")
    beam = beam_search(step, trie, batch_size=batch_size, beam_width=beam_width, k=beam_width, item_mask=item_mask)
    ids = np.where(beam.items >= 0, beam.items, 0).ravel()
    rows = np.asarray(item_table(ids) if callable(item_table) else item_table[ids], dtype=np.float64)
    if rows.shape != (len(ids), np.shape(state)[1]):
        raise ValueError(f"item_table rows have shape {rows.shape[1:]}, the state {np.shape(state)[1:]}")
    extra = np.einsum("bd,bwd->bw", np.asarray(state, dtype=np.float64), rows.reshape(*beam.items.shape, -1))
    return rerank_candidates(beam, extra, k)


def rerank_candidates(beam: BeamResult, extra: np.ndarray, k: int) -> BeamResult:
    """The top ``k`` of ``beam``'s items by ``beam.scores + extra`` (both (B, W)), best first.

    Padding slots (item -1) stay last; ties go to the lower item id, as in beam search. The returned
    scores are the sums, so a caller can merge or threshold them like beam scores.
    """
    extra = np.asarray(extra, dtype=np.float64)
    if extra.shape != beam.items.shape:
        raise ValueError(f"extra scores have shape {extra.shape}; the beam holds {beam.items.shape}")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    found = beam.items >= 0
    total = np.where(found, beam.scores + extra, -np.inf)
    # Sort by (found, total, -item): lexsort's last key is primary, ascending, so negate what should lead.
    order = np.lexsort((beam.items, -total, ~found), axis=1)[:, :k]
    items = np.take_along_axis(beam.items, order, 1)
    scores = np.take_along_axis(total, order, 1)
    codes = np.take_along_axis(beam.codes, order[:, :, None], 1)
    if items.shape[1] < k:   # a beam narrower than k: pad like beam search does
        pad = k - items.shape[1]
        items = np.pad(items, ((0, 0), (0, pad)), constant_values=-1)
        scores = np.pad(scores, ((0, 0), (0, pad)), constant_values=-np.inf)
        codes = np.pad(codes, ((0, 0), (0, pad), (0, 0)), constant_values=-1)
    return BeamResult(items=items, scores=scores, codes=codes)
