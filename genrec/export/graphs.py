"""Export-only torch wrappers: each model split into an encoder graph and a one-level decoder step.

They are exact re-arrangements of the eager models (genrec.model.causal / seq2seq and the step
functions in genrec.generate), chosen so each ONNX graph is small and has no control flow.

CausalSID:

- CausalEncoder folds everything that depends only on the item into one (n_items, d) table
  (sum of code embeddings + content projection + id embedding, times sqrt(d)), so the graph
  gathers one row per history item instead of D code embeddings plus a content vector.
- CausalDecoderStep stacks the per-level code-head weights into (D, ...) tensors padded to the
  largest codebook K_max and gathers them by ``level``: one graph serves every level. The padded
  codes get a bias of -inf, so their log-probs are -inf and they can never be chosen.
- ParallelDecoderStep is the same signature for the parallel (RPG-style) head: the state never
  changes and each level has its own projection, so the runtime and its step function are shared.
  ParallelEncoder also returns every level's log-probs from the encoder call, which the server reads
  instead of stepping level by level.

TIGER (T5): TigerEncoder runs the encoder and precomputes every decoder layer's cross-attention
keys/values once per request; TigerDecoderStep is one decoder step with the key/value cache as
plain tensors (see its docstring for the layout and why it does not call T5Stack).
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from genrec.model.causal import CausalSID
from genrec.model.layout import BOS


class CausalEncoder(nn.Module):
    """history (b, t) item ids, -1 = padding on the left -> decoding state (b, d) after the last item.

    Runs CausalSID.encode_tokens itself; only the per-item input vectors come from a table.
    """

    def __init__(self, genrec):
        super().__init__()
        self.model = genrec.model
        with torch.no_grad():
            table = genrec.item_vectors()                                                  # (n_items, d)
        self.register_buffer("item_table", table.detach().clone())

    def forward(self, history: torch.Tensor) -> torch.Tensor:
        valid = history >= 0                                                           # (b, t)
        x = self.item_table[history.clamp(min=0)]                                      # (b, t, d)
        return self.model.encode_tokens(x, valid)[:, -1]                               # (b, d)


class ParallelEncoder(nn.Module):
    """CausalEncoder plus every level's log-probs from its state: history (b, t) -> (state (b, d),
    level_log_probs (b, D, K_max)), -inf beyond K_level.

    A parallel head's levels all read the same state, so one encoder call holds everything exact
    decoding needs; the server does not call decoder_step.onnx once per level (17 calls for the sparse
    configs' 16 digits + dedup). The math is ParallelDecoderStep's, batched over the levels.
    """

    def __init__(self, genrec):
        super().__init__()
        self.encoder = CausalEncoder(genrec)
        self.step = ParallelDecoderStep(genrec.model)

    def forward(self, history: torch.Tensor):
        state = self.encoder(history)                                                  # (b, d)
        return state, self.step.all_levels(state)


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
        mlps = head.mlps   # genrec.model.causal.LevelMLP: norm -> fc1 -> exact GELU -> fc2
        self.register_buffer("advance", advance)
        self.register_buffer("out_emb", out_emb)
        self.register_buffer("bias", bias)
        self.register_buffer("ln_w", torch.stack([m.norm.weight for m in mlps]).detach())   # (D, d)
        self.register_buffer("ln_b", torch.stack([m.norm.bias for m in mlps]).detach())     # (D, d)
        # Linear weights stored transposed, (D, in, out), so the graph multiplies without a Transpose per step.
        self.register_buffer("w1", torch.stack([m.fc1.weight.T for m in mlps]).detach())   # (D, d, d)
        self.register_buffer("b1", torch.stack([m.fc1.bias for m in mlps]).detach())       # (D, d)
        self.register_buffer("w2", torch.stack([m.fc2.weight.T for m in mlps]).detach())   # (D, d, d)
        self.register_buffer("b2", torch.stack([m.fc2.bias for m in mlps]).detach())       # (D, d)
        self.eps = mlps[0].norm.eps
        self.d_model = d

    def forward(self, state: torch.Tensor, last_code: torch.Tensor, level: torch.Tensor):
        state = state + self.advance[level][last_code]                                  # (r, d)
        h = F.layer_norm(state, (self.d_model,), self.ln_w[level], self.ln_b[level], self.eps)
        h = F.gelu(h @ self.w1[level] + self.b1[level])
        h = h @ self.w2[level] + self.b2[level]                                         # (r, d)
        logits = h @ self.out_emb[level] + self.bias[level]                             # (r, k_max)
        return F.log_softmax(logits, dim=-1), state


class ParallelDecoderStep(nn.Module):
    """The parallel head as a decoder step: (state, last_code, level) -> (log_probs, state).

    log_probs = log_softmax((LN(state) @ W_level^T + b_level) @ E_level^T + bias_level), padded to K_max
    with -inf. ``last_code`` is read (through a table of zeros) only so the graph keeps the input the
    shared step protocol passes.
    """

    def __init__(self, model: CausalSID):
        super().__init__()
        head = model.head
        sizes = model.cfg.level_sizes
        n_levels, k_max, d = len(sizes), max(sizes), model.cfg.d_model
        out_emb = torch.zeros(n_levels, d, k_max)
        bias = torch.full((n_levels, k_max), float("-inf"))
        with torch.no_grad():
            for level, k in enumerate(sizes):
                out_emb[level, :, :k] = head.code_emb[level].weight.T
                bias[level, :k] = head.bias[level]
            w = head.proj.weight.view(n_levels, d, d).transpose(1, 2).contiguous()     # (D, in, out)
        self.register_buffer("out_emb", out_emb)
        self.register_buffer("bias", bias)
        self.register_buffer("w", w.detach())
        self.register_buffer("b", head.proj.bias.view(n_levels, d).detach().clone())
        self.register_buffer("ln_w", head.norm.weight.detach().clone())
        self.register_buffer("ln_b", head.norm.bias.detach().clone())
        self.register_buffer("no_advance", torch.zeros(k_max, d))
        self.eps = head.norm.eps
        self.d_model = d

    def all_levels(self, state: torch.Tensor) -> torch.Tensor:
        """(r, d) -> every level's log-probs (r, D, K_max): ``forward`` for all levels at once."""
        h = F.layer_norm(state, (self.d_model,), self.ln_w, self.ln_b, self.eps)
        query = torch.einsum("bi,lio->blo", h, self.w) + self.b                         # (r, D, d)
        logits = torch.einsum("bld,ldk->blk", query, self.out_emb) + self.bias          # (r, D, K_max)
        return F.log_softmax(logits, dim=-1)

    def forward(self, state: torch.Tensor, last_code: torch.Tensor, level: torch.Tensor):
        state = state + self.no_advance[last_code]
        h = F.layer_norm(state, (self.d_model,), self.ln_w, self.ln_b, self.eps)
        query = h @ self.w[level] + self.b[level]                                       # (r, d)
        logits = query @ self.out_emb[level] + self.bias[level]                         # (r, k_max)
        return F.log_softmax(logits, dim=-1), state


# ---------------------------------------------------------------------- TIGER (T5)
def _rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """T5LayerNorm: scale only, no mean subtraction, no bias."""
    return weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps))


