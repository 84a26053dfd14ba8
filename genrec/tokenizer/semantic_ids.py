"""Semantic IDs as data: collision handling, the dedup level, and the ``sid/`` artifact.

numpy/stdlib only at import time, so the torch-free decoding and serving paths can read
``sid/``. Only :func:`assign_new_items` needs torch (it runs the frozen tokenizer) and
imports it lazily.

``sid/`` layout (written by ``genrec tokenize``):

codes.npy           (n_items, L+1) int64; row i is item_id i (this is the item -> code map).
                    Columns 0..L-1 are the semantic levels, column L the dedup level.
code_to_item.json   {"c0-c1-...-cL": item_id}: the code -> item map.
tokenizer.pt        frozen tokenizer: per-modality RQ-VAE configs + state_dicts (see stage.py).
report.json/.png    code usage, perplexity, collisions, reconstruction error.
manifest.json       stage="tokenize", level_sizes, n_levels, vocab, input feature checksums, config.

The dedup level: items whose L-tuple is shared get an extra last code 0, 1, 2, ... in
item_id order; an item with a unique tuple gets 0. Its vocabulary size (``level_sizes[-1]``)
is the largest collision group, or ``dedup_capacity`` when that is configured larger so
new items can still get a free dedup code without changing the vocabulary.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import numpy as np

from genrec.io import ArtifactError, read_manifest, save_npy_atomic, write_json_atomic, write_manifest

SID_DIR = "sid"
STAGE = "tokenize"
CODES_FILE = "codes.npy"
CODE_TO_ITEM_FILE = "code_to_item.json"
CHECKPOINT_FILE = "tokenizer.pt"
CODE_SEP = "-"


# ---- collisions and the dedup level ------------------------------------------------------

def _groups(codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Group id per row (n,) and size per group for identical rows of ``codes`` (n, L)."""
    if codes.shape[0] == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    _, inverse, counts = np.unique(codes, axis=0, return_inverse=True, return_counts=True)
    return inverse.reshape(-1), counts


def collision_stats(codes: np.ndarray) -> dict:
    """How many items share their full code tuple with at least one other item.

    ``n_duplicates`` = n_items - distinct tuples: the items that need a dedup code > 0. This is
    the count papers report as "collisions" (e.g. 602 for a plain RQ-VAE on Beauty, 13 for LETTER).
    """
    n = codes.shape[0]
    group, sizes = _groups(codes)
    colliding = int((sizes[group] > 1).sum()) if n else 0
    return {
        "n_items": n,
        "n_colliding_items": colliding,
        "collision_rate": colliding / n if n else 0.0,
        "n_collision_groups": int((sizes > 1).sum()),
        "largest_group": int(sizes.max()) if n else 0,
        "n_unique_tuples": int(len(sizes)),
        "n_duplicates": n - int(len(sizes)),
    }


def dedup_level(codes: np.ndarray) -> np.ndarray:
    """(n, L) -> (n,) rank of each item among the items sharing its L-tuple, in item_id order."""
    n = codes.shape[0]
    group, _ = _groups(codes)
    order = np.lexsort((np.arange(n), group))      # by group, then item_id
    sorted_group = group[order]
    starts = np.r_[0, np.flatnonzero(np.diff(sorted_group)) + 1]
    run_start = np.repeat(starts, np.diff(np.r_[starts, n]))
    dedup = np.empty(n, dtype=np.int64)
    dedup[order] = np.arange(n) - run_start
    return dedup


def _nearest_free(dists: np.ndarray, taken: set[int]) -> int | None:
    """Index of the smallest distance whose code is not taken (lowest code on ties)."""
    for code in np.argsort(dists, kind="stable"):
        if int(code) not in taken:
            return int(code)
    return None


