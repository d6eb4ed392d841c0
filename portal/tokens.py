"""API access tokens: creating, revoking and checking them. No request objects here.

A token is "pt_" and 32 random bytes in URL-safe base64. Only its sha256 is stored: the
token has 256 bits of entropy, so a fast hash is as safe as a slow one, and a lookup by
hash costs one index probe. A short prefix is kept in clear so people can tell tokens
apart in the list. A token acts for the person who created it, with the token's role
(never more than that person's own), and stops working when it is revoked, when it
expires, or when that person is disabled.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select

from portal import audit
from portal.extensions import db
from portal.models import ROLES, AccessToken, User
from portal.models.types import utcnow
from portal.schemaform import name_errors

EXPIRY_DAYS = (7, 30, 90)  # or none
PREFIX = "pt_"
SHOWN = 10  # characters of the token kept in clear
_LAST_USED_EVERY = timedelta(minutes=1)  # last_used_at is written at most this often


def _hash(raw: str) -> str:
    return hashlib.sha256(raw.encode("utf-8", "surrogatepass")).hexdigest()


def problems(name: str, description: str, role: str, days: int | None) -> dict[str, str]:
    """Field messages for a new token (empty when it can be created)."""
    errors = name_errors(name, description, missing="Give the token a name.")
    if role not in ROLES:
        errors["role"] = f"Choose a role: {', '.join(ROLES)}."
    if days is not None and days not in EXPIRY_DAYS:
        errors["days"] = "Choose 7, 30 or 90 days, or no expiry."
    return errors


class TokenRefused(ValueError):
    def __init__(self, errors: dict[str, str]):
        super().__init__("; ".join(errors.values()))
        self.errors = errors


def create(*, name: str, description: str, role: str, days: int | None,
           by: User) -> tuple[AccessToken, str]:
    """A new token, committed and audited; returns it with the token itself, which is
    never stored and so can be shown only now. Raises TokenRefused with field messages."""
    name, description = name.strip(), description.strip()
    errors = problems(name, description, role, days)
    if not errors and not by.has_role(role):
        errors["role"] = "A token cannot have a role above its creator's."
    if errors:
        raise TokenRefused(errors)
    raw = PREFIX + secrets.token_urlsafe(32)
    now = utcnow()
    token = AccessToken(name=name, description=description, role=role,
                        token_hash=_hash(raw), prefix=raw[:SHOWN], created_by_id=by.id,
                        created_at=now,
                        expires_at=now + timedelta(days=days) if days else None)
    db.session.add(token)
    db.session.flush()
    audit.record("created", "access_token", token.id, name, by=by, role=role,
                 expires_at=token.expires_at.isoformat() if token.expires_at else None,
                 summary=f"API token created with the {role} role"
                 + (f", expiring in {days} days" if days else ", never expiring"))
    db.session.commit()
    return token, raw


def revoke(token: AccessToken, *, by: User) -> bool:
    """Revoke the token from its next request on; False when it was revoked already."""
    db.session.refresh(token, with_for_update=True)
    if token.revoked_at is not None:
        db.session.rollback()
        return False
    token.revoked_at = utcnow()
    audit.record("revoked", "access_token", token.id, token.name, by=by,
                 summary="API token revoked")
    db.session.commit()
    return True


def all_tokens() -> list[AccessToken]:
    return list(db.session.scalars(select(AccessToken).order_by(AccessToken.id.desc())))


def state(token: AccessToken, now: datetime | None = None) -> str:
    """"active", "revoked" or "expired"."""
    if token.revoked_at is not None:
        return "revoked"
    if token.expires_at is not None and token.expires_at <= (now or utcnow()):
        return "expired"
    return "active"


@dataclass(frozen=True)
class TokenActor:
    """Who acts through a token: its creator's identity (for the audit trail and the
    job log's user_email) with the token's role."""

    token_id: int
    user: User
    role: str

    @property
    def id(self) -> int:
        return self.user.id

    @property
    def email(self) -> str:
        return self.user.email

    def has_role(self, role: str) -> bool:
        return ROLES.index(self.role) >= ROLES.index(role)


def parse_header(header: str) -> str:
    """The token of an Authorization header: "<token>" or "Bearer <token>"."""
    header = header.strip()
    scheme, _, rest = header.partition(" ")
    if scheme.lower() == "bearer" and rest.strip():
        return rest.strip()
    return header


def authenticate(raw: str, *, address: str | None) -> tuple[TokenActor | None, str]:
    """(the actor, "") for a good token; (None, why) for a missing, unknown, revoked or
    expired one, or one whose creator was disabled. A refusal is audited (the caller
    commits nothing else in that request)."""
    now = utcnow()
    token = db.session.scalar(select(AccessToken).where(AccessToken.token_hash == _hash(raw))
                              ) if raw else None
    if token is None:
        why = "missing" if not raw else "unknown"
    elif (why := state(token, now)) == "active":
        creator = token.created_by
        if not creator.active:
            why = "creator disabled"
        else:
            if token.last_used_at is None or now - token.last_used_at >= _LAST_USED_EVERY:
                token.last_used_at = now
                db.session.commit()
            role = min(token.role, creator.role, key=ROLES.index)
            return TokenActor(token.id, creator, role), ""
    audit.record("api_refused", "access_token", token.id if token else None,
                 token.name if token else "", actor=f"API client {address or 'unknown'}",
                 summary=f"API request refused: {why} token", address=address or "")
    db.session.commit()
    return None, why


def audit_throttled(address: str | None, wait: int) -> None:
    """Record that an address is refused for sending too many bad tokens (once a wait)."""
    audit.record("api_throttled", "access_token", None, "",
                 actor=f"API client {address or 'unknown'}", address=address or "",
                 summary=f"API requests refused for {wait} s after too many bad tokens")
    db.session.commit()
