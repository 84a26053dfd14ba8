"""CausalSID: a decoder-only Transformer over one token per history item, with a light
autoregressive code head that generates the next item's semantic ID at every position.

Why this design (see README "Design"): on 2 CPU cores the TIGER encoder-decoder re-encodes
every prefix with 4 tokens per item. Here a sequence of n items is read once, as n tokens,
and all n next-item targets are trained in one pass (as SASRec and RPG do); the code head
is a few small MLPs instead of a cross-attention decoder.

Two code heads: ``CodeHead`` (autoregressive over the levels, for coarse-to-fine RQ codes;
decoded by trie beam search) and ``ParallelHead`` (every level from the same state, RPG-style,
for long product-quantized codes; every item is scored exactly by genrec.decode.score_catalogue).

Reading order: config -> blocks -> code heads -> model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


HEADS = ("autoregressive", "parallel")
# What the item logit (the item loss's score, and search "rerank"'s) scores a state against: the item's input
# token; a free output vector per item (untied, as a classifier's rows); or the sum of the two.
ITEM_OUTPUTS = ("token", "free", "token+free")


@dataclass
class CausalSIDConfig:
    level_sizes: tuple[int, ...] = (256, 256, 256, 8)  # codes per semantic-ID level (from sid/, incl. dedup level)
    max_items: int = 20          # history length the model reads (left-padded)
    d_model: int = 128           # hidden size
    n_layers: int = 2            # causal self-attention blocks
    n_heads: int = 4             # attention heads
    d_ff: int = 512              # feed-forward hidden size
    dropout: float = 0.2         # dropout on embeddings, attention output and feed-forward
    content_dim: int = 0         # >0: add a projection of each item's content vector (fused features) to its token
    n_items: int = 0             # >0: also learn a per-item id embedding (hybrid; 0 = codes only)
    head: str = "autoregressive"  # "autoregressive": level d sees the codes before it (for RQ codes);
                                  # "parallel": every level from the same state (RPG-style, for PQ codes)
    item_output: str = "token"   # the item logit's item vectors (ITEM_OUTPUTS); not "token": a free table
    n_output_items: int = 0      # rows of that free output table (the catalogue size; 0 with "token")
    n_attributes: int = 0        # >0: add the mean of each item's attribute embeddings to its token (vocabulary size)

    def __post_init__(self):
        self.level_sizes = tuple(int(k) for k in self.level_sizes)
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model ({self.d_model}) must be divisible by n_heads ({self.n_heads})")
        if self.max_items < 1 or self.n_layers < 1 or not self.level_sizes:
            raise ValueError("max_items, n_layers and level_sizes must be positive")
        if self.head not in HEADS:
            raise ValueError(f"head must be one of {HEADS}, got {self.head!r}")
        if self.item_output not in ITEM_OUTPUTS:
            raise ValueError(f"item_output must be one of {ITEM_OUTPUTS}, got {self.item_output!r}")
        if (self.item_output != "token") != (self.n_output_items > 0):
            raise ValueError(f"item_output {self.item_output!r} needs n_output_items > 0 exactly when it is not "
                             f"'token' (got {self.n_output_items})")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")


class Block(nn.Module):
    """Pre-LN causal self-attention block."""

    def __init__(self, cfg: CausalSIDConfig):
        super().__init__()
        self.n_heads = cfg.n_heads
        self.ln1 = nn.LayerNorm(cfg.d_model)
        self.qkv = nn.Linear(cfg.d_model, 3 * cfg.d_model)
        self.proj = nn.Linear(cfg.d_model, cfg.d_model)
        self.ln2 = nn.LayerNorm(cfg.d_model)
        self.ff = nn.Sequential(nn.Linear(cfg.d_model, cfg.d_ff), nn.GELU(), nn.Linear(cfg.d_ff, cfg.d_model))
        self.drop = nn.Dropout(cfg.dropout)
        self.attn_dropout = cfg.dropout

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(d, dim=-1)
        q, k, v = (z.view(b, t, self.n_heads, d // self.n_heads).transpose(1, 2) for z in (q, k, v))  # (b, h, t, dh)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask,
                                           dropout_p=self.attn_dropout if self.training else 0.0)
        x = x + self.drop(self.proj(y.transpose(1, 2).reshape(b, t, d)))
        return x + self.drop(self.ff(self.ln2(x)))


class LevelMLP(nn.Module):
    """The code head's per-level transform: LayerNorm -> Linear -> exact GELU -> Linear."""

    def __init__(self, d_model: int):
        super().__init__()
        self.norm = nn.LayerNorm(d_model)
        self.fc1 = nn.Linear(d_model, d_model)
        self.fc2 = nn.Linear(d_model, d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(self.norm(x))))


