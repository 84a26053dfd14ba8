"""TIGER's reference architecture: a T5 encoder-decoder over semantic-ID tokens.

The encoder reads the last ``max_items`` history items as code tokens (D tokens per item,
optionally preceded by a hashed user token); the decoder generates the D codes of the next
item. Kept because it is what the papers compare against; CausalSID is the fast default.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from transformers import T5Config, T5ForConditionalGeneration

from genrec.model.layout import BOS, EOS, PAD, TokenLayout


@dataclass
class TigerConfig:
    level_sizes: tuple[int, ...] = (256, 256, 256, 8)  # codes per level (from sid/)
    n_user_buckets: int = 0      # hashed user tokens prepended to the encoder input (TIGER uses 2000)
    max_items: int = 20          # history items the encoder reads
    d_model: int = 128           # T5 d_model
    d_kv: int = 64               # per-head size
    d_ff: int = 1024             # feed-forward size
    n_layers: int = 4            # encoder layers
    n_decoder_layers: int = 4    # decoder layers
    n_heads: int = 6             # attention heads
    dropout: float = 0.1         # T5 dropout_rate

    def __post_init__(self):
        self.level_sizes = tuple(int(k) for k in self.level_sizes)

    @property
    def layout(self) -> TokenLayout:
        return TokenLayout(self.level_sizes, self.n_user_buckets)


class Tiger(nn.Module):
    def __init__(self, cfg: TigerConfig):
        super().__init__()
        self.cfg = cfg
        self.layout = cfg.layout
        self.t5 = T5ForConditionalGeneration(T5Config(
            vocab_size=self.layout.vocab_size, d_model=cfg.d_model, d_kv=cfg.d_kv, d_ff=cfg.d_ff,
            num_layers=cfg.n_layers, num_decoder_layers=cfg.n_decoder_layers, num_heads=cfg.n_heads,
            dropout_rate=cfg.dropout, feed_forward_proj="relu", pad_token_id=PAD, eos_token_id=EOS,
            decoder_start_token_id=BOS, tie_word_embeddings=False,
        ))

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                target_tokens: torch.Tensor) -> torch.Tensor:
        """input_ids (b, s) encoder tokens; target_tokens (b, D) global code tokens -> logits (b, D, V)."""
        decoder_input = torch.cat([torch.full_like(target_tokens[:, :1], BOS), target_tokens[:, :-1]], dim=1)
        out = self.t5(input_ids=input_ids, attention_mask=attention_mask, decoder_input_ids=decoder_input)
        return out.logits

    def level_logits(self, logits: torch.Tensor, level: int) -> torch.Tensor:
        """Slice of the vocabulary that holds level ``level``'s codes: (..., V) -> (..., K_level)."""
        lo = self.layout.offsets[level]
        return logits[..., lo: lo + self.layout.level_sizes[level]]
