"""Slack: post a digest of an audience's changes to a channel, and plain messages (job alerts).

Authorization is one of:

- oauth2: "Add to Slack" (OAuth 2.0 v2, https://slack.com/oauth/v2/authorize, tokens from
  oauth.v2.access) with the bot scopes chat:write, channels:read and groups:read. Right
  after the grant `authorized()` keeps the workspace's name (from the token response, or
  auth.test when it has none) to show with the authorization. When the Slack app has token
  rotation on, oauth.v2.access returns a refresh_token and expires_in (12 hours); the
  Vault then renews the token through the same endpoint (grant_type=refresh_token) before
  it expires, and keeps the rotated refresh token (portal/vault.py).
- bot_token: a bot token (xoxb-…) pasted from the app's "OAuth & Permissions" page, for
  people who have not set up the OAuth client.

"Post audience digest" (export): each run compares the audience with what the job last
posted (ctx.source.audience_changes, window after window) and posts ONE message to the
channel: how many members entered, left and changed identifier, and up to 10 identifiers
of those who entered and left. No change: nothing is posted. A unit compares at most
WINDOWS_PER_UNIT windows; when the audience is bigger, the windows compared so far are
recorded (audience_sent) and their tally carried in the cursor (`after_profile_id`,
`pending`: counts and at most 10 identifiers each way) until the last window, whose unit
posts the digest and records its windows. A unit that fails keeps the cursor before it, so
nothing is counted twice; a worker that dies after Slack took the message but before the
unit committed posts it again on the retry (Slack's chat.postMessage has no idempotency
key).

`send_message(method_key, credentials, channel, text)` posts one message and returns its
timestamp (Slack's message id); issue 14's job alerts call it.

Outbound policy: the calls go through slack-sdk's WebClient, which uses urllib, so they do
not use providers/http.py's guarded transport. Before EVERY call `_call` checks the URL
of the API method with `outbound.check_url` (the host is resolved and each of its
addresses checked against PORTAL_OUTBOUND_ALLOW); a refused address raises before any
connection. urllib then resolves the name again to connect, so unlike http_call the
connection is not pinned to the checked address; the API base is not something a person
types (it is slack.com, or PORTAL_SLACK_API_URL set by the operator), which keeps that
gap to the operator's own DNS. No proxy: WebClient's proxy from the environment is
dropped, and a call that urllib would send through a proxy named in the environment
(HTTPS_PROXY, not bypassed by NO_PROXY) is refused. Known gap: urllib follows redirects,
and a redirect's target is not checked (Slack's API answers without redirects). The
client has a 30 second timeout, no slack-sdk retries (a 429 becomes RateLimited here, and
the runner waits out Retry-After), and its logger silenced (its debug lines could show
request headers).

Errors: HTTP 429 / "ratelimited" -> RateLimited (Retry-After honoured); invalid_auth,
not_authed, token_revoked, token_expired, account_inactive (and HTTP 401/403) ->
AuthError; channel_not_found, not_in_channel, is_archived -> ConfigError saying to invite
the app; other Slack error codes -> ProviderError naming the code (only when it looks like
one of Slack's codes: nothing else the reply held is repeated, and never a token).

PORTAL_SLACK_API_URL (e.g. http://127.0.0.1:5555/api/) overrides https://slack.com/api/; it
is read at each call.
"""

from __future__ import annotations

import copy
import logging
import os
import re
import urllib.request
from typing import Any
from urllib.error import URLError
from urllib.parse import urlsplit

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError, SlackClientError

from providers import outbound
from providers.base import (
    AudienceChanges,
    AuthError,
    AuthMethod,
    ConfigError,
    JobType,
    OAuthSpec,
    Provider,
    ProviderError,
    RateLimited,
    RunContext,
    WorkResult,
    audience_field,
)

API_URL_ENV = "PORTAL_SLACK_API_URL"
API_URL = "https://slack.com/api/"
TIMEOUT_SECONDS = 30
DEFAULT_RETRY_AFTER = 60.0
SCOPES = ("chat:write", "channels:read", "groups:read")
CHANNEL_PAGE = 200  # conversations.list: Slack recommends at most 200 a page
MAX_CHANNEL_PAGES = 50  # the menu stops at 10,000 channels
WINDOWS_PER_UNIT = 20  # audience windows compared in one unit of work
NAMES_SHOWN = 10  # identifiers listed each way in a digest
MAX_TEXT = 3000  # characters of a message we post (Slack takes up to 40,000)

