"""The Vault: encryption with key ids, versions with check-and-set, the pages, health,
audit, and what jobs see of their authorization."""

from __future__ import annotations

import base64
import re

import pytest
from sqlalchemy import select

from portal import configsecrets, keys, vault
from portal.extensions import db
from portal.models import AuditEntry, Authorization, AuthorizationVersion, Job, JobEvent
from portal.models.types import utcnow
from portal.schemaform import secret_paths
from providers import get_provider
from tests.conftest import TEST_VAULT_KEYS, canary
from tests.loopback import WebhookReceiver
from tests.test_job_path import fresh, kinds

HX = {"HX-Request": "true"}
OTHER_KEY = "new-2:" + base64.b64encode(b"a-second-vault-key-of-32-bytes!!").decode()


def webhook_authorization(owner, url: str, token: str, label: str = "Hook") -> Authorization:
    provider = get_provider("webhook")
    authorization = vault.create(provider, provider.auth_method("bearer"), label=label,
                                 description="", credentials={"url": url, "token": token},
                                 by=owner)
    db.session.commit()
    return authorization


def actions(authorization: Authorization) -> list[str]:
    return list(db.session.scalars(
        select(AuditEntry.action).where(AuditEntry.object_type == "authorization",
                                        AuditEntry.object_id == authorization.id)
        .order_by(AuditEntry.id)))


def form(client, auth, **fields) -> dict:
    return {"csrf_token": auth.csrf(), **fields}


# --- encryption -----------------------------------------------------------------------------

def test_ciphertext_names_its_key_and_opens_only_on_its_row(app, make_user):
    owner = make_user("operator")
    token = canary("tok-ciphertext-3141592653")
    authorization = webhook_authorization(owner, "https://hooks.example.com/in", token)
    row = vault.current_row(authorization)
    assert row.ciphertext.startswith("v1:test-1:") and row.key_id == "test-1"
    assert token not in row.ciphertext
    assert vault.current_credentials(authorization)["token"] == token
    # The same ciphertext copied onto another authorization does not open there.
    other = webhook_authorization(owner, "https://hooks.example.com/two", "tok-other-2718281")
    vault.current_row(other).ciphertext = row.ciphertext
    with pytest.raises(vault.KeyUnavailable, match=r"“Hook” \(#\d+\), version 1, cannot be "
                                                   "decrypted with the key “test-1”"):
        vault.current_credentials(other)


def test_each_version_records_who_made_it_and_when(app, make_user):
    from portal.models.types import utcnow

    owner = make_user("operator")
    before = utcnow()
    authorization = webhook_authorization(owner, "https://h.example.com/x",
                                          canary("tok-who-made-it-2718"))
    vault.replace(authorization, {"url": "https://h.example.com/x",
                                  "token": canary("tok-who-made-it-3141")},
                  expected_version=1, reason="refreshed", actor="job 7")
    db.session.commit()
    rows = db.session.scalars(select(AuthorizationVersion)
                              .order_by(AuthorizationVersion.version)).all()
    assert [(r.version, r.reason, r.created_by_id, r.created_by_label) for r in rows] == [
        (1, "created", owner.id, owner.email), (2, "refreshed", None, "job 7")]
    assert all(before <= r.created_at <= utcnow() for r in rows)
    assert {r.key_id for r in rows} == {"test-1"}


