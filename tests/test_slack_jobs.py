"""'Post audience digest' run by a real RQ worker against the Slack-shaped loopback server:
one message per run with only what changed since the last digest, nothing posted when
nothing changed, Slack's rate limit, refused tokens, a channel the app is not in, a run
that fails half way resuming from its cursor, and the OAuth 2.0 sign-in through the Vault
with a rotating refresh token renewed by the worker."""

from __future__ import annotations

from datetime import timedelta
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from sqlalchemy import select

from portal import membership, vault
from portal.extensions import db
from portal.jobs import create_job
from portal.models import Authorization, AuthorizationVersion
from portal.models.types import utcnow
from providers import get_provider, slack
from tests.conftest import canary
from tests.loopback_slack import CLIENT_ID, CLIENT_SECRET, SlackServer
from tests.test_audience_export import make_audience, run_now, say
from tests.test_job_path import events, fresh, kinds

BOT = "xoxb-1111-2222-abcdefabcdef"
CALLBACK = "http://localhost/vault/oauth/slack/callback"
PRO = [{"field": "plan", "op": "equals", "value": "pro"}]


@pytest.fixture
def owner(make_user):
    return make_user("operator")


@pytest.fixture
def server(app, monkeypatch):
    with SlackServer(bot_token=canary(BOT)) as running:
        monkeypatch.setenv(slack.API_URL_ENV, running.api_url)
        running.add_channel("growth")
        yield running


def bot_authorization(owner):
    provider = get_provider("slack")
    authorization = vault.create(provider, provider.auth_method("bot_token"), label="Slack bot",
                                 description="", credentials={"bot_token": BOT}, by=owner)
    db.session.commit()
    return authorization


def digest_job(owner, authorization, audience, channel="#growth"):
    provider = get_provider("slack")
    job = create_job(provider=provider, job_type=provider.job_type("post_digest"),
                     authorization=authorization, name="Pro digest", description="",
                     config={"audience": audience.slug, "channel": channel,
                             "identifier": "email"},
                     created_by=owner, schedule={"kind": "interval", "every_minutes": 1440})
    db.session.commit()
    return job


def last_message(job) -> str:
    return [event.message for event in events(job) if event.message][-1]


def people(count: int, plan: str = "pro", at: int = 0) -> None:
    say(*[{"email": f"p{n}@example.com", "plan": plan} for n in range(count)], at=at)


def test_each_run_posts_one_digest_of_what_changed_and_nothing_when_nothing_did(
        app, work, owner, server):
    say({"email": "ann@example.com", "plan": "pro"}, {"email": "bob@example.com",
                                                      "plan": "free"},
        {"user_id": 7, "plan": "pro"}, {"email": "cy@example.com", "plan": "pro"})
    audience = make_audience(owner, PRO)
    job = digest_job(owner, bot_authorization(owner), audience)
    assert work()
    [first] = server.posted
    assert first.channel == server.channels[0].id and first.token == BOT
    assert first.text.splitlines() == [
        f"Audience digest for {audience.slug}: 2 entered, 0 left.",
        "Entered: ann@example.com, cy@example.com"]
    assert first.arguments["unfurl_links"] is False
    job = fresh(job)
    assert (job.added_total, job.removed_total, job.omitted_total) == (2, 0, 1)
    assert "Posted the digest" in last_message(job)
    # Nothing changed: no message.
    run_now(job, owner)
    assert work()
    assert len(server.posted) == 1
    assert "no change since the last digest; nothing posted" in last_message(job)
    # Bob joins, Ann leaves: the next digest has only that.
    say({"email": "bob@example.com", "plan": "pro"}, {"email": "ann@example.com",
                                                      "plan": "free"}, at=100)
    run_now(job, owner)
    assert work()
    assert server.posted[-1].text.splitlines() == [
        f"Audience digest for {audience.slug}: 1 entered, 1 left.",
        "Entered: bob@example.com", "Left: ann@example.com"]
    assert len(server.posted) == 2
    assert membership.exported_count(job.id) == 2


def test_a_big_audience_is_compared_over_several_units_and_a_failed_post_resumes(
        app, work, owner, server, monkeypatch):
    monkeypatch.setattr(slack, "WINDOWS_PER_UNIT", 1)  # windows of 2 (the test batch size)
    people(13)
    audience = make_audience(owner, PRO)
    job = digest_job(owner, bot_authorization(owner), audience)
    server.fail_next = [500]  # the post, after six units that only compared
    work()
    job = fresh(job)
    assert server.posted == [] and job.status == "sleeping" and kinds(job)[-1] == "error"
    assert job.cursor["pending"]["entered"] == 12  # the windows before the failed one
    assert membership.exported_count(job.id) == 12
    run_now(job, owner)
    assert work()
    [digest] = server.posted  # one message for the whole audience, nothing counted twice
    assert digest.text.splitlines()[0].endswith(": 13 entered, 0 left.")
    assert digest.text.splitlines()[1].endswith("and 3 more")
    assert membership.exported_count(job.id) == 13
    assert fresh(job).cursor == {"after_profile_id": 0}


def test_rate_limited_runs_sleep_until_retry_after(app, work, owner, server):
    people(2)
    audience = make_audience(owner, PRO)
    authorization = bot_authorization(owner)
    job = digest_job(owner, authorization, audience)
    server.fail_next = [429]  # Retry-After: 7
    before = utcnow()
    work()
    job = fresh(job)
    assert job.status == "sleeping" and server.posted == []
    authorization = db.session.get(Authorization, authorization.id, populate_existing=True)
    held = authorization.rate_limited_until - before
    assert timedelta(seconds=6) <= held <= timedelta(seconds=30)
    assert abs(job.next_run_at - authorization.rate_limited_until) <= timedelta(seconds=1)
    assert "slow down" in last_message(job)
    assert membership.exported_count(job.id) == 0


