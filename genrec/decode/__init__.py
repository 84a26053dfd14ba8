"""Constrained decoding over semantic IDs: a prefix trie of the catalogue and batched beam search,
plus exact catalogue scoring for prefix-independent (parallel) code heads.

numpy only (no torch), so the ONNX server imports it too. See beam.py for the step protocol.
"""

from genrec.decode.beam import (
    BeamResult,
    RecomputeStep,
    StepFn,
    beam_search,
    candidate_mask,
    exclude_mask,
    greedy_decode,
)
from genrec.decode.exhaustive import score_catalogue, top_items
from genrec.decode.trie import TRIE_FILES, Trie

__all__ = [
    "BeamResult",
    "RecomputeStep",
    "StepFn",
    "TRIE_FILES",
    "Trie",
    "beam_search",
    "candidate_mask",
    "exclude_mask",
    "greedy_decode",
    "score_catalogue",
    "top_items",
]