class TigerEncoder(nn.Module):
    """history (b, t) item ids, -1 = padding -> per decoder layer cross-attention keys/values and the source mask.

    The id -> D code tokens gather happens in the graph (as in GenRecModule.tiger_inputs). The decoder's
    cross-attention projections of the encoder output are computed here once per request, so every
    decoding step reads them instead of recomputing (or copying) them per beam.
    """

    def __init__(self, tiger, item_codes: torch.Tensor):
        super().__init__()
        self.t5 = tiger.t5
        # A copy of the encoder on plain (eager) attention: the dynamo exporter cannot decompose the
        # SDPA path's reshapes. Same maths; the model itself is left untouched.
        self.encoder = copy.deepcopy(tiger.t5.encoder)
        self.encoder.set_attn_implementation("eager")
        layout = tiger.layout
        self.register_buffer("item_tokens", item_codes + torch.as_tensor(layout.offsets))   # (n_items, D)
        self.n_levels = layout.n_levels
        cfg = self.t5.config
        self.n_heads, self.d_kv = cfg.num_heads, cfg.d_kv

    def forward(self, history: torch.Tensor):
        b, t = history.shape
        valid = history >= 0                                                          # (b, t)
        tokens = (self.item_tokens[history.clamp(min=0)] * valid.unsqueeze(-1)).reshape(b, t * self.n_levels)
        mask = valid.unsqueeze(-1).expand(b, t, self.n_levels).reshape(b, t * self.n_levels)   # (b, s)
        hidden = self.encoder(input_ids=tokens, attention_mask=mask.long()).last_hidden_state  # (b, s, d)
        s = tokens.shape[1]
        keys, values = [], []
        for block in self.t5.decoder.block:
            attn = block.layer[1].EncDecAttention
            keys.append(attn.k(hidden).view(b, s, self.n_heads, self.d_kv).transpose(1, 2))     # (b, h, s, dk)
            values.append(attn.v(hidden).view(b, s, self.n_heads, self.d_kv).transpose(1, 2))
        # Additive mask over source tokens, as T5 applies it: 0 for items, the float minimum for padding.
        bias = (1.0 - mask.float()) * torch.finfo(torch.float32).min                      # (b, s)
        return torch.stack(keys), torch.stack(values), bias                              # (L, b, h, s, dk) x2


