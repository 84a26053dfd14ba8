"""Shared reader plumbing: file discovery, line iteration with progress, bad-line policy, value parsing.

Every reader reports a malformed line through :meth:`ReadContext.bad`, which either raises a
:class:`DataFormatError` naming the file, the 1-based line (or JSON key), the field and what was
expected, or (``on_error="skip"``) counts the line under a reason that ends up in the manifest.
"""

from __future__ import annotations

import ast
import gzip
import json
import math
import re
import sys
import zlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import polars as pl
from tqdm.auto import tqdm

from genrec.data.schema import RAW_ITEM_SCHEMA, RawData, conform_interactions, conform_items

ON_ERROR_CHOICES = ("raise", "skip")
SKIP_HINT = "or pass on_error='skip' (CLI: --skip-bad-lines) to skip such lines; skipped lines are counted and reported"
# Files at least this large get a tqdm bar while they are read line by line.
PROGRESS_MIN_BYTES = 16 << 20
# How many lines pass between progress-bar refreshes (tell() on a gzip stream is not free).
PROGRESS_EVERY_LINES = 8192
# Longest excerpt of an offending value quoted in an error message.
EXCERPT_CHARS = 80
# Format detection reads up to this many non-blank lines of a file whose name alone is ambiguous and
# accepts the file when any of them fits, so one malformed first line neither hides the format nor
# stops --skip-bad-lines from skipping (and counting) it.
SNIFF_LINES = 20
# Timestamps must fit the int64 column they are stored in.
INT64_MIN, INT64_MAX = -(1 << 63), (1 << 63) - 1


class DataFormatError(ValueError):
    """A source file does not have the expected format; the message names the file, place and fix."""


def excerpt(value: Any) -> str:
    text = value if isinstance(value, str) else repr(value)
    return repr(text[:EXCERPT_CHARS] + ("…" if len(text) > EXCERPT_CHARS else ""))


# ---------------------------------------------------------------------------------------------
# file discovery


def base_name(path: Path) -> str:
    """File name without a trailing ``.gz`` (readers accept every file gzipped)."""
    return path.name[:-3] if path.name.endswith(".gz") else path.name


def list_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))


