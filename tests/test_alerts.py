"""Alerts with real parts: jobs driven by a real RQ worker through portal/lifecycle.py, the
dispatcher's alert pass, email received by an aiosmtpd server on loopback, Slack through
the loopback Slack, webhooks through the loopback receiver. A rule fires once per
transition and again only after a recovery; scope filters; rate limits longer than N;
the purge coming; a failed delivery recorded, retried, and the state kept."""

from __future__ import annotations

import email
import re
from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from aiosmtpd.controller import Controller
from sqlalchemy import select

from portal import alerts, lifecycle, queues, vault
from portal.extensions import db
from portal.jobs import create_job
from portal.models import AlertRule, AlertSent, AlertState, Job
from portal.queues import redis_connection
from providers import get_job_type, get_provider, slack
from tests.conftest import canary, free_port
from tests.loopback import WebhookReceiver
from tests.loopback_slack import SlackServer
from tests.test_job_path import fresh
from workers import dispatcher

START = datetime(2026, 6, 1, 8, 0, tzinfo=UTC)
BASE = "https://portal.example.test"


class Inbox:
    """What the SMTP server on loopback received."""

    def __init__(self) -> None:
        self.messages: list[email.message.Message] = []

    async def handle_DATA(self, server, session, envelope):  # noqa: N802 (aiosmtpd's name)
        self.messages.append(email.message_from_bytes(envelope.content))
        return "250 OK"


def smtp_server(port: int) -> tuple[Controller, Inbox]:
    inbox = Inbox()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    return controller, inbox


@pytest.fixture
def clock():
    with time_machine.travel(START, tick=True) as traveller:
        yield traveller


@pytest.fixture
def smtp(app):
    port = free_port()
    app.config.update(PORTAL_SMTP_HOST="127.0.0.1", PORTAL_SMTP_PORT=port,
                      PORTAL_BASE_URL=BASE)
    controller, inbox = smtp_server(port)
    yield inbox
    controller.stop()


@pytest.fixture
def owner(make_user):
    return make_user("operator", "owner@example.com")


def make_job(owner, job_type="script", name="Nightly import", schedule=None, **config) -> Job:
    provider, kind = get_job_type("faults", job_type)
    job = create_job(provider=provider, job_type=kind, authorization=None, name=name,
                     description="", config=config, created_by=owner,
                     schedule=schedule or {"kind": "interval", "every_minutes": 60})
    db.session.commit()
    return job


def make_rule(owner, *, conditions=("failed", "recovered"), channel="email", scope="all",
              scope_value="", minutes=30, **target) -> AlertRule:
    entered = alerts.RuleInput(name="Ops", scope=scope, scope_value=scope_value,
                               conditions=list(conditions), rate_limit_minutes=minutes,
                               channel=channel, emails=target.get("emails", "ops@example.com"),
                               slack_authorization_id=target.get("authorization_id"),
                               slack_channel=target.get("slack_channel", ""),
                               webhook_url=target.get("url", ""))
    rule = alerts.save_rule(entered, by=owner)
    db.session.commit()
    return rule


def alert_pass(work) -> int:
    """The dispatcher's alert task as it runs every pass, then a worker for deliveries."""
    redis_connection().delete(dispatcher.ALERTS_KEY)  # the 15 s gate, for a test's clock
    made = dispatcher.alerts_due(datetime.now(UTC))
    work()
    return made


def run_due(clock, job: Job, work) -> Job:
    job = fresh(job)
    if job.next_run_at is not None:
        clock.move_to(job.next_run_at + timedelta(seconds=1))
    dispatcher.dispatch_once()
    work()
    return fresh(job)


def sent_rows() -> list[AlertSent]:
    db.session.expire_all()
    return list(db.session.scalars(select(AlertSent).order_by(AlertSent.id)))


