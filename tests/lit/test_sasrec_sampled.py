"""SASRec's sampled softmax (loss="sampled"): the loss by hand, collision masking, the popularity sampler."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from genrec.lit.sasrec import (
    DEFAULT_SAMPLED_NEGATIVES,
    LitSASRec,
    PopularitySampler,
    SASRecDataModule,
    SASRecTrainConfig,
    sampled_softmax_loss,
)

N_ITEMS, D, N = 37, 5, 23     # odd sizes: a transposed or offset index fails loudly


def batch(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(N, D, generator=g, dtype=torch.float64)
    table = torch.randn(N_ITEMS, D, generator=g, dtype=torch.float64)
    targets = torch.randint(0, 11, (N,), generator=g)    # few distinct targets: many repeats within the batch
    return hidden, targets, table


def test_every_item_as_negative_without_logq_is_the_full_softmax():
    hidden, targets, table = batch()
    assert len(torch.unique(targets)) < N             # repeated targets are part of the check
    full = F.cross_entropy(hidden @ table.T, targets)
    for negatives in (torch.arange(N_ITEMS), torch.arange(N_ITEMS).flip(0)):
        torch.testing.assert_close(sampled_softmax_loss(hidden, targets, table, negatives), full)


def test_a_negative_equal_to_the_target_is_not_a_negative():
    hidden = torch.tensor([[1.0, 0.5]], dtype=torch.float64)
    table = torch.tensor([[0.3, -1.0], [2.0, 1.0], [-0.5, 0.2]], dtype=torch.float64)
    s = (hidden @ table.T)[0]                            # scores of items 0, 1, 2
    loss = sampled_softmax_loss(hidden, torch.tensor([1]), table, torch.tensor([1, 0, 1, 1]))
    # by hand: the target (item 1) against item 0 only; the three copies of item 1 among the negatives are masked
    expected = -(s[1] - torch.logsumexp(torch.stack([s[1], s[0]]), 0))
    torch.testing.assert_close(loss, expected)
    # negatives that are other rows' targets are masked too: each item enters a softmax once
    hidden2, targets2 = hidden.repeat(2, 1), torch.tensor([1, 2])
    masked = sampled_softmax_loss(hidden2, targets2, table, torch.tensor([0, 2, 1, 0]))
    torch.testing.assert_close(masked, sampled_softmax_loss(hidden2, targets2, table, torch.tensor([0, 0])))


def test_logq_correction_subtracts_the_log_expected_count_from_every_candidate():
    hidden, targets, table = batch(seed=1)
    negatives = torch.tensor([30, 12, 30, 36, 1])
    log_q = torch.linspace(-3.0, 2.0, N_ITEMS, dtype=torch.float64)
    loss = sampled_softmax_loss(hidden, targets, table, negatives, log_q=lambda ids: log_q[ids])
    # by hand: candidates are the distinct targets, then the negatives not among the targets (repeats kept)
    distinct = sorted(set(targets.tolist()))
    candidates = distinct + [i for i in negatives.tolist() if i not in distinct]
    logits = hidden @ table[candidates].T - log_q[candidates]
    expected = F.cross_entropy(logits, torch.tensor([distinct.index(t) for t in targets.tolist()]))
    torch.testing.assert_close(loss, expected)


def test_only_candidate_rows_get_gradient():
    """The step touches the batch's candidates, not the catalogue: cost does not grow with n_items."""
    hidden, targets, table = batch(seed=2)
    table = table.clone().requires_grad_(True)
    negatives = torch.tensor([20, 25, 20])
    sampled_softmax_loss(hidden, targets, table, negatives).backward()
    touched = set(torch.nonzero(table.grad.abs().sum(1)).flatten().tolist())
    assert touched == set(targets.tolist()) | {20, 25}


def test_sampler_follows_count_to_the_alpha():
    counts = np.array([0, 1, 4, 9, 0, 16, 100, 25, 3, 0, 49], dtype=np.int64)
    n_draws = 200_000
    for alpha in (0.5, 1.0, 0.0):
        sampler = PopularitySampler(counts, alpha)
        draws = sampler.sample(n_draws, generator=torch.Generator().manual_seed(7)).numpy()
        freq = np.bincount(draws, minlength=len(counts)) / n_draws
        weights = np.where(counts > 0, counts.astype(float) ** alpha, 0.0)
        expected = weights / weights.sum()
        assert freq[counts == 0].sum() == 0            # an item never in training is never drawn
        sigma = np.sqrt(expected * (1 - expected) / n_draws)
        assert np.all(np.abs(freq - expected) <= 6 * sigma + 1e-9), (alpha, freq, expected)
    # alpha=0.5 by hand: weights 1, 2, 3, 4, 10, 5, sqrt(3), 7 over the seen items
    p = PopularitySampler(counts, 0.5).p_negative.numpy()
    assert p[6] / p[1] == pytest.approx(10.0) and p[10] / p[2] == pytest.approx(3.5)


