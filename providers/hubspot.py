"""HubSpot: import contacts incrementally, and keep a static list in step with an audience.

Every call goes through providers/http.py's `http_call` (httpx over the outbound policy's
transport: checked after DNS resolution, connected to as checked). The base URL is
https://api.hubapi.com unless PORTAL_HUBSPOT_API_URL says otherwise (read at call time).

Import ("Import contacts"): POST /crm/v3/objects/contacts/search allows one sort and
refuses to page past 10,000 results, and its `after` token is an offset (a contact that
changes mid-pass shifts the others, so offset paging can skip one). So every request
starts a fresh window instead of paging: the cursor is (time, id) and a unit asks for
  - ties: lastmodifieddate EQ time and hs_object_id GT id, sorted by hs_object_id;
  - then forward: lastmodifieddate GT time, sorted by lastmodifieddate,
100 at a time. A full forward page is written up to its last timestamp (exclusive); the
contacts at that timestamp are read as ties, by id, so none is lost or read twice, and no
window ever reaches the 10,000 cap.

Export ("Export audience to list"): upserts added members by email
(POST /crm/v3/objects/contacts/batch/upsert), adds their ids to a static list
(PUT /crm/v3/lists/{listId}/memberships/add); removed members are looked up by email
(POST /crm/v3/objects/contacts/batch/read) and taken off (.../memberships/remove).

Errors: 429 -> RateLimited (Retry-After, else X-HubSpot-RateLimit-Interval-Milliseconds);
401/403 -> AuthError (an OAuth token is renewed by the Vault before it expires); a 400
validation error -> ConfigError naming the contact (by the email we sent) and property
(of those we sent): nothing else of HubSpot's reply is repeated.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Generator, Iterable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import httpx

from providers.base import (
    AuthError,
    AuthMethod,
    ConfigError,
    JobType,
    OAuthSpec,
    OutMessage,
    Provider,
    ProviderError,
    RateLimited,
    RunContext,
    WorkResult,
    audience_field,
)
from providers.files import STREAM_PATTERN
from providers.http import http_call

API_URL_ENV = "PORTAL_HUBSPOT_API_URL"
DEFAULT_API_URL = "https://api.hubapi.com"
PAGE = 100  # the search API's and the batch APIs' largest page
CONTACTS = "0-1"  # HubSpot's object type id for contacts
DEFAULT_PROPERTIES = ("email", "firstname", "lastname", "lifecyclestage")
ALWAYS = ("email", "lastmodifieddate", "hs_object_id")
PROPERTY_PATTERN = r"^[a-z0-9_]{1,100}$"

TOKEN_HINT = ("Check the private app's access token (Settings > Integrations > Private "
              "Apps); it may have been rotated or lack the CRM contact and list scopes.")
OAUTH_HINT = "Sign in with HubSpot again; the access may have been revoked."


def api_base() -> str:
    return (os.environ.get(API_URL_ENV, "").strip() or DEFAULT_API_URL).rstrip("/")


class _Bearer(httpx.Auth):
    """Adds the token, and keeps a 400's JSON and a 429's rate-limit headers, which
    http_call does not hand back (it raises on them)."""

    requires_response_body = True

    def __init__(self, token: str):
        self.token = token
        self.rejected: dict[str, Any] | None = None
        self.limit_headers: dict[str, str] = {}

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response,
                                                               None]:
        request.headers["Authorization"] = f"Bearer {self.token}"
        response = yield request
        if response.status_code == 400:
            try:
                body = response.json()
            except ValueError:
                body = None
            self.rejected = body if isinstance(body, dict) else None
        elif response.status_code == 429:
            self.limit_headers = {name.lower(): value for name, value in response.headers.items()
                                  if name.lower().startswith("x-hubspot-ratelimit")
                                  or name.lower() == "retry-after"}


def _token(credentials: dict[str, Any]) -> tuple[str, str]:
    token = str(credentials.get("access_token") or "").strip()
    if not token:
        raise AuthError("The HubSpot connection has no access token; connect HubSpot again.")
    oauth = credentials.get("refresh_token") or credentials.get("token_type")
    return token, OAUTH_HINT if oauth else TOKEN_HINT


def _mentioned(rejected: dict[str, Any], ours: Iterable[str]) -> list[str]:
    """Which of the values we sent (emails, property names) HubSpot's error names."""
    text = json.dumps(rejected).lower()
    return sorted({value for value in ours if value and value.lower() in text})