def test_failed_once_then_again_only_after_a_recovery_by_email(clock, smtp, owner, work):
    rule = make_rule(owner, emails="ops@example.com, lead@example.com")
    job = make_job(owner, script=["fatal"])
    work()
    assert fresh(job).status == "failed"

    assert alert_pass(work) == 1
    assert alert_pass(work) == 0  # nothing changed: no repeat
    assert alert_pass(work) == 0
    [mail] = smtp.messages
    assert mail["Subject"] == "Job failed: Nightly import"
    assert mail["To"] == "ops@example.com, lead@example.com"
    body = mail.get_payload(decode=True).decode()
    assert "“Nightly import” has failed" in body
    assert "Last error: injected fatal error in unit 0" in body
    assert f"Job summary: {BASE}/jobs/{job.id}" in body

    # Someone corrects the input and resumes it: one recovery notice.
    job = fresh(job)
    job.config = {"script": ["ok", "fatal"], "units": 0, "more_now": False}
    lifecycle.resume(job, by=owner, now=datetime.now(UTC))
    db.session.commit()
    queues.enqueue(job, force=True)  # as the summary's Resume button does
    work()
    job = fresh(job)
    assert job.status == "sleeping" and job.error_count == 0
    assert alert_pass(work) == 1
    assert alert_pass(work) == 0
    assert smtp.messages[-1]["Subject"] == "Back to normal: Nightly import"
    assert "working normally again" in smtp.messages[-1].get_payload(decode=True).decode()

    # It fails again: a new alert, since it recovered in between.
    job = run_due(clock, job, work)
    assert job.status == "failed"
    assert alert_pass(work) == 1
    assert [m["Subject"] for m in smtp.messages] == [
        "Job failed: Nightly import", "Back to normal: Nightly import",
        "Job failed: Nightly import"]
    rows = sent_rows()
    assert [(r.condition, r.recovery, r.status, r.attempts) for r in rows] == [
        ("failed", False, "sent", 1), ("recovered", True, "sent", 1),
        ("failed", False, "sent", 1)]
    assert all(r.rule_id == rule.id and r.job_id == job.id for r in rows)


def test_erroring_by_webhook_with_scope_filters(clock, app, owner, work):
    with WebhookReceiver() as hook:
        app.config["PORTAL_BASE_URL"] = BASE
        make_rule(owner, conditions=["erroring"], channel="webhook", scope="provider",
                  scope_value="faults", url=hook.url)
        make_rule(owner, conditions=["erroring"], channel="webhook", scope="provider",
                  scope_value="slack", url=hook.url + "?other")
        other = make_job(owner, name="Other job")
        make_rule(owner, conditions=["erroring"], channel="webhook", scope="job",
                  scope_value=str(other.id), url=hook.url + "?one")
        make_rule(owner, conditions=["failed"], channel="webhook", url=hook.url + "?failed")
        job = make_job(owner, script=["error"] * 10)
        work()
        assert fresh(job).error_count == 1
        assert alert_pass(work) == 1
        job = run_due(clock, job, work)  # a second error in a row: the same state
        assert job.error_count == 2
        assert alert_pass(work) == 0
        [received] = hook.received
        assert received.path == "/hook" and "other" not in str(received.headers)
        payload = received.json
        assert payload["condition"] == "erroring" and payload["recovery"] is False
        assert payload["job"] == {"id": job.id, "name": "Nightly import",
                                  "url": f"{BASE}/jobs/{job.id}"}
        assert "injected error in unit 0" in payload["message"]
        assert "keeps retrying" in payload["message"]


def test_rate_limited_longer_than_n_minutes_to_slack(clock, owner, work, monkeypatch):
    bot = canary("xoxb-1111-2222-abcdefabcdef")
    with SlackServer(bot_token=bot) as server:
        monkeypatch.setenv(slack.API_URL_ENV, server.api_url)
        server.add_channel("ops-alerts")
        provider = get_provider("slack")
        authorization = vault.create(provider, provider.auth_method("bot_token"),
                                     label="Slack bot", description="",
                                     credentials={"bot_token": bot}, by=owner)
        db.session.commit()
        make_rule(owner, conditions=["rate_limited", "recovered"], channel="slack",
                  minutes=30, authorization_id=authorization.id, slack_channel="#ops-alerts")
        until = START + timedelta(hours=2)
        job = make_job(owner, rate_limited_until=until.isoformat(), units=0, more_now=False)
        work()
        job = fresh(job)
        assert job.status == "sleeping" and job.error_count == 0
        assert alert_pass(work) == 0  # held back, but not for 30 minutes yet
        clock.move_to(START + timedelta(minutes=20))
        assert alert_pass(work) == 0
        clock.move_to(START + timedelta(minutes=31))
        assert alert_pass(work) == 1
        assert alert_pass(work) == 0
        [posted] = server.posted
        assert posted.channel == server.channels[0].id and posted.token == bot
        assert "Job held back by a rate limit: Nightly import" in posted.text
        assert re.search(r"waiting for 3[01] minutes", posted.text)
        # The limit ends, the job runs well: a recovery notice.
        job = run_due(clock, job, work)
        assert job.status == "sleeping"
        assert alert_pass(work) == 1
        assert "Back to normal" in server.posted[-1].text
        assert [r.status for r in sent_rows()] == ["sent", "sent"]


