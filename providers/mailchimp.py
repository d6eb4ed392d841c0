"""Mailchimp: import the members of an audience (list) into a stream, then keep up with changes.

Authorization is an API key or OAuth 2.0. An API key ends in its data center (…-us6),
which names the API host (https://us6.api.mailchimp.com/3.0); it is sent as the password
of HTTP basic auth. An OAuth access token is sent as a Bearer token; right after the grant
`authorized()` asks Mailchimp's metadata endpoint for the account's data center, which is
kept with the token.

The import pages through GET /lists/{list_id}/members, newest change first (a member that
changes while a pass is under way moves to the front, so the pages behind it shift towards
us and nothing unread is skipped). The first pass reads every member; each later pass asks
only for members changed since the newest change the passes before saw (minus a second,
in case Mailchimp reads "since" as "strictly after"). A message's dedupe key is list,
member and last change, so rereading an unchanged member writes nothing and every change
becomes a message of its own. Known limit: a member that leaves a status-filtered audience
in the middle of a pass shifts the pages the other way and may hide one unchanged member
until it next changes.

PORTAL_MAILCHIMP_API_URL (an API base such as http://127.0.0.1:5555/3.0) and
PORTAL_MAILCHIMP_METADATA_URL override the hosts; they are read at each call, so tests can
point them at loopback servers.
"""

from __future__ import annotations

import base64
import os
import re
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote, urlsplit

from providers.base import (
    AuthError,
    AuthMethod,
    ConfigError,
    JobType,
    OAuthSpec,
    OutMessage,
    Provider,
    ProviderError,
    RunContext,
    WorkResult,
)
from providers.files import STREAM_PATTERN
from providers.http import http_call

API_URL_ENV = "PORTAL_MAILCHIMP_API_URL"
METADATA_URL_ENV = "PORTAL_MAILCHIMP_METADATA_URL"
METADATA_URL = "https://login.mailchimp.com/oauth2/metadata"
KEY_PATTERN = "^[0-9a-f]{32}-[a-z]+[0-9]+$"
DC_PATTERN = "^[a-z]+[0-9]+$"
MAX_PAGE = 1000  # Mailchimp returns at most 1,000 records a request
STATUSES = ("any", "subscribed", "unsubscribed", "cleaned", "pending")
MEMBER_FIELDS = ",".join([
    "total_items",
    *(f"members.{name}" for name in (
        "id", "email_address", "status", "merge_fields", "tags", "last_changed",
        "timestamp_opt",
    )),
])

KEY_HINT = (
    "Check the API key (in Mailchimp: profile menu > Profile > Extras > API keys); it may "
    "have been revoked."
)
OAUTH_HINT = "Sign in with Mailchimp again; the access may have been revoked."


def datacenter(api_key: str) -> str:
    """The data center an API key belongs to (the part after the dash, e.g. us6)."""
    key = api_key.strip()
    if not re.fullmatch(KEY_PATTERN, key):
        raise ConfigError(
            "That is not a Mailchimp API key: a key is 32 characters of 0-9 and a-f, a dash "
            "and the data center, like …-us6. Copy it again from Profile > Extras > API keys.",
            code="bad_api_key",
        )
    return key.rsplit("-", 1)[1]


def _dc_url(dc: str) -> str:
    return f"https://{dc}.api.mailchimp.com/3.0"


def api_base(credentials: dict[str, Any]) -> str:
    """The API base URL for these credentials (PORTAL_MAILCHIMP_API_URL when set)."""
    override = os.environ.get(API_URL_ENV, "").strip()
    if credentials.get("access_token"):
        dc = str(credentials.get("dc") or urlsplit(
            str(credentials.get("api_endpoint") or "")
        ).hostname or "").split(".")[0]
        if override:
            return override.rstrip("/")
        if not re.fullmatch(DC_PATTERN, dc):
            raise AuthError(
                "The Mailchimp sign-in does not say which data center the account is in. "
                f"{OAUTH_HINT}"
            )
        return _dc_url(dc)
    if credentials.get("api_key"):
        dc = datacenter(str(credentials["api_key"]))
        return override.rstrip("/") if override else _dc_url(dc)
    raise AuthError("The connection has no Mailchimp API key or sign-in; connect Mailchimp again.")


def _auth(credentials: dict[str, Any]) -> tuple[dict[str, Any], list[str], str]:
    """Request arguments that authorize a call, the secrets in them, and the 401 hint."""
    token = credentials.get("access_token")
    if token:
        return {"headers": {"Authorization": f"Bearer {token}"}}, [str(token)], OAUTH_HINT
    key = str(credentials.get("api_key") or "").strip()
    basic = base64.b64encode(f"portal:{key}".encode()).decode()  # any username will do
    return {"headers": {"Authorization": f"Basic {basic}"}}, [key], KEY_HINT


