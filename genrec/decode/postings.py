"""Posting lists of the catalogue, over pairs of neighbouring digits: for every group g and joint code c,
the items whose codes at g's digits are c.

The index behind the exact pruned search (:mod:`genrec.decode.pruned`). Digits are read in groups
(:func:`list_groups`): two neighbouring digits form one group whose joint code is ``code_a * K_b + code_b``
when ``K_a * K_b`` is at most MAX_JOINT and at most the number of items, else a digit is its own group.
A pair's lists are ~K_b times shorter than one digit's, and an item near its best in both digits is
what the search looks for (entries read per request: bench/RESULTS.md, "Scale").
It is built once per catalogue, holds numpy arrays only and can be saved beside the trie tables and
memory-mapped back:

- ``items`` (G, N): row g lists all item ids sorted by (joint code at group g, item id);
- ``starts[g]`` (K_g + 1,): the items with joint code c at group g are ``items[g, starts[g][c]:starts[g][c + 1]]``;
- ``codes_t`` (D, N): the codes transposed, uint8 for codebooks up to 256 (rebuilt from the codes, not saved);
- ``dense_groups``: the digits in pairs for the dense pass, each pair's two codes as one uint16 index into a
  (K_a * K_b,) table of pair sums (built on first use, not saved): half the gathers per item.

Item ids are int32 below 2**31 items (half the memory of int64): a 1M-item, 17-digit index of 256-code
digits is 9 groups, 36 MB of lists + 17 MB of uint8 codes.
Optional in an export folder: :meth:`genrec.decode.Trie.load` memory-maps the files when they are
there and builds the index on first use when they are not.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Sequence

import numpy as np

from genrec.io import ArtifactError, save_npy_atomic

# File names written by PostingIndex.save (beside the TRIE_FILES of the same catalogue).
POSTING_FILES = {
    "items": "trie_postings_items.npy",     # (G, N) item ids grouped by joint code, per digit group
    "starts": "trie_postings_starts.npy",   # concatenation of starts[0..G-1], each (K_g + 1,)
}
MAX_JOINT = 1 << 16     # two neighbouring digits share posting lists when their joint codebook is at most this
                        # (256 x 256): the lists' starts stay small and the joint codes sort as uint16 (radix)
PAIR_TABLE_SHARE = 4    # pair two digits for the dense pass when their pair table is at most N / 4 entries


def list_groups(level_sizes: Sequence[int], n_items: int) -> tuple[tuple[int, ...], ...]:
    """The digit groups posting lists are kept for: neighbouring digits in pairs while their joint codebook
    has at most MAX_JOINT codes and at most ``n_items`` (a smaller catalogue would hold mostly empty lists, and
    is scored densely anyway), in digit order: ``(0, 1), (2, 3), ..., (16,)`` for 17 digits of 256 codes."""
    sizes = [int(k) for k in level_sizes]
    groups, d = [], 0
    while d < len(sizes):
        if d + 1 < len(sizes) and sizes[d] * sizes[d + 1] <= min(MAX_JOINT, n_items):
            groups.append((d, d + 1))
            d += 2
        else:
            groups.append((d,))
            d += 1
    return tuple(groups)


def joint_codes(codes: np.ndarray, group: tuple[int, ...], level_sizes: Sequence[int]) -> np.ndarray:
    """(N,) int64 joint code of each item at ``group``: ``code_a * K_b + code_b`` for a pair, the code for one digit."""
    joint = np.asarray(codes[:, group[0]], dtype=np.int64)
    for d in group[1:]:
        joint = joint * int(level_sizes[d]) + codes[:, d]
    return joint


class PostingIndex:
    """Posting lists of item codes ``codes`` (N, D), digit d's codes in ``[0, level_sizes[d])``, kept per
    digit group (:func:`list_groups`)."""

    def __init__(self, items: np.ndarray, starts: Sequence[np.ndarray], level_sizes: Sequence[int],
                 codes: np.ndarray) -> None:
        """Wrap built (or loaded) arrays for the catalogue's ``codes`` (N, D); use :meth:`build` or :meth:`load`."""
        self.level_sizes: tuple[int, ...] = tuple(int(k) for k in level_sizes)
        n = items.shape[1]
        self.groups: tuple[tuple[int, ...], ...] = list_groups(self.level_sizes, n)
        self.items: np.ndarray = items                              # (G, N) int32/int64, may be a memmap
        self.starts: list[np.ndarray] = [np.asarray(s, dtype=np.int64) for s in starts]   # G x (K_g + 1,)
        self.sizes: list[np.ndarray] = [np.diff(s) for s in self.starts]                 # G x (K_g,) list lengths
        # Every group's lists in one table over the flattened (G * N,) items: group g, joint code c spans
        # list_size[at] entries from list_start[at], at = group_offset[g] + c, so one gather serves any mix of
        # groups (a group's last list ends where the next group's first begins: one array of starts suffices).
        self.list_start: np.ndarray = np.concatenate([g * n + s[:-1] for g, s in enumerate(self.starts)]
                                                     + [[len(self.starts) * n]])
        self.list_size: np.ndarray = np.diff(self.list_start)
        self.mean_list: np.ndarray = n / np.array([len(sz) for sz in self.sizes], dtype=np.float64)  # items per code
        self.group_offset: np.ndarray = np.cumsum([0] + [len(s) for s in self.sizes[:-1]]).astype(np.int64)
        # Per digit, the codes some item uses (a group's lists sum over its other digit's codes).
        self.digit_used: list[np.ndarray] = [np.zeros(k, dtype=bool) for k in self.level_sizes]
        for group, size in zip(self.groups, self.sizes):
            shaped = size.reshape([self.level_sizes[d] for d in group])
            for axis, d in enumerate(group):
                self.digit_used[d] = shaped.sum(axis=tuple(a for a in range(len(group)) if a != axis)) > 0
        # Groups worth reading: >= 2 used joint codes and no code holding half the items (a dedup digit is
        # mostly code 0; reading it would read the catalogue); every group with 2 used codes if none is.
        splits = np.array([(sz > 0).sum() >= 2 for sz in self.sizes], dtype=bool)
        balanced = np.array([2 * sz.max() <= n for sz in self.sizes], dtype=bool)
        self.selective: np.ndarray = splits & balanced if (splits & balanced).any() else splits
        # Codes transposed (D, N) in the smallest unsigned dtype: digit d's codes are contiguous, so a dense
        # pass reads 1-2 bytes per item and digit instead of gathering a strided int64 column (~5x faster).
        top = max(self.level_sizes)
        dtype = np.uint8 if top <= 1 << 8 else np.uint16 if top <= 1 << 16 else np.int64
        self.codes_t: np.ndarray = np.ascontiguousarray(np.asarray(codes).T, dtype=dtype)
        self._dense_groups: list[tuple[tuple[int, ...], np.ndarray]] | None = None

    @classmethod
    def build(cls, codes: np.ndarray, level_sizes: Sequence[int]) -> "PostingIndex":
        """Index checked codes (N, D) (e.g. ``Trie.item_codes``): one stable sort per digit group."""
        codes = np.asarray(codes)
        n = len(codes)
        groups = list_groups(level_sizes, n)
        items = np.empty((len(groups), n), dtype=_id_dtype(n))
        starts = []
        for g, group in enumerate(groups):
            joint = joint_codes(codes, group, level_sizes)
            k = _joint_size(group, level_sizes)
            # joint codes below 2**16 sort as uint16: numpy's stable sort is then a radix sort, O(N)
            key = joint.astype(np.uint16) if k <= 1 << 16 else joint
            items[g] = np.argsort(key, kind="stable")              # ties (same code) by item id
            starts.append(np.concatenate([[0], np.cumsum(np.bincount(joint, minlength=k))]))
        return cls(items, starts, level_sizes, codes)

    @property
    def n_items(self) -> int:
        return int(self.items.shape[1])

    @property
    def nbytes(self) -> int:
        groups = 0 if self._dense_groups is None else sum(c.nbytes for g, c in self._dense_groups if len(g) == 2)
        return int(self.items.nbytes + self.codes_t.nbytes + sum(s.nbytes for s in self.starts) + groups
                   + self.list_start.nbytes + self.list_size.nbytes)

    def lists(self, groups: np.ndarray, codes: np.ndarray, weights: np.ndarray | None = None
              ) -> tuple[np.ndarray, np.ndarray | None]:
        """The items listed under each (group, joint code) pair, concatenated in the given order, and
        each pair's weight repeated once per listed item (None without ``weights``). One gather, no loop."""
        at = self.group_offset[groups] + codes
        start = self.list_start[at]
        length = self.list_size[at]
        offsets = np.cumsum(length) - length
        positions = np.arange(int(length.sum()), dtype=np.int64) + np.repeat(start - offsets, length)
        listed = self.items.reshape(-1)[positions]
        return listed, None if weights is None else np.repeat(weights, length)

    @property
    def dense_groups(self) -> list[tuple[tuple[int, ...], np.ndarray]]:
        """The digits as the dense pass reads them: ``((d,), codes_t[d])`` or ``((a, b), code_a * K_b + code_b)``
        (uint16, N). Neighbouring digits pair up when their pair table has at most 2**16 entries and at most
        N / PAIR_TABLE_SHARE: a request then builds K_a * K_b pair sums and gathers once per item instead of twice."""
        if self._dense_groups is None:
            groups, d, sizes, n = [], 0, self.level_sizes, self.n_items
            while d < len(sizes):
                pair = sizes[d] * sizes[d + 1] if d + 1 < len(sizes) else 0
                if 0 < pair <= 1 << 16 and pair * PAIR_TABLE_SHARE <= n:
                    joint = (self.codes_t[d].astype(np.uint32) * sizes[d + 1] + self.codes_t[d + 1]).astype(np.uint16)
                    groups.append(((d, d + 1), joint))
                    d += 2
                else:
                    groups.append(((d,), self.codes_t[d]))
                    d += 1
            self._dense_groups = groups
        return self._dense_groups

    # ------------------------------------------------------------------ persistence
    def save(self, folder: str | os.PathLike) -> list[str]:
        """Write the index as plain .npy files into ``folder``; returns the file names written."""
        folder = Path(folder)
        save_npy_atomic(folder / POSTING_FILES["items"], np.ascontiguousarray(self.items))
        save_npy_atomic(folder / POSTING_FILES["starts"], np.concatenate(self.starts))
        return sorted(POSTING_FILES.values())

    @classmethod
    def exists(cls, folder: str | os.PathLike) -> bool:
        return all((Path(folder) / name).exists() for name in POSTING_FILES.values())

    @classmethod
    def load(cls, folder: str | os.PathLike, codes: np.ndarray, level_sizes: Sequence[int], *,
             mmap: bool = True) -> "PostingIndex":
        """Read files written by :meth:`save` (memory-mapped unless ``mmap=False``) and check them against
        the catalogue's ``codes`` (N, D): O(N * D) reads, no sort."""
        folder = Path(folder)
        for name in POSTING_FILES.values():
            if not (folder / name).exists():
                raise ArtifactError(f"{folder / name} not found: {folder} holds no posting lists. "
                                    "Write them with Trie.postings.save(folder), or drop the other posting file.")
        items = np.load(folder / POSTING_FILES["items"], mmap_mode="r" if mmap else None, allow_pickle=False)
        flat = np.load(folder / POSTING_FILES["starts"], allow_pickle=False)
        sizes = tuple(int(k) for k in level_sizes)
        n = len(codes)
        groups = list_groups(sizes, n)
        joint_sizes = [_joint_size(group, sizes) for group in groups]
        path = folder / POSTING_FILES["items"]
        if items.shape != (len(groups), n) or items.dtype not in (np.int32, np.int64):
            raise ArtifactError(f"{path}: expected int32/int64 item ids of shape ({len(groups)}, {n}) "
                                f"for the catalogue's {n} items x {len(groups)} digit groups, "
                                f"got {items.dtype} {items.shape}; re-save the index.")
        if flat.shape != (sum(joint_sizes) + len(groups),):
            raise ArtifactError(f"{folder / POSTING_FILES['starts']}: expected {sum(joint_sizes) + len(groups)} "
                                f"list starts (joint codebook sizes {joint_sizes} + 1 per group), "
                                f"got {flat.shape}; re-save the index.")
        bounds = np.cumsum([0] + [k + 1 for k in joint_sizes])
        starts = [flat[bounds[g]:bounds[g + 1]].astype(np.int64) for g in range(len(groups))]
        for g, group in enumerate(groups):
            row = np.asarray(items[g], dtype=np.int64)
            name = f"digit {group[0]}" if len(group) == 1 else f"digits {group[0]}-{group[-1]}"
            if row.min() < 0 or row.max() >= n:
                raise ArtifactError(f"{path}: {name} list item ids outside 0..{n - 1}; the index belongs to "
                                    "another catalogue. Re-save it from this trie.")
            joint = joint_codes(codes, group, sizes)
            # strictly increasing (joint code, item) keys: every item exactly once, grouped by code, ids ascending
            keys = joint[row] * n + row
            want = np.concatenate([[0], np.cumsum(np.bincount(joint, minlength=joint_sizes[g]))])
            if np.any(keys[1:] <= keys[:-1]) or not np.array_equal(starts[g], want):
                raise ArtifactError(f"{path}: the posting lists of {name} disagree with the catalogue's codes; the "
                                    "index belongs to another export. Re-save it from this trie.")
        return cls(items, starts, sizes, codes)


def _joint_size(group: tuple[int, ...], level_sizes: Sequence[int]) -> int:
    return math.prod(int(level_sizes[d]) for d in group)


def _id_dtype(n: int) -> type:
    return np.int32 if n < 2**31 else np.int64
