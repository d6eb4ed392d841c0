"""Secrets never leave the Vault in readable form.

Every test of the suite already runs under conftest's watch: a secret registered with
`canary()` that shows up in any response body or header, or in any log line (of the test
process or of a worker process it started), fails that test. This test seeds a secret
into every kind of credential field and into a job's own secret config field, makes
things go wrong with them (refused credentials, a provider that quotes the key in its
error, a form sent back with a mistake), then walks every page and fragment the portal
serves, as a page and as an htmx fragment.
"""

from __future__ import annotations

import itertools

from sqlalchemy import select, text

from portal import audiences, vault
from portal.datastore import write_messages
from portal.extensions import db
from portal.jobs import create_job
from portal.models import (
    AccessToken,
    AlertRule,
    Audience,
    Authorization,
    Draft,
    Job,
    JobEvent,
    Stream,
)
from portal.models.types import utcnow
from providers import CATALOG, get_provider
from providers.base import OutMessage
from tests.conftest import _scan, canary
from tests.loopback import TEST_API_KEY, WebhookReceiver, unused_url
from tests.test_job_path import kinds

HX = {"HX-Request": "true"}
PLAIN_VALUES = {"url": None, "username": "ops-team", "key_id": "key-2024",
                "host": "127.0.0.1", "port": 9, "database": "portal", "tls": "disable",
                "access_key_id": "AKIASEEDED", "region": "eu-west-1", "bucket": "seeded"}


def seed_authorizations(owner, hook_url: str) -> list[Authorization]:
    """One authorization per method that takes credentials, every secret a canary."""
    made = []
    counter = itertools.count()
    for provider in [*CATALOG.values(), get_provider("faults")]:
        for method in provider.auth_methods:
            if method.kind == "oauth2" or not method.schema:
                continue
            credentials = {}
            for name, prop in method.schema.get("properties", {}).items():
                if prop.get("writeOnly"):
                    value = TEST_API_KEY if name == "api_key" and provider.key == "mailchimp" \
                        else f"secret-{provider.key}-{name}-{next(counter)}-c4n4ry"
                    if provider.key == "slack":  # a bot token's shape: xoxb-...
                        value = f"xoxb-secret-{next(counter)}-c4n4ry"
                    credentials[name] = canary(value)
                else:
                    credentials[name] = PLAIN_VALUES.get(name) or hook_url
            made.append(vault.create(provider, method, label=f"{provider.name} {method.name}",
                                     description="seeded", credentials=credentials, by=owner))
    db.session.commit()
    return made


def urls(app, jobs: list[Job], authorizations: list[Authorization]) -> list[str]:
    values = {
        "job_id": [job.id for job in jobs],
        "authorization_id": [authorization.id for authorization in authorizations],
        "name": db.session.scalars(select(Stream.name)).all(),
        "draft_id": db.session.scalars(select(Draft.id)).all(),
        "fmt": ["ndjson", "csv"],
        "field": ["name", "description"],
        "token_id": db.session.scalars(select(AccessToken.id)).all() or [1],
        "workflow": sorted({job.job_type for job in jobs}),
        "stream": db.session.scalars(select(Stream.name)).all(),
        "import_id": [1],
        "audience_id": db.session.scalars(select(Audience.id)).all() or [1],
        "id_or_slug": db.session.scalars(select(Audience.slug)).all() or ["none"],
        "value": ["a@example.com"],
        "token": ["not-a-link"],  # invitation and reset links
        "purpose": ["invite", "reset"],
        "rule_id": db.session.scalars(select(AlertRule.id)).all() or [1],
    }
    found = []
    for rule in app.url_map.iter_rules():
        if "GET" not in rule.methods or rule.endpoint in ("static", "vault.oauth_callback"):
            continue
        arguments = sorted(rule.arguments)
        if "provider_key" in arguments:
            combos = []
            for provider in CATALOG.values():
                if "job_type_key" in arguments:
                    combos += [{"provider_key": provider.key, "job_type_key": jt.key}
                               for jt in provider.job_types]
                elif "method_key" in arguments:
                    combos += [{"provider_key": provider.key, "method_key": m.key}
                               for m in provider.auth_methods]
                else:
                    combos.append({"provider_key": provider.key})
        else:
            combos = [dict(zip(arguments, choice, strict=True))
                      for choice in itertools.product(*(values[a] for a in arguments))]
        with app.test_request_context():
            from flask import url_for

            for combo in combos:
                found.append(url_for(rule.endpoint, **combo))
                if rule.endpoint == "wizard.configure":
                    for authorization in authorizations:
                        if authorization.provider == combo["provider_key"]:
                            found.append(url_for(rule.endpoint, **combo,
                                                 authorization=authorization.id))
    return found