def api(credentials: dict[str, Any], method: str, path: str, *, json_body: Any = None,
        params: dict[str, Any] | None = None, not_found: str | None = None,
        contacts: Iterable[str] = (), properties: Iterable[str] = ()) -> Any:
    """One call to the HubSpot API; its JSON answer (None for an empty one). `contacts`
    and `properties`, what the request carries, are what a 400 may be explained by."""
    token, hint = _token(credentials)
    auth = _Bearer(token)
    try:
        response = http_call(method, api_base() + path, service="HubSpot", secrets=[token],
                             auth_hint=hint, not_found=not_found, auth=auth, json=json_body,
                             params=params)
    except RateLimited:
        interval = auth.limit_headers.get("x-hubspot-ratelimit-interval-milliseconds", "")
        if "retry-after" not in auth.limit_headers and interval.isdigit() and \
                int(interval) > 0:
            wait = int(interval) / 1000
            raise RateLimited(f"HubSpot asks us to slow down (HTTP 429); trying again in "
                              f"{wait:.0f} seconds.", retry_after=wait) from None
        raise
    except ProviderError as exc:
        if exc.code != "http_400" or auth.rejected is None:
            raise
        who = _mentioned(auth.rejected, contacts)
        which = _mentioned(auth.rejected, properties)
        category = str(auth.rejected.get("category") or "")
        kind = "validation error" if category == "VALIDATION_ERROR" else "error"
        message = f"HubSpot refused the request (HTTP 400, {kind})"
        if which:
            message += f": property {', '.join(which)}"
        if who:
            message += f" of contact {', '.join(who)}"
        raise ConfigError(message + ". Fix the value in the portal's profiles or the "
                          "HubSpot property, then run the job again.",
                          code="hubspot_validation") from None
    if not response.content:
        return None
    try:
        return response.json()
    except ValueError:
        raise ProviderError("HubSpot answered with something other than JSON.",
                            code="bad_response") from None


def check(method_key: str, credentials: dict[str, Any]) -> str:
    """Test connection: read one contact (a cheap call that needs the contacts scope)."""
    if method_key not in ("oauth2", "private_app"):
        raise ConfigError(f"HubSpot has no authorization method {method_key!r}.")
    api(credentials, "GET", "/crm/v3/objects/contacts", params={"limit": 1})
    where = credentials.get("hub_domain") or credentials.get("hub_id")
    return f"Connected to HubSpot{f' account {where}' if where else ''}; contacts readable"


def authorized(method_key: str, token: dict[str, Any]) -> dict[str, Any]:
    """After the OAuth grant: the account (hub) the token belongs to."""
    if method_key != "oauth2":
        return {}
    access_token = str(token.get("access_token") or "")
    if not access_token:
        raise AuthError(f"HubSpot sent no access token. {OAUTH_HINT}")
    info = api({"access_token": access_token, "token_type": "bearer"}, "GET",
               f"/oauth/v1/access-tokens/{quote(access_token, safe='')}")
    if not isinstance(info, dict):
        return {}
    return {"hub_id": str(info.get("hub_id") or ""), "hub_domain": str(info.get("hub_domain")
                                                                        or "")}


# -- Import -------------------------------------------------------------------------------


def parse_time(value: Any) -> datetime | None:
    """A HubSpot timestamp (ISO 8601, or milliseconds since the epoch) as aware UTC."""
    if isinstance(value, str) and value.strip().isdigit():
        return datetime.fromtimestamp(int(value.strip()) / 1000, UTC)
    if not isinstance(value, str) or not value.strip():
        return None
    try:
        moment = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _ms(moment: datetime) -> int:
    return int(round(moment.timestamp() * 1000))


