"""The provider contract. Imports neither flask nor portal: providers are plain Python.

A provider declares who it talks to (key, name, category, logo), how it authorizes and
which job types it offers. A job type declares its config as JSON Schema and a
`run(ctx) -> WorkResult` that does one unit of work.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

KINDS = ("import", "export", "enrichment")
QUEUES = ("realtime", "default", "backfill")


class ProviderError(Exception):
    """A unit of work went wrong; retried with backoff unless a subclass says otherwise."""

    code = "provider_error"
    retryable = True

    def __init__(self, message: str, *, code: str | None = None):
        super().__init__(message)
        if code:
            self.code = code


class ConfigError(ProviderError):
    """The job's configuration or input cannot work as it is; retrying will not help."""

    code = "config_error"
    retryable = False


class AuthError(ProviderError):
    """The provider refused the credentials."""

    code = "auth_error"


class RateLimited(ProviderError):
    """The provider asks us to hold back for `retry_after` seconds."""

    code = "rate_limited"

    def __init__(self, message: str, *, retry_after: float):
        super().__init__(message)
        self.retry_after = retry_after


@dataclass(frozen=True)
class OutMessage:
    """A message an import writes to a stream."""

    dedupe_key: str
    event_time: datetime
    payload: dict[str, Any]


@dataclass(frozen=True)
class StoredFile:
    """An uploaded file, as a job sees it."""

    filename: str
    format: str
    sha256: str
    content: bytes


@dataclass
class WorkResult:
    """What one unit of work did, and where the next one starts."""

    added: int = 0
    removed: int = 0
    omitted: int = 0
    cursor: dict[str, Any] | None = None
    done: bool = False
    more_now: bool = False
    message: str = ""
    # Progress of work with a known size, when the job type knows it (an import: rows
    # done of the file's total); the run shows it as a progress bar.
    progress_done: int | None = None
    progress_total: int | None = None

    @property
    def counts(self) -> dict[str, int]:
        return {"added": self.added, "removed": self.removed, "omitted": self.omitted}


class Sink(Protocol):
    def write(self, stream: str, messages: Iterable[OutMessage]) -> tuple[int, int]:
        """Write messages to a stream; returns (added, omitted as duplicates)."""


class Files(Protocol):
    def get(self, upload_id: int) -> StoredFile:
        """The uploaded file with this id; raises ConfigError when it is gone."""


@dataclass(frozen=True)
class InMessage:
    """A message an export reads from a stream, in the order it was stored."""

    id: int
    event_time: datetime
    payload: dict[str, Any]


@dataclass(frozen=True)
class Member:
    """A profile as an audience export sends it: its identifier (the value of the field
    the destination keys people by, as text) and, for members to add, its attributes."""

    profile_id: int
    identifier: str
    fields: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class AudienceChanges:
    """One window of an audience against what this job last exported: members to add
    (new, or their identifier changed), members to remove (gone, or their old identifier),
    and how many members the window holds without an identifier (omitted). `through` is
    the last profile id the window covers; `complete` says it reached the end."""

    audience: str
    added: list[Member]
    removed: list[Member]
    omitted: int
    through: int
    complete: bool


@dataclass(frozen=True)
class MembersPage:
    """One window of an audience's members as they are now (for exports that send the
    whole audience, and for enrichment): members with the identifier, each with its
    attributes; how many in the window lack it (omitted); `through`, the last profile id
    the window covers; `complete` when it reached the end."""

    audience: str
    members: list[Member]
    omitted: int
    through: int
    complete: bool


def audience_field(description: str) -> dict[str, Any]:
    """The config field of an export job that names the audience it reads (a menu of the
    portal's audiences in the wizard); `description` says what a run does with it."""
    return {"type": "string", "title": "Audience", "description": description,
            "pattern": "^[a-z0-9_-]{1,64}$", "x-options": "audiences"}


class Source(Protocol):
    def messages(self, stream: str, *, after_id: int, limit: int) -> list[InMessage]:
        """Up to `limit` messages of a stream with ids above `after_id`, oldest first;
        raises ConfigError when there is no such stream."""

    def audience_changes(self, audience: str, *, identifier: str, after_profile_id: int,
                         limit: int) -> AudienceChanges:
        """The next window of up to `limit` members (profile ids above `after_profile_id`)
        of the audience with this slug, compared with what this job last exported;
        raises ConfigError when there is no such audience."""

    def audience_members(self, audience: str, *, identifier: str, after_profile_id: int,
                         limit: int) -> MembersPage:
        """The next window of up to `limit` members of the audience as it is now (no
        comparison with anything sent); raises ConfigError when there is no such
        audience."""

    def audience_sent(self, changes: AudienceChanges) -> None:
        """Record that the destination took these changes: the job's exported membership
        becomes the audience's, for the window. Committed with the unit of work."""


class RunContext(Protocol):
    config: dict[str, Any]
    auth_method: str  # the key of the authorization's method ("none" without one)
    credentials: dict[str, Any]  # every field of it, secret or not, decrypted for this unit
    cursor: dict[str, Any]
    sink: Sink
    source: Source
    files: Files
    batch_size: int
    error_count: int  # errors in a row before this attempt (0 on a first try)

    def log(self, message: str) -> None: ...

    def should_stop(self) -> bool: ...

    def now(self) -> datetime: ...


