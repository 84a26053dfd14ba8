"""Semantic IDs as data: collision handling, the dedup digit, and the ``sid/`` artifact.

numpy/stdlib only, so the torch-free decoding and serving paths can read ``sid/``. Running
the frozen tokenizer on new items lives in ``tokenizer.py`` (it needs torch).

Terms (also in ``config.py``): a *level* is one quantization step of one tokenizer and
``n_levels`` counts them per tokenizer, without the dedup digit; a *digit* is one column of
an item's ID, ``n_digits = n_levels * len(modalities) + 1``, the last one being the dedup digit.

``sid/`` layout (written by ``genrec tokenize``):

codes.npy           (n_items, n_digits) int64; row i is item_id i (this is the item -> code map).
                    The last column is the dedup digit.
code_to_item.json   {"c0-c1-...": item_id}: the code -> item map.
tokenizer.pt        frozen tokenizer: per-modality model configs + state_dicts (see tokenizer.py).
report.json/.png    code usage, perplexity, collisions, reconstruction error.
manifest.json       stage="tokenize", method, modalities, n_levels, n_digits, dedup_digit,
                    level_sizes (one vocabulary size per *digit*; the name is what the model,
                    trie and export read), vocab, input feature checksums, config.

The dedup digit: items whose semantic tuple is shared get an extra last code 0, 1, 2, ... in
item_id order; an item with a unique tuple gets 0. Its vocabulary size (``level_sizes[-1]``)
is the largest collision group, or ``dedup_capacity`` when that is configured larger so
new items can still get a free dedup code without changing the vocabulary.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
import numpy as np

from genrec.io import ArtifactError, read_manifest, save_npy_atomic, write_json_atomic, write_manifest

SID_DIR = "sid"
STAGE = "tokenize"
CODES_FILE = "codes.npy"
CODE_TO_ITEM_FILE = "code_to_item.json"
CHECKPOINT_FILE = "tokenizer.pt"
CODE_SEP = "-"


# ---- collisions and the dedup digit ------------------------------------------------------

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
    nearest code and the dedup digit separates it. Returns new (n, L) codes.
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
    """(n, L) -> (n, L+1) with the dedup digit appended."""
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
    codes: np.ndarray               # (n_items, n_digits) int64; last column is the dedup digit
    level_sizes: tuple[int, ...]    # vocabulary per digit, dedup digit included
    manifest: dict                  # sid/manifest.json
    checksum: str                   # sha256 of codes.npy

    @property
    def n_items(self) -> int:
        return int(self.codes.shape[0])

    @property
    def n_digits(self) -> int:
        """Code columns per item, dedup digit included (what the model generates)."""
        return len(self.level_sizes)

    @property
    def modalities(self) -> list[str]:
        """One tokenizer per entry, in digit order."""
        return list(self.manifest.get("modalities") or ["fused"])

    @property
    def n_levels(self) -> int:
        """Levels per tokenizer, dedup digit not counted (TokenizeConfig.n_levels)."""
        if "n_digits" in self.manifest:
            return int(self.manifest["n_levels"])
        # written before n_digits was recorded, when the manifest's n_levels counted every digit
        return (self.n_digits - 1) // len(self.modalities)

    @property
    def method(self) -> str:
        """The tokenize method ("rqvae", "rqkmeans" or "pq"): what kind of digits these are."""
        return str(self.manifest.get("method") or (self.manifest.get("config") or {}).get("method", "rqvae"))

    @property
    def level_offsets(self) -> tuple[int, ...]:
        """Start of each digit's codes in one flat vocabulary of size sum(level_sizes)."""
        return tuple(int(o) for o in np.concatenate([[0], np.cumsum(self.level_sizes)[:-1]]))

    def level_weights(self, modality_weights: dict[str, float] | None) -> list[float] | None:
        """One decoding weight per digit from weights per modality (``model.modality_weights``, e.g.
        ``{"text": 0.33}``): each modality's ``n_levels`` digits get its weight (1 when not named), the dedup
        digit 1. None or {} -> None (all 1). Per-modality weights need codes tokenized per modality; fused
        codes have one name, "fused", whose weight scales every digit against the item logit."""
        from genrec.decode.weighted import check_modality_weights

        if not modality_weights:
            return None
        modality_weights = check_modality_weights(modality_weights)
        names = self.modalities
        unknown = sorted(set(modality_weights) - set(names))
        if unknown:
            hint = (" (fused codes mix every modality in each digit: tokenize with `--modalities separate` to "
                    "weight one)" if names == ["fused"] else "")
            raise ValueError(f"modality_weights names {unknown}, but {self.folder} has digits for {names}{hint}")
        weights = [modality_weights.get(name, 1.0) for name in names for _ in range(self.n_levels)]
        return weights + [1.0] * (self.n_digits - len(weights))     # the dedup digit

    def code_to_item(self) -> dict[tuple[int, ...], int]:
        return {tuple(int(c) for c in row): i for i, row in enumerate(self.codes)}


