"""Single sign-on against a real OpenID Connect provider on loopback (tests/oidc_server.py)."""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest
import requests
from click.testing import Result
from sqlalchemy import select

from portal.config import ConfigError
from portal.extensions import db
from portal.models import AuditEntry, User
from tests.conftest import TEST_PASSWORD, _make_app, csrf_token
from tests.oidc_server import OIDCServer


@pytest.fixture
def provider(app):
    with OIDCServer(client_id="portal", client_secret="sso-secret") as server:
        app.config.update(PORTAL_OIDC_ISSUER=server.issuer, PORTAL_OIDC_CLIENT_ID="portal",
                          PORTAL_OIDC_CLIENT_SECRET="sso-secret", PORTAL_OIDC_DEFAULT_ROLE="")
        yield server


def sso_round_trip(client, server):
    """Start at the portal, let the provider answer, and bring its answer back."""
    started = client.post("/login/sso", data={"csrf_token": csrf_token(client)})
    assert started.status_code == 302, started.get_data(as_text=True)
    assert started.headers["Location"].startswith(server.issuer + "/authorize?")
    answer = requests.get(started.headers["Location"], allow_redirects=False, timeout=10)
    assert answer.status_code == 302, answer.text
    back = urlsplit(answer.headers["Location"])
    assert back.path == "/login/sso/callback"
    return client.get(f"{back.path}?{back.query}")


def signed_in(client) -> bool:
    return client.get("/jobs").status_code == 200


def refused_with(client, response, message: str) -> None:
    assert response.status_code == 303
    assert urlsplit(response.headers["Location"]).path == "/login"
    page = client.get("/login").get_data(as_text=True)
    assert message in page, page
    assert not signed_in(client)


def actions() -> list[tuple[str, str]]:
    return [(entry.action, entry.summary) for entry in db.session.scalars(
        select(AuditEntry).order_by(AuditEntry.id))]


def test_sign_in_with_sso(client, make_user, provider):
    user = make_user("operator", "Ana@Example.com")
    provider.person["email"] = "ana@EXAMPLE.com"  # matched case-insensitively
    response = sso_round_trip(client, provider)
    assert response.status_code == 303 and response.headers["Location"].endswith("/jobs")
    assert signed_in(client)
    # The portal sent a nonce and a PKCE challenge.
    assert provider.nonces[-1] and provider.code_challenges[-1]
    db.session.expire_all()
    assert user.last_login_method == "sso" and user.last_login_at is not None
    assert ("signed_in", "Signed in (sso).") in actions()
    # Sessions are the same as password ones: signing out ends them.
    client.post("/logout", data={"csrf_token": csrf_token(client, "/jobs")})
    assert not signed_in(client)


@pytest.mark.parametrize("audience, azp", [
    (["someone-else"], None),
    # Authlib alone accepts this one (aud another client, azp this one): the portal must not.
    (["someone-else"], "portal"),
])
def test_a_token_for_another_audience_is_refused(client, make_user, provider, audience, azp):
    make_user("operator", "ana@example.com")
    provider.audience, provider.azp = audience, azp
    response = sso_round_trip(client, provider)
    refused_with(client, response, "could not be verified")
    assert any(action == "sign_in_failed" and "ID token refused" in summary
               for action, summary in actions())


def test_unknown_person_is_refused_without_auto_create(client, provider):
    provider.person["email"] = "new@example.com"
    response = sso_round_trip(client, provider)
    refused_with(client, response, "There is no account for new@example.com")
    assert db.session.scalar(select(User).where(User.email == "new@example.com")) is None


def test_unknown_person_is_created_with_the_default_role(app, client, provider):
    app.config["PORTAL_OIDC_DEFAULT_ROLE"] = "viewer"
    provider.person.update(email="New@Example.com", name="Newcomer")
    response = sso_round_trip(client, provider)
    assert response.status_code == 303 and response.headers["Location"].endswith("/jobs")
    assert signed_in(client)
    user = db.session.scalar(select(User).where(User.email == "new@example.com"))
    assert user.role == "viewer" and user.name == "Newcomer"
    assert ("created", "User created at first single sign-on with the viewer role") in actions()
    # A password nobody knows: the account cannot be signed in to with a guess.
    assert not user.check_password("")


