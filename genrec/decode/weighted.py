"""Per-digit weights on a step's log-probs: an item then scores ``sum_d w_d * logp_d[code_d]``.

A parallel head trains each digit as its own softmax, and decoding sums them as if they were independent.
They are not: the 8 digits of one modality quantize one vector, so plain summing counts that modality's
evidence several times over. A weight below 1 on a modality's digits (``model.modality_weights``, resolved to
one weight per digit by ``SemanticIDs.level_weights``) tempers it; bench/weights.py picks it on validation.

Weights must be > 0 and finite: each weighted log-prob then stays <= 0, which is all the exact searches'
bounds rely on (genrec.decode.threshold, genrec.decode.pruned), so they stay exact. Their cost is another
matter: threshold search's "at most exp(-tau) prefixes per level" counts probabilities summing to 1, and
weights below 1 flatten them (up to K^(1 - w) times more prefixes pass at a K-code level), so an
autoregressive head decoded exactly with small weights visits more of the trie. numpy only.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from genrec.decode.beam import StepFn


def check_level_weights(weights: Sequence[float], n_levels: int) -> tuple[float, ...]:
    """``weights`` as a tuple of ``n_levels`` finite floats > 0, else ValueError naming what is wrong."""
    weights = tuple(float(w) for w in weights)
    if len(weights) != n_levels:
        raise ValueError(f"level_weights has {len(weights)} entries; the codes have {n_levels} digits")
    bad = [w for w in weights if not (math.isfinite(w) and w > 0)]
    if bad:
        raise ValueError(f"level_weights must be finite and > 0 (a digit's weighted log-prob must stay <= 0 for "
                         f"the exact searches), got {bad[:3]}")
    return weights


def check_modality_weights(weights: dict) -> dict[str, float]:
    """``{modality: weight}`` with every weight a finite number > 0, else ValueError naming the modality."""
    if not isinstance(weights, dict):
        raise ValueError(f"modality_weights must be a mapping like {{text: 0.33}}, got {weights!r}")
    out = {}
    for name, w in weights.items():
        ok = isinstance(w, (int, float)) and not isinstance(w, bool) and math.isfinite(w) and w > 0
        if not ok:
            raise ValueError(f"modality_weights[{name!r}] must be a finite number > 0, got {w!r}")
        out[str(name)] = float(w)
    return out


class WeightedStep:
    """A StepFn whose level-``d`` log-probs are multiplied by ``weights[d]``; every other attribute (the
    causal step's ``state``, read by search "rerank") is the wrapped step's."""

    def __init__(self, step: StepFn, weights: Sequence[float]):
        self.step = step
        self.weights = tuple(float(w) for w in weights)

    def __call__(self, level: int, parent_rows: np.ndarray, last_codes: np.ndarray | None) -> np.ndarray:
        out = self.step(level, parent_rows, last_codes)
        w = self.weights[level]
        return out if w == 1.0 else np.asarray(out) * w

    def __getattr__(self, name: str):
        if name == "step":      # not set yet (e.g. while unpickling): no recursion through __getattr__
            raise AttributeError(name)
        return getattr(self.step, name)


def weighted_step(step: StepFn, weights: Sequence[float] | None) -> StepFn:
    """``step`` itself when ``weights`` is None or all 1 (no copy, same floats), else a WeightedStep."""
    if weights is None or all(float(w) == 1.0 for w in weights):
        return step
    return WeightedStep(step, weights)
