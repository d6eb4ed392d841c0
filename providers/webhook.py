"""Webhook: send the messages of a stream to an HTTP endpoint of yours, as JSON.

Three job types. "Send stream to webhook": each unit POSTs the next batch of messages,
oldest first:

    {"stream": "signups", "messages": [
        {"id": 41, "event_time": "2024-05-01T12:00:00+00:00", "payload": {...}}, ...]}

with `Content-Type: application/json` and `Idempotency-Key: <stream>:<first id>-<last id>`
(a retry after a timeout sends the same batch again with the same key, so a receiver can
drop a batch it already has). Any 2xx answer is success and the cursor moves past the
batch; anything else keeps the cursor, and the batch is retried with backoff.

"Send audience to webhook": each unit compares the next window of an audience's members
(by profile id) with what the job last sent (portal/membership.py) and POSTs the changes:

    {"audience": "vip", "identifier": "email",
     "added": [{"profile_id": 7, "email": "a@example.com", "fields": {...}}, ...],
     "removed": [{"profile_id": 9, "email": "b@example.com"}, ...]}

A member whose identifier changed is removed by the old one and added by the new one;
members without the identifier are counted as omitted and not sent. The Idempotency-Key
is "<audience>:<hash of the document>". A window with no change sends nothing. With the
config "format": "events" the body is a JSON array instead, exits first:

    [{"event": "exited", "audience": "vip", "email": "b@example.com", "profile_id": 9,
      "at": "<ISO time>"},
     {"event": "entered", "audience": "vip", "email": "a@example.com", "profile_id": 7,
      "at": "<ISO time>", "fields": {...}}]

(the Idempotency-Key hashes the events without their "at", so a retry keeps it).

"Enrich profiles" (kind enrichment): each unit POSTs the next window of an audience's
members as they are now, {"profiles": [{"email": ..., "fields": {...}}]}, and the endpoint
answers {"profiles": [{"email": ..., "attributes": {...}, "at": <optional>}]}; each
answered profile becomes a message {"email": ..., **attributes} in the job's stream (the
profiles take the attributes from there, newest wins). An answer that is not one
(BadAnswer) fails the job naming what was wrong. docs/providers/webhook.md has the detail.

Authorization is one of:

- open: nothing but the URL;
- bearer: `Authorization: Bearer <token>`;
- basic: HTTP basic auth with a username and password;
- hmac: no Authorization header, but three headers instead:
      X-Portal-Key-Id: <key id>
      X-Portal-Timestamp: <Unix time in seconds>
      X-Portal-Signature: sha256=<hex HMAC-SHA256 of "<timestamp>.<body>" keyed with the secret>
  where <body> is the exact bytes of the request body. To verify, recompute the HMAC over
  the raw body (before parsing it), compare in constant time, and reject timestamps more
  than a few minutes old so a captured request cannot be replayed.

"Test connection" POSTs {"type": "ping", "sent_at": "<ISO time>"} the same way.

Requests go through providers/http.py's `http_call` (timeouts, errors mapped to
AuthError / RateLimited / ConfigError / ProviderError, no credential in any message).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import httpx

from providers.base import (
    AudienceChanges,
    AuthMethod,
    ConfigError,
    InMessage,
    JobType,
    OutMessage,
    Provider,
    ProviderError,
    RunContext,
    WorkResult,
    audience_field,
)
from providers.files import STREAM_PATTERN
from providers.http import http_call

DEFAULT_BATCH = 100  # messages per POST
MAX_BATCH = 1000


# -- The webhook provider -----------------------------------------------------------------

URL_FIELD: dict[str, Any] = {
    "type": "string",
    "title": "Endpoint URL",
    "description": "The address the messages are POSTed to, starting with https:// (or "
    "http:// on a trusted network).",
    "format": "uri",
    "x-destination": True,  # a stored secret is never sent to a changed URL
    # No user:password@ before the host: credentials go in the method's secret fields.
    "pattern": "^https?://[^\\s/?#@]+([/?#][^\\s]*)?$",
    "x-pattern-message": "Enter a full address starting with https:// (or http://), with no "
    "spaces and no user name or password in it.",
}


def _schema(**secret_and_other_fields: dict[str, Any]) -> dict[str, Any]:
    properties = {"url": URL_FIELD, **secret_and_other_fields}
    return {
        "type": "object",
        "required": list(properties),
        "additionalProperties": False,
        "x-order": list(properties),
        "properties": properties,
    }


AUTH_METHODS = (
    AuthMethod(
        "bearer", "Bearer token", kind="api_key",
        schema=_schema(token={
            "type": "string", "title": "Token", "writeOnly": True, "minLength": 1,
            "description": "Sent with every request as 'Authorization: Bearer <token>'.",
        }),
        help="The endpoint checks a token it gave you.",
    ),
    AuthMethod(
        "basic", "Username and password", kind="basic",
        schema=_schema(
            username={"type": "string", "title": "Username", "minLength": 1},
            password={
                "type": "string", "title": "Password", "writeOnly": True, "minLength": 1,
                "description": "Sent with every request by HTTP basic authentication.",
            },
        ),
        help="The endpoint asks for HTTP basic authentication.",
    ),
    AuthMethod(
        "hmac", "Signed requests (HMAC-SHA256)", kind="key_secret",
        schema=_schema(
            key_id={
                "type": "string", "title": "Key ID", "minLength": 1,
                "description": "Sent as the X-Portal-Key-Id header, so the endpoint knows "
                "which secret to check the signature with.",
            },
            secret={
                "type": "string", "title": "Signing secret", "writeOnly": True,
                "minLength": 8,
                "description": "Shared with the endpoint; never sent. Each request carries "
                "X-Portal-Timestamp and X-Portal-Signature: sha256=<hex HMAC-SHA256 of "
                "'<timestamp>.<body>'>.",
            },
        ),
        help="The endpoint checks a signature of each request made with a shared secret.",
    ),
    AuthMethod(
        "open", "URL only, unsigned", kind="none",
        schema=_schema(),
        help="Anyone who knows the URL can post to it; use only for endpoints that check "
        "nothing else or sit on a private network.",
    ),
)
METHOD_KEYS = tuple(method.key for method in AUTH_METHODS)


def _host(url: str) -> str:
    parts = urlsplit(url)
    host = parts.hostname or "?"
    return f"{host}:{parts.port}" if parts.port else host


def _url(credentials: dict[str, Any]) -> str:
    url = str(credentials.get("url") or "").strip()
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(
            "The connection's endpoint URL must start with http:// or https:// and name a "
            "host; edit the connection.",
            code="bad_url",
        )
    return url


def _field(credentials: dict[str, Any], name: str, label: str) -> str:
    value = credentials.get(name)
    if not isinstance(value, str) or not value:
        raise ConfigError(
            f"The connection has no {label}; edit the connection and enter it.",
            code="missing_credentials",
        )
    return value


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """The X-Portal-Signature value for a body sent at `timestamp`."""
    digest = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + digest.hexdigest()


def _auth_headers(
    method_key: str, credentials: dict[str, Any], body: bytes
) -> tuple[dict[str, str], list[str]]:
    """Headers that authorize one request, and the secrets to keep out of messages."""
    if method_key == "bearer":
        token = _field(credentials, "token", "token")
        return {"Authorization": f"Bearer {token}"}, [token]
    if method_key == "basic":
        username = _field(credentials, "username", "username")
        password = _field(credentials, "password", "password")
        pair = base64.b64encode(f"{username}:{password}".encode()).decode()
        return {"Authorization": f"Basic {pair}"}, [password]
    if method_key == "hmac":
        key_id = _field(credentials, "key_id", "key ID")
        secret = _field(credentials, "secret", "signing secret")
        timestamp = str(int(time.time()))
        return {
            "X-Portal-Key-Id": key_id,
            "X-Portal-Timestamp": timestamp,
            "X-Portal-Signature": sign(secret, timestamp, body),
        }, [secret]
    if method_key == "open":
        return {}, []
    raise ConfigError(f"The webhook has no authorization method {method_key!r}.")


def post(
    method_key: str,
    credentials: dict[str, Any],
    document: dict[str, Any],
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    """POST a JSON document to the connection's URL, authorized by its method."""
    url = _url(credentials)
    body = json.dumps(document, separators=(",", ":"), ensure_ascii=False, default=str).encode()
    auth, secrets = _auth_headers(method_key, credentials, body)
    return http_call(
        "POST", url, content=body,
        headers={"Content-Type": "application/json", **(headers or {}), **auth},
        service=f"the endpoint at {_host(url)}",
        secrets=secrets,
        auth_hint="Check the connection's credentials against what the endpoint expects.",
    )


