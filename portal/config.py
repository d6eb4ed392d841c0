"""Settings read from the environment (and a .env file); every variable is in the README."""

from __future__ import annotations

import base64
import functools
import json
import logging
import os
import secrets
from pathlib import Path
from typing import Any

from dotenv import load_dotenv

log = logging.getLogger(__name__)


class ConfigError(RuntimeError):
    """The settings cannot work; the message says which variable to set."""


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
        path.write_text(secrets.token_urlsafe(48))
        path.chmod(0o600)
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
        path.write_text(f"dev-{secrets.token_hex(4)}:{base64.b64encode(os.urandom(32)).decode()}")
        path.chmod(0o600)
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
    instance.mkdir(parents=True, exist_ok=True)
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
        "PORTAL_LEASE_SECONDS": _int("PORTAL_LEASE_SECONDS", 30),
        "PORTAL_DISPATCH_INTERVAL": _int("PORTAL_DISPATCH_INTERVAL", 1),
        "PORTAL_ENQUEUE_GRACE_SECONDS": _int("PORTAL_ENQUEUE_GRACE_SECONDS", 10),
        "PORTAL_PURGE_DAYS": _int("PORTAL_PURGE_DAYS", 90),
        # Pages left open for hours (a summary tailing logs) must still be able to POST;
        # the token stays bound to the session.
        "WTF_CSRF_TIME_LIMIT": None,
        "SESSION_COOKIE_HTTPONLY": True,
        "SESSION_COOKIE_SAMESITE": "Lax",
        "SESSION_COOKIE_SECURE": production,
        "REMEMBER_COOKIE_HTTPONLY": True,
        # JSON columns refuse NaN and Infinity (not JSON; PostgreSQL refuses them too).
        "SQLALCHEMY_ENGINE_OPTIONS": {"pool_pre_ping": True, "json_serializer": functools.partial(
            json.dumps, allow_nan=False)},
        "PORTAL_HEALTH_CHECK_HOURS": _int("PORTAL_HEALTH_CHECK_HOURS", 24),
        # Reverse proxies in front of the web server whose X-Forwarded-* headers to trust
        # (so OAuth redirect URLs come out as https://your-host/...).
        "PORTAL_TRUSTED_PROXIES": _int("PORTAL_TRUSTED_PROXIES", 0),
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
