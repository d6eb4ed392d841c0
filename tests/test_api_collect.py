"""The data-in routes of /api/v2 over HTTP, with real RQ workers: real-time messages
(collect/json), bulk imports (collect/bulk, read back with import/<id>), their limits and
their refusals. The import rules themselves are tested in tests/test_bulk.py."""

from __future__ import annotations

import gzip

from sqlalchemy import func, select

from portal import apischemas
from portal.extensions import db
from portal.models import Message, Stream
from tests.test_api import call, envelope_ok

CSV = "email,signed_up_at,plan\n" + "".join(
    f"user{n}@example.com,2024-03-{n % 28 + 1:02d}T10:00:00Z,pro\n" for n in range(30))


def stored(stream: str) -> list[Message]:
    db.session.expire_all()
    return list(db.session.scalars(select(Message).join(Stream).where(Stream.name == stream)
                                   .order_by(Message.id)))


def bulk(client, raw, body: bytes | str, query: str = "", **headers):
    headers.setdefault("Content-Type", "text/csv")
    return call(client, "post", f"/api/v2/collect/bulk/people{query}", raw, data=body,
                headers=headers)


def test_real_time_messages_are_written_by_the_realtime_queue(client, token_for, work):
    raw = token_for("operator")
    body = envelope_ok(call(client, "post", "/api/v2/collect/json/clicks?timestamp_field=at",
                            raw, json=[{"email": "a@example.com", "at": "2024-05-01T09:00:00Z"},
                                       {"email": "b@example.com", "at": 1714554000}]), 202)
    assert body["data"]["messages"] == 2 and body["data"]["stream"] == "clicks"
    assert not apischemas.CollectEnvelope().validate(body)
    # A message without the field named is refused whole, saying which message.
    refused = envelope_ok(call(client, "post", "/api/v2/collect/json/clicks?timestamp_field=at",
                               raw, json=[{"at": "2024-05-01T09:00:00Z"}, {"x": 1}]), 400)
    assert "message 2" in refused["error"]["details"]
    envelope_ok(call(client, "post", "/api/v2/collect/json/clicks", raw,
                     json={"email": "c@example.com"}), 202)  # ingest time
    assert stored("clicks") == []  # queued, not yet written
    work()
    messages = stored("clicks")
    assert [m.payload["email"] for m in messages] == ["a@example.com", "b@example.com",
                                                      "c@example.com"]
    assert messages[0].event_time.isoformat() == "2024-05-01T09:00:00+00:00"
    assert messages[1].event_time.isoformat() == "2024-05-01T09:00:00+00:00"
    assert {m.source for m in messages} == {"collect"}


def test_a_gzipped_bulk_csv_is_imported_and_read_back(client, token_for, work):
    raw = token_for("operator")
    body = envelope_ok(bulk(client, raw, gzip.compress(CSV.encode()),
                            "?timestamp_field=signed_up_at", **{"Content-Encoding": "gzip"}), 202)
    import_id = body["data"]["id"]
    assert body["data"]["status"] == "queued" and body["data"]["gzip"] is True
    assert body["data"]["profiles"] == {"status": "none", "messages": 0, "of": 0}
    assert not apischemas.ImportEnvelope().validate(body)
    work()
    answer = envelope_ok(call(client, "get", f"/api/v2/import/{import_id}", raw), 200)
    assert not apischemas.ImportEnvelope().validate(answer)
    status = answer["data"]
    assert status["status"] == "completed", status
    assert status["rows"] == {"read": 30, "written": 30, "duplicates": 0, "rejected": 0}
    assert status["profiles"] == {"status": "built", "messages": 30, "of": 30}
    messages = stored("people")
    assert len(messages) == 30 and messages[0].source == f"import:{import_id}"
    assert messages[0].event_time.isoformat() == "2024-03-01T10:00:00+00:00"
    [listed] = envelope_ok(call(client, "get", "/api/v2/stream", raw), 200)["data"]
    assert listed["name"] == "people" and listed["messages"] == 30
    assert listed["last_message_at"].startswith("2024-03-28T10:00:00")


def test_a_bad_row_rejects_the_upload_unless_droperrors(client, token_for, work):
    raw = token_for("operator")
    bad = CSV + "someone@example.com,not a time,pro\n"
    rejected = envelope_ok(bulk(client, raw, bad, "?timestamp_field=signed_up_at"), 202)
    work()
    status = envelope_ok(call(client, "get", f"/api/v2/import/{rejected['data']['id']}",
                              raw), 200)["data"]
    assert status["status"] == "failed" and stored("people") == []
    assert status["errors"] and status["errors"][0]["line"] == 32  # header + 30 rows + this
    dropped = envelope_ok(bulk(client, raw, bad, "?timestamp_field=signed_up_at"
                               "&droperrors=true"), 202)
    work()
    status = envelope_ok(call(client, "get", f"/api/v2/import/{dropped['data']['id']}",
                              raw), 200)["data"]
    assert status["status"] == "completed" and status["rows"]["rejected"] == 1
    assert status["errors"][0]["line"] == 32 and len(stored("people")) == 30