def test_a_missing_or_wrong_key_is_a_clear_error_naming_the_authorization(app, make_user):
    authorization = webhook_authorization(make_user("operator"), "https://h.example.com/x",
                                          canary("tok-lost-key-161803398"), label="Newsletter")
    app.extensions["portal_keyring"] = keys.Keyring(OTHER_KEY)
    with pytest.raises(vault.KeyUnavailable) as missing:
        vault.current_credentials(authorization)
    assert str(missing.value) == (
        f"The credentials of authorization “Newsletter” (#{authorization.id}), version 1, "
        "are encrypted with the key “test-1”, which is not in PORTAL_VAULT_KEYS. Add that "
        "key back after the active one, or enter the credentials again.")
    wrong = "test-1:" + base64.b64encode(b"x" * 32).decode()
    app.extensions["portal_keyring"] = keys.Keyring(wrong)
    with pytest.raises(vault.KeyUnavailable) as wrong_key:
        vault.current_credentials(authorization)
    assert str(wrong_key.value) == (
        f"The credentials of authorization “Newsletter” (#{authorization.id}), version 1, "
        "cannot be decrypted with the key “test-1”: the key is not the one they were "
        "encrypted with, or the stored data is damaged. Enter the credentials again.")
    # A connection test says so instead of sending garbage credentials.
    health = vault.test_connection(authorization, actor="test")
    assert health.status == "unhealthy" and "Newsletter" in health.message


def test_rotate_reencrypts_every_version_under_the_active_key(app, make_user):
    owner = make_user("operator")
    first = webhook_authorization(owner, "https://a.example.com/h", canary("tok-rotate-aaaa-1"))
    vault.update_entered(first, {"url": "https://a.example.com/h",
                                 "token": canary("tok-rotate-aaaa-2")},
                         expected_version=1, by=owner)
    db.session.commit()
    second = webhook_authorization(owner, "https://b.example.com/h", canary("tok-rotate-bbbb-1"))
    # The new key first, the old one still listed: rotate.
    app.config["PORTAL_VAULT_KEYS"] = f"{OTHER_KEY},{TEST_VAULT_KEYS}"
    app.extensions["portal_keyring"] = keys.Keyring(app.config["PORTAL_VAULT_KEYS"])
    result = app.test_cli_runner().invoke(args=["vault", "rotate"])
    assert result.exit_code == 0, result.output
    assert ("Re-encrypted 3 credentials version(s) and configuration(s) with key “new-2”"
            in result.output)
    rows = db.session.scalars(select(AuthorizationVersion)).all()
    assert {row.key_id for row in rows} == {"new-2"} and all(row.rotated_at for row in rows)
    # The old key can go now.
    app.extensions["portal_keyring"] = keys.Keyring(OTHER_KEY)
    db.session.expire_all()
    assert vault.current_credentials(fresh_auth(first))["token"] == "tok-rotate-aaaa-2"
    assert vault.current_credentials(fresh_auth(second))["token"] == "tok-rotate-bbbb-1"
    assert actions(first).count("rotated") == 2
    rotated = db.session.scalars(select(AuditEntry).where(AuditEntry.action == "rotated")
                                 .order_by(AuditEntry.id)).all()
    assert {entry.actor for entry in rotated} == {"command line"}
    assert [(e.object_id, e.details["version"]) for e in rotated] == [
        (first.id, 1), (first.id, 2), (second.id, 1)]
    assert rotated[0].summary == "Version 1 re-encrypted with key “new-2” (was “test-1”)"


def test_rotate_stops_with_a_clear_message_when_a_key_is_missing(app, make_user):
    webhook_authorization(make_user("operator"), "https://a.example.com/h",
                          canary("tok-rotate-miss-1"), label="Old one")
    app.extensions["portal_keyring"] = keys.Keyring(OTHER_KEY)
    result = app.test_cli_runner().invoke(args=["vault", "rotate"])
    assert result.exit_code == 1
    assert "“Old one”" in result.output and "not in PORTAL_VAULT_KEYS" in result.output
    row = db.session.scalars(select(AuthorizationVersion)).one()
    assert row.key_id == "test-1", "nothing half-rotated"


def test_new_key_prints_a_usable_key(app):
    result = app.test_cli_runner().invoke(args=["vault", "new-key"])
    assert keys.Keyring(result.output.strip()).active_id.startswith("k")


def fresh_auth(authorization: Authorization) -> Authorization:
    return db.session.get(Authorization, authorization.id, populate_existing=True)


# --- pages ----------------------------------------------------------------------------------

