"""Constrained decoding over semantic IDs: a prefix trie of the catalogue and batched beam search,
plus exact top-k for prefix-independent (parallel) code heads: every item scored, or pruned over
posting lists of digit pairs with the same result.

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
from genrec.decode.postings import POSTING_FILES, PostingIndex
from genrec.decode.pruned import PrunedResult, pruned_search
from genrec.decode.rerank import rerank_candidates, rerank_search
from genrec.decode.trie import TRIE_FILES, Trie
from genrec.decode.weighted import WeightedStep, check_level_weights, check_modality_weights, weighted_step

__all__ = [
    "BeamResult",
    "POSTING_FILES",
    "PostingIndex",
    "PrunedResult",
    "RecomputeStep",
    "StepFn",
    "TRIE_FILES",
    "Trie",
    "WeightedStep",
    "beam_search",
    "candidate_mask",
    "check_level_weights",
    "check_modality_weights",
    "exclude_mask",
    "greedy_decode",
    "pruned_search",
    "rerank_candidates",
    "rerank_search",
    "score_catalogue",
    "top_items",
    "weighted_step",
]
