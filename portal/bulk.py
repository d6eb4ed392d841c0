"""Bulk imports and real-time collect: the domain side of `POST /api/v2/collect/bulk/<stream>`,
`POST /api/v2/collect/json/<stream>` and `GET /api/v2/import/<id>`. Free of Flask's request:
a route hands over the body as a binary file and the query parameters as text.

A bulk upload is spooled to a file under the instance folder (counting bytes, so an upload
over the limit is refused while it arrives and nothing of it is kept), recorded as a
BulkImport row and processed on the `backfill` queue in two streaming passes over the file:

1. check every row (nothing is written), keeping the first problems and counting all;
2. unless the check rejects the upload (a bad row without `droperrors`, or a damaged file)
   or it is a dry run, read the file again and write the good rows in batches, one
   transaction per batch.

Two passes rather than one transaction: memory stays flat either way, but a single
transaction over a million rows would hold SQLite's write lock for the whole load (every
real-time write would wait behind it) and keep a long transaction open on PostgreSQL. The
check pass makes "a bad row writes nothing" hold before the first write; every message's
dedupe key is the decoded body's hash and its row number ("bulk:<sha256[:40]>:<row>"), so
if a worker dies during the second pass the import can be run again and writes only what
is missing (the rows already there count as duplicates then).

Real-time messages are checked at once and written by a task on the `realtime` queue, which
workers serve before the others.
"""

from __future__ import annotations

import errno
import logging
import os
import re
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any

from flask import current_app
from redis.exceptions import RedisError
from rq import Queue, Retry, Worker
from rq.job import Job
from sqlalchemy import select, text, update

from portal import background, profiles
from portal.bulk_formats import (
    GZIP_MAGIC,
    Body,
    Damaged,
    Row,
    event_time,
    json_kind,
    read_rows,
    value_problem,
)
from portal.datastore import store_messages, with_quick_lock, write_messages
from portal.extensions import db
from portal.models import BulkImport, Message
from portal.models.types import utcnow
from portal.queues import redis_connection
from providers.base import OutMessage
from providers.files import DELIMITERS, STREAM_PATTERN

log = logging.getLogger(__name__)

CHUNK = 64 * 1024  # bytes read from the request body at a time
KEPT_ERRORS = 100  # problems kept per import; all are counted
COLLECT_MAX_MESSAGES = 1000  # messages in one real-time call
# Real-time writes queued or running (a Redis counter), and how long a bulk batch waits
# for them to finish before it writes anyway.
REALTIME_PENDING = "portal:realtime:pending"
REALTIME_YIELD_SECONDS = 0.2
# A collect write that fails (the database away, its worker killed) runs again, after these
# waits in seconds (the last repeats): about half an hour in all before it stays in RQ's
# failed registry. Its messages keep their dedupe keys, so a retry writes nothing twice;
# the dispatcher puts each retry on its queue when it is due (queues.queue_due_retries).
COLLECT_RETRY = Retry(max=12, interval=[1, 2, 5, 10, 30, 60, 120, 300])

# Content types a body may have, and the format each reads as. JSON bodies are a JSON array
# when they start with "[" and NDJSON (one object per line) otherwise.
CONTENT_TYPES = {
    "text/csv": "csv",
    "application/csv": "csv",
    "text/plain": "csv",
    "application/json": "json",
    "application/x-ndjson": "json",
    "application/ndjson": "json",
    "application/jsonl": "json",
    "application/x-jsonlines": "json",
}
ENCODINGS = {"": False, "identity": False, "gzip": True, "x-gzip": True}
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"", "0", "false", "no", "off"}


# --- Errors a route turns into answers ----------------------------------------------------

class BulkError(ValueError):
    """A bad parameter or body: HTTP 400, with the field it is about."""

    status = 400
    code = "invalid_parameter"

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message

    @property
    def details(self) -> dict[str, str]:
        return {self.field: self.message}


class UnsupportedMedia(BulkError):
    """A content type or encoding the import cannot read: HTTP 415."""

    status = 415
    code = "unsupported_media_type"