def _properties(config: dict[str, Any]) -> list[str]:
    chosen = config.get("properties") or list(DEFAULT_PROPERTIES)
    if isinstance(chosen, str):
        chosen = [part.strip() for part in chosen.split(",")]
    names = [str(name).strip().lower() for name in chosen if str(name).strip()]
    bad = [name for name in names if not re.fullmatch(PROPERTY_PATTERN, name)]
    if bad:
        raise ConfigError(f"Not a HubSpot property name: {bad[0]!r} (internal names are "
                          "lower-case letters, digits and _).")
    return list(dict.fromkeys([*names, *ALWAYS]))


def _search(ctx: RunContext, filters: list[dict[str, Any]], sort: str,
            properties: list[str], limit: int) -> list[dict[str, Any]]:
    body = {"filterGroups": [{"filters": filters}] if filters else [],
            "sorts": [{"propertyName": sort, "direction": "ASCENDING"}],
            "properties": properties, "limit": limit}
    answer = api(ctx.credentials or {}, "POST", "/crm/v3/objects/contacts/search",
                 json_body=body, properties=properties)
    results = answer.get("results") if isinstance(answer, dict) else None
    return [item for item in results or [] if isinstance(item, dict) and item.get("id")]


def _contact_time(contact: dict[str, Any]) -> datetime | None:
    props = contact.get("properties") or {}
    return parse_time(props.get("lastmodifieddate")) or parse_time(contact.get("updatedAt"))


def _message(contact: dict[str, Any], properties: list[str], now: datetime) -> OutMessage:
    props = contact.get("properties") or {}
    updated = str(contact.get("updatedAt") or props.get("lastmodifieddate") or "")
    payload = {name: props.get(name) for name in properties
               if name not in ("lastmodifieddate", "hs_object_id")}
    payload.update(id=str(contact["id"]), updated_at=updated or None)
    return OutMessage(dedupe_key=f"{contact['id']}:{updated}",
                      event_time=_contact_time(contact) or now, payload=payload)


def run_import_contacts(ctx: RunContext) -> WorkResult:
    """One unit: the next (up to) 100 contacts changed since the cursor."""
    stream = ctx.config.get("stream") or "hubspot_contacts"
    properties = _properties(ctx.config)
    limit = max(1, min(int(ctx.batch_size or PAGE), PAGE))
    cursor = dict(ctx.cursor or {})
    time_ms = cursor.get("time_ms")
    after_id = int(cursor.get("after_id", 0))
    ties = time_ms is not None and cursor.get("phase", "ties") == "ties"
    if ties:
        contacts = _search(ctx, [
            {"propertyName": "lastmodifieddate", "operator": "EQ", "value": str(time_ms)},
            {"propertyName": "hs_object_id", "operator": "GT", "value": str(after_id)},
        ], "hs_object_id", properties, limit)
        keep = contacts
        if len(contacts) == limit:
            cursor["after_id"] = max(int(c["id"]) for c in contacts)
        else:
            cursor["phase"] = "forward"
            if contacts:
                cursor["after_id"] = max(int(c["id"]) for c in contacts)
        more = True  # more ties, or the forward window, now
    else:
        filters = [] if time_ms is None else [
            {"propertyName": "lastmodifieddate", "operator": "GT", "value": str(time_ms)}]
        contacts = _search(ctx, filters, "lastmodifieddate", properties, limit)
        stamped = [(_contact_time(c), c) for c in contacts]
        missing = [c["id"] for moment, c in stamped if moment is None]
        if missing:
            raise ProviderError(f"HubSpot sent contact {missing[0]} without a "
                                "lastmodifieddate.", code="bad_response")
        newest = max((_ms(moment) for moment, _ in stamped), default=None)
        if len(contacts) == limit:
            # The page ends inside `newest`'s contacts: they are read next, by id.
            keep = [c for moment, c in stamped if _ms(moment) < newest]
            cursor.update(time_ms=newest, after_id=0, phase="ties")
            more = True
        else:
            keep = contacts
            if newest is not None:
                cursor.update(time_ms=newest, phase="ties", after_id=max(
                    int(c["id"]) for moment, c in stamped if _ms(moment) == newest))
            else:
                cursor["phase"] = "ties"
            cursor["passes"] = int(cursor.get("passes", 0)) + 1
            more = False
    now = ctx.now()
    batch = [_message(contact, properties, now) for contact in keep]
    added, omitted = ctx.sink.write(stream, batch) if batch else (0, 0)
    since = cursor.get("time_ms")
    when = datetime.fromtimestamp(int(since) / 1000, UTC).isoformat() if since else "the start"
    message = (f"Imported {added:,} changed contact{'s' if added != 1 else ''} of HubSpot "
               f"into '{stream}' (through {when})")
    if omitted:
        message += f"; {omitted:,} already imported skipped"
    return WorkResult(added=added, omitted=omitted, cursor=cursor, more_now=more, done=False,
                      message=message)


