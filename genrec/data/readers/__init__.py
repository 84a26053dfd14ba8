"""One reader per source format family; each turns a folder into a :class:`genrec.data.schema.RawData`.

A reader is two functions: ``locate(folder) -> SourceFiles | None`` finds its files (None when the
folder does not hold that format) and ``read(files, ctx) -> RawData`` parses them. A format whose file
names are ambiguous (``<Cat>.jsonl``, ``train.csv``) checks their first lines in ``locate``, and its
``explain(folder)`` then says why such a file was not taken (empty, not gzip, which line and field),
so a broken file is reported by name instead of as "no known format". Format detection and its
priority live in :mod:`genrec.data.detect`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from genrec.data.readers.amazon_raw import (
    explain_raw2023, locate_raw2014, locate_raw2018, locate_raw2023, read_raw2014, read_raw2018, read_raw2023,
)
from genrec.data.readers.common import DataFormatError, ReadContext, SourceFiles
from genrec.data.readers.lcrec import locate_lcrec, read_lcrec
from genrec.data.readers.recbole import locate_recbole, read_recbole
from genrec.data.readers.rechorus import explain_rechorus, locate_rechorus, read_rechorus
from genrec.data.readers.s3rec import locate_s3rec, read_s3rec
from genrec.data.schema import RawData


@dataclass(frozen=True)
class Reader:
    name: str                                                # format name used by --format
    expects: str                                             # the files it needs, for error messages
    locate: Callable[[Path], SourceFiles | None]
    read: Callable[[SourceFiles, ReadContext], RawData]
    explain: Callable[[Path], str | None] = lambda folder: None   # why a file named like this format was not taken

    def miss(self, folder: Path) -> str | None:
        """``explain`` for a folder where ``locate`` found nothing, with the fix."""
        why = self.explain(folder)
        return None if why is None else f"{why} (or pass --format to read another format in the folder)"


READERS: dict[str, Reader] = {r.name: r for r in (
    Reader("raw2014", "reviews_<Cat>_5.json[.gz] (+ meta_<Cat>.json[.gz], Python literals)", locate_raw2014,
           read_raw2014),
    Reader("raw2018", "<Cat>_5.json[.gz] (+ meta_<Cat>.json[.gz])", locate_raw2018, read_raw2018),
    Reader("raw2023", "<Cat>.jsonl[.gz] reviews (+ meta_<Cat>.jsonl[.gz])", locate_raw2023, read_raw2023,
           explain_raw2023),
    Reader("s3rec", "<Cat>.txt 'user item item ...' (+ <Cat>_item2attributes.json, *_item_id2asin.tsv, "
           "*.idgen_text.jsonl)", locate_s3rec, read_s3rec),
    Reader("lcrec", "<Cat>.inter.json (+ <Cat>.item.json)", locate_lcrec, read_lcrec),
    Reader("recbole", "<Cat>.inter or <Cat>.{train,valid,test}.inter (+ .item, .text, .item2index, .user2index)",
           locate_recbole, read_recbole),
    Reader("rechorus", "train.csv, dev.csv, test.csv (+ item_meta.csv, <Cat>.item2index, <Cat>.text)",
           locate_rechorus, read_rechorus, explain_rechorus),
)}

FORMATS: tuple[str, ...] = tuple(READERS)


def get_reader(fmt: str) -> Reader:
    if fmt not in READERS:
        raise ValueError(f"unknown format {fmt!r}; expected one of: {', '.join(FORMATS)}")
    return READERS[fmt]


def read_source(folder: str | Path, fmt: str, *, on_error: str = "raise",
                progress: bool = True) -> tuple[SourceFiles, RawData]:
    """Locate and read ``fmt`` files in ``folder``; a clear error if that format's files are absent."""
    folder = Path(folder)
    reader = get_reader(fmt)
    files = reader.locate(folder)
    if files is None:
        raise DataFormatError(reader.explain(folder) or f"{folder}: no files of format '{fmt}' found; expected "
                              f"{reader.expects}. Check the folder, or drop --format to detect the format.")
    ctx = ReadContext(on_error=on_error, progress=progress)
    return files, reader.read(files, ctx)


__all__ = ["DataFormatError", "FORMATS", "READERS", "ReadContext", "Reader", "SourceFiles", "get_reader",
           "read_source"]
