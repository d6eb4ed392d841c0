"""CSV & JSON files: import an uploaded CSV or NDJSON file into a stream.

The whole file is checked before the first message is written, so a bad row never
leaves a half-written import; then it is written in batches, each batch with its
cursor in one transaction, and each message carries a dedupe key (file hash + line),
so a retry or a second import of the same file never duplicates a message.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, NamedTuple

from providers.base import (
    NO_AUTH,
    ConfigError,
    JobType,
    OutMessage,
    Provider,
    RunContext,
    StoredFile,
    WorkResult,
)

FORMATS = ("csv", "ndjson")
DELIMITERS = {",": "Comma", ";": "Semicolon", "\t": "Tab", "|": "Pipe"}
STREAM_PATTERN = "^[a-z0-9][a-z0-9_-]{0,63}$"
# The most columns a CSV header (or fields the first NDJSON objects) may name. Providers
# read no settings: the portal sets this from PORTAL_MAX_COLUMNS when it starts.
MAX_COLUMNS = 2000


class RecordError(ValueError):
    """A problem with the file at a given line."""

    def __init__(self, line: int, problem: str, resume: tuple[int, int] | None = None):
        super().__init__(f"line {line}: {problem}")
        self.line = line
        self.problem = problem
        # (offset, line) to read on after the bad row, for a check that lists several
        # problems; None when nothing after it can be read (a bad header).
        self.resume = resume


@dataclass(frozen=True)
class FileInfo:
    format: str
    fields: list[str]
    delimiter: str


class Record(NamedTuple):
    line: int  # the physical line the record starts on
    end_offset: int  # byte offset just after it
    end_line: int  # the physical line it ends on
    data: dict[str, Any]


def _not_utf8(line: int, byte: int) -> RecordError:
    return RecordError(
        line, f"is not valid UTF-8 (byte {byte} of the line); save the file as UTF-8 and "
        "upload it again",
    )


def _nul(line: int) -> RecordError:
    return RecordError(line, "contains a NUL character (byte 0), which a text file should "
                             "not have; save the file again as plain UTF-8 text")


class _Lines:
    """Decoded lines of a byte stream, counting physical lines as they are read."""

    def __init__(self, data: bytes, offset: int, line: int):
        self.buffer = io.BytesIO(data)
        self.buffer.seek(offset)
        self.line = line

    def __iter__(self) -> Iterator[str]:
        while raw := self.buffer.readline():
            self.line += 1
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise _not_utf8(self.line, exc.start + 1) from None
            if self.line == 1:
                text = text.removeprefix("\ufeff")
            if "\x00" in text:
                raise _nul(self.line)
            yield text

    @property
    def offset(self) -> int:
        return self.buffer.tell()


def detect_format(filename: str, data: bytes) -> str:
    """csv or ndjson, from the name and else from the first character."""
    name = filename.lower()
    if name.endswith((".ndjson", ".jsonl", ".json")):
        return "ndjson"
    if name.endswith((".csv", ".tsv", ".txt")):
        return "csv"
    return "ndjson" if data.lstrip()[:1] == b"{" else "csv"


def _too_wide(line: int, what: str) -> RecordError:
    return RecordError(
        line, f"{what}, more than the {MAX_COLUMNS:,} this portal accepts; remove the "
        "columns you do not need, or ask an administrator to raise PORTAL_MAX_COLUMNS",
    )


def _csv_header(lines: _Lines, delimiter: str) -> list[str]:
    reader = csv.reader(lines, delimiter=delimiter, strict=True)
    try:
        header = next(reader, None)
    except csv.Error as exc:
        raise RecordError(lines.line, f"the header row cannot be read ({exc})") from None
    if not header or all(not name.strip() for name in header):
        raise RecordError(1, "the file is empty: it needs a header row and at least one row")
    if len(header) > MAX_COLUMNS:
        raise _too_wide(1, f"the header has {len(header):,} columns")
    names = [name.strip() for name in header]
    # One pass with a set: the header is checked in time linear in its width.
    seen: set[str] = set()
    duplicates: set[str] = set()
    for position, name in enumerate(names, start=1):
        if not name:
            raise RecordError(1, f"column {position} of the header has no name")
        if name in seen:
            duplicates.add(name)
        seen.add(name)
    if duplicates:
        raise RecordError(1, f"the header names a column twice: {', '.join(sorted(duplicates))}")
    return names


def inspect(filename: str, data: bytes) -> FileInfo:
    """Format, field names and CSV delimiter of an upload; RecordError when unreadable."""
    if not data.strip():
        raise RecordError(1, "the file is empty")
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line_start = data.rfind(b"\n", 0, exc.start) + 1
        raise _not_utf8(data.count(b"\n", 0, exc.start) + 1, exc.start - line_start + 1) from None
    if b"\x00" in data:
        raise _nul(data.count(b"\n", 0, data.index(b"\x00")) + 1)
    fmt = detect_format(filename, data)
    if fmt == "ndjson":
        if data.lstrip()[:1] == b"[":
            raise RecordError(
                1, "a JSON array is not supported: use NDJSON, one JSON object per line"
            )
        fields: dict[str, None] = {}  # ordered, with constant-time membership
        for count, record in enumerate(iter_records(data, fmt, ",")):
            fields.update(dict.fromkeys(record.data))
            if len(fields) > MAX_COLUMNS:
                raise _too_wide(record.line, f"the objects name {len(fields):,} fields")
            if count >= 100:  # the first rows name the fields well enough for a menu
                break
        return FileInfo(fmt, list(fields), ",")
    first = _Lines(data, 0, 0)
    sample = next(iter(first), "")
    delimiter = max(DELIMITERS, key=sample.count) if sample else ","
    return FileInfo(fmt, _csv_header(_Lines(data, 0, 0), delimiter), delimiter)


def iter_records(
    data: bytes, fmt: str, delimiter: str, offset: int = 0, line: int = 0
) -> Iterator[Record]:
    """Yield records from `offset` on; RecordError at the first bad row.

    `offset`/`line` resume after a record an earlier call yielded: its end_offset and
    end_line (0 and 0 = the start of the file).
    """
    if fmt == "csv":
        yield from _csv_records(data, delimiter, offset, line)
    elif fmt == "ndjson":
        yield from _ndjson_records(data, offset, line)
    else:
        raise RecordError(1, f"unknown format {fmt!r}")


def _csv_records(data: bytes, delimiter: str, offset: int, line: int):
    header_lines = _Lines(data, 0, 0)
    header = _csv_header(header_lines, delimiter)
    if offset == 0:
        offset, line = header_lines.offset, header_lines.line
    lines = _Lines(data, offset, line)
    reader = csv.reader(lines, delimiter=delimiter, strict=True)
    while True:
        start = lines.line + 1
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            raise RecordError(start, f"the row cannot be read as CSV ({exc})",
                              resume=(lines.offset, lines.line)) from None
        if not row or row == [""]:
            continue  # blank line
        if len(row) != len(header):
            raise RecordError(
                start, f"has {len(row)} fields but the header has {len(header)}",
                resume=(lines.offset, lines.line),
            )
        yield Record(start, lines.offset, lines.line, dict(zip(header, row, strict=True)))


def _ndjson_records(data: bytes, offset: int, line: int):
    lines = _Lines(data, offset, line)
    for text in lines:
        if not text.strip():
            continue
        try:
            record = parse_json_line(text, lines.line)
        except RecordError as exc:
            raise RecordError(exc.line, exc.problem, resume=(lines.offset, lines.line)) from None
        if not isinstance(record, dict):
            raise RecordError(lines.line, "is not a JSON object",
                              resume=(lines.offset, lines.line))
        yield Record(lines.line, lines.offset, lines.line, record)


# What one JSON line may hold: storage and every page that shows a record walk it, and
# Python refuses to read integers of more than 4,300 digits.
MAX_DEPTH = 64
MAX_DIGITS = 100
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")  # \ud800-\udfff written in JSON
_SURROGATE = re.compile("[\ud800-\udfff]")


class _Refused(ValueError):
    """A JSON value the parser's hooks refuse; its text is the line's problem."""


def _json_int(text: str) -> int:
    if len(text) - text.startswith("-") > MAX_DIGITS:
        raise _Refused(f"has a number with more than {MAX_DIGITS} digits")
    return int(text)


def _json_float(text: str) -> float:
    mantissa = text.lower().partition("e")[0]
    if len(mantissa) - mantissa.count("-") - mantissa.count(".") > MAX_DIGITS:
        raise _Refused(f"has a number with more than {MAX_DIGITS} digits")
    value = float(text)
    if not math.isfinite(value):
        raise _Refused(f"has the number {text[:20]}, too large to store (it reads as "
                       "infinity)")
    return value


def _json_constant(name: str) -> Any:
    raise _Refused(f"has {name}, which is not a JSON value; write null or a number instead")


def parse_json_line(text: str, line: int) -> Any:
    """One line of NDJSON as a value storage can keep; RecordError naming the problem for
    what is not valid JSON or cannot be kept: NaN or Infinity, a number of more than
    MAX_DIGITS digits or out of float range, nesting deeper than MAX_DEPTH, a NUL or a
    lone surrogate written as an escape."""
    try:
        value = json.loads(text, parse_int=_json_int, parse_float=_json_float,
                           parse_constant=_json_constant)
    except _Refused as exc:
        raise RecordError(line, str(exc)) from None
    except RecursionError:
        raise RecordError(line, f"is nested more than {MAX_DEPTH} levels deep") from None
    except json.JSONDecodeError as exc:
        raise RecordError(line, f"is not valid JSON ({exc.msg})") from None
    # Only a line that could hold a problem is walked: the checks above are on its text.
    deep = text.count("[") + text.count("{") > MAX_DEPTH
    if deep or "\\u0000" in text or _SURROGATE_ESCAPE.search(text):
        _check_json(value, line)
    return value


def _check_json(value: Any, line: int) -> None:
    pending = [(value, 1)]
    while pending:
        item, depth = pending.pop()
        if isinstance(item, dict | list):
            if depth > MAX_DEPTH:
                raise RecordError(line, f"is nested more than {MAX_DEPTH} levels deep")
            children = [*item.keys(), *item.values()] if isinstance(item, dict) else item
            pending.extend((child, depth + 1) for child in children)
        elif isinstance(item, str):
            if "\x00" in item:  # written as \u0000: storage cannot hold it
                raise _nul(line)
            if _SURROGATE.search(item):
                raise RecordError(line, "has a lone surrogate escape (\\ud800 to \\udfff), "
                                        "which is not text; save the file as UTF-8 again")


def parse_event_time(value: Any, field: str) -> datetime:
    """An event time from ISO 8601 text or Unix seconds/milliseconds, in UTC."""
    problem = f"field '{field}' has {value!r}, not a timestamp (ISO 8601 or Unix time)"
    if value is None or (isinstance(value, str) and not value.strip()):
        raise ValueError(f"field '{field}' is empty; every row needs a timestamp")
    if isinstance(value, bool):
        raise ValueError(problem)
    if isinstance(value, str):
        text = value.strip()
        number: float | None = None
        # "YYYY-..." is never a number (float() reads a "-" only first or after an "e"):
        # skip the failed float(), the costliest step of reading an ISO time.
        if text[4:5] != "-" or text[3:4] in ("e", "E"):
            try:
                number = float(text)
            except ValueError:
                number = None
        if number is None:
            try:
                moment = datetime.fromisoformat(text)
            except ValueError:
                raise ValueError(problem) from None
            return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
        value = number
    if isinstance(value, int | float):
        seconds = value / 1000 if abs(value) > 1e11 else value
        try:
            return datetime.fromtimestamp(seconds, UTC)
        except (OverflowError, OSError, ValueError):
            raise ValueError(problem) from None
    raise ValueError(problem)


def _event_time(record: dict[str, Any], field: str, line: int, now: datetime) -> datetime:
    if not field:
        return now
    if field not in record:
        raise RecordError(line, f"has no field '{field}' (the timestamp field)")
    try:
        return parse_event_time(record[field], field)
    except ValueError as exc:
        raise RecordError(line, str(exc)) from None


class PreviewRow(NamedTuple):
    line: int
    event_time: datetime | None  # None: the time of import (no timestamp field)
    data: dict[str, Any]


@dataclass(frozen=True)
class FileCheck:
    """What one pass over a file found, the way the import reads it."""

    rows: int  # rows read, good or bad
    sample: list[PreviewRow]  # the first good rows, as they would be stored
    errors: list[RecordError]  # the first problems, in file order
    complete: bool  # False: the pass stopped early (at max_errors, or at `rows` asked for)


NO_ROWS = "the file has no rows to import"


def check_file(data: bytes, fmt: str, delimiter: str, timestamp_field: str, *,
               sample: int = 20, max_errors: int = 10, max_rows: int | None = None
               ) -> FileCheck:
    """Read the file as the import does (iter_records, then each row's event time) in one
    pass, linear in its size: keep the first `sample` good rows and the first `max_errors`
    problems, going on past a bad row where the file allows it. A file with a header and no
    row is a problem. `max_rows` stops after that many rows (a preview of the start only).
    The import runs this same check before it writes anything."""
    rows, kept, errors = 0, [], []
    offset = line = 0
    moment = datetime.now(UTC)  # only tells whether a timestamp parses; not kept
    while True:
        try:
            for record in iter_records(data, fmt, delimiter, offset, line):
                rows += 1
                try:
                    event_time = (_event_time(record.data, timestamp_field, record.line, moment)
                                  if timestamp_field else None)
                except RecordError as exc:
                    errors.append(exc)
                    if len(errors) >= max_errors:
                        return FileCheck(rows, kept, errors, complete=False)
                else:
                    if len(kept) < sample:
                        kept.append(PreviewRow(record.line, event_time, record.data))
                if max_rows is not None and rows >= max_rows:
                    return FileCheck(rows, kept, errors, complete=False)
        except RecordError as exc:
            errors.append(exc)
            if exc.resume is None:
                return FileCheck(rows, kept, errors, complete=False)
            rows += 1
            if len(errors) >= max_errors:
                return FileCheck(rows, kept, errors, complete=False)
            offset, line = exc.resume
            continue
        break
    if rows == 0:
        errors.append(RecordError(1, NO_ROWS))
    return FileCheck(rows, kept, errors, complete=True)


# Names that usually hold an event time, best first; a name counts only when its values do.
TIMESTAMP_NAMES = ("timestamp", "event_time", "time", "ts", "created_at", "date", "updated_at")
GUESS_ROWS = 20  # the rows whose values the guess reads
# Unix times a column of numbers must fall in to be taken for timestamps (2001 to 2286):
# smaller numbers are counts, scores or ids far more often than times in the 1970s.
_EPOCH_SECONDS = (1e9, 1e10)
_EPOCH_MILLISECONDS = (1e12, 1e13)


def _looks_like_time(value: Any) -> bool:
    """A value the import reads as an event time (parse_event_time) and that is written the
    way times are: ISO 8601 with a date, or Unix seconds or milliseconds of this era."""
    try:
        parse_event_time(value, "")
    except ValueError:
        return False
    if isinstance(value, str):
        text = value.strip()
        try:
            value = float(text)
        except ValueError:
            return "-" in text[:11]  # ISO 8601 with a date (fromisoformat read it)
    low_s, high_s = _EPOCH_SECONDS
    low_ms, high_ms = _EPOCH_MILLISECONDS
    return low_s <= abs(value) < high_s or low_ms <= abs(value) < high_ms


def guess_timestamp_field(data: bytes, fmt: str, delimiter: str, fields: list[str]) -> str:
    """The field that most likely holds each row's event time, from the values of the first
    GUESS_ROWS rows: a field whose every value there reads as a time, preferring the usual
    names (TIMESTAMP_NAMES), then the first such field in the file's order; "" if none."""
    rows = check_file(data, fmt, delimiter, "", sample=GUESS_ROWS, max_errors=1,
                      max_rows=GUESS_ROWS).sample
    if not rows:
        return ""
    timelike = [field for field in fields
                if all(field in row.data and _looks_like_time(row.data[field]) for row in rows)]
    lowered = {field.lower(): field for field in timelike}
    named = [lowered[name] for name in TIMESTAMP_NAMES if name in lowered]
    return (named or timelike or [""])[0]


def _records(upload: StoredFile, config: dict[str, Any], cursor: dict[str, Any]):
    return iter_records(
        upload.content, upload.format, config.get("delimiter", ","),
        cursor.get("offset", 0), cursor.get("line", 0),
    )


def run_import(ctx: RunContext) -> WorkResult:
    """One unit: check the whole file first (first unit only), then write one batch."""
    config = ctx.config
    upload = ctx.files.get(config["upload_id"])
    field = config.get("timestamp_field") or ""
    cursor = dict(ctx.cursor or {})
    now = ctx.now()
    try:
        if not cursor.get("checked"):
            checked = check_file(upload.content, upload.format, config.get("delimiter", ","),
                                 field, sample=0, max_errors=1)
            if checked.errors:
                raise checked.errors[0]
            total = checked.rows
            cursor = {"checked": True, "rows": total, "offset": 0, "line": 0, "done_rows": 0}
            ctx.log(f"Checked {upload.filename}: {total:,} rows, all readable")
        batch: list[OutMessage] = []
        for record in _records(upload, config, cursor):
            batch.append(OutMessage(
                dedupe_key=f"{upload.sha256[:40]}:{record.line}",
                event_time=_event_time(record.data, field, record.line, now),
                payload=record.data,
            ))
            cursor.update(offset=record.end_offset, line=record.end_line)
            if len(batch) >= ctx.batch_size:
                break
    except RecordError as exc:
        raise ConfigError(f"{upload.filename}, {exc}", code="bad_input") from None

    added, omitted = ctx.sink.write(config["stream"], batch)
    cursor["done_rows"] = cursor.get("done_rows", 0) + len(batch)
    done = cursor["done_rows"] >= cursor["rows"]
    if done:
        message = (
            f"Imported {cursor['rows']:,} rows of {upload.filename} into stream "
            f"'{config['stream']}'"
        )
    else:
        message = (
            f"Rows {cursor['done_rows'] - len(batch) + 1:,}–{cursor['done_rows']:,} "
            f"of {cursor['rows']:,} written to stream '{config['stream']}'"
        )
    if omitted:
        message += f"; {omitted:,} already there were skipped"
    return WorkResult(
        added=added, omitted=omitted, cursor=cursor, done=done, more_now=not done,
        message=message, progress_done=cursor["done_rows"], progress_total=cursor["rows"],
    )


IMPORT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["upload_id", "stream"],
    "additionalProperties": False,
    "x-order": ["upload_id", "timestamp_field", "stream", "delimiter"],
    "properties": {
        "upload_id": {
            "type": "integer",
            "title": "File",
            "description": "A CSV file with a header row, or NDJSON (one JSON object per "
            "line), in UTF-8.",
            "x-widget": "upload",
        },
        "timestamp_field": {
            "type": "string",
            "title": "Timestamp field",
            "description": "The field that holds each row's event time (ISO 8601 or Unix "
            "seconds/milliseconds). Without one, rows get the time of import.",
            "default": "",
            "x-options": "upload_fields",
        },
        "stream": {
            "type": "string",
            "title": "Target stream",
            "description": "The stream the rows land in: lower-case letters, digits, - and _.",
            "pattern": STREAM_PATTERN,
            "default": "default",
        },
        "delimiter": {
            "type": "string",
            "title": "CSV delimiter",
            "description": "Detected from the header row; ignored for NDJSON.",
            "enum": list(DELIMITERS),
            "x-enum-labels": list(DELIMITERS.values()),
            "default": ",",
        },
    },
}

PROVIDER = Provider(
    key="files",
    name="CSV & JSON files",
    category="Files",
    description="Upload a CSV or NDJSON file and import its rows into a stream.",
    logo="files.svg",
    auth_methods=(NO_AUTH,),
    job_types=(
        JobType(
            key="import_file",
            name="Import file",
            kind="import",
            description="Reads an uploaded CSV or NDJSON file once and writes each row to a "
            "stream as a message, with its event time taken from the field you pick.",
            config_schema=IMPORT_SCHEMA,
            run=run_import,
            default_cadence="Runs once",
            queue="backfill",
            recurring=False,
        ),
    ),
)
