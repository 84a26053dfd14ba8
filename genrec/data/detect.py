"""Detect a source folder's format from the files in it.

A folder may hold the same data in several formats (../shared/data/Beauty has S3-Rec and LC-Rec
files; Office has ReChorus and LC-Rec). It still gives one dataset: the first match in this
priority order wins, richest source first:

1. raw2023, raw2018, raw2014   raw McAuley dumps: timestamps, full metadata, original ids
2. rechorus                    timestamps (+ ASIN map, text)
3. recbole                     may carry timestamps, ASIN/user maps and text
4. lcrec with <Cat>.item.json  structured title/description/brand/categories
5. s3rec                       order only, attribute ids, ASIN map, keyword text
6. lcrec without item.json     order only, no metadata

``--format`` (``fmt``) overrides the detection.

A file named like a format but unreadable as it (empty, not gzip, no line of that format among its
first lines) is named in the error when nothing else matches, and in the manifest's notes when a
lower-priority format is read instead.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from genrec.data.readers import FORMATS, READERS, DataFormatError, SourceFiles

# (format, needs item metadata to match at this rank) in priority order; see the module docstring.
PRIORITY: tuple[tuple[str, bool], ...] = (
    ("raw2023", False), ("raw2018", False), ("raw2014", False), ("rechorus", False), ("recbole", False),
    ("lcrec", True), ("s3rec", False), ("lcrec", False),
)


def locate(folder: str | Path) -> SourceFiles:
    """The files of the highest-priority format found in ``folder``."""
    folder = Path(folder)
    if not folder.is_dir():
        hint = " Pass the folder that contains it." if folder.is_file() else ""
        raise DataFormatError(f"{folder}: not a folder.{hint}")
    found: dict[str, SourceFiles | None] = {}
    for fmt, needs_metadata in PRIORITY:
        if fmt not in found:
            found[fmt] = READERS[fmt].locate(folder)
        files = found[fmt]
        if files is not None and (files.has_metadata or not needs_metadata):
            skipped = [m for f in found if found[f] is None and (m := READERS[f].explain(folder))]
            return replace(files, notes=tuple(f"not read: {m}" for m in skipped)) if skipped else files
    misses = [m for fmt in dict.fromkeys(f for f, _ in PRIORITY) if (m := READERS[fmt].miss(folder))]
    if misses:
        raise DataFormatError(misses[0])
    expected = "; ".join(f"{fmt}: {READERS[fmt].expects}" for fmt in FORMATS)
    present = ", ".join(p.name for p in sorted(folder.iterdir())[:20]) or "(empty)"
    raise DataFormatError(
        f"{folder}: no known source format found (files: {present}). Expected one of: {expected}. "
        "Rename the files to match, or pass --format with the right format."
    )


def detect_format(folder: str | Path) -> str:
    """Name of the format ``prepare`` would read from ``folder`` (see PRIORITY)."""
    return locate(folder).format