# The kinds of authorization method; a provider names its own methods but each is one
# of these. Secret fields of a method's schema carry `"writeOnly": true` (JSON Schema):
# the portal stores them encrypted and never shows them again. Fields that decide where
# the secrets are sent (a URL, host, base URL, account, data center) carry
# `"x-destination": true`: when one of them changes, every secret must be entered again,
# so a stored secret never follows a new address. A job type's config schema marks its
# own such fields the same way. A field that decides where an authorization's credentials
# go belongs in the method's schema, never in a job's config: any operator may use an
# authorization in a job, but only its creator or an admin may change where it points.
AUTH_KINDS = ("none", "api_key", "key_secret", "basic", "oauth2")
# String formats that name an address: such a field is a destination unless its schema
# says `"x-destination": false`, so a URL field a provider forgets to mark is still one.
ADDRESS_FORMATS = ("uri", "uri-reference", "iri", "iri-reference", "hostname",
                   "idn-hostname", "ipv4", "ipv6")


def is_destination(spec: dict[str, Any]) -> bool:
    """True when a schema property decides where secrets are sent (see above)."""
    flag = spec.get("x-destination")
    if flag is not None:
        return bool(flag)
    return not spec.get("writeOnly") and spec.get("format") in ADDRESS_FORMATS
# What an OAuth token response holds that is secret.
OAUTH_TOKEN_SECRETS = ("access_token", "refresh_token", "id_token")


@dataclass(frozen=True)
class OAuthSpec:
    """OAuth 2.0 authorization code (with PKCE S256 and state). The portal takes the
    client id and secret from PORTAL_OAUTH_<PROVIDER>_CLIENT_ID / _CLIENT_SECRET and lets
    PORTAL_OAUTH_<PROVIDER>_AUTHORIZE_URL / _TOKEN_URL override the endpoints."""

    authorize_url: str
    token_url: str
    scopes: tuple[str, ...] = ()
    pkce: bool = True
    # The fields of the stored grant that pages may show (those the provider's
    # `authorized()` adds, such as the account name). A token response may carry more than
    # RFC 6749's fields, and whatever it is, nothing else leaves the Vault.
    shown: tuple[str, ...] = ()


@dataclass(frozen=True)
class AuthMethod:
    key: str
    name: str
    kind: str = "none"
    # JSON Schema (an object) of the fields a person enters (oauth2: none, the token is
    # what the sign-in returns; a "none"-kind method may still ask for a non-secret URL).
    schema: dict[str, Any] | None = None
    oauth: OAuthSpec | None = None
    help: str = ""

    def __post_init__(self) -> None:
        if self.kind not in AUTH_KINDS:
            raise ValueError(f"auth method {self.key}: kind must be one of {AUTH_KINDS}")
        if (self.kind == "oauth2") != (self.oauth is not None):
            raise ValueError(f"auth method {self.key}: oauth2 methods (only) need an OAuthSpec")

    @property
    def secret_fields(self) -> tuple[str, ...]:
        """Names of the credential fields that are secrets (oauth2: the tokens)."""
        if self.kind == "oauth2":
            return OAUTH_TOKEN_SECRETS
        properties = (self.schema or {}).get("properties", {})
        return tuple(name for name, spec in properties.items() if spec.get("writeOnly"))

    @property
    def destination_fields(self) -> tuple[str, ...]:
        """Names of the credential fields that decide where the secrets are sent; when one
        changes, a blank secret is not kept (oauth2: none, a new sign-in replaces all)."""
        properties = (self.schema or {}).get("properties", {})
        return tuple(name for name, spec in properties.items() if is_destination(spec))


NO_AUTH = AuthMethod("none", "No authorization needed")


@dataclass(frozen=True)
class JobType:
    key: str
    name: str
    kind: str
    description: str
    config_schema: dict[str, Any]
    run: Callable[[RunContext], WorkResult]
    default_cadence: str = "Runs once"
    # The schedule the wizard preselects (fields of portal/schedule.py's SCHEMA); it must
    # read as `default_cadence` says.
    default_schedule: dict[str, Any] = field(default_factory=lambda: {"kind": "once"},
                                             hash=False, compare=False)
    queue: str = "default"
    recurring: bool = True  # False: one pass over its input, so no cadence to choose
    # Choices fetched from the provider for fields with "x-options": "provider:<name>":
    # option_sources[name](credentials) returns (value, label) pairs, or raises
    # ProviderError (the wizard shows its message and lets the person type the value).
    option_sources: dict[str, Callable[[dict[str, Any]], list[tuple[str, str]]]] = field(
        default_factory=dict, hash=False, compare=False)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"job type {self.key}: kind must be one of {KINDS}")
        if self.queue not in QUEUES:
            raise ValueError(f"job type {self.key}: queue must be one of {QUEUES}")


@dataclass(frozen=True)
class Provider:
    key: str
    name: str
    category: str
    description: str
    logo: str
    auth_methods: tuple[AuthMethod, ...]
    job_types: tuple[JobType, ...] = field(default_factory=tuple)
    # "Test connection": check(method_key, credentials) returns a short line on success
    # (e.g. "Signed in as acme") and raises AuthError when the provider refuses the
    # credentials, ProviderError when it cannot be reached.
    check: Callable[[str, dict[str, Any]], str] | None = None
    # After an OAuth grant: authorized(method_key, token) returns extra, non-secret fields
    # to keep with the token (e.g. the account's API endpoint).
    authorized: Callable[[str, dict[str, Any]], dict[str, Any]] | None = None

    def job_type(self, key: str) -> JobType | None:
        return next((jt for jt in self.job_types if jt.key == key), None)

    def auth_method(self, key: str) -> AuthMethod | None:
        return next((method for method in self.auth_methods if method.key == key), None)

    @property
    def needs_authorization(self) -> bool:
        return all(method.key != NO_AUTH.key for method in self.auth_methods)
