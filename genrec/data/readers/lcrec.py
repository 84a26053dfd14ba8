"""LC-Rec / LETTER JSON files.

<Cat>.inter.json   ``{"<user>": [item, item, ...]}``, 0-based ids, chronological, users in file order
<Cat>.item.json    optional ``{"<item>": {"title", "description", "brand", "categories"}}``;
                   ``categories`` is a comma-joined string, split on commas into a list
                   (a category name that itself contains a comma is split too; the source cannot tell)

Both are single JSON documents: a syntax error cannot be skipped and always raises with its line;
a bad *entry* (wrong type) is reported by its JSON key and can be skipped.
"""

from __future__ import annotations

from pathlib import Path

from genrec.data.readers.common import (
    DataFormatError, ImageResolver, InteractionBuffer, ItemBuffer, PriceParser, ReadContext, SourceFiles,
    excerpt, find_file, load_json_file, match_files, one_category, split_categories, text_value,
)
from genrec.data.schema import RawData

FORMAT = "lcrec"


def locate_lcrec(folder: Path) -> SourceFiles | None:
    found = one_category(FORMAT, folder, match_files(folder, r"(.+)\.inter\.json"), "<Cat>.inter.json")
    if found is None:
        return None
    inter, category = found
    files = {"inter": inter}
    item = find_file(folder, f"{category}.item.json")
    if item is not None:
        files["items"] = item
    return SourceFiles(FORMAT, folder, category, files, metadata_roles=("items",))


def _is_id(value) -> bool:
    return (isinstance(value, int) and not isinstance(value, bool)) or (isinstance(value, str) and value.strip() != "")


def read_lcrec(src: SourceFiles, ctx: ReadContext) -> RawData:
    path = src.files["inter"]
    data = load_json_file(path, ctx)
    if not isinstance(data, dict):
        raise DataFormatError(f"{path}: expected a JSON object {{user: [item, ...]}}, got {type(data).__name__}. "
                              "Is this really an LC-Rec .inter.json file? Pass the right --format.")
    events = InteractionBuffer()
    for user, items in data.items():
        if not isinstance(items, list) or not items or not all(_is_id(i) for i in items):
            ctx.bad(path, f"key {user!r}", f"expected a non-empty list of item ids, got {excerpt(items)}",
                    "not a list of item ids")
            continue
        for item in items:
            events.add(str(user), str(item).strip())

    meta = ItemBuffer()
    if "items" in src.files:
        item_path = src.files["items"]
        table = load_json_file(item_path, ctx)
        if not isinstance(table, dict):
            raise DataFormatError(f"{item_path}: expected a JSON object {{item: {{title, ...}}}}, got "
                                  f"{type(table).__name__}. Fix the file or remove it.")
        price, image = PriceParser(), ImageResolver(src.folder)
        for item, fields in table.items():
            if not isinstance(fields, dict):
                ctx.bad(item_path, f"key {item!r}", f"expected an object with title/description/brand/categories, "
                        f"got {excerpt(fields)}", "item entry not an object")
                continue
            meta.add(str(item).strip(), title=text_value(fields.get("title")),
                     description=text_value(fields.get("description")), brand=text_value(fields.get("brand")),
                     categories=split_categories(fields.get("categories")), price=price(fields.get("price")),
                     image=image(fields.get("image") or fields.get("imUrl")))
        price.report(ctx, item_path)
        image.report(ctx)
    ctx.note(f"{path.name} has no timestamps; list order is the chronological order.")
    return ctx.result(FORMAT, events.frame(), meta.frame())
