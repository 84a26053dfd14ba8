"""Raw McAuley Amazon review dumps: 2014, 2018 and 2023 releases.

2014  reviews_<Cat>_5.json[.gz] (JSON lines) + meta_<Cat>.json[.gz] (Python dict literals)
2018  <Cat>_5.json[.gz] (JSON lines)          + meta_<Cat>.json[.gz] (JSON lines)
2023  <Cat>.jsonl[.gz] (JSON lines)           + meta_<Cat>.jsonl[.gz] (JSON lines), items keyed by parent_asin

Timestamps are stored as unix seconds (2023 milliseconds are floored to seconds; events within one
second keep their file order). Metadata is optional; only metadata rows of items that occur in the
reviews are parsed (a cheap regex on the id decides), so huge meta files stay fast.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import polars as pl

from genrec.data.readers.common import (
    ImageResolver, InteractionBuffer, excerpt, ItemBuffer, PriceParser, ReadContext, SourceFiles,
    find_file, iter_lines, match_files, one_category, parse_json_line, parse_literal_line, read_whole,
    require_str, require_timestamp, sniff, str_list, text_value,
)
from genrec.data.schema import RawData, conform_interactions

MS_PER_S = 1000


@dataclass(frozen=True)
class _Release:
    """Field names and parsers that differ between the releases."""

    name: str
    user_key: str
    item_key: str
    time_key: str
    time_divisor: int                            # source time units per second
    parse_review: Callable[[str], dict | None]
    parse_meta: Callable[[str], dict | None]
    meta_expected: str                           # how a meta line should look, for error messages


_R2014 = _Release("raw2014", "reviewerID", "asin", "unixReviewTime", 1, parse_literal_line, parse_literal_line,
                  "a Python dict literal such as {'asin': ..., 'title': ...}")
_R2018 = _Release("raw2018", "reviewerID", "asin", "unixReviewTime", 1, parse_json_line, parse_json_line,
                  "a JSON object such as {\"asin\": ..., \"title\": ...}")
_R2023 = _Release("raw2023", "user_id", "parent_asin", "timestamp", MS_PER_S, parse_json_line, parse_json_line,
                  "a JSON object such as {\"parent_asin\": ..., \"title\": ...}")


# ---------------------------------------------------------------------------------------------
# locating


def _with_meta(fmt: str, folder: Path, reviews: Path, category: str, meta_name: str) -> SourceFiles:
    files = {"reviews": reviews}
    meta = find_file(folder, meta_name)
    if meta is not None:
        files["meta"] = meta
    return SourceFiles(fmt, folder, category, files, metadata_roles=("meta",))


def locate_raw2014(folder: Path) -> SourceFiles | None:
    found = one_category("raw2014", folder, match_files(folder, r"reviews_(.+?)(?:_5)?\.json"), "reviews_<Cat>_5.json")
    if found is None:
        return None
    reviews, category = found
    return _with_meta("raw2014", folder, reviews, category, f"meta_{category}.json")


def locate_raw2018(folder: Path) -> SourceFiles | None:
    found = one_category("raw2018", folder, match_files(folder, r"(?!reviews_|meta_)(.+)_5\.json"), "<Cat>_5.json")
    if found is None:
        return None
    reviews, category = found
    return _with_meta("raw2018", folder, reviews, category, f"meta_{category}.json")


def _not_a_2023_review(line: str) -> str | None:
    """What keeps a line from being a 2023 review (None: it is one)."""
    obj = parse_json_line(line)
    if obj is None:
        return f"not a JSON object ({excerpt(line)})"
    missing = [k for k in ("user_id", "parent_asin") if k not in obj and not (k == "parent_asin" and "asin" in obj)]
    if missing:
        keys = ", ".join(map(str, list(obj)[:8])) + (", ..." if len(obj) > 8 else "")
        return (f"a JSON object without {' and '.join(repr(k) for k in missing)} (it has {keys or 'no keys'}); "
                "a 2023 review has user_id, parent_asin (or asin) and timestamp")
    return None


def _review_candidates_2023(folder: Path) -> list[tuple[Path, re.Match]]:
    # <Cat>.jsonl minus the names other formats use for .jsonl companions (metadata, S3-Rec keyword text).
    return [(p, m) for p, m in match_files(folder, r"(?!meta_)(.+)\.jsonl") if not m.group(1).endswith(".idgen_text")]


def locate_raw2023(folder: Path) -> SourceFiles | None:
    # <Cat>.jsonl is a generic name, so its first lines must look like 2023 reviews (see sniff).
    hits = [(p, m) for p, m in _review_candidates_2023(folder) if sniff(p, _not_a_2023_review) is None]
    found = one_category("raw2023", folder, hits, "<Cat>.jsonl review")
    if found is None:
        return None
    reviews, category = found
    return _with_meta("raw2023", folder, reviews, category, f"meta_{category}.jsonl")


def explain_raw2023(folder: Path) -> str | None:
    """Why a ``<Cat>.jsonl`` in ``folder`` is not read as 2023 reviews (None when there is no such file)."""
    for path, _ in _review_candidates_2023(folder):
        why = sniff(path, _not_a_2023_review)
        if why is not None:
            return f"{path} is named like raw2023 reviews (<Cat>.jsonl[.gz]) but {why}"
    return None


# ---------------------------------------------------------------------------------------------
# reading


def _read_reviews(release: _Release, path: Path, ctx: ReadContext) -> InteractionBuffer:
    buf = InteractionBuffer()
    for lineno, line in iter_lines(path, ctx, desc=f"reviews {path.name}"):
        obj = release.parse_review(line)
        where = f"line {lineno}"
        if obj is None:
            ctx.bad(path, where, f"expected a JSON object (one review per line), got {excerpt(line)}",
                    "not a JSON object")
            continue
        user = require_str(obj, release.user_key)
        if user is None:
            ctx.bad(path, where, f"field '{release.user_key}' (the user id) is missing or empty; expected a "
                    "non-empty string", f"missing {release.user_key}")
            continue
        item = require_str(obj, release.item_key)
        if item is None:
            ctx.bad(path, where, f"field '{release.item_key}' (the item id) is missing or empty; expected a "
                    "non-empty string", f"missing {release.item_key}")
            continue
        ts = require_timestamp(obj.get(release.time_key), release.time_divisor)
        if ts is None:
            ctx.bad(path, where, f"field '{release.time_key}' is {excerpt(obj.get(release.time_key))}; expected an "
                    "integer unix time (within the int64 range)", f"bad {release.time_key}")
            continue
        buf.add(user, item, ts)
    return buf


def _read_reviews_fast(release: _Release, path: Path, ctx: ReadContext) -> pl.DataFrame | None:
    """The events of a well-formed JSON-lines review file (2018, 2023) read by polars in one pass: the same
    rows, order and values as :func:`_read_reviews` (10M reviews in well under a minute, where the line
    reader takes many).

    None unless every line is one JSON object whose user and item ids are non-empty JSON strings and whose
    time is a JSON integer: the line reader then re-reads the file and reports or skips exactly the lines
    it always has (ids written as numbers, numeric strings as times, blank lines, ...).
    """
    data, n_lines = read_whole(path)
    if data is None:
        return None
    # every line holds each id once, as a string (polars would turn true or 5.0 into "true" and "5.0")
    for key in (release.user_key, release.item_key):
        if len(re.findall(rb'"' + key.encode() + rb'"\s*:\s*"', data)) != n_lines:
            return None
    schema = {release.user_key: pl.String, release.item_key: pl.String, release.time_key: pl.Int64}
    try:
        df = pl.read_ndjson(data, schema=schema)
    except (pl.exceptions.PolarsError, ValueError):
        return None                   # not JSON, not an object, a time that is not an integer, ...
    if df.height != n_lines:
        return None                   # blank lines: the line reader counts them
    df = df.select(pl.col(release.user_key).str.strip_chars().alias("user"),
                   pl.col(release.item_key).str.strip_chars().alias("item"),
                   pl.col(release.time_key).floordiv(release.time_divisor).alias("ts"))
    empty = [pl.col(c).is_null() | (pl.col(c) == "") for c in ("user", "item")] + [pl.col("ts").is_null()]
    if df.select(pl.any_horizontal(empty).any()).item():
        return None
    ctx.use(path)
    return conform_interactions(df)


def _first_image_2018(obj: dict) -> Any:
    for key in ("imageURLHighRes", "imageURL"):
        entries = str_list(obj.get(key))
        if entries:
            return entries[0]
    return None


def _first_image_2023(obj: dict) -> Any:
    for entry in obj.get("images") or []:
        if isinstance(entry, dict):
            for key in ("hi_res", "large", "thumb"):
                if text_value(entry.get(key)):
                    return entry[key]
        elif text_value(entry):
            return entry
    return None


def _meta_fields(release: _Release, obj: dict, price: PriceParser, image: ImageResolver) -> dict[str, Any]:
    if release is _R2014:
        # 2014 categories are a list of category paths; we keep the union of all paths in order
        # (the first path comes first), so no category is lost.
        return dict(title=text_value(obj.get("title")), description=text_value(obj.get("description")),
                    brand=text_value(obj.get("brand")), categories=str_list(obj.get("categories")),
                    price=price(obj.get("price")), image=image(obj.get("imUrl")))
    if release is _R2018:
        return dict(title=text_value(obj.get("title")), description=text_value(obj.get("description")),
                    brand=text_value(obj.get("brand")), categories=str_list(obj.get("category")),
                    price=price(obj.get("price")), image=image(_first_image_2018(obj)))
    return dict(title=text_value(obj.get("title")), description=text_value(obj.get("description")),
                brand=text_value(obj.get("store")), categories=str_list(obj.get("categories")),
                price=price(obj.get("price")), image=image(_first_image_2023(obj)))


def _read_meta(release: _Release, src: SourceFiles, wanted: set[str], ctx: ReadContext) -> ItemBuffer:
    path = src.files["meta"]
    items = ItemBuffer()
    price, image = PriceParser(), ImageResolver(src.folder)
    # Cheap pre-check of the id so lines of items without reviews are not parsed at all.
    id_re = re.compile(rf"""['"]{release.item_key}['"]\s*:\s*['"]([^'"]+)['"]""")
    unused = 0
    for lineno, line in iter_lines(path, ctx, desc=f"metadata {path.name}"):
        m = id_re.search(line)
        if m is not None and m.group(1).strip() not in wanted:
            unused += 1
            continue
        obj = release.parse_meta(line)
        where = f"line {lineno}"
        if obj is None:
            ctx.bad(path, where, f"expected {release.meta_expected}, got {excerpt(line)}", "not a dict")
            continue
        item = require_str(obj, release.item_key)
        if item is None:
            ctx.bad(path, where, f"field '{release.item_key}' is missing or empty; expected the item id",
                    f"missing {release.item_key}")
            continue
        if item not in wanted:
            unused += 1
            continue
        items.add(item, **_meta_fields(release, obj, price, image))
    if unused:
        ctx.note(f"{path.name}: {unused} metadata lines describe items without reviews; ignored.")
    price.report(ctx, path)
    image.report(ctx)
    items.report(ctx, path)
    return items


def _read(release: _Release, src: SourceFiles, ctx: ReadContext) -> RawData:
    path = src.files["reviews"]
    fast = _read_reviews_fast(release, path, ctx) if release.parse_review is parse_json_line else None
    events = fast if fast is not None else _read_reviews(release, path, ctx).frame()
    if "meta" in src.files:
        items = _read_meta(release, src, set(events["item"].unique().to_list()), ctx).frame()
    else:
        ctx.note(f"no metadata file (meta_{src.category}...) beside the reviews; items have no text.")
        items = ItemBuffer().frame()
    if release is _R2023:
        ctx.note("2023 timestamps (milliseconds) are stored as unix seconds.")
    return ctx.result(release.name, events, items)


def read_raw2014(src: SourceFiles, ctx: ReadContext) -> RawData:
    return _read(_R2014, src, ctx)


def read_raw2018(src: SourceFiles, ctx: ReadContext) -> RawData:
    return _read(_R2018, src, ctx)


def read_raw2023(src: SourceFiles, ctx: ReadContext) -> RawData:
    return _read(_R2023, src, ctx)
