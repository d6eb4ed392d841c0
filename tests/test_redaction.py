"""Redaction of secrets in their usual encodings: the function itself with every form, then
the real paths: a job whose endpoint echoes its key encoded (through a worker, into the job
log) and a Test connection whose provider names the account after the key."""

from __future__ import annotations

import base64
import json
from urllib.parse import quote, quote_plus

import pytest
from sqlalchemy import select
from werkzeug.wrappers import Request, Response

import providers
from portal import vault
from portal.extensions import db
from portal.jobs import create_job
from portal.models import JobEvent
from providers import http, mailchimp, redaction
from providers.base import (
    AuthMethod,
    JobType,
    Provider,
    ProviderError,
    RunContext,
    WorkResult,
)
from providers.http import http_call
from tests.conftest import canary
from tests.loopback import TEST_API_KEY, AnsweringServer, MailchimpServer

SECRET = "sk_live/4+2=key&x y"  # changes under every encoding


def encodings(secret: str) -> dict[str, str]:
    """How an endpoint may echo a secret."""
    raw = secret.encode()
    return {
        "exact": secret,
        "upper": secret.upper(),
        "swapped case": secret.swapcase(),
        "base64": base64.b64encode(raw).decode(),
        "base64 upper-cased": base64.b64encode(raw).decode().upper(),
        "base64 lower-cased": base64.b64encode(raw).decode().lower(),
        "base64 unpadded": base64.b64encode(raw).decode().rstrip("="),
        "base64url": base64.urlsafe_b64encode(raw).decode(),
        "base64url unpadded": base64.urlsafe_b64encode(raw).decode().rstrip("="),
        "in a basic header, offset 0": base64.b64encode(b"op:" + raw).decode(),
        "in a basic header, offset 1": base64.b64encode(b"ops:" + raw + b"!").decode(),
        "in a basic header, offset 2": base64.b64encode(b"user:" + raw + b"!?").decode(),
        "url-encoded": quote(secret, safe=""),
        "url-encoded, / kept": quote(secret),
        "url-encoded, lower-case escapes": quote(secret, safe="").lower(),
        "form-encoded": quote_plus(secret),
        "hex": raw.hex(),
        "hex upper-cased": raw.hex().upper(),
        "json-escaped": json.dumps(secret)[1:-1],
    }


def leftovers(text: str, secret: str) -> list[str]:
    """The encodings of `secret` still readable in `text` (inside a longer base64 value:
    the characters that depend on the secret alone)."""
    folded = text.lower()
    found = [name for name, form in encodings(secret).items()
             if not name.startswith("in a basic header") and form.lower() in folded]
    found += [name for name, core in (("base64 core", c) for c in
                                      redaction._base64_cores(secret.encode()))
              if core.lower() in folded]
    return found


@pytest.mark.parametrize(("name", "form"), list(encodings(SECRET).items()),
                         ids=list(encodings(SECRET)))
def test_every_encoding_of_a_secret_is_redacted(name, form):
    text = f"the endpoint said: <{form}> (and more)"
    redacted = vault.redact(text, [SECRET])
    assert "[redacted]" in redacted, name
    assert leftovers(redacted, SECRET) == [], (name, redacted)
    assert redacted.startswith("the endpoint said: <") and redacted.endswith("> (and more)")
    # The HTTP helper's messages use the same function, with its own mark.
    assert http._redact(text, [SECRET]).count("[hidden]") == 1


def json_escape(char: str) -> str:
    """\\uXXXX, or a surrogate pair beyond the BMP, as JSON writes them."""
    return f"\\u{ord(char):04x}" if ord(char) < 0x10000 else json.dumps(char)[1:-1]


def escaped_everywhere(secret: str) -> dict[str, str]:
    """Forms an endpoint writes by escaping every character, or only some."""
    raw = secret.encode()
    return {
        "every byte url-encoded": "".join(f"%{byte:02X}" for byte in raw),
        "every character json-escaped": "".join(json_escape(c) for c in secret),
        "every character a decimal reference": "".join(f"&#{ord(c)};" for c in secret),
        "every character a hex reference": "".join(f"&#x{ord(c):X};" for c in secret),
        "escaped in part, mixed": "".join(
            ("".join(f"%{b:02x}" for b in c.encode()), json_escape(c).upper(), f"&#{ord(c)};",
             c.upper())[i % 4]
            for i, c in enumerate(secret)),
    }


@pytest.mark.parametrize("secret", [SECRET, "pässwörd-€-😀-key"])
def test_a_secret_escaped_character_by_character_is_redacted(secret):
    for name, form in escaped_everywhere(secret).items():
        text = f"echo: <{form}>"
        assert vault.redact(text, [secret]) == "echo: <[redacted]>", name
    assert vault.redact("\\ud83d\\ude00", [secret]) == "\\ud83d\\ude00"  # not a secret