def resolve_last_level(codes: np.ndarray, last_dists: np.ndarray) -> np.ndarray:
    """Move colliding items to their nearest *free* last-level code under the same prefix.

    codes: (n, L) nearest-code tuples; last_dists: (n, K) squared distance of each item's
    last-level residual to every last-level code. In every group of items sharing a full
    tuple, the member closest to the code keeps it (ties: lower item_id); the others take the
    nearest code that no item with the same (L-1)-prefix uses, cheapest move first. Items
    without a collision never move. When a prefix has no free code left the item keeps its
    nearest code and the dedup level separates it. Returns new (n, L) codes.
    """
    codes = codes.copy()
    n = codes.shape[0]
    group, sizes = _groups(codes)
    if n == 0 or sizes.max() <= 1:
        return codes
    item = np.arange(n)
    own = last_dists[item, codes[:, -1]]
    prefix_group, _ = _groups(codes[:, :-1])
    for pg in np.unique(prefix_group[sizes[group] > 1]):
        members = np.flatnonzero(prefix_group == pg)
        taken = {int(c) for c in codes[members, -1]}
        losers = []
        for g in np.unique(group[members]):
            tied = members[group[members] == g]
            if len(tied) > 1:
                keep = tied[np.lexsort((tied, own[tied]))[0]]
                losers.extend(int(i) for i in tied if i != keep)
        # Greedy over (loser, free code) pairs by distance: the cheapest move happens first.
        free = np.array(sorted(set(range(last_dists.shape[1])) - taken), dtype=np.int64)
        if not len(free):
            continue
        losers_arr = np.array(losers, dtype=np.int64)
        pair_d = last_dists[np.ix_(losers_arr, free)]               # (n_losers, n_free)
        flat = np.lexsort((np.arange(pair_d.size), pair_d.ravel()))
        done: set[int] = set()
        used: set[int] = set()
        for f in flat:
            li, fi = divmod(int(f), len(free))
            if li in done or fi in used:
                continue
            codes[losers_arr[li], -1] = free[fi]
            done.add(li)
            used.add(fi)
            if len(done) == len(losers_arr) or len(used) == len(free):
                break
    return codes


def add_dedup_level(codes: np.ndarray) -> np.ndarray:
    """(n, L) -> (n, L+1) with the dedup level appended."""
    return np.concatenate([codes, dedup_level(codes)[:, None]], axis=1).astype(np.int64)


def level_usage(codes: np.ndarray, level_sizes: tuple[int, ...]) -> list[dict]:
    """Per level: distinct codes used, share of the level's vocabulary, and perplexity exp(H)."""
    out = []
    for level, size in enumerate(level_sizes):
        counts = np.bincount(codes[:, level], minlength=size).astype(np.float64)
        p = counts[counts > 0] / max(counts.sum(), 1.0)
        out.append({
            "level": level,
            "size": int(size),
            "used": int((counts > 0).sum()),
            "used_fraction": float((counts > 0).sum() / size),
            "perplexity": float(np.exp(-(p * np.log(p)).sum())) if len(p) else 0.0,
        })
    return out


# ---- the artifact ------------------------------------------------------------------------

def code_key(row) -> str:
    return CODE_SEP.join(str(int(c)) for c in row)


@dataclass(frozen=True)
class SemanticIDs:
    folder: Path                    # the sid/ folder this was read from
    codes: np.ndarray               # (n_items, n_levels) int64; last column is the dedup level
    level_sizes: tuple[int, ...]    # vocabulary per level, dedup level included
    manifest: dict                  # sid/manifest.json
    checksum: str                   # sha256 of codes.npy

    @property
    def n_items(self) -> int:
        return int(self.codes.shape[0])

    @property
    def n_levels(self) -> int:
        """Code columns per item, dedup level included (what the model generates)."""
        return len(self.level_sizes)

    @property
    def level_offsets(self) -> tuple[int, ...]:
        """Start of each level in one flat vocabulary of size sum(level_sizes)."""
        return tuple(int(o) for o in np.concatenate([[0], np.cumsum(self.level_sizes)[:-1]]))

    def code_to_item(self) -> dict[tuple[int, ...], int]:
        return {tuple(int(c) for c in row): i for i, row in enumerate(self.codes)}


def sid_dir(run_or_sid_dir: str | Path) -> Path:
    path = Path(run_or_sid_dir)
    if not (path / CODES_FILE).exists() and (path / SID_DIR).is_dir():
        return path / SID_DIR
    return path


def write_semantic_ids(
    folder: Path, codes: np.ndarray, level_sizes: tuple[int, ...], *, extra_files: list[str], **manifest_fields
) -> dict:
    """Write codes.npy, code_to_item.json and manifest.json (checksums of those + ``extra_files``)."""
    codes = np.asarray(codes, dtype=np.int64)
    _check_codes(codes, level_sizes, folder / CODES_FILE)
    save_npy_atomic(folder / CODES_FILE, codes)
    write_json_atomic(folder / CODE_TO_ITEM_FILE, {code_key(row): i for i, row in enumerate(codes)})
    offsets = np.concatenate([[0], np.cumsum(level_sizes)[:-1]]).tolist()
    return write_manifest(
        folder,
        STAGE,
        files=[CODES_FILE, CODE_TO_ITEM_FILE, *extra_files],
        n_items=int(codes.shape[0]),
        n_levels=len(level_sizes),
        level_sizes=[int(k) for k in level_sizes],
        vocab={"level_offsets": offsets, "total": int(sum(level_sizes)), "dedup_level": len(level_sizes) - 1},
        **manifest_fields,
    )


