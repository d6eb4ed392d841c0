"""Reading a spooled bulk body row by row, never whole: CSV (a delimiter, a header row),
a JSON array (element by element from ijson's events) or NDJSON, gzip or not, each row
checked as the data store can keep it and given its event time. A row's problem is
reported with the row and its line; a body that cannot be read on (damaged gzip, a bad
header, broken JSON) raises Damaged.
"""

from __future__ import annotations

import codecs
import csv
import gzip
import hashlib
import math
import zlib
from collections.abc import Iterator
from datetime import datetime
from typing import IO, Any, NamedTuple

import ijson

from providers import files
from providers.files import DELIMITERS, RecordError, parse_event_time

MAX_LINE_BYTES = 4 * 1024 * 1024  # a longer line (or CSV row) is refused, not buffered
MAX_DEPTH = files.MAX_DEPTH
MAX_DIGITS = files.MAX_DIGITS
GZIP_MAGIC = b"\x1f\x8b"
BOM = codecs.BOM_UTF8

class Damaged(Exception):
    """The body cannot be read on past this point (bad gzip, a bad header, broken JSON):
    the whole upload is rejected, whatever `droperrors` says."""

    def __init__(self, line: int | None, message: str):
        super().__init__(message)
        self.line = line
        self.message = message


class Row(NamedTuple):
    row: int  # 1-based, data rows only (a CSV header is not one)
    line: int | None  # physical line it starts on (None inside a JSON array)
    data: dict[str, Any] | None  # None: a bad row
    event_time: datetime | None  # None with a timestamp field: bad; without: ingest time
    problem: str  # "" for a good row


class Body:
    """The decoded (gunzipped) bytes of a spooled body, without a leading UTF-8 BOM, with
    their SHA-256 and a count of lines read. Reading a damaged gzip raises Damaged."""

    def __init__(self, path: str, compressed: bool):
        self.path, self.compressed = path, compressed
        self.file = open(path, "rb")  # noqa: SIM115 (closed by close())
        self.stream: IO[bytes] = gzip.GzipFile(fileobj=self.file) if compressed else self.file
        self.hash = hashlib.sha256()
        self.line = 0
        self._start = True

    def close(self) -> None:
        self.stream.close()
        self.file.close()

    def _damaged(self, exc: Exception) -> Damaged:
        if isinstance(exc, EOFError):
            return Damaged(self.line or None, "the gzip data ends early: the upload was cut "
                                              "short; send the whole file again")
        return Damaged(self.line or None, f"the gzip data is damaged ({exc}); send the file "
                                          "again")

    def _skip_bom(self, data: bytes) -> bytes:
        if self._start and data:
            self._start = False
            if data.startswith(BOM):
                return data[len(BOM):]
        return data

    def read(self, size: int = -1) -> bytes:
        try:
            data = self.stream.read(size)
        except (OSError, EOFError, zlib.error) as exc:
            raise self._damaged(exc) from None
        if self._start and len(data) < len(BOM) and data and BOM.startswith(data):
            data += self.read(len(BOM) - len(data))
        data = self._skip_bom(data)
        self.hash.update(data)
        return data

    def readline(self) -> bytes:
        try:
            data = self.stream.readline(MAX_LINE_BYTES + 1)
        except (OSError, EOFError, zlib.error) as exc:
            raise self._damaged(exc) from None
        if not data:
            return data
        self.line += 1
        if len(data) > MAX_LINE_BYTES:
            raise Damaged(self.line, f"is longer than {MAX_LINE_BYTES:,} bytes; no row may be "
                                     "that long")
        data = self._skip_bom(data)
        self.hash.update(data)
        return data


def first_character(path: str, compressed: bool) -> bytes:
    body = Body(path, compressed)
    try:
        while chunk := body.read(256):
            if stripped := chunk.lstrip():
                return stripped[:1]
        return b""
    finally:
        body.close()


def _text_lines(body: Body, strict: bool) -> Iterator[tuple[int, str | None, str]]:
    """(line, text or None, problem) for each physical line. A line that is not UTF-8 or
    holds a NUL is a Damaged body when `strict` (CSV: a row may span lines), else a bad
    line of its own (NDJSON)."""
    while raw := body.readline():
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            problem = (f"is not valid UTF-8 (byte {exc.start + 1} of the line); save the file "
                       "as UTF-8 and send it again")
            if strict:
                raise Damaged(body.line, problem) from None
            yield body.line, None, problem
            continue
        if "\x00" in text:
            problem = "contains a NUL character (byte 0), which text should not have"
            if strict:
                raise Damaged(body.line, problem) from None
            yield body.line, None, problem
            continue
        yield body.line, text, ""


