"""Token layout: where each semantic-ID level lives in one shared vocabulary.

Derived from the `sid/` manifest (level sizes), never passed by hand:

  0                      pad
  1                      bos / decoder start
  2                      eos
  3 .. 3+K_0-1           level-0 codes
  ...                    level-d codes at offsets[d] .. offsets[d]+K_d-1
  then                   optional user buckets (TIGER hashes users into a fixed number of tokens)
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

PAD, BOS, EOS = 0, 1, 2
N_SPECIAL = 3


@dataclass(frozen=True)
class TokenLayout:
    level_sizes: tuple[int, ...]   # codes per level, including the dedup level
    n_user_buckets: int = 0        # 0 = no user tokens
    offsets: tuple[int, ...] = field(init=False)

    def __post_init__(self):
        sizes = tuple(int(k) for k in self.level_sizes)
        if not sizes or min(sizes) < 1:
            raise ValueError(f"level_sizes must be positive, got {self.level_sizes}")
        if self.n_user_buckets < 0:
            raise ValueError("n_user_buckets must be >= 0")
        object.__setattr__(self, "level_sizes", sizes)
        object.__setattr__(self, "offsets",
                           tuple(int(x) for x in N_SPECIAL + np.concatenate([[0], np.cumsum(sizes)[:-1]])))

    @property
    def n_levels(self) -> int:
        return len(self.level_sizes)

    @property
    def user_offset(self) -> int:
        return N_SPECIAL + sum(self.level_sizes)

    @property
    def vocab_size(self) -> int:
        return self.user_offset + self.n_user_buckets

    def to_tokens(self, codes: np.ndarray) -> np.ndarray:
        """(..., D) level-local codes -> global token ids."""
        return np.asarray(codes) + np.asarray(self.offsets)

    def user_token(self, user_ids: np.ndarray) -> np.ndarray:
        if not self.n_user_buckets:
            raise ValueError("this layout has no user tokens (n_user_buckets=0)")
        # Knuth multiplicative hash: spreads consecutive ids over buckets deterministically.
        return self.user_offset + (np.asarray(user_ids, dtype=np.uint64) * np.uint64(2654435761)
                                   % np.uint64(2**32)) % self.n_user_buckets

    def to_dict(self) -> dict:
        return {"level_sizes": list(self.level_sizes), "n_user_buckets": self.n_user_buckets}