def api_get(
    credentials: dict[str, Any], path: str, *, not_found: str | None = None,
    params: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """GET a path of the Marketing API and return its JSON object."""
    auth, secrets, hint = _auth(credentials)
    response = http_call(
        "GET", api_base(credentials) + path, params=params, service="Mailchimp",
        secrets=secrets, auth_hint=hint, not_found=not_found, **auth,
    )
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        raise ProviderError("Mailchimp answered with something other than a JSON object.",
                            code="bad_response")
    return body


def audiences(credentials: dict[str, Any]) -> list[tuple[str, str]]:
    """The account's audiences as (id, name) choices for the job wizard."""
    body = api_get(credentials, "/lists", params={"count": MAX_PAGE,
                                                  "fields": "lists.id,lists.name"})
    return [(str(item["id"]), f"{item.get('name') or item['id']} ({item['id']})")
            for item in body.get("lists", []) if isinstance(item, dict) and item.get("id")]


def _need_method(method_key: str, credentials: dict[str, Any]) -> None:
    if method_key == "oauth2" and not credentials.get("access_token"):
        raise AuthError(f"The Mailchimp sign-in has no access token. {OAUTH_HINT}")
    if method_key == "api_key" and not credentials.get("api_key"):
        raise ConfigError("Enter the Mailchimp API key.", code="missing_credentials")
    if method_key not in ("api_key", "oauth2"):
        raise ConfigError(f"Mailchimp has no authorization method {method_key!r}.")


def check(method_key: str, credentials: dict[str, Any]) -> str:
    """Test connection: read the API root, which names the account."""
    _need_method(method_key, credentials)
    if method_key == "api_key":  # the key, even if stale token fields came along
        credentials = {"api_key": credentials["api_key"]}
    root = api_get(credentials, "/")
    account = root.get("account_name") or root.get("login_id") or "(unnamed)"
    return f"Connected to Mailchimp account {account}"


def authorized(method_key: str, token: dict[str, Any]) -> dict[str, Any]:
    """After the OAuth grant: the account's data center and API endpoint, from Mailchimp's
    metadata endpoint (PORTAL_MAILCHIMP_METADATA_URL overrides it)."""
    if method_key != "oauth2":
        return {}
    access_token = str(token.get("access_token") or "")
    if not access_token:
        raise AuthError(f"Mailchimp sent no access token. {OAUTH_HINT}")
    url = os.environ.get(METADATA_URL_ENV, "").strip() or METADATA_URL
    response = http_call(
        "GET", url, headers={"Authorization": f"OAuth {access_token}"},
        service="Mailchimp's sign-in service", secrets=[access_token], auth_hint=OAUTH_HINT,
    )
    try:
        metadata = response.json()
    except ValueError:
        metadata = None
    dc = metadata.get("dc") if isinstance(metadata, dict) else None
    if not isinstance(dc, str) or not re.fullmatch(DC_PATTERN, dc):
        raise ProviderError(
            "Mailchimp's sign-in service did not say which data center the account is in; "
            "try signing in again.",
            code="bad_response",
        )
    return {
        "api_endpoint": str(metadata.get("api_endpoint") or f"https://{dc}.api.mailchimp.com"),
        "account": str(metadata.get("accountname") or ""),
        "dc": dc,
    }


def parse_time(value: Any) -> datetime | None:
    """A Mailchimp timestamp (ISO 8601) as an aware UTC datetime; None when empty or bad."""
    if not isinstance(value, str) or not value.strip():
        return None
    try:
        moment = datetime.fromisoformat(value.strip())
    except ValueError:
        return None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _member_message(list_id: str, member: dict[str, Any], now: datetime) -> OutMessage:
    changed = str(member.get("last_changed") or "")
    tags = [tag.get("name") for tag in member.get("tags") or [] if isinstance(tag, dict)]
    return OutMessage(
        dedupe_key=f"{list_id}:{member.get('id')}:{changed}",
        event_time=parse_time(changed) or parse_time(member.get("timestamp_opt")) or now,
        payload={
            "id": member.get("id"),
            "email_address": member.get("email_address"),
            "status": member.get("status"),
            "merge_fields": member.get("merge_fields") or {},
            "tags": tags,
            "last_changed": changed or None,
        },
    )


def run_import_members(ctx: RunContext) -> WorkResult:
    """One unit: read one page of the audience's members and write them to the stream."""
    config = ctx.config
    list_id = str(config["list_id"]).strip()
    stream = config.get("stream") or "mailchimp_members"
    status = config.get("status") or "any"
    cursor = dict(ctx.cursor or {})
    offset = int(cursor.get("offset", 0))
    if offset == 0:  # a new pass: changes since what earlier passes saw
        high_water = parse_time(cursor.get("high_water"))
        since = high_water - timedelta(seconds=1) if high_water else None
        cursor["since"] = since.isoformat(timespec="seconds") if since else None
    count = max(1, min(int(ctx.batch_size), MAX_PAGE))
    params: dict[str, Any] = {
        "count": count, "offset": offset, "sort_field": "last_changed", "sort_dir": "DESC",
        "fields": MEMBER_FIELDS,
    }
    if status != "any":
        params["status"] = status
    if cursor.get("since"):
        params["since_last_changed"] = cursor["since"]

    page = api_get(
        ctx.credentials or {}, f"/lists/{quote(list_id, safe='')}/members", params=params,
        not_found=f"Mailchimp has no audience with the ID {list_id!r} in this account; check "
        "the Audience ID (Audience > Settings > Audience name and defaults).",
    )
    members = [m for m in page.get("members") or [] if isinstance(m, dict)]
    total = int(page.get("total_items") or 0)
    now = ctx.now()
    batch = [_member_message(list_id, member, now) for member in members]
    added, omitted = ctx.sink.write(stream, batch) if batch else (0, 0)

    times = [parse_time(m.get("last_changed")) for m in members]
    times.append(parse_time(cursor.get("high_water")))
    known = [moment for moment in times if moment]
    if known:  # the newest change any pass has seen
        cursor["high_water"] = max(known).isoformat()
    more = bool(members) and len(members) == count and offset + len(members) < total
    if more:
        cursor["offset"] = offset + len(members)
    else:  # the pass is over; the next one starts from the top with a newer "since"
        cursor.update(offset=0, since=None, passes=int(cursor.get("passes", 0)) + 1)

    audience = f"audience {list_id}" + (f" (status {status})" if status != "any" else "")
    incremental = "since_last_changed" in params
    if incremental and not added and not more and offset == 0:
        message = f"No member of {audience} changed since the last run"
    elif not members:
        message = f"No members in {audience}"
    else:
        changed = "changed members" if incremental else "members"
        message = (f"Imported {changed} {offset + 1:,}–{offset + len(members):,} of {total:,} "
                   f"from {audience}")
        if omitted:
            message += (f"; {omitted:,} already imported "
                        f"{'was' if omitted == 1 else 'were'} skipped")
    return WorkResult(added=added, omitted=omitted, cursor=cursor, more_now=more, done=False,
                      message=message)


# No destination field to mark (x-destination): the data center that names the API host
# is part of the key itself, and an OAuth sign-in's data center comes from Mailchimp
# with the token, never from a form.
API_KEY_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["api_key"],
    "additionalProperties": False,
    "properties": {
        "api_key": {
            "type": "string",
            "title": "API key",
            "writeOnly": True,
            "description": "In Mailchimp: profile menu > Profile > Extras > API keys > Create "
            "A Key. It ends in your data center, like …-us6.",
            "pattern": KEY_PATTERN,
            "x-pattern-message": "A Mailchimp API key is 32 characters of 0-9 and a-f, a dash "
            "and the data center, like …-us6.",
        },
    },
}

