"""A tiny random CausalSID with odd sizes (37 items, codebooks 5/7/11/3) for the export and server tests."""

from __future__ import annotations

import numpy as np

LEVELS = (5, 7, 11, 3)   # odd codebook sizes: a transposed or offset level index fails loudly
N_ITEMS = 37
MAX_ITEMS = 6            # short window so histories longer than max_items are cheap to test
WEIGHT_STD = 0.5         # larger than the training init (0.02) so log-probs are peaked and top-k has no near-ties


def item_codes(seed: int = 0) -> np.ndarray:
    """N_ITEMS distinct code tuples (N, D), drawn uniformly per level."""
    rng = np.random.default_rng(seed)
    seen: list[tuple[int, ...]] = []
    while len(seen) < N_ITEMS:
        t = tuple(int(rng.integers(k)) for k in LEVELS)
        if t not in seen:
            seen.append(t)
    return np.array(seen, dtype=np.int64)


N_ATTRIBUTES = 5


def item_attributes(seed: int = 0) -> np.ndarray:
    """(N_ITEMS, 3) attribute ids in 1..N_ATTRIBUTES, right-padded with 0; item 0 has none."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(1, N_ATTRIBUTES + 1, size=(N_ITEMS, 3))
    ids[np.arange(3)[None, :] >= rng.integers(1, 4, size=N_ITEMS)[:, None]] = 0
    ids[0] = 0
    return ids


def source_ids() -> list[str]:
    return [f"SKU-{i:03d}" for i in range(N_ITEMS)]


def titles() -> list[str | None]:
    return [None if i == 7 else f"Product {i}" for i in range(N_ITEMS)]   # item 7 has no title


def tiny_module(arch: str = "causal", seed: int = 0, content_dim: int = 0, item_id_embedding: bool = False,
                n_user_buckets: int = 0, head: str = "autoregressive", item_loss_weight: float = 0.0,
                item_output: str = "token", attributes: bool = False, item_logit_weight: float = 1.0):
    import torch

    from genrec.lit.data import ModelDims
    from genrec.lit.module import GenRecModule

    torch.manual_seed(seed)
    dims = ModelDims(LEVELS, N_ITEMS, content_dim, "test", max_items=MAX_ITEMS,
                     n_attributes=N_ATTRIBUTES if attributes else 0, attributes_per_item=3 if attributes else 0)
    m = GenRecModule(dims=dims, arch=arch, d_model=24, n_layers=2,
                     n_heads=2, d_ff=37, dropout=0.0, tiger_layers=2, tiger_heads=2,
                     tiger_d_ff=37, item_id_embedding=item_id_embedding, n_user_buckets=n_user_buckets, head=head,
                     item_loss_weight=item_loss_weight, item_output=item_output,
                     item_logit_weight=item_logit_weight)
    m.item_codes.copy_(torch.as_tensor(item_codes()))
    with torch.no_grad():
        for p in m.model.parameters():
            p.normal_(0.0, WEIGHT_STD)
        if content_dim:
            m.genrec.content.copy_(torch.randn(N_ITEMS, content_dim))
        if attributes:
            m.model.attr_emb.weight[0] = 0.0                     # the padding row, as training keeps it
            m.genrec.item_attributes.copy_(torch.as_tensor(item_attributes()))
    return m.eval()