def find_file(folder: Path, name: str) -> Path | None:
    """``folder/name`` or ``folder/name.gz``; the plain file wins when both exist."""
    for candidate in (folder / name, folder / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    return None


def match_files(folder: Path, pattern: str) -> list[tuple[Path, re.Match]]:
    """Files whose name (minus ``.gz``) fully matches ``pattern``, sorted by name, one per base name."""
    seen: dict[str, tuple[Path, re.Match]] = {}
    for path in list_files(folder):
        m = re.fullmatch(pattern, base_name(path))
        if m and base_name(path) not in seen:
            seen[base_name(path)] = (path, m)
    return [seen[k] for k in sorted(seen)]


def find_companion(folder: Path, category: str, suffix: str) -> Path | None:
    """``<category><suffix>[.gz]``, else the only file ending in ``suffix`` (None if zero or several)."""
    exact = find_file(folder, f"{category}{suffix}")
    if exact is not None:
        return exact
    hits = match_files(folder, rf".+{re.escape(suffix)}")
    return hits[0][0] if len(hits) == 1 else None


def one_category(fmt: str, folder: Path, hits: list[tuple[Path, re.Match]], what: str) -> tuple[Path, str] | None:
    """The single matching file and its category; a clear error when a folder mixes categories."""
    if not hits:
        return None
    if len(hits) > 1:
        names = ", ".join(p.name for p, _ in hits)
        raise DataFormatError(
            f"{folder}: found {len(hits)} {what} files for format '{fmt}' ({names}). "
            "Put each category in its own folder and prepare them one at a time."
        )
    path, m = hits[0]
    return path, m.group(1)


@dataclass(frozen=True)
class SourceFiles:
    """The files one reader will read from a folder, by role (e.g. ``reviews``, ``meta``)."""

    format: str
    folder: Path
    category: str                 # dataset name found in the file names (folder name if none)
    files: dict[str, Path]        # role -> path; optional roles are simply absent
    metadata_roles: tuple[str, ...] = ()  # roles that carry item metadata
    notes: tuple[str, ...] = ()           # detection remarks, e.g. a file of another format that was not read

    @property
    def has_metadata(self) -> bool:
        return any(role in self.files for role in self.metadata_roles)


# ---------------------------------------------------------------------------------------------
# reading


@dataclass
class ReadContext:
    """Carries the bad-line policy, progress setting and bookkeeping through one reader run."""

    on_error: str = "raise"                            # "raise" or "skip"
    progress: bool = True                              # tqdm bars for large files
    skipped: Counter = field(default_factory=Counter)  # "<file>: <reason>" -> lines skipped
    notes: list[str] = field(default_factory=list)
    files_used: list[Path] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.on_error not in ON_ERROR_CHOICES:
            raise ValueError(f"on_error must be one of {ON_ERROR_CHOICES}, got {self.on_error!r}")

    def use(self, path: Path) -> Path:
        path = Path(path).resolve()
        if path not in self.files_used:
            self.files_used.append(path)
        return path

    def bad(self, path: Path, where: str, problem: str, reason: str) -> None:
        """Raise (default) or count one malformed line/entry.

        ``where`` is "line 12" or "key '3'", ``problem`` says what was expected and what was found,
        ``reason`` is the short counting key (no values, so equal problems add up).
        """
        if self.on_error == "raise":
            raise DataFormatError(f"{path}, {where}: {problem}. Fix the source file, {SKIP_HINT}.")
        self.skipped[f"{path.name}: {reason}"] += 1

    def note(self, text: str) -> None:
        if text not in self.notes:
            self.notes.append(text)

    def result(self, fmt: str, interactions: pl.DataFrame, items: pl.DataFrame) -> RawData:
        return RawData(
            format=fmt,
            interactions=interactions,
            items=items,
            files_used=[str(p) for p in self.files_used],
            skipped=dict(sorted(self.skipped.items())),
            notes=list(self.notes),
        )


def _open_binary(path: Path):
    raw = open(path, "rb")
    return raw, (gzip.GzipFile(fileobj=raw) if path.name.endswith(".gz") else raw)


def read_whole(path: Path) -> tuple[bytes | None, int]:
    """A (gzipped) file's bytes and its line count, for the one-pass polars readers; (None, 0) when a .gz
    does not decompress (the line reader then names the line where it breaks)."""
    data = path.read_bytes()
    if path.name.endswith(".gz"):
        try:
            data = gzip.decompress(data)
        except (EOFError, OSError):
            return None, 0
    return data, data.count(b"\n") + (0 if data.endswith(b"\n") else 1)


def iter_lines(path: Path, ctx: ReadContext, desc: str | None = None) -> Iterator[tuple[int, str]]:
    """Yield ``(1-based line number, line without newline)`` for non-blank lines of a (gzipped) text file.

    Blank lines carry no data; they are counted under "blank line" rather than raising.
    A line that is not UTF-8 goes through :meth:`ReadContext.bad`.
    """
    path = ctx.use(path)
    size = path.stat().st_size
    raw, stream = _open_binary(path)
    bar = tqdm(
        total=size, unit="B", unit_scale=True, desc=desc or path.name, leave=False,
        disable=not ctx.progress or size < PROGRESS_MIN_BYTES,
    )
    lineno = 0
    try:
        for lineno, bline in enumerate(stream, 1):
            if lineno % PROGRESS_EVERY_LINES == 0:
                bar.update(raw.tell() - bar.n)
            try:
                line = bline.decode("utf-8").rstrip("\r\n")
            except UnicodeDecodeError as e:
                ctx.bad(path, f"line {lineno}", f"not valid UTF-8 ({e.reason} at byte {e.start})", "not UTF-8")
                continue
            if not line.strip():
                ctx.skipped[f"{path.name}: blank line"] += 1
                continue
            yield lineno, line
    except (EOFError, OSError, zlib.error) as e:
        raise DataFormatError(
            f"{path}: cannot read past line {lineno} ({e}). The file is truncated or not really gzip; "
            "download it again."
        ) from e
    finally:
        bar.update(size - bar.n)
        bar.close()
        stream.close()
        raw.close()


def peek_first_line(path: Path) -> str | None:
    """First non-blank line of a (gzipped) text file, or None if unreadable/empty (used by detection)."""
    try:
        raw, stream = _open_binary(path)
        try:
            for bline in stream:
                if bline.strip():
                    return bline.decode("utf-8", errors="replace").strip()
        finally:
            stream.close()
            raw.close()
    except (OSError, EOFError, zlib.error):
        return None
    return None


def sniff(path: Path, problem: Callable[[str], str | None], *, lines: int = SNIFF_LINES,
          fix: str = "fix the file, or remove it if it holds other data") -> str | None:
    """Why ``path`` does not hold the lines its name promises, or None when it does.

    ``problem(line)`` says what is wrong with one line (None: it fits). The file fits when any of its
    first ``lines`` non-blank lines does; otherwise the answer names the first line's problem and
    ``fix``, or says the file is empty or not gzip.
    """
    first, checked = None, 0
    try:
        raw, stream = _open_binary(path)
        try:
            for lineno, bline in enumerate(stream, 1):
                if not bline.strip():
                    continue
                why = problem(bline.decode("utf-8", errors="replace").strip())
                if why is None:
                    return None
                first = first or f"line {lineno}: {why}"
                checked += 1
                if checked == lines:
                    break
        finally:
            stream.close()
            raw.close()
    except (OSError, EOFError, zlib.error) as e:
        if path.name.endswith(".gz") and first is None:
            return (f"it is not gzip-compressed despite its .gz name ({e}); remove the .gz suffix if it is plain "
                    "text, or download it again")
        return f"it cannot be read past {first or 'its start'} ({e}); download it again"
    if first is None:
        return "the file is empty; download it again or remove it"
    more = f" (nor do the next {checked - 1} lines fit)" if checked > 1 else ""
    return f"{first}{more}; {fix}"


def load_json_file(path: Path, ctx: ReadContext) -> Any:
    """A whole-file JSON document (LC-Rec ``.inter.json``/``.item.json``, S3-Rec attributes)."""
    path = ctx.use(path)
    raw, stream = _open_binary(path)
    try:
        data = stream.read()
    except (EOFError, OSError, zlib.error) as e:
        raise DataFormatError(
            f"{path}: cannot read the file ({e}); it is truncated or not gzip. Download it again."
        ) from e
    finally:
        stream.close()
        raw.close()
    if not data.strip():
        raise DataFormatError(f"{path}: the file is empty; expected one JSON document. Download it again.")
    try:
        return json.loads(data.decode("utf-8"))
    except UnicodeDecodeError as e:
        raise DataFormatError(f"{path}: not valid UTF-8 at byte {e.start}. Re-export the file as UTF-8.") from e
    except RecursionError:
        raise DataFormatError(f"{path}: JSON nested deeper than Python's parser allows (about "
                              f"{sys.getrecursionlimit()} levels); the file is corrupt, download it again.") from None
    except json.JSONDecodeError as e:
        raise DataFormatError(
            f"{path}, line {e.lineno} column {e.colno}: not valid JSON ({e.msg}). The whole file is one JSON "
            "document, so a broken line cannot be skipped; fix the file or download it again."
        ) from e


def parse_json_line(line: str) -> dict | None:
    """A JSON object, or None when the line is not one (also when it nests too deep to parse)."""
    try:
        obj = json.loads(line)
    except (json.JSONDecodeError, RecursionError):
        return None
    return obj if isinstance(obj, dict) else None


def parse_literal_line(line: str) -> dict | None:
    """A Python dict literal (Amazon 2014 metadata) or a JSON object; None when it is neither.

    JSON is tried first (fast; 2014 review files are JSON), then ast.literal_eval, never eval:
    literal_eval accepts only literals, so a line such as ``__import__('os').system(...)`` is
    rejected (None) instead of executed.
    """
    obj = parse_json_line(line)
    if obj is not None:
        return obj
    try:
        obj = ast.literal_eval(line)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return None
    return obj if isinstance(obj, dict) else None


# ---------------------------------------------------------------------------------------------
# value parsing


def require_str(obj: dict, key: str) -> str | None:
    """A non-empty id-like field as a string (ints are accepted and stringified), else None."""
    value = obj.get(key)
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str) and value.strip():
        return value.strip()
    return None


