"""The status poll's short answer, "nothing new", given in front of the Flask app.

A job's summary polls its status block every second (GET /jobs/<id>/live, from htmx),
and most polls find nothing changed. The block carries the fingerprint of what it shows
(`portal.jobs.live_state`) in its poll URL (`?v=...`). This WSGI layer answers a poll
whose fingerprint is still the current one with 204 No Content — htmx swaps nothing on a
204 and polls on. When the block did change, the first poll to see it goes the full way
and its block is kept in Redis under the new fingerprint for a little while (`remember`);
every other viewer shown the same block (same fingerprint: same job state, role, time
zone...) gets those bytes from here, so fifty people watching one import cost one render
per change, not fifty. All of this after the same checks of who asks that the full path
makes, with the same functions:

- the session cookie, verified with Flask's own signing serializer and maximum age;
- the identity it signs in: within its lifetime and not idle (`access.session_identity`);
- the user's row as it is now: active, the session's generation still theirs
  (`access.admits`), and the role the view asks for (viewer);

all read with the fingerprint in one statement. Anything else goes to Flask untouched: no
fingerprint or another one, a session that would be signed out or renewed from a
remember-me cookie, a user the row does not admit, a job that is gone, a request htmx
would not send, a database or Redis that cannot be reached. So this layer only ever
answers what the full path would have: "no change" to someone it would show the very
block they have, or the block it rendered for the same fingerprint. It never writes the
session: a poll is not the person's activity (`access.background`), so the full path
would not have either.
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
from collections.abc import Callable, Iterable, Mapping
from urllib.parse import parse_qs

from flask import Flask, Response
from flask.sessions import SecureCookieSessionInterface
from itsdangerous import BadSignature
from redis.exceptions import RedisError
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.exc import SQLAlchemyError
from werkzeug.http import HTTP_STATUS_CODES, parse_cookie

from portal import access, security
from portal.extensions import db
from portal.jobs import LIVE_EVERY, LiveState, live_state
from portal.models.users import role_at_least
from portal.queues import redis_connection

log = logging.getLogger(__name__)

LIVE_PATH = re.compile(r"/jobs/([0-9]{1,18})/live")
ROLE = "viewer"  # what the live view asks for (jobs.live: role_required("viewer"))
# Says which short answer a poll got (none on the full path's): for operators and tests.
ANSWERED_BY = "X-Portal-Poll"
ENGINE = "portal_poll_engine"  # app.extensions: (process id, the gate's engine)
KEY = "portal:live-block:"  # + fingerprint: a rendered block, kept LIVE_EVERY seconds
# What a poll's page says it shows, and the event htmx fires on it when that moved: the
# metrics chart and the Runs table reload themselves on these.
WATCHED = (("metrics-changed", "totals"), ("runs-changed", "run"))


def triggers(args: Mapping[str, str], shown: Mapping[str, str]) -> str:
    """The HX-Trigger of a poll: the events of what moved between the poll's page
    (`args`) and the block it gets (`shown`: its totals and run state)."""
    return ", ".join(event for event, name in WATCHED
                     if args.get(name, shown[name]) != shown[name])


def remember(marker: str, response: Response, shown: Mapping[str, str]) -> None:
    """Keep a block the full path rendered for `marker`, for the next viewers' polls."""
    try:
        redis_connection().set(KEY + marker, json.dumps(
            {"status": response.status_code, "body": response.get_data(as_text=True),
             "shown": dict(shown)}), ex=LIVE_EVERY)
    except RedisError as exc:  # only a render saved the next time
        log.warning("A status block could not be kept in Redis: %s", exc)


def _recalled(marker: str) -> dict | None:
    try:
        kept = redis_connection().get(KEY + marker)
    except RedisError:
        return None
    return json.loads(kept) if kept else None


