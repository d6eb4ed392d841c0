"""The Vault: credentials encrypted at rest, their versions, OAuth refresh, health, redaction.

Encryption: portal/keys.py (AES-256-GCM). A stored version is bound by its associated
data to its authorization and version number, so a ciphertext copied onto another row does
not open. Secrets in a job's own configuration: portal/configsecrets.py.

Secrets leave this module only as a dict handed to a provider in memory (a worker's unit
of work, a connection test). Pages see `Authorization.public`: which secret fields are
set, the non-secret values and a token's expiry.

No Flask request objects here: callers pass the acting user (`by`) or a name (`actor`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from flask import current_app
from sqlalchemy import func, select, update

from portal import audit, configsecrets, jobconfig, lifecycle
from portal.extensions import db
from portal.keys import KeyUnavailable, VaultError, keyring
from portal.models import Authorization, AuthorizationVersion, Draft, Job, User
from portal.models.types import utcnow
from portal.schemaform import (
    moved_destinations,
    name_errors,
    validate,
)
from providers import get_provider, outbound, redaction
from providers.base import (
    OAUTH_TOKEN_SECRETS,
    AuthError,
    AuthMethod,
    Provider,
    ProviderError,
    RateLimited,
)

# Refresh an OAuth token this long before it expires, so a unit never starts with a
# token that dies halfway.
REFRESH_MARGIN = timedelta(minutes=2)
OAUTH_ERROR_CODE = re.compile(r"[a-z0-9_.-]{1,64}")  # "invalid_grant": RFC 6749 error codes
UNNAMED_OAUTH_ERROR = "an error it did not name in the standard way"
# Kept with an OAuth token: the token endpoint that issued it, the only one its refresh
# token is sent to (the destination rule, for a token URL setting that changes).
TOKEN_ENDPOINT = "token_endpoint"
REDACTED = "[redacted]"


class VersionConflict(VaultError):
    """The credentials changed since the form was opened (check-and-set failed)."""


class InvalidCredentials(VaultError):
    def __init__(self, errors: dict[str, str]):
        super().__init__("; ".join(f"{field}: {message}" for field, message in errors.items()))
        self.errors = errors


class InUse(VaultError):
    def __init__(self, authorization: Authorization, jobs: list[Job]):
        super().__init__(f"“{authorization.label}” is used by {len(jobs)} job(s); point them "
                         "at another authorization first.")
        self.jobs = jobs


class MissingOAuthSettings(VaultError):
    def __init__(self, provider: Provider, names: list[str]):
        super().__init__(f"Signing in with {provider.name} needs the setting(s) "
                         f"{', '.join(names)}: register this portal as an OAuth app with "
                         f"{provider.name} and set them, then restart the portal.")
        self.names = names


def _associated(authorization_id: int, version: int) -> bytes:
    return f"portal-authorization:{authorization_id}:{version}".encode()


def describe(authorization: Authorization) -> str:
    return f"authorization “{authorization.label}” (#{authorization.id})"


def _open(authorization: Authorization, row: AuthorizationVersion) -> dict[str, Any]:
    try:
        return keyring().open(row.ciphertext, _associated(authorization.id, row.version))
    except KeyError:
        raise KeyUnavailable(
            f"The credentials of {describe(authorization)}, version {row.version}, are "
            f"encrypted with the key “{row.key_id}”, which is not in PORTAL_VAULT_KEYS. Add "
            "that key back after the active one, or enter the credentials again."
        ) from None
    except ValueError:
        raise KeyUnavailable(
            f"The credentials of {describe(authorization)}, version {row.version}, cannot be "
            f"decrypted with the key “{row.key_id}”: the key is not the one they were "
            "encrypted with, or the stored data is damaged. Enter the credentials again."
        ) from None


# --- providers and their methods ------------------------------------------------------

def method_of(authorization: Authorization) -> tuple[Provider, AuthMethod]:
    provider = get_provider(authorization.provider)
    method = provider.auth_method(authorization.method) if provider else None
    if provider is None or method is None:
        raise VaultError(f"{describe(authorization)} belongs to {authorization.provider}/"
                         f"{authorization.method}, which this portal no longer offers.")
    return provider, method


def public_view(method: AuthMethod, credentials: dict[str, Any]) -> dict[str, Any]:
    """What pages may show of these credentials: no secret, only that it is set."""
    secrets = set(method.secret_fields)
    if method.oauth is not None:  # a grant: only what the provider declares may be shown
        shown = {name: credentials.get(name) for name in method.oauth.shown}
    else:
        shown = {name: value for name, value in credentials.items()
                 if name not in secrets and name not in ("expires_at", "expires_in")}
    return {
        "set": sorted(name for name in secrets if credentials.get(name)),
        "values": {name: value for name, value in shown.items()
                   if isinstance(value, str | int | float | bool)},
        "expires_at": credentials.get("expires_at"),
    }


def secret_values(method: AuthMethod, credentials: dict[str, Any]) -> list[str]:
    return [str(credentials[name]) for name in method.secret_fields if credentials.get(name)]


def redact(text: str, secrets: Iterable[str]) -> str:
    """The text with every secret value (of four characters or more) replaced, in any
    case and in its usual encodings (base64, URL, hex...: providers/redaction.py)."""
    return redaction.redact(text, secrets, mask=REDACTED, min_length=4)


def label_errors(label: str, description: str) -> dict[str, str]:
    """Field messages for an authorization's label and description."""
    return name_errors(label, description, field="label", missing=(
        "Give the authorization a label, e.g. “Mailchimp — marketing team”."))


