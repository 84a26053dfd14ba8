"""Eager-vs-ONNX parity: same top-k items, same scores, same per-level log-probs.

The eager side is the path evaluation uses (genrec.generate.recommend with CausalStep/TigerStep); the
ONNX side is the server's (genrec.serving.runtime). Every step call of the eager search is
recorded and replayed through decoder_step.onnx with the same parent rows and codes, so the
log-prob comparison covers exactly the rows the search visited.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from genrec.data.split import left_pad
from genrec.decode import top_items
from genrec.generate import CausalStep, TigerStep
from genrec.serving.runtime import ExportRuntime


@dataclass
class ParityResult:
    n_histories: int            # histories compared
    same_items: bool            # identical top-k item ids (and order) for every history
    max_score_diff: float       # max |eager - onnx| over returned beam scores
    max_logit_diff: float       # max |eager - onnx| over finite per-level log-probs of every visited row
    max_state_diff: float       # max |eager - onnx| over the encoder's outputs (causal state / tiger cross keys)
    inf_pattern_equal: bool     # -inf log-probs sit at the same places on both sides
    n_levels: int = 1           # per-level log-probs summed into each score

    def score_tolerance(self, tolerance: float) -> float:
        # A score sums one log-prob per level, so float32 rounding in it may grow with the level count:
        # the score bound is per-level tolerance x levels (each log-prob is held to the tolerance itself).
        return tolerance * self.n_levels

    def ok(self, tolerance: float) -> bool:
        return (self.same_items and self.inf_pattern_equal and self.max_score_diff <= self.score_tolerance(tolerance)
                and self.max_logit_diff <= tolerance and self.max_state_diff <= tolerance)

    def to_dict(self) -> dict:
        return {k: (float(v) if isinstance(v, float) else v) for k, v in self.__dict__.items()}


class _Recorder:
    """Wraps a StepFn and keeps each call's inputs and outputs."""

    def __init__(self, step):
        self.step = step
        self.calls: list[tuple[int, np.ndarray, np.ndarray | None, np.ndarray]] = []

    def __call__(self, level, parent_rows, last_codes):
        out = np.asarray(self.step(level, parent_rows, last_codes))
        self.calls.append((level, np.array(parent_rows), None if last_codes is None else np.array(last_codes), out))
        return out


@torch.inference_mode()
def compare(module, runtime: ExportRuntime, histories: list[np.ndarray], *, k: int, beam_width: int) -> ParityResult:
    """Decode ``histories`` (internal item ids, oldest first) with a GenRec and the export; measure the differences."""
    module = getattr(module, "genrec", module).eval()
    hist = torch.as_tensor(left_pad(histories, runtime.max_items))
    eager_step = _Recorder(module.step(hist))
    exact = module.parallel     # the path evaluation takes, not what the manifest under test claims
    if runtime.exact != exact:
        raise ValueError(f"the export decodes {'exactly' if runtime.exact else 'by beam search'} but the model "
                         f"{'scores every item exactly' if exact else 'needs beam search'}; re-run `genrec export`")
    eager = top_items(eager_step, module.trie, len(histories), k, exact=exact, beam_width=beam_width)
    if runtime.decoding == "rerank":    # the recorded beam still checks every step's log-probs below
        eager = module.recommend(hist, k=k, beam_width=beam_width, search="rerank")
    onnx = runtime.recommend(histories, k, exclude_history=False, beam_width=beam_width)

    replay = runtime.step_fn(histories)
    logit_diff, inf_equal = 0.0, True
    for level, parent_rows, last_codes, want in eager_step.calls:
        got = replay(level, parent_rows, last_codes)
        finite = np.isfinite(want)
        inf_equal &= bool(np.array_equal(finite, np.isfinite(got)))
        if finite.any():
            logit_diff = max(logit_diff, float(np.abs(want[finite] - got[finite]).max()))
    found = np.isfinite(eager.scores) & np.isfinite(onnx.scores)
    score_diff = float(np.abs(eager.scores[found] - onnx.scores[found]).max()) if found.any() else 0.0
    return ParityResult(
        n_histories=len(histories),
        same_items=bool(np.array_equal(eager.items, onnx.items)),
        max_score_diff=score_diff,
        max_logit_diff=logit_diff,
        max_state_diff=_encoder_diff(module, runtime, hist, histories),
        inf_pattern_equal=inf_equal,
        n_levels=int(runtime.item_codes.shape[1]),
    )


def _encoder_diff(module, runtime: ExportRuntime, hist: torch.Tensor, histories: list[np.ndarray]) -> float:
    """max |eager - onnx| of what the encoder hands the decoder: the state (causal) or cross-attention keys (tiger)."""
    encoded = runtime.encode(histories)
    if module.arch == "causal":
        return float(np.abs(CausalStep(module, hist).state.numpy() - encoded["state"]).max())
    enc = TigerStep(module, hist).enc                                                  # (b, s, d)
    b, s, _ = enc.shape
    cfg = module.model.t5.config
    keys = torch.stack([blk.layer[1].EncDecAttention.k(enc).view(b, s, cfg.num_heads, cfg.d_kv).transpose(1, 2)
                        for blk in module.model.t5.decoder.block]).numpy()            # (L, b, h, s, dk)
    return float(np.abs(keys - encoded["cross_keys"]).max())


def random_histories(n_items: int, lengths: list[int], seed: int) -> list[np.ndarray]:
    """One random history (distinct items) per requested length; lengths may exceed max_items."""
    rng = np.random.default_rng(seed)
    return [rng.choice(n_items, size=min(length, n_items), replace=False) for length in lengths]
