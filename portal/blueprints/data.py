"""The data store: streams and what landed in them, and the profiles built from it."""

from __future__ import annotations

from flask import Blueprint, abort, flash, request, url_for
from flask_login import current_user
from sqlalchemy import select

from portal import datastore, htmx, params, profiles
from portal.access import role_required
from portal.extensions import db
from portal.models import Stream

bp = Blueprint("data", __name__, url_prefix="/data")
PAGE_SIZE = 50


@bp.get("")
@role_required("viewer")
def index():
    """Streams with their running totals and the field names seen in them."""
    streams = db.session.scalars(select(Stream).order_by(Stream.name)).all()
    fields = datastore.stream_fields([stream.id for stream in streams])
    return htmx.render("data/index.html", streams=streams, fields=fields,
                       identity_keys=profiles.identity_keys())


@bp.get("/profiles")
@role_required("viewer")
def find_profile():
    """Find a user: the profile that owns an identity value, each attribute with its
    event time and source."""
    keys = profiles.identity_keys()
    key = request.args.get("key", keys[0])
    value = request.args.get("value", "").strip()[:255]
    errors = {}
    if key not in keys:
        errors["key"] = f"Choose one of the identity keys: {', '.join(keys)}."
    if "value" in request.args and not value:
        errors["value"] = "Enter the value to look for."
    found = profiles.find(key, value) if value and not errors else None
    return htmx.render("data/profiles.html", "data/_profile.html", keys=keys, key=key,
                       value=value, errors=errors, profile=found, searched=bool(value))


def _stream_or_404(name: str) -> Stream:
    found = db.session.scalar(select(Stream).where(Stream.name == name))
    if found is None:
        abort(404, description=f"There is no stream called {name!r}.")
    return found


@bp.get("/streams/<name>")
@role_required("viewer")
def stream(name: str):
    """A stream's messages, newest first, a page at a time; searchable."""
    found = _stream_or_404(name)
    limit = min(params.int_arg(request.args, "limit", default=PAGE_SIZE), 500)
    before = params.id_arg(request.args, "before")
    search = request.args.get("q", "").strip()[:200]
    messages, older = datastore.stream_page(found, before_id=before, search=search,
                                            limit=limit)
    return htmx.render("data/stream.html", "data/_messages.html", stream=found,
                       messages=messages, older=older, before=before, search=search,
                       total=datastore.message_count(found),
                       fields=datastore.stream_fields([found.id])[found.id])


@bp.get("/streams/<name>/delete")
@role_required("admin")
def confirm_delete(name: str):
    """Ask before deleting a stream: how many messages go, or which jobs stand in the way."""
    found = _stream_or_404(name)
    return htmx.render("data/delete.html", "data/_delete.html", stream=found,
                       count=datastore.message_count(found), blockers=datastore.jobs_using(found))


@bp.post("/streams/<name>/delete")
@role_required("admin")
def delete(name: str):
    """Delete a stream and its messages, unless a job that may still run uses it."""
    found = _stream_or_404(name)
    try:
        deleted = datastore.delete_stream(found, by=current_user)
    except datastore.StreamInUse as refused:
        db.session.rollback()
        return htmx.render("data/delete.html", "data/_delete.html", status=409, stream=found,
                           count=datastore.message_count(found), blockers=refused.jobs)
    db.session.commit()
    flash(f"Deleted stream {name} and its {deleted:,} messages.", "success")
    return htmx.redirect(url_for("data.index"))