def check(method_key: str, credentials: dict[str, Any]) -> str:
    """Test connection: POST a ping."""
    if method_key not in METHOD_KEYS:
        raise ConfigError(f"The webhook has no authorization method {method_key!r}.")
    sent_at = datetime.now(UTC).isoformat(timespec="seconds")
    response = post(method_key, credentials, {"type": "ping", "sent_at": sent_at})
    return f"Endpoint answered {response.status_code}"


def _iso(moment: datetime) -> str:
    moment = moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    return moment.isoformat()


def _message(message: InMessage) -> dict[str, Any]:
    return {"id": message.id, "event_time": _iso(message.event_time), "payload": message.payload}


def run_send_stream(ctx: RunContext) -> WorkResult:
    """One unit: POST the next batch of the stream; the cursor moves past it on a 2xx."""
    stream = ctx.config["stream"]
    size = max(1, min(int(ctx.config.get("batch_size") or DEFAULT_BATCH), MAX_BATCH))
    cursor = dict(ctx.cursor or {})
    after_id = int(cursor.get("after_id", 0))
    batch = ctx.source.messages(stream, after_id=after_id, limit=size)
    if not batch:
        cursor["after_id"] = after_id
        return WorkResult(cursor=cursor, message=f"Nothing new in stream '{stream}'")
    credentials = ctx.credentials or {}
    first, last = batch[0].id, batch[-1].id
    response = post(
        ctx.auth_method, credentials,
        {"stream": stream, "messages": [_message(message) for message in batch]},
        headers={"Idempotency-Key": f"{stream}:{first}-{last}"},
    )
    cursor.update(after_id=last, sent=int(cursor.get("sent", 0)) + len(batch))
    return WorkResult(
        added=len(batch), cursor=cursor, more_now=len(batch) == size,
        message=f"Sent {len(batch):,} message{'s' if len(batch) != 1 else ''} of stream "
        f"'{stream}' (ids {first}–{last}) to "
        f"{_host(_url(credentials))}; it answered {response.status_code}",
    )


