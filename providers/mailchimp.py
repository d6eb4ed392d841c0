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

The export ("Export audience to list") keeps a Mailchimp list in step with one of the
portal's audiences, a window of members at a time (portal/membership.py compares the
window with what the job last sent). A window's changes go as ONE batch operation
(POST /batches): a PUT /lists/{id}/members/{md5 of the lower-cased email} for each member
to add (status_if_new, mapped merge fields; an existing member is updated, not
resubscribed) and a DELETE of the same path (Mailchimp archives the member) for each
member to remove. The unit that sends the batch ends there, its cursor holding the batch
id and the window's members, so a retry or a worker that dies while the batch is being
processed polls that batch instead of sending it again. Later units poll
GET /batches/{id} for up to POLL_SECONDS each (more_now while it is not finished); when it
is, errored operations are read from the results archive (response_body_url: a tar.gz of
JSON files, fetched WITHOUT the Mailchimp credentials, since Mailchimp serves it from
storage elsewhere) and named in the message, and the window is recorded as sent except
for the members that failed (they are tried again on the next run). Removing a member
Mailchimp does not hold (404) counts as removed.

PORTAL_MAILCHIMP_API_URL (an API base such as http://127.0.0.1:5555/3.0) and
PORTAL_MAILCHIMP_METADATA_URL override the hosts; they are read at each call, so tests can
point them at loopback servers.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import re
import tarfile
import time
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote, urlsplit

from providers.base import (
    AudienceChanges,
    AuthError,
    AuthMethod,
    ConfigError,
    JobType,
    Member,
    OAuthSpec,
    OutMessage,
    Provider,
    ProviderError,
    RunContext,
    WorkResult,
    audience_field,
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
    return api_call(credentials, "GET", path, not_found=not_found, params=params)


def api_call(
    credentials: dict[str, Any], method: str, path: str, *, not_found: str | None = None,
    **kwargs: Any,
) -> dict[str, Any]:
    """Call a path of the Marketing API and return its JSON object."""
    auth, secrets, hint = _auth(credentials)
    response = http_call(
        method, api_base(credentials) + path, service="Mailchimp",
        secrets=secrets, auth_hint=hint, not_found=not_found, **auth, **kwargs,
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

# --- Export audience to list ---------------------------------------------------------

EXPORT_STATUSES = ("subscribed", "pending", "transactional")
DEFAULT_EXPORT_BATCH = 500
MAX_EXPORT_BATCH = 1000
POLL_SECONDS = 20.0  # how long one unit waits for a batch before handing over (more_now)
POLL_STEPS = (0.2, 0.5, 1.0, 2.0, 3.0, 5.0)  # waits between polls, then the last again
BATCH_ID_PATTERN = re.compile(r"[A-Za-z0-9_-]{1,64}")
MERGE_TAG_PATTERN = "^[A-Z0-9_]{1,10}$"
MAPPING_PATTERN = r"^[^\s=]{1,255}=[A-Z0-9_]{1,10}$"
MAX_RESULTS_BYTES = 50 * 1024 * 1024  # of the results archive, unpacked
SHOWN_FAILURES = 10
REASON_CHARS = 200


def subscriber_hash(email: str) -> str:
    """Mailchimp's member id: the MD5 of the lower-cased email address."""
    return hashlib.md5(email.lower().encode(), usedforsecurity=False).hexdigest()


def merge_mapping(lines: list[str] | None) -> dict[str, str]:
    """"plan=PLAN" lines as {profile field: merge tag}."""
    mapping: dict[str, str] = {}
    for line in lines or []:
        field_name, _, tag = str(line).strip().partition("=")
        if not field_name or not re.fullmatch(MERGE_TAG_PATTERN, tag):
            raise ConfigError(f"The merge field line {line!r} is not “profile field=MERGE "
                              "TAG” (the tag in capitals, like PLAN).", code="bad_mapping")
        mapping[field_name] = tag
    return mapping


def _merge_value(value: Any) -> Any:
    if isinstance(value, (str, dict)) or value is None:
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return value
    return json.dumps(value, default=str)


def _operations(list_id: str, status: str, mapping: dict[str, str],
                added: list[Member], removed: list[Member]) -> list[dict[str, Any]]:
    members_path = f"/lists/{quote(list_id, safe='')}/members/"
    operations = []
    for member in removed:
        operations.append({"method": "DELETE",
                           "path": members_path + subscriber_hash(member.identifier),
                           "operation_id": f"remove:{member.profile_id}"})
    for member in added:
        body: dict[str, Any] = {"email_address": member.identifier, "status_if_new": status}
        merge = {tag: _merge_value(member.fields.get(name)) for name, tag in mapping.items()
                 if member.fields.get(name) is not None}
        if merge:
            body["merge_fields"] = merge
        operations.append({"method": "PUT",
                           "path": members_path + subscriber_hash(member.identifier),
                           "operation_id": f"add:{member.profile_id}",
                           "body": json.dumps(body, default=str)})
    return operations


def _batch_id(body: dict[str, Any]) -> str:
    batch_id = body.get("id")
    if not isinstance(batch_id, str) or not BATCH_ID_PATTERN.fullmatch(batch_id):
        raise ProviderError("Mailchimp answered the batch request without a batch id.",
                            code="bad_response")
    return batch_id


def _reason(entry: dict[str, Any]) -> str:
    """Why one operation failed, in Mailchimp's words (its title and detail), short."""
    response = entry.get("response")
    if isinstance(response, str):
        try:
            response = json.loads(response)
        except ValueError:
            response = None
    said = ""
    if isinstance(response, dict):
        parts = [str(response.get(key) or "").strip() for key in ("title", "detail")]
        errors = response.get("errors")
        if isinstance(errors, list):
            parts += [f"{e.get('field') or ''}: {e.get('message') or ''}".strip(": ")
                      for e in errors if isinstance(e, dict)]
        said = "; ".join(part for part in parts if part)
    said = " ".join(said.split())[:REASON_CHARS]
    return f"HTTP {entry.get('status_code')}" + (f" {said}" if said else "")


def batch_failures(credentials: dict[str, Any], url: str) -> dict[str, str]:
    """{operation id: why} for the failed operations in a batch's results archive. The
    archive is fetched without credentials (it is not Mailchimp's API host) and read in
    memory: regular files only, JSON arrays of operation results."""
    _, secrets, _ = _auth(credentials)
    response = http_call("GET", url, service="Mailchimp's batch results", secrets=secrets)
    failures: dict[str, str] = {}
    unpacked = 0
    try:
        with tarfile.open(fileobj=io.BytesIO(response.content), mode="r:gz") as archive:
            for entry in archive:
                if not entry.isfile():
                    continue
                unpacked += entry.size
                if unpacked > MAX_RESULTS_BYTES:
                    raise ProviderError("Mailchimp's batch results are too large to read.",
                                        code="response_too_large")
                handle = archive.extractfile(entry)
                try:
                    results = json.loads(handle.read()) if handle else None
                except ValueError:
                    results = None
                for result in results if isinstance(results, list) else []:
                    if not isinstance(result, dict):
                        continue
                    try:
                        status = int(result.get("status_code") or 0)
                    except (TypeError, ValueError):
                        status = 0
                    if status >= 300 or status == 0:
                        failures[str(result.get("operation_id"))] = _reason(
                            {**result, "status_code": status or "?"})
    except (tarfile.TarError, OSError, EOFError):
        raise ProviderError("Mailchimp's batch results are not a readable tar.gz archive.",
                            code="bad_response") from None
    return failures


def _pending(changes: AudienceChanges, batch_id: str) -> dict[str, Any]:
    """What the cursor keeps of a window sent as a batch: enough to record it as sent."""
    return {
        "batch_id": batch_id, "audience": changes.audience, "through": changes.through,
        "complete": changes.complete, "omitted": changes.omitted,
        "added": [[m.profile_id, m.identifier] for m in changes.added],
        "removed": [[m.profile_id, m.identifier] for m in changes.removed],
    }


def _poll(ctx: RunContext, credentials: dict[str, Any], batch_id: str,
          not_found: str) -> dict[str, Any]:
    """GET the batch until it is finished or POLL_SECONDS have gone by."""
    deadline = time.monotonic() + POLL_SECONDS
    step = 0
    while True:
        batch = api_call(credentials, "GET", f"/batches/{batch_id}", not_found=not_found)
        if batch.get("status") == "finished" or time.monotonic() >= deadline:
            return batch
        if ctx.should_stop():
            return batch
        time.sleep(min(POLL_STEPS[min(step, len(POLL_STEPS) - 1)],
                       max(0.0, deadline - time.monotonic())))
        step += 1


def _finish(ctx: RunContext, credentials: dict[str, Any], pending: dict[str, Any],
            batch: dict[str, Any], list_id: str) -> WorkResult:
    """The batch is finished: find the failed operations, record the rest as sent."""
    failures: dict[str, str] = {}
    errored = int(batch.get("errored_operations") or 0)
    url = batch.get("response_body_url")
    if errored:
        if not isinstance(url, str) or not url:
            raise ProviderError("Mailchimp says operations of the batch failed but gives no "
                                "results to read.", code="bad_response")
        failures = batch_failures(credentials, url)
    added = [Member(int(pid), str(email)) for pid, email in pending["added"]]
    removed = [Member(int(pid), str(email)) for pid, email in pending["removed"]]
    failed_lines = []
    kept_added = []
    for member in added:
        reason = failures.get(f"add:{member.profile_id}")
        if reason is None:
            kept_added.append(member)
        else:
            failed_lines.append(f"adding {member.identifier} failed: {reason}")
    kept_removed = []
    for member in removed:
        reason = failures.get(f"remove:{member.profile_id}")
        if reason is None or reason.startswith("HTTP 404"):  # not there: as good as removed
            kept_removed.append(member)
        else:
            failed_lines.append(f"removing {member.identifier} failed: {reason}")
    changes = AudienceChanges(
        audience=pending["audience"], added=kept_added, removed=kept_removed,
        omitted=int(pending["omitted"]), through=int(pending["through"]),
        complete=bool(pending["complete"]))
    ctx.source.audience_sent(changes)
    message = (f"Audience '{changes.audience}' to Mailchimp list {list_id}: "
               f"{len(kept_added):,} added, {len(kept_removed):,} removed, "
               f"{changes.omitted:,} omitted (no email)")
    if failed_lines:
        shown = failed_lines[:SHOWN_FAILURES]
        more = len(failed_lines) - len(shown)
        message += (f"; {len(failed_lines):,} failed and will be tried again next run: "
                    + "; ".join(shown) + (f"; and {more:,} more" if more else ""))
    cursor = {"after_profile_id": 0 if changes.complete else changes.through}
    return WorkResult(added=len(kept_added), removed=len(kept_removed),
                      omitted=changes.omitted, cursor=cursor,
                      more_now=not changes.complete, message=message)


def run_export_audience(ctx: RunContext) -> WorkResult:
    """One unit: send the next window's changes as a batch, or poll the batch sent."""
    config = ctx.config
    list_id = str(config["list_id"]).strip()
    credentials = ctx.credentials or {}
    cursor = dict(ctx.cursor or {})
    pending = cursor.get("pending")
    if isinstance(pending, dict):
        batch_id = str(pending.get("batch_id") or "")
        if not BATCH_ID_PATTERN.fullmatch(batch_id):
            raise ProviderError("The job's cursor holds no valid batch id.",
                                code="bad_cursor")
        try:
            batch = _poll(ctx, credentials, batch_id, not_found="gone")
        except ConfigError as exc:
            if exc.code != "not_found":
                raise
            # Mailchimp keeps batches for a week: a lost one is sent again (PUT and DELETE
            # of the same members do no harm twice).
            cursor.pop("pending")
            return WorkResult(cursor=cursor, more_now=True,
                              message=f"Mailchimp no longer knows batch {batch_id}; its "
                              "members are sent again")
        if batch.get("status") != "finished":
            done = int(batch.get("finished_operations") or 0)
            total = int(batch.get("total_operations") or 0)
            return WorkResult(cursor=cursor, more_now=True,
                              message=f"Mailchimp is still working on batch {batch_id} "
                              f"({batch.get('status') or 'pending'}, {done:,} of {total:,} "
                              "operations done)")
        return _finish(ctx, credentials, pending, batch, list_id)

    audience = config["audience"]
    status = config.get("status") or "subscribed"
    if status not in EXPORT_STATUSES:
        raise ConfigError(f"Mailchimp takes new members as one of {', '.join(EXPORT_STATUSES)}.",
                          code="bad_status")
    mapping = merge_mapping(config.get("merge_fields"))
    size = max(1, min(int(config.get("batch_size") or DEFAULT_EXPORT_BATCH), MAX_EXPORT_BATCH))
    after = int(cursor.get("after_profile_id", 0))
    changes = ctx.source.audience_changes(audience, identifier="email",
                                          after_profile_id=after, limit=size)
    if not changes.added and not changes.removed:
        ctx.source.audience_sent(changes)
        return WorkResult(
            omitted=changes.omitted, more_now=not changes.complete,
            cursor={"after_profile_id": 0 if changes.complete else changes.through},
            message=f"Audience '{audience}': no change to send for profiles "
            f"{after + 1}–{changes.through}; {changes.omitted:,} omitted (no email)")
    # The list must exist: inside a batch, a missing list would look like members gone.
    api_get(credentials, f"/lists/{quote(list_id, safe='')}", params={"fields": "id"},
            not_found=f"Mailchimp has no audience (list) with the ID {list_id!r} in this "
            "account; choose another list in the job's configuration.")
    operations = _operations(list_id, status, mapping, changes.added, changes.removed)
    body = api_call(
        credentials, "POST", "/batches", json={"operations": operations},
        not_found=f"Mailchimp has no batch endpoint at the configured address for list "
        f"{list_id}.")
    batch_id = _batch_id(body)
    cursor["pending"] = _pending(changes, batch_id)
    return WorkResult(cursor=cursor, more_now=True,
                      message=f"Sent {len(operations):,} changes of audience '{audience}' to "
                      f"Mailchimp list {list_id} as batch {batch_id} "
                      f"({len(changes.added):,} to add, {len(changes.removed):,} to remove)")


EXPORT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["audience", "list_id"],
    "additionalProperties": False,
    "x-order": ["audience", "list_id", "status", "merge_fields", "batch_size"],
    "properties": {
        "audience": audience_field(
            "Who is sent: each run adds the members who joined since the last run and "
            "archives those who left. Members without an email are omitted."),
        "list_id": {
            **IMPORT_MEMBERS_SCHEMA["properties"]["list_id"],
            "title": "Mailchimp audience (list)",
            "description": "The Mailchimp list the members go to; its ID looks like "
            "a1b2c3d4e5 (Audience > Settings > Audience name and defaults).",
        },
        "status": {
            "type": "string",
            "title": "Status of new members",
            "description": "How Mailchimp takes a member it does not have yet: subscribed, "
            "pending (Mailchimp sends a confirmation email) or transactional (no marketing "
            "email). Members it has keep their status.",
            "enum": list(EXPORT_STATUSES),
            "x-enum-labels": ["Subscribed", "Pending (double opt-in)", "Transactional"],
            "default": "subscribed",
        },
        "merge_fields": {
            "type": "array",
            "title": "Merge fields (optional)",
            "description": "One line per field: the profile field, =, and the Mailchimp merge "
            "tag it fills, like plan=PLAN.",
            "items": {
                "type": "string",
                "pattern": MAPPING_PATTERN,
                "x-pattern-message": "Write profile field=MERGE TAG, like plan=PLAN (the tag "
                "in capitals, at most 10 characters).",
            },
            "maxItems": 30,
            "default": [],
        },
        "batch_size": {
            "type": "integer",
            "title": "Members per batch",
            "description": "At most this many members are compared, and their changes sent "
            "in one Mailchimp batch (1–1,000).",
            "minimum": 1,
            "maximum": MAX_EXPORT_BATCH,
            "default": DEFAULT_EXPORT_BATCH,
        },
    },
}


PROVIDER = Provider(
    key="mailchimp",
    name="Mailchimp",
    category="Email marketing",
    description="Import the members of a Mailchimp audience, and every change to them; "
    "export an audience of yours to a Mailchimp list.",
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
        JobType(
            key="export",
            name="Export audience to list",
            kind="export",
            description="Keeps a Mailchimp list in step with one of your audiences: each run "
            "adds (or updates) the members who joined and archives those who left, in "
            "Mailchimp batches, and says which members Mailchimp refused and why.",
            config_schema=EXPORT_SCHEMA,
            run=run_export_audience,
            default_cadence="Every hour",
            default_schedule={"kind": "interval", "every_minutes": 60},
            recurring=True,
            option_sources={"lists": audiences},
        ),
    ),
    check=check,
    authorized=authorized,
)