class PollGate:
    """WSGI middleware around the portal's Flask app (inside any proxy fix-up)."""

    def __init__(self, app: Flask, wsgi_app: Callable) -> None:
        self.app, self.wsgi_app = app, wsgi_app

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        poll = _poll(environ)
        if poll is not None:
            job_id, args = poll
            with self.app.app_context():
                state = self._state(environ, job_id)
                if state is not None and state.marker == args["v"]:
                    return self._answer(environ, start_response, 204, b"",
                                        {ANSWERED_BY: "unchanged"})
                kept = _recalled(state.marker) if state is not None else None
                if kept is not None:
                    hx_trigger = triggers(args, kept["shown"])
                    return self._answer(
                        environ, start_response, kept["status"], kept["body"].encode(),
                        {"Content-Type": "text/html; charset=utf-8", ANSWERED_BY: "kept",
                         **({"HX-Trigger": hx_trigger} if hx_trigger else {})})
        return self.wsgi_app(environ, start_response)

    def _answer(self, environ: dict, start_response: Callable, status: int, body: bytes,
                headers: dict[str, str]) -> Iterable[bytes]:
        secure = environ.get("wsgi.url_scheme") == "https"
        headers = {**headers, "Content-Length": str(len(body)),
                   **security.headers(secure=secure, cacheable=False)}
        start_response(f"{status} {HTTP_STATUS_CODES.get(status, 'UNKNOWN')}",
                       list(headers.items()))
        return [body] if body else []

    def _state(self, environ: dict, job_id: int) -> LiveState | None:
        """The job's live state for the person the session signs in, when the full path
        would admit them to the live view; None otherwise (or when in doubt)."""
        data = self._session(environ)
        if data is None:
            return None
        now = time.time()
        named = access.session_identity(data, now)
        if named is None:
            return None
        user_id, generation = named
        try:
            with self._engine().connect() as connection:
                state = live_state(connection, job_id, user_id, now)
        except SQLAlchemyError as exc:  # the full path says what is wrong
            log.debug("The status poll goes the full way: %s", exc)
            return None
        if state is None or not (
                access.admits(state.viewer_active, state.viewer_generation, generation)
                and role_at_least(state.viewer_role, ROLE)):
            return None
        return state

    def _engine(self) -> Engine:
        """The engine the gate reads with. On SQLite, the app's. On a database server, a
        small one of its own (made in each process on first use, so after a fork) that
        spares each poll three round trips of the app's: its connections are in
        autocommit (no BEGIN and ROLLBACK around the one read), are not pinged when
        handed out (a dead one fails the read, is dropped, and that poll goes the full
        way, which pings), and let PostgreSQL keep a generic plan of the prepared
        statement (the portal's connections ask for a plan on each run, and planning
        this five-table read costs 1 ms, four times the read)."""
        if db.engine.dialect.name == "sqlite":
            return db.engine
        own = self.app.extensions.get(ENGINE)
        if own is None or own[0] != os.getpid():
            engine = create_engine(db.engine.url, pool_size=2, max_overflow=4,
                                   pool_pre_ping=False, isolation_level="AUTOCOMMIT")
            if engine.dialect.name == "postgresql":
                # After the portal's own connect hook (portal/__init__.py), which asks for
                # custom plans for the sake of queries over tables that grow: this one
                # reads rows by their keys, where PostgreSQL's own choice is right.
                event.listen(engine, "connect", _generic_plans)
            own = self.app.extensions[ENGINE] = (os.getpid(), engine)
        return own[1]

    def _session(self, environ: dict) -> dict | None:
        """The signed session's data, as Flask would open it; None if it would not."""
        interface = self.app.session_interface
        if not isinstance(interface, SecureCookieSessionInterface):
            return None
        name = self.app.config["SESSION_COOKIE_NAME"]
        cookie = parse_cookie(environ.get("HTTP_COOKIE", "")).get(name)
        serializer = interface.get_signing_serializer(self.app)
        if not cookie or serializer is None:
            return None
        try:
            data = serializer.loads(
                cookie, max_age=int(self.app.permanent_session_lifetime.total_seconds()))
        except BadSignature:
            return None
        return data if isinstance(data, dict) else None


def dispose(app: Flask) -> None:
    """Close the gate's own connections of `app` (an app that goes away: tests)."""
    own = app.extensions.pop(ENGINE, None)
    if own is not None:
        own[1].dispose()


def _generic_plans(dbapi_connection, _record) -> None:
    with dbapi_connection.cursor() as cursor:
        cursor.execute("SET plan_cache_mode = auto")


def _poll(environ: dict) -> tuple[int, dict[str, str]] | None:
    """(job id, its arguments) of a status poll as htmx sends it, with a fingerprint
    (`v`) and each argument once; None for anything else."""
    if (environ.get("REQUEST_METHOD") != "GET" or environ.get("HTTP_HX_REQUEST") != "true"
            or environ.get("HTTP_HX_HISTORY_RESTORE_REQUEST")):
        return None
    match = LIVE_PATH.fullmatch(environ.get("PATH_INFO", ""))
    query = environ.get("QUERY_STRING", "")
    if match is None or "%00" in query or "\x00" in query:
        return None
    args = parse_qs(query, keep_blank_values=True)
    if any(len(values) != 1 for values in args.values()) or not args.get("v", [""])[0]:
        return None
    return int(match.group(1)), {name: values[0] for name, values in args.items()}
