"""Torch-side step functions that plug a trained GenRec into genrec.decode's search.

genrec.decode is numpy-only and model-agnostic: it calls ``step(level, parent_rows,
last_codes)`` and gets per-level log-probs back. This module implements that protocol for
CausalSID (state = the code head's running vector) and TIGER's T5 (state = the encoder
output plus the decoded prefix), so evaluation and the ONNX server share one search. The
registry (genrec.registry) names which step each architecture uses.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from genrec.model.layout import BOS


class CausalStep:
    """Step function for CausalSID: one transformer pass per request, then tiny head steps."""

    def __init__(self, genrec, hist: torch.Tensor, users: torch.Tensor | None = None):
        self.head = genrec.model.head
        self.state = genrec.model.last_state(*genrec.history_inputs(hist))  # (b, d)

    @torch.inference_mode()
    def __call__(self, level: int, parent_rows: np.ndarray, last_codes: np.ndarray | None) -> np.ndarray:
        rows = torch.as_tensor(parent_rows, dtype=torch.long, device=self.state.device)
        state = self.state[rows]
        if level > 0:
            state = self.head.advance(level - 1, state,
                                      torch.as_tensor(last_codes, dtype=torch.long, device=state.device))
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

    def __init__(self, genrec, hist: torch.Tensor, users: torch.Tensor | None = None):
        self.model = genrec.model
        tokens, attn = genrec.tiger_inputs(hist, users)
        self.enc = self.model.t5.get_encoder()(input_ids=tokens, attention_mask=attn).last_hidden_state  # (b, s, d)
        self.attn = attn
        self.prefix = torch.full((len(hist), 1), BOS, dtype=torch.long, device=hist.device)  # (rows, 1 + level)

    @torch.inference_mode()
    def __call__(self, level: int, parent_rows: np.ndarray, last_codes: np.ndarray | None) -> np.ndarray:
        rows = torch.as_tensor(parent_rows, dtype=torch.long, device=self.enc.device)
        self.enc, self.attn, self.prefix = self.enc[rows], self.attn[rows], self.prefix[rows]
        if level > 0:
            tok = (torch.as_tensor(last_codes, dtype=torch.long, device=self.enc.device)
                   + self.model.layout.offsets[level - 1])
            self.prefix = torch.cat([self.prefix, tok[:, None]], dim=1)
        out = self.model.t5(encoder_outputs=(self.enc,), attention_mask=self.attn, decoder_input_ids=self.prefix,
                            use_cache=False)
        logits = self.model.level_logits(out.logits[:, -1], level)
        return F.log_softmax(logits.float(), dim=-1).cpu().numpy()
