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

    def handle(self, request):
        from werkzeug.wrappers import Response

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
        app.config["PORTAL_OAUTH_MAILCHIMP_TOKEN_URL"] = hostile.base_url + "/token"
        work()
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
