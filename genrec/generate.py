"""Torch-side step functions that plug a trained model into genrec.decode's beam search.

genrec.decode is numpy-only and model-agnostic: it calls ``step(level, parent_rows,
last_codes)`` and gets per-level log-probs back. This module implements that protocol for
CausalSID (state = the code head's running vector) and TIGER's T5 (state = the encoder
output plus the decoded prefix), so evaluation and the ONNX server share one search.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from genrec.decode import candidate_mask, exclude_mask, top_items
from genrec.model.layout import BOS


class CausalStep:
    """Step function for CausalSID: one transformer pass per request, then tiny head steps."""

    def __init__(self, module, hist: torch.Tensor):
        codes, valid, content, ids = module.history_inputs(hist)
        model = module.model
        self.head = model.head
        self.state = model.last_state(codes, valid, content, ids if module.hparams.item_id_embedding else None)  # (b, d)

    @torch.inference_mode()
    def __call__(self, level: int, parent_rows: np.ndarray, last_codes: np.ndarray | None) -> np.ndarray:
        rows = torch.as_tensor(parent_rows, dtype=torch.long, device=self.state.device)
        state = self.state[rows]
        if level > 0:
            state = self.head.advance(level - 1, state, torch.as_tensor(last_codes, dtype=torch.long, device=state.device))
        self.state = state
        return F.log_softmax(self.head.logits(level, state).float(), dim=-1).cpu().numpy()


class TigerStep:
    """Step function for TIGER's T5: encode once, then run the decoder over the growing prefix.

    The decoder is re-run on the whole prefix (at most D tokens) without a key/value cache. With
    beams, carrying transformers' cache means gathering every layer's cross-attention keys and
    values for the surviving rows at each level, which on CPU costs more memory traffic than
    recomputing them; the cache transformers builds by default (and grows by concatenation) was
    slower still. The ONNX export has its own cached step.
    """

    def __init__(self, module, hist: torch.Tensor, users: torch.Tensor | None = None):
        self.model = module.model
        tokens, attn = module.tiger_inputs(hist, users)
        self.enc = self.model.t5.get_encoder()(input_ids=tokens, attention_mask=attn).last_hidden_state  # (b, s, d)
        self.attn = attn
        self.prefix = torch.full((len(hist), 1), BOS, dtype=torch.long, device=hist.device)  # (rows, 1 + level)

    @torch.inference_mode()
    def __call__(self, level: int, parent_rows: np.ndarray, last_codes: np.ndarray | None) -> np.ndarray:
        rows = torch.as_tensor(parent_rows, dtype=torch.long, device=self.enc.device)
        self.enc, self.attn, self.prefix = self.enc[rows], self.attn[rows], self.prefix[rows]
        if level > 0:
            tok = torch.as_tensor(last_codes, dtype=torch.long, device=self.enc.device) + self.model.layout.offsets[level - 1]
            self.prefix = torch.cat([self.prefix, tok[:, None]], dim=1)
        out = self.model.t5(encoder_outputs=(self.enc,), attention_mask=self.attn, decoder_input_ids=self.prefix,
                            use_cache=False)
        logits = self.model.level_logits(out.logits[:, -1], level)
        return F.log_softmax(logits.float(), dim=-1).cpu().numpy()


def is_parallel(module) -> bool:
    """True when the model predicts every code level from one state, so items can be scored exactly."""
    return module.arch == "causal" and module.model.head.parallel


def make_step(module, hist: torch.Tensor, users: torch.Tensor | None = None):
    return CausalStep(module, hist) if module.arch == "causal" else TigerStep(module, hist, users)


@torch.inference_mode()
def recommend(module, hist: torch.Tensor, *, k: int, beam_width: int, exclude: list[np.ndarray] | None = None,
              candidates: list[np.ndarray] | None = None, users: torch.Tensor | None = None):
    """Top-k real items per history row -> BeamResult (items, scores, codes): trie-constrained beam search,
    or, for a parallel code head, exact scoring of every item (beam_width is then unused)."""
    was_training = module.training
    module.eval()
    try:
        n_items = module.dims.n_items
        mask = None
        if exclude is not None:
            mask = exclude_mask(exclude, n_items)
        if candidates is not None:
            cmask = candidate_mask(candidates, n_items)
            mask = cmask if mask is None else mask & cmask
        step = make_step(module, hist, users)
        return top_items(step, module.trie, len(hist), k, exact=is_parallel(module), beam_width=beam_width,
                         item_mask=mask)
    finally:
        module.train(was_training)