# -- Export -------------------------------------------------------------------------------


def lists(credentials: dict[str, Any]) -> list[tuple[str, str]]:
    """The account's static (manual) contact lists, as (id, name) menu choices."""
    choices: list[tuple[str, str]] = []
    offset = 0
    for _ in range(10):  # up to 1,000 lists in the menu
        answer = api(credentials, "POST", "/crm/v3/lists/search", json_body={
            "query": "", "processingTypes": ["MANUAL"], "count": PAGE, "offset": offset})
        if not isinstance(answer, dict):
            break
        for item in answer.get("lists") or []:
            if isinstance(item, dict) and item.get("listId") and \
                    str(item.get("objectTypeId") or CONTACTS) == CONTACTS:
                choices.append((str(item["listId"]),
                                f"{item.get('name') or item['listId']} ({item['listId']})"))
        if not answer.get("hasMore"):
            break
        offset = int(answer.get("offset") or offset + PAGE)
    return choices


def _list_id(ctx: RunContext, cursor: dict[str, Any]) -> str:
    """The configured list, or the one named `list_name` (found, else created)."""
    configured = str(ctx.config.get("list_id") or "").strip()
    if configured:
        return configured
    if cursor.get("list_id"):
        return str(cursor["list_id"])
    name = str(ctx.config.get("list_name") or "").strip()
    if not name:
        raise ConfigError("Choose a HubSpot list, or give the name of one to create.")
    credentials = ctx.credentials or {}
    found = api(credentials, "POST", "/crm/v3/lists/search", json_body={
        "query": name, "processingTypes": ["MANUAL"], "count": PAGE, "offset": 0})
    for item in (found or {}).get("lists") or []:
        if isinstance(item, dict) and item.get("name") == name and item.get("listId"):
            return str(item["listId"])
    created = api(credentials, "POST", "/crm/v3/lists", json_body={
        "name": name, "objectTypeId": CONTACTS, "processingType": "MANUAL"})
    list_id = ((created or {}).get("list") or {}).get("listId")
    if not list_id:
        raise ProviderError("HubSpot did not say which list it created.", code="bad_response")
    ctx.log(f"Created the HubSpot list '{name}' ({list_id})")
    return str(list_id)


def _copied(config: dict[str, Any]) -> list[str]:
    raw = config.get("properties")
    names = [part.strip() for part in str(raw).split(",")] if raw else ["firstname",
                                                                         "lastname"]
    return [name for name in names if name and name != "email"]


def _ids(answer: Any) -> dict[str, str]:
    """email (lower-case) -> contact id, from a batch answer."""
    found = {}
    for item in (answer or {}).get("results") or []:
        if isinstance(item, dict) and item.get("id"):
            email = str((item.get("properties") or {}).get("email") or "").lower()
            if email:
                found[email] = str(item["id"])
    return found