def _check_codes(codes: np.ndarray, level_sizes: tuple[int, ...], where: Path) -> None:
    if codes.ndim != 2 or codes.shape[1] != len(level_sizes):
        raise ArtifactError(f"{where}: expected codes of shape (n_items, {len(level_sizes)}), got {codes.shape}")
    bad = (codes < 0) | (codes >= np.asarray(level_sizes))
    if bad.any():
        row, level = map(int, np.argwhere(bad)[0])
        raise ArtifactError(
            f"{where}: item {row} level {level} has code {codes[row, level]} outside [0, {level_sizes[level]}); "
            "the artifact is inconsistent, re-run `genrec tokenize`"
        )
    if codes.shape[0] and len(np.unique(codes, axis=0)) != codes.shape[0]:
        raise ArtifactError(f"{where}: code tuples are not unique per item; re-run `genrec tokenize`")


def load_semantic_ids(run_or_sid_dir: str | Path) -> SemanticIDs:
    """Read ``RUN/sid`` (or a sid folder given directly), verifying checksums and code ranges."""
    folder = sid_dir(run_or_sid_dir)
    manifest = read_manifest(folder, STAGE, verify=True)
    codes = np.load(folder / CODES_FILE, allow_pickle=False)
    level_sizes = tuple(int(k) for k in manifest["level_sizes"])
    _check_codes(codes, level_sizes, folder / CODES_FILE)
    return SemanticIDs(
        folder=folder, codes=codes.astype(np.int64), level_sizes=level_sizes,
        manifest=manifest, checksum=manifest["files"][CODES_FILE],
    )


# ---- new items ---------------------------------------------------------------------------

def place_new_items(
    existing: np.ndarray,
    raw: np.ndarray,
    last_dists: np.ndarray | None,
    dedup_capacity: int,
) -> np.ndarray:
    """Codes (m, L+1) for new items given the existing (n, L+1) codes, which never change.

    raw: (m, L) nearest-code tuples from the frozen tokenizer. With ``last_dists`` (m, K)
    (last_level="unique"), a new item whose tuple is taken moves to the nearest last-level code
    free under its prefix, as during tokenize. A tuple that still collides gets the smallest
    dedup code not yet used for it; new items are placed in order, so later ones see earlier ones.
    """
    used_dedup: dict[tuple[int, ...], set[int]] = {}
    used_last: dict[tuple[int, ...], set[int]] = {}
    for row in existing:
        tup = tuple(int(c) for c in row[:-1])
        used_dedup.setdefault(tup, set()).add(int(row[-1]))
        used_last.setdefault(tup[:-1], set()).add(tup[-1])
    out = np.empty((raw.shape[0], raw.shape[1] + 1), dtype=np.int64)
    for j, row in enumerate(raw):
        tup = tuple(int(c) for c in row)
        if last_dists is not None and tup in used_dedup:
            free = _nearest_free(last_dists[j], used_last.get(tup[:-1], set()))
            if free is not None:
                tup = (*tup[:-1], free)
        taken = used_dedup.setdefault(tup, set())
        dedup = next(d for d in range(len(taken) + 1) if d not in taken)
        if dedup >= dedup_capacity:
            raise ValueError(
                f"new item {j}: code tuple {tup} already holds {len(taken)} items and the dedup level has "
                f"capacity {dedup_capacity}; re-run `genrec tokenize` with a larger TokenizeConfig.dedup_capacity "
                "(this changes the vocabulary, so the model must be retrained)"
            )
        taken.add(dedup)
        used_last.setdefault(tup[:-1], set()).add(tup[-1])
        out[j] = (*tup, dedup)
    return out


def assign_new_items(sid: SemanticIDs, new_features: np.ndarray | Mapping[str, np.ndarray]) -> np.ndarray:
    """Codes (m, n_levels) for items added after tokenize, from the frozen tokenizer in ``sid``.

    new_features: an (m, d) array for a single-tokenizer (fused) artifact, or a mapping
    modality -> (m, d_modality) for a per-modality one. Existing items' codes never change;
    the new items are meant to get item_ids n_items, n_items+1, ... in the given order.
    """
    from genrec.tokenizer.stage import load_tokenizer  # torch is needed only here

    tokenizer = load_tokenizer(sid.folder / CHECKPOINT_FILE)
    matrices = tokenizer.check_inputs(new_features, source="new_features")
    raw = tokenizer.raw_codes(matrices)
    dists = tokenizer.last_level_distances(matrices, raw) if tokenizer.last_level == "unique" else None
    return place_new_items(sid.codes, raw, dists, dedup_capacity=sid.level_sizes[-1])
