"""Audience exports: a webhook job keeps the membership it last sent and reports added,
removed and omitted members (portal/membership.py, providers/webhook.py: send_audience),
run by a real RQ worker against a real loopback endpoint."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from portal import audiences, membership, vault
from portal.datastore import write_messages
from portal.extensions import db
from portal.jobs import create_job, run_job_now
from portal.models import ExportMember, Job, JobEvent
from providers import get_provider
from providers.base import ConfigError, OutMessage
from tests.loopback import WebhookReceiver

START = datetime(2026, 3, 1, tzinfo=UTC)


def say(*payloads: dict, at: int = 0) -> None:
    """Messages about people, each a second after the last (later ones win)."""
    write_messages("people", [
        OutMessage(f"m{at + n}", START + timedelta(seconds=at + n), payload)
        for n, payload in enumerate(payloads)], source="test")
    db.session.commit()


def make_audience(owner, conditions, match="all", name="Pro plan"):
    cleaned, errors = audiences.check({"name": name, "match": match,
                                       "conditions": conditions})
    assert errors == {}
    audience = audiences.create(cleaned, by=owner)
    db.session.commit()
    return audience


def export_job(owner, hook, audience, **config):
    provider = get_provider("webhook")
    authorization = vault.create(provider, provider.auth_method("open"), label="Hook",
                                 description="", credentials={"url": hook.url}, by=owner)
    job = create_job(provider=provider, job_type=provider.job_type("send_audience"),
                     authorization=authorization, name="Pro to hook", description="",
                     config={"audience": audience.slug, **config}, created_by=owner,
                     schedule={"kind": "interval", "every_minutes": 60})
    db.session.commit()
    return job


def run_now(job: Job, owner) -> None:
    """The next scheduled run, now (as the summary's Run now does)."""
    db.session.refresh(job)
    assert job.status == "sleeping", job.status
    run_job_now(job, by=owner)


def sent(hook) -> list[dict]:
    return [request.json for request in hook.received]


@pytest.fixture
def owner(make_user):
    return make_user("operator")


PEOPLE = [
    {"email": "ann@example.com", "plan": "pro", "city": "Oslo"},
    {"email": "bob@example.com", "plan": "free"},
    {"user_id": 7, "plan": "pro"},  # a member without an email: omitted
    {"email": "cy@example.com", "plan": "pro"},
]


def test_the_first_run_sends_every_member_and_counts_those_without_an_identifier(
        app, work, owner):
    say(*PEOPLE)
    audience = make_audience(owner, [{"field": "plan", "op": "equals", "value": "pro"}])
    with WebhookReceiver() as hook:
        job = export_job(owner, hook, audience)
        assert work()
    [document] = sent(hook)
    assert document["audience"] == audience.slug and document["identifier"] == "email"
    assert [member["email"] for member in document["added"]] == [
        "ann@example.com", "cy@example.com"]
    assert document["added"][0]["fields"] == {"email": "ann@example.com", "plan": "pro",
                                              "city": "Oslo"}
    assert document["removed"] == []
    assert hook.received[0].headers["Idempotency-Key"].startswith(audience.slug + ":")
    db.session.refresh(job)
    assert (job.added_total, job.removed_total, job.omitted_total) == (2, 0, 1)
    assert membership.exported_count(job.id) == 2
    synced = db.session.scalars(select(JobEvent).where(
        JobEvent.job_id == job.id, JobEvent.message.startswith("Audience"))).all()
    assert synced and synced[-1].context == {"added": 2, "removed": 0, "omitted": 1}
    assert "2 added, 0 removed, 1 omitted (no email)" in synced[-1].message


def test_the_summary_says_how_many_members_the_destination_holds(app, work, auth, owner):
    say(*PEOPLE)
    audience = make_audience(owner, [{"field": "plan", "op": "equals", "value": "pro"}])
    auth.login("viewer")

    def said(job) -> str:
        page = auth.client.get(f"/jobs/{job.id}").get_data(as_text=True)
        found = page[page.index('id="metrics-exported"'):]
        return " ".join(found[:found.index("</p>")].split())

    with WebhookReceiver() as hook:
        job = export_job(owner, hook, audience)
        assert "<strong>0</strong> members of the audience" in said(job)  # not run yet
        assert work()
    assert "<strong>2</strong> members of the audience" in said(job)
    assert f'href="/data/audiences/{audience.id}">Pro plan</a>, as of the last run' in said(job)
    page = auth.client.get(f"/jobs/{job.id}").get_data(as_text=True)
    assert page.count('id="metrics-exported"') == 1

def test_later_runs_send_only_who_joined_who_left_and_changed_identifiers(app, work, owner):
    say(*PEOPLE)
    audience = make_audience(owner, [{"field": "plan", "op": "equals", "value": "pro"}])
    with WebhookReceiver() as hook:
        job = export_job(owner, hook, audience)
        assert work()
        hook.received.clear()
        # Bob upgrades (joins), Ann downgrades (leaves), Cy changes his email.
        say({"email": "bob@example.com", "plan": "pro"},
            {"email": "ann@example.com", "plan": "free"}, at=100)
        say({"email": "cy@example.com", "user_id": 99}, at=200)
        changes = membership.changes(job.id, audience.slug, identifier="email",
                                     after_profile_id=0, limit=100)
        assert sorted(m.identifier for m in changes.added) == ["bob@example.com"]
        assert sorted(m.identifier for m in changes.removed) == ["ann@example.com"]
        # Now Cy's email attribute changes to a new address (same person by user_id).
        say({"user_id": 99, "email": "cy@new.example.com"}, at=300)
        run_now(job, owner)
        assert work()
    [document] = sent(hook)
    assert sorted(member["email"] for member in document["added"]) == [
        "bob@example.com", "cy@new.example.com"]
    assert sorted(member["email"] for member in document["removed"]) == [
        "ann@example.com", "cy@example.com"]
    stored = dict(db.session.execute(select(ExportMember.profile_id, ExportMember.identifier)
                                     .where(ExportMember.job_id == job.id)).all())
    assert sorted(stored.values()) == ["bob@example.com", "cy@new.example.com"]


def test_a_run_goes_window_by_window_and_a_failed_window_is_sent_again(app, work, owner):
    say(*[{"email": f"p{n}@example.com", "plan": "pro"} for n in range(7)])
    audience = make_audience(owner, [{"field": "plan", "op": "equals", "value": "pro"}])
    with WebhookReceiver(status=503) as hook:
        job = export_job(owner, hook, audience, batch_size=3)
        work()
        assert len(hook.received) == 1  # the first window, refused
        assert membership.exported_count(job.id) == 0  # nothing recorded as sent
        db.session.refresh(job)
        assert job.status == "sleeping" and job.error_count == 1  # retried with backoff
        hook.status = 204
        hook.received.clear()
        run_now(job, owner)
        assert work()
    sizes = [len(document["added"]) for document in sent(hook)]
    assert sizes == [3, 3, 1]
    assert membership.exported_count(job.id) == 7


def test_a_missing_audience_fails_the_job_clearly(app, owner):
    with pytest.raises(ConfigError, match="no audience 'gone'"):
        membership.changes(1, "gone", identifier="email", after_profile_id=0, limit=10)


def test_windows_stay_bounded_when_many_members_left(app, owner):
    """Stored rows beyond the window's members are compared a window at a time too."""
    say(*[{"email": f"p{n}@example.com", "plan": "pro"} for n in range(6)])
    audience = make_audience(owner, [{"field": "plan", "op": "equals", "value": "pro"}])
    with WebhookReceiver() as hook:
        job = export_job(owner, hook, audience)
    first = membership.changes(job.id, audience.slug, identifier="email",
                               after_profile_id=0, limit=100)
    membership.record(job.id, first)
    db.session.commit()
    assert membership.exported_count(job.id) == 6
    say(*[{"email": f"p{n}@example.com", "plan": "gone"} for n in range(6)], at=50)
    after, removed = 0, []
    while True:
        window = membership.changes(job.id, audience.slug, identifier="email",
                                    after_profile_id=after, limit=4)
        assert len(window.removed) <= 4 and window.added == []
        removed += [member.identifier for member in window.removed]
        membership.record(job.id, window)
        if window.complete:
            break
        after = window.through
    assert sorted(removed) == sorted(f"p{n}@example.com" for n in range(6))
    assert membership.exported_count(job.id) == 0


def test_a_members_page_lists_the_audience_as_it_is_now(app, owner):
    say(*PEOPLE, {"email": "dee@example.com", "plan": "pro"})
    audience = make_audience(owner, [{"field": "plan", "op": "equals", "value": "pro"}])
    first = membership.members_page(audience.slug, identifier="email", after_profile_id=0,
                                    limit=2)
    assert [member.identifier for member in first.members] == ["ann@example.com"]
    assert first.omitted == 1 and not first.complete  # user 7 has no email
    assert first.members[0].fields["city"] == "Oslo"
    rest = membership.members_page(audience.slug, identifier="email",
                                   after_profile_id=first.through, limit=2)
    assert [member.identifier for member in rest.members] == [
        "cy@example.com", "dee@example.com"]
    assert rest.omitted == 0
    last = membership.members_page(audience.slug, identifier="email",
                                   after_profile_id=rest.through, limit=2)
    assert last.members == [] and last.complete
    with pytest.raises(ConfigError, match="no audience"):
        membership.members_page("gone", identifier="email", after_profile_id=0, limit=2)