def test_create_shows_field_messages_then_saves_and_never_shows_the_secret(client, auth):
    auth.login("operator")
    token = canary("tok-create-page-8675309")
    response = client.post("/vault/new/webhook/bearer", headers=HX, data=form(
        client, auth, label="", **{"cred-url": "not a url", "cred-token": token}))
    page = response.get_data(as_text=True)
    assert response.status_code == 200  # htmx swaps only 2xx
    assert 'id="field-label-error"' in page and 'id="field-cred-url-error"' in page
    assert "starting with https://" in page
    assert "Leave blank to keep it" not in page, "a token typed in is not stored yet"
    response = client.post("/vault/new/webhook/bearer", headers=HX, data=form(
        client, auth, label="CRM hook", description="Signups to the CRM",
        **{"cred-url": "https://crm.example.com/hook", "cred-token": token}))
    authorization = db.session.scalars(select(Authorization)).one()
    assert response.headers["HX-Redirect"] == f"/vault/{authorization.id}"
    page = client.get(f"/vault/{authorization.id}").get_data(as_text=True)
    assert "CRM hook" in page and "https://crm.example.com/hook" in page
    assert "Set — changed" in page, "the form says the token is set"
    listing = client.get("/vault").get_data(as_text=True)
    assert "CRM hook" in listing and "Webhook" in listing and "Bearer" in listing
    assert actions(authorization) == ["created"]


def test_viewers_read_but_cannot_change(client, auth, make_user):
    authorization = webhook_authorization(make_user("admin", "boss@example.com"),
                                          "https://x.example.com/h", canary("tok-viewer-99999"))
    auth.login("viewer")
    page = client.get(f"/vault/{authorization.id}").get_data(as_text=True)
    assert "Test connection" not in page and "credentials-form" not in page
    assert client.get("/vault/new").status_code == 403
    for path in ("test", "delete", "details", "credentials"):
        response = client.post(f"/vault/{authorization.id}/{path}",
                               data={"csrf_token": auth.csrf()})
        assert response.status_code == 403, path


def test_update_keeps_blank_secrets_makes_a_version_and_refuses_a_stale_form(client, auth):
    user = auth.login("operator")
    token = canary("tok-update-first-1234")
    authorization = webhook_authorization(user, "https://old.example.com/h", token)
    # The URL stays; the blank token keeps the stored one. (A changed URL needs the token
    # again: tests/test_destinations.py.)
    response = client.post(f"/vault/{authorization.id}/credentials", headers=HX, data=form(
        client, auth, version="1", **{"cred-url": "https://old.example.com/h", "cred-token": ""}))
    assert "Saved as version 2" in response.get_data(as_text=True)
    assert vault.current_credentials(fresh_auth(authorization))["token"] == token
    # A second form opened at version 1 is refused instead of overwriting version 2.
    stale = client.post(f"/vault/{authorization.id}/credentials", headers=HX, data=form(
        client, auth, version="1", **{"cred-url": "https://stale.example.com/h",
                                      "cred-token": canary("tok-stale-5555")}))
    assert "changed while you were editing" in stale.get_data(as_text=True)
    authorization = fresh_auth(authorization)
    assert authorization.current_version == 2
    assert vault.current_credentials(authorization)["url"] == "https://old.example.com/h"
    versions = db.session.scalars(select(AuthorizationVersion.version).where(
        AuthorizationVersion.authorization_id == authorization.id)).all()
    assert sorted(versions) == [1, 2]
    page = client.get(f"/vault/{authorization.id}").get_data(as_text=True)
    assert re.search(r"<td>2 <span[^>]*>current</span></td>\s*<td>updated</td>\s*<td>"
                     r"operator@example.com", page)