class TooLarge(BulkError):
    """The body is over the limit: HTTP 413. Nothing of it was kept."""

    status = 413
    code = "too_large"

    def __init__(self, limit: int):
        super().__init__("body", f"is larger than the {limit:,} bytes an upload may have; "
                                 "split it, or gzip it")
        self.limit = limit


class QueueUnavailable(BulkError):
    """Redis did not take the work: HTTP 503. Nothing was kept."""

    status = 503
    code = "unavailable"

    def __init__(self):
        super().__init__("queue", "the work queue (Redis) does not answer; send the same "
                                  "body again in a moment")


class InsufficientStorage(BulkError):
    """The spool folder's disk is full: HTTP 507. Nothing of the body was kept."""

    status = 507
    code = "insufficient_storage"

    def __init__(self):
        super().__init__("body", "the server has no room left to keep this upload (its disk "
                                 "is full); nothing of it was kept. Send it again later, or "
                                 "in smaller parts")


# A full disk (or quota): the body cannot be kept, which is not the sender's fault.
DISK_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


class UnknownImport(LookupError):
    """No import has this id: HTTP 404."""

    status = 404
    code = "not_found"


# --- Parameters ---------------------------------------------------------------------------

def check_stream(stream: str) -> str:
    if not isinstance(stream, str) or not re.fullmatch(STREAM_PATTERN, stream):
        raise BulkError("stream", "must be 1 to 64 lower-case letters, digits, - or _, "
                                  "starting with a letter or digit")
    return stream