def run_export_list(ctx: RunContext) -> WorkResult:
    """One unit: the next window of the audience's changes, applied to the list."""
    audience = ctx.config["audience"]
    size = max(1, min(int(ctx.config.get("batch_size") or PAGE), PAGE))
    cursor = dict(ctx.cursor or {})
    list_id = _list_id(ctx, cursor)
    if not ctx.config.get("list_id"):
        cursor["list_id"] = list_id
    after = int(cursor.get("after_profile_id", 0))
    changes = ctx.source.audience_changes(audience, identifier="email",
                                          after_profile_id=after, limit=size)
    credentials = ctx.credentials or {}
    copied = _copied(ctx.config)
    path = f"/crm/v3/lists/{quote(list_id, safe='')}/memberships"
    missing = f"HubSpot has no list with the ID {list_id!r}; choose the list again."
    if changes.added:
        inputs = []
        for member in changes.added:
            props = {"email": member.identifier}
            props.update({name: str(member.fields[name]) for name in copied
                          if member.fields.get(name) not in (None, "")})
            inputs.append({"idProperty": "email", "id": member.identifier,
                           "properties": props})
        upserted = api(credentials, "POST", "/crm/v3/objects/contacts/batch/upsert",
                       json_body={"inputs": inputs},
                       contacts=[m.identifier for m in changes.added],
                       properties=["email", *copied])
        if isinstance(upserted, dict) and upserted.get("errors"):  # 207: some refused
            refused = {"errors": upserted["errors"]}
            who = _mentioned(refused, [m.identifier for m in changes.added])
            which = _mentioned(refused, ["email", *copied])
            raise ConfigError(
                "HubSpot refused some contacts" + (f": property {', '.join(which)}"
                                                   if which else "")
                + (f" of contact {', '.join(who)}" if who else "") + ". Fix the value in "
                "the portal's profiles or the HubSpot property, then run the job again.",
                code="hubspot_validation")
        ids = _ids(upserted)
        api(credentials, "PUT", f"{path}/add", json_body=sorted(set(ids.values())),
            not_found=missing)
    if changes.removed:
        read = api(credentials, "POST", "/crm/v3/objects/contacts/batch/read", json_body={
            "idProperty": "email", "properties": ["email"],
            "inputs": [{"id": member.identifier} for member in changes.removed]})
        ids = _ids(read)
        if ids:
            api(credentials, "PUT", f"{path}/remove", json_body=sorted(set(ids.values())),
                not_found=missing)
    ctx.source.audience_sent(changes)
    cursor["after_profile_id"] = 0 if changes.complete else changes.through
    return WorkResult(
        added=len(changes.added), removed=len(changes.removed), omitted=changes.omitted,
        cursor=cursor, more_now=not changes.complete,
        message=f"Audience '{audience}' to HubSpot list {list_id}: {len(changes.added):,} "
        f"added, {len(changes.removed):,} removed, {changes.omitted:,} omitted (no email)")


# -- Definitions --------------------------------------------------------------------------

PRIVATE_APP_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["access_token"],
    "additionalProperties": False,
    "properties": {
        "access_token": {
            "type": "string",
            "title": "Private app access token",
            "writeOnly": True,
            "description": "In HubSpot: Settings > Integrations > Private Apps > your app > "
            "Auth. The app needs the scopes crm.objects.contacts.read/write and "
            "crm.lists.read/write.",
            "pattern": r"^\S{10,500}$",
            "x-pattern-message": "Paste the whole token, without spaces.",
        },
    },
}

