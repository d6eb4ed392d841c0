"""Mailchimp and webhook providers against real loopback servers: test connection for every
auth method, errors (refused credentials, rate limits, outages), signatures and the OAuth
metadata call. Their run() needs the portal's RunContext and is tested end to end elsewhere."""

from __future__ import annotations

import re
from collections.abc import Iterator

import jsonschema
import pytest

from providers import mailchimp, webhook
from providers.base import AuthError, ConfigError, ProviderError, RateLimited
from tests.loopback import TEST_API_KEY, MailchimpServer, WebhookReceiver, unused_url

WRONG_KEY = "fedcba9876543210fedcba9876543210-us6"
TOKEN = "tok-0123456789abcdef"
SECRET = "hmac-secret-0123456789"
PASSWORD = "pa55word-xyz"


@pytest.fixture
def server(monkeypatch) -> Iterator[MailchimpServer]:
    with MailchimpServer(api_key=TEST_API_KEY, access_tokens={TOKEN}) as running:
        monkeypatch.setenv(mailchimp.API_URL_ENV, running.api_url)
        monkeypatch.setenv(mailchimp.METADATA_URL_ENV, running.metadata_url)
        yield running


def oauth_credentials(token: str = TOKEN) -> dict[str, str]:
    return {"access_token": token, "dc": "us6", "account": "acme"}


# -- Definitions --------------------------------------------------------------------------


@pytest.mark.parametrize("provider", [mailchimp.PROVIDER, webhook.PROVIDER])
def test_schemas_are_valid_json_schema_and_defaults_fit(provider):
    assert provider.needs_authorization
    for method in provider.auth_methods:
        if method.schema is not None:
            jsonschema.Draft202012Validator.check_schema(method.schema)
    for job_type in provider.job_types:
        schema = job_type.config_schema
        jsonschema.Draft202012Validator.check_schema(schema)
        assert set(schema["x-order"]) == set(schema["properties"])
        defaults = {name: spec["default"] for name, spec in schema["properties"].items()
                    if "default" in spec}
        # The defaults and a value for each required field without one make a valid config.
        examples = {"list_id": "a1b2c3d4e5", "stream": "s", "audience": "a"}
        jsonschema.validate({**defaults, **{name: examples[name] for name in schema["required"]
                                            if name not in defaults}}, schema)


def test_webhook_methods_all_carry_a_url_and_mark_their_secrets():
    methods = {method.key: method for method in webhook.PROVIDER.auth_methods}
    assert set(methods) == {"bearer", "basic", "hmac", "open"}
    assert {key: method.secret_fields for key, method in methods.items()} == {
        "bearer": ("token",), "basic": ("password",), "hmac": ("secret",), "open": (),
    }
    for method in methods.values():
        assert "url" in method.schema["required"]
        assert not method.schema["properties"]["url"].get("writeOnly")


# -- Mailchimp: keys and data centers -----------------------------------------------------


@pytest.mark.parametrize(("key", "ok"), [
    (TEST_API_KEY, True),
    ("0123456789abcdef0123456789abcdef-us21", True),
    ("0123456789abcdef0123456789abcdef", False),  # no data center
    ("0123456789abcdef0123456789abcde-us6", False),  # 31 characters
    ("0123456789abcdef0123456789abcdeg-us6", False),  # not hex
    ("0123456789abcdef0123456789abcdef-6us", False),
])
def test_key_pattern(key, ok):
    pattern = mailchimp.API_KEY_SCHEMA["properties"]["api_key"]["pattern"]
    assert bool(re.search(pattern, key)) is ok
    if ok:
        assert mailchimp.datacenter(key) == key.rsplit("-", 1)[1]
    else:
        with pytest.raises(ConfigError) as caught:
            mailchimp.datacenter(key)
        assert key not in str(caught.value)


