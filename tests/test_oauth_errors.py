"""What an OAuth provider writes in an error never reaches a page, a job message or the
health of an authorization beyond its standard code: a hostile or broken token endpoint
echoing the refresh token (or the client secret) it was sent, and free text in the
callback's query string (which anyone can put in a link)."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import select

from portal import vault
from portal.extensions import db
from portal.jobs import create_job
from portal.models import Authorization, JobEvent
from providers import get_provider
from tests.loopback import LoopbackServer
from tests.test_job_path import fresh
from tests.test_oauth_flow import consent, oauth, signed_in, start  # noqa: F401 (fixture)


class EchoingTokenEndpoint(LoopbackServer):
    """A token endpoint that refuses every request, quoting what it was sent as `error`."""

    def __init__(self, echo):
        super().__init__()
        self.echo = echo  # request -> the text to answer as the error code
        self.requests: list[str] = []

    def handle(self, request):
        from werkzeug.wrappers import Response

        self.requests.append(request.path)
        body = {"error": self.echo(request), "error_description": "see error"}
        return Response(json.dumps(body), status=400, content_type="application/json")


@pytest.mark.parametrize("echo", [
    lambda request: request.form["refresh_token"],
    lambda request: request.form["refresh_token"].lower(),  # looks like a code: [a-z0-9_.-]
    lambda request: request.authorization.password,  # the client secret, sent as basic auth
], ids=["refresh-token", "refresh-token-lower-case", "client-secret"])
def test_a_refresh_error_quotes_no_secret(client, auth, oauth, work, app, echo):  # noqa: F811
    server, _ = oauth
    server.access_token_lifetime = 60  # inside the refresh margin: the job renews it
    authorization = signed_in(client, auth, server)
    stored = vault.current_credentials(authorization)
    provider = get_provider("mailchimp")
    job = create_job(provider=provider, job_type=provider.job_type("import_members"),
                     authorization=authorization, name="members", description="",
                     config={"list_id": "list1", "stream": "members", "status": "any"},
                     created_by=authorization.owner, retry_policy=None, schedule=None)
    with EchoingTokenEndpoint(echo) as hostile:
        # As if the sign-in had been made there (a token is only renewed where it was issued).
        app.config["PORTAL_OAUTH_MAILCHIMP_TOKEN_URL"] = hostile.base_url + "/token"
        vault.replace(authorization, {**stored, vault.TOKEN_ENDPOINT: hostile.base_url + "/token"},
                      expected_version=authorization.current_version, reason="test",
                      actor="test")
        db.session.commit()
        work()
        assert hostile.requests == ["/token"]
    job = fresh(job)
    messages = " ".join(db.session.scalars(
        select(JobEvent.message).where(JobEvent.job_id == job.id)).all())
    authorization = db.session.get(Authorization, authorization.id, populate_existing=True)
    assert "refused to renew" in messages
    assert "did not name in the standard way" in messages
    for secret in (stored["refresh_token"], server.client.client_secret):
        for shown in (messages, authorization.health_message or ""):
            assert secret.lower() not in shown.lower()


def test_the_callback_shows_no_free_text_from_the_link(client, auth, oauth):  # noqa: F811
    auth.login("operator")
    authorize = start(client, auth)
    back = consent(authorize)  # carries the state of this sign-in
    state = back.split("state=")[1].split("&")[0]
    response = client.get("/vault/oauth/mailchimp/callback", query_string={
        "state": state, "error": "access_denied",
        "error_description": "Your session expired: sign in again at evil.example"})
    page = response.get_data(as_text=True)
    assert "did not grant access (access_denied)" in page
    assert "evil.example" not in page


def test_the_callback_names_no_code_that_is_not_a_code(client, auth, oauth):  # noqa: F811
    auth.login("operator")
    back = consent(start(client, auth))
    state = back.split("state=")[1].split("&")[0]
    response = client.get("/vault/oauth/mailchimp/callback", query_string={
        "state": state, "error": "Call +1 555 0100 to restore access"})
    page = response.get_data(as_text=True)
    assert "did not name in the standard way" in page and "555" not in page


def test_a_refresh_token_is_not_sent_to_a_changed_token_endpoint(client, auth, oauth,  # noqa: F811
                                                                 app):
    server, _ = oauth
    server.access_token_lifetime = 60  # inside the refresh margin: each use renews it
    authorization = signed_in(client, auth, server)
    assert vault.current_credentials(authorization)[vault.TOKEN_ENDPOINT] == server.token_url
    with EchoingTokenEndpoint(lambda request: "invalid_grant") as elsewhere:
        app.config["PORTAL_OAUTH_MAILCHIMP_TOKEN_URL"] = elsewhere.base_url + "/oauth2/token"
        with pytest.raises(vault.AuthError) as raised:
            vault.credentials_for(authorization, actor="test")
        assert elsewhere.requests == []
    assert raised.value.code == "oauth_endpoint_moved"
    assert "Re-authorize" in str(raised.value)
    # Back at the endpoint that issued it, the renewal works and keeps the pin.
    app.config["PORTAL_OAUTH_MAILCHIMP_TOKEN_URL"] = server.token_url
    renewed = vault.credentials_for(authorization, actor="test")
    assert renewed[vault.TOKEN_ENDPOINT] == server.token_url and server.refresh_count() == 1
