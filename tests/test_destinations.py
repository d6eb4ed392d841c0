"""A stored secret never follows a changed destination, and only an authorization's
creator (or an admin) may change it: the attack of the issue against real loopback
receivers, the same rule for secrets in a job's own configuration, and the declarations."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import select

from portal import configsecrets, vault
from portal.extensions import db
from portal.models import Authorization, Draft
from portal.schemaform import destination_paths, moved_destinations
from providers import get_provider
from providers.base import AuthMethod, is_destination
from providers.faults import SHOWCASE_SCHEMA
from tests.conftest import canary
from tests.loopback import WebhookReceiver

HX = {"HX-Request": "true"}
SHOWCASE = "/jobs/new/faults/showcase/configure?authorization=none"
MOVED = "“Endpoint URL” changed: enter this secret again"


def create(owner, method: str, credentials: dict, label: str = "Signups hook") -> Authorization:
    provider = get_provider("webhook")
    authorization = vault.create(provider, provider.auth_method(method), label=label,
                                 description="", credentials=credentials, by=owner)
    db.session.commit()
    return authorization


def fresh(authorization: Authorization) -> Authorization:
    return db.session.get(Authorization, authorization.id, populate_existing=True)


def post(client, auth, path: str, **fields):
    return client.post(path, headers=HX, data={"csrf_token": auth.csrf(), **fields})


def bearer_headers(receiver: WebhookReceiver) -> list[str]:
    return [request.headers.get("Authorization", "") for request in receiver.received]


# --- the attack ----------------------------------------------------------------------

def test_an_operator_cannot_point_someone_elses_authorization_at_their_server(
        client, auth, make_user):
    alice = make_user("operator", "alice@example.com")
    token = canary("tok-alice-bearer-73105")
    with WebhookReceiver(token=token) as real, WebhookReceiver() as theirs:
        real_url = real.url
        authorization = create(alice, "bearer", {"url": real_url, "token": token})
        auth.login("operator")  # operator@example.com, not its creator
        # Changes only the URL, leaves the token blank, then presses Test connection.
        refused = post(client, auth, f"/vault/{authorization.id}/credentials", version="1",
                       **{"cred-url": theirs.url, "cred-token": ""})
        assert refused.status_code == 403
        assert ("Only alice@example.com, who created “Signups hook”, or an admin can change "
                "it.") in refused.get_data(as_text=True)
        # Test connection stays for any operator, with the saved URL only: form values
        # sent along are not used.
        tested = post(client, auth, f"/vault/{authorization.id}/test",
                      **{"cred-url": theirs.url, "url": theirs.url})
        assert tested.status_code == 200 and 'data-health="healthy"' in tested.get_data(
            as_text=True)
        assert theirs.received == [], "their server never hears from the portal"
        assert bearer_headers(real) == [f"Bearer {token}"]
    authorization = fresh(authorization)
    assert authorization.current_version == 1
    assert vault.current_credentials(authorization) == {"url": real_url, "token": token}


@pytest.mark.parametrize("path,fields", [
    ("details", {"label": "Mine now", "description": ""}),
    ("credentials", {"version": "1", "cred-url": "https://x.example.com/h",
                     "cred-token": "tok-typed-by-them-1"}),
    ("delete", {}),
    ("reassign", {"target": "0"}),
])
def test_only_the_creator_or_an_admin_changes_an_authorization(client, auth, make_user,
                                                               path, fields):
    alice = make_user("operator", "alice@example.com")
    authorization = create(alice, "bearer", {"url": "https://a.example.com/h",
                                             "token": canary("tok-alice-only-5511")})
    create(alice, "bearer", {"url": "https://b.example.com/h",
                             "token": canary("tok-alice-other-5512")}, label="Other")
    auth.login("operator")
    response = post(client, auth, f"/vault/{authorization.id}/{path}", **fields)
    assert response.status_code == 403, path
    assert "or an admin can change it" in response.get_data(as_text=True)
    authorization = fresh(authorization)
    assert authorization is not None and authorization.label == "Signups hook"
    assert authorization.current_version == 1


def test_someone_elses_authorization_page_offers_use_not_change(client, auth, make_user):
    alice = make_user("operator", "alice@example.com")
    authorization = create(alice, "bearer", {"url": "https://a.example.com/h",
                                             "token": canary("tok-alice-page-8080")})
    auth.login("operator")
    page = client.get(f"/vault/{authorization.id}").get_data(as_text=True)
    assert ("Only alice@example.com, who created “Signups hook”, or an admin can change "
            "it. You can use it in jobs and test its connection.") in page
    assert 'id="test-connection"' in page
    for form in ('id="credentials-form"', 'id="details-form"', 'id="delete-authorization"'):
        assert form not in page, form
    # Using it is for anyone: the job wizard offers it.
    step = client.get("/jobs/new/webhook/send_stream").get_data(as_text=True)
    assert f'value="{authorization.id}"' in step


def test_reauthorizing_someone_elses_sign_in_is_refused(client, auth, make_user):
    provider = get_provider("mailchimp")
    alice = make_user("operator", "alice@example.com")
    authorization = vault.create(
        provider, provider.auth_method("oauth2"), label="Alice's Mailchimp", description="",
        credentials={"access_token": canary("tok-mc-alice-4433"), "dc": "us6"}, by=alice)
    db.session.commit()
    auth.login("operator")
    response = post(client, auth, f"/vault/{authorization.id}/reauthorize")
    assert response.status_code == 403
    assert "Only alice@example.com" in response.get_data(as_text=True)


@pytest.mark.parametrize("who", ["creator", "admin"])
def test_a_changed_url_needs_the_token_again_and_nothing_is_saved(client, auth, make_user,
                                                                  who):
    owner = auth.login("operator") if who == "creator" else make_user("operator", "a@x.org")
    if who == "admin":
        auth.login("admin")
    token = canary("tok-owner-first-90210")
    with WebhookReceiver(token=token) as real, WebhookReceiver() as other:
        real_url = real.url
        authorization = create(owner, "bearer", {"url": real_url, "token": token})
        page = client.get(f"/vault/{authorization.id}").get_data(as_text=True)
        assert ("Leave blank to keep it. If you change “Endpoint URL”, enter it again."
                in page)
        refused = post(client, auth, f"/vault/{authorization.id}/credentials", version="1",
                       **{"cred-url": other.url, "cred-token": ""})
        page = refused.get_data(as_text=True)
        assert MOVED in page.split('id="field-cred-token-error">')[1].split("</div>")[0]
        assert "A stored secret is never sent to a new address." in page
        assert f'value="{other.url}"' in page, "what they typed stays in the form"
        assert fresh(authorization).current_version == 1
        post(client, auth, f"/vault/{authorization.id}/test")
        assert other.received == [] and bearer_headers(real) == [f"Bearer {token}"]
    assert vault.current_credentials(fresh(authorization)) == {"url": real_url, "token": token}


def test_a_changed_url_with_the_token_entered_again_is_saved(client, auth):
    owner = auth.login("operator")
    old_token, new_token = canary("tok-before-move-1111"), canary("tok-after-move-2222")
    with WebhookReceiver(token=new_token) as moved_to:
        authorization = create(owner, "bearer", {"url": "https://old.example.com/h",
                                                 "token": old_token})
        saved = post(client, auth, f"/vault/{authorization.id}/credentials", version="1",
                     **{"cred-url": moved_to.url, "cred-token": new_token})
        assert "Saved as version 2" in saved.get_data(as_text=True)
        tested = post(client, auth, f"/vault/{authorization.id}/test")
        assert 'data-health="healthy"' in tested.get_data(as_text=True)
        assert bearer_headers(moved_to) == [f"Bearer {new_token}"]
        moved_url = moved_to.url
    assert vault.current_credentials(fresh(authorization)) == {"url": moved_url,
                                                               "token": new_token}


def test_a_blank_secret_is_kept_when_only_other_fields_change(client, auth):
    owner = auth.login("operator")
    password = canary("pw-basic-kept-31337")
    with WebhookReceiver(username="new-name", password=password) as hook:
        authorization = create(owner, "basic", {"url": hook.url, "username": "old-name",
                                                "password": password})
        saved = post(client, auth, f"/vault/{authorization.id}/credentials", version="1",
                     **{"cred-url": hook.url, "cred-username": "new-name",
                        "cred-password": ""})
        assert "Saved as version 2" in saved.get_data(as_text=True)
        tested = post(client, auth, f"/vault/{authorization.id}/test")
        assert 'data-health="healthy"' in tested.get_data(as_text=True)
    # HMAC: a new key id with the signing secret left blank keeps the secret.
    secret = canary("hmac-secret-kept-2468")
    signed = create(owner, "hmac", {"url": "https://h.example.com/in", "key_id": "k1",
                                    "secret": secret}, label="Signed")
    vault.update_entered(signed, {"url": "https://h.example.com/in", "key_id": "k2"},
                         expected_version=1, by=owner)
    db.session.commit()
    assert vault.current_credentials(fresh(signed)) == {
        "url": "https://h.example.com/in", "key_id": "k2", "secret": secret}


def test_every_secret_of_the_method_is_asked_for_again(app, make_user):
    owner = make_user("operator")
    password = canary("pw-moved-basic-7070")
    authorization = create(owner, "basic", {"url": "https://a.example.com/h",
                                            "username": "u", "password": password})
    with pytest.raises(vault.InvalidCredentials) as refused:
        vault.update_entered(authorization, {"url": "https://b.example.com/h", "username": "u"},
                             expected_version=1, by=owner)
    assert refused.value.errors == {"password": configsecrets.enter_again(["Endpoint URL"])}
    db.session.rollback()
    assert fresh(authorization).current_version == 1


def test_credentials_of_a_sign_in_are_not_edited_by_form(client, auth):
    provider = get_provider("mailchimp")
    owner = auth.login("operator")
    authorization = vault.create(
        provider, provider.auth_method("oauth2"), label="MC", description="",
        credentials={"access_token": canary("tok-mc-own-5656"), "dc": "us6"}, by=owner)
    db.session.commit()
    page = post(client, auth, f"/vault/{authorization.id}/credentials",
                version="1").get_data(as_text=True)
    assert "signing in with Mailchimp: use Re-authorize to renew them" in page
    assert fresh(authorization).current_version == 1
    assert vault.current_credentials(fresh(authorization))["dc"] == "us6"


# --- secrets in a job's own configuration ------------------------------------------------------

def test_a_config_secret_does_not_follow_a_changed_endpoint_in_the_wizard(client, auth):
    auth.login()
    token = canary("showcase-dest-token-4747")
    base = {"title": "T", "count": "3", "limits.daily": "5"}
    response = post(client, auth, SHOWCASE, endpoint="https://a.example.com/in", token=token,
                    **{**base, "count": "12"})  # a mistake keeps us on the form
    page = response.get_data(as_text=True)
    assert "Set. Leave blank to keep it. If you change “Endpoint”, enter it again." in page
    draft = db.session.scalar(select(Draft))
    url = f"{SHOWCASE}&draft={draft.id}"
    # The endpoint changes, the token box is blank: the token is not kept.
    page = post(client, auth, url, endpoint="https://b.example.com/in",
                **base).get_data(as_text=True)
    message = page.split('id="field-token-error">')[1].split("</div>")[0]
    assert "“Endpoint” changed: enter this secret again" in message
    db.session.expire_all()
    assert "token" not in draft.config and draft.config["endpoint"] == "https://b.example.com/in"
    assert draft.step == "configure"
    # Entered again, it is kept; then a change elsewhere with a blank box keeps it.
    response = post(client, auth, url, endpoint="https://b.example.com/in", token=token, **base)
    assert "HX-Redirect" in response.headers, response.get_data(as_text=True)
    response = post(client, auth, url, endpoint=" https://b.example.com/in ",
                    **{**base, "title": "Renamed"})
    assert "HX-Redirect" in response.headers, response.get_data(as_text=True)
    db.session.expire_all()
    assert token not in json.dumps(draft.config)
    assert configsecrets.open_config(SHOWCASE_SCHEMA, draft.config, what="t")["token"] == token


NESTED = {"type": "object", "properties": {
    "token": {"type": "string", "writeOnly": True},
    "note": {"type": "string"},
    "remote": {"type": "object", "properties": {
        "host": {"type": "string", "title": "Host", "x-destination": True},
        "base": {"type": "string", "format": "uri"},
        "password": {"type": "string", "writeOnly": True}}},
}}


def test_seal_config_keeps_no_secret_when_a_nested_destination_changes(app):
    token, password = canary("cfg-dest-token-1212"), canary("cfg-dest-password-1313")
    stored = configsecrets.seal_config(NESTED, {"token": token, "note": "n", "remote": {
        "host": "db1.example.com", "base": "https://a.example.com", "password": password}})
    assert destination_paths(NESTED) == ["remote.host", "remote.base"]
    # Another note, the same host (spaces aside): both secrets are kept.
    refused: dict[str, str] = {}
    kept = configsecrets.seal_config(NESTED, {"note": "m", "remote": {
        "host": " db1.example.com", "base": "https://a.example.com"}}, keep=stored,
        refused=refused)
    assert refused == {} and kept["token"] == stored["token"]
    assert kept["remote"]["password"] == stored["remote"]["password"]
    # Another host: neither is kept, and each says why (a mistake in `drop` included).
    for drop in ([], ["token"]):
        refused = {}
        moved = configsecrets.seal_config(NESTED, {"note": "n", "remote": {
            "host": "db2.example.com", "base": "https://a.example.com"}}, keep=stored,
            drop=drop, refused=refused)
        assert "token" not in moved and "password" not in moved["remote"]
        assert refused == {"token": configsecrets.enter_again(["Host"]),
                           "remote.password": configsecrets.enter_again(["Host"])}
    # Without a place for messages it still keeps nothing.
    kept = configsecrets.seal_config(NESTED, {"remote": {"host": "db3"}}, keep=stored)
    assert "token" not in kept
    assert moved_destinations(NESTED, ["remote.base"], stored, {}) == ["remote.base"]
    assert moved_destinations(NESTED, ["note"], {"note": " "}, {}) == [], "blank is no value"


# --- declarations ---------------------------------------------------------------------------

def test_every_provider_declares_where_its_secrets_go():
    webhook = get_provider("webhook")
    assert {method.key: method.destination_fields for method in webhook.auth_methods} == {
        "bearer": ("url",), "basic": ("url",), "hmac": ("url",), "open": ("url",)}
    # Mailchimp's data center is inside the key or comes with the OAuth token.
    assert [method.destination_fields for method in
            get_provider("mailchimp").auth_methods] == [(), ()]
    assert destination_paths(SHOWCASE_SCHEMA) == ["endpoint"]
    for provider_key in ("files", "mailchimp", "webhook", "faults"):
        for job_type in get_provider(provider_key).job_types:
            if provider_key != "faults":
                assert destination_paths(job_type.config_schema) == [], job_type.key


def test_an_address_field_is_a_destination_unless_it_says_otherwise():
    assert is_destination({"type": "string", "format": "uri"})
    assert is_destination({"type": "string", "format": "hostname"})
    assert is_destination({"type": "string", "x-destination": True})
    assert not is_destination({"type": "string", "format": "uri", "x-destination": False})
    assert not is_destination({"type": "string", "title": "Username"})
    method = AuthMethod("m", "M", kind="api_key", schema={"type": "object", "properties": {
        "server": {"type": "string", "format": "uri"},
        "key": {"type": "string", "writeOnly": True}}})
    assert method.destination_fields == ("server",) and method.secret_fields == ("key",)