def parse_flag(field: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    word = str(value if value is not None else "").strip().lower()
    if word in _TRUE:
        return True
    if word in _FALSE:
        return False
    raise BulkError(field, f"must be true or false, not {str(value)[:20]!r}")


def _check_timestamp_field(value: str | None) -> str:
    value = (value or "").strip()
    if len(value) > 255 or any(ord(char) < 32 or ord(char) == 127 for char in value):
        raise BulkError("timestamp_field", "must be a field name of at most 255 characters, "
                                           "without control characters")
    return value


def _check_delimiter(value: str | None) -> str:
    value = value if value not in (None, "") else ","
    if value.lower() in ("tab", "\\t"):
        value = "\t"
    if value not in DELIMITERS:
        names = ", ".join(f"{name.lower()} ({char!r})" for char, name in DELIMITERS.items())
        raise BulkError("delimiter", f"must be one of {names}, not {value[:10]!r}")
    return value


def _check_content_type(value: str | None) -> str:
    kind, _, params = (value or "").partition(";")
    kind = kind.strip().lower()
    if kind not in CONTENT_TYPES:
        raise UnsupportedMedia(
            "content_type", f"{kind or 'no content type'!r} is not one the import reads; send "
            "text/csv, application/json (a JSON array or NDJSON) or application/x-ndjson")
    for param in params.split(";"):
        name, _, charset = param.partition("=")
        if name.strip().lower() == "charset" and charset.strip().strip('"').lower() not in (
                "utf-8", "utf8", "us-ascii"):
            raise UnsupportedMedia("content_type", f"the charset {charset.strip()[:20]!r} is "
                                   "not supported; send UTF-8")
    return CONTENT_TYPES[kind]


def _check_encoding(value: str | None) -> bool:
    encoding = (value or "").strip().lower()
    if encoding not in ENCODINGS:
        raise UnsupportedMedia("content_encoding", f"{encoding[:20]!r} is not supported; "
                                                   "send gzip or no encoding")
    return ENCODINGS[encoding]


def body_limit() -> int:
    """The largest body a bulk import takes (PORTAL_BULK_MAX_MB), in bytes."""
    return current_app.config["PORTAL_BULK_MAX_MB"] * 1024 * 1024


def spool_folder() -> Path:
    folder = Path(current_app.instance_path) / "bulk-spool"
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    return folder


# --- Receiving ----------------------------------------------------------------------------

def receive(stream: str, body: IO[bytes], *, content_type: str | None,
            content_encoding: str | None = None, timestamp_field: str | None = "",
            delimiter: str | None = ",", dryrun: Any = False, droperrors: Any = False,
            source: str = "api", max_bytes: int | None = None) -> BulkImport:
    """Check the parameters, spool the body (read in chunks) and queue its processing on
    the `backfill` queue. Raises BulkError (400), UnsupportedMedia (415) or TooLarge (413)
    naming the field; nothing is kept then. The row returned is committed."""
    check_stream(stream)
    fmt = _check_content_type(content_type)
    compressed = _check_encoding(content_encoding)
    timestamp_field = _check_timestamp_field(timestamp_field)
    delimiter = _check_delimiter(delimiter)
    dryrun = parse_flag("dryrun", dryrun)
    droperrors = parse_flag("droperrors", droperrors)
    if max_bytes is None:
        max_bytes = body_limit()

    path = spool_folder() / f"{uuid.uuid4().hex}.body"
    size = 0
    try:
        try:
            with open(path, "xb") as spool:
                while chunk := body.read(CHUNK):
                    size += len(chunk)
                    if size > max_bytes:
                        raise TooLarge(max_bytes)
                    spool.write(chunk)
        except OSError as exc:
            if exc.errno not in DISK_FULL:
                raise
            log.warning("bulk upload into %s refused: no room left in %s (%s)", stream,
                        path.parent, exc.strerror)
            raise InsufficientStorage() from None
        if size == 0:
            raise BulkError("body", "is empty: send at least one row")
        with open(path, "rb") as spool:
            magic = spool.read(2)
        if compressed and magic != GZIP_MAGIC:
            raise BulkError("body", "Content-Encoding says gzip, but the body is not gzip data")
        upload = BulkImport(
            stream=stream, status="queued", format=fmt, compressed=magic == GZIP_MAGIC,
            timestamp_field=timestamp_field, delimiter=delimiter, dryrun=dryrun,
            droperrors=droperrors, source=source[:64], size=size, spool_path=str(path),
            errors=[], message="Waiting for a worker on the backfill queue.",
        )
        db.session.add(upload)
        db.session.commit()
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    try:
        _queue_import(upload)
    except RedisError as exc:
        log.warning("bulk import %s could not be queued: %s", upload.id, exc)
        path.unlink(missing_ok=True)
        upload.spool_path = None
        _finish(upload, "failed", "Not queued: the work queue (Redis) did not answer; "
                                  "nothing was kept.")
        raise QueueUnavailable() from None
    return upload


def import_status(import_id: Any) -> dict[str, Any]:
    """What an import is doing or did, as the API shows it. UnknownImport if none."""
    try:
        number = int(import_id)
    except (TypeError, ValueError, OverflowError):
        number = 0
    found = db.session.get(BulkImport, number) if 0 < number < 2**31 else None
    if found is None:
        raise UnknownImport(f"there is no import {str(import_id)[:20]!r}")

    def when(moment: datetime | None) -> str | None:
        return moment.isoformat().replace("+00:00", "Z") if moment else None

    return {
        "id": found.id, "stream": found.stream, "status": found.status,
        "format": found.format, "gzip": found.compressed, "dryrun": found.dryrun,
        "droperrors": found.droperrors, "timestamp_field": found.timestamp_field,
        "delimiter": found.delimiter, "size": found.size,
        "rows": {"read": found.rows_read, "written": found.rows_written,
                 "duplicates": found.duplicates, "rejected": found.rejected},
        "profiles": _profiles_status(found),
        "errors": list(found.errors or []), "message": found.message,
        "created_at": when(found.created_at), "started_at": when(found.started_at),
        "finished_at": when(found.finished_at),
    }


def _profiles_status(found: BulkImport) -> dict[str, Any]:
    """How far building profiles from the import's rows has come: "none" (it wrote
    nothing), "waiting" (rows still being written), "building" or "built"."""
    if found.last_message_id is None:
        state = "none"
    elif found.profiles_finished_at is not None:
        state = "built"
    elif found.status in ("queued", "running"):
        state = "waiting"
    else:
        state = "building"
    return {"status": state, "messages": found.profiled, "of": found.rows_written}


# --- Processing (on the backfill queue) ---------------------------------------------------

def _error(row: Row) -> dict[str, Any]:
    return {"row": row.row, "line": row.line, "message": row.problem}


def _finish(upload: BulkImport, status: str, message: str) -> None:
    upload.status = status
    upload.message = message[:1000]
    upload.finished_at = utcnow()
    db.session.commit()


@background.task
def process_import(import_id: int) -> str:
    """The RQ task: check the spooled body, then write it (unless rejected or a dry run),
    and delete the spool file. Returns the final status."""
    upload = db.session.get(BulkImport, import_id)
    if upload is None or upload.status in ("completed", "failed"):
        return upload.status if upload else "missing"
    path = upload.spool_path
    if not path or not os.path.exists(path):
        _finish(upload, "failed", "The uploaded body is gone (its spool file was removed "
                                  "before a worker read it); send it again.")
        return "failed"
    upload.status, upload.started_at = "running", utcnow()
    upload.rows_read = upload.rows_written = upload.duplicates = upload.rejected = 0
    upload.errors = []
    upload.message = "Checking every row."
    db.session.commit()
    # Only an import that ended (completed, rejected or failed) lets go of its body. One
    # cut short by the database going away, or by its worker stopping, keeps it and stays
    # running: the dispatcher runs it again (queue_lost_imports), and the rows it wrote
    # already count as duplicates then.
    try:
        _process(upload)
    except Exception as exc:
        if background.database_down(exc):
            log.warning("bulk import %s: database unavailable (%s); nothing of the batch under "
                        "way landed, and the import runs again once the database answers",
                        import_id, getattr(exc, "orig", exc))
            db.session.rollback()
            return "database unavailable"
        log.exception("bulk import %s stopped", import_id)
        db.session.rollback()
        upload = db.session.get(BulkImport, import_id)
        _finish(upload, "failed", "The import stopped on an unexpected error (the worker's "
                                  "log has it); what it wrote is kept, and sending the same "
                                  "body again writes only the rest.")
    Path(path).unlink(missing_ok=True)
    upload.spool_path = None
    status = upload.status
    pending = profiles_pending(upload)
    db.session.commit()
    if pending:  # what it wrote goes into the profiles, whether it completed or not
        queue_profiles(import_id)
    return status


# --- Profiles from what an import wrote (on the backfill queue) ----------------------------

def profiles_pending(upload: BulkImport) -> bool:
    return upload.last_message_id is not None and upload.profiles_finished_at is None


def queue_profiles(import_id: int) -> bool:
    """Put build_profiles for this import on the backfill queue (one task per import: the
    id is fixed). False when Redis did not answer: the dispatcher tries again later."""
    try:
        Queue("backfill", connection=redis_connection()).enqueue(
            "portal.bulk.build_profiles", import_id, job_id=f"bulk-profiles-{import_id}",
            result_ttl=3600, failure_ttl=24 * 3600, job_timeout=-1,
            description=f"build profiles from bulk import {import_id}")
    except RedisError as exc:
        log.warning("profiles of bulk import %s not queued: %s", import_id, exc)
        return False
    return True


def profile_batch_size() -> int:
    """Messages folded into the profiles per transaction: PORTAL_BULK_PROFILE_BATCH_SIZE,
    else 2,000 on PostgreSQL and 100 on SQLite (where a real-time write waits for it)."""
    if size := current_app.config.get("PORTAL_BULK_PROFILE_BATCH_SIZE"):
        return max(1, int(size))
    return 100 if db.session.get_bind().dialect.name == "sqlite" else 2000


@background.task
def build_profiles(import_id: int) -> int:
    """The RQ task after an import has written its rows: fold them into the profiles in
    id order, one transaction per batch, keeping how far it got, so a worker that dies
    leaves the rest to the next run (folding a message twice changes nothing). Returns how
    many messages it folded."""
    upload = db.session.get(BulkImport, import_id)
    folded = 0
    if upload is None or not profiles_pending(upload):
        return 0
    size, source = profile_batch_size(), f"import:{upload.id}"
    while True:
        yield_to_realtime()
        without_waiting_for_disk()
        after = max(upload.profiled_through, upload.first_message_id - 1)
        rows = db.session.execute(
            select(Message.id, Message.stream_id, Message.event_time, Message.payload)
            .where(Message.id > after, Message.id <= upload.last_message_id,
                   Message.source == source)
            .order_by(Message.id).limit(size)).all()
        if not rows:
            break
        profiles.apply([profiles.Fact(row.id, row.stream_id, row.event_time, row.payload)
                        for row in rows])
        upload.profiled_through = rows[-1].id
        upload.profiled += len(rows)
        folded += len(rows)
        db.session.commit()
    upload.profiles_finished_at = utcnow()
    db.session.commit()
    return folded


def queue_pending_profiles() -> int:
    """For the dispatcher: queue build_profiles again for every finished import whose
    profiles are not built and whose task is neither queued nor running (Redis lost it, or
    it could not be queued). Returns how many it queued."""
    waiting = db.session.scalars(select(BulkImport.id).where(
        BulkImport.status.in_(("completed", "failed")),
        BulkImport.last_message_id.is_not(None),
        BulkImport.profiles_finished_at.is_(None))).all()
    if not waiting:
        return 0
    connection = redis_connection()
    queued = 0
    for import_id in waiting:
        if not task_pending(connection, f"bulk-profiles-{import_id}"):
            queued += queue_profiles(import_id)
    return queued


def task_pending(connection, task_id: str) -> bool:
    """Whether the RQ task `task_id` waits in a queue, or runs on a worker that is alive
    (its heartbeat is recent: portal.operations.is_alive). A task whose worker died (killed,
    out of memory) stays "started" in RQ until RQ's own cleanup, minutes later: it counts
    as lost here."""
    from portal.operations import HEARTBEAT_FIELD, is_alive

    task = Job.fetch_many([task_id], connection=connection)[0]
    if task is None:
        return False
    status = task.get_status(refresh=False)
    if status in ("queued", "deferred", "scheduled"):
        return True
    if status != "started":
        return False
    if not task.worker_name:
        return True  # being handed to a worker right now
    worker = Worker.find_by_key(Worker.redis_worker_namespace_prefix + task.worker_name,
                                connection=connection)
    if worker is None:
        return False
    beat = connection.hget(worker.key, HEARTBEAT_FIELD)
    return is_alive(worker.last_heartbeat, int(beat) if beat else 420, datetime.now(UTC))


LOST_IMPORT_GRACE = timedelta(seconds=60)


def queue_lost_imports(now: datetime) -> int:
    """For the dispatcher: queue process_import again for every import still queued or
    running (received over a minute ago) whose task neither waits in a queue nor runs on a
    living worker: Redis lost it (FLUSHALL, a restart without persistence) or its worker
    died. The import runs again over its spooled body; rows it wrote already are
    duplicates by their dedupe keys, so nothing is written twice. Returns how many it
    queued."""
    lost = db.session.scalars(select(BulkImport).where(
        BulkImport.status.in_(("queued", "running")), BulkImport.spool_path.is_not(None),
        BulkImport.created_at < now - LOST_IMPORT_GRACE)).all()
    if not lost:
        return 0
    connection = redis_connection()
    queued = 0
    for upload in lost:
        if task_pending(connection, f"bulk-import-{upload.id}"):
            continue
        log.warning("bulk import %s (%s) lost its task; queued again", upload.id,
                    upload.status)
        _queue_import(upload)
        queued += 1
    return queued


def _queue_import(upload: BulkImport) -> None:
    Queue("backfill", connection=redis_connection()).enqueue(
        "portal.bulk.process_import", upload.id, job_id=f"bulk-import-{upload.id}",
        job_timeout=6 * 3600, result_ttl=600, failure_ttl=24 * 3600,
        description=f"bulk import {upload.id} into {upload.stream}",
    )


def _process(upload: BulkImport) -> None:
    # Pass 1: check.
    read = rejected = 0
    errors: list[dict[str, Any]] = []
    body = Body(upload.spool_path, upload.compressed)
    try:
        for row in read_rows(body, upload.format, delimiter=upload.delimiter,
                             timestamp_field=upload.timestamp_field):
            read += 1
            if row.problem:
                rejected += 1
                if len(errors) < KEPT_ERRORS:
                    errors.append(_error(row))
        digest = body.hash.hexdigest()
    except Damaged as exc:
        upload.rows_read, upload.rejected = read, rejected
        upload.errors = [*errors[:KEPT_ERRORS - 1],
                         {"row": None, "line": exc.line, "message": exc.message}]
        where = f"line {exc.line}: " if exc.line else ""
        _finish(upload, "failed", f"Rejected, nothing written: {where}{exc.message}.")
        return
    finally:
        body.close()
    upload.rows_read, upload.rejected, upload.errors, upload.sha256 = (
        read, rejected, errors, digest)
    if rejected and not upload.droperrors:
        first = errors[0]
        where = f"line {first['line']}" if first["line"] else f"element {first['row']:,}"
        _finish(upload, "failed", f"Rejected, nothing written: {rejected:,} of {read:,} rows "
                f"are bad (the first, {where}: {first['message']}). Fix them, or send the "
                "body with droperrors=true to skip bad rows.")
        return
    good = read - rejected
    if upload.dryrun:
        _finish(upload, "completed", f"Dry run: {good:,} rows would be written"
                + (f", {rejected:,} bad rows skipped" if rejected else "") + "; nothing written.")
        return
    if good == 0:
        _finish(upload, "failed", f"Nothing written: all {read:,} rows are bad.")
        return
    upload.message = f"Writing {good:,} rows."
    db.session.commit()

    # Pass 2: write, one transaction per batch.
    size = batch_size()
    now = utcnow()
    source = f"import:{upload.id}"
    prefix = f"bulk:{digest[:40]}"  # never a key the file import gives (hash:line)
    written = duplicates = 0
    batch: list[OutMessage] = []

    def flush() -> None:
        nonlocal written, duplicates
        yield_to_realtime()
        without_waiting_for_disk()
        stored = store_messages(upload.stream, batch, source=source)
        written += len(stored.facts)
        duplicates += stored.omitted
        values: dict[str, Any] = {"rows_written": written, "duplicates": duplicates}
        if ids := stored.ids:  # the range build_profiles reads back
            values["first_message_id"] = min(ids + ([upload.first_message_id]
                                                    if upload.first_message_id else []))
            values["last_message_id"] = max(ids + ([upload.last_message_id]
                                                   if upload.last_message_id else []))
            upload.first_message_id = values["first_message_id"]
            upload.last_message_id = values["last_message_id"]
        db.session.execute(update(BulkImport).where(BulkImport.id == upload.id).values(
            **values).execution_options(synchronize_session=False))
        db.session.commit()
        batch.clear()

    body = Body(upload.spool_path, upload.compressed)
    try:
        for row in read_rows(body, upload.format, delimiter=upload.delimiter,
                             timestamp_field=upload.timestamp_field):
            if row.problem:
                continue
            batch.append(OutMessage(f"{prefix}:{row.row}", row.event_time or now, row.data))
            if len(batch) >= size:
                flush()
        if batch:
            flush()
    finally:
        body.close()
    db.session.refresh(upload)
    message = f"Wrote {written:,} rows to stream '{upload.stream}'"
    if duplicates:
        message += f"; {duplicates:,} were there already"
    if rejected:
        message += f"; {rejected:,} bad rows skipped"
    _finish(upload, "completed", message + ".")


# --- Real-time collect --------------------------------------------------------------------

def collect(stream: str, payload: Any, *, source: str = "collect",
            timestamp_field: str | None = "") -> dict[str, Any]:
    """Check real-time messages (an object or a list of objects) and queue their write on
    the `realtime` queue. BulkError naming the message and problem when one is bad; nothing
    is queued then. Returns {"id", "stream", "messages"}."""
    check_stream(stream)
    field = _check_timestamp_field(timestamp_field)
    messages = [payload] if isinstance(payload, dict) else payload
    if not isinstance(messages, list):
        raise BulkError("body", f"must be a JSON object or an array of objects, not a JSON "
                                f"{json_kind(payload)}")
    if not messages:
        raise BulkError("body", "holds no message")
    if len(messages) > COLLECT_MAX_MESSAGES:
        raise BulkError("body", f"holds {len(messages):,} messages; send at most "
                                f"{COLLECT_MAX_MESSAGES:,} per call, or use the bulk import")
    received = utcnow()
    times = []
    for position, message in enumerate(messages):
        where = f"message {position + 1}" if len(messages) > 1 else "body"
        if not isinstance(message, dict):
            raise BulkError(where, f"is a JSON {json_kind(message)}, not an object")
        if problem := value_problem(message):
            raise BulkError(where, problem)
        moment, problem = event_time(message, field)
        if problem:
            raise BulkError(where, problem)
        times.append(moment or received)
    key = f"collect-{uuid.uuid4().hex}"
    connection = redis_connection()
    try:
        with connection.pipeline() as pipe:
            pipe.incr(REALTIME_PENDING).expire(REALTIME_PENDING, 60)
            pipe.execute()
        Queue("realtime", connection=connection).enqueue(
            "portal.bulk.write_collected", stream, messages, times, source[:64], key,
            job_id=key, result_ttl=60, failure_ttl=24 * 3600, retry=COLLECT_RETRY,
            description=f"collect {len(messages)} message(s) into {stream}",
        )
    except RedisError as exc:
        log.warning("collect into %s could not be queued: %s", stream, exc)
        raise QueueUnavailable() from None
    return {"id": key, "stream": stream, "messages": len(messages)}


@background.task
def write_collected(stream: str, messages: list[dict[str, Any]], times: list[datetime],
                    source: str, key: str) -> int:
    """The realtime task: write what collect() checked; a retry writes nothing twice."""
    def write() -> int:
        added, _omitted = write_messages(stream, [
            OutMessage(f"{key}:{position}", moment.astimezone(UTC), message)
            for position, (message, moment) in enumerate(zip(messages, times, strict=True))
        ], source=source)
        db.session.commit()
        return added

    try:
        added = with_quick_lock(write)
    finally:
        try:
            connection = redis_connection()
            if connection.decr(REALTIME_PENDING) < 0:  # the count had expired meanwhile
                connection.set(REALTIME_PENDING, 0, ex=60)
        except RedisError as exc:
            log.warning("could not count down real-time writes: %s", exc)
    return added


def batch_size() -> int:
    """Rows per bulk transaction: PORTAL_BULK_BATCH_SIZE, else 5,000 on PostgreSQL and 500
    on SQLite, where a transaction holds the only write lock and a real-time write waits
    for the batch in flight."""
    if size := current_app.config.get("PORTAL_BULK_BATCH_SIZE"):
        return max(1, int(size))
    return 500 if db.session.get_bind().dialect.name == "sqlite" else 5000


def yield_to_realtime() -> None:
    """Before each bulk batch: while real-time writes are queued or running (collect()
    counts them up, write_collected() down), wait for them, at most REALTIME_YIELD_SECONDS
    per batch so a steady real-time stream cannot stop a backfill. A missing Redis waits
    for nothing."""
    deadline = time.monotonic() + REALTIME_YIELD_SECONDS
    try:
        connection = redis_connection()
        while int(connection.get(REALTIME_PENDING) or 0) > 0 and time.monotonic() < deadline:
            time.sleep(0.002)
    except RedisError as exc:
        log.warning("could not read pending real-time writes: %s", exc)


def without_waiting_for_disk() -> None:
    """On PostgreSQL, let the backfill transaction under way commit without waiting for its
    WAL to reach the disk (SET LOCAL synchronous_commit = off), so its commits do not
    queue beside a real-time write's. Safe here: each batch commits its rows with the
    progress that says how far the import got, so a server crash that loses the last
    batches loses that progress with them, and a retry writes them again (deduplicated by
    key). Real-time writes keep waiting for the disk."""
    if db.session.get_bind().dialect.name == "postgresql":
        db.session.execute(text("SET LOCAL synchronous_commit = off"))
