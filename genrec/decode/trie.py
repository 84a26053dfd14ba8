"""Prefix trie over the catalogue's semantic IDs, stored as flat numpy arrays.

Items are sorted lexicographically by their code tuple. Every trie node is then a
contiguous range ``[lo, hi)`` of sorted positions, so the whole trie is a handful of
integer arrays per level and never a dense (nodes x K) table:

- a node at *level* ``d`` is a distinct prefix of length ``d`` (level 0 is the root,
  level ``D`` holds one leaf per item); nodes of a level are numbered in sorted order;
- ``node_start[d]`` (n_d + 1,) are the range starts of the level-d nodes, plus ``N``;
- ``node_code[d]`` / ``node_parent[d]`` (n_d,) are the last code and the parent of a
  level-d node (d >= 1);
- ``child_start[d]`` (n_d + 1,) : the children of level-d node ``j`` are the level-(d+1)
  nodes ``child_start[d][j] : child_start[d][j + 1]`` (they are contiguous);
- ``_keys[d] = node_parent[d] * K_{d-1} + node_code[d]`` is strictly increasing, so the
  child with a given code is one ``searchsorted`` away.

For a 100k-item, 4-level, K=256 catalogue this is a few MB. Only numpy is imported here
because the torch-free server uses it.

The node tables are built on first use. Exact decoding (``score_catalogue``, ``pruned_search``'s
posting lists) reads only the codes, ``order`` and the posting lists, so a server of a parallel-head
export never builds them: with 17-digit PQ codes at 1M items they are ~600 MB (every level past the
third has ~N nodes, five int64 arrays each), against 136 MB of codes that :meth:`Trie.load` memory-maps.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np

from genrec.decode.postings import PostingIndex
from genrec.io import ArtifactError, save_npy_atomic

# File names written by Trie.save (the export folder lists them in its manifest).
TRIE_FILES = {
    "level_sizes": "trie_level_sizes.npy",    # (D,) codebook size per level
    "item_codes": "codes.npy",                # (N, D) code tuple per item id: the export's item -> code map too
    "order": "trie_order.npy",                # (N,) item id at each sorted position
    "node_start": "trie_node_start.npy",      # concatenation of node_start[0..D]
    "node_offsets": "trie_node_offsets.npy",  # (D + 2,) where each level's node_start begins
}


class Trie:
    """Prefix trie of unique code tuples ``codes[i]`` (item ``i``), level ``d`` codes in ``[0, level_sizes[d])``."""

    def __init__(self, codes: np.ndarray, level_sizes: Sequence[int], *, source: str = "codes") -> None:
        """Build from ``codes`` (N, D) int. ``source`` names the codes' origin (e.g. a file) in error messages."""
        codes, sizes = _check_codes(codes, level_sizes, source)
        small = _compact(codes, sizes)
        # Lexicographic order: np.lexsort treats its last key as primary, so feed levels reversed.
        order = np.lexsort(small.T[::-1])
        _check_unique(small[order], order, source)
        self._init_tables(codes, sizes, order.astype(np.int64))

    # ------------------------------------------------------------------ construction helpers
    def _init_tables(self, codes: np.ndarray, sizes: tuple[int, ...], order: np.ndarray) -> None:
        self.level_sizes: tuple[int, ...] = sizes
        self.item_codes: np.ndarray = codes           # (N, D) int64, indexed by item id (a memmap when loaded)
        self.order: np.ndarray = order                # (N,) item id at each sorted position (a memmap when loaded)
        self._position: np.ndarray | None = None      # (N,) sorted position of each item id, built on first use
        self._nodes: dict[str, list[np.ndarray]] | None = None   # node tables, built on first use
        self._postings: PostingIndex | None = None   # built on first use, or loaded by Trie.load

    def _node_tables(self) -> dict[str, list[np.ndarray]]:
        """node_start / node_code / node_parent / keys / child_start per level, built once from the sorted codes."""
        if self._nodes is not None:
            return self._nodes
        sizes, order = self.level_sizes, np.asarray(self.order)
        sorted_codes = _compact(self.item_codes, sizes)[order]                   # (N, D)
        node_start = _node_starts(sorted_codes)
        tables: dict[str, list[np.ndarray]] = {"node_start": node_start, "node_code": [np.zeros(0, dtype=np.int64)],
                                               "node_parent": [np.zeros(0, dtype=np.int64)],
                                               "keys": [np.zeros(0, dtype=np.int64)], "child_start": []}
        n = len(order)
        # Level-(d-1) boundaries are a subset of level-d boundaries, so a node's parent is the number of
        # level-(d-1) starts up to its own start, minus one, and a node's first child is the level-(d+1)
        # node starting where it starts: O(N) lookups into a position table instead of binary searches.
        index_of = np.empty(n + 1, dtype=np.int64)
        for d in range(1, len(sizes) + 1):
            starts = node_start[d][:-1]
            code = sorted_codes[starts, d - 1].astype(np.int64)
            is_parent_start = np.zeros(n + 1, dtype=bool)
            is_parent_start[node_start[d - 1]] = True
            parent = np.cumsum(is_parent_start[starts]) - 1
            index_of[node_start[d]] = np.arange(len(node_start[d]))
            tables["child_start"].append(index_of[node_start[d - 1]].copy())
            tables["node_code"].append(code)
            tables["node_parent"].append(parent.astype(np.int64))
            tables["keys"].append(parent * sizes[d - 1] + code)
        self._nodes = tables
        return tables

    @property
    def node_start(self) -> list[np.ndarray]:
        """D + 1 arrays (n_d + 1,): range starts of the level-d nodes, plus N."""
        return self._node_tables()["node_start"]

    @property
    def node_code(self) -> list[np.ndarray]:
        """D + 1 arrays (n_d,): last code of each level-d node (empty at level 0)."""
        return self._node_tables()["node_code"]

    @property
    def node_parent(self) -> list[np.ndarray]:
        """D + 1 arrays (n_d,): level-(d-1) parent of each level-d node (empty at level 0)."""
        return self._node_tables()["node_parent"]

    @property
    def child_start(self) -> list[np.ndarray]:
        """D arrays (n_d + 1,): the children of level-d node j are child_start[d][j]:child_start[d][j + 1]."""
        return self._node_tables()["child_start"]

    @property
    def _keys(self) -> list[np.ndarray]:
        return self._node_tables()["keys"]

    @property
    def position(self) -> np.ndarray:
        """(N,) sorted position of each item id."""
        if self._position is None:
            position = np.empty(len(self.order), dtype=np.int64)
            position[np.asarray(self.order)] = np.arange(len(self.order))
            self._position = position
        return self._position

    # ------------------------------------------------------------------ sizes
    @property
    def n_items(self) -> int:
        return int(self.item_codes.shape[0])

    @property
    def depth(self) -> int:
        """Number of code levels D (leaves live at level D)."""
        return len(self.level_sizes)

    def n_nodes(self, level: int) -> int:
        """Number of distinct prefixes of length ``level`` (1 at level 0, N at level D)."""
        return len(self.node_start[level]) - 1

    @property
    def nbytes(self) -> int:
        """Bytes of the arrays built or loaded so far (the node tables count once something has used them)."""
        arrays = [self.item_codes, self.order]
        if self._position is not None:
            arrays.append(self._position)
        if self._nodes is not None:
            arrays += [a for table in self._nodes.values() for a in table]
        return int(sum(a.nbytes for a in arrays))

    @property
    def node_tables_built(self) -> bool:
        """Whether the node tables exist (beam search and the trie walk build them; exact decoding does not)."""
        return self._nodes is not None

    @property
    def postings(self) -> PostingIndex:
        """Posting lists of these items, per pair of digits (the index of genrec.decode.pruned's exact search): loaded
        with the trie when its files are in the folder, else built here once (one stable sort per digit group)."""
        if self._postings is None:
            self._postings = PostingIndex.build(self.item_codes, self.level_sizes)
        return self._postings

    # ------------------------------------------------------------------ queries
    def node_range(self, level: int, node_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Sorted-position ranges ``[lo, hi)`` of the items under level-``level`` nodes."""
        starts = self.node_start[level]
        node_ids = np.asarray(node_ids)
        return starts[node_ids], starts[node_ids + 1]

    def children(self, level: int, node_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """All (row, child) pairs: ``rows[j]`` indexes ``node_ids`` and ``child[j]`` is a level-(level+1) node.

        Pairs come grouped by row in order, children in increasing code order.
        """
        self._check_level(level, self.depth - 1)
        node_ids = np.asarray(node_ids, dtype=np.int64)
        first = self.child_start[level][node_ids]                                  # (n,)
        count = self.child_start[level][node_ids + 1] - first                      # (n,)
        rows = np.repeat(np.arange(len(node_ids)), count)                          # (m,)
        # Position of each pair inside its row's run, then offset by that row's first child.
        run_start = np.cumsum(count) - count
        child = first[rows] + (np.arange(len(rows)) - run_start[rows])
        return rows, child

    def allowed(self, level: int, node_ids: np.ndarray) -> np.ndarray:
        """(n, K_level) bool: which level-``level`` codes continue each level-``level`` node to some item."""
        rows, child = self.children(level, node_ids)
        mask = np.zeros((len(np.asarray(node_ids)), self.level_sizes[level]), dtype=bool)
        mask[rows, self.node_code[level + 1][child]] = True
        return mask

    def child(self, level: int, node_ids: np.ndarray, codes: np.ndarray) -> np.ndarray:
        """Level-(level+1) node reached from level-``level`` nodes by ``codes``; -1 where no item has that prefix."""
        self._check_level(level, self.depth - 1)
        node_ids = np.asarray(node_ids, dtype=np.int64)
        codes = np.asarray(codes, dtype=np.int64)
        keys = self._keys[level + 1]
        in_range = (node_ids >= 0) & (codes >= 0) & (codes < self.level_sizes[level])
        query = np.where(in_range, node_ids * self.level_sizes[level] + codes, -1)
        pos = np.minimum(np.searchsorted(keys, query), len(keys) - 1)
        found = in_range & (keys[pos] == query)
        return np.where(found, pos, -1)

    def leaf_items(self, leaf_ids: np.ndarray) -> np.ndarray:
        """Item id of each level-D node (leaf ids are sorted positions)."""
        return self.order[np.asarray(leaf_ids, dtype=np.int64)]

    def lookup(self, codes: np.ndarray) -> np.ndarray:
        """Item id of each code tuple in ``codes`` (n, D), or -1 where the tuple is not an item."""
        codes = np.asarray(codes, dtype=np.int64)
        if codes.ndim != 2 or codes.shape[1] != self.depth:
            raise ValueError(f"lookup expects codes of shape (n, {self.depth}), got {codes.shape}")
        node = np.zeros(len(codes), dtype=np.int64)                                # root
        for d in range(self.depth):
            node = self.child(d, node, codes[:, d])
        items = np.full(len(codes), -1, dtype=np.int64)
        hit = node >= 0
        items[hit] = self.leaf_items(node[hit])
        return items

    def _check_level(self, level: int, top: int) -> None:
        if not 0 <= level <= top:
            raise ValueError(f"level must be in [0, {top}] for a {self.depth}-level trie, got {level}")

    # ------------------------------------------------------------------ persistence
    def save(self, folder: str | os.PathLike, *, postings: bool = False) -> list[str]:
        """Write the trie tables as plain .npy files into ``folder``; returns the file names written.

        ``postings=True`` also writes the posting lists (POSTING_FILES), which :meth:`load` then memory-maps.
        """
        folder = Path(folder)
        starts = _node_starts(_compact(self.item_codes, self.level_sizes)[np.asarray(self.order)])
        offsets = np.cumsum([0] + [len(s) for s in starts]).astype(np.int64)
        arrays = {
            "level_sizes": np.asarray(self.level_sizes, dtype=np.int64),
            "item_codes": np.asarray(self.item_codes, dtype=np.int64),
            "order": np.asarray(self.order, dtype=np.int64),
            # positions < N: int32 below 2**31 items halves the largest trie file (~15 N entries for PQ codes)
            "node_start": np.concatenate(starts).astype(np.int32 if self.n_items < 2**31 else np.int64),
            "node_offsets": offsets,
        }
        for key, array in arrays.items():
            save_npy_atomic(folder / TRIE_FILES[key], array)
        extra = self.postings.save(folder) if postings else []
        return sorted([*TRIE_FILES.values(), *extra])

    @classmethod
    def load(cls, folder: str | os.PathLike, *, mmap_postings: bool = True, mmap: bool = True) -> "Trie":
        """Read tables written by :meth:`save`, checking they are consistent with each other.

        The codes and the sorted order are memory-mapped (``mmap``), so server workers on one export share
        them through the page cache; node tables are not kept (they are rebuilt on first use, by beam search).
        Posting lists, when the folder holds them, are checked against the codes and memory-mapped
        (``mmap_postings``); folders without them load as before and build the index on first use.
        """
        folder = Path(folder)
        arrays = {}
        for key, name in TRIE_FILES.items():
            path = folder / name
            if not path.exists():
                raise ArtifactError(f"{path} not found: {folder} does not hold trie tables. Re-run `genrec export`.")
            big = key in ("item_codes", "order", "node_start")
            arrays[key] = np.load(path, mmap_mode="r" if mmap and big else None, allow_pickle=False)
        source = str(folder / TRIE_FILES["item_codes"])
        try:
            codes, sizes = _check_codes(arrays["item_codes"], arrays["level_sizes"].tolist(), source)
        except ValueError as err:                       # on disk: a corrupt or mixed folder
            raise ArtifactError(f"{err}; re-run `genrec export`") from None
        order = arrays["order"]
        if order.dtype != np.int64:
            order = order.astype(np.int64)
        n = len(codes)
        if order.shape != (n,) or not np.array_equal(np.sort(order), np.arange(n)):
            raise ArtifactError(f"{folder / TRIE_FILES['order']}: expected a permutation of 0..{n - 1}. "
                                "The trie tables are corrupt; re-run `genrec export`.")
        sorted_codes = _compact(codes, sizes)[order]
        try:
            _check_unique(sorted_codes, order, source)  # strictly increasing also proves the order is right
        except ValueError as err:                       # on disk: a folder mixing files, not a caller's bug
            raise ArtifactError(f"{err}; the folder mixes files from different exports: "
                                "re-run `genrec export`") from None
        offsets = arrays["node_offsets"].astype(np.int64)
        flat = arrays["node_start"]
        if offsets.shape != (len(sizes) + 2,) or offsets[-1] != len(flat):
            raise ArtifactError(f"{folder / TRIE_FILES['node_offsets']}: does not match {len(sizes)} levels "
                                f"and {len(flat)} stored node starts; re-run `genrec export`.")
        # one level at a time, so checking never holds every level's node starts at once
        for d, want in enumerate(_iter_node_starts(sorted_codes)):
            if not np.array_equal(flat[offsets[d]:offsets[d + 1]], want):
                raise ArtifactError(f"{folder / TRIE_FILES['node_start']}: level {d} node ranges disagree with "
                                    f"{source}; the files come from different exports. Re-run `genrec export`.")
        del sorted_codes
        trie = cls.__new__(cls)
        trie._init_tables(codes, sizes, order)
        if PostingIndex.exists(folder):
            trie._postings = PostingIndex.load(folder, codes, sizes, mmap=mmap_postings)
        return trie


# ---------------------------------------------------------------------- module helpers
def _check_codes(codes: np.ndarray, level_sizes: Sequence[int], source: str) -> tuple[np.ndarray, tuple[int, ...]]:
    codes = np.asarray(codes)
    sizes = tuple(int(k) for k in level_sizes)
    if codes.ndim != 2:
        raise ValueError(f"{source}: expected codes of shape (n_items, n_levels), got shape {codes.shape}")
    if not np.issubdtype(codes.dtype, np.integer):
        raise ValueError(f"{source}: codes must be integers, got dtype {codes.dtype}")
    if len(sizes) != codes.shape[1]:
        raise ValueError(f"{source}: codes have {codes.shape[1]} levels but level_sizes has {len(sizes)} entries "
                         f"({list(sizes)}); pass one codebook size per level, dedup level included")
    if codes.shape[0] == 0:
        raise ValueError(f"{source}: the catalogue is empty (0 items); a trie needs at least one item")
    if any(k < 1 for k in sizes):
        raise ValueError(f"level_sizes must all be >= 1, got {list(sizes)}")
    codes = codes.astype(np.int64, copy=False)      # a memory-mapped int64 file stays mapped
    bad = (codes < 0) | (codes >= np.asarray(sizes, dtype=np.int64))
    if bad.any():
        item, level = (int(v) for v in np.argwhere(bad)[0])
        raise ValueError(
            f"{source}: item {item} has code {codes[item, level]} at level {level}, expected [0, {sizes[level]}) "
            f"({int(bad.sum())} out-of-range codes in total). Fix level_sizes or regenerate the semantic IDs."
        )
    return codes, sizes


def _compact(codes: np.ndarray, sizes: Sequence[int]) -> np.ndarray:
    """``codes`` in the smallest unsigned dtype holding every level's codes: sorting and comparing 1-byte keys
    is ~10x faster than int64 ones (np.lexsort then radix-sorts)."""
    top = max(sizes)
    return codes.astype(np.uint8) if top <= 1 << 8 else codes.astype(np.uint16) if top <= 1 << 16 else codes


def _check_unique(sorted_codes: np.ndarray, order: np.ndarray, source: str) -> None:
    """Codes sorted lexicographically must be strictly increasing, i.e. no two items share a tuple."""
    if len(sorted_codes) < 2:
        return
    diff = sorted_codes[1:] != sorted_codes[:-1]                                    # (N-1, D)
    same = ~diff.any(axis=1)
    first_change = np.where(diff.any(axis=1), diff.argmax(axis=1), 0)
    rows = np.arange(len(diff))
    decreasing = diff.any(axis=1) & (sorted_codes[rows + 1, first_change] < sorted_codes[rows, first_change])
    if decreasing.any():
        raise ValueError(f"{source}: trie tables are not in lexicographic order; rebuild the trie from the codes")
    if same.any():
        p = int(np.argmax(same))
        a, b = sorted(int(i) for i in order[p:p + 2])
        raise ValueError(
            f"{source}: items {a} and {b} share the semantic ID {sorted_codes[p].tolist()} "
            f"({int(same.sum())} duplicate pairs in total). Semantic IDs must be unique: add or widen the dedup level."
        )


def _node_starts(sorted_codes: np.ndarray) -> list[np.ndarray]:
    """Range starts of the nodes at each level 0..D, each with N appended."""
    return list(_iter_node_starts(sorted_codes))


def _iter_node_starts(sorted_codes: np.ndarray):
    """The range starts of :func:`_node_starts`, one level at a time."""
    n, depth = sorted_codes.shape
    changed = np.zeros(max(n - 1, 0), dtype=bool)   # prefix of the current length differs from the previous row's
    yield np.array([0, n], dtype=np.int64)
    for d in range(depth):
        changed |= sorted_codes[1:, d] != sorted_codes[:-1, d]
        yield np.concatenate([[0], np.flatnonzero(changed) + 1, [n]]).astype(np.int64)
