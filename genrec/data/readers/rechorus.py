"""ReChorus CSV files (tab-separated, with a header), e.g. the LRD release of Amazon Office.

train.csv / dev.csv / test.csv   ``user_id item_id time [neg_items]``; read in that order, so events with
                                 equal times keep train -> dev -> test order; ``neg_items`` is ignored
item_meta.csv                    optional ``item_id i_<feature> ... r_<relation> ...``: each non-zero
                                 ``i_*`` value becomes an attribute ``"<column>_<value>"`` (0 = unknown);
                                 ``r_*`` relation lists are not item metadata and are ignored
<Cat>.item2index                 optional ``ASIN<tab>item_id``: items are keyed (``source_id``) by ASIN
<Cat>.text                       optional ``id<tab>text`` (ASIN or item_id) -> ``title``
"""

from __future__ import annotations

from pathlib import Path

from genrec.data.readers.common import (
    DataFormatError, InteractionBuffer, ItemBuffer, ReadContext, SourceFiles, excerpt, find_companion, find_file,
    iter_lines, match_files, read_tsv_map, require_int, require_timestamp, sniff, text_value,
)
from genrec.data.schema import RawData

FORMAT = "rechorus"
SPLIT_FILES = ("train", "dev", "test")
UNKNOWN_FEATURE = 0  # ReChorus encodes a missing categorical feature as 0


def _not_a_header(line: str) -> str | None:
    header = [h.strip() for h in line.split("\t")]
    if "user_id" in header and "item_id" in header:
        return None
    return f"the header has no user_id and item_id columns (got {excerpt(line)}; tab-separated)"


def _header_problem(path: Path) -> str | None:
    # The header is line 1; unlike a data line it cannot be skipped, so only that line is looked at.
    return sniff(path, _not_a_header, lines=1, fix="fix the header, or remove the file")


def locate_rechorus(folder: Path) -> SourceFiles | None:
    train = find_file(folder, "train.csv")
    if train is None or _header_problem(train) is not None:
        return None
    files = {"train": train}
    for split in SPLIT_FILES[1:]:
        path = find_file(folder, f"{split}.csv")
        if path is not None:
            files[split] = path
    meta = find_file(folder, "item_meta.csv")
    if meta is not None:
        files["item_meta"] = meta
    index_hits = match_files(folder, r"(.+)\.item2index")
    category = index_hits[0][1].group(1) if len(index_hits) == 1 else folder.resolve().name
    if len(index_hits) == 1:
        files["item2index"] = index_hits[0][0]
    text = find_companion(folder, category, ".text")
    if text is not None:
        files["text"] = text
    return SourceFiles(FORMAT, folder, category, files, metadata_roles=("item_meta", "text"))


def explain_rechorus(folder: Path) -> str | None:
    """Why a ``train.csv`` in ``folder`` is not read as ReChorus (None when there is none, or it is fine)."""
    train = find_file(folder, "train.csv")
    why = None if train is None else _header_problem(train)
    return None if why is None else f"{train} is named like ReChorus (train.csv, dev.csv, test.csv) but {why}"


def _header(path: Path, line: str, required: tuple[str, ...]) -> list[str]:
    header = [h.strip() for h in line.split("\t")]
    missing = [r for r in required if r not in header]
    if missing:
        raise DataFormatError(f"{path}, line 1: expected a tab-separated header with {', '.join(required)}; "
                              f"got {excerpt(line)}. ReChorus files are tab-separated with a header row.")
    return header