def test_label_and_description_edits_are_audited(client, auth):
    user = auth.login("operator")
    authorization = webhook_authorization(user, "https://a.example.com/h", canary("tok-ed-777"))
    response = client.post(f"/vault/{authorization.id}/details", headers=HX, data=form(
        client, auth, label="<b>Renamed</b>", description="For the spring campaign"))
    page = response.get_data(as_text=True)
    assert "Saved." in page and "&lt;b&gt;Renamed&lt;/b&gt;" in page and "<b>Renamed" not in page
    entry = db.session.scalars(select(AuditEntry).where(AuditEntry.action == "edited")).one()
    assert entry.details["before"]["label"] == "Hook" and entry.actor == user.email
    empty = client.post(f"/vault/{authorization.id}/details", headers=HX,
                        data=form(client, auth, label="  ", description=""))
    assert "Give the authorization a label" in empty.get_data(as_text=True)


def test_delete_is_refused_while_jobs_use_it_and_they_can_be_moved(client, auth, make_job_for):
    user = auth.login("operator")
    old = webhook_authorization(user, "https://a.example.com/h", canary("tok-del-old-1"), "Old")
    new = webhook_authorization(user, "https://b.example.com/h", canary("tok-del-new-2"), "New")
    job = make_job_for(old)
    refused = client.post(f"/vault/{old.id}/delete", headers=HX, data=form(client, auth))
    page = refused.get_data(as_text=True)
    assert "is used by 1 job(s)" in page and job.name in page and 'id="reassign-form"' in page
    assert fresh_auth(old) is not None
    moved = client.post(f"/vault/{old.id}/reassign", headers=HX,
                        data=form(client, auth, target=str(new.id)))
    assert "1 job(s) now use “New”" in moved.get_data(as_text=True)
    assert fresh(job).authorization_id == new.id
    gone = client.post(f"/vault/{old.id}/delete", headers=HX, data=form(client, auth))
    assert gone.headers["HX-Redirect"] == "/vault"
    assert db.session.get(Authorization, old.id) is None
    assert db.session.scalars(select(AuthorizationVersion).where(
        AuthorizationVersion.authorization_id == old.id)).all() == []
    assert {"reassigned", "deleted"} <= {entry.action for entry in
                                         db.session.scalars(select(AuditEntry))}


def test_test_connection_marks_health(client, auth):
    user = auth.login("operator")
    token = canary("tok-health-good-4242")
    with WebhookReceiver(token=token) as hook:
        good = webhook_authorization(user, hook.url, token, "Good")
        bad = webhook_authorization(user, hook.url, canary("tok-health-bad-1313"), "Bad")
        page = client.post(f"/vault/{good.id}/test", headers=HX,
                           data=form(client, auth)).get_data(as_text=True)
        assert 'data-health="healthy"' in page and "Endpoint answered 204" in page
        page = client.post(f"/vault/{bad.id}/test", headers=HX,
                           data=form(client, auth)).get_data(as_text=True)
        assert 'data-health="unhealthy"' in page and "refused the credentials" in page
    assert fresh_auth(bad).health == "unhealthy" and fresh_auth(good).health == "healthy"
    assert actions(good) == ["created", "decrypted", "checked"]


def test_the_job_wizard_links_to_the_vault_and_gets_the_new_authorization_back(client, auth):
    auth.login("operator")
    step = "/jobs/new/webhook/send_stream"
    page = client.get(step).get_data(as_text=True)
    assert "/vault/new/webhook?next=/jobs/new/webhook/send_stream" in page
    response = client.post("/vault/new/webhook/bearer", data=form(
        client, auth, label="From the wizard", next=step,
        **{"cred-url": "https://w.example.com/h", "cred-token": canary("tok-wizard-2024")}))
    authorization = db.session.scalars(select(Authorization)).one()
    assert response.status_code == 303
    assert response.headers["Location"] == f"{step}?authorization={authorization.id}"
    page = client.get(response.headers["Location"]).get_data(as_text=True)
    assert re.search(rf'value="{authorization.id}" checked', page)


@pytest.mark.parametrize("target", ["https://evil.example.com/", "//evil.example.com/x",
                                    "/vault/../admin"])
def test_next_only_returns_into_the_job_wizard(client, auth, target):
    auth.login("operator")
    response = client.post("/vault/new/webhook/open", data=form(
        client, auth, label="Open", next=target, **{"cred-url": "https://o.example.com/h"}))
    authorization = db.session.scalars(select(Authorization)).one()
    assert response.headers["Location"] == f"/vault/{authorization.id}"