def check_entered(method: AuthMethod, credentials: dict[str, Any]) -> dict[str, str]:
    """Field messages for entered credentials (empty when they fit the method's schema)."""
    return validate(method.schema, credentials) if method.schema else {}


# --- versions ---------------------------------------------------------------------------

def _seal_version(authorization: Authorization, version: int, credentials: dict[str, Any], *,
                  reason: str, by: User | None, actor: str) -> AuthorizationVersion:
    ring = keyring()
    row = AuthorizationVersion(
        authorization_id=authorization.id, version=version, reason=reason,
        ciphertext=ring.seal(credentials, _associated(authorization.id, version)),
        key_id=ring.active_id, created_at=utcnow(), created_by_id=by.id if by else None,
        created_by_label=by.email if by else actor,
    )
    db.session.add(row)
    return row


def create(provider: Provider, method: AuthMethod, *, label: str, description: str,
           credentials: dict[str, Any], by: User) -> Authorization:
    """A new authorization with its first version (in the caller's transaction)."""
    errors = check_entered(method, credentials)
    if errors:
        raise InvalidCredentials(errors)
    now = utcnow()
    authorization = Authorization(
        provider=provider.key, method=method.key, label=label, description=description,
        owner_id=by.id, current_version=1, public=public_view(method, credentials),
        created_at=now, updated_at=now, updated_by_id=by.id,
    )
    db.session.add(authorization)
    db.session.flush()
    _seal_version(authorization, 1, credentials, reason="created", by=by, actor="")
    audit.record("created", "authorization", authorization.id, label, by=by,
                 summary=f"Created with {method.name} for {provider.name}")
    return authorization


def current_row(authorization: Authorization) -> AuthorizationVersion:
    row = db.session.scalar(select(AuthorizationVersion).where(
        AuthorizationVersion.authorization_id == authorization.id,
        AuthorizationVersion.version == authorization.current_version))
    if row is None:
        raise KeyUnavailable(f"{describe(authorization)} has no stored credentials "
                             f"(version {authorization.current_version} is missing).")
    return row


def current_credentials(authorization: Authorization) -> dict[str, Any]:
    return _open(authorization, current_row(authorization))


