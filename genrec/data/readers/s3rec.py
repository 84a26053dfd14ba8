"""S3-Rec / ICLRec sequence files, as used for the standard Beauty / Sports / Toys benchmarks.

<Cat>.txt                      ``user item item ...`` per line, 1-based integer ids, chronological
<Cat>_item2attributes.json     optional ``{"item": [attr_id, ...]}`` -> attributes ``["attr_<id>", ...]``
*_item_id2asin.tsv             optional map (header; first column = S3-Rec id, a column named ``asin``);
                               when present, items are keyed (``source_id``) by ASIN
*.idgen_text.jsonl             optional IDGenRec keyword text ``{"item_id", "asin", "idgen_text"}``,
                               stored as ``title`` (it is derived from titles, it is not a raw title)

Companion files are looked up as ``<Cat><suffix>`` first, then as the only file with that suffix.
"""

from __future__ import annotations

import re
from pathlib import Path

from genrec.data.readers.common import (
    DataFormatError, InteractionBuffer, ItemBuffer, ReadContext, SourceFiles, excerpt, find_companion,
    iter_lines, list_files, base_name, load_json_file, one_category, parse_json_line, sniff,
)
from genrec.data.schema import RawData

FORMAT = "s3rec"
_INT_LINE = re.compile(r"\d+(?:\s+\d+)+")
ATTR_PREFIX = "attr_"


def _not_integers(line: str) -> str | None:
    return None if _INT_LINE.fullmatch(line) else "not 'user item item ...' integers"


def locate_s3rec(folder: Path) -> SourceFiles | None:
    # Any <Cat>.txt whose first lines are integers (user item item ...); GRAM's user_sequence.txt is not.
    hits = []
    for path in list_files(folder):
        m = re.fullmatch(r"(.+)\.txt", base_name(path))
        if m and sniff(path, _not_integers) is None:
            hits.append((path, m))
    found = one_category(FORMAT, folder, hits, "<Cat>.txt sequence")
    if found is None:
        return None
    seqs, category = found
    files = {"sequences": seqs}
    for role, suffix in (("attributes", "_item2attributes.json"), ("asin_map", "_item_id2asin.tsv"),
                         ("text", ".idgen_text.jsonl")):
        path = find_companion(folder, category, suffix)
        if path is not None:
            files[role] = path
    return SourceFiles(FORMAT, folder, category, files, metadata_roles=("attributes", "text"))


def _read_asin_map(path: Path, ctx: ReadContext) -> dict[str, str]:
    out: dict[str, str] = {}
    asin_col = None
    for lineno, line in iter_lines(path, ctx):
        parts = [p.strip() for p in line.split("\t")]
        if asin_col is None:
            if "asin" not in parts:
                raise DataFormatError(f"{path}, line {lineno}: expected a header with a column named 'asin' "
                                      f"(e.g. 's3rec_item_id<tab>lcrec_item_id<tab>asin'), got {excerpt(line)}. "
                                      "Add the header or remove the file.")
            asin_col = parts.index("asin")
            continue
        if len(parts) <= asin_col or not parts[0].isdigit() or not parts[asin_col]:
            ctx.bad(path, f"line {lineno}", f"expected '<s3rec item id><tab>...<tab><asin>', got {excerpt(line)}",
                    "bad map row")
            continue
        out.setdefault(parts[0], parts[asin_col])
    return out


def read_s3rec(src: SourceFiles, ctx: ReadContext) -> RawData:
    path = src.files["sequences"]
    asin = _read_asin_map(src.files["asin_map"], ctx) if "asin_map" in src.files else None

    def key(item: str) -> str | None:
        return item if asin is None else asin.get(item)

    events = InteractionBuffer()
    first_line: dict[str, int] = {}
    for lineno, line in iter_lines(path, ctx, desc=f"sequences {path.name}"):
        tokens = line.split()
        where = f"line {lineno}"
        if len(tokens) < 2 or not all(t.isdigit() for t in tokens):
            ctx.bad(path, where, f"expected 'user_id item_id item_id ...' (integers, at least one item), got "
                    f"{excerpt(line)}", "not 'user item ...' integers")
            continue
        user, items = tokens[0], tokens[1:]
        if user in first_line:
            ctx.bad(path, where, f"user {user} already has a sequence on line {first_line[user]}; expected one "
                    "line per user", "repeated user")
            continue
        keys = [key(i) for i in items]
        if None in keys:
            missing = items[keys.index(None)]
            raise DataFormatError(f"{path}, {where}: item {missing} has no row in {src.files['asin_map'].name}; "
                                  "the ASIN map does not belong to this file. Fix or remove the map.")
        first_line[user] = lineno
        for k in keys:
            events.add(user, k)

    meta = ItemBuffer()
    unmapped = 0
    if "attributes" in src.files:
        attr_path = src.files["attributes"]
        data = load_json_file(attr_path, ctx)
        if not isinstance(data, dict):
            raise DataFormatError(f"{attr_path}: expected a JSON object {{item_id: [attribute ids]}}, got "
                                  f"{type(data).__name__}. Remove the file or fix it.")
        for item, attrs in data.items():
            if not isinstance(attrs, list) or not all(isinstance(a, (int, str)) for a in attrs):
                ctx.bad(attr_path, f"key {item!r}", f"expected a list of attribute ids, got {excerpt(attrs)}",
                        "attributes not a list of ids")
                continue
            k = key(str(item))
            if k is None:
                unmapped += 1
                continue
            meta.update(k, attributes=[f"{ATTR_PREFIX}{a}" for a in attrs] or None)
        ctx.note(f"attributes are the category/brand ids of {attr_path.name} as 'attr_<id>' (names not available).")

    if "text" in src.files:
        text_path = src.files["text"]
        for lineno, line in iter_lines(text_path, ctx):
            obj = parse_json_line(line)
            item = None if obj is None else obj.get("item_id")
            text = None if obj is None else obj.get("idgen_text")
            if obj is None or not isinstance(item, (int, str)) or not isinstance(text, (str, type(None))):
                ctx.bad(text_path, f"line {lineno}", "expected a JSON object with 'item_id' (S3-Rec id) and "
                        f"'idgen_text' (string), got {excerpt(line)}", "bad idgen_text row")
                continue
            k = key(str(item))
            if k is None:
                unmapped += 1
                continue
            meta.update(k, title=text)
        ctx.note(f"title holds IDGenRec keyword text from {text_path.name}: short keywords derived from the "
                 "product titles, not the raw titles.")
    if unmapped:
        ctx.note(f"{unmapped} metadata entries name S3-Rec ids missing from the ASIN map; ignored.")
    if asin is not None:
        ctx.note(f"source_id is the ASIN from {src.files['asin_map'].name}.")
    ctx.note(f"{path.name} has no timestamps; the line order is the chronological order.")
    return ctx.result(FORMAT, events.frame(), meta.frame())