IMPORT_MEMBERS_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["list_id", "stream"],
    "additionalProperties": False,
    "x-order": ["list_id", "status", "stream"],
    "properties": {
        "list_id": {
            "type": "string",
            "title": "Audience (list) ID",
            "description": "In Mailchimp: Audience > All contacts > Settings > Audience name "
            "and defaults; it looks like a1b2c3d4e5 (not the audience's name).",
            "pattern": "^[A-Za-z0-9]{1,64}$",
            "x-pattern-message": "An Audience ID is letters and digits only, like a1b2c3d4e5.",
            "x-options": "provider:lists",
        },
        "status": {
            "type": "string",
            "title": "Members with status",
            "description": "Import only members with this status, or all of them.",
            "enum": list(STATUSES),
            "x-enum-labels": ["Any status", "Subscribed", "Unsubscribed", "Cleaned", "Pending"],
            "default": "any",
        },
        "stream": {
            "type": "string",
            "title": "Target stream",
            "description": "The stream the members land in: lower-case letters, digits, - "
            "and _.",
            "pattern": STREAM_PATTERN,
            "default": "mailchimp_members",
        },
    },
}

PROVIDER = Provider(
    key="mailchimp",
    name="Mailchimp",
    category="Email marketing",
    description="Import the members of a Mailchimp audience, and every change to them.",
    logo="mailchimp.svg",
    auth_methods=(
        AuthMethod(
            "api_key", "API key", kind="api_key", schema=API_KEY_SCHEMA,
            help="A key of your own Mailchimp account; anyone with it can read the account.",
        ),
        AuthMethod(
            "oauth2", "Sign in with Mailchimp (OAuth 2.0)", kind="oauth2",
            oauth=OAuthSpec(
                authorize_url="https://login.mailchimp.com/oauth2/authorize",
                token_url="https://login.mailchimp.com/oauth2/token",
                shown=("account", "dc", "api_endpoint"),
            ),
            help="Sign in to Mailchimp and allow the portal to read the account.",
        ),
    ),
    job_types=(
        JobType(
            key="import_members",
            name="Import audience members",
            kind="import",
            description="Reads every member of a Mailchimp audience into a stream (email, "
            "status, merge fields and tags), then on each run only the members that "
            "changed: one message per member and change.",
            config_schema=IMPORT_MEMBERS_SCHEMA,
            run=run_import_members,
            default_cadence="Every hour",
            default_schedule={"kind": "interval", "every_minutes": 60},
            recurring=True,
            option_sources={"lists": audiences},
        ),
    ),
    check=check,
    authorized=authorized,
)
