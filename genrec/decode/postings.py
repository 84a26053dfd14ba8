"""Per-digit posting lists of the catalogue: for every digit d and code c, the items whose code at d is c.

The index behind the exact pruned search (:mod:`genrec.decode.pruned`). It is built once per
catalogue, holds numpy arrays only and can be saved beside the trie tables and memory-mapped back:

- ``items`` (D, N): row d lists all item ids sorted by (code at digit d, item id);
- ``starts[d]`` (K_d + 1,): the items with code c at digit d are ``items[d, starts[d][c]:starts[d][c + 1]]``;
- ``codes_t`` (D, N): the codes transposed, uint8 for codebooks up to 256 (rebuilt from the codes, not saved);
- ``dense_groups``: the digits in pairs for the dense pass, each pair's two codes as one uint16 index into a
  (K_a * K_b,) table of pair sums (built on first use, not saved): half the gathers per item.

Item ids are int32 below 2**31 items (half the memory of int64): a 1M-item, 17-digit index is 68 MB of
lists + 17 MB of uint8 codes.
Optional in an export folder: :meth:`genrec.decode.Trie.load` memory-maps the files when they are
there and builds the index on first use when they are not, so older exports still load.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np

from genrec.io import ArtifactError, save_npy_atomic

# File names written by PostingIndex.save (beside the TRIE_FILES of the same catalogue).
POSTING_FILES = {
    "items": "trie_postings_items.npy",     # (D, N) item ids grouped by code, per digit
    "starts": "trie_postings_starts.npy",   # concatenation of starts[0..D-1], each (K_d + 1,)
}
PAIR_TABLE_SHARE = 4    # pair two digits for the dense pass when their pair table is at most N / 4 entries


class PostingIndex:
    """Posting lists of item codes ``codes`` (N, D), digit d's codes in ``[0, level_sizes[d])``."""

    def __init__(self, items: np.ndarray, starts: Sequence[np.ndarray], level_sizes: Sequence[int],
                 codes: np.ndarray) -> None:
        """Wrap built (or loaded) arrays for the catalogue's ``codes`` (N, D); use :meth:`build` or :meth:`load`."""
        self.level_sizes: tuple[int, ...] = tuple(int(k) for k in level_sizes)
        self.items: np.ndarray = items                              # (D, N) int32/int64, may be a memmap
        self.starts: list[np.ndarray] = [np.asarray(s, dtype=np.int64) for s in starts]   # D x (K_d + 1,)
        self.sizes: list[np.ndarray] = [np.diff(s) for s in self.starts]                 # D x (K_d,) list lengths
        n = items.shape[1]
        # List starts in the flattened (D * N,) items, all digits in one table: digit d, code c is at
        # list_start[digit_offset[d] + c], so one gather serves any mix of digits.
        self.list_start: np.ndarray = np.concatenate([d * n + s for d, s in enumerate(self.starts)])
        self.digit_offset: np.ndarray = np.cumsum([0] + [len(s) for s in self.starts[:-1]]).astype(np.int64)
        # Digits worth reading: >= 2 used codes and no code holding half the items (a dedup digit is
        # mostly code 0; reading it would read the catalogue); every digit with 2 used codes if none is.
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
        """Index checked codes (N, D) (e.g. ``Trie.item_codes``): one stable sort per digit."""
        codes = np.asarray(codes)
        n, depth = codes.shape
        items = np.empty((depth, n), dtype=_id_dtype(n))
        starts = []
        for d, k in enumerate(level_sizes):
            column = codes[:, d]
            # codes below 2**16 sort as uint16: numpy's stable sort is then a radix sort, O(N)
            key = column.astype(np.uint16) if k <= 1 << 16 else column
            items[d] = np.argsort(key, kind="stable")              # ties (same code) by item id
            starts.append(np.concatenate([[0], np.cumsum(np.bincount(column, minlength=k))]))
        return cls(items, starts, level_sizes, codes)

    @property
    def n_items(self) -> int:
        return int(self.items.shape[1])

    @property
    def nbytes(self) -> int:
        groups = 0 if self._dense_groups is None else sum(c.nbytes for g, c in self._dense_groups if len(g) == 2)
        return int(self.items.nbytes + self.codes_t.nbytes + sum(s.nbytes for s in self.starts) + groups)

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
        n, depth = codes.shape
        path = folder / POSTING_FILES["items"]
        if items.shape != (depth, n) or items.dtype not in (np.int32, np.int64):
            raise ArtifactError(f"{path}: expected int32/int64 item ids of shape ({depth}, {n}) for the catalogue's "
                                f"{n} items x {depth} digits, got {items.dtype} {items.shape}; re-save the index.")
        if flat.shape != (sum(sizes) + depth,):
            raise ArtifactError(f"{folder / POSTING_FILES['starts']}: expected {sum(sizes) + depth} list starts "
                                f"(codebook sizes {list(sizes)} + 1 per digit), got {flat.shape}; re-save the index.")
        bounds = np.cumsum([0] + [k + 1 for k in sizes])
        starts = [flat[bounds[d]:bounds[d + 1]].astype(np.int64) for d in range(depth)]
        for d in range(depth):
            row = np.asarray(items[d], dtype=np.int64)
            if row.min() < 0 or row.max() >= n:
                raise ArtifactError(f"{path}: digit {d} lists item ids outside 0..{n - 1}; the index belongs to "
                                    "another catalogue. Re-save it from this trie.")
            code = codes[row, d]
            # strictly increasing (code, item) keys: every item exactly once, grouped by code, ids ascending
            keys = code * n + row
            want = np.concatenate([[0], np.cumsum(np.bincount(codes[:, d], minlength=sizes[d]))])
            if np.any(keys[1:] <= keys[:-1]) or not np.array_equal(starts[d], want):
                raise ArtifactError(f"{path}: digit {d}'s posting lists disagree with the catalogue's codes; the "
                                    "index belongs to another export. Re-save it from this trie.")
        return cls(items, starts, sizes, codes)


def _id_dtype(n: int) -> type:
    return np.int32 if n < 2**31 else np.int64
