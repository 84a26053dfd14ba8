"""The training toolkit's data side, written once for genrec and SASRec: how training sequences are cut
into windows, how windows are batched, and which users a capped evaluation scores.

Each caller keeps its own batches: where genrec and SASRec used to differ (pool size, how the batch
order is seeded), the difference is a parameter, and tests/lit/test_batching.py proves that each
caller's parameters give exactly the batch lists of its former implementation.

No Lightning here: the evaluation side (genrec.evaluate) imports ``user_subset`` from this module.
"""

from __future__ import annotations

import numpy as np
import torch

from genrec.data.split import left_pad


def next_item_windows(train: list[np.ndarray], max_items: int) -> list[np.ndarray]:
    """Cut each training sequence into windows of at most max_items+1 items, so every transition is a target once.

    Windows are cut from the end backwards, ending at n, n-max_items, ...: the next window's last
    item is this window's first, so windows share one item and no transition. Sequences with fewer
    than 2 items have no transition and give no window. Returns int64 arrays, unpadded.
    """
    rows = []
    for seq in train:
        seq = np.asarray(seq, dtype=np.int64)
        end = len(seq)          # exclusive end of the current window (its last target)
        while end >= 2:
            rows.append(seq[max(0, end - max_items - 1): end])
            end -= max_items
    return rows


def causal_windows(train: list[np.ndarray], max_items: int) -> np.ndarray:
    """:func:`next_item_windows`, left-padded with PAD_ITEM: (n_windows, max_items + 1) int64."""
    return left_pad(next_item_windows(train, max_items), max_items + 1)


def prefix_examples(train: list[np.ndarray], max_items: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All (history, next item, user) triples of every training sequence, TIGER-style sliding window.

    ``train[u]`` is user u's sequence; the user id goes along so TIGER's hashed user token is trained
    on the same users it is given at evaluation.
    """
    hist, tgt, users = [], [], []
    for user, seq in enumerate(train):
        for t in range(1, len(seq)):
            hist.append(seq[max(0, t - max_items): t])
            tgt.append(seq[t])
            users.append(user)
    return left_pad(hist, max_items), np.asarray(tgt, dtype=np.int64), np.asarray(users, dtype=np.int64)


class LengthBucketBatchSampler(torch.utils.data.Sampler):
    """Random batches of similar-length windows, so little compute goes to padding.

    Each epoch: shuffle, cut into pools of ``pool_batches`` batches, sort each pool by length (stable,
    so random order within a length), cut it into batches, shuffle the batch order.

    Args:
        lengths: one length per example (only their order matters).
        batch_size: examples per batch; the last batch of each pool may be shorter.
        seed: seeds the shuffles.
        pool_batches: batches per sorted pool; None sorts the whole epoch as one pool (SASRec).
        rank, world_size: under DDP every process draws the same batch list and takes every
            world_size-th batch, truncated to an equal count so all processes step together.
        bucket: False skips the sort: plain random batches (every batch mixes history lengths,
            which costs padding compute but avoids length-biased batches, see SIDDataModule ``batching``).
        reseed_each_epoch: True (genrec): epoch e draws from ``default_rng([seed, e])``, so an epoch's
            batches depend only on the seed and its number. False (SASRec): one ``default_rng(seed)``
            drawn from epoch after epoch, as the SASRec trainer always has.
    """

    def __init__(self, lengths: np.ndarray, batch_size: int, seed: int = 0, pool_batches: int | None = 50,
                 rank: int = 0, world_size: int = 1, bucket: bool = True, reseed_each_epoch: bool = True):
        if batch_size < 1 or (pool_batches is not None and pool_batches < 1):
            raise ValueError(f"batch_size and pool_batches must be >= 1, got {batch_size} and {pool_batches}")
        self.lengths = np.asarray(lengths)
        self.batch_size = batch_size
        self.seed = seed
        self.bucket = bucket
        self.pool = None if pool_batches is None else batch_size * pool_batches
        self.epoch = 0
        self.rank, self.world_size = rank, world_size
        self._stream = None if reseed_each_epoch else np.random.default_rng(seed)

    def _n_batches(self) -> int:
        return -(-len(self.lengths) // self.batch_size) if len(self.lengths) else 0

    def __len__(self) -> int:
        return self._n_batches() // self.world_size

    def __iter__(self):
        rng = self._stream if self._stream is not None else np.random.default_rng([self.seed, self.epoch])
        self.epoch += 1
        perm = rng.permutation(len(self.lengths))
        pool_size = self.pool or max(len(perm), 1)
        batches = []
        for s in range(0, len(perm), pool_size):
            pool = perm[s: s + pool_size]
            if self.bucket:
                pool = pool[np.argsort(self.lengths[pool], kind="stable")]
            batches += [pool[i: i + self.batch_size] for i in range(0, len(pool), self.batch_size)]
        order = rng.permutation(len(batches))
        for i in order[self.rank::self.world_size][: len(self)]:
            yield batches[i].tolist()


def user_subset(n: int, max_users: int | None, seed: int) -> np.ndarray:
    """Sorted indices of a fixed random subset of ``max_users`` of ``n`` evaluation examples (all n when
    ``max_users`` is None or at least n).

    The validation subset of training (SIDDataModule ``val_max_users``) and `genrec evaluate
    --max-users` are this one draw, so the same seed scores the same users in both.
    """
    if max_users is None or max_users >= n:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=max_users, replace=False))