def _events(changes: AudienceChanges, identifier: str, at: str) -> list[dict[str, Any]]:
    """The changes as events: who exited (by the identifier the endpoint knew them by),
    then who entered, with their fields."""
    exited = [{"event": "exited", "audience": changes.audience,
               identifier: member.identifier, "profile_id": member.profile_id, "at": at}
              for member in changes.removed]
    entered = [{"event": "entered", "audience": changes.audience,
                identifier: member.identifier, "profile_id": member.profile_id, "at": at,
                "fields": member.fields} for member in changes.added]
    return exited + entered


def run_send_audience(ctx: RunContext) -> WorkResult:
    """One unit: compare the next window of the audience with what this job last sent and
    POST the changes (none: no request); the window is recorded as sent on a 2xx."""
    audience = ctx.config["audience"]
    identifier = ctx.config.get("identifier") or DEFAULT_IDENTIFIER
    size = max(1, min(int(ctx.config.get("batch_size") or DEFAULT_BATCH), MAX_BATCH))
    cursor = dict(ctx.cursor or {})
    after = int(cursor.get("after_profile_id", 0))
    changes = ctx.source.audience_changes(audience, identifier=identifier,
                                          after_profile_id=after, limit=size)
    # A finished pass starts the next run from the first member again.
    cursor["after_profile_id"] = 0 if changes.complete else changes.through
    result = WorkResult(added=len(changes.added), removed=len(changes.removed),
                        omitted=changes.omitted, cursor=cursor,
                        more_now=not changes.complete)
    counts = (f"{len(changes.added):,} added, {len(changes.removed):,} removed, "
              f"{changes.omitted:,} omitted (no {identifier})")
    if not changes.added and not changes.removed:
        result.message = (f"Audience '{audience}': no change to send for profiles "
                          f"{after + 1}–{changes.through}; {changes.omitted:,} omitted "
                          f"(no {identifier})")
        return result
    credentials = ctx.credentials or {}
    if ctx.config.get("format") == "events":
        document: Any = _events(changes, identifier, _iso(ctx.now()))
        # The key leaves out the time of sending: a retry of the same changes keeps it.
        keyed: Any = [{k: v for k, v in event.items() if k != "at"} for event in document]
    else:
        document = keyed = {
            "audience": changes.audience, "identifier": identifier,
            "added": [{"profile_id": member.profile_id, identifier: member.identifier,
                       "fields": member.fields} for member in changes.added],
            "removed": [{"profile_id": member.profile_id, identifier: member.identifier}
                        for member in changes.removed],
        }
    # The same changes sent again (a retry after a timeout) carry the same key.
    digest = hashlib.sha256(json.dumps(keyed, sort_keys=True, default=str).encode())
    response = post(ctx.auth_method, credentials, document,
                    headers={"Idempotency-Key": f"{audience}:{digest.hexdigest()[:32]}"})
    ctx.source.audience_sent(changes)
    result.message = (f"Audience '{audience}': {counts}; sent to "
                      f"{_host(_url(credentials))}, it answered {response.status_code}")
    return result