AUTH_ERRORS = ("invalid_auth", "not_authed", "token_revoked", "token_expired",
               "account_inactive", "no_permission", "missing_scope", "not_allowed_token_type")
CHANNEL_ERRORS = ("channel_not_found", "not_in_channel", "is_archived")
ERROR_CODE = re.compile(r"[a-z][a-z0-9_]{0,63}")
TOKEN_PATTERN = "^xoxb-[A-Za-z0-9-]{10,255}$"
CHANNEL_PATTERN = "^#?[A-Za-z0-9][A-Za-z0-9_.-]{0,79}$"

OAUTH_HINT = "Sign in with Slack again (Vault > Re-authorize); the access may have been revoked."
TOKEN_HINT = ("Check the bot token (Slack app settings > OAuth & Permissions > Bot User OAuth "
              "Token); it may have been revoked or the app removed from the workspace.")

_QUIET = logging.getLogger("providers.slack.sdk")
_QUIET.disabled = True  # slack-sdk's own log lines may carry request headers


def api_base() -> str:
    """The Web API base URL, ending in a slash (PORTAL_SLACK_API_URL when set)."""
    base = os.environ.get(API_URL_ENV, "").strip() or API_URL
    return base.rstrip("/") + "/"


def _token(method_key: str, credentials: dict[str, Any]) -> tuple[str, str]:
    """The token for a method and the hint for when Slack refuses it."""
    if method_key == "oauth2":
        token = str(credentials.get("access_token") or "")
        if not token:
            raise AuthError(f"The Slack sign-in has no access token. {OAUTH_HINT}")
        return token, OAUTH_HINT
    if method_key == "bot_token":
        token = str(credentials.get("bot_token") or "").strip()
        if not token:
            raise ConfigError("Enter the Slack bot token (xoxb-…).", code="missing_credentials")
        return token, TOKEN_HINT
    raise ConfigError(f"Slack has no authorization method {method_key!r}.")


def _header(headers: Any, name: str) -> str:
    for key, value in dict(headers or {}).items():
        if str(key).lower() == name.lower():
            return str(value[0] if isinstance(value, list) and value else value)
    return ""


def _retry_after(headers: Any) -> float:
    try:
        return max(0.0, float(_header(headers, "Retry-After")))
    except ValueError:
        return DEFAULT_RETRY_AFTER


def _error(exc: SlackApiError, token: str, hint: str, method: str,
           channel: str | None) -> ProviderError:
    """Our error for a refusal from Slack: its error code, checked, and nothing else."""
    response = exc.response
    status = int(getattr(response, "status_code", 0) or 0)
    data = getattr(response, "data", None)
    code = data.get("error") if isinstance(data, dict) else None
    code = code if isinstance(code, str) and ERROR_CODE.fullmatch(code) else None
    if code and token in code:
        code = None  # an "error code" that quotes the token
    if status == 429 or code == "ratelimited":
        wait = _retry_after(getattr(response, "headers", None))
        return RateLimited(f"Slack asks us to slow down (HTTP 429 on {method}); trying again "
                           f"in {wait:.0f} seconds.", retry_after=wait)
    if code in AUTH_ERRORS or status in (401, 403):
        return AuthError(f"Slack refused the credentials ({code or f'HTTP {status}'}). {hint}",
                         code="auth_error")
    if code in CHANNEL_ERRORS:
        where = f"the channel {channel!r}" if channel else "the channel"
        return ConfigError(
            f"Slack cannot post to {where} ({code}). Invite the app to the channel (in "
            "Slack: open the channel and type /invite @<your app>), or choose a channel "
            "it is in; an archived channel cannot be posted to.", code=code)
    said = code or (f"HTTP {status}" if status else "an answer the portal cannot read")
    return ProviderError(f"Slack answered {method} with an error ({said}); it will be tried "
                         "again.", code="slack_error")


