"""The data store: streams and what landed in them."""

from __future__ import annotations

from flask import Blueprint, abort, request
from sqlalchemy import func, select

from portal import htmx, params
from portal.access import role_required
from portal.extensions import db
from portal.models import Message, Stream

bp = Blueprint("data", __name__, url_prefix="/data")


@bp.get("")
@role_required("viewer")
def index():
    """Streams with their message counts and latest event time."""
    rows = db.session.execute(
        select(Stream, func.count(Message.id), func.max(Message.event_time))
        .outerjoin(Message, Message.stream_id == Stream.id)
        .group_by(Stream.id)
        .order_by(Stream.name)
    ).all()
    return htmx.render("data/index.html", rows=rows)


@bp.get("/streams/<name>")
@role_required("viewer")
def stream(name: str):
    """The newest messages of one stream."""
    found = db.session.scalar(select(Stream).where(Stream.name == name))
    if found is None:
        abort(404, description=f"There is no stream called {name!r}.")
    limit = min(params.int_arg(request.args, "limit", default=50), 500)
    messages = db.session.scalars(
        select(Message).where(Message.stream_id == found.id)
        .order_by(Message.event_time.desc(), Message.id.desc()).limit(limit)
    ).all()
    total = db.session.scalar(select(func.count()).where(Message.stream_id == found.id))
    return htmx.render("data/stream.html", stream=found, messages=messages, total=total)
