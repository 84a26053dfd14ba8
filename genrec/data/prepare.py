"""Stage ``prepare``: a source folder in any supported format -> ``RUN/dataset/``.

read (format reader) -> filter (dedup, k-core, min length) -> dense ids -> write atomically.

Dense ids: users are numbered in order of first appearance in the source; items in order of first
appearance when walking those users' chronological sequences in that order. For S3-Rec files this
reproduces the original numbering shifted to 0-based (S3-Rec item k -> item_id k-1, the LC-Rec id).
"""

from __future__ import annotations

import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import polars as pl

from genrec.data.dataset import dataset_dir
from genrec.data.detect import detect_format, locate
from genrec.data.filters import FilterReport, apply_filters
from genrec.data.readers import FORMATS, DataFormatError, ReadContext, get_reader
from genrec.data.readers.common import ON_ERROR_CHOICES, SourceFiles
from genrec.data.schema import ITEM_SCHEMA, SEQUENCE_SCHEMA, RawData
from genrec.data.split import DEFAULT_MAX_ITEMS, MIN_LEN_LEAVE_ONE_OUT, SPLITS, make_split, temporal_cuts
from genrec.io import input_checksums, write_folder_atomic, write_manifest

ITEMS_FILE = "items.parquet"
SEQUENCES_FILE = "sequences.parquet"
# Metadata columns whose coverage (non-null count) is reported.
METADATA_FIELDS = tuple(k for k in ITEM_SCHEMA if k not in ("item_id", "source_id"))
# Free-text columns whose length PrepareConfig.max_text_chars caps.
TEXT_FIELDS = ("title", "description", "brand")
TIMESTAMP_UNIT = "unix seconds"
# Fixed parquet writer settings so re-running prepare gives byte-identical files.
PARQUET_OPTIONS = dict(compression="zstd", compression_level=3, statistics=True)

__all__ = ["FORMATS", "PrepareConfig", "detect_format", "format_summary", "prepare"]


@dataclass
class PrepareConfig:
    """Filters and input policy of the prepare stage (every field is a CLI flag)."""

    user_core: int = 5                         # keep users with >= this many events (iterated k-core); 0/1 = off
    item_core: int = 5                         # keep items with >= this many events (iterated k-core); 0/1 = off
    min_seq_len: int = MIN_LEN_LEAVE_ONE_OUT   # drop shorter users; leave-one-out needs >= 3
    dedup_consecutive: bool = False            # collapse a user's immediate repeats of an item (off: repeat
                                               # purchases are signal, and the published counts keep them)
    split: str = "leave_one_out"               # "leave_one_out" (the protocol) or "temporal" (global time cuts;
                                               # needs timestamps)
    valid_from: float = 0.8                    # temporal: the validation window opens at this quantile of event times
    test_from: float = 0.9                     # temporal: the test window opens at this quantile of event times
    max_items: int = DEFAULT_MAX_ITEMS         # history length of the protocol: a model sees at most the last
                                               # this-many items before a target (genrec and SASRec read it here)
    max_text_chars: int = 50_000               # longer title/description/brand values are cut to this many
                                               # characters and counted (the text encoder reads ~128 tokens, and
                                               # one 11 MB title made embed 8x slower); 0 = no cap. Real data's
                                               # longest field (an Office description) is 41,043 characters
    on_error: str = "raise"                    # malformed line: "raise" an error, or "skip" it and count it
    progress: bool = True                      # tqdm bars on large files and the printed summary table

    def __post_init__(self) -> None:
        for name in ("user_core", "item_core", "min_seq_len", "max_items", "max_text_chars"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"PrepareConfig.{name} must be an integer >= 0, got {value!r}")
        if self.min_seq_len < 1:
            raise ValueError(f"PrepareConfig.min_seq_len must be >= 1 (leave-one-out needs "
                             f"{MIN_LEN_LEAVE_ONE_OUT}), got {self.min_seq_len}")
        if self.max_items < 1:
            raise ValueError(f"PrepareConfig.max_items must be >= 1 (history items per example), got {self.max_items}")
        if self.split not in SPLITS:
            raise ValueError(f"PrepareConfig.split must be one of {SPLITS}, got {self.split!r}")
        if not 0.0 < self.valid_from <= self.test_from < 1.0:
            raise ValueError(f"PrepareConfig needs 0 < valid_from <= test_from < 1 (quantiles of event times), "
                             f"got valid_from={self.valid_from}, test_from={self.test_from}")
        if self.on_error not in ON_ERROR_CHOICES:
            raise ValueError(f"PrepareConfig.on_error must be one of {ON_ERROR_CHOICES}, got {self.on_error!r}")
        for name in ("dedup_consecutive", "progress"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"PrepareConfig.{name} must be true or false, got {getattr(self, name)!r}")