def replace(authorization: Authorization, credentials: dict[str, Any], *, expected_version: int,
            reason: str, by: User | None = None, actor: str = "") -> int:
    """Store `credentials` as the next version, if the current version is still
    `expected_version` (check-and-set); returns the new version number."""
    _, method = method_of(authorization)
    now = utcnow()
    result = db.session.execute(
        update(Authorization)
        .where(Authorization.id == authorization.id,
               Authorization.current_version == expected_version)
        .values(current_version=expected_version + 1, updated_at=now,
                updated_by_id=by.id if by else None, public=public_view(method, credentials),
                health="unknown", health_message="", health_checked_at=None)
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:
        db.session.rollback()
        raise VersionConflict(
            f"The credentials of {describe(authorization)} changed while you were editing "
            "them. Reload the page to see the new version, then enter yours again."
        )
    db.session.refresh(authorization)
    version = expected_version + 1
    _seal_version(authorization, version, credentials, reason=reason, by=by, actor=actor)
    audit.record(reason, "authorization", authorization.id, authorization.label, by=by,
                 actor=actor, summary=f"Credentials version {version}", version=version)
    return version


def update_entered(authorization: Authorization, entered: dict[str, Any], *,
                   expected_version: int, by: User) -> int:
    """A person's credentials update from a form: a blank secret keeps the stored one,
    unless a field that decides where it is sent (the method's destination_fields, such
    as a URL) changed: then every secret must be entered again."""
    provider, method = method_of(authorization)
    if method.kind == "oauth2":  # its tokens come from a sign-in, not from a form
        raise VaultError(f"Its tokens come from signing in with {provider.name}: use "
                         "Re-authorize to renew them.")
    blanks = [name for name in method.secret_fields if not entered.get(name)]
    stored: dict[str, Any] = {}
    if blanks:
        stored = current_credentials(authorization)  # KeyUnavailable: they must enter all
    errors: dict[str, str] = {}
    keepable = [name for name in blanks if name in stored]
    moved = moved_destinations(method.schema or {}, method.destination_fields, stored,
                               entered) if keepable else []
    if moved:
        errors = {name: configsecrets.enter_again(moved) for name in keepable}
    merged = {**{name: stored[name] for name in keepable if name not in errors},
              **{name: value for name, value in entered.items() if value not in ("", None)}}
    for name, message in check_entered(method, merged).items():
        errors.setdefault(name, message)
    if errors:
        raise InvalidCredentials(errors)
    return replace(authorization, merged, expected_version=expected_version, reason="updated",
                   by=by)


def can_change(authorization: Authorization, user: User) -> bool:
    """Any operator may use an authorization (in a job, in a connection test); changing
    it (label, credentials, re-authorizing, deleting, moving its jobs) is for the person
    who created it and for admins."""
    return user.has_role("admin") or (user.has_role("operator")
                                      and authorization.owner_id == user.id)


def edit_details(authorization: Authorization, *, label: str, description: str,
                 by: User) -> None:
    before = {"label": authorization.label, "description": authorization.description}
    authorization.label, authorization.description = label, description
    authorization.updated_at, authorization.updated_by_id = utcnow(), by.id
    audit.record("edited", "authorization", authorization.id, label, by=by,
                 summary="Label or description changed", before=before,
                 after={"label": label, "description": description})


def jobs_using(authorization: Authorization) -> list[Job]:
    return list(db.session.scalars(
        select(Job).where(Job.authorization_id == authorization.id).order_by(Job.name)))


def use_counts() -> dict[int, int]:
    return dict(db.session.execute(
        select(Job.authorization_id, func.count()).where(Job.authorization_id.is_not(None))
        .group_by(Job.authorization_id)).all())


def delete(authorization: Authorization, *, by: User) -> None:
    jobs = jobs_using(authorization)
    if jobs:
        raise InUse(authorization, jobs)
    audit.record("deleted", "authorization", authorization.id, authorization.label, by=by,
                 summary=f"Deleted ({authorization.provider}, {authorization.method})")
    db.session.delete(authorization)


def reassign(authorization: Authorization, target: Authorization, *, by: User) -> int:
    """Point every job of `authorization` at `target` (same provider); returns how many."""
    if target.id == authorization.id or target.provider != authorization.provider:
        raise VaultError("Choose another authorization of the same provider.")
    jobs = jobs_using(authorization)
    now = utcnow()
    for job in jobs:
        job.authorization_id = target.id
        job.updated_at, job.updated_by_id = now, by.id  # an edit of the job, as save_edit
        # A change of the job's authorization: a version of its configuration, and a line
        # in its log, as an edit of the job would write.
        jobconfig.record_version(job, by=by, summary="Authorization reassigned", now=now,
                                 changes=[{"field": "authorization", "label": "Authorization",
                                           "before": f"{authorization.label} (#{authorization.id})",
                                           "after": f"{target.label} (#{target.id})"}])
        lifecycle.record(job, lifecycle.Event.EDITED,
                         f"Configuration changed by {by.email}: Authorization", now=now, by=by)
    audit.record("reassigned", "authorization", authorization.id, authorization.label, by=by,
                 summary=f"{len(jobs)} job(s) moved to “{target.label}” (#{target.id})",
                 jobs=[job.id for job in jobs], target=target.id)
    return len(jobs)


@dataclass
class Rotation:
    """What `rotate` did: how many versions and configurations it re-encrypted, and the
    configuration secrets no key opens (left as they were), as "job #3 “token”"."""

    done: int = 0
    unreadable: list[str] = field(default_factory=list)


def rotate(*, actor: str = "command line", batch: int = 200) -> Rotation:
    """Re-encrypt every stored credential version, and every secret in a job's or a
    wizard draft's configuration, under the active key. A credential version that cannot
    be opened stops it (KeyUnavailable); a configuration secret is skipped and reported."""
    result = Rotation(done=_rotate_versions(actor, batch))
    for model in (Job, Draft):
        done, unreadable = configsecrets.rotate_configs(model, actor, batch)
        result.done += done
        result.unreadable += unreadable
    return result


def _rotate_versions(actor: str, batch: int) -> int:
    ring = keyring()
    done, last_id = 0, 0
    while True:
        rows = db.session.scalars(
            select(AuthorizationVersion).where(AuthorizationVersion.id > last_id)
            .order_by(AuthorizationVersion.id).limit(batch)).all()
        if not rows:
            return done
        now = utcnow()
        for row in rows:
            authorization = db.session.get(Authorization, row.authorization_id)
            credentials = _open(authorization, row)
            previous = row.key_id
            row.ciphertext = ring.seal(credentials, _associated(authorization.id, row.version))
            row.key_id, row.rotated_at = ring.active_id, now
            audit.record("rotated", "authorization", authorization.id, authorization.label,
                         actor=actor, version=row.version, from_key=previous,
                         to_key=ring.active_id,
                         summary=f"Version {row.version} re-encrypted with key "
                                 f"“{ring.active_id}” (was “{previous}”)")
            done += 1
            last_id = row.id
        db.session.commit()


# --- use by jobs and connection tests ------------------------------------------------------

def oauth_settings(provider: Provider, method: AuthMethod) -> dict[str, str]:
    """Client id/secret and endpoints of an OAuth method; MissingOAuthSettings names what
    to set when the client is not configured."""
    prefix = f"PORTAL_OAUTH_{provider.key.upper()}_"
    config = current_app.config
    missing = [prefix + name for name in ("CLIENT_ID", "CLIENT_SECRET")
               if not config.get(prefix + name)]
    if missing:
        raise MissingOAuthSettings(provider, missing)
    return {
        "client_id": config[prefix + "CLIENT_ID"],
        "client_secret": config[prefix + "CLIENT_SECRET"],
        "authorize_url": config.get(prefix + "AUTHORIZE_URL") or method.oauth.authorize_url,
        "token_url": config.get(prefix + "TOKEN_URL") or method.oauth.token_url,
        "scope": " ".join(method.oauth.scopes),
    }


def oauth_error(error: object, secrets: Iterable[str] = ()) -> str:
    """How the portal names an error an OAuth provider reported (a token endpoint's reply,
    a callback's query string): its standard code ("invalid_grant") and nothing else it
    wrote, never a secret it echoed back as the code."""
    if (isinstance(error, str) and OAUTH_ERROR_CODE.fullmatch(error)
            and redact(error, secrets) == error):
        return error
    return UNNAMED_OAUTH_ERROR


def _expiring(credentials: dict[str, Any], now: datetime) -> bool:
    expires_at = credentials.get("expires_at")
    if not expires_at or not credentials.get("refresh_token"):
        return False
    return datetime.fromtimestamp(float(expires_at), UTC) - now < REFRESH_MARGIN


def _refresh(provider: Provider, method: AuthMethod, credentials: dict[str, Any],
             authorization: Authorization) -> dict[str, Any]:
    from authlib.integrations.base_client.errors import OAuthError
    from authlib.integrations.requests_client import OAuth2Session
    from requests import RequestException

    settings = oauth_settings(provider, method)
    issued_by = credentials.get(TOKEN_ENDPOINT)
    if issued_by and issued_by != settings["token_url"]:
        raise AuthError(f"The sign-in of {describe(authorization)} was issued by "
                        f"{issued_by}, but the portal's token endpoint for {provider.name} is "
                        f"now {settings['token_url']}; its refresh token is not sent "
                        "anywhere else. Re-authorize it in the Vault.",
                        code="oauth_endpoint_moved")
    session = OAuth2Session(settings["client_id"], settings["client_secret"],
                            token=credentials, token_endpoint=settings["token_url"])
    outbound.guard_session(session)  # the token endpoint passes the outbound policy
    try:
        token = session.refresh_token(settings["token_url"],
                                      refresh_token=credentials["refresh_token"], timeout=30)
    except OAuthError as exc:
        # The code only, checked: the rest of the reply may quote what was sent.
        said = oauth_error(exc.error, [*secret_values(method, credentials),
                                       settings["client_secret"]])
        raise AuthError(f"{provider.name} refused to renew the sign-in of "
                        f"{describe(authorization)} ({said}); re-authorize it in the "
                        "Vault.", code="oauth_refresh_refused") from None
    except RequestException as exc:
        raise ProviderError(f"Could not reach {provider.name} to renew the sign-in of "
                            f"{describe(authorization)}: {type(exc).__name__}",
                            code="oauth_refresh_failed") from None
    except ProviderError:  # the outbound policy's refusal: our own words
        raise
    except Exception as exc:  # e.g. a reply Authlib cannot read: its text may quote the reply
        raise ProviderError(f"{provider.name} answered the renewal of the sign-in of "
                            f"{describe(authorization)} in a way the portal cannot read "
                            f"({type(exc).__name__}).", code="oauth_refresh_failed") from None
    finally:
        session.close()
    extras = {name: value for name, value in credentials.items()
              if name not in token and name not in OAUTH_TOKEN_SECRETS}
    return {**extras, **dict(token), TOKEN_ENDPOINT: settings["token_url"],
            "refresh_token": token.get("refresh_token") or credentials["refresh_token"]}


@dataclass
class DecryptionTally:
    """A worker's run (from its claim until it stops or hands the job back) decrypts
    credentials once per unit of work; the audit trail gets one row per run and
    authorization, with the count, instead of a row per unit flooding it."""

    entries: dict[int, Any] = field(default_factory=dict)  # authorization id -> AuditEntry


def _audit_decryption(authorization: Authorization, *, actor: str, by: User | None,
                      purpose: str, tally: DecryptionTally | None) -> None:
    entry = tally.entries.get(authorization.id) if tally is not None else None
    if entry is None:
        entry = audit.record("decrypted", "authorization", authorization.id,
                             authorization.label, by=by, actor=actor,
                             summary=f"Credentials decrypted for {purpose}",
                             version=authorization.current_version, count=1)
        if tally is not None:
            tally.entries[authorization.id] = entry
        return
    count = int(entry.details.get("count", 1)) + 1
    entry.details = {**entry.details, "count": count, "version": authorization.current_version,
                     "last_at": utcnow().isoformat()}
    entry.summary = f"Credentials decrypted {count:,} times for {purpose}, in one run"


def credentials_for(authorization: Authorization, *, actor: str,
                    by: User | None = None, purpose: str = "job",
                    tally: DecryptionTally | None = None) -> dict[str, Any]:
    """Decrypt the current credentials for use in memory, renewing an OAuth token that is
    about to expire (under a row lock, so two workers never both spend a rotating refresh
    token), and audit the decryption (counted in `tally`'s row when given). Commits."""
    provider, method = method_of(authorization)
    credentials = current_credentials(authorization)
    if method.kind == "oauth2" and _expiring(credentials, utcnow()):
        _lock(authorization)
        credentials = current_credentials(authorization)  # another worker may have renewed
        if _expiring(credentials, utcnow()):
            credentials = _refresh(provider, method, credentials, authorization)
            replace(authorization, credentials, expected_version=authorization.current_version,
                    reason="refreshed", actor=actor)
    _audit_decryption(authorization, actor=actor, by=by, purpose=purpose, tally=tally)
    db.session.commit()
    return credentials


def _lock(authorization: Authorization) -> None:
    """Hold the authorization's row until commit: a no-op UPDATE takes the row lock on
    PostgreSQL and the write lock on SQLite (which has no SELECT ... FOR UPDATE)."""
    db.session.execute(
        update(Authorization).where(Authorization.id == authorization.id)
        .values(current_version=Authorization.current_version)
        .execution_options(synchronize_session=False))
    db.session.refresh(authorization)


@dataclass(frozen=True)
class Health:
    status: str
    message: str


def test_connection(authorization: Authorization, *, by: User | None = None,
                    actor: str = "") -> Health:
    """Run the provider's check with the current credentials and keep the outcome."""
    secrets: list[str] = []
    try:
        provider, method = method_of(authorization)
        if provider.check is None:
            # Keep what its jobs found out (an AuthError marks it unhealthy).
            health = Health(authorization.health, f"{provider.name} offers no connection "
                                                  "test; the health shown comes from its jobs.")
        else:
            credentials = credentials_for(authorization, actor=actor, by=by,
                                          purpose="a connection test")
            secrets = secret_values(method, credentials)
            health = Health("healthy", redact(provider.check(method.key, credentials), secrets))
    except VaultError as exc:
        health = Health("unhealthy", str(exc))
    except Exception as exc:  # whatever the provider raised is the test's result
        health = _health_of(exc, secrets)
    _set_health(authorization, health)
    audit.record("checked", "authorization", authorization.id, authorization.label, by=by,
                 actor=actor, summary=f"Connection test: {health.status} — {health.message}")
    db.session.commit()
    return health


def _health_of(exc: Exception, secrets: list[str]) -> Health:
    if isinstance(exc, AuthError):
        return Health("unhealthy", redact(str(exc), secrets))
    if isinstance(exc, RateLimited):
        return Health("unknown", "The provider is rate limiting; try again in "
                                 f"{int(exc.retry_after)} s.")
    if isinstance(exc, ProviderError):
        return Health("unknown", f"Could not check: {redact(str(exc), secrets)}")
    return Health("unknown", f"Could not check: {type(exc).__name__}")


def _set_health(authorization: Authorization, health: Health) -> None:
    authorization.health, authorization.health_message = health.status, health.message[:1000]
    authorization.health_checked_at = utcnow()


def mark_unhealthy(authorization_id: int, message: str, *, actor: str) -> None:
    """A provider refused the credentials during a job (in the caller's transaction)."""
    authorization = db.session.get(Authorization, authorization_id)
    if authorization is not None:
        _set_health(authorization, Health("unhealthy", message))
        audit.record("unhealthy", "authorization", authorization.id, authorization.label,
                     actor=actor, summary=message[:500])


def check_all(*, actor: str = "daily health check") -> int:
    """Test every authorization (the daily run); returns how many were checked."""
    ids = db.session.scalars(select(Authorization.id).order_by(Authorization.id)).all()
    for authorization_id in ids:
        authorization = db.session.get(Authorization, authorization_id)
        if authorization is not None:
            test_connection(authorization, actor=actor)
    return len(ids)
