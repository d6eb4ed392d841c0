"""Bulk imports (CSV, JSON array, NDJSON, gzip) and real-time collect: portal/bulk.py, run
by real RQ workers on the test database."""

from __future__ import annotations

import gzip
import io
import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from redis import Redis
from sqlalchemy import func, select

from portal import bulk, bulk_formats
from portal.extensions import db
from portal.models import BulkImport, Message, Stream


def send(body: bytes, *, stream: str = "events", content_type: str = "text/csv",
         **params) -> BulkImport:
    return bulk.receive(stream, io.BytesIO(body), content_type=content_type, **params)


def imported(work, body: bytes, **params) -> dict:
    found = send(body, **params)
    assert work()
    return bulk.import_status(found.id)


def messages(stream: str = "events") -> list[Message]:
    return list(db.session.scalars(
        select(Message).join(Stream).where(Stream.name == stream).order_by(Message.id)))


def message_count() -> int:
    return db.session.scalar(select(func.count()).select_from(Message))


def spooled(app) -> list[Path]:
    folder = Path(app.instance_path) / "bulk-spool"
    return list(folder.iterdir()) if folder.exists() else []


CSV = b"email,name,ts\na@example.com,Ann,2026-01-02T03:04:05Z\nb@example.com,Bob,1767323045\n"


# --- What goes in ---------------------------------------------------------------------

def test_csv_with_timestamp_field_is_written_with_event_times_and_source(app, work):
    status = imported(work, CSV, timestamp_field="ts")
    assert status["status"] == "completed", status
    assert status["rows"] == {"read": 2, "written": 2, "duplicates": 0, "rejected": 0}
    rows = messages()
    assert [row.payload["email"] for row in rows] == ["a@example.com", "b@example.com"]
    assert rows[0].event_time == datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert rows[1].event_time == datetime.fromtimestamp(1767323045, UTC)
    assert {row.source for row in rows} == {f"import:{status['id']}"}
    assert spooled(app) == []  # the spool file is gone
    assert status["finished_at"] and status["errors"] == []


def test_without_timestamp_field_rows_get_the_ingest_time(app, work):
    before = datetime.now(UTC)
    imported(work, CSV)
    assert all(row.event_time >= before.replace(microsecond=0) for row in messages())


@pytest.mark.parametrize("encoding", ["gzip", None])  # header, or the magic bytes alone
@pytest.mark.parametrize("content_type,body", [
    ("text/csv", CSV),
    ("application/json", json.dumps([
        {"email": "a@example.com", "ts": "2026-01-02T03:04:05Z"},
        {"email": "b@example.com", "ts": 1767323045000}]).encode()),
    ("application/x-ndjson", b'{"email": "a@example.com", "ts": "2026-01-02T03:04:05Z"}\n\n'
                             b'{"email": "b@example.com", "ts": 1767323045}\n'),
])
def test_gzip_csv_json_array_and_ndjson(app, work, content_type, body, encoding):
    status = imported(work, gzip.compress(body), content_type=content_type,
                      content_encoding=encoding, timestamp_field="ts")
    assert status["status"] == "completed", status
    assert status["gzip"] is True
    assert status["rows"]["written"] == 2
    rows = messages()
    assert rows[0].event_time == datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert rows[1].event_time == datetime.fromtimestamp(1767323045, UTC)


def test_batches_are_written_one_transaction_each(app, work):
    app.config["PORTAL_BULK_BATCH_SIZE"] = 2
    body = b"n\n" + b"".join(b"%d\n" % n for n in range(7))
    status = imported(work, body)
    assert status["rows"]["written"] == 7
    assert [row.payload["n"] for row in messages()] == [str(n) for n in range(7)]


def test_a_bom_is_not_part_of_the_first_name(app, work):
    assert imported(work, b"\xef\xbb\xbf" + CSV)["status"] == "completed"
    assert "email" in messages()[0].payload
    assert imported(work, b"\xef\xbb\xbf" + b'[{"k": 1}]', stream="json",
                    content_type="application/json")["status"] == "completed"
    assert messages("json")[0].payload == {"k": 1}


