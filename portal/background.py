"""Units of background work: every RQ task and every dispatcher pass runs through here.

`task` wraps an RQ entry point, `ended_session` a dispatcher pass. Either way the unit's
database session ends with it: committed when it returned, rolled back when it raised,
and removed, so its connection goes back to the pool. A connection left "idle in
transaction" in a long-lived worker would otherwise be handed out again after a database
restart, dead; the pool pings every connection it hands out (pool_pre_ping), and only a
connection that went back to it is pinged.

A database that cannot be reached is said in those words ("database unavailable"), not as
an unforeseen error.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import cache
from typing import ParamSpec, TypeVar

from flask import Flask, has_app_context
from sqlalchemy import event
from sqlalchemy.engine import Engine, ExceptionContext
from sqlalchemy.exc import DBAPIError, OperationalError

from portal.extensions import db

log = logging.getLogger(__name__)
P = ParamSpec("P")
T = TypeVar("T")


@cache
def standalone_app() -> Flask:
    """The app of a process that runs a task outside one (a plain `rq worker`)."""
    from portal import create_app

    return create_app()


OURS = "portal_database"  # set on the errors of the portal's own database (watch())


def watch(engine: Engine) -> None:
    """Mark every error of `engine` (the portal's own database) as ours, so that a
    provider's database (the SQL source of a job) going away is not taken for it."""
    if not event.contains(engine, "handle_error", _mark):
        event.listen(engine, "handle_error", _mark)


def _mark(context: ExceptionContext) -> None:
    if context.sqlalchemy_exception is not None:
        setattr(context.sqlalchemy_exception, OURS, True)


def database_unavailable(exc: BaseException) -> bool:
    """Whether `exc` says the portal's database could not be reached (a restart, an
    outage): the driver reported a disconnect, so SQLAlchemy invalidated the connection."""
    return (isinstance(exc, DBAPIError) and bool(exc.connection_invalidated)
            and getattr(exc, OURS, False))


def database_error(exc: BaseException) -> bool:
    """Whether `exc` is an OperationalError of the portal's own database (a connection
    that cannot be made is one)."""
    return isinstance(exc, OperationalError) and getattr(exc, OURS, False)


def database_down(exc: BaseException) -> bool:
    """Whether `exc` says the portal's database is away: a connection lost mid-way
    (database_unavailable) or one that could not be made (database_error)."""
    return database_unavailable(exc) or database_error(exc)


def end_session(*, commit: bool) -> None:
    """Commit (or roll back) and remove the session. A dead connection cannot commit or
    roll back; removing the session then discards it, which is all that is left to do."""
    try:
        if commit:
            db.session.commit()
        else:
            db.session.rollback()
    except DBAPIError as exc:
        if not database_unavailable(exc):
            raise
        log.warning("database unavailable: could not end the transaction (%s)", exc.orig)
    finally:
        db.session.remove()


@contextmanager
def ended_session(what: str) -> Iterator[None]:
    """Run one unit of background work (`what`, for the log) and end its session."""
    try:
        yield
    except BaseException as exc:
        if database_down(exc):
            log.warning("%s: database unavailable: the database could not be reached (%s); "
                        "it is retried", what, getattr(exc, "orig", exc))
        end_session(commit=False)
        raise
    else:
        end_session(commit=True)


def task(function: Callable[P, T]) -> Callable[P, T]:
    """Decorate an RQ entry point: it runs in the worker's app context (or a standalone
    one) and its database session ends with it."""
    what = f"{function.__module__}.{function.__qualname__}"

    @functools.wraps(function)
    def run(*args: P.args, **kwargs: P.kwargs) -> T:
        if not has_app_context():
            with standalone_app().app_context():
                return run(*args, **kwargs)
        with ended_session(what):
            return function(*args, **kwargs)

    return run