class TigerDecoderStep(nn.Module):
    """One T5 decoder step over beams laid out as (batch, beams), with the key/value cache as tensors.

    Inputs: last_code (b, w) code chosen at level-1 (ignored at level 0); level (); self_keys /
    self_values (L, b, w, h, D, dk) the self-attention cache of positions < level (slots >= level
    are ignored); cross_keys / cross_values (L, b, h, s, dk) and encoder_bias (b, s) from the encoder.
    Outputs: log_probs (b, w, K_max) over level ``level``'s codes (-inf past K_level) and the cache
    with position ``level`` written.

    The step is written out from the T5 weights rather than calling T5Stack with Cache objects: its
    cross-attention multiplies each request's (b, h, w, dk) queries by that request's keys directly, so
    the keys/values are shared by all of a request's beams and never gathered or copied per beam.
    The fixed-size self-attention cache (D slots, updated with a where) keeps the graph free of
    zero-length tensors and data-dependent shapes.
    """

    def __init__(self, tiger):
        super().__init__()
        t5 = tiger.t5
        cfg = t5.config
        layout = tiger.layout
        sizes = layout.level_sizes
        n_levels, k_max, d = layout.n_levels, max(sizes), cfg.d_model
        if cfg.is_gated_act or cfg.dense_act_fn != "relu":
            raise ValueError(f"TigerDecoderStep implements T5's relu feed-forward, got {cfg.feed_forward_proj!r}")
        self.n_heads, self.d_kv, self.eps = cfg.num_heads, cfg.d_kv, cfg.layer_norm_epsilon
        self.n_levels = n_levels
        emb = t5.shared.weight                                                           # (V, d)
        with torch.no_grad():
            # Decoder input per (level, last code): BOS at level 0, else the level-1 code's token embedding.
            inputs = torch.zeros(n_levels, k_max, d)
            inputs[0] = emb[BOS]
            for level in range(1, n_levels):
                lo = layout.offsets[level - 1]
                inputs[level, : sizes[level - 1]] = emb[lo: lo + sizes[level - 1]]
            # Output rows of each level's slice of the vocabulary (T5 may scale the decoder output first).
            scale = cfg.d_model ** -0.5 if getattr(cfg, "scale_decoder_outputs", False) else 1.0
            out_w = torch.zeros(n_levels, d, k_max)
            out_bias = torch.full((n_levels, k_max), float("-inf"))
            for level, k in enumerate(sizes):
                lo = layout.offsets[level]
                out_w[level, :, :k] = t5.lm_head.weight[lo: lo + k].T * scale
                out_bias[level, :k] = 0.0
            # Self-attention position bias of query position i over key slots j, -inf for j > i (causal).
            first = t5.decoder.block[0].layer[0].SelfAttention
            bias = first.compute_bias(n_levels, n_levels)[0].permute(1, 0, 2).clone()    # (D query, h, D key)
            future = torch.ones(n_levels, n_levels, dtype=torch.bool).triu(1)           # (D, D)
            bias = bias.masked_fill(future[:, None, :], float("-inf"))
        self.register_buffer("inputs", inputs)
        self.register_buffer("out_w", out_w)
        self.register_buffer("out_bias", out_bias)
        self.register_buffer("pos_bias", bias)
        self.blocks = t5.decoder.block
        self.final_norm = t5.decoder.final_layer_norm

    def forward(self, last_code, level, self_keys, self_values, cross_keys, cross_values, encoder_bias):
        b, w = last_code.shape
        h, dk = self.n_heads, self.d_kv
        x = self.inputs[level][last_code]                                               # (b, w, d)
        slot = (torch.arange(self.n_levels) == level).view(self.n_levels, 1)            # (D, 1) the slot written now
        pos_bias = self.pos_bias[level]                                                 # (h, D)
        src_bias = encoder_bias[:, None, None, :]                                       # (b, 1, 1, s)
        new_keys, new_values = [], []
        for i, block in enumerate(self.blocks):
            sa, ca, ff = block.layer[0], block.layer[1], block.layer[2]
            # self-attention over the cached decoder positions (one new query per beam)
            y = _rms_norm(x, sa.layer_norm.weight, self.eps)
            q = sa.SelfAttention.q(y).view(b, w, h, 1, dk)
            keys = torch.where(slot, sa.SelfAttention.k(y).view(b, w, h, 1, dk), self_keys[i])   # (b, w, h, D, dk)
            values = torch.where(slot, sa.SelfAttention.v(y).view(b, w, h, 1, dk), self_values[i])
            att = torch.softmax((q @ keys.transpose(-1, -2)).squeeze(-2) + pos_bias, dim=-1)        # (b, w, h, D)
            x = x + sa.SelfAttention.o((att.unsqueeze(-2) @ values).reshape(b, w, h * dk))
            new_keys.append(keys)
            new_values.append(values)
            # cross-attention: a request's beams share its encoder keys/values
            y = _rms_norm(x, ca.layer_norm.weight, self.eps)
            q = ca.EncDecAttention.q(y).view(b, w, h, dk).transpose(1, 2)                 # (b, h, w, dk)
            att = torch.softmax(q @ cross_keys[i].transpose(-1, -2) + src_bias, dim=-1)   # (b, h, w, s)
            y = (att @ cross_values[i]).transpose(1, 2).reshape(b, w, h * dk)
            x = x + ca.EncDecAttention.o(y)
            # feed-forward
            y = _rms_norm(x, ff.layer_norm.weight, self.eps)
            x = x + ff.DenseReluDense.wo(torch.relu(ff.DenseReluDense.wi(y)))
        x = _rms_norm(x, self.final_norm.weight, self.eps)
        logits = x @ self.out_w[level] + self.out_bias[level]                           # (b, w, K_max)
        return torch.log_softmax(logits, dim=-1), torch.stack(new_keys), torch.stack(new_values)
