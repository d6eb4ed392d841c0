"""The whole job path with real parts: wizard POST -> committed row -> RQ on a real Redis
-> a real RQ worker -> runner -> lifecycle -> events and messages in the database."""

from __future__ import annotations

import hashlib
import io
from datetime import UTC, datetime, timedelta

import pytest
from redis import Redis
from sqlalchemy import func, inspect, select

from portal import lifecycle
from portal.extensions import db
from portal.models import Job, JobEvent, Message, Stream, Upload
from portal.models.types import utcnow
from portal.queues import pending_ids
from workers.dispatcher import dispatch_once
from workers.runner import Runner

CSV = (
    b"email,ts,plan\n"
    b"a@x.io,2024-01-01T00:00:00Z,pro\n"
    b"b@x.io,2024-01-02T00:00:00Z,free\n"
    b"c@x.io,1704240000,pro\n"
    b"d@x.io,2024-01-04T00:00:00+00:00,free\n"
    b"e@x.io,2024-01-05,pro\n"
)
CONFIGURE = "/jobs/new/files/import_file/configure?authorization=none"


PLAN_FIELDS = ("name", "description", "create_paused")


def create_import(client, auth, data: bytes = CSV, filename: str = "people.csv",
                  **fields) -> Job:
    """Through the wizard's steps: configure (with the upload), schedule, review, create.
    Fields named like the schedule step's (name, description, schedule-*, retry-*) go
    there, the rest to the configure step."""
    plan = {key: value for key, value in fields.items()
            if key in PLAN_FIELDS or key.startswith(("schedule-", "retry-"))}
    config = {"timestamp_field": "ts", "stream": "people", "delimiter": ",",
              **{key: value for key, value in fields.items() if key not in plan}}
    response = client.post(CONFIGURE, data={
        **config, "action": "next", "csrf_token": auth.csrf(),
        "file": (io.BytesIO(data), filename)}, content_type="multipart/form-data")
    assert response.status_code == 303, response.get_data(as_text=True)
    response = client.post(response.headers["Location"], data={
        "name": "People", "csrf_token": auth.csrf(), **plan})
    assert response.status_code == 303, response.get_data(as_text=True)
    review = response.headers["Location"]
    assert client.get(review).status_code == 200
    response = client.post(review.replace("/review", "/create"),
                           data={"csrf_token": auth.csrf()})
    assert response.status_code == 303, response.get_data(as_text=True)
    job_id = int(response.headers["Location"].rsplit("/", 1)[1])
    return db.session.get(Job, job_id)


def refused_by_the_wizard(client, auth, data: bytes, filename: str = "people.csv") -> str:
    """The message on the file field when Next is pressed with this file (the wizard reads
    the whole file as the import does, so a file the import would refuse stops there)."""
    response = client.post(CONFIGURE, data={
        "timestamp_field": "ts", "stream": "people", "delimiter": ",", "action": "next",
        "csrf_token": auth.csrf(), "file": (io.BytesIO(data), filename)},
        content_type="multipart/form-data")
    assert response.status_code == 422, response.get_data(as_text=True)
    page = response.get_data(as_text=True)
    return page.split('id="field-upload_id-error">', 1)[1].split("</div>", 1)[0]


def import_stored_otherwise(client, auth, data: bytes, filename: str = "people.csv") -> Job:
    """An import job of a file that reached the database without the wizard's check."""
    job = create_import(client, auth, CSV if filename.endswith(".csv") else
                        b'{"email": "a@x.io", "ts": "2024-01-01T00:00:00Z"}\n', filename)
    upload = Upload(filename=filename, format="ndjson" if filename.endswith(".ndjson") else
                    "csv", size=len(data), fields=["email", "ts"],
                    sha256=hashlib.sha256(data).hexdigest(), content=data)
    db.session.add(upload)
    db.session.flush()
    job.config = {**job.config, "upload_id": upload.id}
    db.session.commit()
    return job