def _read_events(path: Path, ctx: ReadContext, events: InteractionBuffer, item_key) -> None:
    header: list[str] | None = None
    for lineno, line in iter_lines(path, ctx, desc=path.name):
        parts = [p.strip() for p in line.split("\t")]
        if header is None:
            header = _header(path, line, ("user_id", "item_id", "time"))
            u_col, i_col, t_col = (header.index(c) for c in ("user_id", "item_id", "time"))
            continue
        where = f"line {lineno}"
        if len(parts) != len(header):
            ctx.bad(path, where, f"expected {len(header)} tab-separated fields ({', '.join(header)}), got "
                    f"{len(parts)}", "wrong number of fields")
            continue
        if not parts[u_col] or not parts[i_col]:
            ctx.bad(path, where, "field 'user_id' or 'item_id' is empty; expected ids", "empty id")
            continue
        ts = require_timestamp(parts[t_col])
        if ts is None:
            ctx.bad(path, where, f"field 'time' is {excerpt(parts[t_col])}; expected an integer unix time (within the "
                    "int64 range)", "bad time")
            continue
        events.add(parts[u_col], item_key(parts[i_col], path, lineno), ts)


def read_rechorus(src: SourceFiles, ctx: ReadContext) -> RawData:
    id2asin = ({v: k for k, v in read_tsv_map(src.files["item2index"], ctx).items()}
               if "item2index" in src.files else None)
    asins = set(id2asin.values()) if id2asin else set()

    def item_key(token: str, path: Path, lineno: int) -> str:
        if id2asin is None:
            return token
        if token not in id2asin:
            raise DataFormatError(f"{path}, line {lineno}: item {token!r} is not in {src.files['item2index'].name}; "
                                  "the index file does not belong to this data. Fix or remove it.")
        return id2asin[token]

    def meta_key(token: str) -> str:
        return token if (id2asin is None or token in asins) else id2asin.get(token, token)

    events = InteractionBuffer()
    for split in SPLIT_FILES:
        if split in src.files:
            _read_events(src.files[split], ctx, events, item_key)
    missing = [f"{s}.csv" for s in SPLIT_FILES if s not in src.files]
    if missing:
        ctx.note(f"{', '.join(missing)} absent; the dataset holds only the other files' events.")

    meta = ItemBuffer()
    if "item_meta" in src.files:
        path = src.files["item_meta"]
        header: list[str] | None = None
        for lineno, line in iter_lines(path, ctx):
            parts = [p.strip() for p in line.split("\t")]
            if header is None:
                header = _header(path, line, ("item_id",))
                features = [(j, h) for j, h in enumerate(header) if h.startswith("i_")]
                continue
            if len(parts) != len(header):
                ctx.bad(path, f"line {lineno}", f"expected {len(header)} tab-separated fields, got {len(parts)}",
                        "wrong number of fields")
                continue
            attrs = []
            for j, name in features:
                value = require_int(parts[j])
                if value is None:
                    ctx.bad(path, f"line {lineno}", f"field '{name}' is {excerpt(parts[j])}; expected an integer "
                            "feature id", f"bad {name}")
                    break
                if value != UNKNOWN_FEATURE:
                    attrs.append(f"{name}_{value}")
            else:
                meta.update(meta_key(parts[header.index("item_id")]), attributes=attrs or None)
        ctx.note(f"{path.name}: non-zero i_* feature ids are stored as attributes '<column>_<id>'; r_* relations "
                 "are ignored.")
    if "text" in src.files:
        path = src.files["text"]
        for lineno, line in iter_lines(path, ctx):
            parts = line.split("\t")
            if lineno == 1 and len(parts) >= 2 and parts[1].strip().split(":")[0] == "text":
                continue  # header row
            if len(parts) < 2 or not parts[0].strip():
                ctx.bad(path, f"line {lineno}", f"expected 'id<tab>text', got {excerpt(line)}", "not 'id<tab>text'")
                continue
            meta.update(meta_key(parts[0].strip()), title=text_value("\t".join(parts[1:])))
        ctx.note(f"title holds the free text of {path.name} (in LRD/UniSRec files: title, category and brand joined).")
    if id2asin is not None:
        ctx.note(f"source_id is the ASIN from {src.files['item2index'].name}.")
    return ctx.result(FORMAT, events.frame(), meta.frame())