def test_the_same_body_twice_counts_duplicates_gzip_or_not(app, work):
    imported(work, CSV)
    again = imported(work, gzip.compress(CSV))
    assert again["rows"] == {"read": 2, "written": 0, "duplicates": 2, "rejected": 0}
    assert "were there already" in again["message"]
    assert len(messages()) == 2


def test_dryrun_reports_and_writes_nothing(app, work):
    body = CSV + b"c@example.com,Cy,yesterday\n"
    status = imported(work, body, timestamp_field="ts", dryrun="true", droperrors="1")
    assert status["status"] == "completed"
    assert status["rows"] == {"read": 3, "written": 0, "duplicates": 0, "rejected": 1}
    assert status["errors"] == [{"row": 3, "line": 4, "message": status["errors"][0]["message"]}]
    assert "'yesterday'" in status["errors"][0]["message"]
    assert "Dry run: 2 rows would be written" in status["message"]
    assert message_count() == 0
    assert db.session.scalar(select(func.count()).select_from(Stream)) == 0


def test_droperrors_skips_bad_rows_and_reports_them_with_lines(app, work):
    lines = [b"email,ts"]
    for n in range(1, 301):
        lines.append(b"u%d@example.com,%s" % (n, b"never" if n % 2 else b"2026-01-01"))
    status = imported(work, b"\n".join(lines) + b"\n", timestamp_field="ts", droperrors=True)
    assert status["status"] == "completed"
    assert status["rows"] == {"read": 300, "written": 150, "duplicates": 0, "rejected": 150}
    assert len(status["errors"]) == bulk.KEPT_ERRORS  # the first ones kept, all counted
    assert status["errors"][0] == {
        "row": 1, "line": 2,
        "message": "field 'ts' has 'never', not a timestamp (ISO 8601 or Unix time)"}
    assert status["errors"][1]["line"] == 4
    assert {row.payload["email"] for row in messages()} == {
        f"u{n}@example.com" for n in range(2, 301, 2)}


def test_without_droperrors_one_bad_row_rejects_everything(app, work):
    app.config["PORTAL_BULK_BATCH_SIZE"] = 2
    body = b"email,ts\n" + b"".join(b"u%d@example.com,2026-01-01\n" % n for n in range(20))
    status = imported(work, body + b"late@example.com,soon\n", timestamp_field="ts")
    assert status["status"] == "failed"
    assert status["rows"]["read"] == 21 and status["rows"]["rejected"] == 1
    assert status["rows"]["written"] == 0
    assert "line 22" in status["message"] and "droperrors=true" in status["message"]
    assert message_count() == 0
    assert spooled(app) == []


def test_json_array_errors_name_the_element(app, work):
    body = json.dumps([{"a": 1}, [1, 2], {"a": 2}, "text", None]).encode()
    status = imported(work, body, content_type="application/json", droperrors=True)
    assert status["rows"] == {"read": 5, "written": 2, "duplicates": 0, "rejected": 3}
    assert [(error["row"], error["line"]) for error in status["errors"]] == [
        (2, None), (4, None), (5, None)]
    assert status["errors"][0]["message"] == "is a JSON array, not an object"


def test_a_spool_file_gone_before_processing_fails_the_import(app, work):
    found = send(CSV)
    Path(found.spool_path).unlink()
    assert work()
    status = bulk.import_status(found.id)
    assert status["status"] == "failed" and "send it again" in status["message"]
    assert message_count() == 0


def test_import_status_of_an_unknown_import(app):
    for unknown in (999, "abc", None, 10**30):
        with pytest.raises(bulk.UnknownImport):
            bulk.import_status(unknown)


