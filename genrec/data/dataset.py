"""Load a prepared ``RUN/dataset/`` folder for the later stages."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import polars as pl

from genrec.data.split import DEFAULT_MAX_ITEMS, Split, make_split
from genrec.io import read_manifest

DATASET_DIR = "dataset"


@dataclass
class Dataset:
    folder: Path
    manifest: dict
    items: pl.DataFrame        # ITEM_SCHEMA, row i has item_id i
    sequences: list[np.ndarray]  # per user, chronological dense item ids
    timestamps: list[np.ndarray | None]

    @property
    def n_items(self) -> int:
        return self.items.height

    @property
    def n_users(self) -> int:
        return len(self.sequences)

    @cached_property
    def split(self) -> Split:
        return make_split(self.manifest.get("split"), self.sequences, self.timestamps)

    @property
    def max_items(self) -> int:
        """The protocol's history length, as ``prepare`` recorded it (PrepareConfig.max_items)."""
        return int(self.manifest.get("max_items", DEFAULT_MAX_ITEMS))

    @property
    def name(self) -> str:
        return self.manifest.get("name") or self.folder.parent.name


def dataset_dir(run: str | Path) -> Path:
    return Path(run) / DATASET_DIR


def load_dataset(run_or_folder: str | Path) -> Dataset:
    """Load ``RUN/dataset`` (or a dataset folder given directly)."""
    folder = Path(run_or_folder)
    if not (folder / "items.parquet").exists() and (folder / DATASET_DIR).exists():
        folder = folder / DATASET_DIR
    manifest = read_manifest(folder, "prepare")
    items = pl.read_parquet(folder / "items.parquet")
    seqs = pl.read_parquet(folder / "sequences.parquet").sort("user_id")
    sequences = [np.asarray(s, dtype=np.int64) for s in seqs["item_ids"].to_list()]
    timestamps = [None if t is None else np.asarray(t, dtype=np.int64) for t in seqs["timestamps"].to_list()]
    return Dataset(folder=folder, manifest=manifest, items=items, sequences=sequences, timestamps=timestamps)
