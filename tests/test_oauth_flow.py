"""OAuth 2.0 sign-in against a real authorization server (Authlib's server components on
loopback): consent granted and denied, state checks, PKCE, and token refresh by workers
with a refresh token that rotates on every use."""

from __future__ import annotations

import base64
import hashlib
import threading
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from sqlalchemy import select

from portal import vault
from portal.extensions import db
from portal.jobs import create_job
from portal.models import AuditEntry, Authorization, AuthorizationVersion
from portal.models.types import utcnow
from providers import get_provider
from tests.conftest import canary
from tests.loopback import MailchimpServer
from tests.oauth_server import OAuthServer
from tests.test_job_path import fresh, kinds

CALLBACK = "http://localhost/vault/oauth/mailchimp/callback"


class LatestToken:
    """The Mailchimp stand-in accepts only the newest access token the OAuth server issued."""

    def __init__(self, server: OAuthServer):
        self.server = server

    def __contains__(self, token: object) -> bool:
        return bool(self.server.issued) and token == self.server.issued[-1]["access_token"]


def oauth_settings(server: OAuthServer) -> dict[str, str]:
    return {
        "PORTAL_OAUTH_MAILCHIMP_CLIENT_ID": server.client.client_id,
        "PORTAL_OAUTH_MAILCHIMP_CLIENT_SECRET": server.client.client_secret,
        "PORTAL_OAUTH_MAILCHIMP_AUTHORIZE_URL": server.authorize_url,
        "PORTAL_OAUTH_MAILCHIMP_TOKEN_URL": server.token_url,
    }


@pytest.fixture
def oauth(app, monkeypatch):
    """An authorization server and a Mailchimp API stand-in, wired into the portal's
    settings the way an operator would (client id/secret, endpoint overrides)."""
    with OAuthServer(redirect_uris=[CALLBACK]) as server, MailchimpServer() as mailchimp:
        mailchimp.access_tokens = LatestToken(server)
        app.config.update(oauth_settings(server))
        monkeypatch.setenv("PORTAL_MAILCHIMP_METADATA_URL", mailchimp.metadata_url)
        monkeypatch.setenv("PORTAL_MAILCHIMP_API_URL", mailchimp.api_url)
        yield server, mailchimp


def start(client, auth, label: str = "Mailchimp via OAuth", **extra) -> str:
    response = client.post("/vault/new/mailchimp/oauth2", data={
        "csrf_token": auth.csrf(), "label": label, "description": "", **extra})
    assert response.status_code == 303, response.get_data(as_text=True)
    return response.headers["Location"]


def consent(authorize_url: str) -> str:
    """The browser's trip to the provider: it answers with a redirect to our callback."""
    answer = httpx.get(authorize_url, follow_redirects=False)
    assert answer.status_code == 302, answer.text
    location = answer.headers["location"]
    assert location.startswith(CALLBACK)
    return location.removeprefix("http://localhost")


def record_tokens(server: OAuthServer) -> None:
    for issued in server.issued:
        canary(issued["access_token"])
        canary(issued["refresh_token"])


