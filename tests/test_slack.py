"""The Slack provider against a Slack-shaped loopback server (tests/loopback_slack.py): Test
connection, the channel menu (paged, archived ones left out), send_message (issue 14's
alerts), Slack's error codes mapped to our errors, the outbound policy and the digest's
text. The digest job itself runs through a real worker in tests/test_slack_jobs.py."""

from __future__ import annotations

from collections.abc import Iterator

import jsonschema
import pytest

from providers import outbound, slack
from providers.base import AuthError, ConfigError, ProviderError, RateLimited
from tests.loopback import unused_url
from tests.loopback_slack import SlackServer

BOT = "xoxb-1111-2222-abcdefabcdef"


@pytest.fixture
def server(monkeypatch) -> Iterator[SlackServer]:
    with SlackServer(bot_token=BOT) as running:
        monkeypatch.setenv(slack.API_URL_ENV, running.api_url)
        yield running


def bot(token: str = BOT) -> dict[str, str]:
    return {"bot_token": token}


def test_definitions():
    provider = slack.PROVIDER
    assert provider.needs_authorization
    oauth = provider.auth_method("oauth2")
    assert oauth.kind == "oauth2" and oauth.oauth.token_url.endswith("/oauth.v2.access")
    assert oauth.oauth.scopes == ("chat:write,channels:read,groups:read",)
    assert provider.auth_method("bot_token").secret_fields == ("bot_token",)
    job_type = provider.job_type("post_digest")
    jsonschema.Draft202012Validator.check_schema(job_type.config_schema)
    assert job_type.config_schema["properties"]["audience"]["x-options"] == "audiences"
    assert job_type.config_schema["properties"]["channel"]["x-options"] == "provider:channels"
    validator = jsonschema.Draft202012Validator(slack.BOT_TOKEN_SCHEMA)
    assert validator.is_valid(bot())
    assert not validator.is_valid(bot("xoxp-user-token-1234567"))


def test_check_with_a_bot_token_and_an_oauth_token(server):
    assert slack.check("bot_token", bot()) == "Connected to Slack workspace Acme as portalbot"
    assert slack.check("oauth2", {"access_token": BOT}) == (
        "Connected to Slack workspace Acme as portalbot")
    assert server.calls == ["auth.test", "auth.test"]


@pytest.mark.parametrize("code", ["invalid_auth", "token_revoked", "account_inactive"])
def test_refused_credentials_are_auth_errors_without_the_token(server, code):
    server.errors["auth.test"] = [code]
    with pytest.raises(AuthError) as caught:
        slack.check("bot_token", bot())
    assert code in str(caught.value) and BOT not in str(caught.value)


def test_an_unknown_token_is_refused(server):
    with pytest.raises(AuthError, match="invalid_auth"):
        slack.check("bot_token", bot("xoxb-9999-stolen-000000"))
    with pytest.raises(AuthError, match="no access token"):
        slack.check("oauth2", {})
    with pytest.raises(ConfigError, match="bot token"):
        slack.check("bot_token", {})


def test_rate_limit_carries_retry_after(server):
    server.fail_next = [429]
    with pytest.raises(RateLimited) as caught:
        slack.send_message("bot_token", bot(), "#general", "hi")
    assert caught.value.retry_after == 7
    server.errors["auth.test"] = ["ratelimited"]  # the error code without the status
    server.retry_after = None
    with pytest.raises(RateLimited):
        slack.check("bot_token", bot())


def test_server_errors_and_outages_are_retryable(server, monkeypatch):
    server.fail_next = [502]
    with pytest.raises(ProviderError) as caught:
        slack.check("bot_token", bot())
    assert type(caught.value) is ProviderError and caught.value.retryable
    assert BOT not in str(caught.value)
    monkeypatch.setenv(slack.API_URL_ENV, unused_url() + "/api/")
    with pytest.raises(ProviderError, match="Could not reach Slack") as caught:
        slack.check("bot_token", bot())
    assert type(caught.value) is ProviderError


def test_channel_menu_pages_with_the_cursor_and_leaves_out_archived(server):
    server.add_channel("general")
    server.add_channel("old-news", archived=True)
    server.add_channel("alerts")
    server.add_channel("secret-room", private=True)
    server.add_channel("zeta")
    choices = slack.PROVIDER.job_type("post_digest").option_sources["channels"](bot())
    assert [label for _, label in choices] == ["#alerts", "#general", "#secret-room", "#zeta"]
    assert choices[1][0] == server.channels[0].id
    assert server.calls.count("conversations.list") == 2  # pages of 2, with the cursor


def test_send_message_posts_plain_text_and_returns_its_ts(server):
    channel = server.add_channel("alerts")
    ts = slack.send_message("bot_token", bot(), channel.id, "Job 'members' failed")
    [posted] = server.posted
    assert posted.channel == channel.id and posted.text == "Job 'members' failed"
    assert posted.arguments["unfurl_links"] is False and float(ts) > 0
    slack.send_message("oauth2", {"access_token": BOT}, "#alerts", "again")
    assert [p.text for p in server.posted] == ["Job 'members' failed", "again"]


@pytest.mark.parametrize(("flags", "code"), [
    ({"member": False}, "not_in_channel"), ({"archived": True}, "is_archived"), (None,
                                                                              "channel_not_found")])
def test_a_channel_the_app_cannot_post_to_is_a_config_error(server, flags, code):
    if flags is not None:
        server.add_channel("quiet", **flags)
    with pytest.raises(ConfigError) as caught:
        slack.send_message("bot_token", bot(), "#quiet", "hello")
    assert code in str(caught.value) and "/invite" in str(caught.value)
    assert not caught.value.retryable and server.posted == []
    with pytest.raises(ConfigError, match="channel ID"):
        slack.send_message("bot_token", bot(), "not a channel!", "hello")


def test_the_outbound_policy_is_checked_before_each_call(server):
    refused = outbound.Policy.parse("")  # production: no loopback
    with outbound.using(refused), pytest.raises(outbound.OutboundRefused):
        slack.check("bot_token", bot())
    assert server.calls == [], "refused before connecting"
    with pytest.raises(outbound.OutboundRefused):
        outbound.check_address("169.254.169.254", 443, policy=refused)


def test_a_proxy_from_the_environment_is_refused(server, monkeypatch):
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")
    monkeypatch.setenv("http_proxy", "http://127.0.0.1:9")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    with pytest.raises(ConfigError, match="proxy"):
        slack.check("bot_token", bot())
    assert server.calls == []


def test_authorized_keeps_the_workspace_name(server):
    token = server.issue_token()
    assert slack.authorized("oauth2", token) == {"account": "Acme", "team_id": "T0001"}
    assert server.calls == []  # the token response named it
    del token["team"]
    assert slack.authorized("oauth2", token)["account"] == "Acme"  # asked auth.test
    assert server.calls == ["auth.test"]
    assert slack.authorized("bot_token", {}) == {}


def test_digest_text_is_bounded_and_link_free():
    tally = {"entered": 14, "left": 1, "changed": 2, "omitted": 0,
             "entered_names": [f"p{n}@example.com" for n in range(10)],
             "left_names": ["<https://evil.example|click>"]}
    text = slack.digest_text("vip", "email", tally)
    assert text.splitlines()[0] == ("Audience digest for vip: 14 entered, 1 left, 2 changed "
                                    "email.")
    assert "p9@example.com and 4 more" in text
    assert "<" not in text and "&lt;https://evil.example|click&gt;" in text
