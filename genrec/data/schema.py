"""The canonical dataset contract every reader produces and every later stage reads.

A reader returns a :class:`RawData` (string ids, as found in the source). ``prepare`` then
filters it, assigns dense 0-based ids and writes ``dataset/``:

items.parquet      one row per item, ``item_id`` dense 0-based, sorted by item_id
sequences.parquet  one row per user, ``item_ids`` in chronological order
manifest.json      counts, filters, source files + checksums, versions
"""

from __future__ import annotations

from dataclasses import dataclass, field

import polars as pl

# Item metadata columns. Missing values are null, never "" or "None".
ITEM_SCHEMA: dict[str, pl.DataType] = {
    "item_id": pl.Int32,
    "source_id": pl.Utf8,
    "title": pl.Utf8,
    "description": pl.Utf8,
    "brand": pl.Utf8,
    "categories": pl.List(pl.Utf8),
    "price": pl.Float64,
    "image": pl.Utf8,           # local path or URL
    "attributes": pl.List(pl.Utf8),
}

SEQUENCE_SCHEMA: dict[str, pl.DataType] = {
    "user_id": pl.Int32,
    "source_user_id": pl.Utf8,
    "item_ids": pl.List(pl.Int32),      # chronological
    "timestamps": pl.List(pl.Int64),    # null when the source has only order
}

# What a reader returns for interactions: one row per (user, item, time) event.
# ``ts`` may be null (order-only sources); ``pos`` is the event's position in the source,
# used as the tie-breaker so the original chronological order is kept.
INTERACTION_SCHEMA: dict[str, pl.DataType] = {
    "user": pl.Utf8,
    "item": pl.Utf8,
    "ts": pl.Int64,
    "pos": pl.Int64,
}

# Item metadata as a reader returns it: keyed by source id (``item``), other columns as ITEM_SCHEMA.
RAW_ITEM_SCHEMA: dict[str, pl.DataType] = {"item": pl.Utf8} | {
    k: v for k, v in ITEM_SCHEMA.items() if k not in ("item_id", "source_id")
}


@dataclass
class RawData:
    """A source folder parsed into string-keyed frames, before filtering and re-indexing."""

    format: str                      # detected or forced format name
    interactions: pl.DataFrame       # INTERACTION_SCHEMA
    items: pl.DataFrame              # RAW_ITEM_SCHEMA; may lack rows for some interacted items
    files_used: list[str]            # absolute paths of the files that were read
    skipped: dict[str, int] = field(default_factory=dict)  # reason -> number of skipped lines
    notes: list[str] = field(default_factory=list)         # human-readable remarks for the summary


def empty_items() -> pl.DataFrame:
    return pl.DataFrame(schema=RAW_ITEM_SCHEMA)


def conform_items(df: pl.DataFrame) -> pl.DataFrame:
    """Add missing metadata columns as nulls, cast to RAW_ITEM_SCHEMA, turn blank strings into null."""
    cols = []
    for name, dtype in RAW_ITEM_SCHEMA.items():
        if name in df.columns:
            col = pl.col(name).cast(dtype)
        else:
            col = pl.lit(None, dtype=dtype).alias(name)
        if dtype == pl.Utf8 and name != "item":
            col = pl.when(col.str.strip_chars() == "").then(None).otherwise(col.str.strip_chars()).alias(name)
        cols.append(col)
    return df.select(cols).unique(subset="item", keep="first", maintain_order=True)


def conform_interactions(df: pl.DataFrame) -> pl.DataFrame:
    if "pos" not in df.columns:
        df = df.with_row_index("pos")
    if "ts" not in df.columns:
        df = df.with_columns(pl.lit(None, dtype=pl.Int64).alias("ts"))
    return df.select([pl.col(k).cast(v) for k, v in INTERACTION_SCHEMA.items()])
