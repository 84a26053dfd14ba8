"""The optimiser both Lightning modules use: AdamW, with a lazy sparse update for large item tables.

A dense AdamW step reads and writes every row of an item-id table (weights, two moments and the
gradient), so at 10^6 items it costs more than the whole Transformer step, although a batch touches
a few thousand rows. With ``sparse`` parameters (an ``nn.Embedding(sparse=True)`` table whose every
use in training is a lookup) those go to torch's ``SparseAdam``, which updates only the rows a batch
read: the step's cost follows the batch, not the catalogue. SparseAdam is "lazy" Adam: rows a batch
did not touch keep their moments and do not move, and it applies no weight decay.
"""

from __future__ import annotations

import torch

# Item tables of at least this many rows train sparse under "auto" (every bench catalogue is below it,
# so their results keep the dense update they were measured with).
SPARSE_ITEMS_FROM = 100_000
ITEM_GRADS = ("auto", "dense", "sparse")


def sparse_item_grad(mode: str, n_items: int) -> bool:
    """Whether an item table of ``n_items`` rows trains with sparse gradients under ``mode`` (ITEM_GRADS)."""
    if mode not in ITEM_GRADS:
        raise ValueError(f"item_id_grad must be one of {ITEM_GRADS}, got {mode!r}")
    return mode == "sparse" or (mode == "auto" and n_items >= SPARSE_ITEMS_FROM)


class AdamWSparse(torch.optim.Optimizer):
    """AdamW on the dense parameter groups and torch's SparseAdam on the groups marked ``"sparse": True``.

    One optimiser object for Lightning's automatic optimisation and one LR scheduler: ``param_groups``
    are the two inner optimisers' own group dicts, so a scheduler's lr changes reach both.
    """

    def __init__(self, groups: list[dict], lr: float, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8):
        dense = [{k: v for k, v in g.items() if k != "sparse"} for g in groups if not g.get("sparse")]
        sparse = [{k: v for k, v in g.items() if k not in ("sparse", "weight_decay")}
                  for g in groups if g.get("sparse")]
        if any(g.get("weight_decay") for g in groups if g.get("sparse")):
            raise ValueError("sparse parameter groups take no weight decay (SparseAdam has none); set it to 0")
        self.dense = torch.optim.AdamW(dense, lr=lr, betas=betas, eps=eps) if dense else None
        self.sparse = torch.optim.SparseAdam([p for g in sparse for p in g["params"]], lr=lr, betas=betas, eps=eps) \
            if sparse else None
        self._inner = [o for o in (self.dense, self.sparse) if o is not None]
        super().__init__([p for o in self._inner for g in o.param_groups for p in g["params"]], {"lr": lr})
        self.param_groups = [g for o in self._inner for g in o.param_groups]

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for opt in self._inner:
            opt.step()
        return loss

    def state_dict(self) -> dict:
        return {"dense": self.dense.state_dict() if self.dense else None,
                "sparse": self.sparse.state_dict() if self.sparse else None}

    def load_state_dict(self, state: dict) -> None:
        if set(state) != {"dense", "sparse"} or (state["sparse"] is None) != (self.sparse is None):
            raise ValueError("this optimiser state was saved with another item_id_grad setting (dense and sparse item "
                             "tables keep different optimiser states); resume with the setting it was trained with")
        for name in ("dense", "sparse"):
            if state[name] is not None:
                getattr(self, name).load_state_dict(state[name])