def test_api_base_comes_from_the_data_center_unless_overridden(monkeypatch):
    monkeypatch.delenv(mailchimp.API_URL_ENV, raising=False)
    assert mailchimp.api_base({"api_key": TEST_API_KEY}) == "https://us6.api.mailchimp.com/3.0"
    assert mailchimp.api_base({"access_token": TOKEN, "dc": "us19"}) == (
        "https://us19.api.mailchimp.com/3.0")
    assert mailchimp.api_base({"access_token": TOKEN,
                               "api_endpoint": "https://us3.api.mailchimp.com"}) == (
        "https://us3.api.mailchimp.com/3.0")
    with pytest.raises(AuthError):
        mailchimp.api_base({"access_token": TOKEN})  # no data center: sign in again
    monkeypatch.setenv(mailchimp.API_URL_ENV, "http://127.0.0.1:5555/3.0/")
    assert mailchimp.api_base({"api_key": TEST_API_KEY}) == "http://127.0.0.1:5555/3.0"


# -- Mailchimp: test connection -----------------------------------------------------------


def test_check_with_api_key(server):
    assert mailchimp.check("api_key", {"api_key": TEST_API_KEY}) == (
        "Connected to Mailchimp account acme")
    assert server.requests == [("GET", "/3.0/", "basic")]


def test_check_with_oauth_token(server):
    assert mailchimp.check("oauth2", oauth_credentials()) == "Connected to Mailchimp account acme"
    assert server.requests == [("GET", "/3.0/", "bearer")]


@pytest.mark.parametrize(("method", "credentials", "secret"), [
    ("api_key", {"api_key": WRONG_KEY}, WRONG_KEY),
    ("oauth2", oauth_credentials("tok-revoked-999"), "tok-revoked-999"),
])
def test_check_refused_credentials(server, method, credentials, secret):
    with pytest.raises(AuthError) as caught:
        mailchimp.check(method, credentials)
    message = str(caught.value)
    assert "refused" in message and "401" in message
    assert secret not in message


def test_check_without_credentials_says_what_is_missing(server):
    with pytest.raises(AuthError, match="no access token"):
        mailchimp.check("oauth2", {})
    with pytest.raises(ConfigError, match="Enter the Mailchimp API key"):
        mailchimp.check("api_key", {})
    assert server.requests == []


def test_rate_limit_carries_retry_after(server):
    server.fail_next = [429]
    with pytest.raises(RateLimited) as caught:
        mailchimp.check("api_key", {"api_key": TEST_API_KEY})
    assert caught.value.retry_after == 7
    server.retry_after = None
    server.fail_next = [429]
    with pytest.raises(RateLimited) as caught:
        mailchimp.check("oauth2", oauth_credentials())
    assert caught.value.retry_after == 60


def test_server_error_is_a_retryable_provider_error(server):
    server.fail_next = [500]
    with pytest.raises(ProviderError) as caught:
        mailchimp.check("api_key", {"api_key": TEST_API_KEY})
    assert type(caught.value) is ProviderError and caught.value.retryable
    assert "HTTP 500" in str(caught.value) and caught.value.code == "http_500"
    assert mailchimp.check("api_key", {"api_key": TEST_API_KEY}).endswith("acme")  # recovered


def test_unreachable_api_is_a_provider_error(monkeypatch):
    monkeypatch.setenv(mailchimp.API_URL_ENV, unused_url() + "/3.0")
    with pytest.raises(ProviderError) as caught:
        mailchimp.check("api_key", {"api_key": TEST_API_KEY})
    assert type(caught.value) is ProviderError and caught.value.code == "unreachable"
    assert "Could not reach Mailchimp" in str(caught.value)
    assert TEST_API_KEY not in str(caught.value)


def test_missing_audience_is_a_config_error(server):
    with pytest.raises(ConfigError, match="no audience with the ID 'nope'"):
        mailchimp.api_get({"api_key": TEST_API_KEY}, "/lists/nope/members",
                          not_found="Mailchimp has no audience with the ID 'nope'")


# -- Mailchimp: OAuth metadata ------------------------------------------------------------


def test_authorized_reads_the_metadata_endpoint(server):
    extra = mailchimp.authorized("oauth2", {"access_token": TOKEN, "token_type": "bearer"})
    assert extra == {"api_endpoint": server.base_url, "account": "acme", "dc": "us6"}
    assert server.requests == [("GET", "/oauth2/metadata", "oauth")]
    assert mailchimp.authorized("api_key", {}) == {}


def test_authorized_with_a_bad_token(server):
    with pytest.raises(AuthError) as caught:
        mailchimp.authorized("oauth2", {"access_token": "tok-stolen-123"})
    assert "tok-stolen-123" not in str(caught.value)


