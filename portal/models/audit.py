"""The audit log: who did what to which object, and when."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from portal.extensions import db
from portal.models.types import NEVER_REUSE_IDS, JSONDict, UTCDateTime, utcnow
from portal.models.users import User


class AuditEntry(db.Model):
    __tablename__ = "audit_entries"
    __table_args__ = (Index("ix_audit_entries_object", "object_type", "object_id", "id"),
                      NEVER_REUSE_IDS)

    id: Mapped[int] = mapped_column(primary_key=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    # Who, in words: a person's email, or "job 12", "dispatcher", "command line".
    actor: Mapped[str] = mapped_column(String(200))
    action: Mapped[str] = mapped_column(String(40), index=True)
    object_type: Mapped[str] = mapped_column(String(40))
    object_id: Mapped[int | None]
    object_label: Mapped[str] = mapped_column(String(200), default="")
    details: Mapped[dict] = mapped_column(JSONDict, default=dict)
    summary: Mapped[str] = mapped_column(Text, default="")

    user: Mapped[User | None] = relationship()