def test_oauth_without_client_settings_says_which_to_add(client, auth):
    auth.login("operator")
    page = client.get("/vault/new/mailchimp").get_data(as_text=True)
    assert "PORTAL_OAUTH_MAILCHIMP_CLIENT_ID, PORTAL_OAUTH_MAILCHIMP_CLIENT_SECRET" in page
    response = client.post("/vault/new/mailchimp/oauth2", data=form(client, auth, label="MC"))
    assert response.status_code == 409
    assert "PORTAL_OAUTH_MAILCHIMP_CLIENT_ID" in response.get_data(as_text=True)


def test_unknown_provider_or_method_is_a_clear_404(client, auth):
    auth.login("operator")
    assert "no provider called" in client.get("/vault/new/nope").get_data(as_text=True)
    assert "has no authorization method" in client.get(
        "/vault/new/webhook/telepathy").get_data(as_text=True)
    assert client.get("/vault/999").status_code == 404


# --- jobs and their authorization ---------------------------------------------------------------

@pytest.fixture
def make_job_for(app, make_user):
    from portal.jobs import create_job

    def make(authorization: Authorization, **config) -> Job:
        provider, job_type = _job_type_for(authorization)
        return create_job(provider=provider, job_type=job_type, authorization=authorization,
                          name=f"uses {authorization.label}", description="",
                          config=config or {"stream": "signups"},
                          created_by=authorization.owner, retry_policy=None,
                          schedule={"kind": "interval", "every_minutes": 60})

    return make


def _job_type_for(authorization: Authorization):
    provider = get_provider(authorization.provider)
    return provider, provider.job_types[0]


def test_a_job_uses_the_current_version_and_each_decryption_is_audited(app, make_user, work,
                                                                      make_job_for):
    from portal.datastore import write_messages
    from providers.base import OutMessage

    owner = make_user("operator")
    first, second = canary("tok-job-version-one-11"), canary("tok-job-version-two-22")
    with WebhookReceiver(token=first) as hook:
        authorization = webhook_authorization(owner, hook.url, first)
        write_messages("signups", [OutMessage(f"k{n}", utcnow(), {"n": n})
                                   for n in range(3)], source="test")
        db.session.commit()
        job = make_job_for(authorization, stream="signups", batch_size=2)
        work()
        assert [r.headers["Authorization"] for r in hook.received] == [f"Bearer {first}"] * 2
        assert fresh(job).status == "sleeping"
        # New credentials: the next run uses them, without touching the job.
        hook.token = second
        vault.update_entered(fresh_auth(authorization), {"url": hook.url, "token": second},
                             expected_version=1, by=owner)
        write_messages("signups", [OutMessage("k9", utcnow(), {"n": 9})], source="test")
        db.session.commit()
        job = fresh(job)
        job.next_run_at = utcnow()
        db.session.commit()
        from workers.dispatcher import dispatch_once

        dispatch_once()
        work()
        assert hook.received[-1].headers["Authorization"] == f"Bearer {second}"
    decrypted = db.session.scalars(select(AuditEntry).where(
        AuditEntry.action == "decrypted")).all()
    # One row per run, counting its units' decryptions: two units, then one.
    assert len(decrypted) == 2 and {entry.actor for entry in decrypted} == {f"job {job.id}"}
    assert [entry.details["version"] for entry in decrypted] == [1, 2]
    assert [entry.details["count"] for entry in decrypted] == [2, 1]