def prepare(source: str | Path, run: str | Path, config: PrepareConfig | None = None, fmt: str | None = None,
            name: str | None = None) -> dict:
    """Read ``source`` (format detected unless ``fmt`` is given), filter, re-index, write ``RUN/dataset/``.

    Returns the manifest that was written. ``name`` defaults to the source folder's name.
    """
    config = config or PrepareConfig()
    folder = Path(source)
    files = _locate(folder, fmt)
    raw = get_reader(files.format).read(files, ReadContext(on_error=config.on_error, progress=config.progress))
    raw.notes.extend(files.notes)
    if raw.interactions.height == 0:
        skipped = f" ({sum(raw.skipped.values())} lines skipped: {', '.join(raw.skipped)})" if raw.skipped else ""
        raise DataFormatError(f"{', '.join(raw.files_used)}: no interactions found{skipped}; expected "
                              f"{get_reader(files.format).expects}. Check the file (is it empty?) and download it "
                              "again if needed.")
    events, report = apply_filters(raw.interactions, dedup=config.dedup_consecutive, user_core=config.user_core,
                                   item_core=config.item_core, min_seq_len=config.min_seq_len)
    if events.height == 0:
        raise ValueError(
            f"{folder}: no interactions left after filtering ({report.n_input} read; user_core={config.user_core}, "
            f"item_core={config.item_core}, min_seq_len={config.min_seq_len}). Lower the thresholds."
        )
    sequences, items, missing = build_tables(events, raw.items)
    items, truncated = cap_text(items, config.max_text_chars)
    if truncated:
        counts = ", ".join(f"{k}: {v:,}" for k, v in truncated.items())
        raw.notes.append(f"text values longer than max_text_chars={config.max_text_chars:,} were cut to it ({counts}).")
        print(f"genrec prepare: warning: {sum(truncated.values()):,} text values were longer than "
              f"max_text_chars={config.max_text_chars:,} characters and were cut ({counts}); raise --max-text-chars "
              "to keep more", file=sys.stderr, flush=True)
    fields = _manifest_fields(folder, files, raw, config, report, sequences, items, missing, name)
    fields["truncated_texts"] = truncated
    fields["split"] = split_spec(folder, sequences, config, fields["format"])
    target = dataset_dir(run)

    def write(tmp: Path) -> dict:
        items.write_parquet(tmp / ITEMS_FILE, **PARQUET_OPTIONS)
        sequences.write_parquet(tmp / SEQUENCES_FILE, **PARQUET_OPTIONS)
        return write_manifest(tmp, "prepare", files=[ITEMS_FILE, SEQUENCES_FILE],
                              inputs=input_checksums(run, raw.files_used), config=asdict(config), **fields)

    manifest = write_folder_atomic(target, write)
    if config.progress:
        print(format_summary(manifest, target))
    return manifest