def test_base64_of_a_secret_inside_a_longer_value_at_every_offset():
    for length in range(4, 30):
        secret = ("Zq9/+x" * 5)[:length]
        for before in (b"", b"a", b"ab", b"abc:"):
            for after in (b"", b"!", b"!?"):
                encoded = base64.b64encode(before + secret.encode() + after).decode()
                for form in (encoded, encoded.upper(), encoded.replace("+", "-")
                             .replace("/", "_")):
                    redacted = vault.redact(form, [secret])
                    assert "[redacted]" in redacted and not any(
                        core.lower() in redacted.lower()
                        for core in redaction._base64_cores(secret.encode())), (secret, form)


def test_short_secrets_keep_the_rule_they_had():
    # The Vault leaves secrets under four characters alone (they would hit ordinary words);
    # the HTTP helper replaces exact copies of any length, but not their encodings.
    assert vault.redact("pin abc, ABC", ["abc"]) == "pin abc, ABC"
    assert http._redact("pin abc, 616263", ["abc"]) == "pin [hidden], 616263"
    assert vault.redact("key wxyz, 7778797A, WXYZ", ["wxyz"]) == (
        "key [redacted], [redacted], [redacted]")
    assert vault.redact("nothing to hide", []) == "nothing to hide"
    assert vault.redact("", ["wxyz"]) == ""


# --- through a worker: a hostile endpoint echoes the key it was sent ---------------------

def _echo(request: Request) -> Response:
    """Answers with every encoding of the Bearer token it got."""
    token = request.headers.get("Authorization", "").removeprefix("Bearer ")
    return Response(" | ".join(encodings(token).values()), status=200)


def _run_echo(ctx: RunContext) -> WorkResult:
    """A careless job type: it writes what its endpoint answered into its messages."""
    response = http_call("GET", ctx.config["url"], service="the echo endpoint",
                         headers={"Authorization": f"Bearer {ctx.credentials['api_key']}"})
    ctx.log(f"the endpoint said {response.text}")
    if ctx.config.get("fail"):
        raise ProviderError(f"the endpoint complained: {response.text}", code="echo")
    return WorkResult(done=True, message=f"done; it answered {response.text}")


ECHO = Provider(
    key="echo", name="Echo (tests only)", category="Testing", description="", logo="files.svg",
    auth_methods=(AuthMethod(
        "api_key", "API key", kind="api_key",
        schema={"type": "object", "required": ["api_key"], "properties": {
            "api_key": {"type": "string", "writeOnly": True}}}),),
    job_types=(JobType(key="echo", name="Echo", kind="import", description="",
                       config_schema={"type": "object", "properties": {
                           "url": {"type": "string"}, "fail": {"type": "boolean"}}},
                       run=_run_echo, queue="default"),),
)


def test_a_key_echoed_in_any_encoding_never_reaches_the_job_log(
        app, make_user, work, client, auth, monkeypatch):
    monkeypatch.setitem(providers._TEST_ONLY, ECHO.key, ECHO)
    owner = make_user("operator", "owner@example.com")
    key = canary(SECRET)
    authorization = vault.create(ECHO, ECHO.auth_methods[0], label="Echo", description="",
                                 credentials={"api_key": key}, by=owner)
    with AnsweringServer(_echo) as endpoint:
        jobs = [create_job(provider=ECHO, job_type=ECHO.job_types[0],
                           authorization=authorization, name=f"echo {fail}", description="",
                           config={"url": endpoint.base_url, "fail": fail}, created_by=owner,
                           schedule=None, retry_policy=None) for fail in (False, True)]
        db.session.commit()
        work()
        assert len(endpoint.received) == 2  # each job asked, and got every encoding back
    events = db.session.scalars(select(JobEvent).where(
        JobEvent.job_id.in_([job.id for job in jobs]))).all()
    said = [event.message for event in events if "endpoint" in event.message]
    assert {event.kind for event in events} >= {"error", "completed"}
    assert len(said) == 2 and all("[redacted]" in message for message in said), said
    for message in said:
        assert leftovers(message, SECRET) == [], message
    auth.login("viewer")
    for job in jobs:
        page = client.get(f"/jobs/{job.id}").get_data(as_text=True)
        assert leftovers(page, SECRET) == []


def test_a_test_connection_redacts_a_key_the_provider_echoes(app, make_user, monkeypatch):
    echoed = base64.b64encode(f"portal:{TEST_API_KEY}".encode()).decode().upper()
    owner = make_user("operator")
    method = mailchimp.PROVIDER.auth_method("api_key")
    with MailchimpServer(account_name=f"acct {echoed}") as server:
        monkeypatch.setenv(mailchimp.API_URL_ENV, server.api_url)
        authorization = vault.create(mailchimp.PROVIDER, method, label="MC", description="",
                                     credentials={"api_key": canary(TEST_API_KEY)}, by=owner)
        health = vault.test_connection(authorization, actor="test")
    assert health.status == "healthy" and "[redacted]" in health.message
    assert leftovers(health.message, TEST_API_KEY) == []
    assert echoed[8:40] not in health.message
