"""Interaction filters applied by ``prepare``: chronological order, consecutive dedup, iterated k-core.

All functions take and return frames with INTERACTION_SCHEMA columns (user, item, ts, pos).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import polars as pl


@dataclass(frozen=True)
class FilterReport:
    """What the filters removed, for the manifest and the summary table."""

    n_input: int               # interactions read from the source
    dedup_removed: int         # consecutive repeats dropped (0 when dedup is off)
    core_removed: int          # interactions dropped by k-core / minimum length
    removed_users: int         # users that lost all their interactions
    removed_items: int         # items that lost all their interactions
    rounds: int                # filter passes until nothing changed (including the final, no-op pass)

    def to_dict(self) -> dict:
        return asdict(self)


def chronological(df: pl.DataFrame) -> pl.DataFrame:
    """Group events by user (users in order of first appearance in the source), each by (ts, pos).

    ``pos`` breaks timestamp ties, so equal-time events keep their source order; order-only sources
    (ts null) are ordered by ``pos`` alone.
    """
    return (
        df.with_columns(pl.col("pos").min().over("user").alias("_first"))
        .sort(["_first", "ts", "pos"], nulls_last=True, maintain_order=True)
        .drop("_first")
    )


def dedup_consecutive(df: pl.DataFrame) -> pl.DataFrame:
    """Drop an event whose item equals the same user's previous item. ``df`` must be chronological."""
    prev = pl.col("item").shift(1).over("user")
    return df.filter(prev.is_null() | (pl.col("item") != prev))


def k_core_pass(df: pl.DataFrame, user_min: int, item_min: int) -> pl.DataFrame:
    """One pass: drop users with fewer than ``user_min`` events, then items with fewer than ``item_min``."""
    if user_min > 1:
        df = df.filter(pl.len().over("user") >= user_min)
    if item_min > 1:
        df = df.filter(pl.len().over("item") >= item_min)
    return df


def apply_filters(df: pl.DataFrame, *, dedup: bool, user_core: int, item_core: int,
                  min_seq_len: int) -> tuple[pl.DataFrame, FilterReport]:
    """Chronological order, then dedup + k-core + minimum length repeated until nothing changes.

    The minimum sequence length is a user threshold inside the loop (max(user_core, min_seq_len)),
    and dedup runs inside it too, because dropping an item can make two equal items adjacent.
    At the end every user has >= max(user_core, min_seq_len) events, every item >= item_core,
    and (with dedup) no user has the same item twice in a row. Counts are over events, so a
    repeated purchase counts twice.
    """
    df = chronological(df)
    n_input = df.height
    users_in, items_in = df["user"].n_unique(), df["item"].n_unique()
    user_min = max(user_core, min_seq_len)
    dedup_removed = core_removed = rounds = 0
    while True:
        rounds += 1
        before = df.height
        if dedup:
            n = df.height
            df = dedup_consecutive(df)
            dedup_removed += n - df.height
        n = df.height
        df = k_core_pass(df, user_min, item_core)
        core_removed += n - df.height
        if df.height == before:
            break
    report = FilterReport(
        n_input=n_input, dedup_removed=dedup_removed, core_removed=core_removed,
        removed_users=users_in - df["user"].n_unique(), removed_items=items_in - df["item"].n_unique(),
        rounds=rounds,
    )
    return df, report