def test_an_auth_error_marks_the_authorization_unhealthy_and_hides_the_key(
        app, make_user, work, client, auth):
    from portal.jobs import create_job
    from tests.test_engine import shared_key

    key = canary("sk-careless-provider-0042")
    authorization = shared_key(make_user, key)
    provider = get_provider("faults")
    job = create_job(provider=provider, job_type=provider.job_type("script"),
                     authorization=authorization, name="careless", description="",
                     config={"script": ["auth"]}, created_by=authorization.owner,
                     schedule=None, retry_policy=None)
    work()
    job = fresh(job)
    assert job.status == "sleeping" and kinds(job)[-1] == "error"
    authorization = fresh_auth(authorization)
    assert authorization.health == "unhealthy"
    assert "[redacted]" in authorization.health_message and key not in (
        authorization.health_message)
    auth.login("viewer")
    page = client.get(f"/jobs/{job.id}").get_data(as_text=True)
    assert 'id="job-authorization-unhealthy"' in page and "Fix it in the Vault" in page
    assert "the key [redacted] was refused" in page
    assert "unhealthy" in actions(authorization)


def test_the_dispatcher_queues_the_daily_health_check_once(app, make_user, work):
    from rq import Queue

    from portal.queues import redis_connection
    from workers.dispatcher import health_checks_due

    token = canary("tok-daily-check-8080")
    with WebhookReceiver(token=token) as hook:
        authorization = webhook_authorization(make_user("operator"), hook.url, token)
        now = utcnow()
        assert health_checks_due(now) is True
        assert health_checks_due(now) is False, "once per period, across dispatchers"
        assert Queue("default", connection=redis_connection()).count == 1
        work()
        assert len(hook.received) == 1 and hook.received[0].json["type"] == "ping"
    authorization = fresh_auth(authorization)
    assert authorization.health == "healthy" and authorization.health_checked_at is not None
    entry = db.session.scalars(select(AuditEntry).where(AuditEntry.action == "checked")).one()
    assert entry.actor == "daily health check"


def test_an_authorization_of_a_provider_no_longer_offered_gets_a_clear_answer(client, auth):
    user = auth.login("operator")
    authorization = webhook_authorization(user, "https://a.example.com/h", canary("tok-gone-1"))
    authorization.provider = "retired"
    db.session.commit()
    assert client.get(f"/vault/{authorization.id}").status_code == 200
    response = client.post(f"/vault/{authorization.id}/credentials",
                           data=form(client, auth, version="1"))
    assert response.status_code == 409
    assert "which this portal no longer offers" in response.get_data(as_text=True)


# --- secrets in a job's own configuration ---------------------------------------------------

NESTED = {"type": "object", "properties": {
    "name": {"type": "string"},
    "token": {"type": "string", "writeOnly": True},
    "remote": {"type": "object", "properties": {
        "host": {"type": "string"}, "password": {"type": "string", "writeOnly": True}}},
}}


def test_config_secrets_are_sealed_by_path_and_blank_keeps_them(app):
    token, password = canary("cfg-token-5150"), canary("cfg-password-5150")
    config = {"name": "n", "token": token, "remote": {"host": "h", "password": password}}
    stored = configsecrets.seal_config(NESTED, config)
    assert secret_paths(NESTED) == ["token", "remote.password"]
    assert token not in str(stored) and password not in str(stored)
    assert stored["name"] == "n" and stored["remote"]["host"] == "h"
    assert configsecrets.seal_config(NESTED, stored) == stored, "sealing twice changes nothing"
    assert configsecrets.open_config(NESTED, stored, what="t") == config
    assert configsecrets.config_secret_values(NESTED, config) == [token, password]
    # A blank box keeps the sealed value it had; `drop` forgets it.
    kept = configsecrets.seal_config(NESTED, {"name": "m", "remote": {"host": "h"}}, keep=stored)
    assert kept["token"] == stored["token"] and kept["remote"]["password"] == stored[
        "remote"]["password"]
    assert "token" not in configsecrets.seal_config(NESTED, kept, drop=["token"])
    # Bound to its path: a sealed value moved to another field does not open.
    moved = {**stored, "remote": {"host": "h", "password": stored["token"]}}
    with pytest.raises(vault.KeyUnavailable, match="“remote.password” in the configuration"):
        configsecrets.open_config(NESTED, moved, what="job #7")


