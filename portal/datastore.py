"""The data plane: uploads, streams and messages. Writes join the caller's transaction."""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

from redis.exceptions import RedisError
from sqlalchemy import (
    String,
    bindparam,
    case,
    cast,
    delete,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.sql.elements import TextClause

from portal import audit, profiles
from portal.config import json_text
from portal.extensions import db
from portal.lifecycle import Status
from portal.models import Job, Message, Stream, StreamField, Upload, User
from portal.models.types import UTCDateTime, stored_time, utcnow
from portal.params import parse_int
from portal.queues import redis_connection
from portal.schemaform import unsafe_character
from portal.textsearch import holds
from providers.base import ConfigError, InMessage, OutMessage, StoredFile
from providers.files import FileCheck, FileInfo, RecordError, check_file, inspect

log = logging.getLogger(__name__)
T = TypeVar("T")
# How long the result of checking an upload is kept (uploads never change: the key holds
# the file's hash and the settings that decide how it reads).
CHECK_KEPT_SECONDS = 24 * 3600


def safe_filename(filename: str) -> str:
    """An uploaded file's name as the portal keeps and shows it: the last part of any path
    the browser sent, with every control, invisible or text-direction character (a NUL, or
    U+202E, which makes "photo<U+202E>gpj.exe" read as "photoexe.jpg") replaced by U+FFFD,
    so the name shown is the name it has. At most 255 characters."""
    name = filename.replace("\\", "/").rsplit("/", 1)[-1].strip()
    name = "".join("\ufffd" if unsafe_character(char) else char for char in name)
    return name[:255] or "upload"


def store_upload(filename: str, data: bytes, *, by: User | None) -> tuple[Upload, FileInfo]:
    """Keep an uploaded file, with what inspecting it found (format, fields, delimiter).
    The name is kept as `safe_filename` makes it.

    Raises providers.files.RecordError when the file cannot be read.
    """
    filename = safe_filename(filename)
    info = inspect(filename, data)
    upload = Upload(
        filename=filename,
        format=info.format,
        size=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
        fields=info.fields,
        content=data,
        created_by_id=by.id if by else None,
    )
    db.session.add(upload)
    db.session.flush()
    return upload, info


def stored_file(upload_id: int) -> StoredFile:
    """The upload as a job reads it."""
    upload = db.session.get(Upload, found) if (found := parse_int(upload_id)) else None
    if upload is None:
        raise ConfigError(f"the uploaded file #{upload_id} no longer exists", code="file_missing")
    return StoredFile(upload.filename, upload.format, upload.sha256, upload.content)


def check_upload(upload: Upload, delimiter: str, timestamp_field: str, *,
                 sample: int = 20, max_errors: int = 10) -> FileCheck:
    """The import's own check of an upload (providers.files.check_file): every row, its
    first problems and the first `sample` rows as they would be stored. The whole file is
    read once per file and settings: the counts and problems are kept in Redis, and a later
    call reads only the first rows again."""
    key = "portal:upload-check:" + hashlib.sha256(json.dumps(
        [upload.sha256, upload.format, delimiter, timestamp_field, max_errors]).encode()
    ).hexdigest()
    try:
        kept = redis_connection().get(key)
    except RedisError as exc:  # a cache only: check again
        log.warning("upload check cache unavailable: %s", exc)
        kept = None
    if kept is not None:
        found = json.loads(kept)
        start = check_file(upload.content, upload.format, delimiter, timestamp_field,
                           sample=sample, max_errors=1, max_rows=sample)
        return FileCheck(found["rows"], start.sample,
                         [RecordError(line, problem) for line, problem in found["errors"]],
                         found["complete"])
    checked = check_file(upload.content, upload.format, delimiter, timestamp_field,
                         sample=sample, max_errors=max_errors)
    summary = {"rows": checked.rows, "complete": checked.complete,
               "errors": [[error.line, error.problem] for error in checked.errors]}
    try:
        redis_connection().set(key, json.dumps(summary), ex=CHECK_KEPT_SECONDS)
    except RedisError as exc:
        log.warning("upload check cache unavailable: %s", exc)
    return checked


def upload_for(upload_id: Any, user: User, job: Job | None = None) -> Upload | None:
    """The upload with this id if `user` uploaded it, or it is the file `job` reads now
    (an admin edits another's import); else None (a tampered id finds nothing)."""
    upload_id = parse_int(upload_id)  # from a config: an int, or nothing usable
    if upload_id is None:
        return None
    upload = db.session.get(Upload, upload_id)
    if upload is None or (upload.created_by_id != user.id and (
            job is None or (job.config or {}).get("upload_id") != upload_id)):
        return None
    return upload


def check_config(upload: Upload, config: dict[str, Any]) -> FileCheck:
    """The whole file, read as an import job with this configuration will read it."""
    return check_upload(upload, config.get("delimiter") or ",",
                        config.get("timestamp_field") or "")


def file_problem(upload: Upload, checked: FileCheck) -> str:
    """The field message for a file the import would refuse, naming its first problems."""
    if not checked.errors:
        return ""
    if checked.rows == 0:
        return (f"{upload.filename} has a header but no rows: there is nothing to import. "
                "Upload a file with at least one row.")
    listed = "; ".join(str(error) for error in checked.errors)
    more = " (the check stopped there)" if not checked.complete else ""
    if len(checked.errors) == 1:
        return (f"{upload.filename} cannot be imported, {listed}{more}. Correct the file and "
                "upload it again, or choose another timestamp field.")
    return (f"{upload.filename} cannot be imported; its first {len(checked.errors)} problems: "
            f"{listed}{more}. Correct the file and upload it again, or choose another "
            "timestamp field.")


def get_or_create_stream(name: str) -> Stream:
    stream = db.session.scalar(select(Stream).where(Stream.name == name))
    if stream is not None:
        return stream
    try:
        with db.session.begin_nested():
            stream = Stream(name=name)
            db.session.add(stream)
    except IntegrityError:  # another worker created it first
        stream = db.session.scalar(select(Stream).where(Stream.name == name))
    return stream


def _without_nul(value):
    """The value with NUL characters replaced by U+FFFD in every string (keys too): a
    provider's data may carry them, and PostgreSQL's JSON cannot store them."""
    if isinstance(value, str):
        return value.replace("\x00", "\ufffd")
    if isinstance(value, dict):
        return {_without_nul(key): _without_nul(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_without_nul(item) for item in value]
    return value


def write_messages(stream_name: str, messages: Iterable[OutMessage], *, source: str) -> tuple[
    int, int
]:
    """Add messages to a stream, skipping any whose dedupe key it holds, and fold the new
    ones into the profiles; (added, omitted)."""
    stored = store_messages(stream_name, messages, source=source)
    if stored.facts:
        profiles.apply(stored.facts)
    return len(stored.facts), stored.omitted


@dataclass(frozen=True)
class Stored:
    """What store_messages wrote: the new messages as profiles read them, and how many it
    skipped as duplicates."""

    facts: list[profiles.Fact]
    omitted: int

    @property
    def ids(self) -> list[int]:
        return [fact.message_id for fact in self.facts]


def store_messages(stream_name: str, messages: Iterable[OutMessage], *, source: str) -> Stored:
    """Add messages to a stream, skipping any whose dedupe key it holds, and keep the
    stream's totals; profiles are left to the caller (write_messages folds them in at once,
    a bulk import afterwards, a batch at a time: portal.bulk.build_profiles).

    The stream's unique (stream_id, dedupe_key) index decides what is there already
    (INSERT ... ON CONFLICT DO NOTHING RETURNING the rows it inserted): no lookup first,
    whose plan on PostgreSQL could turn into a scan of the whole stream while the table's
    statistics still describe it as empty (a first big import), and no race between two
    writers."""
    batch = {message.dedupe_key: message for message in messages}
    if not batch:
        return Stored([], 0)
    stream = get_or_create_stream(stream_name)
    now = utcnow()
    rows = [
        {
            "stream_id": stream.id,
            "dedupe_key": key,
            "event_time": message.event_time,
            "ingested_at": now,
            "source": source,
            "payload": _without_nul(message.payload),
        }
        for key, message in batch.items()
    ]
    ids = _insert(stream.id, rows, now, source)
    added = [row for row in rows if row["dedupe_key"] in ids]
    if added:
        _count(stream, added, now)
    return Stored([profiles.Fact(ids[row["dedupe_key"]], stream.id, row["event_time"],
                                 row["payload"]) for row in added], len(batch) - len(added))


# The rows as one JSON array unnested into one INSERT: one short statement whatever the
# batch size, and one parameter the driver passes as it is. SQLAlchemy's insertmanyvalues
# builds a multi-row VALUES per batch, with a Python call per value to bind (most of a bulk
# import's time on SQLite), which psycopg parses afresh for every batch on PostgreSQL; an
# executemany cannot return the ids of the rows it inserted. SQLite's INSERT ... SELECT
# needs its WHERE before ON CONFLICT (or it reads the ON as a join's). SQLite keeps a JSON
# column as the text it is given, and `->` would give it back minified ({"plan":"pro"}),
# so there each payload travels as its own JSON text, as the JSON column writes it
# ({"plan": "pro"}, what the stream page shows and its search finds); PostgreSQL's jsonb
# has one form whatever it is given. What the statement returns is each new row's dedupe
# key and id: a row not returned was there already.
def _message_insert(event_time: str, payload: str, rows: str) -> TextClause:
    return text(
        "INSERT INTO messages (stream_id, dedupe_key, event_time, ingested_at, source, payload) "
        f"SELECT :stream_id, row.value ->> 0, {event_time}, :now, :source, {payload} "
        f"FROM {rows} ON CONFLICT (stream_id, dedupe_key) DO NOTHING RETURNING dedupe_key, id"
    ).bindparams(bindparam("now", type_=UTCDateTime))


MESSAGE_INSERTS = {
    "postgresql": _message_insert("CAST(row.value ->> 1 AS timestamp)", "row.value -> 2",
                                  "jsonb_array_elements(CAST(:rows AS jsonb)) AS row"),
    "sqlite": _message_insert("row.value ->> 1", "row.value ->> 2",
                              "json_each(:rows) AS row WHERE true"),
}


def _insert(stream_id: int, rows: list[dict], now, source: str) -> dict[str, int]:
    """Insert the rows no message of the stream has the dedupe key of; {key: id} of those."""
    dialect = db.session.get_bind().dialect.name
    as_text = dialect == "sqlite"  # each payload as its own JSON text (see above)
    return dict(db.session.execute(MESSAGE_INSERTS[dialect], {
        "stream_id": stream_id, "now": now, "source": source,
        "rows": json_text([[row["dedupe_key"], stored_time(row["event_time"]),
                            json_text(row["payload"]) if as_text else row["payload"]]
                           for row in rows]),
    }).all())


# How long a write waits for SQLite's write lock in all (the connection's busy_timeout).
SQLITE_LOCK_WAIT_SECONDS = 15.0


def with_quick_lock(work: Callable[[], T]) -> T:
    """Run `work` (which writes and commits) so that, on SQLite, it takes the write lock
    within a millisecond of its release: SQLite's own busy handler backs off up to 25-100
    ms per sleep, so a short write waiting behind a bulk batch of 20 ms would often wait
    twice that. Here the wait is a retry every millisecond of the whole transaction (it
    has written nothing while it waits: the lock is the first thing its first write
    takes). Elsewhere, `work()` as it is."""
    if db.session.get_bind().dialect.name != "sqlite":
        return work()
    deadline = time.monotonic() + SQLITE_LOCK_WAIT_SECONDS
    while True:
        raw = db.session.connection().connection.driver_connection
        raw.execute("PRAGMA busy_timeout=0")
        try:
            return work()
        except OperationalError as exc:
            db.session.rollback()
            if "locked" not in str(exc.orig) or time.monotonic() > deadline:
                raise
            time.sleep(0.001)
        finally:
            raw.execute(f"PRAGMA busy_timeout={int(SQLITE_LOCK_WAIT_SECONDS * 1000)}")


def _count(stream: Stream, rows: list[dict], now) -> None:
    """Add the new messages to the stream's running totals. Increments in SQL (never a
    read-modify-write) and an upsert per field name, so concurrent writers lose nothing;
    the stream row's lock also orders writers of one stream."""
    newest = max(row["event_time"] for row in rows)
    db.session.execute(
        update(Stream).where(Stream.id == stream.id).values(
            message_count=Stream.message_count + len(rows),
            last_ingested_at=case((or_(Stream.last_ingested_at.is_(None),
                                       Stream.last_ingested_at < now), now),
                                  else_=Stream.last_ingested_at),
            last_event_at=case((or_(Stream.last_event_at.is_(None),
                                    Stream.last_event_at < newest), newest),
                               else_=Stream.last_event_at))
        .execution_options(synchronize_session=False))
    db.session.expire(stream, ["message_count", "last_ingested_at", "last_event_at"])
    fields = Counter(name[:255] for row in rows if isinstance(row["payload"], dict)
                     for name in row["payload"])
    names = sorted(fields)  # one order for every writer: no deadlock between two of them
    upsert = (pg_insert if db.session.get_bind().dialect.name == "postgresql" else sqlite_insert)
    if names:
        table = StreamField.__table__
        statement = upsert(table)
        db.session.execute(statement.on_conflict_do_update(
            index_elements=["stream_id", "name"],
            set_={"count": table.c.count + statement.excluded.count}),
            [{"stream_id": stream.id, "name": name, "count": fields[name]} for name in names])


def read_messages(stream_name: str, *, after_id: int, limit: int) -> list[InMessage]:
    """Messages of a stream in the order they were stored, after `after_id` (exports)."""
    stream = db.session.scalar(select(Stream).where(Stream.name == stream_name))
    if stream is None:
        raise ConfigError(f"there is no stream '{stream_name}' (yet); import into it first or "
                          "choose another", code="stream_missing")
    rows = db.session.execute(
        select(Message.id, Message.event_time, Message.payload)
        .where(Message.stream_id == stream.id, Message.id > after_id)
        .order_by(Message.id).limit(limit)
    ).all()
    return [InMessage(row.id, row.event_time, row.payload) for row in rows]


def stream_page(stream: Stream, *, before_id: int | None = None, search: str = "",
                limit: int = 50) -> tuple[list[Message], int | None]:
    """One page of a stream's messages, newest stored first, and the id to pass as
    `before_id` for the next (older) page, or None on the last. `search` keeps the messages
    whose dedupe key or payload text holds it, any case; % and _ are plain characters."""
    query = select(Message).where(Message.stream_id == stream.id)
    if before_id is not None:
        query = query.where(Message.id < before_id)
    if search:
        # The payload is searched as JSON text, where a quote reads \" and SQLite keeps
        # non-ASCII letters as \u escapes: the search is tried as typed and as JSON writes it.
        payload = cast(Message.payload, String)
        forms = {search, json.dumps(search)[1:-1], json.dumps(search, ensure_ascii=False)[1:-1]}
        query = query.where(or_(holds(db.session, search, Message.dedupe_key),
                                *(holds(db.session, form, payload) for form in forms)))
    rows = list(db.session.scalars(query.order_by(Message.id.desc()).limit(limit + 1)))
    return rows[:limit], (rows[limit - 1].id if len(rows) > limit else None)


def message_count(stream: Stream) -> int:
    return stream.message_count


def stream_fields(stream_ids: list[int]) -> dict[int, list[tuple[str, int]]]:
    """The field names seen in each stream's messages, most frequent first."""
    found: dict[int, list[tuple[str, int]]] = {stream_id: [] for stream_id in stream_ids}
    for row in db.session.execute(
            select(StreamField.stream_id, StreamField.name, StreamField.count)
            .where(StreamField.stream_id.in_(stream_ids))
            .order_by(StreamField.count.desc(), StreamField.name)):
        found[row.stream_id].append((row.name, row.count))
    return found


# A job that may still run (paused ones can be resumed) holds on to its stream.
ENDED = (str(Status.COMPLETED), str(Status.FAILED))


def jobs_using(stream: Stream) -> list[Job]:
    """The jobs that are not completed or failed and import into or export from `stream`
    (their configuration names it)."""
    candidates = db.session.scalars(
        select(Job).where(Job.status.not_in(ENDED)).order_by(Job.id)).all()
    return [job for job in candidates if (job.config or {}).get("stream") == stream.name]


class StreamInUse(Exception):
    """The stream cannot go: jobs that may still run use it."""

    def __init__(self, jobs: list[Job]):
        self.jobs = jobs
        names = ", ".join(f"“{job.name}” (#{job.id}, {job.status})" for job in jobs)
        super().__init__(f"Jobs still use this stream: {names}. Complete or delete them "
                         "first, or point them at another stream.")


def delete_stream(stream: Stream, *, by: User) -> int:
    """Delete a stream and all its messages, audited; how many messages went. Raises
    StreamInUse while a job that may still run reads or writes it."""
    if users := jobs_using(stream):
        raise StreamInUse(users)
    name, stream_id = stream.name, stream.id
    deleted = db.session.execute(delete(Message).where(Message.stream_id == stream_id)).rowcount
    db.session.execute(delete(StreamField).where(StreamField.stream_id == stream_id))
    db.session.delete(stream)
    audit.record("stream_deleted", "stream", stream_id, name, by=by,
                 summary=f"Deleted stream {name} and its {deleted:,} messages.",
                 messages=deleted)
    return deleted