def test_no_page_fragment_or_log_shows_a_secret(app, client, auth, make_user, work,
                                                monkeypatch):
    monkeypatch.setenv("PORTAL_SLACK_API_URL", unused_url() + "/api/")  # loopback only
    admin = auth.login("admin")
    with WebhookReceiver(token="the-right-token-only") as hook:
        authorizations = seed_authorizations(admin, hook.url)
        by_provider = {a.provider + "/" + a.method: a for a in authorizations}
        faults = get_provider("faults")
        careless = create_job(
            provider=faults, job_type=faults.job_type("script"),
            authorization=by_provider["faults/api_key"], name="quotes its key",
            description="", config={"script": ["auth"],
                                    "secret_note": canary("job-config-secret-c4n4ry")},
            created_by=admin, schedule=None, retry_policy=None)
        webhook = get_provider("webhook")
        sender = create_job(
            provider=webhook, job_type=webhook.job_type("send_stream"),
            authorization=by_provider["webhook/bearer"], name="refused", description="",
            config={"stream": "signups", "batch_size": 10}, created_by=admin, schedule=None,
            retry_policy=None)
        write_messages("signups", [OutMessage("m1", utcnow(), {"email": "a@example.com"})],
                       source="test")
        cleaned, _errors = audiences.check({"name": "Everyone", "conditions": [
            {"field": "email", "op": "exists"}]})
        audiences.create(cleaned, by=admin)
        db.session.commit()
        work()  # the faults job errors quoting its key; the webhook job is refused (401)
        for authorization in authorizations:
            client.post(f"/vault/{authorization.id}/test", headers=HX,
                        data={"csrf_token": auth.csrf()})
        # A form sent back with a mistake does not echo the new secret.
        bearer = by_provider["webhook/bearer"]
        page = client.post(f"/vault/{bearer.id}/credentials", headers=HX, data={
            "csrf_token": auth.csrf(), "version": str(bearer.current_version),
            "cred-url": "not a url", "cred-token": canary("a-new-token-typed-in-c4n4ry"),
        }).get_data(as_text=True)
        assert "starting with https://" in page
    # A wizard draft on an authorization with secrets (its pages are walked too).
    response = client.post(
        f"/jobs/new/webhook/send_stream/configure?authorization={bearer.id}",
        data={"csrf_token": auth.csrf(), "stream": "signups", "batch_size": "10"})
    assert response.status_code == 303
    jobs = db.session.scalars(select(Job)).all()
    assert all("error" in kinds(job) for job in jobs), "both jobs hit an error"
    assert db.session.get(Authorization, by_provider["faults/api_key"].id).health == "unhealthy"
    visited = urls(app, jobs, authorizations)
    assert len(visited) > 40
    for url in visited:
        for headers in ({}, HX):
            response = client.get(url, headers=headers)
            assert response.status_code < 500, url
            if response.is_streamed:  # downloads: the watch cannot read them, so read here
                _scan(f"GET {url} (download)", response.get_data(as_text=True))
    # The watch saw all of it; the job's own secret config field shows as set.
    summary = client.get(f"/jobs/{careless.id}").get_data(as_text=True)
    assert "•••••• (set)" in summary and "[redacted]" in summary
    # Stored sealed, yet the worker had it in plain text (its error quoted it, redacted).
    stored = db.session.scalar(text("SELECT config FROM jobs WHERE id = :id"),
                               {"id": careless.id})
    assert "job-config-secret-c4n4ry" not in str(stored) and "$sealed" in str(stored)
    error = db.session.scalar(select(JobEvent.message).where(
        JobEvent.job_id == careless.id, JobEvent.kind == "error"))
    assert "was refused (note: [redacted])" in error, error
    assert sender.id in [job.id for job in jobs]