def fresh(job: Job) -> Job:
    """The job as the database has it now (the worker ends the session it used)."""
    db.session.expire_all()
    return db.session.get(Job, inspect(job).identity[0])


def kinds(job: Job) -> list[str]:
    job = fresh(job)
    return list(db.session.scalars(
        select(JobEvent.kind).where(JobEvent.job_id == job.id).order_by(JobEvent.id)))


def events(job: Job) -> list[JobEvent]:
    job = fresh(job)
    return list(db.session.scalars(
        select(JobEvent).where(JobEvent.job_id == job.id).order_by(JobEvent.id)))


def message_count() -> int:
    return db.session.scalar(select(func.count()).select_from(Message))


def test_created_job_is_committed_then_queued(client, auth, app):
    auth.login()
    job = create_import(client, auth)
    assert job.status == "running" and job.dispatch_count == 1
    assert pending_ids([job]) == {job.id}, "the create view put the job on the backfill queue"
    assert kinds(job) == ["created"]


def test_csv_import_runs_to_completed_with_events_and_messages(client, auth, work):
    user = auth.login()
    job = create_import(client, auth)
    assert work()
    job = fresh(job)
    assert job.status == "completed" and job.terminal_at is not None
    # batch size 2: rows 1-2, rows 3-4, then row 5 completes the job
    assert kinds(job) == ["created", "started", "synced", "synced", "completed"]
    log = events(job)
    assert log[0].context["user_email"] == user.email
    assert [e.context["added"] for e in log[2:]] == [2, 2, 1]
    assert "Imported 5 rows of people.csv into stream 'people'" in log[-1].message
    stream = db.session.scalar(select(Stream).where(Stream.name == "people"))
    messages = db.session.scalars(select(Message).order_by(Message.event_time)).all()
    assert [m.payload["email"] for m in messages] == [f"{c}@x.io" for c in "abcde"]
    assert [m.event_time.day for m in messages] == [1, 2, 3, 4, 5]
    assert all(m.stream_id == stream.id and m.source == f"job:{job.id}" for m in messages)
    assert job.lease_owner is None and job.cursor["done_rows"] == 5


def test_importing_the_same_file_again_duplicates_nothing(client, auth, work):
    auth.login()
    first = create_import(client, auth)
    work()
    second = create_import(client, auth)
    work()
    second = fresh(second)
    assert second.status == "completed"
    assert message_count() == 5
    assert sum(e.context["omitted"] for e in events(second)) == 5
    assert sum(e.context["added"] for e in events(second)) == 0
    assert first.id != second.id


def test_ndjson_without_timestamp_uses_import_time(client, auth, work):
    auth.login()
    data = b'{"email": "a@x.io", "n": 1}\n{"email": "b@x.io", "n": 2}\n'
    before = utcnow()
    job = create_import(client, auth, data, "events.ndjson", timestamp_field="", stream="ev")
    work()
    job = fresh(job)
    assert job.status == "completed"
    times = db.session.scalars(select(Message.event_time)).all()
    assert len(times) == 2 and all(t >= before - timedelta(seconds=1) for t in times)


def failed_with(job: Job) -> str:
    job = fresh(job)
    assert job.status == "failed"
    assert kinds(job) == ["created", "started", "error", "failed"]
    error = events(job)[2]
    assert error.level == "error" and error.code == "bad_input"
    assert message_count() == 0, "nothing of a bad file is written"
    return error.message


def test_ragged_row_fails_naming_the_line_and_writes_nothing(client, auth, work):
    auth.login()
    bad = CSV + b"f@x.io,2024-01-06\n"
    assert "people.csv cannot be imported, line 7: has 2 fields but the header has 3" in \
        refused_by_the_wizard(client, auth, bad)
    job = import_stored_otherwise(client, auth, bad)
    work()
    assert failed_with(job) == "people.csv, line 7: has 2 fields but the header has 3"


