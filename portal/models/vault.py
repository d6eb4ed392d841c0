"""Authorizations: the credentials a job uses to reach a provider (the Vault).

The credentials themselves live only in AuthorizationVersion.ciphertext (AES-GCM, see
portal/vault.py); every change of credentials adds a version, and the authorization
points at its current one.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from portal.extensions import db
from portal.models.types import NEVER_REUSE_IDS, JSONDict, UTCDateTime, utcnow
from portal.models.users import User

HEALTH = ("unknown", "healthy", "unhealthy")


class Authorization(db.Model):
    __tablename__ = "authorizations"
    __table_args__ = NEVER_REUSE_IDS

    id: Mapped[int] = mapped_column(primary_key=True)
    provider: Mapped[str] = mapped_column(String(64), index=True)
    method: Mapped[str] = mapped_column(String(64))
    label: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text, default="")
    owner_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    health: Mapped[str] = mapped_column(String(20), default="unknown")
    health_checked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    health_message: Mapped[str] = mapped_column(Text, default="", server_default="")
    # A provider's rate limit holds back every job on this authorization until then.
    rate_limited_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # Check-and-set: a credentials update names the version it replaces.
    current_version: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # What the credentials look like without their secrets: which fields are set, the
    # non-secret values (a username, an endpoint URL) and, for OAuth, the token's expiry.
    public: Mapped[dict] = mapped_column(JSONDict, default=dict)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))

    owner: Mapped[User | None] = relationship(foreign_keys=[owner_id])
    updated_by: Mapped[User | None] = relationship(foreign_keys=[updated_by_id])
    versions: Mapped[list[AuthorizationVersion]] = relationship(
        back_populates="authorization", order_by="AuthorizationVersion.version.desc()",
        cascade="all, delete-orphan",
    )


class AuthorizationVersion(db.Model):
    __tablename__ = "authorization_versions"
    __table_args__ = (UniqueConstraint("authorization_id", "version"), NEVER_REUSE_IDS)

    id: Mapped[int] = mapped_column(primary_key=True)
    authorization_id: Mapped[int] = mapped_column(
        ForeignKey("authorizations.id", ondelete="CASCADE"), index=True)
    version: Mapped[int] = mapped_column(Integer)
    # "<format>:<key id>:<base64 nonce + ciphertext>"; the key id says which key opens it.
    ciphertext: Mapped[str] = mapped_column(Text)
    key_id: Mapped[str] = mapped_column(String(64))
    reason: Mapped[str] = mapped_column(String(40))  # created, updated, reauthorized, refreshed
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    # Who made it when no person did (e.g. "job 12" refreshing an OAuth token).
    created_by_label: Mapped[str] = mapped_column(String(200), default="")
    rotated_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    authorization: Mapped[Authorization] = relationship(back_populates="versions")
    created_by: Mapped[User | None] = relationship()