def event_time(data: dict[str, Any], field: str) -> tuple[datetime | None, str]:
    if not field:
        return None, ""
    if field not in data:
        return None, f"has no field '{field}' (the timestamp_field)"
    try:
        return parse_event_time(data[field], field), ""
    except ValueError as exc:
        return None, str(exc)


def _csv_rows(body: Body, delimiter: str, field: str) -> Iterator[Row]:
    state = {"line": 0}

    def lines() -> Iterator[str]:
        for line, text, _problem in _text_lines(body, strict=True):
            state["line"] = line
            yield text  # type: ignore[misc]  (strict: never None)

    reader = csv.reader(lines(), delimiter=delimiter, strict=True)
    try:
        header = next(reader, None)
    except csv.Error as exc:
        raise Damaged(1, f"the header row cannot be read as CSV ({exc})") from None
    if not header or all(not name.strip() for name in header):
        raise Damaged(1, "there is no header row: the first line must name the columns")
    if len(header) > files.MAX_COLUMNS:
        raise Damaged(1, f"the header has {len(header):,} columns, more than the "
                         f"{files.MAX_COLUMNS:,} this portal accepts")
    names = [name.strip() for name in header]
    if names[0].startswith(("[", "{")):
        raise Damaged(1, "the body looks like JSON but came as CSV: send it with the "
                         "content type application/json")
    seen: set[str] = set()
    twice = sorted({name for name in names if name in seen or seen.add(name)})
    if "" in names:
        raise Damaged(1, f"column {names.index('') + 1} of the header has no name")
    if twice:
        raise Damaged(1, f"the header names a column twice: {', '.join(twice)}")
    others = [char for char in DELIMITERS if char != delimiter and char in names[0]]
    if len(names) == 1 and others:
        raise Damaged(1, f"the header has one column, '{names[0][:40]}': is the delimiter "
                         f"{delimiter!r} right? The header looks {DELIMITERS[others[0]].lower()}"
                         "-separated")
    if field and field not in seen:
        raise Damaged(1, f"the header has no column '{field}' (the timestamp_field); it has "
                         f"{', '.join(names[:20])}")
    width = len(names)
    count = 0
    while True:
        start = state["line"] + 1
        try:
            values = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            count += 1
            yield Row(count, start, None, None, f"cannot be read as CSV ({exc})")
            continue
        if not values or values == [""]:
            continue
        count += 1
        if len(values) != width:
            yield Row(count, start, None, None,
                      f"has {len(values)} fields but the header has {width}")
            continue
        data = dict(zip(names, values, strict=True))
        moment, problem = event_time(data, field)
        yield Row(count, start, None if problem else data, moment, problem)
    if count == 0:
        raise Damaged(None, "the file has a header but no rows")


def value_problem(value: Any) -> str:
    """Why a parsed JSON value cannot be stored, or ""."""
    pending = [(value, 1)]
    while pending:
        item, depth = pending.pop()
        if isinstance(item, dict | list):
            if depth > MAX_DEPTH:
                return f"is nested more than {MAX_DEPTH} levels deep"
            children = [*item.keys(), *item.values()] if isinstance(item, dict) else item
            pending.extend((child, depth + 1) for child in children)
        elif isinstance(item, str):
            if "\x00" in item:
                return "contains a NUL character (\\u0000), which cannot be stored"
            if files._SURROGATE.search(item):
                return "has a lone surrogate escape (\\ud800 to \\udfff), which is not text"
        elif isinstance(item, bool):
            continue
        elif isinstance(item, int):
            if len(str(abs(item))) > MAX_DIGITS:
                return f"has a number with more than {MAX_DIGITS} digits"
        elif isinstance(item, float) and not math.isfinite(item):
            return "has a number that is not finite"
    return ""


