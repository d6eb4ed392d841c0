"""Column types shared by the models."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import JSON, DateTime
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.types import TypeDecorator

# Table options of every table whose ids show in URLs, logs, cursors or the audit trail:
# SQLite otherwise hands the largest id out again after a delete, and a new row inherits
# what was meant for the deleted one (PostgreSQL's sequences never reuse an id).
NEVER_REUSE_IDS = {"sqlite_autoincrement": True}

# JSON everywhere, JSONB on PostgreSQL.
JSONDict = JSON().with_variant(JSONB(), "postgresql")


def utcnow() -> datetime:
    """The current time, timezone-aware in UTC."""
    return datetime.now(UTC)


def stored_time(value: datetime) -> str:
    """An aware time as UTCDateTime stores it, in text (naive UTC, to the microsecond): for
    rows sent to the database as one JSON document, where its text compares as stored."""
    return value.astimezone(UTC).replace(tzinfo=None).isoformat(sep=" ", timespec="microseconds")


class UTCDateTime(TypeDecorator):
    """Stores naive UTC, hands back aware UTC: the same on SQLite and PostgreSQL."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect):
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given; use an aware one (UTC)")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect):
        if value is None:
            return None
        return value.replace(tzinfo=UTC)
