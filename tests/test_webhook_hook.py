"""The webhook's audience events (send_audience with format "events") and its "Enrich
profiles" job type, run by a real RQ worker against real loopback endpoints that check
HMAC signatures (tests/loopback_hook.py, tests/loopback.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
import pytest
from sqlalchemy import func, select

from portal import membership, profiles, vault
from portal.extensions import db
from portal.jobs import create_job
from portal.models import Authorization, ExportMember, JobEvent, Message, Stream
from providers import get_provider, http, webhook
from providers.base import AuthError
from tests.loopback import WebhookReceiver
from tests.loopback_hook import EnrichServer, default_enrich
from tests.test_audience_export import PEOPLE, make_audience, run_now, say

SECRET = "enrich-signing-secret-31337"


@pytest.fixture
def owner(make_user):
    return make_user("operator")


def hmac_authorization(owner, url):
    provider = get_provider("webhook")
    authorization = vault.create(provider, provider.auth_method("hmac"), label="Signed hook",
                                 description="", by=owner,
                                 credentials={"url": url, "key_id": "k1", "secret": SECRET})
    db.session.commit()
    return authorization


def make_job(owner, url, audience, job_type="enrich", **config):
    provider = get_provider("webhook")
    job = create_job(provider=provider, job_type=provider.job_type(job_type),
                     authorization=hmac_authorization(owner, url), name="Hook job",
                     description="", config={"audience": audience.slug, **config},
                     created_by=owner, schedule={"kind": "interval", "every_minutes": 60})
    db.session.commit()
    return job


def pro(owner):
    return make_audience(owner, [{"field": "plan", "op": "equals", "value": "pro"}])


def stream_messages(name="enrichment") -> list[Message]:
    return db.session.scalars(select(Message).join(Stream, Stream.id == Message.stream_id)
                              .where(Stream.name == name).order_by(Message.id)).all()


def last_event(job) -> JobEvent:
    return db.session.scalars(select(JobEvent).where(JobEvent.job_id == job.id)
                              .order_by(JobEvent.id.desc())).first()


def attribute(email, name):
    view = profiles.find("email", email)
    assert view is not None, email
    return next((a for a in view.attributes if a.name == name), None)


# -- Audience events ----------------------------------------------------------------------

def test_audience_changes_go_as_entered_and_exited_events(app, work, owner):
    say(*PEOPLE)
    audience = pro(owner)
    with WebhookReceiver(secret=SECRET) as hook:
        job = make_job(owner, hook.url, audience, "send_audience", format="events")
        assert work()
        [first] = hook.received
        assert hook.verify(SECRET, first)
        events = first.json
        assert isinstance(events, list)
        assert [(e["event"], e["email"]) for e in events] == [
            ("entered", "ann@example.com"), ("entered", "cy@example.com")]
        assert events[0]["audience"] == audience.slug and events[0]["profile_id"] > 0
        assert events[0]["fields"] == {"email": "ann@example.com", "plan": "pro",
                                       "city": "Oslo"}
        datetime.fromisoformat(events[0]["at"])
        db.session.refresh(job)
        assert (job.added_total, job.removed_total, job.omitted_total) == (2, 0, 1)
        # Ann leaves, Bob joins; a refused request is sent again with the same key.
        say({"email": "ann@example.com", "plan": "free"},
            {"email": "bob@example.com", "plan": "pro"}, at=100)
        hook.received.clear()
        hook.status = 503
        run_now(job, owner)
        work()
        assert membership.exported_count(job.id) == 2, "nothing recorded for a refusal"
        hook.status = 204
        run_now(job, owner)
        assert work()
        refused, accepted = hook.received
        # A third run with no change sends nothing.
        run_now(job, owner)
        assert work()
        assert len(hook.received) == 2
    assert refused.headers["Idempotency-Key"] == accepted.headers["Idempotency-Key"]
    assert hook.verify(SECRET, accepted)
    events = accepted.json
    assert [(e["event"], e["email"]) for e in events] == [
        ("exited", "ann@example.com"), ("entered", "bob@example.com")]
    assert "fields" not in events[0] and events[1]["fields"]["plan"] == "pro"
    assert sorted(membership_identifiers(job)) == ["bob@example.com", "cy@example.com"]


def membership_identifiers(job):
    return db.session.scalars(select(ExportMember.identifier)
                              .where(ExportMember.job_id == job.id)).all()


# -- Enrichment ---------------------------------------------------------------------------

def test_enrichment_writes_attributes_the_profiles_take_and_a_rerun_writes_nothing(
        app, work, owner):
    say(*PEOPLE, {"email": "dee@example.com", "plan": "pro"})
    audience = pro(owner)
    with EnrichServer(SECRET) as server:
        job = make_job(owner, server.url, audience, batch_size=2)
        assert work()
        assert server.refused == 0, "every request was signed"
        sent = [[p["email"] for p in r["profiles"]] for r in server.requests]
        assert sent == [["ann@example.com"], ["cy@example.com", "dee@example.com"]]
        assert server.requests[0]["profiles"][0]["fields"]["city"] == "Oslo"
        messages = stream_messages()
        assert len(messages) == 3
        assert all(m.dedupe_key.startswith("enrich:") for m in messages)
        for email in ("ann@example.com", "cy@example.com", "dee@example.com"):
            score = attribute(email, "score")
            assert score.value == default_enrich(email, {})["score"]
            assert score.stream == "enrichment" and score.source == f"job:{job.id}"
            assert attribute(email, "tier").value == "gold"
        assert attribute("bob@example.com", "score") is None, "not in the audience"
        db.session.refresh(job)
        assert job.cursor == {"after_profile_id": 0} and job.added_total == 3
        assert job.status == "sleeping", "a full pass ends the run"
        before = profiles.snapshot()
        # The same answers again: nothing is written.
        server.received.clear()
        run_now(job, owner)
        assert work()
        assert len(server.requests) == 2
    assert len(stream_messages()) == 3
    assert profiles.snapshot() == before
    assert "0 written" in last_event(job).message


def test_changed_answers_win_by_time_even_back_to_an_earlier_value_and_rebuild_agrees(
        app, work, owner, monkeypatch):
    say({"email": "ann@example.com", "plan": "pro"})
    audience = pro(owner)
    tiers = iter(["silver", "gold", "silver"])
    current = {"tier": next(tiers)}
    with EnrichServer(SECRET, enrich=lambda value, fields: dict(current)) as server:
        job = make_job(owner, server.url, audience)
        assert work()
        assert attribute("ann@example.com", "tier").value == "silver"
        for tier in tiers:
            current["tier"] = tier
            run_now(job, owner)
            assert work()
            assert attribute("ann@example.com", "tier").value == tier
        # An answer with its own time: kept with that time (older than what is held: lost).
        server.at = "2020-01-01T00:00:00Z"
        current["tier"] = "bronze"
        run_now(job, owner)
        assert work()
    assert len(server.requests) == 4
    assert [m.payload["tier"] for m in stream_messages()] == [
        "silver", "gold", "silver", "bronze"]
    assert stream_messages()[-1].event_time.replace(tzinfo=UTC) == datetime(2020, 1, 1,
                                                                            tzinfo=UTC)
    assert attribute("ann@example.com", "tier").value == "silver", "newest wins"
    built = profiles.snapshot()
    profiles.rebuild()
    db.session.commit()
    assert profiles.snapshot() == built


def test_rate_limit_sleeps_until_retry_after(app, work, owner):
    say(*PEOPLE)
    audience = pro(owner)
    with EnrichServer(SECRET) as server:
        server.retry_after = "120"
        server.fail_next = [429]
        job = make_job(owner, server.url, audience)
        started = datetime.now(UTC)
        work()
        db.session.refresh(job)
        assert job.status == "sleeping" and job.error_count == 0
        assert last_event(job).code == "rate_limited"
        wait = job.next_run_at.replace(tzinfo=UTC) - started
        assert timedelta(seconds=115) < wait < timedelta(seconds=130)
        authorization = db.session.get(Authorization, job.authorization_id)
        assert authorization.rate_limited_until is not None
        assert stream_messages() == []


def test_refused_signature_marks_the_authorization_unhealthy(app, work, owner):
    say(*PEOPLE)
    audience = pro(owner)
    with EnrichServer("another-secret-entirely") as server:
        job = make_job(owner, server.url, audience)
        work()
    assert server.refused == 1
    db.session.refresh(job)
    assert last_event(job).code == "auth_error"
    assert SECRET not in last_event(job).message
    authorization = db.session.get(Authorization, job.authorization_id)
    assert authorization.health == "unhealthy"
    assert stream_messages() == []


def test_a_failure_mid_run_resumes_from_the_cursor_without_duplicates(app, work, owner):
    say(*[{"email": f"p{n}@example.com", "plan": "pro"} for n in range(7)])
    audience = pro(owner)
    with EnrichServer(SECRET) as server:
        server.fail_after = 2  # two batches answered, then 500s
        job = make_job(owner, server.url, audience, batch_size=3)
        work()
        db.session.refresh(job)
        assert job.status == "sleeping" and job.error_count == 1
        assert last_event(job).code == "http_500"
        assert len(stream_messages()) == 6
        held = job.cursor["after_profile_id"]
        assert held > 0
        server.fail_after = None
        server.received.clear()
        run_now(job, owner)
        assert work()
        [resumed] = server.requests
    assert [p["email"] for p in resumed["profiles"]] == ["p6@example.com"]
    assert len(stream_messages()) == 7
    assert len({m.dedupe_key for m in stream_messages()}) == 7
    db.session.refresh(job)
    assert job.cursor == {"after_profile_id": 0} and job.error_count == 0


def test_a_hanging_endpoint_times_out_and_is_retried(app, work, owner, monkeypatch):
    monkeypatch.setattr(http, "TIMEOUT", httpx.Timeout(0.5, connect=0.5))
    say(*PEOPLE)
    audience = pro(owner)
    with EnrichServer(SECRET) as server:
        server.hang_next, server.hang_seconds = 1, 5.0
        job = make_job(owner, server.url, audience)
        work()
        db.session.refresh(job)
        assert job.status == "sleeping" and job.error_count == 1
        assert last_event(job).code == "timeout"
        assert stream_messages() == []
        run_now(job, owner)
        assert work()
    assert len(stream_messages()) == 2


BAD_ANSWERS = [
    (b"<html>oops</html>", "not JSON"),
    (b'{"results": []}', "wrong shape"),
    (b'[1, 2]', "wrong shape"),
    (b'{"profiles": [{"email": "eve@example.com", "attributes": {"a": 1}}]}',
     "unknown 'email'"),
    (b'{"profiles": [' + b",".join(
        b'{"email": "ann@example.com", "attributes": {}}' for _ in range(3)) + b"]}",
     "too many profiles"),
    (b'{"profiles": [{"email": "ann@example.com", "attributes": 5}]}', "no 'attributes'"),
    (b'{"profiles": [{"email": "ann@example.com", "attributes": {}, "at": "soon"}]}',
     "not an ISO 8601 time"),
]


@pytest.mark.parametrize("body, says", BAD_ANSWERS)
def test_a_bad_answer_fails_the_job_saying_what_was_wrong(app, work, owner, body, says):
    say(*PEOPLE)
    audience = pro(owner)
    with EnrichServer(SECRET) as server:
        server.raw_answer = body
        job = make_job(owner, server.url, audience)
        work()
    db.session.refresh(job)
    assert job.status == "failed"
    said = db.session.scalars(select(JobEvent.message).where(
        JobEvent.job_id == job.id, JobEvent.code == "bad_answer")).all()
    assert any(says in message for message in said), said
    assert stream_messages() == []


def test_test_connection_pings_with_a_signature(app):
    with EnrichServer(SECRET) as server:
        assert webhook.check("hmac", {"url": server.url, "key_id": "k1",
                                      "secret": SECRET}) == "Endpoint answered 204"
        assert server.refused == 0
        with pytest.raises(AuthError, match="refused the credentials"):
            webhook.check("hmac", {"url": server.url, "key_id": "k1",
                                   "secret": "wrong-secret-here"})
    assert server.refused == 1


def test_messages_in_the_stream_hold_nothing_but_identifier_and_attributes(app, work, owner):
    say({"email": "ann@example.com", "plan": "pro", "secret_note": "x"})
    audience = pro(owner)
    with EnrichServer(SECRET) as server:
        make_job(owner, server.url, audience)
        assert work()
    [message] = stream_messages()
    assert message.payload == {"email": "ann@example.com", "score": default_enrich(
        "ann@example.com", {})["score"], "tier": "gold"}
    assert db.session.scalar(select(func.count()).select_from(Message)) == 2


# -- Send stream --------------------------------------------------------------------------


def test_send_stream_posts_signed_batches_with_their_idempotency_keys(app, work, owner):
    """Each batch goes once, oldest first, as the documented JSON, signed over the exact
    body; a refused batch is sent again as the same bytes under the same key."""
    import json

    from portal.datastore import write_messages
    from providers.base import OutMessage

    start = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
    write_messages("signups", [OutMessage(f"k{n}", start + timedelta(minutes=n),
                                          {"email": f"p{n}@example.com", "n": n})
                               for n in range(5)], source="test")
    db.session.commit()
    ids = db.session.scalars(select(Message.id).order_by(Message.id)).all()
    with WebhookReceiver(secret=SECRET) as hook:
        provider = get_provider("webhook")
        job = create_job(provider=provider, job_type=provider.job_type("send_stream"),
                         authorization=hmac_authorization(owner, hook.url), name="Signups",
                         description="", config={"stream": "signups", "batch_size": 2},
                         created_by=owner, schedule={"kind": "interval", "every_minutes": 60})
        db.session.commit()
        work()
        first_run = list(hook.received)
    assert [r.headers["Idempotency-Key"] for r in first_run] == [
        f"signups:{ids[0]}-{ids[1]}", f"signups:{ids[2]}-{ids[3]}", f"signups:{ids[4]}-{ids[4]}"]
    for received in first_run:
        assert (received.method, received.path) == ("POST", "/hook")
        assert received.headers["Content-Type"] == "application/json"
        assert received.headers["X-Portal-Key-Id"] == "k1"
        assert hook.verify(SECRET, received), "signed over the exact body"
        assert not hook.verify("another-secret", received)
        assert "Authorization" not in received.headers
    assert first_run[0].json == {"stream": "signups", "messages": [
        {"id": ids[n], "event_time": (start + timedelta(minutes=n)).isoformat(),
         "payload": {"email": f"p{n}@example.com", "n": n}} for n in (0, 1)]}
    assert [m["id"] for r in first_run for m in r.json["messages"]] == ids
    assert json.loads(first_run[2].body) == first_run[2].json
    assert fresh_job(job).cursor == {"after_id": ids[4], "sent": 5}


def test_a_refused_stream_batch_is_sent_again_unchanged(app, work, owner):
    from portal.datastore import write_messages
    from providers.base import OutMessage

    write_messages("signups", [OutMessage(f"k{n}", datetime(2024, 5, 1, tzinfo=UTC),
                                          {"n": n}) for n in range(2)], source="test")
    db.session.commit()
    with WebhookReceiver(secret=SECRET) as hook:
        provider = get_provider("webhook")
        job = create_job(provider=provider, job_type=provider.job_type("send_stream"),
                         authorization=hmac_authorization(owner, hook.url), name="Signups",
                         description="", config={"stream": "signups", "batch_size": 5},
                         created_by=owner, schedule={"kind": "interval", "every_minutes": 60},
                         retry_policy={"backoff_base_seconds": 1, "backoff_cap_seconds": 1})
        db.session.commit()
        hook.fail_next = [503]
        work()
        job = fresh_job(job)
        assert job.status == "sleeping" and job.error_count == 1
        assert job.cursor.get("after_id", 0) == 0, "the cursor stays before a refused batch"
        run_now(job, owner)
        work()
        refused, accepted = hook.received
    assert refused.body == accepted.body, "the same batch, byte for byte"
    assert refused.headers["Idempotency-Key"] == accepted.headers["Idempotency-Key"]
    assert hook.verify(SECRET, accepted)
    assert fresh_job(job).cursor["sent"] == 2


def fresh_job(job):
    from portal.models import Job

    return db.session.get(Job, job.id, populate_existing=True)