# -- Webhook ------------------------------------------------------------------------------


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    with WebhookReceiver(token=TOKEN) as running:
        yield running


@pytest.mark.parametrize(("method", "receiver_args", "credentials", "auth"), [
    ("open", {}, {}, None),
    ("bearer", {"token": TOKEN}, {"token": TOKEN}, f"Bearer {TOKEN}"),
    ("basic", {"username": "ops", "password": PASSWORD},
     {"username": "ops", "password": PASSWORD}, "Basic "),
    ("hmac", {"secret": SECRET}, {"key_id": "k1", "secret": SECRET}, None),
])
def test_webhook_check_every_method(method, receiver_args, credentials, auth):
    with WebhookReceiver(**receiver_args) as hook:
        assert webhook.check(method, {"url": hook.url, **credentials}) == "Endpoint answered 204"
        [ping] = hook.received
    assert (ping.method, ping.path, ping.json["type"]) == ("POST", "/hook", "ping")
    assert ping.headers["Content-Type"] == "application/json"
    if auth:
        assert ping.headers["Authorization"].startswith(auth)
    else:
        assert "Authorization" not in ping.headers


@pytest.mark.parametrize(("method", "receiver_args", "credentials", "secret"), [
    ("bearer", {"token": TOKEN}, {"token": "tok-wrong-42"}, "tok-wrong-42"),
    ("basic", {"username": "ops", "password": PASSWORD},
     {"username": "ops", "password": "wrong-pa55"}, "wrong-pa55"),
    ("hmac", {"secret": SECRET}, {"key_id": "k1", "secret": "wrong-secret-77"},
     "wrong-secret-77"),
])
def test_webhook_refused_credentials(method, receiver_args, credentials, secret):
    with WebhookReceiver(**receiver_args) as hook:
        with pytest.raises(AuthError) as caught:
            webhook.check(method, {"url": hook.url, **credentials})
    message = str(caught.value)
    assert "refused the credentials (HTTP 401" in message and "127.0.0.1" in message
    assert secret not in message


def test_hmac_signature_covers_timestamp_and_exact_body():
    with WebhookReceiver() as hook:
        webhook.check("hmac", {"url": hook.url, "key_id": "k1", "secret": SECRET})
        [ping] = hook.received
        assert hook.verify(SECRET)
        assert not hook.verify("another-secret-entirely")
    assert ping.headers["X-Portal-Key-Id"] == "k1"
    assert re.fullmatch(r"sha256=[0-9a-f]{64}", ping.headers["X-Portal-Signature"])
    assert ping.headers["X-Portal-Signature"] == webhook.sign(
        SECRET, ping.headers["X-Portal-Timestamp"], ping.body)
    assert SECRET.encode() not in ping.body and "Authorization" not in ping.headers


def test_webhook_rate_limit(receiver):
    receiver.fail_next = [429]
    with pytest.raises(RateLimited) as caught:
        webhook.check("bearer", {"url": receiver.url, "token": TOKEN})
    assert caught.value.retry_after == 7


def test_webhook_error_names_the_status_but_never_a_secret():
    with WebhookReceiver(status=502) as hook:
        hook.error_body = f"upstream broke; you sent Authorization: Bearer {TOKEN} " + "x" * 500
        with pytest.raises(ProviderError) as caught:
            webhook.check("bearer", {"url": hook.url, "token": TOKEN})
    message = str(caught.value)
    assert type(caught.value) is ProviderError and "HTTP 502 Bad Gateway" in message
    # Nothing of the body is repeated: only the status line, in our words.
    assert TOKEN not in message and "upstream" not in message and "xxx" not in message


def test_webhook_unreachable_and_bad_urls():
    with pytest.raises(ProviderError) as caught:
        webhook.check("open", {"url": unused_url() + "/hook"})
    assert caught.value.code == "unreachable"
    for url in ("", "ftp://example.com/x", "not a url"):
        with pytest.raises(ConfigError, match="http:// or https://"):
            webhook.check("open", {"url": url})
    with pytest.raises(ConfigError, match="no token"):
        webhook.check("bearer", {"url": "https://example.com/hook"})