def split_spec(folder: Path, sequences: pl.DataFrame, config: PrepareConfig, fmt: str) -> dict:
    """The manifest's ``split`` entry: its kind, and for a temporal split the cut times and window sizes."""
    if config.split == "leave_one_out":
        return {"kind": "leave_one_out"}
    if sequences["timestamps"].null_count():
        raise ValueError(f"{folder}: split 'temporal' needs a timestamp per interaction, but this {fmt} source "
                         "has only their order; prepare it with --split leave_one_out.")
    times = sequences["timestamps"].explode().to_numpy()
    valid_cut, test_cut = temporal_cuts(times, config.valid_from, config.test_from)
    spec = {"kind": "temporal", "valid_from": config.valid_from, "test_from": config.test_from,
            "valid_cut": valid_cut, "test_cut": test_cut}
    seqs = [s.to_numpy() for s in sequences["item_ids"]]
    stamps = [t.to_numpy() for t in sequences["timestamps"]]
    split = make_split(spec, seqs, stamps)
    for name, window in (("valid", split.valid), ("test", split.test)):
        if len(window) == 0:
            raise ValueError(f"{folder}: the temporal {name} window is empty (no user has an event in it and one "
                             "before it); move valid_from / test_from.")
    n_train_events = sum(len(t) for t in split.train)
    return {**spec, "n_train_events": n_train_events, "n_valid_users": len(split.valid),
            "n_test_users": len(split.test)}


def _locate(folder: Path, fmt: str | None) -> SourceFiles:
    if fmt is None:
        return locate(folder)
    reader = get_reader(fmt)
    if not folder.is_dir():
        raise DataFormatError(f"{folder}: not a folder. Pass the folder that holds the source files.")
    files = reader.locate(folder)
    if files is None:
        raise DataFormatError(reader.explain(folder) or (
            f"{folder}: no '{fmt}' files found; expected {reader.expects}. Check the folder "
            f"or drop --format to detect the format (found: {_detect_or_none(folder)})."))
    return files


def _detect_or_none(folder: Path) -> str:
    try:
        return detect_format(folder)
    except DataFormatError:
        return "no known format"


def build_tables(events: pl.DataFrame, raw_items: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame, int]:
    """Dense ids, SEQUENCE_SCHEMA and ITEM_SCHEMA frames, and the number of items without metadata.

    ``events`` must be chronological per user with users in order of first appearance (as
    :func:`genrec.data.filters.apply_filters` returns them).
    """
    user_map = pl.DataFrame({"user": events["user"].unique(maintain_order=True)}).with_row_index("user_id")
    item_map = pl.DataFrame({"item": events["item"].unique(maintain_order=True)}).with_row_index("item_id")
    has_ts = events["ts"].null_count() == 0
    indexed = (events.join(user_map, on="user", how="left", maintain_order="left")
               .join(item_map, on="item", how="left", maintain_order="left"))
    sequences = (
        indexed.group_by("user_id", maintain_order=True)
        .agg(pl.col("user").first().alias("source_user_id"), pl.col("item_id").alias("item_ids"),
             pl.col("ts").alias("timestamps"))
        .with_columns(pl.col("timestamps") if has_ts else pl.lit(None).alias("timestamps"))
        .sort("user_id")
        .select([pl.col(k).cast(v) for k, v in SEQUENCE_SCHEMA.items()])
    )
    meta = raw_items.with_columns(pl.lit(True).alias("_has_meta"))
    items = (
        item_map.join(meta, on="item", how="left", maintain_order="left")
        .rename({"item": "source_id"})
        .sort("item_id")
    )
    missing = int(items["_has_meta"].null_count())
    items = items.select([pl.col(k).cast(v) for k, v in ITEM_SCHEMA.items()])
    return sequences, items, missing


def cap_text(items: pl.DataFrame, max_chars: int) -> tuple[pl.DataFrame, dict[str, int]]:
    """``items`` with TEXT_FIELDS values cut to ``max_chars`` characters (0 = no cap), and how many were
    cut per column (only columns with cuts)."""
    if not max_chars:
        return items, {}
    counts = items.select((pl.col(c).str.len_chars() > max_chars).sum().alias(c)
                          for c in TEXT_FIELDS).row(0, named=True)
    truncated = {c: int(n) for c, n in counts.items() if n}
    if truncated:
        items = items.with_columns(pl.col(c).str.slice(0, max_chars) for c in truncated)
    return items, truncated


