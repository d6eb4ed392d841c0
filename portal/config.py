"""Settings read from the environment (and a .env file); every variable is in the README."""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Any

from dotenv import load_dotenv


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
        "SQLALCHEMY_ENGINE_OPTIONS": {"pool_pre_ping": True},
    }
    if "SECRET_KEY" not in overrides:
        settings["SECRET_KEY"] = _secret_key(instance, production)
    settings.update(overrides)
    return settings