def require_int(value: Any) -> int | None:
    """An integer (or integral float / numeric string), else None."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and math.isfinite(value) and value == int(value):
        return int(value)
    if isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            return None
        return int(number) if math.isfinite(number) and number == int(number) else None
    return None


def require_timestamp(value: Any, divisor: int = 1) -> int | None:
    """An integer time divided (floored) by ``divisor`` (source units per second), else None; values
    outside the int64 range the dataset stores are None too (a stray 1e30 must be a bad line, not a crash)."""
    number = require_int(value)
    if number is None:
        return None
    number //= divisor
    return number if INT64_MIN <= number <= INT64_MAX else None


def text_value(value: Any) -> str | None:
    """A text field: strings are stripped; lists of strings are joined with a space.

    Blank text and placeholders without any letter or digit (".", "-", "…") are None: they are not data.
    """
    if value is None:
        return None
    if isinstance(value, (list, tuple)):
        parts = [str(v).strip() for v in value if v is not None and str(v).strip()]
        text = " ".join(parts)
    else:
        text = str(value).strip()
    return text if any(c.isalnum() for c in text) else None


def str_list(value: Any) -> list[str] | None:
    """A list of non-blank strings, preserving order without duplicates; None when empty."""
    if value is None:
        return None
    if isinstance(value, str):
        value = [value]
    out: list[str] = []
    for v in value:
        if isinstance(v, (list, tuple)):
            out.extend(str_list(v) or [])
        elif v is not None and str(v).strip():
            out.append(str(v).strip())
    out = list(dict.fromkeys(out))
    return out or None


def split_categories(value: Any) -> list[str] | None:
    """LC-Rec style ``"A, B,C"`` -> ``["A", "B", "C"]``; lists pass through :func:`str_list`."""
    if isinstance(value, str):
        return str_list(value.split(","))
    return str_list(value)


_PRICE_RE = re.compile(r"^\$?\s*([0-9][0-9,]*(?:\.[0-9]+)?)$")
_MISSING_TEXT = {"", "none", "null", "nan", "n/a", "-", "—"}


class PriceParser:
    """Prices as floats: numbers pass, strings like "$1,299.99" are parsed, ranges and junk become null.

    Unparseable values are counted (with one example) so the reader can report them in a note.
    """

    def __init__(self) -> None:
        self.unparsed = 0
        self.example: str | None = None

    def __call__(self, value: Any) -> float | None:
        if value is None or isinstance(value, bool):
            return None
        if isinstance(value, (int, float)):
            return float(value) if math.isfinite(value) and value >= 0 else self._fail(value)
        text = str(value).strip()
        if text.lower() in _MISSING_TEXT:
            return None
        m = _PRICE_RE.match(text)
        return float(m.group(1).replace(",", "")) if m else self._fail(text)

    def _fail(self, value: Any) -> None:
        self.unparsed += 1
        self.example = self.example or excerpt(value)
        return None

    def report(self, ctx: ReadContext, path: Path) -> None:
        if self.unparsed:
            ctx.note(
                f"{path.name}: {self.unparsed} price values are not a single number (e.g. {self.example}); "
                "stored as null."
            )


class ImageResolver:
    """Image references: URLs pass through; a relative path that exists beside the source is made absolute.

    The demo dataset stores relative PNG paths; real Amazon files store URLs.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = folder.resolve()
        self.missing = 0
        self.example: str | None = None

    def __call__(self, value: Any) -> str | None:
        text = text_value(value)
        if text is None or "://" in text or text.startswith("data:"):
            return text
        path = Path(text) if Path(text).is_absolute() else self.folder / text
        try:
            exists = path.is_file()
        except OSError:  # e.g. a name longer than the file system allows: not a local file
            exists = False
        if exists:
            return str(path.resolve())
        self.missing += 1
        self.example = self.example or text
        return text

    def report(self, ctx: ReadContext) -> None:
        if self.missing:
            ctx.note(
                f"{self.missing} image entries are neither URLs nor existing files under {self.folder} "
                f"(e.g. {self.example!r}); kept as written."
            )


