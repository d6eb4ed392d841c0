"""Managing the people who sign in: create, invite, roles, disable/enable, password resets
and one's own password change. No request objects here; every change is audited in the
same transaction as the change itself.

Invitations and reset links are one-time links: a random token shown once to the admin,
only its sha256 stored, valid for LINK_HOURS and spent on first use. Disabling a user, a
reset and a password change end every session of that user at once (User.end_sessions);
a disabled user's API tokens stop working too (portal.tokens checks the creator).

Guard rails: nobody can disable or demote the last active admin, and an admin cannot
disable themselves.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from datetime import timedelta

from sqlalchemy import func, select
from werkzeug.security import generate_password_hash

from portal import audit, passwords
from portal.extensions import db
from portal.models import ROLES, User, UserLink
from portal.models.types import utcnow
from portal.schemaform import text_problem

LINK_HOURS = {"invite": 72, "reset": 24}
EMAIL_SHAPE = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s.]{2,}")
NAME_LIMIT = 200


class Refused(ValueError):
    """A change that cannot be made; `errors` maps a form field (or "") to a message."""

    def __init__(self, errors: dict[str, str] | str):
        if isinstance(errors, str):
            errors = {"": errors}
        super().__init__("; ".join(errors.values()))
        self.errors = errors


def _hash(raw: str) -> str:
    return hashlib.sha256(raw.encode("utf-8", "surrogatepass")).hexdigest()


def find_by_email(email: str) -> User | None:
    """The user with this email, compared case-insensitively."""
    return db.session.scalar(select(User).where(func.lower(User.email) == email.strip().lower()))


def _person_errors(email: str, name: str, role: str) -> dict[str, str]:
    errors: dict[str, str] = {}
    if not email:
        errors["email"] = "Give the person's email address."
    elif len(email) > 320 or not EMAIL_SHAPE.fullmatch(email):
        errors["email"] = "Enter an email address such as ana@example.com."
    elif find_by_email(email) is not None:
        errors["email"] = "Someone with this email can already sign in."
    if len(name) > NAME_LIMIT:
        errors["name"] = f"Use at most {NAME_LIMIT} characters."
    elif name and (problem := text_problem(name)):
        errors["name"] = problem
    if role not in ROLES:
        errors["role"] = f"Choose a role: {', '.join(ROLES)}."
    return errors


def create(*, email: str, name: str, role: str, password: str, by: User) -> User:
    """A new user who signs in with `password` (checked by portal.passwords)."""
    email, name = email.strip().lower(), name.strip()
    errors = _person_errors(email, name, role)
    if not errors and (problem := passwords.problems(password, email)):
        errors["password"] = problem
    if errors:
        raise Refused(errors)
    user = User(email=email, name=name, role=role)
    user.set_password(password)
    db.session.add(user)
    db.session.flush()
    audit.record("created", "user", user.id, user.email, by=by, role=role,
                 summary=f"User created with the {role} role")
    db.session.commit()
    return user


def invite(*, email: str, name: str, role: str, by: User) -> tuple[User, str]:
    """A new user with no usable password and a one-time invitation; returns the user and
    the link's token (shown once)."""
    email, name = email.strip().lower(), name.strip()
    if errors := _person_errors(email, name, role):
        raise Refused(errors)
    # A password nobody knows until the invitation is used (or SSO signs them in).
    user = User(email=email, name=name, role=role,
                password_hash=generate_password_hash(secrets.token_urlsafe(32)))
    db.session.add(user)
    db.session.flush()
    raw = _new_link(user, "invite", by)
    audit.record("invited", "user", user.id, user.email, by=by, role=role,
                 summary=f"User invited with the {role} role "
                         f"(link valid {LINK_HOURS['invite']} hours)")
    db.session.commit()
    return user, raw


def _new_link(user: User, purpose: str, by: User | None) -> str:
    # Earlier unused links of the same kind stop working: only the newest one is good.
    for link in db.session.scalars(select(UserLink).where(
            UserLink.user_id == user.id, UserLink.purpose == purpose,
            UserLink.used_at.is_(None))):
        link.used_at = utcnow()
    raw = secrets.token_urlsafe(32)
    now = utcnow()
    db.session.add(UserLink(user_id=user.id, purpose=purpose, token_hash=_hash(raw),
                            created_by_id=by.id if by else None, created_at=now,
                            expires_at=now + timedelta(hours=LINK_HOURS[purpose])))
    return raw


def link_user(raw: str, purpose: str) -> tuple[UserLink, User] | None:
    """The unused, unexpired link with this token and its (active) user, or None."""
    if not raw or len(raw) > 100:
        return None
    link = db.session.scalar(select(UserLink).where(UserLink.token_hash == _hash(raw),
                                                    UserLink.purpose == purpose))
    if link is None or link.used_at is not None or link.expires_at <= utcnow():
        return None
    user = db.session.get(User, link.user_id)
    if user is None or not user.active:
        return None
    return link, user


