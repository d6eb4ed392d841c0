"""Settings from the environment."""

from __future__ import annotations

import base64

import pytest

from portal import create_app
from portal.config import ConfigError


@pytest.fixture
def clean_env(monkeypatch, tmp_path):
    for name in ("DATABASE_URL", "REDIS_URL", "SECRET_KEY", "PORTAL_ENV", "PORT",
                 "PORTAL_VAULT_KEYS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)  # no .env from the checkout
    return tmp_path


def test_defaults_live_under_instance(clean_env):
    app = create_app({"INSTANCE_PATH": str(clean_env / "inst")})
    assert app.config["SQLALCHEMY_DATABASE_URI"] == f"sqlite:///{clean_env / 'inst' / 'portal.db'}"
    assert app.config["REDIS_URL"] == f"unix://{clean_env / 'inst' / 'redis.sock'}"
    key = (clean_env / "inst" / "secret_key").read_text()
    assert app.config["SECRET_KEY"] == key and len(key) > 40
    again = create_app({"INSTANCE_PATH": str(clean_env / "inst")})
    assert again.config["SECRET_KEY"] == key, "generated once, then kept"


def test_production_refuses_to_start_without_a_secret_key_or_vault_keys(clean_env,
                                                                          monkeypatch):
    monkeypatch.setenv("PORTAL_ENV", "production")
    with pytest.raises(ConfigError, match="SECRET_KEY must be set"):
        create_app({"INSTANCE_PATH": str(clean_env / "inst")})
    monkeypatch.setenv("SECRET_KEY", "s" * 40)
    with pytest.raises(ConfigError, match="PORTAL_VAULT_KEYS must be set"):
        create_app({"INSTANCE_PATH": str(clean_env / "inst")})
    assert not (clean_env / "inst" / "vault-keys").exists(), "no development key in production"
    monkeypatch.setenv("PORTAL_VAULT_KEYS", "k1:" + base64.b64encode(b"k" * 32).decode())
    app = create_app({"INSTANCE_PATH": str(clean_env / "inst")})
    assert app.config["SESSION_COOKIE_SECURE"] is True
    # The sign-in page starts a session (its CSRF token): a __Host- cookie, Secure, Path=/,
    # no Domain, so no sibling subdomain can set or replace it.
    cookie = app.test_client().get("/login", base_url="https://portal.test").headers["Set-Cookie"]
    assert cookie.startswith("__Host-session=") and "; Secure" in cookie and "; Path=/" in cookie
    assert "Domain=" not in cookie
    assert app.config["REMEMBER_COOKIE_NAME"].startswith("__Host-")


@pytest.mark.parametrize("keys, problem", [
    ("k1", "written id:base64key"),
    ("k1:not base64!", "not base64"),
    ("k1:" + base64.b64encode(b"short").decode(), "must be 32 bytes"),
    ("k1:{key},k1:{key}", "appears twice"),
])
def test_bad_vault_keys_stop_the_start_with_a_clear_message(clean_env, monkeypatch, keys,
                                                           problem):
    key = base64.b64encode(b"k" * 32).decode()
    monkeypatch.setenv("PORTAL_VAULT_KEYS", keys.format(key=key))
    with pytest.raises(ConfigError, match=problem):
        create_app({"INSTANCE_PATH": str(clean_env / "inst")})


def test_development_generates_a_vault_key_once_and_warns(clean_env, caplog):
    first = create_app({"INSTANCE_PATH": str(clean_env / "inst")})
    second = create_app({"INSTANCE_PATH": str(clean_env / "inst")})
    assert first.config["PORTAL_VAULT_KEYS"] == second.config["PORTAL_VAULT_KEYS"]
    assert "development key" in caplog.text
    assert oct((clean_env / "inst" / "vault-keys").stat().st_mode & 0o777) == "0o600"


@pytest.mark.parametrize("url", ["postgres://u@h/db", "postgresql://u@h/db"])
def test_postgres_urls_use_psycopg3(clean_env, monkeypatch, url):
    monkeypatch.setenv("DATABASE_URL", url)
    app = create_app({"INSTANCE_PATH": str(clean_env / "inst")})
    assert app.config["SQLALCHEMY_DATABASE_URI"] == "postgresql+psycopg://u@h/db"


def test_bad_numbers_name_the_variable(clean_env, monkeypatch):
    monkeypatch.setenv("PORTAL_MAX_UPLOAD_MB", "lots")
    with pytest.raises(ConfigError, match="PORTAL_MAX_UPLOAD_MB"):
        create_app({"INSTANCE_PATH": str(clean_env / "inst")})
