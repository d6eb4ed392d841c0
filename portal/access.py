"""Sign-in, sessions and role checks shared by the views.

A signed-in session, and the remember-me cookie copied from it, carry the identity
"<user id>:<session generation>:<signed in at>:<kind>" (kind "s" for a session, "r" for a
"keep me signed in" one), signed with SECRET_KEY. Every request checks it:

- the generation must still be the user's: sign-out, a password change and disabling the
  user bump it (User.end_sessions), which ends every session and cookie of theirs at once;
- a session lasts at most PORTAL_SESSION_MAX_HOURS from sign-in, and ends after
  PORTAL_SESSION_IDLE_MINUTES without a request;
- a "keep me signed in" sign-in lasts PORTAL_REMEMBER_DAYS from sign-in instead, however
  idle: when its session idles out, the remember-me cookie starts a new one, until then;
- only what the person does counts as activity: the requests a page makes by itself
  (views marked @background, such as the status polls) never keep a session going.

Signing in starts a new session and signing out empties it: nothing a browser held before
(a planted cookie's CSRF token, say) carries over.

The times are checked on the server from the signed identity, not left to the cookies'
expiry dates, so a copied cookie stops working when the original would.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping
from functools import wraps

from flask import (
    Flask,
    Response,
    abort,
    current_app,
    flash,
    g,
    redirect,
    request,
    session,
    url_for,
)
from flask_login import current_user, login_required, login_url, login_user, logout_user

from portal import htmx
from portal.config import ConfigError
from portal.extensions import db, login_manager
from portal.models import User

login_manager.login_view = "auth.login"
login_manager.login_message = "Sign in to continue."
login_manager.login_message_category = "info"

SESSION, REMEMBERED = "s", "r"
_IDENTITY = re.compile(r"([0-9]{1,18}):([0-9]{1,18}):([0-9]{1,12}):([sr])")
# When the session last saw a request; written at most once a minute, not on every poll.
_SEEN = "_seen_at"
_SEEN_EVERY = 60
# What Flask-Login keeps in the session for a signed-in user.
_LOGIN_KEYS = ("_user_id", "_fresh", "_id", _SEEN)


def check_settings(app: Flask) -> None:
    """Refuse session settings that would sign everyone out at once."""
    for name in ("PORTAL_SESSION_IDLE_MINUTES", "PORTAL_SESSION_MAX_HOURS"):
        if app.config[name] < 1:
            raise ConfigError(f"{name} must be 1 or more, not {app.config[name]}.")
    if app.config["REMEMBER_COOKIE_DURATION"].total_seconds() < 86400:
        raise ConfigError("PORTAL_REMEMBER_DAYS must be 1 or more.")


def _lifetime(kind: str) -> float:
    """How long after sign-in a session of this kind ends, in seconds."""
    if kind == REMEMBERED:
        return current_app.config["REMEMBER_COOKIE_DURATION"].total_seconds()
    return current_app.config["PORTAL_SESSION_MAX_HOURS"] * 3600


@login_manager.user_loader
def load_user(identity: str) -> User | None:
    """The user a session or remember-me cookie names, unless it has been ended."""
    named = signed_in_identity(identity, time.time())
    if named is None:
        return None
    user = db.session.get(User, named[0])
    if user is None or not admits(user.active, user.session_generation, named[1]):
        return None
    return user


def signed_in_identity(identity: str, now: float) -> tuple[int, int] | None:
    """(user id, session generation) that a signed identity names, while it is within
    its lifetime; None for an expired or malformed one."""
    match = _IDENTITY.fullmatch(identity)
    if match is None:  # e.g. a cookie from before sessions carried a generation
        return None
    user_id, generation, signed_in_at, kind = match.groups()
    if now - int(signed_in_at) > _lifetime(kind):
        return None
    return int(user_id), int(generation)


def admits(active: bool | None, current_generation: int | None, generation: int) -> bool:
    """Whether a user's row (active, its session generation) still admits a session of
    `generation`: it was not disabled, and no sign-out or password change ended it."""
    return bool(active) and current_generation == generation


def session_identity(data: Mapping, now: float) -> tuple[int, int] | None:
    """(user id, session generation) that a session's data signs in, before the user's
    row is checked; None when it names no one or has idled out (a request would then
    be signed out, or signed in again from a remember-me cookie, by check_session)."""
    identity = data.get("_user_id")
    if not isinstance(identity, str) or _idle(data.get(_SEEN), now):
        return None
    return signed_in_identity(identity, now)


def _idle(seen: object, now: float) -> bool:
    return not isinstance(seen, int) or now - seen > _idle_seconds()


def sign_in(user: User, remember: bool) -> None:
    """Start a session for `user`, with a remember-me cookie when asked."""
    now = int(time.time())
    # A new session: nothing from before sign-in (a CSRF token someone else may know)
    # carries over. Flask-WTF makes a new token on the next form.
    _new_session()
    login_user(user, remember=remember)
    # Flask-Login keeps get_id() ("<id>:<generation>") in the session and copies the
    # session's value into the remember-me cookie; adding when and how this sign-in
    # happened lets every request enforce the lifetime, on a copied cookie too.
    session["_user_id"] = f"{user.get_id()}:{now}:{REMEMBERED if remember else SESSION}"
    session[_SEEN] = now


def sign_out(user: User) -> None:
    """End every session of `user` (in every browser) and forget this one."""
    user.end_sessions()
    logout_user()
    # Forget the rest too (the CSRF token among it); Flask-Login's note to clear the
    # remember-me cookie stays.
    remember = session.get("_remember")
    _new_session()
    if remember:
        session["_remember"] = remember


def _new_session() -> None:
    session.clear()
    # Flask-WTF also keeps this request's signed token in `g`: forget it with the session.
    g.pop(current_app.config.get("WTF_CSRF_FIELD_NAME", "csrf_token"), None)


def _forget_session() -> None:
    for key in _LOGIN_KEYS:
        session.pop(key, None)


def check_session() -> None:
    """Before every request: end an idle session, and drop an identity that was ended."""
    if request.endpoint == "static":
        return
    now = time.time()
    seen = session.get(_SEEN)
    if "_user_id" in session and _idle(seen, now):
        # Idle too long. A remember-me cookie, if there is one, may start a new session.
        _forget_session()
        seen = None
    if current_user.is_authenticated:
        if (seen is None or now - seen >= _SEEN_EVERY) and not _is_background():
            session[_SEEN] = int(now)
    elif "_user_id" in session:
        # Ended elsewhere or expired: forget it, and the remember-me cookie holding it.
        _forget_session()
        if current_app.config.get("REMEMBER_COOKIE_NAME", "remember_token") in request.cookies:
            session["_remember"] = "clear"


def _idle_seconds() -> int:
    return current_app.config["PORTAL_SESSION_IDLE_MINUTES"] * 60


def background(view: Callable) -> Callable:
    """Mark a view that pages call by themselves (a poll every second or two): its requests
    are not the person's activity, so they never keep an idle session going."""
    view.portal_background = True
    return view