def _refuse_proxy(url: str) -> None:
    """urllib (under slack-sdk) would send the call through a proxy named in the
    environment (HTTPS_PROXY...), which resolves the name itself: refuse instead."""
    parts = urlsplit(url)
    if urllib.request.getproxies().get(parts.scheme) and not urllib.request.proxy_bypass(
            parts.hostname or ""):
        raise ConfigError("A proxy is set in the environment (HTTPS_PROXY or HTTP_PROXY) for "
                          "the Slack API; the portal does not send Slack calls through a "
                          "proxy, which would bypass its outbound policy. Unset it, or list "
                          "the Slack API host in NO_PROXY.", code="proxy_refused")


def _call(method_key: str, credentials: dict[str, Any], method: str, *,
          channel: str | None = None, **arguments: Any) -> dict[str, Any]:
    """Call one Web API method (checked against the outbound policy first) and return its
    JSON answer; Slack's refusals become AuthError / RateLimited / ConfigError /
    ProviderError."""
    token, hint = _token(method_key, credentials)
    base = api_base()
    _refuse_proxy(base)
    try:
        outbound.check_url(base + method)
    except OSError:
        raise ProviderError("Could not reach Slack (its address could not be resolved); it "
                            "will be tried again.", code="unreachable") from None
    client = WebClient(token=token, base_url=base, timeout=TIMEOUT_SECONDS, logger=_QUIET,
                       retry_handlers=[])
    client.proxy = None  # never a proxy from the environment: it would resolve the name again
    try:
        if method == "chat.postMessage":
            response = client.chat_postMessage(channel=channel or "", **arguments)
        elif method == "conversations.list":
            response = client.conversations_list(**arguments)
        elif method == "auth.test":
            response = client.auth_test()
        else:
            response = client.api_call(method, params=arguments)
    except SlackApiError as exc:
        raise _error(exc, token, hint, method, channel) from None
    except (SlackClientError, URLError, OSError, ValueError) as exc:
        raise ProviderError(f"Could not reach Slack ({type(exc).__name__}); it will be tried "
                            "again. If this goes on, check that Slack is up.",
                            code="unreachable") from None
    data = response.data
    if not isinstance(data, dict):
        raise ProviderError("Slack answered with something other than a JSON object.",
                            code="bad_response")
    return data


def check(method_key: str, credentials: dict[str, Any]) -> str:
    """Test connection: auth.test names the workspace and the bot."""
    answer = _call(method_key, credentials, "auth.test")
    team = str(answer.get("team") or answer.get("team_id") or "(unnamed)")
    user = str(answer.get("user") or "")
    return f"Connected to Slack workspace {team}" + (f" as {user}" if user else "")


def authorized(method_key: str, token: dict[str, Any]) -> dict[str, Any]:
    """After the OAuth grant: the workspace's name (as "account", which the Vault's page
    shows: "Signed in as …") and id, kept with the token."""
    if method_key != "oauth2":
        return {}
    team = token.get("team") if isinstance(token.get("team"), dict) else {}
    name, team_id = str(team.get("name") or ""), str(team.get("id") or "")
    if not name:  # not in the token response: ask Slack
        answer = _call("oauth2", token, "auth.test")
        name = str(answer.get("team") or "")
        team_id = team_id or str(answer.get("team_id") or "")
    return {"account": name or team_id or "(unnamed)", "team_id": team_id}


def channels(credentials: dict[str, Any]) -> list[tuple[str, str]]:
    """The channels the token can see (public, and private ones the app is in), not
    archived, as (id, "#name") choices for the job wizard; paged with Slack's cursor."""
    method_key = "oauth2" if credentials.get("access_token") else "bot_token"
    found: list[tuple[str, str]] = []
    cursor = ""
    for _ in range(MAX_CHANNEL_PAGES):
        arguments: dict[str, Any] = {"exclude_archived": True, "limit": CHANNEL_PAGE,
                                     "types": "public_channel,private_channel"}
        if cursor:
            arguments["cursor"] = cursor
        page = _call(method_key, credentials, "conversations.list", **arguments)
        for channel in page.get("channels") or []:
            if isinstance(channel, dict) and channel.get("id") and not channel.get(
                    "is_archived"):
                found.append((str(channel["id"]), f"#{channel.get('name') or channel['id']}"))
        meta = page.get("response_metadata")
        cursor = str(meta.get("next_cursor") or "") if isinstance(meta, dict) else ""
        if not cursor:
            break
    return sorted(found, key=lambda choice: choice[1])