def test_log_expected_count_by_hand():
    sampler = PopularitySampler(np.array([1, 3, 0, 12]), alpha=0.5)
    # item 3: 8 targets x 12/16 + 5 draws x sqrt(12) / (1 + sqrt(3) + sqrt(12))
    got = sampler.log_expected_count(torch.tensor([3]), n_targets=8, n_negatives=5)
    want = math.log(8 * 12 / 16 + 5 * math.sqrt(12) / (1 + math.sqrt(3) + math.sqrt(12)))
    assert got.item() == pytest.approx(want, rel=1e-6)


def test_config_resolves_the_negatives_per_loss():
    assert SASRecTrainConfig().n_negatives == 1 and SASRecTrainConfig().loss == "ce"
    assert SASRecTrainConfig(loss="sampled").n_negatives == DEFAULT_SAMPLED_NEGATIVES
    assert SASRecTrainConfig(loss="sampled", n_negatives=7).n_negatives == 7
    with pytest.raises(ValueError, match="sample_alpha"):
        SASRecTrainConfig(loss="sampled", sample_alpha=-0.5)
    with pytest.raises(ValueError, match="item_counts"):
        LitSASRec(SASRecTrainConfig(loss="sampled", d_model=8), n_items=N_ITEMS)


@pytest.mark.filterwarnings("ignore:You are trying to `self.log\\(\\)`")   # a step outside a Trainer
def test_sampled_loss_trains_on_the_same_windows_with_training_counts():
    rng = np.random.default_rng(3)
    train = [rng.integers(0, N_ITEMS - 4, rng.integers(1, 13)) for _ in range(61)]   # items 33..36 never in train
    split = SimpleNamespace(train=train, valid=None)
    base = dict(d_model=8, n_layers=1, n_heads=2, train_max_len=6, batch_size=16, seed=7, progress_bar=False)
    ce = SASRecDataModule(split, N_ITEMS, SASRecTrainConfig(**base))
    sampled = SASRecDataModule(split, N_ITEMS, SASRecTrainConfig(**base, loss="sampled", n_negatives=5))
    for a, b in zip(ce.train_dataloader(), sampled.train_dataloader(), strict=True):
        assert all(torch.equal(x, y) for x, y in zip(a, b))
    # popularity counts read the training prefixes only
    np.testing.assert_array_equal(sampled.item_counts, np.bincount(np.concatenate(train), minlength=N_ITEMS))
    module = LitSASRec(sampled.config, N_ITEMS, item_counts=sampled.item_counts)
    loss = module.training_step(next(iter(sampled.train_dataloader())), 0)
    assert torch.isfinite(loss) and loss.requires_grad


def test_sparse_lookup_gives_the_same_loss_and_gradient_rows():
    hidden, targets, table = batch(seed=4)
    negatives = torch.tensor([20, 25, 20, 3])
    dense_table, sparse_table = table.clone().requires_grad_(True), table.clone().requires_grad_(True)
    dense = sampled_softmax_loss(hidden, targets, dense_table, negatives)
    sparse = sampled_softmax_loss(hidden, targets, sparse_table, negatives, sparse=True)
    torch.testing.assert_close(sparse, dense)
    dense.backward(), sparse.backward()
    assert sparse_table.grad.is_sparse
    torch.testing.assert_close(sparse_table.grad.to_dense(), dense_table.grad)


@pytest.mark.filterwarnings("ignore:You are trying to `self.log\\(\\)`")   # a step outside a Trainer
@pytest.mark.parametrize("loss", ["sampled", "bce"])
def test_sparse_item_table_steps_only_the_rows_a_batch_read(loss):
    from genrec.lit.optim import AdamWSparse

    with pytest.raises(ValueError, match="item_grad"):
        SASRecTrainConfig(item_grad="sparse")                            # ce reads every row
    rng = np.random.default_rng(5)
    split = SimpleNamespace(train=[rng.integers(0, 20, 8) for _ in range(30)], valid=None)   # items >= 20 unread
    cfg = SASRecTrainConfig(d_model=8, n_layers=1, n_heads=2, train_max_len=6, batch_size=16, loss=loss,
                            n_negatives=3, item_grad="sparse", progress_bar=False)
    data = SASRecDataModule(split, N_ITEMS, cfg)
    module = LitSASRec(cfg, N_ITEMS, item_counts=data.item_counts)
    opt = module.configure_optimizers()
    assert isinstance(opt, AdamWSparse) and opt.sparse.param_groups[0]["params"] == [module.model.item_emb.weight]
    assert not LitSASRec(SASRecTrainConfig(d_model=8, loss=loss, n_negatives=3), N_ITEMS,
                         item_counts=data.item_counts).sparse_items      # "auto": dense below SPARSE_ITEMS_FROM
    before = module.model.item_emb.weight.detach().clone()
    inputs, targets = next(iter(data.train_dataloader()))
    module.training_step((inputs, targets), 0).backward()
    grad = module.model.item_emb.weight.grad
    assert grad.is_sparse
    read = set(grad.coalesce().indices()[0].tolist())
    opt.step()
    moved = set(torch.nonzero((module.model.item_emb.weight.detach() - before).abs().sum(1)).flatten().tolist())
    assert moved and moved <= read and N_ITEMS not in moved              # the padding row stays zero
    if loss == "sampled":        # inputs, targets and popularity-drawn negatives are all training items
        assert read - {N_ITEMS} <= set(range(20))