def test_a_dry_run_writes_nothing(client, token_for, work):
    raw = token_for("operator")
    body = envelope_ok(bulk(client, raw, CSV, "?dryrun=true"), 202)
    work()
    status = envelope_ok(call(client, "get", f"/api/v2/import/{body['data']['id']}", raw),
                         200)["data"]
    assert status["status"] == "completed" and status["dryrun"] is True
    assert stored("people") == []


def test_the_bulk_limit_is_its_own_and_a_body_over_it_is_a_413(app, client, token_for, work):
    from pathlib import Path

    from portal.models.data import BulkImport

    raw = token_for("operator")
    # Over the bulk limit: 413 naming the limit; no import row, no spool file kept.
    app.config["PORTAL_BULK_MAX_MB"] = 1
    big = "email\n" + "someone@example.com\n" * 60_000
    body = envelope_ok(bulk(client, raw, big), 413)
    assert body["error"]["code"] == "too_large" and "1,048,576 bytes" in body["message"]
    assert db.session.scalar(select(func.count()).select_from(BulkImport)) == 0
    assert list(Path(app.instance_path).glob("bulk-spool/*")) == []
    # Over the page upload limit (MAX_CONTENT_LENGTH) but within the bulk limit: taken.
    app.config["MAX_CONTENT_LENGTH"] = 1024
    more = CSV + "".join(f"late{n}@example.com,2024-04-01T10:00:00Z,free\n" for n in range(30))
    assert len(more) > 1024
    envelope_ok(bulk(client, raw, more), 202)
    work()
    assert len(stored("people")) == 60


def test_refusals_are_json_errors(client, token_for):
    raw = token_for("operator")
    assert envelope_ok(bulk(client, raw, CSV, **{"Content-Type": "application/xml"}),
                       415)["error"]["code"] == "unsupported_media_type"
    assert envelope_ok(bulk(client, raw, CSV, "?dryrun=perhaps"), 400)["error"]["details"]
    assert envelope_ok(call(client, "post", "/api/v2/collect/json/clicks", raw, data="{nope",
                            content_type="application/json"), 400)["error"]["code"] == (
        "invalid_json")
    assert envelope_ok(call(client, "post", "/api/v2/collect/json/Bad%20Name", raw,
                            json={"a": 1}), 400)["error"]["details"]
    assert envelope_ok(call(client, "get", "/api/v2/import/99999", raw), 404)
    viewer = token_for("viewer")
    envelope_ok(bulk(client, viewer, CSV), 403)
    envelope_ok(call(client, "post", "/api/v2/collect/json/clicks", viewer, json={"a": 1}), 403)


def test_a_real_time_write_that_fails_is_retried_by_the_dispatcher_pass(
        client, token_for, work, redis_url):
    """Found by scripts/drills.py: a collect write that failed (the database away) was left
    in RQ's failed registry, so messages answered with 202 were never written. It is now
    retried (bulk.COLLECT_RETRY), each retry put back on its queue by the dispatcher's pass
    when due, and it writes its messages once."""
    import time

    from redis import Redis
    from rq import Queue
    from sqlalchemy import text

    from portal.queues import queue_due_retries

    raw = token_for("operator")
    key = envelope_ok(call(client, "post", "/api/v2/collect/json/clicks", raw,
                           json=[{"email": "a@example.com"}, {"email": "b@example.com"}]),
                      202)["data"]["id"]
    queue = Queue("realtime", connection=Redis.from_url(redis_url))
    db.session.execute(text("ALTER TABLE messages RENAME TO messages_away"))
    db.session.commit()
    try:
        work()  # the write fails: no table to write to
    finally:
        db.session.execute(text("ALTER TABLE messages_away RENAME TO messages"))
        db.session.commit()
    assert key in queue.scheduled_job_registry.get_job_ids(), "its retry is scheduled"
    assert key not in queue.failed_job_registry.get_job_ids()
    # Due after its first wait (1 s; RQ keeps the time to the second).
    waited = time.monotonic()
    while not (moved := queue_due_retries()):
        assert time.monotonic() - waited < 3, "the retry never came due"
        time.sleep(0.1)
    assert moved == 1
    assert queue.get_job_ids() == [key]
    work()
    assert [m.payload["email"] for m in stored("clicks")] == ["a@example.com", "b@example.com"]
    assert queue_due_retries() == 0 and not queue.scheduled_job_registry.get_job_ids()