# ---------------------------------------------------------------------------------------------
# frame builders


class InteractionBuffer:
    """Column lists for (user, item, ts) events; ``pos`` is the order of :meth:`add` calls."""

    def __init__(self) -> None:
        self.users: list[str] = []
        self.items: list[str] = []
        self.ts: list[int | None] = []

    def add(self, user: str, item: str, ts: int | None = None) -> None:
        self.users.append(user)
        self.items.append(item)
        self.ts.append(ts)

    def __len__(self) -> int:
        return len(self.items)

    def frame(self) -> pl.DataFrame:
        df = pl.DataFrame(
            {"user": self.users, "item": self.items, "ts": self.ts},
            schema={"user": pl.Utf8, "item": pl.Utf8, "ts": pl.Int64},
        )
        return conform_interactions(df)


class ItemBuffer:
    """Item metadata rows keyed by source id; the first row for a key wins (as in conform_items)."""

    def __init__(self) -> None:
        self.rows: dict[str, dict[str, Any]] = {}
        self.duplicates = 0

    def add(self, item: str, **fields: Any) -> None:
        if item in self.rows:
            self.duplicates += 1
            return
        self.rows[item] = {"item": item, **fields}

    def update(self, item: str, **fields: Any) -> None:
        """Fill fields of an existing (or new) row, e.g. text from a second file."""
        row = self.rows.setdefault(item, {"item": item})
        row.update(fields)

    def __contains__(self, item: str) -> bool:
        return item in self.rows

    def __len__(self) -> int:
        return len(self.rows)

    def frame(self) -> pl.DataFrame:
        columns: dict[str, list] = {name: [] for name in RAW_ITEM_SCHEMA}
        for row in self.rows.values():
            for name in RAW_ITEM_SCHEMA:
                columns[name].append(row.get(name))
        return conform_items(pl.DataFrame(columns, schema=RAW_ITEM_SCHEMA))

    def report(self, ctx: ReadContext, path: Path) -> None:
        if self.duplicates:
            ctx.note(f"{path.name}: {self.duplicates} repeated item rows; the first row of each item was kept.")


def read_tsv_map(path: Path, ctx: ReadContext, *, key_col: int = 0, value_col: int = 1,
                 header: bool | Callable[[list[str]], bool] = False) -> dict[str, str]:
    """A two-column tab-separated map (e.g. ``ASIN<tab>index``); ``header`` may be a predicate on row 1."""
    out: dict[str, str] = {}
    need = max(key_col, value_col) + 1
    for lineno, line in iter_lines(path, ctx):
        parts = line.split("\t")
        if lineno == 1 and (header(parts) if callable(header) else header):
            continue
        if len(parts) < need or not parts[key_col].strip() or not parts[value_col].strip():
            ctx.bad(path, f"line {lineno}", f"expected at least {need} non-empty tab-separated columns, got "
                    f"{excerpt(line)}", "too few columns")
            continue
        out.setdefault(parts[key_col].strip(), parts[value_col].strip())
    return out
