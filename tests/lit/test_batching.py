"""The shared training toolkit gives each caller exactly what its own copy used to give.

genrec and SASRec each had their own windows, length-bucket sampler and user subset. The copies below
are those implementations as they were (the code that produced bench/results), kept as references:
for fixed seeds, the shared code with each caller's parameters yields the same windows, the same
batch lists epoch after epoch, and the same users.
"""

from __future__ import annotations

from dataclasses import replace
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from genrec.data.split import EvalExamples, left_pad
from genrec.evaluate import subset
from genrec.lit.batching import LengthBucketBatchSampler, causal_windows, next_item_windows, user_subset
from genrec.lit.data import SIDDataModule
from genrec.lit.sasrec import SASRecDataModule, SASRecTrainConfig, TrainWindows

EPOCHS = 4


# --------------------------------------------------------------------------- the former implementations


def old_causal_windows(train, max_items):                      # genrec.lit.data.causal_windows
    rows = []
    for seq in train:
        end = len(seq)
        while end >= 2:
            rows.append(seq[max(0, end - max_items - 1): end])
            end -= max_items
    return left_pad(rows, max_items + 1)


class OldTrainWindows:                                         # genrec.lit.sasrec.TrainWindows
    def __init__(self, train, max_len):
        self.windows = []
        self.n_skipped_users = 0
        for seq in train:
            seq = np.asarray(seq, dtype=np.int64)
            if len(seq) < 2:
                self.n_skipped_users += 1
                continue
            end = len(seq)
            while end >= 2:
                start = max(0, end - max_len - 1)
                self.windows.append(seq[start:end])
                end = start + 1
        self.n_transitions = int(sum(len(w) - 1 for w in self.windows))