def _is_background() -> bool:
    view = current_app.view_functions.get(request.endpoint or "")
    return bool(getattr(view, "portal_background", False))


@login_manager.unauthorized_handler
def sign_in_first() -> Response:
    """Send a request that needs a session to the sign-in page, and back afterwards.

    An htmx request gets HX-Redirect: its XMLHttpRequest would follow a redirect by itself
    and swap the sign-in page into a fragment (a status cell, the log). It comes back to
    the page it was made from, if that page is on this site."""
    message = (login_manager.login_message_category, login_manager.login_message)
    if message not in session.get("_flashes", []):  # a page's three pollers: said once
        flash(message[1], message[0])
    if htmx.is_htmx():
        page = htmx.current_page()
        response = Response("", 401)
        response.headers["HX-Redirect"] = url_for("auth.login", next=page)
        return response
    return redirect(login_url(login_manager.login_view, next_url=request.url))


def role_required(role: str) -> Callable:
    """Sign-in required, and the user's role must be `role` or above."""

    def decorate(view: Callable) -> Callable:
        @wraps(view)
        @login_required
        def wrapped(*args, **kwargs):
            if not current_user.has_role(role):
                abort(403, description=f"This needs the {role} role or above.")
            return view(*args, **kwargs)

        return wrapped

    return decorate
