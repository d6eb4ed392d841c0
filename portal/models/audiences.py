"""Audiences: named filters over profile attributes (see portal/audiences.py)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, Index, String, Text, func
from sqlalchemy.orm import Mapped, mapped_column

from portal.extensions import db
from portal.models.types import NEVER_REUSE_IDS, JSONDict, UTCDateTime, utcnow


class Audience(db.Model):
    """`slug` is how the API and export jobs' configurations (config["audience"]) name an
    audience; `conditions` is a list of {"field", "op", "value"} as audiences.check()
    cleans them, combined by `match` ("all" or "any")."""

    __tablename__ = "audiences"

    id: Mapped[int] = mapped_column(primary_key=True)
    slug: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text, default="")
    match: Mapped[str] = mapped_column(String(8), default="all")
    conditions: Mapped[list[dict[str, Any]]] = mapped_column(JSONDict, default=list)
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    __table_args__ = (
        # Two audiences whose names differ only in case would be told apart by nobody.
        Index("uq_audiences_name_lower", func.lower(name), unique=True),
        NEVER_REUSE_IDS,
    )