def test_rotate_seals_job_config_secrets_under_the_new_key(app, make_user):
    from portal.jobs import create_job

    faults = get_provider("faults")
    note = canary("cfg-note-rotate-31")
    job = create_job(provider=faults, job_type=faults.job_type("script"), authorization=None,
                     name="j", description="", config={"secret_note": note},
                     created_by=make_user("operator"), paused=True)
    legacy = create_job(provider=faults, job_type=faults.job_type("script"),
                        authorization=None, name="old", description="", config={},
                        created_by=job.created_by, paused=True)
    legacy.config = {"secret_note": "stored-before-sealing"}  # as an older version kept it
    db.session.commit()
    app.config["PORTAL_VAULT_KEYS"] = f"{OTHER_KEY},{TEST_VAULT_KEYS}"
    app.extensions["portal_keyring"] = keys.Keyring(app.config["PORTAL_VAULT_KEYS"])
    result = app.test_cli_runner().invoke(args=["vault", "rotate"])
    assert result.exit_code == 0, result.output
    assert "Re-encrypted 2 credentials version(s) and configuration(s)" in result.output
    app.extensions["portal_keyring"] = keys.Keyring(OTHER_KEY)  # the old key is gone
    db.session.expire_all()
    schema = faults.job_type("script").config_schema
    for row, plain in ((job, note), (legacy, "stored-before-sealing")):
        row = db.session.get(Job, row.id)
        assert row.config["secret_note"]["$sealed"].startswith("v1:new-2:")
        assert configsecrets.open_config(schema, row.config, what="t")["secret_note"] == plain
    assert db.session.scalar(select(AuditEntry.summary).where(
        AuditEntry.object_type == "job", AuditEntry.action == "rotated")).startswith(
        "Configuration secrets sealed")


def test_a_job_whose_config_secret_cannot_be_opened_fails_saying_so(app, make_user, work):
    from portal.jobs import create_job

    faults = get_provider("faults")
    job = create_job(provider=faults, job_type=faults.job_type("script"), authorization=None,
                     name="j", description="", config={"secret_note": canary("cfg-n-2718")},
                     created_by=make_user("operator"))
    app.extensions["portal_keyring"] = keys.Keyring(OTHER_KEY)
    work()
    job = fresh(job)
    assert job.status == "failed" and kinds(job)[-2:] == ["error", "failed"]
    error = db.session.scalar(select(JobEvent).where(JobEvent.job_id == job.id,
                                                     JobEvent.kind == "error"))
    assert error.code == "vault_error"
    assert "“secret_note” in the configuration of job #" in error.message
    assert "“test-1”, which is not in PORTAL_VAULT_KEYS" in error.message


def test_rotate_skips_and_names_a_config_secret_no_key_opens(app, make_user):
    from portal.jobs import create_job

    faults = get_provider("faults")
    owner = make_user("operator")
    lost = create_job(provider=faults, job_type=faults.job_type("script"), authorization=None,
                      name="lost", description="", config={"secret_note": canary("cfg-l-33")},
                      created_by=owner, paused=True)
    legacy = create_job(provider=faults, job_type=faults.job_type("script"),
                        authorization=None, name="old", description="", config={},
                        created_by=owner, paused=True)
    legacy.config = {"secret_note": "stored-before-sealing"}
    db.session.commit()
    before = dict(lost.config)
    app.extensions["portal_keyring"] = keys.Keyring(OTHER_KEY)  # test-1 is gone
    result = app.test_cli_runner().invoke(args=["vault", "rotate"])
    assert result.exit_code == 1
    assert "Re-encrypted 1 credentials version(s) and configuration(s)" in result.output
    assert f"job #{lost.id} “secret_note”" in result.output and "left as they were" in (
        result.output)
    db.session.expire_all()
    assert db.session.get(Job, lost.id).config == before, "left as it was, not dropped"
    assert db.session.get(Job, legacy.id).config["secret_note"]["$sealed"].startswith(
        "v1:new-2:"), "the others are still done"