# -- Enrichment ------------------------------------------------------------------------------

DEFAULT_ENRICH_STREAM = "enrichment"


class BadAnswer(ProviderError):
    """The endpoint answered 2xx with something that is not an enrichment answer; it will
    not get better by asking again, so the job stops and says what was wrong."""

    code = "bad_answer"
    retryable = False


def _digest(*parts: Any) -> str:
    text = json.dumps(parts, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:40]


def _answer_time(value: Any, where: str) -> datetime:
    if not isinstance(value, str):
        raise BadAnswer(f"{where} has an 'at' that is not an ISO 8601 time text.")
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise BadAnswer(f"{where} has an 'at' that is not an ISO 8601 time "
                        f"({value[:40]!r}).") from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def read_enrichment(response: httpx.Response, identifier: str, sent: list[str],
                    host: str) -> list[tuple[str, dict[str, Any], datetime | None]]:
    """The endpoint's answer as (identifier value, attributes, time or None) per profile;
    BadAnswer names what is wrong with an answer that is not one."""
    service = f"The endpoint at {host}"
    try:
        answer = response.json()
    except ValueError:
        raise BadAnswer(f"{service} answered {response.status_code} with a body that is not "
                        "JSON; it must answer {\"profiles\": [...]}.") from None
    if not isinstance(answer, dict) or not isinstance(answer.get("profiles"), list):
        raise BadAnswer(f"{service} answered JSON of the wrong shape: it must be an object "
                        "with a 'profiles' list.")
    profiles = answer["profiles"]
    if len(profiles) > len(sent):
        raise BadAnswer(f"{service} answered with too many profiles: {len(profiles):,} for "
                        f"the {len(sent):,} sent.")
    asked = set(sent)
    found: list[tuple[str, dict[str, Any], datetime | None]] = []
    seen: set[str] = set()
    unknown = 0
    for number, item in enumerate(profiles, start=1):
        where = f"Profile {number} of the answer from {host}"
        if not isinstance(item, dict):
            raise BadAnswer(f"{where} is not an object.")
        value = item.get(identifier)
        if not isinstance(value, str):
            raise BadAnswer(f"{where} has no '{identifier}' text naming whom it enriches.")
        if value not in asked:
            unknown += 1
            continue
        if value in seen:
            raise BadAnswer(f"{where} names a profile the answer already enriched.")
        seen.add(value)
        attributes = item.get("attributes")
        if not isinstance(attributes, dict):
            raise BadAnswer(f"{where} has no 'attributes' object.")
        if identifier in attributes and attributes[identifier] != value:
            raise BadAnswer(f"{where} changes the '{identifier}' it was asked about.")
        at = _answer_time(item["at"], where) if item.get("at") is not None else None
        found.append((value, {k: v for k, v in attributes.items() if k != identifier}, at))
    if unknown:
        raise BadAnswer(f"{service} answered about {unknown:,} profile"
                        f"{'s' if unknown != 1 else ''} with an unknown '{identifier}' (one "
                        "that was not sent in the request).")
    return found