def test_purge_soon_once_and_not_for_a_kept_job(clock, app, owner, work):
    with WebhookReceiver() as hook:
        make_rule(owner, conditions=["purge_soon"], channel="webhook", url=hook.url)
        job = make_job(owner, script=[], units=1)
        kept = make_job(owner, name="Kept", script=[], units=1)
        work()
        assert fresh(job).status == "completed" == fresh(kept).status
        assert alert_pass(work) == 0  # 90 days to go
        kept = fresh(kept)
        kept.keep = True
        db.session.commit()
        clock.move_to(START + timedelta(days=88))
        assert alert_pass(work) == 1
        assert alert_pass(work) == 0
        [received] = hook.received
        assert received.json["condition"] == "purge_soon"
        assert received.json["job"]["id"] == job.id
        assert "will be deleted with its logs on 2026-08-30" in received.json["message"]
        # The purge deletes it: its state row goes, nothing more is sent.
        clock.move_to(START + timedelta(days=91))
        dispatcher.purge_daily(datetime.now(UTC))
        assert db.session.get(Job, job.id) is None
        assert alert_pass(work) == 0
        assert db.session.scalars(select(AlertState)).all() == []


def test_a_failed_delivery_is_recorded_retried_and_the_state_kept(clock, app, owner, work):
    port = free_port()  # nothing listens there yet
    app.config.update(PORTAL_SMTP_HOST="127.0.0.1", PORTAL_SMTP_PORT=port,
                      PORTAL_SMTP_USERNAME="", PORTAL_SMTP_PASSWORD="")
    make_rule(owner, conditions=["failed"])
    job = make_job(owner, script=["fatal"])
    work()
    assert alert_pass(work) == 1
    [row] = sent_rows()
    assert (row.status, row.attempts) == ("pending", 1)
    assert "did not take the email" in row.error and row.next_attempt_at is not None
    assert db.session.scalars(select(AlertState.state)).all() == ["failed"]
    assert alert_pass(work) == 0  # not due again yet, and no second alert for the job
    controller, inbox = smtp_server(port)
    try:
        clock.move_to(START + timedelta(minutes=5))
        assert alert_pass(work) == 0
        [row] = sent_rows()
        assert (row.status, row.attempts, row.error) == ("sent", 2, "")
        assert len(inbox.messages) == 1
        assert str(job.id) in inbox.messages[0].get_payload(decode=True).decode()
    finally:
        controller.stop()


def test_gives_up_after_the_last_attempt(clock, app, owner, work):
    app.config.update(PORTAL_SMTP_HOST="127.0.0.1", PORTAL_SMTP_PORT=free_port())
    make_rule(owner, conditions=["failed"])
    make_job(owner, script=["fatal"])
    work()
    alert_pass(work)
    for minutes in (10, 30):
        clock.move_to(START + timedelta(minutes=minutes))
        alert_pass(work)
    [row] = sent_rows()
    assert (row.status, row.attempts) == ("failed", alerts.RETRIES)


def test_two_passes_and_a_redelivery_never_send_twice(clock, smtp, owner, work):
    make_rule(owner)
    job = make_job(owner, script=["fatal"])
    work()
    now = datetime.now(UTC)
    assert alerts.evaluate(now) == 1
    assert alerts.evaluate(now) == 0  # a second pass (another dispatcher) finds it done
    [row] = sent_rows()
    alerts._enqueue(row)  # the same delivery queued again: the same RQ id
    work()
    assert alerts.deliver(row.id, 0) == "already handled"  # a redelivery of the task
    assert len(smtp.messages) == 1
    assert fresh(job).status == "failed"


def test_a_running_job_keeps_its_state_and_disabled_rules_send_nothing(clock, smtp, owner,
                                                                        work):
    rule = make_rule(owner)
    rule.enabled = False
    db.session.commit()
    make_job(owner, script=["fatal"])
    work()
    assert alert_pass(work) == 0
    assert smtp.messages == []


@pytest.mark.parametrize("entered, field", [
    ({"name": " "}, "name"),
    ({"scope": "provider", "scope_value": "nope"}, "scope_value"),
    ({"scope": "job", "scope_value": "²³"}, "scope_value"),
    ({"conditions": []}, "conditions"),
    ({"rate_limit_minutes": 0}, "rate_limit_minutes"),
    ({"emails": "not an address"}, "emails"),
    ({"channel": "webhook", "webhook_url": "ftp://x"}, "webhook_url"),
    ({"channel": "slack", "slack_authorization_id": 99, "slack_channel": ""},
     "slack_authorization_id"),
    ({"channel": "pigeon"}, "channel"),
])
def test_bad_rules_name_the_field(owner, entered, field):
    values = {"name": "Ops", "scope": "all", "scope_value": "", "conditions": ["failed"],
              "rate_limit_minutes": 30, "channel": "email", "emails": "ops@example.com",
              **entered}
    with pytest.raises(alerts.AlertError) as raised:
        alerts.save_rule(alerts.RuleInput(**values), by=owner)
    assert field in raised.value.errors