class OldLengthBucketBatchSampler:                             # genrec.lit.data.LengthBucketBatchSampler
    def __init__(self, lengths, batch_size, seed=0, pool_batches=50, rank=0, world_size=1, bucket=True):
        self.lengths = np.asarray(lengths)
        self.batch_size = batch_size
        self.seed = seed
        self.bucket = bucket
        self.pool = batch_size * pool_batches
        self.epoch = 0
        self.rank, self.world_size = rank, world_size

    def _n_batches(self):
        return -(-len(self.lengths) // self.batch_size) if len(self.lengths) else 0

    def __len__(self):
        return self._n_batches() // self.world_size

    def __iter__(self):
        rng = np.random.default_rng([self.seed, self.epoch])
        self.epoch += 1
        perm = rng.permutation(len(self.lengths))
        batches = []
        for s in range(0, len(perm), self.pool):
            pool = perm[s: s + self.pool]
            if self.bucket:
                pool = pool[np.argsort(self.lengths[pool], kind="stable")]
            batches += [pool[i: i + self.batch_size] for i in range(0, len(pool), self.batch_size)]
        order = rng.permutation(len(batches))
        for i in order[self.rank::self.world_size][: len(self)]:
            yield batches[i].tolist()


class OldLengthBucketBatches:                                  # genrec.lit.sasrec.LengthBucketBatches
    def __init__(self, lengths, batch_size, seed):
        self.lengths = np.asarray(lengths)
        self.batch_size = batch_size
        self.rng = np.random.default_rng(seed)

    def __len__(self):
        return -(-len(self.lengths) // self.batch_size)

    def __iter__(self):
        order = self.rng.permutation(len(self.lengths))
        order = order[np.argsort(self.lengths[order], kind="stable")]
        batches = [order[i: i + self.batch_size] for i in range(0, len(order), self.batch_size)]
        for b in self.rng.permutation(len(batches)):
            yield batches[b].tolist()


def old_eval_arrays_subset(n, max_users, seed):                # SIDDataModule.eval_arrays' user draw
    idx = np.arange(n)
    if max_users is not None and max_users < len(idx):
        idx = np.sort(np.random.default_rng(seed).choice(idx, size=max_users, replace=False))
    return idx


def old_evaluate_subset(examples, max_users, seed):            # genrec.evaluate.subset
    if max_users is None or max_users >= len(examples):
        return examples
    idx = np.sort(np.random.default_rng(seed).choice(len(examples), size=max_users, replace=False))
    return EvalExamples(examples.user_ids[idx], [examples.histories[i] for i in idx], examples.targets[idx])


# --------------------------------------------------------------------------- fixtures


def sequences(seed: int, n: int = 83) -> list[np.ndarray]:
    """Odd-length sequences, including empty and single-item ones (no transition)."""
    rng = np.random.default_rng(seed)
    lengths = np.concatenate([[0, 1, 2, 3], rng.integers(0, 41, size=n - 4)])
    return [rng.integers(0, 37, size=length) for length in lengths]


def epochs(sampler, n: int = EPOCHS) -> list[list[list[int]]]:
    return [list(sampler) for _ in range(n)]


# --------------------------------------------------------------------------- windows


@pytest.mark.parametrize("max_items", [1, 2, 5, 7, 20])
def test_one_window_cut_for_genrec_and_sasrec(max_items):
    for seed in range(3):
        train = sequences(seed)
        expected = old_causal_windows(train, max_items)
        got = causal_windows(train, max_items)
        assert got.dtype == expected.dtype and np.array_equal(got, expected)
        old, new = OldTrainWindows(train, max_items), TrainWindows(train, max_items)
        assert len(new) == len(old.windows)
        assert all(a.dtype == b.dtype == np.int64 and np.array_equal(a, b) for a, b in zip(new.windows, old.windows))
        assert (new.n_skipped_users, new.n_transitions) == (old.n_skipped_users, old.n_transitions)
        # genrec's padded windows are SASRec's windows, left-padded
        assert np.array_equal(got, left_pad(next_item_windows(train, max_items), max_items + 1))


def test_windows_by_hand():
    assert [w.tolist() for w in next_item_windows([np.arange(10, 17), np.array([5]), np.array([8, 9])], 3)] == \
        [[13, 14, 15, 16], [10, 11, 12, 13], [8, 9]]


# --------------------------------------------------------------------------- batches


@pytest.mark.parametrize("batch_size, pool_batches", [(8, 50), (7, 3), (5, 1), (32, 16)])
@pytest.mark.parametrize("bucket", [True, False])
def test_genrec_batches_are_the_former_genrec_sampler(batch_size, pool_batches, bucket):
    for seed in (0, 3, 11):
        lengths = np.random.default_rng(seed).integers(1, 21, size=229)
        for world in (1, 2, 3):
            for rank in range(world):
                kwargs = dict(seed=seed, pool_batches=pool_batches, rank=rank, world_size=world, bucket=bucket)
                new = LengthBucketBatchSampler(lengths, batch_size, **kwargs)
                old = OldLengthBucketBatchSampler(lengths, batch_size, **kwargs)
                assert len(new) == len(old)
                assert epochs(new) == epochs(old)


@pytest.mark.parametrize("batch_size", [1, 3, 16, 128, 500])
def test_sasrec_batches_are_the_former_sasrec_sampler(batch_size):
    for seed in (0, 3, 11):
        lengths = np.random.default_rng(seed).integers(2, 8, size=301)
        new = LengthBucketBatchSampler(lengths, batch_size, seed=seed, pool_batches=None, reseed_each_epoch=False)
        old = OldLengthBucketBatches(lengths, batch_size, seed)
        assert len(new) == len(old)
        assert epochs(new) == epochs(old)
    assert list(new) != list(new)              # one generator drawn across epochs: each epoch a new order


def test_empty_lengths_give_no_batches():
    for kwargs in (dict(), dict(pool_batches=None, reseed_each_epoch=False)):
        sampler = LengthBucketBatchSampler(np.array([], dtype=np.int64), 4, **kwargs)
        assert len(sampler) == 0 and list(sampler) == []
    with pytest.raises(ValueError, match="pool_batches must be >= 1"):
        LengthBucketBatchSampler([1, 2], 4, pool_batches=0)


def test_each_datamodule_draws_its_former_batches(tmp_path):
    """The callers pass their parameters: SASRecDataModule's loader and SIDDataModule's loader yield the
    batch lists of the sampler each used before."""
    train = sequences(5, n=157)
    config = SASRecTrainConfig(d_model=8, n_layers=1, n_heads=2, train_max_len=6, batch_size=16, seed=7)
    split = SimpleNamespace(train=train, valid=None)
    sasrec = SASRecDataModule(split, n_items=37, config=config).train_dataloader().batch_sampler
    lengths = [len(w) for w in OldTrainWindows(train, 6).windows]
    assert epochs(sasrec) == epochs(OldLengthBucketBatches(lengths, 16, 7))
    # batching "random": the same seeded shuffle, not sorted, so batches mix window lengths
    shuffled = SASRecDataModule(split, n_items=37, config=replace(config, batching="random")).train_dataloader()
    batches = list(shuffled.batch_sampler)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    assert sum(len({lengths[i] for i in b}) > 1 for b in batches) > len(batches) // 2
    sorted_batches = list(SASRecDataModule(split, n_items=37, config=config).train_dataloader().batch_sampler)
    assert sum(len({lengths[i] for i in b}) == 1 for b in sorted_batches) > len(sorted_batches) // 2

    for batching in ("bucket", "random"):
        dm = SIDDataModule.__new__(SIDDataModule)     # only the loader logic, no run folder needed
        dm.dataset = SimpleNamespace(split=SimpleNamespace(train=train))
        dm.trainer, dm.training_examples, dm.batching = None, "causal", batching
        dm.max_items, dm.batch_size, dm.seed = 6, 16, 7
        windows = old_causal_windows(train, 6)
        lengths = (windows >= 0).sum(1)
        old = OldLengthBucketBatchSampler(lengths, 16, seed=7, bucket=batching == "bucket")
        assert epochs(dm.train_dataloader().batch_sampler) == epochs(old)
        # and the loader's first batch holds those windows
        first = next(iter(OldLengthBucketBatchSampler(lengths, 16, seed=7, bucket=batching == "bucket")))
        assert torch.equal(next(iter(dm.train_dataloader()))[0], torch.as_tensor(windows[first]))


# --------------------------------------------------------------------------- user subsets


def test_one_user_subset_for_training_validation_and_evaluate():
    for n in (0, 1, 17, 500):
        examples = EvalExamples(np.arange(n) * 3 + 1, [np.arange(i % 5 + 1) for i in range(n)], np.arange(n) % 37)
        for max_users in (None, 0, 1, 16, 17, 18, 250, 499, 500, 800):
            for seed in (0, 1, 42):
                idx = user_subset(n, max_users, seed)
                assert np.array_equal(idx, old_eval_arrays_subset(n, max_users, seed))
                old, new = old_evaluate_subset(examples, max_users, seed), subset(examples, max_users, seed)
                if old is examples:
                    assert new is examples            # no copy when every user is kept
                assert np.array_equal(new.user_ids, old.user_ids) and np.array_equal(new.targets, old.targets)
                assert all(np.array_equal(a, b) for a, b in zip(new.histories, old.histories))
                # training's validation subset and `genrec evaluate --max-users` score the same users
                assert np.array_equal(examples.user_ids[idx], new.user_ids)


def test_datamodule_eval_arrays_use_the_shared_subset():
    n = 61
    examples = EvalExamples(np.arange(n) + 100, [np.arange(i % 9 + 1) for i in range(n)], np.arange(n) % 37)
    dm = SIDDataModule.__new__(SIDDataModule)
    dm.seed, dm.max_items = 4, 5
    hist, targets, users = dm.eval_arrays(examples, 20)
    expected = old_evaluate_subset(examples, 20, 4)
    assert np.array_equal(users, expected.user_ids) and np.array_equal(targets, expected.targets)
    assert np.array_equal(hist, left_pad(expected.histories, 5))