def _ndjson_rows(body: Body, field: str) -> Iterator[Row]:
    count = 0
    for line, text, problem in _text_lines(body, strict=False):
        if text is not None and not text.strip():
            continue
        count += 1
        if text is None:
            yield Row(count, line, None, None, problem)
            continue
        try:
            data = files.parse_json_line(text, line)
        except RecordError as exc:
            yield Row(count, line, None, None, exc.problem)
            continue
        if not isinstance(data, dict):
            yield Row(count, line, None, None,
                      f"is a JSON {json_kind(data)}, not an object")
            continue
        moment, problem = event_time(data, field)
        yield Row(count, line, None if problem else data, moment, problem)
    if count == 0:
        raise Damaged(None, "the body has no rows")


def json_kind(value: Any) -> str:
    return {dict: "object", list: "array", str: "string", bool: "boolean",
            type(None): "null"}.get(type(value), "number")


def _json_array_rows(body: Body, field: str) -> Iterator[Row]:
    """Elements of a top-level JSON array, built one at a time from the parser's events,
    so neither the array nor a deeply nested element is ever held whole."""
    events = ijson.basic_parse(body, use_float=True)
    count = done = 0  # elements started, and read whole
    try:
        first = next(events, (None, None))
        if first[0] != "start_array":
            raise Damaged(1, "the body is not a JSON array")
        while True:
            event, value = next(events)
            if event == "end_array":
                break
            count += 1
            item, problem = _build(event, value, events)
            done += 1
            if problem:
                yield Row(count, None, None, None, problem)
                continue
            if not isinstance(item, dict):
                yield Row(count, None, None, None, f"is a JSON {json_kind(item)}, not an "
                                                    "object")
                continue
            if problem := value_problem(item):
                yield Row(count, None, None, None, problem)
                continue
            moment, problem = event_time(item, field)
            yield Row(count, None, None if problem else item, moment, problem)
        for event, _value in events:
            raise Damaged(None, f"there is more after the JSON array ({event})")
    except ijson.JSONError as exc:
        text = exc.args[0] if exc.args else exc
        text = (text.decode("utf-8", "replace") if isinstance(text, bytes) else str(text))
        reason = text.strip().splitlines()[0] if text.strip() else "not valid JSON"
        raise Damaged(None, f"the JSON array breaks off after {done:,} whole element(s) "
                            f"({reason})") from None
    except StopIteration:
        raise Damaged(None, f"the JSON array ends early, after {done:,} whole element(s)"
                      ) from None
    if count == 0:
        raise Damaged(None, "the JSON array is empty")


_SCALARS = {"null", "boolean", "integer", "double", "number", "string"}


def _build(event: str, value: Any, events: Iterator) -> tuple[Any, str]:
    """One JSON value from its first event on; (value, "") or (None, problem) when it nests
    deeper than MAX_DEPTH (the rest of it is read past, not built)."""
    if event in _SCALARS:
        return value, ""
    root: Any = {} if event == "start_map" else []
    stack: list[Any] = [root]
    keys: list[str | None] = [None]
    skipping = 0  # levels entered past MAX_DEPTH: read past, not built
    deep = False
    while stack:
        event, value = next(events)
        if skipping:
            if event in ("start_map", "start_array"):
                skipping += 1
            elif event in ("end_map", "end_array"):
                skipping -= 1
            continue
        if event == "map_key":
            keys[-1] = value
            continue
        if event in ("end_map", "end_array"):
            stack.pop()
            keys.pop()
            continue
        if event in ("start_map", "start_array"):
            if len(stack) >= MAX_DEPTH:
                skipping, deep = 1, True
                continue
            child: Any = {} if event == "start_map" else []
        else:
            child = value
        parent = stack[-1]
        if isinstance(parent, dict):
            parent[keys[-1]] = child
        else:
            parent.append(child)
        if event in ("start_map", "start_array"):
            stack.append(child)
            keys.append(None)
    if deep:
        return None, f"is nested more than {MAX_DEPTH} levels deep"
    return root, ""


def read_rows(body: Body, fmt: str, *, delimiter: str, timestamp_field: str) -> Iterator[Row]:
    """Every row of the body, good or bad, in order; Damaged when it cannot be read on.
    `fmt` is csv or json (a JSON array when the body starts with "[", else NDJSON)."""
    if fmt == "csv":
        return _csv_rows(body, delimiter, timestamp_field)
    if first_character(body.path, body.compressed) == b"[":
        return _json_array_rows(body, timestamp_field)
    return _ndjson_rows(body, timestamp_field)