# --- Malformed input: a clear error, nothing written -------------------------------------
# Refused on receipt: an error naming the field; no row, no spool file, nothing queued.
REFUSED = [
    ("empty body", b"", {}, "body", "is empty"),
    ("unknown content type", CSV, {"content_type": "text/html"}, "content_type",
     "'text/html' is not one the import reads"),
    ("no content type", CSV, {"content_type": ""}, "content_type", "'no content type'"),
    ("xml", b"<a/>", {"content_type": "application/xml"}, "content_type", "application/xml"),
    ("latin-1 charset", CSV, {"content_type": "text/csv; charset=latin-1"}, "content_type",
     "charset 'latin-1'"),
    ("brotli", CSV, {"content_encoding": "br"}, "content_encoding", "'br' is not supported"),
    ("gzip header, plain body", CSV, {"content_encoding": "gzip"}, "body",
     "the body is not gzip data"),
    ("bad delimiter", CSV, {"delimiter": "x"}, "delimiter", "not 'x'"),
    ("two-character delimiter", CSV, {"delimiter": ";;"}, "delimiter", "not ';;'"),
    ("bad stream name", CSV, {"stream": "Bad Name"}, "stream", "lower-case letters"),
    ("stream name too long", CSV, {"stream": "a" * 65}, "stream", "1 to 64"),
    ("dryrun not a flag", CSV, {"dryrun": "maybe"}, "dryrun", "true or false"),
    ("droperrors not a flag", CSV, {"droperrors": "2"}, "droperrors", "true or false"),
    ("control character in timestamp_field", CSV, {"timestamp_field": "t\x00s"},
     "timestamp_field", "without control characters"),
]


@pytest.mark.parametrize("body,params,field,expected", [case[1:] for case in REFUSED],
                         ids=[case[0] for case in REFUSED])
def test_refused_on_receipt(app, work, body, params, field, expected):
    with pytest.raises(bulk.BulkError) as caught:
        send(body, **params)
    assert caught.value.field == field
    assert expected in caught.value.message
    assert caught.value.details == {field: caught.value.message}
    assert caught.value.status in (400, 415)
    assert db.session.scalar(select(func.count()).select_from(BulkImport)) == 0
    assert spooled(app) == []
    assert not work()  # nothing was queued


def test_too_large_is_refused_while_it_arrives(app, work):
    class Endless(io.RawIOBase):  # a body that would never end: it is not read to the end
        read_bytes = 0

        def read(self, size=-1):
            self.read_bytes += size
            return b"x" * size

    body = Endless()
    with pytest.raises(bulk.TooLarge) as caught:
        bulk.receive("events", body, content_type="text/csv", max_bytes=1_000_000)
    assert caught.value.status == 413 and caught.value.limit == 1_000_000
    assert "1,000,000 bytes" in caught.value.message
    assert body.read_bytes <= 1_000_000 + bulk.CHUNK
    assert spooled(app) == [] and not work()
    assert db.session.scalar(select(func.count()).select_from(BulkImport)) == 0


def test_without_redis_nothing_is_kept(app, work, redis_url):
    from tests.conftest import free_port

    app.config["REDIS_URL"] = f"redis://127.0.0.1:{free_port()}/0"  # nobody listens there
    app.extensions.pop("portal_redis", None)
    with pytest.raises(bulk.QueueUnavailable) as caught:
        send(CSV)
    assert caught.value.status == 503 and caught.value.field == "queue"
    assert spooled(app) == []
    found = db.session.scalars(select(BulkImport)).one()
    assert found.status == "failed" and found.spool_path is None
    assert "Not queued" in bulk.import_status(found.id)["message"]
    with pytest.raises(bulk.QueueUnavailable):
        bulk.collect("live", {"a": 1})
    app.config["REDIS_URL"] = redis_url
    app.extensions.pop("portal_redis", None)
    assert not work()


def _deep(levels: int) -> str:
    return '{"a": ' * levels + "1" + "}" * levels