class CodeHead(nn.Module):
    """Generates the D codes of the next item from one hidden state, level by level.

    state_0 = h;  logits_d = f_d(state_d) @ E_d^T;  state_{d+1} = state_d + E_d[c_d].
    The state is all a decoding step needs, so it doubles as the (tiny) decoding cache.
    """

    parallel = False

    def __init__(self, cfg: CausalSIDConfig, code_emb: nn.ModuleList):
        super().__init__()
        self.code_emb = code_emb  # tied: the input code embeddings score the output codes
        self.mlps = nn.ModuleList(LevelMLP(cfg.d_model) for _ in cfg.level_sizes)
        self.bias = nn.ParameterList(nn.Parameter(torch.zeros(k)) for k in cfg.level_sizes)

    def logits(self, level: int, state: torch.Tensor) -> torch.Tensor:
        """(..., d) -> (..., K_level)"""
        return self.mlps[level](state) @ self.code_emb[level].weight.T + self.bias[level]

    def advance(self, level: int, state: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
        return state + self.code_emb[level](codes)

    def teacher_forced(self, h: torch.Tensor, codes: torch.Tensor) -> list[torch.Tensor]:
        """h (b, t, d), codes (b, t, D) true next-item codes -> per-level logits [(b, t, K_d)]."""
        out, state = [], h
        for level in range(codes.shape[-1]):
            out.append(self.logits(level, state))
            state = self.advance(level, state, codes[..., level])
        return out


class ParallelHead(nn.Module):
    """Predicts all D codes of the next item at once from one hidden state (RPG's parallel digits).

    logits_d = W_d LN(h) @ E_d^T. No level conditions on another, so log p(item) is a sum of
    per-level table lookups and genrec.decode.score_catalogue ranks every item exactly. It suits
    product-quantized codes (tokenizer method "pq"), whose digits are not a coarse-to-fine path.
    Same interface as CodeHead; ``advance`` leaves the state unchanged.
    """

    parallel = True

    def __init__(self, cfg: CausalSIDConfig, code_emb: nn.ModuleList):
        super().__init__()
        self.code_emb = code_emb
        self.d_model = cfg.d_model
        self.norm = nn.LayerNorm(cfg.d_model)
        self.proj = nn.Linear(cfg.d_model, len(cfg.level_sizes) * cfg.d_model)  # one d-vector per level
        self.bias = nn.ParameterList(nn.Parameter(torch.zeros(k)) for k in cfg.level_sizes)

    def logits(self, level: int, state: torch.Tensor) -> torch.Tensor:
        """(..., d) -> (..., K_level)"""
        rows = slice(level * self.d_model, (level + 1) * self.d_model)
        query = F.linear(self.norm(state), self.proj.weight[rows], self.proj.bias[rows])
        return query @ self.code_emb[level].weight.T + self.bias[level]

    def advance(self, level: int, state: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
        return state

    def teacher_forced(self, h: torch.Tensor, codes: torch.Tensor) -> list[torch.Tensor]:
        """h (..., d) -> per-level logits [(..., K_d)]; the true codes are not needed as inputs."""
        queries = self.proj(self.norm(h)).unflatten(-1, (len(self.bias), self.d_model))   # (..., D, d)
        return [queries[..., level, :] @ emb.weight.T + bias
                for level, (emb, bias) in enumerate(zip(self.code_emb, self.bias))]


class CausalSID(nn.Module):
    def __init__(self, cfg: CausalSIDConfig):
        super().__init__()
        self.cfg = cfg
        d = cfg.d_model
        self.code_emb = nn.ModuleList(nn.Embedding(k, d) for k in cfg.level_sizes)
        self.content_proj = nn.Linear(cfg.content_dim, d, bias=False) if cfg.content_dim else None
        self.item_emb = nn.Embedding(cfg.n_items, d) if cfg.n_items else None
        # untied output rows: a rare item's logit need not share its code embeddings with popular items
        self.item_out_emb = nn.Embedding(cfg.n_output_items, d) if cfg.n_output_items else None
        # tags (category, brand) shared across items: a rare item's token borrows what popular ones with
        # its tags learned
        self.attr_emb = nn.Embedding(cfg.n_attributes + 1, d, padding_idx=0) if cfg.n_attributes else None
        self.pos_emb = nn.Embedding(cfg.max_items, d)
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        self.ln_f = nn.LayerNorm(d)
        self.head = (CodeHead if cfg.head == "autoregressive" else ParallelHead)(cfg, self.code_emb)
        self.apply(self._init)

    @staticmethod
    def _init(m: nn.Module) -> None:
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, std=0.02)
        if isinstance(m, nn.Embedding) and m.padding_idx is not None:
            with torch.no_grad():
                m.weight[m.padding_idx].zero_()     # an empty attribute slot adds nothing
        if isinstance(m, nn.Linear) and m.bias is not None:
            nn.init.zeros_(m.bias)

    def item_tokens(self, codes: torch.Tensor, content: torch.Tensor | None = None,
                    item_ids: torch.Tensor | None = None, attributes: torch.Tensor | None = None) -> torch.Tensor:
        """codes (b, t, D) -> one input vector per item (b, t, d): the sum of its code embeddings, plus the
        optional content projection, item-id embedding and mean attribute embedding (attributes (b, t, A),
        0 = an empty slot)."""
        x = sum(emb(codes[..., i]) for i, emb in enumerate(self.code_emb))
        if self.content_proj is not None and content is not None:
            x = x + self.content_proj(content)
        if self.item_emb is not None and item_ids is not None:
            x = x + self.item_emb(item_ids.clamp(min=0))
        if self.attr_emb is not None and attributes is not None:
            count = (attributes > 0).sum(-1, keepdim=True).clamp(min=1)
            x = x + self.attr_emb(attributes).sum(-2) / count      # padding_idx rows are zero
        return x * math.sqrt(self.cfg.d_model)

    def encode(self, codes: torch.Tensor, valid: torch.Tensor, content: torch.Tensor | None = None,
               item_ids: torch.Tensor | None = None, attributes: torch.Tensor | None = None) -> torch.Tensor:
        """Left-padded history (b, t, D) with mask valid (b, t) -> hidden states (b, t, d).

        Position t's state summarises items 0..t and predicts item t+1.
        """
        return self.encode_tokens(self.item_tokens(codes, content, item_ids, attributes), valid)

    def encode_tokens(self, x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """Item input vectors (b, t, d) (``item_tokens``) with mask valid (b, t) -> hidden states (b, t, d).

        The ONNX encoder calls this too, on rows of a precomputed item table.
        """
        t = x.shape[1]
        x = self.drop(x * valid.unsqueeze(-1) + self.pos_emb.weight[-t:])  # left padding: last item at last position
        pos = torch.arange(t, device=x.device)
        causal = pos[None, :] <= pos[:, None]                               # (t, t) key <= query
        itself = pos[None, :] == pos[:, None]                               # built from aranges: ONNX-friendly
        # Attend to real items only; a padded query may attend to itself so no row is empty (no NaN).
        mask = (causal & (valid.unsqueeze(1) | itself)).unsqueeze(1)      # (b, 1, t, t), broadcast over heads
        for block in self.blocks:
            x = block(x, mask)
        return self.ln_f(x)

    def teacher_forced(self, codes, valid, target_codes, select, content=None, item_ids=None, attributes=None
                       ) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Teacher-forced per-level logits at the positions where ``select`` (b, t) is set: [(n, K_d)],
        and the hidden states (n, d) they came from (the optional item-level loss scores those).

        The code head runs only on selected (real, non-padding) positions: most of a
        left-padded window is padding, and the head is the costly part per position.
        """
        h = self.encode(codes, valid, content, item_ids, attributes)[select]   # (n, d)
        return self.head.teacher_forced(h, target_codes[select]), h

    def forward(self, codes, valid, target_codes, select, content=None, item_ids=None, attributes=None
                ) -> list[torch.Tensor]:
        """The per-level logits of ``teacher_forced``."""
        return self.teacher_forced(codes, valid, target_codes, select, content, item_ids, attributes)[0]

    def last_state(self, codes, valid, content=None, item_ids=None, attributes=None) -> torch.Tensor:
        """The decoding state for the next item after each history: (b, d)."""
        return self.encode(codes, valid, content, item_ids, attributes)[:, -1]