def run_enrich(ctx: RunContext) -> WorkResult:
    """One unit: POST the next window of the audience's members, write what the endpoint
    answers about them to the stream (profiles take the attributes from there)."""
    audience = ctx.config["audience"]
    identifier = ctx.config.get("identifier") or DEFAULT_IDENTIFIER
    stream = ctx.config.get("stream") or DEFAULT_ENRICH_STREAM
    size = max(1, min(int(ctx.config.get("batch_size") or DEFAULT_BATCH), MAX_BATCH))
    cursor = dict(ctx.cursor or {})
    after = int(cursor.get("after_profile_id", 0))
    page = ctx.source.audience_members(audience, identifier=identifier,
                                       after_profile_id=after, limit=size)
    # A full pass ends the run; the next run starts from the first member again.
    cursor["after_profile_id"] = 0 if page.complete else page.through
    result = WorkResult(omitted=page.omitted, cursor=cursor, more_now=not page.complete)
    span = f"profiles {after + 1}–{page.through}"
    if not page.members:
        result.message = (f"Audience '{audience}': nobody to enrich in {span}; "
                          f"{page.omitted:,} omitted (no {identifier})")
        return result
    credentials = ctx.credentials or {}
    host = _host(_url(credentials))
    document = {"profiles": [{identifier: member.identifier, "fields": member.fields}
                             for member in page.members]}
    response = post(ctx.auth_method, credentials, document,
                    headers={"Idempotency-Key": f"{audience}:enrich:{_digest(document)[:32]}"})
    answered = read_enrichment(response, identifier,
                               [member.identifier for member in page.members], host)
    fields = {member.identifier: member.fields for member in page.members}
    now = ctx.now()
    messages: list[OutMessage] = []
    unchanged = 0
    for value, attributes, at in answered:
        held = fields[value]
        if all(name in held and held[name] == new for name, new in attributes.items()):
            unchanged += 1  # the profile holds these values already: nothing to write
            continue
        # The key names the values the profile held too, so an attribute that goes back
        # to an earlier value (A, B, then A again) is written again, while an answer
        # that repeats itself is not.
        before = {name: held.get(name) for name in attributes}
        messages.append(OutMessage(
            f"enrich:{_digest(identifier, value, attributes, before)}", at or now,
            {identifier: value, **attributes}))
    written, duplicates = ctx.sink.write(stream, messages) if messages else (0, 0)
    result.added = written
    result.message = (
        f"Audience '{audience}': sent {len(page.members):,} member"
        f"{'s' if len(page.members) != 1 else ''} ({span}) to {host}; "
        f"{len(answered):,} enriched, {written:,} written to stream '{stream}', "
        f"{unchanged + duplicates:,} unchanged, {page.omitted:,} omitted (no {identifier})")
    return result


DEFAULT_IDENTIFIER = "email"
FORMATS = ("changes", "events")
SEND_AUDIENCE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["audience"],
    "additionalProperties": False,
    "x-order": ["audience", "identifier", "format", "batch_size"],
    "properties": {
        "audience": audience_field("Who is sent: each run sends the members who joined since the "
                                   "last run and those who left."),
        "identifier": {
            "type": "string",
            "title": "Identifier field",
            "description": "The profile field the endpoint knows people by. Members "
            "without it are omitted (counted, not sent).",
            "pattern": "^[^\\s]{1,255}$",
            "x-pattern-message": "Enter a field name, without spaces.",
            "default": DEFAULT_IDENTIFIER,
        },
        "format": {
            "type": "string",
            "title": "Request body",
            "description": "changes: one document per request with the lists of members "
            "added and removed; events: a JSON array with one 'entered' or 'exited' event "
            "per member.",
            "enum": list(FORMATS),
            "x-enum-labels": ["Changes: lists of members added and removed",
                              "Events: one 'entered' or 'exited' event per member"],
            "default": "changes",
        },
        "batch_size": {
            "type": "integer",
            "title": "Members per request",
            "description": "At most this many members are compared, and their changes "
            "sent, in one POST (1–1,000).",
            "minimum": 1,
            "maximum": MAX_BATCH,
            "default": DEFAULT_BATCH,
        },
    },
}