def test_disabled_user_is_refused(client, make_user, provider):
    user = make_user("operator", "ana@example.com")
    user.active = False
    db.session.commit()
    refused_with(client, sso_round_trip(client, provider), "Your account is disabled")


def test_unverified_email_is_refused(client, make_user, provider):
    make_user("operator", "ana@example.com")
    provider.person["email_verified"] = False
    refused_with(client, sso_round_trip(client, provider), "not verified")


def test_a_callback_cannot_be_replayed(client, make_user, provider):
    make_user("operator", "ana@example.com")
    started = client.post("/login/sso", data={"csrf_token": csrf_token(client)})
    answer = requests.get(started.headers["Location"], allow_redirects=False, timeout=10)
    back = urlsplit(answer.headers["Location"])
    assert client.get(f"{back.path}?{back.query}").status_code == 303
    assert signed_in(client)
    client.post("/logout", data={"csrf_token": csrf_token(client, "/jobs")})
    refused_with(client, client.get(f"{back.path}?{back.query}"), "Start it again")


def test_provider_error_and_unreachable_provider_are_not_500(app, client, provider):
    response = client.get("/login/sso/callback?error=access_denied&state=x")
    refused_with(client, response, "did not sign you in")
    app.config["PORTAL_OIDC_ISSUER"] = "http://127.0.0.1:9"  # nothing listens there
    app.extensions["portal_oauth"]._registry.pop("portal_sso", None)
    app.extensions["portal_oauth"]._clients.pop("portal_sso", None)
    response = client.post("/login/sso", data={"csrf_token": csrf_token(client)})
    assert response.status_code == 502
    assert "could not be reached" in response.get_data(as_text=True)


def test_password_sign_in_can_be_switched_off(app, client, make_user, provider):
    user = make_user("operator", "ana@example.com")
    app.config["PORTAL_PASSWORD_LOGIN"] = "off"
    page = client.get("/login").get_data(as_text=True)
    assert "Sign in with SSO" in page and 'name="password"' not in page
    response = client.post("/login", data={"email": user.email, "password": TEST_PASSWORD,
                                           "csrf_token": csrf_token(client)})
    assert response.status_code == 403
    assert "Password sign-in is switched off" in response.get_data(as_text=True)
    assert not signed_in(client)
    assert sso_round_trip(client, provider).status_code == 303 and signed_in(client)


def test_password_sign_in_off_needs_sso(database_url, redis_url, tmp_path):
    with pytest.raises(ConfigError, match="PORTAL_PASSWORD_LOGIN=off needs single sign-on"):
        _make_app(database_url, redis_url, tmp_path / "a", PORTAL_PASSWORD_LOGIN="off")
    with pytest.raises(ConfigError, match="PORTAL_OIDC_CLIENT_SECRET together"):
        _make_app(database_url, redis_url, tmp_path / "b", PORTAL_OIDC_ISSUER="http://x",
                  PORTAL_OIDC_CLIENT_ID="portal")
    with pytest.raises(ConfigError, match="PORTAL_OIDC_DEFAULT_ROLE"):
        _make_app(database_url, redis_url, tmp_path / "c", PORTAL_OIDC_DEFAULT_ROLE="boss")


def test_cli_sets_passwords_with_password_sign_in_off(app, make_user, database_url, redis_url,
                                                      tmp_path):
    make_user("admin", "boss@example.com")
    off = _make_app(database_url, redis_url, tmp_path / "off", PORTAL_PASSWORD_LOGIN="off",
                    PORTAL_OIDC_ISSUER="http://127.0.0.1:9", PORTAL_OIDC_CLIENT_ID="portal",
                    PORTAL_OIDC_CLIENT_SECRET="sso-secret")
    result: Result = off.test_cli_runner().invoke(args=[
        "users", "set-password", "boss@example.com", "--password", "plum lantern orbit 42"])
    assert result.exit_code == 0, result.output
    db.session.expire_all()
    user = db.session.scalar(select(User).where(User.email == "boss@example.com"))
    assert user.check_password("plum lantern orbit 42")


def test_the_sign_in_page_lets_the_form_go_to_the_provider(client, provider):
    policy = client.get("/login").headers["Content-Security-Policy"]
    form_action = next(part for part in policy.split(";") if "form-action" in part)
    assert provider.issuer in form_action