def test_sign_in_with_pkce_creates_the_authorization(client, auth, oauth):
    server, _ = oauth
    # A token response with more than RFC 6749's fields: none of them leaves the Vault.
    server.token_extras = {"signature": canary("sig-of-the-grant-xyz"),
                           "instance_url": canary("https://acme-tenant.example.net")}
    auth.login("operator")
    authorize = start(client, auth)
    query = parse_qs(urlsplit(authorize).query)
    assert authorize.startswith(server.authorize_url)
    assert query["code_challenge_method"] == ["S256"] and query["redirect_uri"] == [CALLBACK]
    # The PKCE verifier and the state stay on the server side (Redis), not in the cookie.
    with client.session_transaction() as session:
        assert "code_verifier" not in repr(dict(session))
    back = consent(authorize)
    response = client.get(back)
    record_tokens(server)
    authorization = db.session.scalars(select(Authorization)).one()
    assert response.status_code == 303
    assert response.headers["Location"] == f"/vault/{authorization.id}"
    # The token request carried the verifier whose S256 hash is the challenge we sent.
    exchange = server.token_requests[-1]
    digest = hashlib.sha256(exchange["code_verifier"].encode()).digest()
    assert base64.urlsafe_b64encode(digest).rstrip(b"=").decode() == query["code_challenge"][0]
    credentials = vault.current_credentials(authorization)
    assert credentials["access_token"] == server.issued[-1]["access_token"]
    assert credentials["account"] == "acme" and credentials["api_endpoint"]
    assert authorization.public["set"] == ["access_token", "refresh_token"]
    assert set(authorization.public["values"]) == {"account", "dc", "api_endpoint"}
    assert credentials["signature"] == "sig-of-the-grant-xyz"  # kept, encrypted
    page = client.get(f"/vault/{authorization.id}").get_data(as_text=True)
    assert "Signed in as <strong>acme</strong>" in page and "Re-authorize" in page
    health = vault.test_connection(authorization, actor="test")
    assert health.status == "healthy" and "acme" in health.message
    # The same state cannot be used twice.
    again = client.get(back)
    assert "cannot be finished" in again.get_data(as_text=True)
    assert db.session.scalars(select(Authorization)).all() == [authorization]


def test_consent_denied_saves_nothing(client, auth, oauth):
    server, _ = oauth
    auth.login("operator")
    server.consent = "deny"
    response = client.get(consent(start(client, auth)))
    page = response.get_data(as_text=True)
    assert response.status_code == 400
    assert "did not grant access" in page and "Nothing was saved" in page
    assert db.session.scalars(select(Authorization)).all() == []
    assert not any(request["grant_type"] == "authorization_code"
                   for request in server.token_requests)


def test_a_forged_or_foreign_state_is_rejected(client, auth, oauth):
    server, _ = oauth
    auth.login("operator")
    back = consent(start(client, auth))
    forged = back.replace("state=", "state=forged")
    assert "cannot be finished" in client.get(forged).get_data(as_text=True)
    # The right state, but from a browser session that did not start it: Authlib finds
    # no state of its own in the session.
    with client.session_transaction() as session:
        for key in [key for key in session if key.startswith("_state_")]:
            del session[key]
    page = client.get(back).get_data(as_text=True)
    assert "did not match the one started here" in page
    assert db.session.scalars(select(Authorization)).all() == []
    assert not any(request["grant_type"] == "authorization_code"
                   for request in server.token_requests), "no code was exchanged"


def test_reauthorize_in_place_adds_a_version(client, auth, oauth):
    server, _ = oauth
    auth.login("operator")
    client.get(consent(start(client, auth)))
    authorization = db.session.scalars(select(Authorization)).one()
    response = client.post(f"/vault/{authorization.id}/reauthorize",
                           data={"csrf_token": auth.csrf()})
    client.get(consent(response.headers["Location"]))
    record_tokens(server)
    authorization = db.session.get(Authorization, authorization.id, populate_existing=True)
    assert authorization.current_version == 2
    assert vault.current_credentials(authorization)["access_token"] == (
        server.issued[-1]["access_token"])
    reasons = db.session.scalars(select(AuthorizationVersion.reason)
                                 .order_by(AuthorizationVersion.version)).all()
    assert reasons == ["created", "reauthorized"]


def signed_in(client, auth, server) -> Authorization:
    auth.login("operator")
    client.get(consent(start(client, auth)))
    record_tokens(server)
    return db.session.scalars(select(Authorization)).one()


