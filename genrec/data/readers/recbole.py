"""RecBole / UniSRec atomic files (tab-separated, header of ``name:type`` fields).

<Cat>.inter                    ``user_id:token item_id:token [timestamp:float] ...``, one event per row
<Cat>.{train,valid,test}.inter pre-split: ``user_id:token item_id_list:token_seq item_id:token``; each row is
                               history -> target. A user's full sequence is their longest row (history +
                               target); every other row must be a prefix of it (else the lists were
                               truncated and the sequence cannot be rebuilt, which is reported per row).
<Cat>.item                     optional item features; title/description/brand/categories/price are used
<Cat>.text                     optional ``item_id:token text:token_seq`` -> ``title`` where .item has none
<Cat>.item2index / .user2index optional ``ASIN<tab>index`` / ``reviewerID<tab>index``: ids become ASINs/reviewer ids

A single ``<Cat>.inter`` wins over pre-split files of the same category (it is the complete data).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Iterator

import polars as pl

from genrec.data.readers.common import (
    DataFormatError, InteractionBuffer, ItemBuffer, PriceParser, ReadContext, SourceFiles, excerpt, find_file,
    iter_lines, match_files, one_category, read_tsv_map, read_whole, require_timestamp, split_categories, text_value,
)
from genrec.data.schema import RawData, conform_interactions

FORMAT = "recbole"
SPLITS = ("train", "valid", "test")
# .item columns we understand -> canonical field; everything else is ignored (and listed in a note)
ITEM_COLUMNS = {"title": "title", "description": "description", "brand": "brand", "categories": "categories",
                "category": "categories", "price": "price"}


def locate_recbole(folder: Path) -> SourceFiles | None:
    split_hits = match_files(folder, r"(.+)\.(?:train|valid|test)\.inter")
    single = [(p, m) for p, m in match_files(folder, r"(.+)\.inter") if not any(p == q for q, _ in split_hits)]
    files: dict[str, Path] = {}
    if single:
        path, category = one_category(FORMAT, folder, single, "<Cat>.inter")
        files["inter"] = path
    elif split_hits:
        categories = sorted({m.group(1) for _, m in split_hits})
        if len(categories) > 1:
            raise DataFormatError(f"{folder}: pre-split .inter files of several categories ({', '.join(categories)}). "
                                  "Put each category in its own folder and prepare them one at a time.")
        category = categories[0]
        for split in SPLITS:
            path = find_file(folder, f"{category}.{split}.inter")
            if path is not None:
                files[split] = path
    else:
        return None
    for role, suffix in (("item", ".item"), ("text", ".text"), ("item2index", ".item2index"),
                         ("user2index", ".user2index")):
        path = find_file(folder, f"{category}{suffix}")
        if path is not None:
            files[role] = path
    return SourceFiles(FORMAT, folder, category, files, metadata_roles=("item", "text"))


def _atomic_rows(path: Path, ctx: ReadContext, required: tuple[str, ...]) -> Iterator[tuple[int, dict[str, str]]]:
    """Rows of an atomic file as ``{base field name: raw string}``; checks the header has ``required``."""
    header: list[str] | None = None
    for lineno, line in iter_lines(path, ctx):
        parts = line.split("\t")
        if header is None:
            header = [p.split(":", 1)[0].strip() for p in parts]
            missing = [r for r in required if r not in header]
            if missing or not all(":" in p for p in parts):
                raise DataFormatError(
                    f"{path}, line 1: expected a RecBole header of 'name:type' fields including "
                    f"{', '.join(r + ':...' for r in required)}; got {excerpt(line)}. Fix the header."
                )
            continue
        if len(parts) != len(header):
            ctx.bad(path, f"line {lineno}", f"expected {len(header)} tab-separated fields ({', '.join(header)}), "
                    f"got {len(parts)}", "wrong number of fields")
            continue
        yield lineno, dict(zip(header, (p.strip() for p in parts)))


def _read_single(path: Path, ctx: ReadContext, user_key, item_key) -> InteractionBuffer:
    events = InteractionBuffer()
    for lineno, row in _atomic_rows(path, ctx, ("user_id", "item_id")):
        if not row["user_id"] or not row["item_id"]:
            ctx.bad(path, f"line {lineno}", "field 'user_id' or 'item_id' is empty; expected ids", "empty id")
            continue
        user, item = user_key(row["user_id"]), item_key(row["item_id"], path, lineno)
        ts = None
        if "timestamp" in row:
            ts = _parse_time(row["timestamp"])
            if ts is None:
                ctx.bad(path, f"line {lineno}", f"field 'timestamp' is {excerpt(row['timestamp'])}; expected a "
                        "number (unix time, within the int64 range)", "bad timestamp")
                continue
        events.add(user, item, ts)
    return events


def _read_single_fast(path: Path, ctx: ReadContext) -> pl.DataFrame | None:
    """The events of a well-formed ``<Cat>.inter`` read by polars in one pass (10M rows in seconds, where the
    line reader takes minutes): INTERACTION_SCHEMA, the same rows, order and values as :func:`_read_single`.

    None when any line is not plain (blank, not UTF-8, a wrong field count, an empty id, a timestamp that is
    not a finite number in the int64 range): the line reader then re-reads the file and reports or skips
    exactly those lines, as it always has.
    """
    data, n_lines = read_whole(path)
    if data is None:
        return None                   # the line reader names the truncated line
    first = data[: data.find(b"\n")] if b"\n" in data else data
    try:
        parts = first.decode("utf-8").rstrip("\r\n").split("\t")
    except UnicodeDecodeError:
        return None
    header = [p.split(":", 1)[0].strip() for p in parts]
    if (not all(":" in p for p in parts) or "user_id" not in header or "item_id" not in header
            or len(set(header)) < len(header)):
        return None
    try:
        df = pl.read_csv(data, separator="\t", has_header=True, new_columns=header, infer_schema=False,
                         quote_char=None, truncate_ragged_lines=False)
    except (pl.exceptions.PolarsError, ValueError):
        return None
    if df.height != n_lines - 1 or df.width != len(header):     # blank lines or ragged rows: the line reader
        return None
    columns = ["user_id", "item_id"] + (["timestamp"] if "timestamp" in header else [])
    df = df.select(pl.col(c).str.strip_chars() for c in columns)
    if df.select(pl.any_horizontal(pl.col(c).is_null() | (pl.col(c) == "") for c in columns).any()).item():
        return None
    if "timestamp" in columns:
        value = pl.col("timestamp").cast(pl.Float64, strict=False)
        df = df.with_columns(value.alias("timestamp"))
        ok = df.select((pl.col("timestamp").is_not_null() & pl.col("timestamp").is_finite()
                        & (pl.col("timestamp") >= -(2.0**63)) & (pl.col("timestamp") < 2.0**63)).all()).item()
        if not ok:
            return None
        ts = pl.col("timestamp").floor().cast(pl.Int64)
    else:
        ts = pl.lit(None, dtype=pl.Int64)
    ctx.use(path)
    return conform_interactions(df.select(pl.col("user_id").alias("user"), pl.col("item_id").alias("item"),
                                          ts.alias("ts")))


def _parse_time(text: str) -> int | None:
    """Unix time from a ``timestamp:float`` field (fractions are floored); None when not a number in the
    int64 range."""
    try:
        value = float(text)
    except ValueError:
        return None
    return require_timestamp(math.floor(value)) if math.isfinite(value) else None


def _read_splits(src: SourceFiles, ctx: ReadContext, user_key, item_key) -> InteractionBuffer:
    longest: dict[str, list[str]] = {}   # user -> longest history+target seen (insertion = first appearance)
    rows: list[tuple[Path, int, str, list[str]]] = []
    for split in SPLITS:
        if split not in src.files:
            continue
        path = src.files[split]
        for lineno, row in _atomic_rows(path, ctx, ("user_id", "item_id_list", "item_id")):
            if not row["user_id"] or not row["item_id"]:
                ctx.bad(path, f"line {lineno}", "field 'user_id' or 'item_id' is empty; expected ids", "empty id")
                continue
            user, target = user_key(row["user_id"]), row["item_id"]
            seq = [item_key(i, path, lineno) for i in row["item_id_list"].split()] + [item_key(target, path, lineno)]
            rows.append((path, lineno, user, seq))
            if len(seq) > len(longest.get(user, ())):
                longest[user] = seq
    for path, lineno, user, seq in rows:
        if longest[user][: len(seq)] != seq:
            ctx.bad(path, f"line {lineno}", f"user {user}'s history + target is not a prefix of their longest row; "
                    "expected untruncated item_id_list columns (re-export with a larger max_seq_length)",
                    "row not a prefix of the user's longest row")
    events = InteractionBuffer()
    for user, seq in longest.items():
        for item in seq:
            events.add(user, item)
    missing = [s for s in SPLITS if s not in src.files]
    if missing:
        ctx.note(f"pre-split files for {', '.join(missing)} are absent; sequences were rebuilt from the others.")
    ctx.note("sequences rebuilt from the longest pre-split row of each user; no timestamps.")
    return events


def read_recbole(src: SourceFiles, ctx: ReadContext) -> RawData:
    idx2asin = ({v: k for k, v in read_tsv_map(src.files["item2index"], ctx).items()}
                if "item2index" in src.files else None)
    idx2user = ({v: k for k, v in read_tsv_map(src.files["user2index"], ctx).items()}
                if "user2index" in src.files else None)
    asins = set(idx2asin.values()) if idx2asin else set()

    def user_key(token: str) -> str:
        return idx2user.get(token, token) if idx2user else token

    def item_key(token: str, path: Path, lineno: int) -> str:
        if idx2asin is None:
            return token
        if token not in idx2asin:
            raise DataFormatError(f"{path}, line {lineno}: item {token!r} is not in {src.files['item2index'].name}; "
                                  "the index file does not belong to this data. Fix or remove it.")
        return idx2asin[token]

    def meta_key(token: str) -> str:
        # .item/.text may be keyed by ASIN (UniSRec) or by the same ids as the .inter files.
        return token if (idx2asin is None or token in asins) else idx2asin.get(token, token)

    fast = None
    if "inter" in src.files and idx2asin is None and idx2user is None:
        fast = _read_single_fast(src.files["inter"], ctx)
    if fast is not None:
        interactions = fast
    elif "inter" in src.files:
        interactions = _read_single(src.files["inter"], ctx, user_key, item_key).frame()
    else:
        interactions = _read_splits(src, ctx, user_key, item_key).frame()

    meta = ItemBuffer()
    if "item" in src.files:
        path, price = src.files["item"], PriceParser()
        ignored: set[str] = set()
        for _, row in _atomic_rows(path, ctx, ("item_id",)):
            fields = {}
            for col, value in row.items():
                target = ITEM_COLUMNS.get(col)
                if target is None:
                    if col != "item_id":
                        ignored.add(col)
                elif target == "price":
                    fields["price"] = price(value)
                elif target == "categories":
                    fields["categories"] = split_categories(value)
                else:
                    fields[target] = text_value(value)
            meta.add(meta_key(row["item_id"]), **fields)
        price.report(ctx, path)
        meta.report(ctx, path)
        if ignored:
            ctx.note(f"{path.name}: columns not used: {', '.join(sorted(ignored))}.")
    if "text" in src.files:
        path = src.files["text"]
        for lineno, row in _atomic_rows(path, ctx, ("item_id", "text")):
            key = meta_key(row["item_id"])
            if key in meta and meta.rows[key].get("title"):
                continue
            meta.update(key, title=text_value(row["text"]))
        ctx.note(f"title holds the free text of {path.name} (UniSRec-style: title, categories and brand joined).")
    if idx2asin is not None:
        ctx.note(f"source_id is the ASIN from {src.files['item2index'].name}.")
    return ctx.result(FORMAT, interactions, meta.frame())
