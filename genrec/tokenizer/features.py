"""Reading ``RUN/features/`` for tokenize: the matrices, their missing-modality masks, and validation.

Kept apart from fitting so that every matrix a tokenizer sees, at tokenize time or for new
items later, passes the same :func:`check_matrix` and fails with the same messages.

Degenerate input is a :class:`FeatureError` naming the file, the offending rows and the fix:
NaN/inf in any row, a non-2-D matrix, zero rows or columns, or matrices whose row counts
disagree. Nothing is skipped.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from genrec.io import read_manifest, sha256_file

FEATURES_DIR = "features"
FEATURES_STAGE = "embed"
FUSED = "fused"
SEPARATE_MODALITIES = ("text", "image", "collab")   # the modalities "separate" mode looks for if the manifest
                                                    # lists none
MASK_SUFFIX = "_mask"        # <m>_mask.npy from embed: True = item has modality m (absent rows hold the mean)


class FeatureError(ValueError):
    """The features folder cannot be tokenized as it is; the message names the file and the fix."""


@dataclass
class Features:
    folder: Path
    manifest: dict
    matrices: dict[str, np.ndarray]                       # name -> (n_items, d) float32, in code order
    checksums: dict[str, str] = field(default_factory=dict)  # file name -> sha256 of the file read
    missing: dict[str, int] = field(default_factory=dict)    # modality -> items its <m>_mask.npy marks absent

    @property
    def n_items(self) -> int:
        return next(iter(self.matrices.values())).shape[0]


def check_matrix(x: np.ndarray, where: str, *, expected_dim: int | None = None) -> np.ndarray:
    """Validate one (n, d) feature matrix; return it as float32 or raise FeatureError."""
    x = np.asarray(x)
    if x.ndim != 2 or x.shape[0] == 0 or x.shape[1] == 0:
        raise FeatureError(f"{where}: expected a non-empty 2-D (n_items, dim) matrix, got shape {x.shape}; "
                           "re-run `genrec embed`")
    if not np.issubdtype(x.dtype, np.number) or np.issubdtype(x.dtype, np.complexfloating):
        raise FeatureError(f"{where}: expected real numbers, got dtype {x.dtype}")
    if expected_dim is not None and x.shape[1] != expected_dim:
        raise FeatureError(f"{where}: expected {expected_dim} columns (the tokenizer's input width), got {x.shape[1]}")
    x = x.astype(np.float32, copy=False)
    bad = ~np.isfinite(x).all(axis=1)
    if bad.any():
        rows = np.flatnonzero(bad)
        shown = ", ".join(map(str, rows[:10])) + (", ..." if len(rows) > 10 else "")
        raise FeatureError(
            f"{where}: {len(rows)} of {x.shape[0]} rows contain NaN or inf (rows {shown}). Every item needs a finite "
            "vector: fix or re-run `genrec embed` (missing modalities must be imputed there, not here)"
        )
    return x


def load_features(run: str | Path, modalities: str = "fused") -> Features:
    """Read and validate the matrices ``tokenize`` needs from RUN/features (or a features folder)."""
    folder = Path(run)
    if (folder / FEATURES_DIR).is_dir():
        folder = folder / FEATURES_DIR
    manifest = read_manifest(folder, FEATURES_STAGE)
    if modalities == "fused":
        names = [FUSED]
    else:
        # the embed manifest's modalities, a JSON object and so in sorted order (collab, image, text);
        # the order only decides which digits come first, and the sid manifest records it
        listed_modalities = list(manifest.get("modalities") or SEPARATE_MODALITIES)
        names = [m for m in listed_modalities if m != FUSED and (folder / f"{m}.npy").exists()]
    if not names:
        raise FeatureError(f"{folder}: modalities='separate' needs at least one of "
                           f"{[m + '.npy' for m in SEPARATE_MODALITIES]}; re-run `genrec embed` "
                           "or use modalities='fused'")
    listed = manifest.get("files", {})
    matrices, checksums, missing = {}, {}, {}
    for name in names:
        path = folder / f"{name}.npy"
        if not path.exists():
            raise FeatureError(f"{path} not found; run `genrec embed --run RUN` first")
        checksums[path.name] = sha256_file(path)
        if path.name in listed and listed[path.name] != checksums[path.name]:
            raise FeatureError(f"{path}: checksum differs from {folder / 'manifest.json'}; the file changed after "
                               "`genrec embed` wrote it: re-run `genrec embed`")
        matrices[name] = check_matrix(np.load(path, allow_pickle=False), str(path))
        mask_path = folder / f"{name}{MASK_SUFFIX}.npy"
        if mask_path.exists():
            missing[name] = int((~np.load(mask_path, allow_pickle=False).astype(bool)).sum())
    rows = {name: m.shape[0] for name, m in matrices.items()}
    if len(set(rows.values())) > 1:
        raise FeatureError(f"{folder}: feature matrices disagree on the number of items {rows}; re-run `genrec embed`")
    expected = manifest.get("n_items")
    if expected is not None and int(expected) != next(iter(rows.values())):
        raise FeatureError(f"{folder}: manifest says n_items={expected} but the matrices have {rows}; "
                           "re-run `genrec embed`")
    return Features(folder=folder, manifest=manifest, matrices=matrices, checksums=checksums, missing=missing)


def missing_notes(features: Features) -> list[str]:
    """Report notes for items that lack a modality: they share that modality's codes."""
    return [f"{name}: {n} items lack this modality (embed filled their rows with the mean), so they share its codes"
            if name != FUSED else f"{name}: {n} rows marked missing"
            for name, n in features.missing.items() if n]
