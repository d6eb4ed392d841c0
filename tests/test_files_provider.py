"""Reading CSV and NDJSON uploads: fields, records, resuming, and each kind of bad input."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from providers.files import RecordError, inspect, iter_records, parse_event_time

CSV = b"email,ts,plan\na@x.io,2024-01-02T03:04:05Z,pro\nb@x.io,1704164645,free\n"


def test_inspect_csv_reads_the_header():
    info = inspect("people.csv", CSV)
    assert (info.format, info.fields, info.delimiter) == ("csv", ["email", "ts", "plan"], ",")


def test_inspect_detects_semicolons_and_strips_a_bom():
    info = inspect("x.csv", "\ufeffemail;ts\na;1\n".encode())
    assert (info.fields, info.delimiter) == (["email", "ts"], ";")


def test_inspect_ndjson_collects_fields_in_order():
    data = b'{"email": "a", "ts": 1}\n\n{"email": "b", "plan": "pro"}\n'
    info = inspect("events.ndjson", data)
    assert (info.format, info.fields) == ("ndjson", ["email", "ts", "plan"])


@pytest.mark.parametrize(("name", "data", "line", "words"), [
    ("empty.csv", b"", 1, "empty"),
    ("blank.csv", b"\n\n", 1, "empty"),
    ("array.json", b'[{"a": 1}]', 1, "JSON array"),
    ("dup.csv", b"a,b,a\n1,2,3\n", 1, "twice: a"),
    ("noname.csv", b"a,,c\n1,2,3\n", 1, "column 2"),
    ("latin1.csv", "name\ncaf\xe9\n".encode("latin-1"), 2, "not valid UTF-8"),
    ("header.csv", "caf\xe9,b\n".encode("latin-1"), 1, "not valid UTF-8"),
    ("bad.ndjson", b'{"a": 1}\n{"a": \n', 2, "not valid JSON"),
    ("list.ndjson", b'{"a": 1}\n[1, 2]\n', 2, "not a JSON object"),
])
def test_inspect_names_the_line_and_the_problem(name, data, line, words):
    with pytest.raises(RecordError) as raised:
        inspect(name, data)
    assert raised.value.line == line
    assert words in str(raised.value)


def test_records_carry_their_lines_and_a_quoted_newline_stays_in_one_record():
    data = b'id,note\n1,"two\nlines"\n\n2,plain\n'
    records = list(iter_records(data, "csv", ","))
    assert [(r.line, r.end_line, r.data) for r in records] == [
        (2, 3, {"id": "1", "note": "two\nlines"}),
        (5, 5, {"id": "2", "note": "plain"}),
    ]


@pytest.mark.parametrize("fmt,data", [
    ("csv", b"id,v\n" + b"".join(b"%d,x\n" % i for i in range(7))),
    ("ndjson", b"".join(b'{"id": %d}\n' % i for i in range(7))),
])
def test_resuming_from_any_record_gives_the_rest(fmt, data):
    everything = list(iter_records(data, fmt, ","))
    for done in everything:
        rest = list(iter_records(data, fmt, ",", done.end_offset, done.end_line))
        assert rest == everything[everything.index(done) + 1:]


@pytest.mark.parametrize("data,line,words", [
    (b"a,b\n1,2\n3\n", 3, "has 1 fields but the header has 2"),
    (b"a,b\n1,2\n3,4,5\n", 3, "has 3 fields"),
    (b'a,b\n1,"open\n', 2, "cannot be read as CSV"),
    (b"a,b\n1,2\n\xff\xfe,3\n", 3, "not valid UTF-8"),
    (b"a,b\n1,2\n3,\x004\n", 3, "contains a NUL character"),
])
def test_bad_rows_name_their_line(data, line, words):
    with pytest.raises(RecordError) as raised:
        list(iter_records(data, "csv", ","))
    assert raised.value.line == line and words in str(raised.value)


def test_a_nul_in_ndjson_text_or_escape_is_refused_with_its_line():
    for data in (b'{"a": 1}\n{"a": "x\x00"}\n', b'{"a": 1}\n{"a": "x\\u0000"}\n'):
        with pytest.raises(RecordError) as raised:
            list(iter_records(data, "ndjson", ","))
        assert raised.value.line == 2 and "NUL" in str(raised.value)
    with pytest.raises(RecordError, match="line 2: contains a NUL"):
        inspect("x.csv", b"a,b\n1,\x002\n")


@pytest.mark.parametrize("value,expected", [
    ("2024-01-02T03:04:05Z", datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)),
    ("2024-01-02 05:04:05+02:00", datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)),
    ("2024-01-02", datetime(2024, 1, 2, tzinfo=UTC)),
    ("1704164645", datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)),
    (1704164645000, datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)),
    (1704164645.5, datetime(2024, 1, 2, 3, 4, 5, 500000, tzinfo=UTC)),
])
def test_event_times(value, expected):
    assert parse_event_time(value, "ts") == expected


@pytest.mark.parametrize("value,words", [
    ("", "is empty"), (None, "is empty"), ("yesterday", "not a timestamp"),
    (True, "not a timestamp"), ("1e400", "not a timestamp"), ({"a": 1}, "not a timestamp"),
])
def test_bad_event_times(value, words):
    with pytest.raises(ValueError) as raised:
        parse_event_time(value, "ts")
    assert words in str(raised.value) and "'ts'" in str(raised.value)