def _truncated_gzip() -> bytes:
    data = gzip.compress(CSV * 200)
    return data[: len(data) // 2]


NDJSON = "application/x-ndjson"
JSON = "application/json"
# Read by the worker: the import fails (droperrors or not when the file itself is broken),
# its errors say where and what, and nothing is written.
REJECTED = [
    ("bad gzip", b"\x1f\x8b" + b"not really gzip at all", {}, "the gzip data is damaged"),
    ("truncated gzip", _truncated_gzip(), {"droperrors": True}, "the gzip data ends early"),
    ("ragged CSV row", b"a,b\n1,2\n3\n4,5\n", {}, "line 3: has 1 fields but the header has 2"),
    ("too many CSV fields", b"a,b\n1,2,3\n", {}, "line 2: has 3 fields but the header has 2"),
    ("header only", b"email,name\n", {"droperrors": True}, "has a header but no rows"),
    ("blank lines only", b"\n\n  \n", {"content_type": NDJSON}, "the body has no rows"),
    ("duplicate header names", b"email,email\n1,2\n", {}, "names a column twice: email"),
    ("empty header name", b"a,,c\n1,2,3\n", {}, "column 2 of the header has no name"),
    ("empty first line", b"\n", {}, "there is no header row"),
    ("unknown timestamp field (CSV)", CSV, {"timestamp_field": "when", "droperrors": True},
     "the header has no column 'when' (the timestamp_field)"),
    ("unknown timestamp field (NDJSON)", b'{"a": 1}\n', {"timestamp_field": "when",
                                                          "content_type": NDJSON},
     "line 1: has no field 'when'"),
    ("unparseable timestamp", b"a,ts\n1,next tuesday\n", {"timestamp_field": "ts"},
     "field 'ts' has 'next tuesday', not a timestamp"),
    ("empty timestamp", b"a,ts\n1,\n", {"timestamp_field": "ts"}, "field 'ts' is empty"),
    ("timestamp out of range", b'{"ts": 1e300}\n', {"timestamp_field": "ts",
                                                    "content_type": NDJSON},
     "not a timestamp"),
    ("NUL byte in CSV", b"a,b\n1,\x002\n", {"droperrors": True}, "line 2: contains a NUL"),
    ("NUL byte in NDJSON", b'{"a": "\x00"}\n', {"content_type": NDJSON}, "contains a NUL"),
    ("NUL escape in a JSON array", b'[{"a": "\\u0000"}]', {"content_type": JSON},
     "contains a NUL character"),
    ("huge CSV field", b"a\n" + b"x" * 200_000 + b"\n", {}, "field larger than field limit"),
    ("line too long", b"a\n" + b"x" * (bulk_formats.MAX_LINE_BYTES + 10) + b"\n",
     {"droperrors": True}, "is longer than"),
    ("invalid UTF-8 in CSV", b"a,b\n1,caf\xe9\n", {"droperrors": True},
     "line 2: is not valid UTF-8 (byte 6 of the line)"),
    ("invalid UTF-8 in NDJSON", b'{"a": "caf\xe9"}\n', {"content_type": NDJSON},
     "line 1: is not valid UTF-8"),
    ("invalid UTF-8 in a JSON array", b'[{"a": "caf\xe9"}]', {"content_type": JSON},
     "the JSON array breaks off after 0 whole element(s) (lexical error: invalid bytes in UTF8"),
    ("unterminated quote", b'a,b\n1,"2\n', {}, "cannot be read as CSV"),
    ("deep nesting in a JSON array", f"[{_deep(100)}]".encode(), {"content_type": JSON},
     "nested more than 64 levels deep"),
    ("deep nesting in NDJSON", _deep(100).encode() + b"\n", {"content_type": NDJSON},
     "nested more than 64 levels deep"),
    ("mixed JSON types", b'[{"a": 1}, 2, "b"]', {"content_type": JSON},
     "is a JSON number, not an object"),
    ("non-object element", b'[["a", 1]]', {"content_type": JSON},
     "is a JSON array, not an object"),
    ("a JSON scalar", b"42", {"content_type": JSON}, "line 1: is a JSON number, not an object"),
    ("an NDJSON line that is not JSON", b'{"a": 1}\n{"a": \n', {"content_type": NDJSON},
     "line 2: is not valid JSON"),
    ("NaN", b'{"a": NaN}\n', {"content_type": NDJSON}, "has NaN, which is not a JSON value"),
    ("NaN in a JSON array", b'[{"a": NaN}]', {"content_type": JSON},
     "the JSON array breaks off after 0 whole element(s) (lexical error"),
    ("a number of 200 digits", b'{"a": ' + b"9" * 200 + b"}\n", {"content_type": NDJSON},
     "more than 100 digits"),
    ("lone surrogate", b'{"a": "\\ud800"}\n', {"content_type": NDJSON}, "lone surrogate"),
    ("truncated JSON array", b'[{"a": 1}, {"a": 2', {"content_type": JSON, "droperrors": True},
     "breaks off after 1 whole element(s)"),
    ("text after the JSON array", b'[{"a": 1}] [', {"content_type": JSON},
     "breaks off after 1 whole element(s)"),
    ("empty JSON array", b"[ ]", {"content_type": JSON}, "the JSON array is empty"),
    ("wrong delimiter", b"a,b\n1,2\n", {"delimiter": ";"}, "is the delimiter ';' right?"),
    ("semicolons read with commas", b"a;b\n1;2\n", {}, "The header looks semicolon-separated"),
    ("JSON sent as CSV", b'[{"a": 1}, {"a": 2}]', {}, "send it with the content type "
     "application/json"),
]


@pytest.mark.parametrize("body,params,expected", [case[1:] for case in REJECTED],
                         ids=[case[0] for case in REJECTED])
def test_rejected_when_read(app, work, body, params, expected):
    status = imported(work, body, **params)
    assert status["status"] == "failed", status
    assert status["rows"]["written"] == 0
    text = status["message"] + " " + json.dumps(status["errors"])
    assert expected in text, text
    assert status["message"].startswith(("Rejected, nothing written", "Nothing written"))
    assert message_count() == 0
    assert spooled(app) == []


def test_enough_malformed_cases():
    assert len(REFUSED) + len(REJECTED) + 1 >= 30  # +1: too large


# --- Workers: real processes, the backfill queue and the realtime one -------------------

def wait_for(check, seconds: float = 20):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        db.session.rollback()  # see what other processes committed
        if result := check():
            return result
        time.sleep(0.05)
    raise AssertionError("timed out")


def test_a_backfill_worker_process_imports_and_a_realtime_one_collects(app, spawn):
    found = send(gzip.compress(CSV), timestamp_field="ts")
    result = bulk.collect("live", {"email": "c@example.com"})
    assert result["messages"] == 1 and result["stream"] == "live"
    # Only the realtime worker runs: the bulk import waits, the collected message lands.
    spawn("worker", "realtime")
    assert wait_for(lambda: messages("live"))[0].payload == {"email": "c@example.com"}
    assert messages("live")[0].source == "collect"
    assert bulk.import_status(found.id)["status"] == "queued"
    spawn("worker", "backfill")
    wait_for(lambda: bulk.import_status(found.id)["status"] == "completed")
    assert len(messages()) == 2


def test_one_worker_serves_realtime_before_a_waiting_backfill(app, work):
    send(CSV)
    bulk.collect("events", {"email": "live@example.com"})
    assert work()
    assert [row.source for row in messages()][0] == "collect"  # written first
    assert len(messages()) == 3


def test_bulk_keys_never_meet_the_file_imports_keys(app, work):
    status = imported(work, CSV)
    keys = [row.dedupe_key for row in messages()]
    assert keys == [f"bulk:{bulk_sha(CSV)}:1", f"bulk:{bulk_sha(CSV)}:2"]
    assert status["rows"]["written"] == 2


def bulk_sha(body: bytes) -> str:
    import hashlib

    return hashlib.sha256(body).hexdigest()[:40]


def test_bulk_batches_wait_for_queued_realtime_writes(app, work, redis_url):
    from redis import Redis

    counter = Redis.from_url(redis_url)
    bulk.collect("live", {"a": 1})
    assert int(counter.get(bulk.REALTIME_PENDING)) == 1
    started = time.monotonic()
    bulk.yield_to_realtime()  # waits, but not for ever
    assert time.monotonic() - started >= bulk.REALTIME_YIELD_SECONDS
    assert work()
    assert int(counter.get(bulk.REALTIME_PENDING)) == 0
    started = time.monotonic()
    bulk.yield_to_realtime()
    assert time.monotonic() - started < bulk.REALTIME_YIELD_SECONDS / 2


def test_collect_a_list_with_timestamps(app, work):
    result = bulk.collect("live", [{"e": 1, "ts": "2026-03-04T05:06:07+02:00"},
                                   {"e": 2, "ts": 1767323045}], timestamp_field="ts",
                          source="api")
    assert result["messages"] == 2
    assert work()
    rows = messages("live")
    assert [row.payload["e"] for row in rows] == [1, 2]
    assert rows[0].event_time == datetime(2026, 3, 4, 3, 6, 7, tzinfo=UTC)
    assert {row.source for row in rows} == {"api"}


COLLECT_REFUSED = [
    ("stream", {"a": 1}, {"stream": "No"}, "stream", "lower-case"),
    ("scalar", 42, {}, "body", "not a JSON number"),
    ("empty list", [], {}, "body", "holds no message"),
    ("too many", [{"a": 1}] * (bulk.COLLECT_MAX_MESSAGES + 1), {}, "body", "at most 1,000"),
    ("non-object in list", [{"a": 1}, "x"], {}, "message 2", "not an object"),
    ("deep", json.loads(_deep(80)), {}, "body", "nested more than 64"),
    ("NUL", {"a": "\x00"}, {}, "body", "NUL"),
    ("missing timestamp", {"a": 1}, {"timestamp_field": "ts"}, "body", "has no field 'ts'"),
    ("bad timestamp", [{"ts": "2026-01-01"}, {"ts": "soon"}], {"timestamp_field": "ts"},
     "message 2", "'soon'"),
]


@pytest.mark.parametrize("payload,params,field,expected", [case[1:] for case in COLLECT_REFUSED],
                         ids=[case[0] for case in COLLECT_REFUSED])
def test_collect_refuses_bad_messages_and_queues_nothing(app, work, payload, params, field,
                                                         expected):
    stream = params.pop("stream", "live")
    with pytest.raises(bulk.BulkError) as caught:
        bulk.collect(stream, payload, **params)
    assert caught.value.field == field and expected in caught.value.message
    assert not work()
    assert message_count() == 0


# --- Profiles from a bulk import ------------------------------------------------------

PEOPLE = (b"email,plan,ts\n"
          b"a@example.com,free,2026-01-01T00:00:00Z\n"
          b"b@example.com,pro,2026-01-01T00:00:00Z\n"
          b"A@example.com,team,2026-01-03T00:00:00Z\n"
          b"c@example.com,free,2026-01-01T00:00:00Z\n")


def test_an_import_builds_profiles_after_writing_its_rows_a_batch_at_a_time(app, work):
    from portal import profiles

    app.config["PORTAL_BULK_PROFILE_BATCH_SIZE"] = 2
    status = imported(work, PEOPLE, timestamp_field="ts")
    assert status["status"] == "completed", status
    assert status["profiles"] == {"status": "built", "messages": 4, "of": 4}
    found = profiles.find("email", "a@example.com")
    assert found is not None
    plan = {attribute.name: attribute for attribute in found.attributes}["plan"]
    assert plan.value == "team" and plan.source == f"import:{status['id']}"
    # The same profiles rebuilding from the raw messages gives.
    built = profiles.snapshot()
    assert len(built) == 3
    profiles.rebuild()
    assert profiles.snapshot() == built


def test_before_its_profiles_are_built_an_import_says_so_and_newer_data_still_wins(
        app, work, redis_url):
    """The rows are written, the profile task waits; a real-time message about the same
    person with a newer event time arrives first and is not overwritten afterwards."""
    from portal import profiles
    from portal.datastore import write_messages
    from providers.base import OutMessage

    import_id = send(PEOPLE, timestamp_field="ts").id
    assert bulk.process_import(import_id) == "completed"  # the write pass, no profiles yet
    status = bulk.import_status(import_id)
    assert status["profiles"] == {"status": "building", "messages": 0, "of": 4}
    assert profiles.find("email", "b@example.com") is None
    write_messages("live", [OutMessage("rt-1", datetime(2026, 2, 1, tzinfo=UTC),
                                       {"email": "b@example.com", "plan": "enterprise"})],
                   source="collect")
    db.session.commit()
    assert work()  # the queued build_profiles
    status = bulk.import_status(import_id)
    assert status["profiles"]["status"] == "built"
    attributes = {a.name: a.value for a in profiles.find("email", "b@example.com").attributes}
    assert attributes["plan"] == "enterprise"


def test_a_lost_profile_task_is_queued_again_and_resumes_where_it_stopped(app, work, redis_url):
    """Redis loses the task after part of the import's messages were folded in: the
    dispatcher's sweep queues it again and it folds only the rest."""
    from redis import Redis

    from portal import profiles
    from workers import dispatcher

    import_id = send(PEOPLE, timestamp_field="ts").id
    assert bulk.process_import(import_id) == "completed"
    Redis.from_url(redis_url).flushdb()  # the queued build_profiles is gone
    upload = db.session.get(BulkImport, import_id)
    # As if a first run had folded the first two messages and then died.
    first_two = messages()[:2]
    profiles.apply([profiles.Fact(row.id, row.stream_id, row.event_time, row.payload)
                    for row in first_two])
    upload.profiled_through, upload.profiled = first_two[-1].id, 2
    db.session.commit()
    assert bulk.queue_pending_profiles() == 1
    assert bulk.queue_pending_profiles() == 0  # queued already: not twice
    assert work()
    status = bulk.import_status(import_id)
    assert status["profiles"] == {"status": "built", "messages": 4, "of": 4}
    assert profiles.find("email", "c@example.com") is not None
    # The dispatcher's once-a-minute pass has nothing left to queue.
    assert dispatcher.bulk_profiles_due(datetime.now(UTC)) == 0


def test_a_dry_run_or_a_rejected_import_has_no_profiles_to_build(app, work):
    assert imported(work, PEOPLE, timestamp_field="ts", dryrun="true")["profiles"] == {
        "status": "none", "messages": 0, "of": 0}
    assert bulk.queue_pending_profiles() == 0


# --- The real-time write and SQLite's write lock --------------------------------------

def _hold_write_lock(app, seconds: float):
    """Another connection holds SQLite's write lock for `seconds` (as a bulk batch does)."""
    import sqlite3
    import threading

    path = db.engine.url.database
    held = threading.Event()

    def hold():
        other = sqlite3.connect(path, timeout=30, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")
        held.set()
        time.sleep(seconds)
        other.execute("COMMIT")
        other.close()

    thread = threading.Thread(target=hold)
    thread.start()
    held.wait(10)
    return thread


def test_a_real_time_write_waits_for_the_write_lock_and_then_writes(app):
    if db.engine.dialect.name != "sqlite":
        pytest.skip("SQLite's write lock")
    from portal.datastore import SQLITE_LOCK_WAIT_SECONDS

    db.session.remove()
    thread = _hold_write_lock(app, 0.3)
    try:
        assert bulk.write_collected("live", [{"email": "a@example.com"}],
                                    [datetime(2026, 1, 1, tzinfo=UTC)], "collect", "k1") == 1
    finally:
        thread.join()
    assert [row.payload for row in messages("live")] == [{"email": "a@example.com"}]
    # The connection waits as long as ever for every other write.
    busy = db.session.connection().exec_driver_sql("PRAGMA busy_timeout").scalar()
    assert busy == int(SQLITE_LOCK_WAIT_SECONDS * 1000)


def test_a_real_time_write_gives_up_after_the_lock_wait_and_writes_nothing(app, monkeypatch):
    if db.engine.dialect.name != "sqlite":
        pytest.skip("SQLite's write lock")
    from sqlalchemy.exc import OperationalError

    from portal import datastore

    monkeypatch.setattr(datastore, "SQLITE_LOCK_WAIT_SECONDS", 0.1)
    db.session.remove()
    thread = _hold_write_lock(app, 1.0)
    try:
        with pytest.raises(OperationalError, match="locked"):
            bulk.write_collected("live", [{"email": "a@example.com"}],
                                 [datetime(2026, 1, 1, tzinfo=UTC)], "collect", "k1")
    finally:
        thread.join()
    db.session.remove()
    assert messages("live") == []


# --- Found by the fault drills (scripts/drills.py) ------------------------------------------

def test_a_full_disk_is_refused_with_507_and_nothing_is_kept(app, client, token_for, work):
    import shutil
    import subprocess

    folder = bulk.spool_folder()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "spooltest",
                              str(folder)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip("mounting a small tmpfs needs root")
    try:
        headers = {"Authorization": f"Bearer {token_for('operator')}",
                   "Content-Type": "text/csv"}
        body = b"email,ts\n" + b"".join(b"u%d@example.com,1767323045\n" % n
                                         for n in range(60_000))  # ~1.6 MB
        assert len(body) > shutil.disk_usage(folder).free
        refused = client.post("/api/v2/collect/bulk/events", data=body, headers=headers)
        assert refused.status_code == 507
        error = refused.get_json()["error"]
        assert error["code"] == "insufficient_storage"
        assert "no room left" in error["details"]["body"]
        assert spooled(app) == [] and not work()
        assert db.session.scalar(select(func.count()).select_from(BulkImport)) == 0
        # Space enough again: the same route takes a body.
        small = client.post("/api/v2/collect/bulk/events?timestamp_field=ts", data=CSV,
                            headers=headers)
        assert small.status_code == 202
        assert work() and message_count() == 2
    finally:
        subprocess.run(["umount", str(folder)], check=True)


def test_an_import_whose_task_redis_lost_is_queued_again_once(app, work, redis_url):
    from workers import dispatcher

    found = send(PEOPLE, timestamp_field="ts")
    Redis.from_url(redis_url).flushall()  # the queued process_import is gone
    now = datetime.now(UTC)
    assert bulk.queue_lost_imports(now) == 0, "just received: its task may be on its way"
    later = now + bulk.LOST_IMPORT_GRACE + timedelta(seconds=1)
    assert bulk.queue_lost_imports(later) == 1
    assert bulk.queue_lost_imports(later) == 0  # queued: not twice
    assert work()
    assert bulk.import_status(found.id)["status"] == "completed"
    assert message_count() == 4
    assert dispatcher.bulk_imports_due(later) == 0


def test_an_import_whose_worker_died_is_queued_again_and_writes_nothing_twice(
        app, spawn, work):
    import signal

    rows = 20_000
    body = b"email,ts\n" + b"".join(b"u%d@example.com,1767323045\n" % n for n in range(rows))
    found = send(body, stream="big", timestamp_field="ts")
    worker = spawn("worker", "backfill", PORTAL_BULK_BATCH_SIZE="200",
                   PORTAL_WORKER_HEARTBEAT_SECONDS="1")

    def written() -> int:
        db.session.rollback()
        return db.session.scalar(select(func.count()).select_from(Message))

    wait_for(lambda: written() > 0, 60)  # a batch landed: the import is under way
    worker.send_signal(signal.SIGKILL)
    worker.wait(10)
    db.session.expire_all()
    assert db.session.get(BulkImport, found.id).status == "running"
    assert written() < rows, "the import finished before the kill: make it larger"
    later = datetime.now(UTC) + bulk.LOST_IMPORT_GRACE
    assert bulk.queue_lost_imports(later) == 0, "its worker's heartbeat is still fresh"
    wait_for(lambda: bulk.queue_lost_imports(later) == 1, 20)  # two missed beats and slack
    assert work()
    status = bulk.import_status(found.id)
    assert status["status"] == "completed", status
    keys = db.session.scalars(select(Message.dedupe_key)).all()
    assert len(keys) == len(set(keys)) == rows
