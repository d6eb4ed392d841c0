"""People who sign in, with their role."""

from __future__ import annotations

import secrets
from datetime import datetime
from functools import cache

from flask_login import UserMixin
from sqlalchemy import ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column
from werkzeug.security import check_password_hash, generate_password_hash

from portal.extensions import db
from portal.models.types import NEVER_REUSE_IDS, UTCDateTime, utcnow

# Each role can do everything the roles before it can.
ROLES = ("viewer", "operator", "admin")


def role_at_least(held: str | None, needed: str) -> bool:
    """Whether the role `held` is `needed` or above it (an unknown role is none)."""
    return held in ROLES and ROLES.index(held) >= ROLES.index(needed)


class User(UserMixin, db.Model):
    __tablename__ = "users"
    __table_args__ = NEVER_REUSE_IDS

    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(320), unique=True)
    name: Mapped[str] = mapped_column(String(200), default="")
    password_hash: Mapped[str] = mapped_column(String(300))
    role: Mapped[str] = mapped_column(String(20), default="viewer")
    active: Mapped[bool] = mapped_column(default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_login_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # How they last signed in: "password", "sso", "invite" or "reset" (a one-time link).
    last_login_method: Mapped[str] = mapped_column(String(20), default="",
                                                   server_default="")
    # Every session and remember-me cookie carries the generation it was signed in under
    # (see portal/access.py); bumping it ends them all at once.
    session_generation: Mapped[int] = mapped_column(default=0, server_default="0")
    # The IANA time zone the portal shows this user's times in (portal.ui).
    timezone: Mapped[str] = mapped_column(String(64), default="UTC", server_default="UTC")

    @property
    def is_active(self) -> bool:  # Flask-Login refuses sign-in to inactive users
        return self.active

    @property
    def display_name(self) -> str:
        return self.name or self.email

    def get_id(self) -> str:
        """What Flask-Login keeps in the session and the remember-me cookie."""
        return f"{self.id}:{self.session_generation}"

    def end_sessions(self) -> None:
        """End every session and remember-me cookie of this user, in every browser, from
        their next request on: for sign-out, a password change and disabling the user."""
        # In SQL, so two changes at once both count.
        self.session_generation = User.session_generation + 1

    def set_password(self, password: str) -> None:
        """Store a new password (checked against portal.passwords first by the caller)."""
        self.password_hash = generate_password_hash(password)
        if self.id is not None:
            # Whoever signed in with the old password is signed out.
            self.end_sessions()

    def check_password(self, password: str) -> bool:
        return check_password_hash(self.password_hash, password)

    def has_role(self, role: str) -> bool:
        """True when this user's role is `role` or above it."""
        return role_at_least(self.role, role)


class UserLink(db.Model):
    """A one-time link that lets a person set their password: an invitation or a reset.
    Only the sha256 of its token is kept; the link is shown once, to the admin."""

    __tablename__ = "user_links"
    __table_args__ = NEVER_REUSE_IDS

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"),
                                         index=True)
    purpose: Mapped[str] = mapped_column(String(10))  # "invite" or "reset"
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id",
                                                                 ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


@cache
def _dummy_hash() -> str:
    # Made the way real hashes are, so checking it costs what checking a real one does.
    return generate_password_hash(secrets.token_urlsafe(16))


def check_sign_in(user: User | None, password: str) -> bool:
    """True when `user` exists, is active and `password` is theirs. An unknown email takes
    as long as a known one (a dummy hash is checked), so the answer's timing does not tell
    which accounts exist."""
    if user is None:
        check_password_hash(_dummy_hash(), password)
        return False
    return user.check_password(password) and user.active