def test_workers_refresh_an_expiring_token_and_follow_the_rotation(client, auth, oauth,
                                                                   work):
    from workers.dispatcher import dispatch_once

    server, mailchimp = oauth
    server.access_token_lifetime = 60  # inside the refresh margin: every run renews it
    authorization = signed_in(client, auth, server)
    mailchimp.add_member("list1", "ada@example.com")
    provider = get_provider("mailchimp")
    job = create_job(provider=provider, job_type=provider.job_type("import_members"),
                     authorization=authorization, name="members", description="",
                     config={"list_id": "list1", "stream": "members", "status": "any"},
                     created_by=authorization.owner, retry_policy=None,
                     schedule={"kind": "interval", "every_minutes": 60})
    work()
    record_tokens(server)
    assert fresh(job).status == "sleeping" and "error" not in kinds(job)
    assert server.refresh_count() == 1
    # The second run renews again, with the refresh token the first renewal returned
    # (the first one is spent: the server refuses it).
    job = fresh(job)
    job.next_run_at = utcnow()
    db.session.commit()
    dispatch_once()
    work()
    record_tokens(server)
    assert server.refresh_count() == 2 and "error" not in kinds(job)
    assert [r["ok"] for r in server.token_requests if r["grant_type"] == "refresh_token"] == [
        True, True]
    versions = db.session.scalars(
        select(AuthorizationVersion).order_by(AuthorizationVersion.version)).all()
    assert [v.reason for v in versions] == ["created", "refreshed", "refreshed"]
    assert {v.created_by_label for v in versions[1:]} == {f"job {job.id}"}
    refreshed = db.session.scalars(select(AuditEntry).where(AuditEntry.action == "refreshed"))
    assert len(refreshed.all()) == 2


def test_two_workers_renewing_at_once_spend_the_refresh_token_once(client, auth, oauth, app):
    server, _ = oauth
    server.access_token_lifetime = 60
    authorization = signed_in(client, auth, server)
    server.access_token_lifetime = 3600  # the renewed token is good for an hour
    results: list[str] = []
    errors: list[BaseException] = []

    def worker() -> None:
        with app.app_context():
            try:
                found = db.session.get(Authorization, authorization.id)
                results.append(vault.credentials_for(found, actor="race")["access_token"])
            except BaseException as exc:  # reported below
                errors.append(exc)
            finally:
                db.session.remove()

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    record_tokens(server)
    assert not errors, errors
    assert server.refresh_count() == 1, "the second worker used the first one's new token"
    assert results[0] == results[1] == server.issued[-1]["access_token"]


def test_a_refused_refresh_marks_the_authorization_unhealthy(client, auth, oauth, work):
    server, mailchimp = oauth
    server.access_token_lifetime = 60
    authorization = signed_in(client, auth, server)
    # Someone else spent the refresh token (or the user revoked the app).
    stored = vault.current_credentials(authorization)
    httpx.post(server.token_url, data={
        "grant_type": "refresh_token", "refresh_token": stored["refresh_token"],
        "client_id": server.client.client_id, "client_secret": server.client.client_secret})
    record_tokens(server)
    calls_before = len(mailchimp.requests)
    provider = get_provider("mailchimp")
    job = create_job(provider=provider, job_type=provider.job_type("import_members"),
                     authorization=authorization, name="members", description="",
                     config={"list_id": "list1", "stream": "members", "status": "any"},
                     created_by=authorization.owner, retry_policy=None, schedule=None)
    work()
    job = fresh(job)
    assert job.status == "sleeping" and kinds(job)[-1] == "error"
    authorization = db.session.get(Authorization, authorization.id, populate_existing=True)
    assert authorization.health == "unhealthy"
    assert "re-authorize it in the Vault" in authorization.health_message
    assert len(mailchimp.requests) == calls_before, "no API call with a dead token"


def test_behind_a_trusted_proxy_the_redirect_url_is_https(oauth, make_user, database_url,
                                                         redis_url, tmp_path):
    from tests.conftest import Auth, _make_app

    server, _ = oauth
    proxied = _make_app(database_url, redis_url, tmp_path / "proxied",
                        PORTAL_TRUSTED_PROXIES=1, **{
                            name: value for name, value in oauth_settings(server).items()})
    with proxied.app_context():
        client = proxied.test_client()
        Auth(client, make_user).login("operator")
        response = client.post("/vault/new/mailchimp/oauth2", data={
            "csrf_token": Auth(client, make_user).csrf(), "label": "x"},
            headers={"X-Forwarded-Proto": "https", "X-Forwarded-Host": "portal.example.com",
                     # over https, Flask-WTF also checks that the form came from this host
                     "Referer": "https://portal.example.com/vault/new/mailchimp/oauth2"})
        query = parse_qs(urlsplit(response.headers["Location"]).query)
    assert query["redirect_uri"] == [
        "https://portal.example.com/vault/oauth/mailchimp/callback"]
