"""Profiles: people as the messages describe them, joined by identity keys."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, Index, PrimaryKeyConstraint, String
from sqlalchemy.orm import Mapped, mapped_column

from portal.extensions import db
from portal.models.types import NEVER_REUSE_IDS, JSONDict, UTCDateTime, utcnow


class Profile(db.Model):
    __tablename__ = "profiles"
    __table_args__ = NEVER_REUSE_IDS

    id: Mapped[int] = mapped_column(primary_key=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class ProfileIdentity(db.Model):
    """One identity value (normalised, see portal/profiles.py) and the profile it belongs
    to; the primary key makes each value belong to one profile at most."""

    __tablename__ = "profile_identities"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(String(255), primary_key=True)
    profile_id: Mapped[int] = mapped_column(ForeignKey("profiles.id", ondelete="CASCADE"))

    # Value first: lookups name many values of one key, and the index then finds each value
    # even while the planner's statistics still think the table is small (a first import).
    __table_args__ = (PrimaryKeyConstraint("value", "key"),
                      Index("ix_profile_identities_profile_id", "profile_id"))


class ProfileAttribute(db.Model):
    """A profile's value for one field, with the event time and the message it came
    from. A value only replaces one with an older event time (ties: higher message id)."""

    __tablename__ = "profile_attributes"

    profile_id: Mapped[int] = mapped_column(ForeignKey("profiles.id", ondelete="CASCADE"),
                                            primary_key=True)
    name: Mapped[str] = mapped_column(String(255), primary_key=True)
    value: Mapped[Any] = mapped_column(JSONDict, nullable=True)
    event_time: Mapped[datetime] = mapped_column(UTCDateTime)
    stream_id: Mapped[int] = mapped_column()  # no foreign key: a stream may be deleted
    message_id: Mapped[int] = mapped_column()