ENRICH_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["audience"],
    "additionalProperties": False,
    "x-order": ["audience", "identifier", "batch_size", "stream"],
    "properties": {
        "audience": audience_field("Whose profiles are enriched: each run sends every member, a "
                                   "batch at a time, with their fields."),
        "identifier": {
            "type": "string",
            "title": "Identifier field",
            "description": "The profile field the endpoint knows people by, and answers "
            "with. Members without it are omitted (counted, not sent).",
            "pattern": "^[^\\s]{1,255}$",
            "x-pattern-message": "Enter a field name, without spaces.",
            "default": DEFAULT_IDENTIFIER,
        },
        "batch_size": {
            "type": "integer",
            "title": "Profiles per request",
            "description": "At most this many profiles go in one POST (1–1,000); the "
            "endpoint may answer about as many, no more.",
            "minimum": 1,
            "maximum": MAX_BATCH,
            "default": DEFAULT_BATCH,
        },
        "stream": {
            "type": "string",
            "title": "Results stream",
            "description": "The stream the answers land in, one message per enriched "
            "profile; profiles take the attributes from it (newest wins).",
            "pattern": STREAM_PATTERN,
            "default": DEFAULT_ENRICH_STREAM,
        },
    },
}

SEND_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["stream"],
    "additionalProperties": False,
    "x-order": ["stream", "batch_size"],
    "properties": {
        "stream": {
            "type": "string",
            "title": "Stream",
            "description": "The stream whose messages are sent, oldest first; each message "
            "is sent once, then the next run starts after it.",
            "pattern": STREAM_PATTERN,
            "x-options": "streams",
        },
        "batch_size": {
            "type": "integer",
            "title": "Messages per request",
            "description": "At most this many messages go in one POST (1–1,000). Lower it if "
            "the endpoint rejects large requests.",
            "minimum": 1,
            "maximum": MAX_BATCH,
            "default": DEFAULT_BATCH,
        },
    },
}

PROVIDER = Provider(
    key="webhook",
    name="Webhook",
    category="Developer tools",
    description="POST the messages of a stream as JSON to an HTTPS endpoint of your own.",
    logo="webhook.svg",
    auth_methods=AUTH_METHODS,
    job_types=(
        JobType(
            key="send_stream",
            name="Send stream to webhook",
            kind="export",
            description="Sends each new message of a stream to your endpoint, in batches of "
            "JSON, oldest first; a batch the endpoint does not accept is sent again later.",
            config_schema=SEND_SCHEMA,
            run=run_send_stream,
            default_cadence="Every 15 minutes",
            default_schedule={"kind": "interval", "every_minutes": 15},
            recurring=True,
        ),
        JobType(
            key="send_audience",
            name="Send audience to webhook",
            kind="export",
            description="Keeps your endpoint's copy of an audience up to date: each run "
            "POSTs the members who joined (with their fields) and those who left since the "
            "last run, in batches of JSON.",
            config_schema=SEND_AUDIENCE_SCHEMA,
            run=run_send_audience,
            default_cadence="Every hour",
            default_schedule={"kind": "interval", "every_minutes": 60},
            recurring=True,
        ),
        JobType(
            key="enrich",
            name="Enrich profiles",
            kind="enrichment",
            description="Sends an audience's members, with their fields, to your endpoint "
            "and writes the attributes it answers with to a stream, where the profiles "
            "take them from.",
            config_schema=ENRICH_SCHEMA,
            run=run_enrich,
            default_cadence="Every 24 hours",
            default_schedule={"kind": "interval", "every_minutes": 1440},
            recurring=True,
        ),
    ),
    check=check,
)