def test_bad_timestamp_fails_naming_line_and_field(client, auth, work):
    auth.login()
    bad = CSV.replace(b"1704240000", b"next tuesday")
    assert "people.csv cannot be imported, line 4: field &#39;ts&#39; has &#39;next " \
        "tuesday&#39;" in refused_by_the_wizard(client, auth, bad)
    job = import_stored_otherwise(client, auth, bad)
    work()
    message = failed_with(job)
    assert message.startswith("people.csv, line 4: field 'ts' has 'next tuesday'")


@pytest.mark.parametrize("bad,words", [
    (b"email,ts\n" + "caf\xe9@x.io,2024-01-01\n".encode("latin-1"),
     "bad.csv, line 2: is not valid UTF-8"),
    (b"", "bad.csv, line 1: the file is empty"),
    (b"email,ts\n", "bad.csv, line 1: the file has no rows to import"),
])
def test_files_the_wizard_refuses_still_fail_cleanly_in_the_worker(client, auth, work, bad,
                                                                   words):
    # The wizard refuses such files; one stored some other way must fail the same clean way.
    auth.login()
    job = create_import(client, auth)
    upload = Upload(filename="bad.csv", format="csv", size=len(bad), fields=["email", "ts"],
                    sha256=hashlib.sha256(bad).hexdigest(), content=bad)
    db.session.add(upload)
    db.session.flush()
    job.config = {**job.config, "upload_id": upload.id}
    db.session.commit()
    work()
    assert failed_with(job).startswith(words)


def test_pausing_between_units_stops_the_run_and_keeps_its_progress(client, auth, app):
    user = auth.login()
    job = create_import(client, auth)
    runner = Runner(job.id)
    claimed, outcome = runner.claim()
    assert outcome == "claimed"
    assert runner.unit(claimed) == "more"
    with app.app_context():  # a person pauses it from the web meanwhile
        lifecycle.pause(db.session.get(Job, job.id), by=db.session.get(type(user), user.id),
                        now=utcnow())
        db.session.commit()
    assert runner.renew(claimed) is False, "the next unit does not start"
    job = fresh(job)
    assert job.status == "paused" and job.lease_owner is None
    assert job.cursor["done_rows"] == 2 and message_count() == 2
    assert kinds(job) == ["created", "started", "synced", "paused"]
    assert Runner(job.id).run() == "skipped", "a paused job is not run"


def test_a_second_run_of_a_held_job_is_skipped(client, auth, app):
    auth.login()
    job = create_import(client, auth)
    job.lease_owner, job.lease_until = "someone-else", utcnow() + timedelta(minutes=1)
    db.session.commit()
    assert Runner(job.id).run() == "skipped"
    assert kinds(job) == ["created"]


def test_dispatcher_requeues_a_job_whose_queue_entry_was_lost(client, auth, work, redis_url):
    auth.login()
    job = create_import(client, auth)
    assert dispatch_once() == 0, "a queued job is not queued twice"
    Redis.from_url(redis_url).flushdb()  # Redis loses everything
    later = utcnow() + timedelta(minutes=5)  # past the enqueue grace period
    assert dispatch_once(later) == 1
    assert dispatch_once(later) == 0
    work()
    job = fresh(job)
    assert job.status == "completed" and job.dispatch_count == 2
    assert message_count() == 5


def test_dispatcher_wakes_sleeping_jobs_when_due(client, auth, work):
    auth.login()
    job = create_import(client, auth)
    job.status, job.next_run_at = "sleeping", datetime(2030, 1, 1, tzinfo=UTC)
    db.session.commit()
    Redis.from_url(client.application.config["REDIS_URL"]).flushdb()
    assert dispatch_once(datetime(2029, 12, 31, tzinfo=UTC)) == 0
    job = fresh(job)
    assert job.status == "sleeping"
    assert dispatch_once(datetime(2030, 1, 1, 0, 5, tzinfo=UTC)) == 1
    job = fresh(job)
    assert job.status == "running" and job.next_run_at is None
    work()
    job = fresh(job)
    assert job.status == "completed"
