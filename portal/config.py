"""Settings read from the environment (and a .env file); every variable is in the README."""

from __future__ import annotations

import base64
import functools
import json
import logging
import os
import secrets
import stat
from datetime import timedelta
from pathlib import Path
from typing import Any

from dotenv import load_dotenv

from providers import outbound

log = logging.getLogger(__name__)


# JSON text as the JSON columns write it: NaN and Infinity are refused (not JSON, and
# PostgreSQL refuses them too). Also for JSON the portal builds itself to store as is.
json_text = functools.partial(json.dumps, allow_nan=False)


class ConfigError(RuntimeError):
    """The settings cannot work; the message says which variable to set."""


def private_dir(path: Path) -> None:
    """Create `path` readable by its owner only (0700), or tighten it and every file in it
    to 0700/0600 with a warning: the instance folder holds the database, keys and the
    first admin's password."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    for item in [path, *path.rglob("*")]:
        tighten(item)


def tighten(path: Path, *, warn: bool = True) -> None:
    """Take group and other permissions off an existing file or folder (and say so)."""
    try:
        mode = path.lstat().st_mode
    except FileNotFoundError:
        return
    if stat.S_ISLNK(mode) or not mode & 0o077:
        return
    path.chmod(stat.S_IMODE(mode) & 0o700)
    if warn:
        log.warning("%s was open to other users (mode %o); it is now %o.", path,
                    stat.S_IMODE(mode), stat.S_IMODE(mode) & 0o700)


def write_private(path: Path, text: str) -> None:
    """Write a file readable by its owner only (0600) from the moment it exists."""
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(descriptor, 0o600)  # a file that was there keeps no looser mode
    with os.fdopen(descriptor, "w") as file:
        file.write(text)


def _database_url(instance: Path) -> str:
    url = os.environ.get("DATABASE_URL") or f"sqlite:///{instance / 'portal.db'}"
    # Accept the URL shapes hosting platforms hand out and use psycopg 3 for them.
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix):]
    return url


def _secret_key(instance: Path, production: bool) -> str:
    key = os.environ.get("SECRET_KEY")
    if key:
        return key
    if production:
        raise ConfigError("SECRET_KEY must be set when PORTAL_ENV=production.")
    # Local use: generate a key once and keep it, so sessions survive restarts.
    path = instance / "secret_key"
    if not path.exists():
        write_private(path, secrets.token_urlsafe(48))
    return path.read_text().strip()


def _vault_keys(instance: Path, production: bool) -> str:
    """The Vault's keys, "id:base64key,..." with the active key first (see portal/vault.py)."""
    keys = os.environ.get("PORTAL_VAULT_KEYS", "").strip()
    if keys:
        return keys
    if production:
        raise ConfigError(
            "PORTAL_VAULT_KEYS must be set when PORTAL_ENV=production (the key that encrypts "
            "stored credentials). Make one with `flask --app wsgi vault new-key`."
        )
    path = instance / "vault-keys"
    if not path.exists():
        write_private(path, f"dev-{secrets.token_hex(4)}:"
                            f"{base64.b64encode(os.urandom(32)).decode()}")
    log.warning("The Vault uses the development key in %s; set PORTAL_VAULT_KEYS for real "
                "credentials, and keep that file if you keep this database.", path)
    return path.read_text().strip()


def _int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw in (None, ""):
        return default
    try:
        return int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a whole number, not {raw!r}.") from None