IMPORT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["stream"],
    "additionalProperties": False,
    "x-order": ["properties", "stream"],
    "properties": {
        "properties": {
            "type": "string",
            "title": "Contact properties",
            "description": "Internal names of the properties to import, separated by "
            "commas.",
            "pattern": r"^\s*[a-z0-9_]{1,100}(\s*,\s*[a-z0-9_]{1,100})*\s*$",
            "x-pattern-message": "Internal property names (a-z, 0-9, _) separated by commas.",
            "default": ", ".join(DEFAULT_PROPERTIES),
        },
        "stream": {
            "type": "string",
            "title": "Target stream",
            "description": "The stream the contacts land in: lower-case letters, digits, - "
            "and _.",
            "pattern": STREAM_PATTERN,
            "default": "hubspot_contacts",
        },
    },
}

EXPORT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["audience"],
    "additionalProperties": False,
    "x-order": ["audience", "list_id", "list_name", "properties", "batch_size"],
    "properties": {
        "audience": audience_field(
            "Who is in the list: each run adds the members who joined since the last run "
            "and removes those who left (members are matched by email)."),
        "list_id": {
            "type": "string",
            "title": "HubSpot list",
            "description": "A static contact list. Leave empty to use (or create) the list "
            "named below.",
            "pattern": "^[0-9]{0,20}$",
            "x-pattern-message": "A list ID is digits, like 123.",
            "x-options": "provider:lists",
        },
        "list_name": {
            "type": "string",
            "title": "Or a list named",
            "description": "Used when no list is chosen: the static list with this name, "
            "created on the first run if there is none.",
            "maxLength": 200,
        },
        "properties": {
            "type": "string",
            "title": "Profile fields to copy",
            "description": "Profile fields sent as contact properties of the same name, "
            "separated by commas (email is always sent).",
            "pattern": r"^\s*([a-z0-9_]{1,100}(\s*,\s*[a-z0-9_]{1,100})*)?\s*$",
            "x-pattern-message": "Property names (a-z, 0-9, _) separated by commas.",
            "default": "firstname, lastname",
        },
        "batch_size": {
            "type": "integer",
            "title": "Members per batch",
            "description": "Members compared and sent in one batch (1–100, HubSpot's "
            "largest batch).",
            "minimum": 1,
            "maximum": PAGE,
            "default": PAGE,
        },
    },
}

PROVIDER = Provider(
    key="hubspot",
    name="HubSpot",
    category="CRM",
    description="Import HubSpot contacts as they change, and keep a HubSpot list in step "
    "with an audience.",
    logo="hubspot.svg",
    auth_methods=(
        AuthMethod(
            "oauth2", "Sign in with HubSpot (OAuth 2.0)", kind="oauth2",
            oauth=OAuthSpec(
                authorize_url="https://app.hubspot.com/oauth/authorize",
                token_url="https://api.hubapi.com/oauth/v1/token",
                scopes=("crm.objects.contacts.read", "crm.objects.contacts.write",
                        "crm.lists.read", "crm.lists.write"),
                shown=("hub_id", "hub_domain"),
            ),
            help="Sign in to HubSpot and allow the portal to read and write contacts and "
            "lists.",
        ),
        AuthMethod(
            "private_app", "Private app access token", kind="api_key",
            schema=PRIVATE_APP_SCHEMA,
            help="A token of a private app in your HubSpot account.",
        ),
    ),
    job_types=(
        JobType(
            key="import_contacts",
            name="Import contacts",
            kind="import",
            description="Reads every HubSpot contact into a stream, then on each run the "
            "contacts changed since: one message per contact and change.",
            config_schema=IMPORT_SCHEMA,
            run=run_import_contacts,
            default_cadence="Every hour",
            default_schedule={"kind": "interval", "every_minutes": 60},
            recurring=True,
        ),
        JobType(
            key="export_list",
            name="Export audience to list",
            kind="export",
            description="Keeps a static HubSpot list in step with an audience: members "
            "who joined are created or updated as contacts (by email) and added; those who "
            "left are removed from the list.",
            config_schema=EXPORT_SCHEMA,
            run=run_export_list,
            default_cadence="Every hour",
            default_schedule={"kind": "interval", "every_minutes": 60},
            recurring=True,
            option_sources={"lists": lists},
        ),
    ),
    check=check,
    authorized=authorized,
)