def sid_dir(run_or_sid_dir: str | Path) -> Path:
    path = Path(run_or_sid_dir)
    if not (path / CODES_FILE).exists() and (path / SID_DIR).is_dir():
        return path / SID_DIR
    return path


def write_semantic_ids(
    folder: Path, codes: np.ndarray, level_sizes: tuple[int, ...], *, extra_files: list[str],
    n_levels: int | None = None, **manifest_fields
) -> dict:
    """Write codes.npy, code_to_item.json and manifest.json (checksums of those + ``extra_files``).

    ``n_levels``: levels per tokenizer, dedup digit not counted (default: one tokenizer, so every
    digit but the dedup one). ``manifest_fields`` (method, modalities, config, ...) are stored as given.
    """
    codes = np.asarray(codes, dtype=np.int64)
    _check_codes(codes, level_sizes, folder / CODES_FILE)
    n_digits = len(level_sizes)
    n_levels = n_digits - 1 if n_levels is None else int(n_levels)
    n_tokenizers = len(manifest_fields.get("modalities") or [None])
    if n_levels * n_tokenizers + 1 != n_digits:
        raise ArtifactError(f"{folder}: {n_digits} digits cannot be {n_tokenizers} tokenizer(s) x n_levels={n_levels} "
                            "+ 1 dedup digit; this is a bug in the caller of write_semantic_ids")
    save_npy_atomic(folder / CODES_FILE, codes)
    write_json_atomic(folder / CODE_TO_ITEM_FILE, {code_key(row): i for i, row in enumerate(codes)})
    offsets = np.concatenate([[0], np.cumsum(level_sizes)[:-1]]).tolist()
    return write_manifest(
        folder,
        STAGE,
        files=[CODES_FILE, CODE_TO_ITEM_FILE, *extra_files],
        n_items=int(codes.shape[0]),
        n_levels=n_levels,                 # per tokenizer, dedup digit not counted
        n_digits=n_digits,                 # columns of codes.npy, dedup digit included
        dedup_digit=n_digits - 1,          # index of the dedup digit (always the last)
        level_sizes=[int(k) for k in level_sizes],
        vocab={"level_offsets": offsets, "total": int(sum(level_sizes))},
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
    if "n_digits" in manifest and int(manifest["n_digits"]) != len(level_sizes):
        raise ArtifactError(f"{folder / 'manifest.json'}: n_digits={manifest['n_digits']} but level_sizes has "
                            f"{len(level_sizes)} entries; the artifact is inconsistent, re-run `genrec tokenize`")
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
                f"new item {j}: code tuple {tup} already holds {len(taken)} items and the dedup digit has "
                f"capacity {dedup_capacity}; re-run `genrec tokenize` with a larger TokenizeConfig.dedup_capacity "
                "(this changes the vocabulary, so the model must be retrained)"
            )
        taken.add(dedup)
        used_last.setdefault(tup[:-1], set()).add(tup[-1])
        out[j] = (*tup, dedup)
    return out