def test_a_revoked_token_marks_the_authorization_unhealthy(app, work, owner, server):
    people(2)
    audience = make_audience(owner, PRO)
    authorization = bot_authorization(owner)
    job = digest_job(owner, authorization, audience)
    server.errors["chat.postMessage"] = ["token_revoked"]
    work()
    authorization = db.session.get(Authorization, authorization.id, populate_existing=True)
    assert authorization.health == "unhealthy" and "token_revoked" in (
        authorization.health_message)
    assert BOT not in authorization.health_message
    assert kinds(job)[-1] == "error" and server.posted == []
    health = vault.test_connection(authorization, actor="test")  # auth.test works again
    assert health.status == "healthy" and "Acme" in health.message


def test_a_channel_the_app_is_not_in_fails_the_job_saying_to_invite_it(
        app, work, owner, server):
    server.add_channel("private-ops", member=False)
    people(1)
    audience = make_audience(owner, PRO)
    job = digest_job(owner, bot_authorization(owner), audience, channel="#private-ops")
    work()
    job = fresh(job)
    assert job.status == "failed" and server.posted == []
    [said] = [event.message for event in events(job) if "not_in_channel" in event.message]
    assert "/invite" in said


# --- OAuth 2.0 through the Vault -----------------------------------------------------------

@pytest.fixture
def oauth(app, server):
    server.redirect_uris = [CALLBACK]
    app.config.update({
        "PORTAL_OAUTH_SLACK_CLIENT_ID": CLIENT_ID,
        "PORTAL_OAUTH_SLACK_CLIENT_SECRET": canary(CLIENT_SECRET),
        "PORTAL_OAUTH_SLACK_AUTHORIZE_URL": server.authorize_url,
        "PORTAL_OAUTH_SLACK_TOKEN_URL": server.token_url,
    })
    return server


def record_tokens(server: SlackServer) -> None:
    for issued in server.issued:
        canary(issued["access_token"])
        canary(issued["refresh_token"])


def sign_in(client, auth, server) -> Authorization:
    auth.login("operator")
    response = client.post("/vault/new/slack/oauth2", data={
        "csrf_token": auth.csrf(), "label": "Slack via OAuth", "description": ""})
    assert response.status_code == 303, response.get_data(as_text=True)
    authorize = response.headers["Location"]
    query = parse_qs(urlsplit(authorize).query)
    assert authorize.startswith(server.authorize_url)
    assert query["scope"] == ["chat:write,channels:read,groups:read"]
    assert query["code_challenge_method"] == ["S256"]
    answer = httpx.get(authorize, follow_redirects=False)
    assert answer.status_code == 302
    back = client.get(answer.headers["location"].removeprefix("http://localhost"))
    record_tokens(server)
    assert back.status_code == 303, back.get_data(as_text=True)
    return db.session.scalars(select(Authorization)).one()


def test_sign_in_with_slack_keeps_the_workspace_name(client, auth, oauth):
    authorization = sign_in(client, auth, oauth)
    credentials = vault.current_credentials(authorization)
    assert credentials["access_token"] == oauth.issued[-1]["access_token"]
    assert credentials["account"] == "Acme"
    assert set(authorization.public["values"]) == {"account", "team_id"}
    page = client.get(f"/vault/{authorization.id}").get_data(as_text=True)
    assert "Signed in as <strong>Acme</strong>" in page
    assert oauth.token_requests[-1]["code_verifier"]
    health = vault.test_connection(authorization, actor="test")
    assert health.status == "healthy" and "Acme" in health.message


def test_the_worker_renews_an_expiring_token_through_oauth_v2_access(
        client, auth, oauth, work):
    oauth.access_token_lifetime = 60  # inside the refresh margin: every run renews it
    authorization = sign_in(client, auth, oauth)
    people(2)
    audience = make_audience(authorization.owner, PRO)
    job = digest_job(authorization.owner, authorization, audience)
    assert work()
    record_tokens(oauth)
    assert oauth.refresh_count() == 1 and "error" not in kinds(job)
    [posted] = oauth.posted
    assert posted.token == oauth.issued[-1]["access_token"]  # the renewed token
    versions = db.session.scalars(select(AuthorizationVersion.reason)
                                  .order_by(AuthorizationVersion.version)).all()
    assert versions == ["created", "refreshed"]
    # The rotated refresh token works for the next renewal; the first one is spent.
    say({"email": "new@example.com", "plan": "pro"}, at=100)
    run_now(job, authorization.owner)
    assert work()
    record_tokens(oauth)
    assert oauth.refresh_count() == 2 and len(oauth.posted) == 2
    assert [r["ok"] for r in oauth.token_requests if r["grant_type"] == "refresh_token"] == [
        True, True]


def test_a_refused_renewal_marks_the_authorization_unhealthy(client, auth, oauth, work):
    oauth.access_token_lifetime = 60
    authorization = sign_in(client, auth, oauth)
    oauth.refresh_tokens.clear()  # the app was uninstalled, or the token spent elsewhere
    people(1)
    job = digest_job(authorization.owner, authorization,
                     make_audience(authorization.owner, PRO))
    work()
    authorization = db.session.get(Authorization, authorization.id, populate_existing=True)
    assert authorization.health == "unhealthy"
    assert "re-authorize it in the Vault" in authorization.health_message
    assert kinds(job)[-1] == "error" and oauth.posted == []
