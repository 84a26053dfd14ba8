"""AdamWSparse: the sparse item-id update equals dense AdamW where they must agree, and stays lazy elsewhere."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from genrec.lit.data import ModelDims
from genrec.lit.module import GenRecModule
from genrec.lit.optim import SPARSE_ITEMS_FROM, AdamWSparse, sparse_item_grad

LEVELS = (5, 7, 3)
N_ITEMS = 12


def _module(item_id_grad: str) -> GenRecModule:
    torch.manual_seed(0)
    m = GenRecModule(dims=ModelDims(LEVELS, N_ITEMS, 0, "test", max_items=13), d_model=16, n_layers=1, n_heads=2,
                     d_ff=32, dropout=0.0, item_id_embedding=True, item_id_grad=item_id_grad, warmup_steps=2,
                     lr=0.01, weight_decay=0.1)
    rng = np.random.default_rng(0)
    codes = np.stack([rng.permutation(N_ITEMS) % k for k in LEVELS], 1)
    codes[:, 0] = np.arange(N_ITEMS) % LEVELS[0]
    m.item_codes.copy_(torch.as_tensor(codes))
    m.targets_per_batch = 8.0
    return m.train()


def _fit(m: GenRecModule, windows: list[torch.Tensor], cfg: dict | None = None) -> dict:
    """A few automatic-optimisation steps as Lightning runs them: step(closure), zero_grad, scheduler.step()."""
    cfg = cfg or m.configure_optimizers()
    opt, sched = cfg["optimizer"], cfg["lr_scheduler"]["scheduler"]
    for w in windows:
        def closure(w=w):
            loss = m.training_step((w,), 0)
            loss.backward()
            return loss
        opt.step(closure)
        opt.zero_grad()
        sched.step()
    return cfg


def _params(m: GenRecModule) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in m.named_parameters()}


def _full_windows(steps: int) -> list[torch.Tensor]:
    """Every item sits in every batch's history, so every row of the item table gets a gradient each step."""
    g = torch.Generator().manual_seed(1)
    return [torch.stack([torch.randperm(N_ITEMS, generator=g) for _ in range(3)]) for _ in range(steps)]


def test_auto_is_sparse_only_for_large_catalogues():
    assert not sparse_item_grad("auto", SPARSE_ITEMS_FROM - 1) and sparse_item_grad("auto", SPARSE_ITEMS_FROM)
    assert sparse_item_grad("sparse", 10) and not sparse_item_grad("dense", 10**7)
    with pytest.raises(ValueError, match="item_id_grad"):
        sparse_item_grad("lazy", 10)
    with pytest.raises(ValueError, match="item_id_grad"):
        _module("lazy")


def _toy_fit(sparse: bool, steps: int = 5) -> list[torch.Tensor]:
    """An item table and a dense layer, every row read every step, under a warmup schedule."""
    torch.manual_seed(0)
    emb, lin = torch.nn.Embedding(6, 4, sparse=sparse).double(), torch.nn.Linear(4, 3).double()
    groups = [{"params": [lin.weight], "weight_decay": 0.1}, {"params": [lin.bias], "weight_decay": 0.0}]
    # eps placement differs (SparseAdam adds it before the bias correction): a tiny eps makes both exact Adam
    if sparse:
        opt = AdamWSparse([*groups, {"params": [emb.weight], "sparse": True}], lr=0.05, eps=1e-14)
    else:
        opt = torch.optim.AdamW([*groups, {"params": [emb.weight], "weight_decay": 0.0}], lr=0.05, eps=1e-14)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: (step + 1) / steps)
    g = torch.Generator().manual_seed(1)
    for _ in range(steps):
        ids = torch.cat([torch.randperm(6, generator=g), torch.randint(6, (5,), generator=g)])
        opt.step(lambda ids=ids: lin(emb(ids)).pow(2).sum().backward())
        opt.zero_grad()
        sched.step()
    return [emb.weight.detach(), lin.weight.detach(), lin.bias.detach()]


def test_sparse_equals_dense_adamw_when_every_row_is_read():
    """Lazy Adam is Adam on the rows a batch read: with every row read every step the two agree, through
    a changing learning rate (the scheduler's lr must reach both inner optimisers)."""
    for a, b in zip(_toy_fit(True), _toy_fit(False)):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)


def test_module_puts_only_the_item_table_in_the_sparse_group():
    sparse, dense = _module("sparse"), _module("dense")
    assert sparse.model.item_emb.sparse and not dense.model.item_emb.sparse
    opt = sparse.configure_optimizers()["optimizer"]
    assert isinstance(opt, AdamWSparse) and isinstance(dense.configure_optimizers()["optimizer"], torch.optim.AdamW)
    assert opt.sparse.param_groups[0]["params"] == [sparse.model.item_emb.weight]
    in_dense = {id(p) for g in opt.dense.param_groups for p in g["params"]}
    assert in_dense == {id(p) for p in sparse.parameters()} - {id(sparse.model.item_emb.weight)}
    assert not sparse_item_grad("auto", N_ITEMS) and not _module("auto").model.item_emb.sparse


def test_sparse_update_leaves_rows_no_batch_read():
    m = _module("sparse")
    before = m.model.item_emb.weight.detach().clone()
    read = torch.tensor([[0, 1, 2, 3, 4]])
    _fit(m, [read, read])
    after = m.model.item_emb.weight.detach()
    assert torch.equal(after[5:], before[5:])                       # never read: untouched, no momentum drift
    assert not torch.equal(after[:4], before[:4])                   # the history rows moved (4 is only a target)


def test_state_dict_resumes_the_same_trajectory():
    windows = _full_windows(4)
    straight = _module("sparse")
    _fit(straight, windows)
    first = _module("sparse")
    cfg = _fit(first, windows[:2])
    opt_state, sched_state = cfg["optimizer"].state_dict(), cfg["lr_scheduler"]["scheduler"].state_dict()
    assert set(opt_state) == {"dense", "sparse"} and opt_state["sparse"]["state"]
    resumed = _module("sparse")                     # a fresh module and optimiser, loaded from the half-way state
    resumed.load_state_dict(first.state_dict())
    new = resumed.configure_optimizers()
    new["optimizer"].load_state_dict(opt_state)
    new["lr_scheduler"]["scheduler"].load_state_dict(sched_state)
    _fit(resumed, windows[2:], new)
    want = _params(straight)
    for name, p in _params(resumed).items():
        torch.testing.assert_close(p, want[name], rtol=1e-5, atol=1e-6, msg=name)
    with pytest.raises(ValueError, match="item_id_grad"):
        new["optimizer"].load_state_dict(torch.optim.AdamW([torch.zeros(1, requires_grad=True)]).state_dict())


def test_sparse_groups_refuse_weight_decay():
    p = torch.nn.Parameter(torch.zeros(3, 2))
    with pytest.raises(ValueError, match="weight decay"):
        AdamWSparse([{"params": [p], "sparse": True, "weight_decay": 0.1}], lr=0.1)