def send_message(method_key: str, credentials: dict[str, Any], channel: str, text: str) -> str:
    """Post `text` (plain, links not unfurled) to a channel; returns the message's ts."""
    channel = channel.strip()
    if not re.fullmatch(CHANNEL_PATTERN, channel):
        raise ConfigError("Choose a Slack channel: its channel ID (like C0123456789) or #name.",
                          code="bad_channel")
    answer = _call(method_key, credentials or {}, "chat.postMessage", channel=channel,
                   text=text[:MAX_TEXT], unfurl_links=False, unfurl_media=False)
    return str(answer.get("ts") or "")


# --- the digest --------------------------------------------------------------------------

def _escape(text: str) -> str:
    """Slack's control characters, so an identifier never becomes a link or a mention."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _tally(pending: dict[str, Any], changes: AudienceChanges) -> None:
    """Add one window's changes to the running tally (at most NAMES_SHOWN names a way)."""
    added = {member.profile_id: member.identifier for member in changes.added}
    removed = {member.profile_id: member.identifier for member in changes.removed}
    changed = set(added) & set(removed)  # a new identifier: removed by the old, added by it
    entered = [name for pid, name in added.items() if pid not in changed]
    left = [name for pid, name in removed.items() if pid not in changed]
    pending["entered"] += len(entered)
    pending["left"] += len(left)
    pending["changed"] += len(changed)
    pending["omitted"] += changes.omitted
    for key, names in (("entered_names", entered), ("left_names", left)):
        room = NAMES_SHOWN - len(pending[key])
        pending[key] += names[:max(room, 0)]


def _empty() -> dict[str, Any]:
    return {"entered": 0, "left": 0, "changed": 0, "omitted": 0, "entered_names": [],
            "left_names": []}


def _names(label: str, names: list[str], total: int) -> str:
    shown = ", ".join(_escape(name) for name in names)
    more = total - len(names)
    return f"{label}: {shown}" + (f" and {more:,} more" if more > 0 else "")


def digest_text(audience: str, identifier: str, tally: dict[str, Any]) -> str:
    """The digest's text: counts and up to NAMES_SHOWN identifiers each way, no links."""
    lines = [f"Audience digest for {_escape(audience)}: {tally['entered']:,} entered, "
             f"{tally['left']:,} left"
             + (f", {tally['changed']:,} changed {_escape(identifier)}"
                if tally["changed"] else "") + "."]
    if tally["entered_names"]:
        lines.append(_names("Entered", tally["entered_names"], tally["entered"]))
    if tally["left_names"]:
        lines.append(_names("Left", tally["left_names"], tally["left"]))
    return "\n".join(lines)[:MAX_TEXT]


def run_post_digest(ctx: RunContext) -> WorkResult:
    """One unit: compare up to WINDOWS_PER_UNIT windows of the audience; at the end of the
    audience post one digest message (when anything changed) and record the windows."""
    config = ctx.config
    audience = config["audience"]
    identifier = config.get("identifier") or DEFAULT_IDENTIFIER
    channel = str(config["channel"]).strip()
    cursor = copy.deepcopy(ctx.cursor or {})  # never change the runner's own copy
    after = int(cursor.get("after_profile_id", 0))
    pending = {**_empty(), **(cursor.get("pending") or {})}
    size = max(1, min(int(ctx.batch_size), 1000))
    windows: list[AudienceChanges] = []
    for _ in range(WINDOWS_PER_UNIT):
        changes = ctx.source.audience_changes(audience, identifier=identifier,
                                              after_profile_id=after, limit=size)
        windows.append(changes)
        _tally(pending, changes)
        after = changes.through
        if changes.complete:
            break
    complete = windows[-1].complete
    added = sum(len(window.added) for window in windows)
    removed = sum(len(window.removed) for window in windows)
    omitted = sum(window.omitted for window in windows)
    result = WorkResult(added=added, removed=removed, omitted=omitted)
    if not complete:  # more to compare: keep the tally, post at the end of the audience
        for window in windows:
            ctx.source.audience_sent(window)
        result.cursor = {"after_profile_id": after, "pending": pending}
        result.more_now = True
        result.message = (f"Audience '{audience}': compared profiles up to {after}; so far "
                          f"{pending['entered']:,} entered, {pending['left']:,} left; the "
                          "digest is posted when the whole audience is compared")
        return result
    result.cursor = {"after_profile_id": 0}
    if not (pending["entered"] or pending["left"] or pending["changed"]):
        result.message = (f"Audience '{audience}': no change since the last digest; nothing "
                          f"posted to {channel}")
        return result
    text = digest_text(audience, identifier, pending)
    send_message(ctx.auth_method, ctx.credentials or {}, channel, text)
    for window in windows:
        ctx.source.audience_sent(window)
    result.message = (f"Posted the digest of audience '{audience}' to {channel}: "
                      f"{pending['entered']:,} entered, {pending['left']:,} left, "
                      f"{pending['changed']:,} changed {identifier}; "
                      f"{pending['omitted']:,} omitted (no {identifier})")
    return result


