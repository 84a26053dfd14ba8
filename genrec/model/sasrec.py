"""SASRec (Kang & McAuley, ICDM 2018): causal self-attention over a user's item ids.

The item embedding table is shared between input and output: the score of item ``i`` after
position ``t`` is ``hidden[t] · E[i]``. Its rows (``item_embeddings()``) are genrec's
collaborative item features, and the same model is the baseline of every results table.

Sequences are right-padded with ``pad_id = n_items``. By default positions count from the first
item of the window (GPT style). With causal attention, the hidden state at position ``t`` is then
exactly what the model computes for the history ``seq[:t+1]`` on its own, so training every
position and scoring from the last real position of a history are the same computation.
``positions="from_end"`` counts them back from the window's newest item instead, as the original
SASRec's left padding does: the newest item always has position 0. That is exact for a window
scored at its end only (prefix examples); a window trained at every position sees the intermediate
targets' items shifted, as in the original.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, get_args

import torch
import torch.nn as nn
import torch.nn.functional as F


class CausalSelfAttention(nn.Module):
    def __init__(self, config: SASRecConfig):
        super().__init__()
        self.n_heads = config.n_heads
        self.qkv = nn.Linear(config.d_model, 3 * config.d_model)
        self.proj = nn.Linear(config.d_model, config.d_model)
        self.attn_dropout = config.dropout
        self.resid_dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(x).split(d, dim=2)  # each (b, t, d)
        # (b, n_heads, t, d / n_heads)
        q, k, v = (z.view(b, t, self.n_heads, d // self.n_heads).transpose(1, 2) for z in (q, k, v))
        # Right padding means a real position never attends to a later pad, so causality alone suffices.
        y = F.scaled_dot_product_attention(
            q, k, v, is_causal=True, dropout_p=self.attn_dropout if self.training else 0.0
        )  # (b, n_heads, t, d / n_heads)
        y = y.transpose(1, 2).contiguous().view(b, t, d)
        return self.resid_dropout(self.proj(y))


class FeedForward(nn.Module):
    def __init__(self, config: SASRecConfig):
        super().__init__()
        self.fc = nn.Linear(config.d_model, config.ffn_mult * config.d_model)
        self.proj = nn.Linear(config.ffn_mult * config.d_model, config.d_model)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.proj(F.gelu(self.fc(x))))


class Block(nn.Module):
    """Pre-LN transformer block: x + attn(ln(x)), then x + ffn(ln(x))."""

    def __init__(self, config: SASRecConfig):
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.d_model)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = nn.LayerNorm(config.d_model)
        self.ffn = FeedForward(config)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.ffn(self.ln_2(x))


Positions = Literal["from_start", "from_end"]
POSITIONS = get_args(Positions)


@dataclass
class SASRecConfig:
    n_items: int             # catalogue size; item ids are 0..n_items-1 and n_items is the padding id
    max_len: int = 50        # longest input window (rows of the learned position table)
    d_model: int = 64        # embedding and hidden width
    n_layers: int = 2        # transformer blocks
    n_heads: int = 1         # attention heads; must divide d_model
    ffn_mult: int = 1        # feed-forward width = ffn_mult * d_model (the original SASRec uses 1)
    dropout: float = 0.2     # on embeddings, attention weights and residual branches
    init_std: float = 0.02   # std of the normal init of embeddings and linear weights
    positions: Positions = "from_start"  # "from_start": 0 at the window's first item; "from_end": 0 at its newest

    def __post_init__(self) -> None:
        for name in ("n_items", "max_len", "d_model", "n_layers", "n_heads", "ffn_mult"):
            if getattr(self, name) < 1:
                raise ValueError(f"SASRecConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.d_model % self.n_heads:
            raise ValueError(
                f"SASRecConfig.d_model ({self.d_model}) must be divisible by n_heads ({self.n_heads}); "
                "change one of them."
            )
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"SASRecConfig.dropout must be in [0, 1), got {self.dropout}")
        if self.init_std <= 0:
            raise ValueError(f"SASRecConfig.init_std must be > 0, got {self.init_std}")
        if self.positions not in POSITIONS:
            raise ValueError(f"SASRecConfig.positions must be one of {POSITIONS}, got {self.positions!r}")

    @property
    def pad_id(self) -> int:
        return self.n_items


class SASRec(nn.Module):
    def __init__(self, config: SASRecConfig):
        super().__init__()
        self.config = config
        self.item_emb = nn.Embedding(config.n_items + 1, config.d_model, padding_idx=config.pad_id)
        self.pos_emb = nn.Embedding(config.max_len, config.d_model)
        self.emb_dropout = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.n_layers))
        self.ln_f = nn.LayerNorm(config.d_model)
        self.apply(self._init_weights)

    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=self.config.init_std)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)
        if isinstance(module, nn.Embedding) and module.padding_idx is not None:
            with torch.no_grad():
                module.weight[module.padding_idx].zero_()

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Hidden states (b, t, d_model) for right-padded item ids (b, t), t <= max_len."""
        b, t = input_ids.shape
        if t > self.config.max_len:
            raise ValueError(
                f"input has {t} positions but SASRecConfig.max_len is {self.config.max_len}; "
                "truncate histories to their last max_len items."
            )
        pos = torch.arange(t, device=input_ids.device)  # (t,)
        if self.config.positions == "from_end":   # distance from each row's newest item; pads clamp to 0
            lengths = (input_ids != self.config.pad_id).sum(dim=1, keepdim=True)  # (b, 1)
            pos = (lengths - 1 - pos).clamp(min=0)  # (b, t)
        # sqrt(d) scaling as in the original SASRec keeps item signal above the position signal.
        x = self.item_emb(input_ids) * math.sqrt(self.config.d_model) + self.pos_emb(pos)  # (b, t, d)
        x = self.emb_dropout(x)
        for block in self.blocks:
            x = block(x)
        return self.ln_f(x)

    def item_embeddings(self) -> torch.Tensor:
        """The shared item table without the padding row: (n_items, d_model)."""
        return self.item_emb.weight[: self.config.n_items]

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Scores over the whole catalogue: (..., d_model) -> (..., n_items)."""
        return hidden @ self.item_embeddings().T

    def score_last(self, histories_padded: torch.Tensor) -> torch.Tensor:
        """Full-catalogue scores (b, n_items) from the last real position of each right-padded history (b, t).

        Every row needs at least one real item; the padding must be at the end only.
        """
        lengths = (histories_padded != self.config.pad_id).sum(dim=1)  # (b,)
        if bool((lengths == 0).any()):
            raise ValueError("score_last got an empty history; drop users without history before scoring.")
        hidden = self(histories_padded)  # (b, t, d)
        last = hidden[torch.arange(hidden.shape[0], device=hidden.device), lengths - 1]  # (b, d)
        return self.logits(last)