def use_link(raw: str, purpose: str, password: str) -> User:
    """Set the password through a one-time link and spend it. Raises Refused ("" for a
    bad link, "password" for a password the policy refuses)."""
    found = link_user(raw, purpose)
    if found is None:
        raise Refused("This link is not valid: it was used already, it expired or it was "
                      "replaced by a newer one. Ask an administrator for a new one.")
    link, user = found
    if problem := passwords.problems(password, user.email):
        raise Refused({"password": problem})
    # Spent under a row lock, so two tabs cannot both use it.
    db.session.refresh(link, with_for_update=True)
    if link.used_at is not None:
        db.session.rollback()
        raise Refused("This link was used already.")
    link.used_at = utcnow()
    user.set_password(password)
    audit.record("invite_accepted" if purpose == "invite" else "password_reset_used",
                 "user", user.id, user.email, by=user,
                 summary="Invitation accepted; password set" if purpose == "invite"
                 else "Password set through a reset link")
    db.session.commit()
    return user


def active_admins() -> int:
    return db.session.scalar(select(func.count()).select_from(User).where(
        User.role == "admin", User.active.is_(True))) or 0


def set_role(user: User, role: str, *, by: User) -> bool:
    """Change the role (effective from the user's next request); False when unchanged."""
    if role not in ROLES:
        raise Refused({"role": f"Choose a role: {', '.join(ROLES)}."})
    db.session.refresh(user, with_for_update=True)
    if user.role == role:
        db.session.rollback()
        return False
    if user.role == "admin" and user.active and active_admins() <= 1:
        db.session.rollback()
        raise Refused({"role": "This is the last active admin: make someone else an admin "
                               "first."})
    before = user.role
    user.role = role
    audit.record("role_changed", "user", user.id, user.email, by=by, before=before, after=role,
                 summary=f"Role changed from {before} to {role}")
    db.session.commit()
    return True


def set_active(user: User, active: bool, *, by: User) -> bool:
    """Disable (every session and API token of theirs stops at once) or enable a user;
    False when it already was so."""
    db.session.refresh(user, with_for_update=True)
    if user.active == active:
        db.session.rollback()
        return False
    if not active:
        if user.id == by.id:
            db.session.rollback()
            raise Refused("You cannot disable yourself: ask another admin.")
        if user.role == "admin" and active_admins() <= 1:
            db.session.rollback()
            raise Refused("This is the last active admin: it cannot be disabled.")
        user.end_sessions()
    user.active = active
    audit.record("enabled" if active else "disabled", "user", user.id, user.email, by=by,
                 summary="User enabled" if active
                 else "User disabled; their sessions and API tokens stop working")
    db.session.commit()
    return True


def reset_password(user: User, *, by: User, password: str | None = None) -> str | None:
    """Set a new password (when given) or issue a one-time reset link (returns its token).
    Either way every session of the user ends."""
    if password is not None:
        if problem := passwords.problems(password, user.email):
            raise Refused({"password": problem})
        user.set_password(password)
        audit.record("password_reset", "user", user.id, user.email, by=by,
                     summary="Password set by an admin; the user's sessions ended")
        db.session.commit()
        return None
    raw = _new_link(user, "reset", by)
    user.end_sessions()
    audit.record("password_reset_link", "user", user.id, user.email, by=by,
                 summary=f"Reset link issued (valid {LINK_HOURS['reset']} hours); the "
                         f"user's sessions ended")
    db.session.commit()
    return raw


def change_own_password(user: User, current: str, new: str, confirm: str) -> None:
    """The signed-in person's own change: needs the current password. Every session of
    theirs ends (the caller signs the current browser in again)."""
    errors: dict[str, str] = {}
    if not user.check_password(current):
        errors["current_password"] = "This is not your current password."
    if problem := passwords.problems(new, user.email):
        errors["new_password"] = problem
    elif new != confirm:
        errors["confirm_password"] = "The two new passwords differ."
    elif new == current:
        errors["new_password"] = "Choose a password other than your current one."
    if errors:
        raise Refused(errors)
    user.set_password(new)
    audit.record("password_changed", "user", user.id, user.email, by=user,
                 summary="Changed their own password; their other sessions ended")
    db.session.commit()


def record_sign_in(user: User, method: str) -> None:
    """Note when and how the user signed in, audited (the caller has started the session)."""
    user.last_login_at = utcnow()
    user.last_login_method = method
    audit.record("signed_in", "user", user.id, user.email, by=user, method=method,
                 summary="Signed in." if method == "password" else f"Signed in ({method}).")
    db.session.commit()


def all_users() -> list[User]:
    return list(db.session.scalars(select(User).order_by(User.email)))


def pending_invites() -> set[int]:
    """Ids of users whose invitation is still open (they have not set a password yet)."""
    return set(db.session.scalars(select(UserLink.user_id).where(
        UserLink.purpose == "invite", UserLink.used_at.is_(None),
        UserLink.expires_at > utcnow())))