def load_settings(instance_path: str, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """Build the Flask config from the environment; `overrides` win (tests use them)."""
    load_dotenv(override=False)
    overrides = dict(overrides or {})
    instance = Path(instance_path)
    private_dir(instance)  # 0700, its files 0600 (tightened with a warning if they were not)
    production = overrides.get("PORTAL_ENV", os.environ.get("PORTAL_ENV", "development")) == (
        "production"
    )

    settings: dict[str, Any] = {
        "PORTAL_ENV": "production" if production else "development",
        "SQLALCHEMY_DATABASE_URI": _database_url(instance),
        "REDIS_URL": os.environ.get("REDIS_URL") or f"unix://{instance / 'redis.sock'}",
        "PORTAL_REDIS_EMBEDDED": not os.environ.get("REDIS_URL"),
        "MAX_CONTENT_LENGTH": _int("PORTAL_MAX_UPLOAD_MB", 50) * 1024 * 1024,
        "PORTAL_IMPORT_BATCH_SIZE": _int("PORTAL_IMPORT_BATCH_SIZE", 2000),
        # Bulk API uploads (POST /api/v2/collect/bulk/<stream>): the largest body taken,
        # and the rows written per transaction (0: 5,000 on PostgreSQL, 500 on SQLite).
        "PORTAL_BULK_MAX_MB": _int("PORTAL_BULK_MAX_MB", 1024),
        "PORTAL_BULK_BATCH_SIZE": _int("PORTAL_BULK_BATCH_SIZE", 0),
        "PORTAL_BULK_PROFILE_BATCH_SIZE": _int("PORTAL_BULK_PROFILE_BATCH_SIZE", 0),
        # The most columns an uploaded CSV (or fields an NDJSON file) may have.
        "PORTAL_MAX_COLUMNS": _int("PORTAL_MAX_COLUMNS", 2000),
        "PORTAL_LEASE_SECONDS": _int("PORTAL_LEASE_SECONDS", 30),
        "PORTAL_DISPATCH_INTERVAL": _int("PORTAL_DISPATCH_INTERVAL", 1),
        # A job whose worker is lost this many times in a row fails (it may be what kills
        # its workers); each loss before that queues it again at once.
        "PORTAL_LOST_WORKER_LIMIT": max(1, _int("PORTAL_LOST_WORKER_LIMIT", 5)),
        # A worker told to stop (SIGTERM) lets the unit under way finish for this long,
        # then abandons it (nothing of it lands; the job is queued again) and exits.
        "PORTAL_WORKER_STOP_SECONDS": max(0, _int("PORTAL_WORKER_STOP_SECONDS", 3)),
        # How often a worker writes its heartbeat to Redis, busy or idle; the operations
        # page counts a worker lost after two missed beats (portal/operations.py).
        "PORTAL_WORKER_HEARTBEAT_SECONDS": _int("PORTAL_WORKER_HEARTBEAT_SECONDS", 10),
        "PORTAL_ENQUEUE_GRACE_SECONDS": _int("PORTAL_ENQUEUE_GRACE_SECONDS", 10),
        "PORTAL_PURGE_DAYS": _int("PORTAL_PURGE_DAYS", 90),
        # The payload fields that say who a message is about (portal/profiles.py).
        "PORTAL_IDENTITY_KEYS": os.environ.get("PORTAL_IDENTITY_KEYS") or "email,user_id",
        # Pages left open for hours (a summary tailing logs) must still be able to POST;
        # the token stays bound to the session.
        "WTF_CSRF_TIME_LIMIT": None,
        "SESSION_COOKIE_HTTPONLY": True,
        "SESSION_COOKIE_SAMESITE": "Lax",
        "SESSION_COOKIE_SECURE": production,
        # In production the cookies carry the __Host- prefix: the browser then takes them only
        # when Secure, for the whole site (Path=/) and from this host alone (no Domain), so a
        # sibling subdomain cannot plant or overwrite a session.
        "SESSION_COOKIE_NAME": "__Host-session" if production else "session",
        "REMEMBER_COOKIE_NAME": "__Host-remember" if production else "remember_token",
        "REMEMBER_COOKIE_HTTPONLY": True,
        # "Keep me signed in" lasts this many days from sign-in (see portal/access.py).
        "REMEMBER_COOKIE_DURATION": timedelta(days=_int("PORTAL_REMEMBER_DAYS", 14)),
        "REMEMBER_COOKIE_SECURE": production,
        "REMEMBER_COOKIE_SAMESITE": "Lax",
        "PORTAL_SESSION_IDLE_MINUTES": _int("PORTAL_SESSION_IDLE_MINUTES", 120),
        "PORTAL_SESSION_MAX_HOURS": _int("PORTAL_SESSION_MAX_HOURS", 24),
        # Sign-in attempts allowed per account and per client address (portal/throttle.py).
        "PORTAL_LOGIN_LIMIT_ACCOUNT": os.environ.get("PORTAL_LOGIN_LIMIT_ACCOUNT")
        or "5 per minute; 20 per hour",
        "PORTAL_LOGIN_LIMIT_ADDRESS": os.environ.get("PORTAL_LOGIN_LIMIT_ADDRESS")
        or "30 per minute; 300 per hour",
        # An unreachable Redis must not hold a sign-in up for long (throttling fails open).
        "RATELIMIT_STORAGE_OPTIONS": {"socket_connect_timeout": 2, "socket_timeout": 2},
        "SQLALCHEMY_ENGINE_OPTIONS": {"pool_pre_ping": True, "json_serializer": json_text},
        # Alerts: the address links in notifications start with, and the mail server.
        "PORTAL_BASE_URL": os.environ.get("PORTAL_BASE_URL")
        or f"http://127.0.0.1:{os.environ.get('PORT') or 5000}",
        "PORTAL_SMTP_HOST": os.environ.get("PORTAL_SMTP_HOST", ""),
        "PORTAL_SMTP_PORT": _int("PORTAL_SMTP_PORT", 25),
        "PORTAL_SMTP_USERNAME": os.environ.get("PORTAL_SMTP_USERNAME", ""),
        "PORTAL_SMTP_PASSWORD": os.environ.get("PORTAL_SMTP_PASSWORD", ""),
        "PORTAL_SMTP_FROM": os.environ.get("PORTAL_SMTP_FROM") or "jobs-portal@localhost",
        "PORTAL_SMTP_STARTTLS": os.environ.get("PORTAL_SMTP_STARTTLS", "").lower()
        in ("1", "true", "yes"),
        "PORTAL_HEALTH_CHECK_HOURS": _int("PORTAL_HEALTH_CHECK_HOURS", 24),
        # Reverse proxies in front of the web server whose X-Forwarded-* headers to trust
        # (so OAuth redirect URLs come out as https://your-host/...).
        "PORTAL_TRUSTED_PROXIES": _int("PORTAL_TRUSTED_PROXIES", 0),
        # Non-public addresses (loopback, private...) the portal's outbound requests may
        # reach, as providers/outbound.py reads them; the list replaces the default:
        # loopback in development, nothing in production.
        "PORTAL_OUTBOUND_ALLOW": os.environ.get(
            "PORTAL_OUTBOUND_ALLOW", "" if production else outbound.LOOPBACK),
        # Single sign-on with OpenID Connect (portal/sso.py); all three set it up.
        "PORTAL_OIDC_ISSUER": os.environ.get("PORTAL_OIDC_ISSUER", "").strip(),
        "PORTAL_OIDC_CLIENT_ID": os.environ.get("PORTAL_OIDC_CLIENT_ID", "").strip(),
        "PORTAL_OIDC_CLIENT_SECRET": os.environ.get("PORTAL_OIDC_CLIENT_SECRET", "").strip(),
        # Empty: people with no account are refused at SSO; a role: they get one with it.
        "PORTAL_OIDC_DEFAULT_ROLE": os.environ.get("PORTAL_OIDC_DEFAULT_ROLE", "").strip(),
        # "off" hides password sign-in (only with SSO configured; the CLI still sets them).
        "PORTAL_PASSWORD_LOGIN": os.environ.get("PORTAL_PASSWORD_LOGIN", "on"),
    }
    # OAuth clients per provider: PORTAL_OAUTH_<PROVIDER>_CLIENT_ID, _CLIENT_SECRET, and
    # optionally _AUTHORIZE_URL / _TOKEN_URL.
    settings.update({name: value for name, value in os.environ.items()
                     if name.startswith("PORTAL_OAUTH_") and value})
    if "SECRET_KEY" not in overrides:
        settings["SECRET_KEY"] = _secret_key(instance, production)
    if "PORTAL_VAULT_KEYS" not in overrides:
        settings["PORTAL_VAULT_KEYS"] = _vault_keys(instance, production)
    settings.update(overrides)
    return settings
