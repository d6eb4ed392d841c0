"""The data plane's API routes, on the `api` blueprint (portal/blueprints/api.py imports
this module last): streams, real-time collect, bulk imports, audiences and entities."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from typing import Any

from flask import g, request
from sqlalchemy import select

from portal import apischemas as s
from portal import audiences, bulk, params, profiles
from portal.blueprints.api import ApiError, _cursor_id, _limit, answer, bp, documented
from portal.extensions import db
from portal.models import Audience, Stream

# --- streams -----------------------------------------------------------------------------

@bp.get("/stream")
@documented("Streams with their message counts", response=s.StreamListEnvelope)
def stream_list():
    """Streams, by name."""
    rows = db.session.execute(  # the running totals write_messages keeps, not a count
        select(Stream.name, Stream.message_count, Stream.last_event_at)
        .order_by(Stream.name)).all()
    return answer([s.StreamOut().dump({"name": name, "messages": count,
                                       "last_message_at": last})
                   for name, count, last in rows])


# --- Data in: real-time messages and bulk imports (portal/bulk.py) -------------------------

def _bulk_answer(work: Callable[[], Any]) -> Any:
    """What bulk's checks refuse, as the API's errors (400, 413, 415, 503, 404)."""
    try:
        return work()
    except bulk.BulkError as exc:
        db.session.rollback()
        raise ApiError(exc.status, exc.code, exc.message, exc.details) from None
    except bulk.UnknownImport as exc:
        raise ApiError(404, "not_found", str(exc)) from None


@bp.post("/collect/json/<stream>")
@documented("Send real-time messages (an object or an array of objects) to a stream; "
            "written by the realtime queue", role="operator", status=202,
            response=s.CollectEnvelope,
            query={"timestamp_field": "the field holding each message's event time"})
def collect_json(stream: str):
    """Real-time messages: checked here, written on the `realtime` queue."""
    if request.mimetype != "application/json":
        raise ApiError(415, "unsupported_media_type", "Send the messages as application/json.")
    try:
        payload = request.get_json(silent=True)
    except RecursionError:
        payload = None
    if payload is None:
        raise ApiError(400, "invalid_json", "The body is not JSON (or is nested too deeply).")
    queued = _bulk_answer(lambda: bulk.collect(
        stream, payload, source="collect",
        timestamp_field=request.args.get("timestamp_field", "")))
    return answer(queued, 202, "accepted")


@bp.post("/collect/bulk/<stream>")
@documented("Bulk import: CSV, a JSON array or NDJSON (gzip allowed), streamed to the "
            "backfill queue; read the import back with GET /import/<id>", role="operator",
            status=202, response=s.ImportEnvelope,
            query={"timestamp_field": "the field holding each row's event time",
                               "dryrun": "true: check and report, write nothing",
                               "delimiter": "a CSV's delimiter (default ,)",
                               "droperrors": "true: skip bad rows and report them"})
def collect_bulk(stream: str):
    """A bulk import: the body is spooled as it arrives (never whole in memory), then read
    by a worker on the `backfill` queue."""
    limit = bulk.body_limit()
    if request.content_length is not None and request.content_length > limit:
        refused = bulk.TooLarge(limit)
        raise ApiError(refused.status, refused.code, refused.message, refused.details)
    args = request.args
    received = _bulk_answer(lambda: bulk.receive(
        stream, request.stream, content_type=request.headers.get("Content-Type"),
        content_encoding=request.headers.get("Content-Encoding"),
        timestamp_field=args.get("timestamp_field", ""), delimiter=args.get("delimiter", ","),
        dryrun=args.get("dryrun", "false"), droperrors=args.get("droperrors", "false"),
        source="api", max_bytes=limit))
    return answer(bulk.import_status(received.id), 202, "accepted")


@bp.get("/import/<int:import_id>")
@documented("A bulk import: status, row counts, errors with line numbers, and how far "
            "profiles are built from its rows", response=s.ImportEnvelope)
def import_get(import_id: int):
    return answer(_bulk_answer(lambda: bulk.import_status(import_id)))


# --- audiences (portal/audiences.py) -----------------------------------------------------

def _audience(id_or_slug: str) -> Audience:
    """By id (digits: a slug always has a letter) or by slug; 404 when there is none."""
    found = None
    if id_or_slug.isascii() and id_or_slug.isdigit():
        if (audience_id := params.parse_int(id_or_slug)) is not None:
            found = db.session.get(Audience, audience_id)
    elif len(id_or_slug) <= 64:
        found = audiences.by_slug(id_or_slug)
    if found is None:
        raise ApiError(404, "not_found", f"There is no audience {id_or_slug[:64]!r}.")
    return found


def _audience_data(audience: Audience) -> dict[str, Any]:
    return s.audience_data(audience, audiences.count(audience.match, audience.conditions))


@bp.get("/audience")
@documented("Audiences with their conditions and sizes, by id", response=s.AudienceListEnvelope,
            query={"limit": "page size (1-200)", "next": "cursor from the previous page"})
def audience_list():
    """Audiences in id order; keyset pages via `next`."""
    query = select(Audience)
    if (after := _cursor_id()) is not None:
        query = query.where(Audience.id > after)
    limit = _limit()
    rows = list(db.session.scalars(query.order_by(Audience.id).limit(limit + 1)))
    more = len(rows) > limit
    rows = rows[:limit]
    return answer([_audience_data(row) for row in rows],
                  next=str(rows[-1].id) if more else None)


@bp.get("/audience/<id_or_slug>")
@documented("Get an audience by id or slug", response=s.AudienceEnvelope)
def audience_get(id_or_slug: str):
    """One audience, with its size now."""
    return answer(_audience_data(_audience(id_or_slug)))


@bp.post("/audience")
@documented("Create an audience", role="operator", body=s.AudienceIn,
            response=s.AudienceEnvelope, status=201)
def audience_create(body: dict[str, Any]):
    """A new audience, checked as the form checks it (details per field path)."""
    cleaned, errors = audiences.check(body)
    if errors:
        raise ApiError(422, "invalid", "The audience has mistakes.", errors)
    audience = audiences.create(cleaned, by=g.api_actor)
    db.session.commit()
    return answer(_audience_data(audience), 201, "created")


# --- entities: a profile by an identity value (portal/profiles.py) --------------------------

@bp.get("/entity/user/<field>/<path:value>")
@documented("The profile that owns an identity value: its fields, each field's time and "
            "source, and its audiences", response=s.EntityEnvelope)
def entity_user(field: str, value: str):
    """A profile by identity key and value (normalised as profiles compare them)."""
    keys = profiles.identity_keys()
    if field not in keys:
        raise ApiError(400, "bad_parameter", f"{field[:64]!r} is not an identity key; use "
                       f"one of: {', '.join(keys)}.", {"field": ", ".join(keys)})
    found = profiles.find(field, value[:1000]) if len(value) <= 255 else None
    if found is None:
        raise ApiError(404, "not_found", f"No profile has {field} {value[:255]!r}.")
    identities: dict[str, list[str]] = defaultdict(list)
    for key, identity in found.identities:
        identities[key].append(identity)
    return answer(s.EntityOut().dump({
        "id": found.id, "identities": dict(identities),
        "field_values": {a.name: a.value for a in found.attributes},
        "fields_meta": {a.name: {"event_time": a.event_time, "stream": a.stream,
                                 "source": a.source, "message_id": a.message_id}
                        for a in found.attributes},
        "audiences": [audience.slug for audience in audiences.audiences_of(found.id)]}))