DEFAULT_IDENTIFIER = "email"
DIGEST_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["audience", "channel"],
    "additionalProperties": False,
    "x-order": ["audience", "channel", "identifier"],
    "properties": {
        "audience": audience_field("Whose changes are posted: each run posts who entered and who "
                                   "left the audience since the last digest."),
        "channel": {
            "type": "string",
            "title": "Channel",
            "description": "Where the digest is posted. The app must be in the channel: in "
            "Slack, open it and type /invite @<your app>.",
            "pattern": CHANNEL_PATTERN,
            "x-pattern-message": "Enter a channel ID (like C0123456789) or #name.",
            "x-options": "provider:channels",
        },
        "identifier": {
            "type": "string",
            "title": "Identifier field",
            "description": "The profile field that names people in the digest (up to 10 "
            "each way). Members without it are counted as omitted.",
            "pattern": "^[^\\s]{1,255}$",
            "x-pattern-message": "Enter a field name, without spaces.",
            "default": DEFAULT_IDENTIFIER,
        },
    },
}

BOT_TOKEN_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["bot_token"],
    "additionalProperties": False,
    "properties": {
        "bot_token": {
            "type": "string",
            "title": "Bot token",
            "writeOnly": True,
            "description": "In your Slack app's settings: OAuth & Permissions > Bot User "
            "OAuth Token (starts with xoxb-). The app needs the scopes chat:write, "
            "channels:read and groups:read.",
            "pattern": TOKEN_PATTERN,
            "x-pattern-message": "A Slack bot token starts with xoxb-.",
        },
    },
}

PROVIDER = Provider(
    key="slack",
    name="Slack",
    category="Messaging",
    description="Post a digest of an audience's changes to a Slack channel.",
    logo="slack.svg",
    auth_methods=(
        AuthMethod(
            "oauth2", "Add to Slack (OAuth 2.0)", kind="oauth2",
            oauth=OAuthSpec(
                authorize_url="https://slack.com/oauth/v2/authorize",
                token_url="https://slack.com/api/oauth.v2.access",
                # Slack reads `scope` as a comma-separated list (the portal joins the
                # scopes with spaces), so they are given as one.
                scopes=(",".join(SCOPES),),
                shown=("account", "team_id"),
            ),
            help="Install the portal's Slack app in your workspace; it may post to "
            "channels it is invited to and list channels.",
        ),
        AuthMethod(
            "bot_token", "Bot token", kind="api_key", schema=BOT_TOKEN_SCHEMA,
            help="The bot token of a Slack app of your own, for when the portal's Slack "
            "sign-in is not set up.",
        ),
    ),
    job_types=(
        JobType(
            key="post_digest",
            name="Post audience digest",
            kind="export",
            description="Posts one message to a Slack channel each run: how many people "
            "entered and left an audience since the last digest, with up to 10 of them "
            "named each way. Nothing is posted when nothing changed.",
            config_schema=DIGEST_SCHEMA,
            run=run_post_digest,
            default_cadence="Every 24 hours",
            default_schedule={"kind": "interval", "every_minutes": 1440},
            recurring=True,
            option_sources={"channels": channels},
        ),
    ),
    check=check,
    authorized=authorized,
)