def _manifest_fields(folder: Path, files: SourceFiles, raw: RawData, config: PrepareConfig, report: FilterReport,
                     sequences: pl.DataFrame, items: pl.DataFrame, missing: int, name: str | None) -> dict:
    lengths = sequences["item_ids"].list.len()
    n_meta_rows = raw.items.height
    used_meta = int(raw.items["item"].is_in(items["source_id"].implode()).sum())
    notes = list(raw.notes)
    if missing:
        notes.append(f"{missing} of {items.height} items occur in interactions but have no metadata row; "
                     "their metadata fields are null.")
    if n_meta_rows - used_meta:
        notes.append(f"{n_meta_rows - used_meta} metadata rows describe items not in the final dataset; ignored.")
    has_ts = sequences["timestamps"].null_count() == 0
    return dict(
        name=name or folder.resolve().name,
        format=raw.format,
        category=files.category,
        source=str(folder.resolve()),
        max_items=config.max_items,
        filters=report.to_dict(),
        n_users=sequences.height,
        n_items=items.height,
        n_interactions=int(lengths.sum()),
        seq_len={"mean": round(float(lengths.mean()), 4), "min": int(lengths.min()), "max": int(lengths.max())},
        has_timestamps=bool(has_ts),
        timestamp_unit=TIMESTAMP_UNIT if has_ts else None,
        skipped=raw.skipped,
        n_skipped_lines=int(sum(raw.skipped.values())),
        items_missing_metadata=missing,
        metadata_coverage={f: int(items.height - items[f].null_count()) for f in METADATA_FIELDS},
        id_order="users: first appearance in the source; items: first appearance along users' chronological "
                 "sequences in user order",
        notes=notes,
    )


def _split_summary(spec: dict | None) -> str:
    if not spec or spec["kind"] == "leave_one_out":
        return f"{'leave-one-out':>12}"
    return (f"{'temporal':>12}   (cuts at the {spec['valid_from']:g} / {spec['test_from']:g} quantiles of event "
            f"times; {spec['n_train_events']:,} training events, {spec['n_valid_users']:,} valid users, "
            f"{spec['n_test_users']:,} test users)")


def format_summary(manifest: dict, folder: str | Path | None = None) -> str:
    """A plain-text table of a prepare manifest: counts, lengths, filters, coverage, skips, notes."""
    n_items = manifest["n_items"]
    seq, flt = manifest["seq_len"], manifest["filters"]
    where = f" -> {folder}" if folder is not None else ""
    lines = [
        f"dataset {manifest['name']!r} (format {manifest['format']}){where}",
        f"  {'users':<24}{manifest['n_users']:>12,}",
        f"  {'items':<24}{n_items:>12,}",
        f"  {'interactions':<24}{manifest['n_interactions']:>12,}",
        f"  {'sequence length':<24}{'mean':>8} {seq['mean']:.3f}  min {seq['min']}  max {seq['max']}",
        f"  {'timestamps':<24}{manifest['timestamp_unit'] or 'none (order only)':>12}",
        f"  {'split':<24}{_split_summary(manifest.get('split'))}",
        f"  {'read':<24}{flt['n_input']:>12,}",
        f"  {'dedup removed':<24}{flt['dedup_removed']:>12,}",
        f"  {'k-core/min-len removed':<24}{flt['core_removed']:>12,}   "
        f"({flt['removed_users']:,} users, {flt['removed_items']:,} items, {flt['rounds']} passes)",
        "metadata coverage (items with a value)",
    ]
    for f, count in manifest["metadata_coverage"].items():
        share = 100.0 * count / n_items if n_items else 0.0
        lines.append(f"  {f:<24}{count:>12,}  {share:6.1f}%")
    lines.append(f"  {'missing metadata row':<24}{manifest['items_missing_metadata']:>12,}")
    lines.append(f"skipped lines: {manifest['n_skipped_lines']:,}")
    for reason, count in manifest["skipped"].items():
        lines.append(f"  {reason:<60}{count:>10,}")
    if manifest["notes"]:
        lines.append("notes")
        lines.extend(f"  - {note}" for note in manifest["notes"])
    return "\n".join(lines)
