"""The data store: uploaded files, streams and their raw messages."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, ForeignKey, Index, LargeBinary, String, UniqueConstraint
from sqlalchemy.orm import Mapped, deferred, mapped_column

from portal.extensions import db
from portal.models.types import NEVER_REUSE_IDS, JSONDict, UTCDateTime, utcnow


class Upload(db.Model):
    """A file a user uploaded for an import; kept in the database so any worker can read it."""

    __tablename__ = "uploads"
    __table_args__ = NEVER_REUSE_IDS

    id: Mapped[int] = mapped_column(primary_key=True)
    filename: Mapped[str] = mapped_column(String(255))
    format: Mapped[str] = mapped_column(String(10))  # csv / ndjson
    size: Mapped[int] = mapped_column()
    sha256: Mapped[str] = mapped_column(String(64))
    fields: Mapped[list[str]] = mapped_column(JSONDict, default=list)
    content: Mapped[bytes] = deferred(mapped_column(LargeBinary))
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Stream(db.Model):
    """A named stream of raw messages, with running totals kept by write_messages in the
    same transaction as the messages (so the Data page never counts messages)."""

    __tablename__ = "streams"
    __table_args__ = NEVER_REUSE_IDS

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    message_count: Mapped[int] = mapped_column(default=0, server_default="0")
    last_ingested_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_event_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class StreamField(db.Model):
    """A top-level field name seen in a stream's messages and how many messages had it."""

    __tablename__ = "stream_fields"

    stream_id: Mapped[int] = mapped_column(ForeignKey("streams.id", ondelete="CASCADE"),
                                           primary_key=True)
    name: Mapped[str] = mapped_column(String(255), primary_key=True)
    count: Mapped[int] = mapped_column(default=0)


class Message(db.Model):
    """One raw message as received; `dedupe_key` makes a re-run write it only once."""

    __tablename__ = "messages"

    id: Mapped[int] = mapped_column(primary_key=True)
    stream_id: Mapped[int] = mapped_column(ForeignKey("streams.id", ondelete="CASCADE"))
    dedupe_key: Mapped[str] = mapped_column(String(128))
    event_time: Mapped[datetime] = mapped_column(UTCDateTime)
    ingested_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    source: Mapped[str] = mapped_column(String(64))  # "job:<id>", "import:<id>", "collect"
    payload: Mapped[dict[str, Any]] = mapped_column(JSONDict)

    __table_args__ = (
        UniqueConstraint("stream_id", "dedupe_key", name="uq_messages_stream_dedupe"),
        Index("ix_messages_stream_id_event_time", "stream_id", "event_time"),
        NEVER_REUSE_IDS,
    )


class BulkImport(db.Model):
    """One upload to the bulk API: its settings, where its body waits (spool_path) until
    processed, then what processing found. `errors` keeps the first problems; `rejected`
    counts all."""

    __tablename__ = "bulk_imports"
    __table_args__ = NEVER_REUSE_IDS

    id: Mapped[int] = mapped_column(primary_key=True)
    stream: Mapped[str] = mapped_column(String(64))
    # queued, running, completed or failed
    status: Mapped[str] = mapped_column(String(16), default="queued")
    format: Mapped[str] = mapped_column(String(10))  # csv / json / ndjson
    compressed: Mapped[bool] = mapped_column(default=False)
    timestamp_field: Mapped[str] = mapped_column(String(255), default="")
    delimiter: Mapped[str] = mapped_column(String(1), default=",")
    dryrun: Mapped[bool] = mapped_column(default=False)
    droperrors: Mapped[bool] = mapped_column(default=False)
    source: Mapped[str] = mapped_column(String(64), default="api")
    size: Mapped[int] = mapped_column(BigInteger, default=0)  # bytes received
    spool_path: Mapped[str | None] = mapped_column(String(1024))
    sha256: Mapped[str | None] = mapped_column(String(64))  # of the decoded body
    rows_read: Mapped[int] = mapped_column(default=0)
    rows_written: Mapped[int] = mapped_column(default=0)
    duplicates: Mapped[int] = mapped_column(default=0)
    rejected: Mapped[int] = mapped_column(default=0)
    errors: Mapped[list[dict[str, Any]]] = mapped_column(JSONDict, default=list)
    message: Mapped[str] = mapped_column(String(1000), default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # Profiles are built after the rows are written, a batch at a time (portal.bulk.
    # build_profiles): the messages this import wrote have ids in first..last_message_id,
    # those up to profiled_through are in the profiles, `profiled` counts them.
    first_message_id: Mapped[int | None] = mapped_column()
    last_message_id: Mapped[int | None] = mapped_column()
    profiled_through: Mapped[int] = mapped_column(default=0)
    profiled: Mapped[int] = mapped_column(default=0)
    profiles_finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
