"""Export-only torch wrappers: CausalSID split into an encoder graph and a one-level decoder step.

They are exact re-arrangements of the eager model (genrec.model.causal + genrec.generate.CausalStep),
chosen so each ONNX graph is small and has no control flow:

- CausalEncoder folds everything that depends only on the item into one (n_items, d) table
  (sum of code embeddings + content projection + id embedding, times sqrt(d)), so the graph
  gathers one row per history item instead of D code embeddings plus a content vector.
- CausalDecoderStep stacks the per-level code-head weights into (D, ...) tensors padded to the
  largest codebook K_max and gathers them by ``level``: one graph serves every level. The padded
  codes get a bias of -inf, so their log-probs are -inf and they can never be chosen.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from genrec.model.causal import CausalSID


class CausalEncoder(nn.Module):
    """history (b, t) item ids, -1 = padding on the left -> decoding state (b, d) after the last item."""

    def __init__(self, model: CausalSID, item_codes: torch.Tensor, content: torch.Tensor | None):
        super().__init__()
        self.model = model
        cfg = model.cfg
        with torch.no_grad():
            ids = torch.arange(item_codes.shape[0])
            item_ids = ids if model.item_emb is not None else None
            table = model.item_tokens(item_codes[None], content[None] if content is not None else None,
                                      item_ids[None] if item_ids is not None else None)[0]    # (n_items, d)
        self.register_buffer("item_table", table.detach().clone())
        self.max_items = cfg.max_items

    def forward(self, history: torch.Tensor) -> torch.Tensor:
        m = self.model
        b, t = history.shape
        valid = history >= 0                                                           # (b, t)
        x = self.item_table[history.clamp(min=0)] * valid.unsqueeze(-1)               # (b, t, d)
        x = x + m.pos_emb.weight[-t:]
        pos = torch.arange(t)
        causal = pos[None, :] <= pos[:, None]                                          # (t, t) key <= query
        itself = pos[None, :] == pos[:, None]                                          # (t, t) diagonal
        # Same mask as CausalSID.encode (built from aranges: a bool EyeLike has no onnxruntime kernel):
        # real items only, and a padded query may see itself so no row is empty (no NaN).
        mask = (causal & (valid.unsqueeze(1) | itself)).unsqueeze(1)                   # (b, 1, t, t)
        for block in m.blocks:
            x = block(x, mask)
        return m.ln_f(x[:, -1])                                                        # (b, d)


class CausalDecoderStep(nn.Module):
    """One level of the code head for any level: (state, last_code, level) -> (log_probs, new_state).

    new_state = state + E_{level-1}[last_code]   (nothing added at level 0)
    log_probs = log_softmax(mlp_level(new_state) @ E_level^T + bias_level), padded to K_max with -inf
    """

    def __init__(self, model: CausalSID):
        super().__init__()
        head = model.head
        sizes = model.cfg.level_sizes
        n_levels, k_max, d = len(sizes), max(sizes), model.cfg.d_model
        advance = torch.zeros(n_levels, k_max, d)     # row `level` holds E_{level-1}; level 0 adds zeros
        out_emb = torch.zeros(n_levels, d, k_max)     # E_level^T, zero columns past K_level
        bias = torch.full((n_levels, k_max), float("-inf"))
        with torch.no_grad():
            for level, k in enumerate(sizes):
                if level > 0:
                    advance[level, : sizes[level - 1]] = model.code_emb[level - 1].weight
                out_emb[level, :, :k] = head.code_emb[level].weight.T
                bias[level, :k] = head.bias[level]
        mlps = head.mlps   # each: LayerNorm, Linear, GELU, Linear
        self.register_buffer("advance", advance)
        self.register_buffer("out_emb", out_emb)
        self.register_buffer("bias", bias)
        self.register_buffer("ln_w", torch.stack([m[0].weight for m in mlps]).detach())   # (D, d)
        self.register_buffer("ln_b", torch.stack([m[0].bias for m in mlps]).detach())     # (D, d)
        # Linear weights stored transposed, (D, in, out), so the graph multiplies without a Transpose per step.
        self.register_buffer("w1", torch.stack([m[1].weight.T for m in mlps]).detach())   # (D, d, d)
        self.register_buffer("b1", torch.stack([m[1].bias for m in mlps]).detach())       # (D, d)
        self.register_buffer("w2", torch.stack([m[3].weight.T for m in mlps]).detach())   # (D, d, d)
        self.register_buffer("b2", torch.stack([m[3].bias for m in mlps]).detach())       # (D, d)
        self.eps = mlps[0][0].eps
        self.d_model = d
        if any(not isinstance(m[2], nn.GELU) or m[2].approximate != "none" for m in mlps):
            raise ValueError("CausalDecoderStep expects the code head's exact GELU; update graphs.py with the model")

    def forward(self, state: torch.Tensor, last_code: torch.Tensor, level: torch.Tensor):
        state = state + self.advance[level][last_code]                                  # (r, d)
        h = F.layer_norm(state, (self.d_model,), self.ln_w[level], self.ln_b[level], self.eps)
        h = F.gelu(h @ self.w1[level] + self.b1[level])
        h = h @ self.w2[level] + self.b2[level]                                         # (r, d)
        logits = h @ self.out_emb[level] + self.bias[level]                             # (r, k_max)
        return F.log_softmax(logits, dim=-1), state
