"""Alerts: tell people when a job needs them, once per change, and when it is fine again.

A job's alert state is read from the database (the source of truth): failed, erroring
(errors in a row while not failed), rate_limited (held back by a provider's rate limit for
longer than the rule's N minutes), purge_soon (settled and due for the purge within
PURGE_SOON) or ok. Each rule remembers, per job, the state it last notified about
(AlertState); a notification goes out only when the state the rule cares about differs
from that, and a recovery notice when it goes back to ok after a notified trouble state.

The dispatcher calls `evaluate` every EVALUATE_SECONDS. The state change and the
AlertSent row commit together (a compare-and-set on the state row, so two passes never
both win), and only then is the delivery queued on RQ under an id made of the row's id and
attempt: a repeated pass or a redelivery never sends twice. A failed delivery is retried
RETRIES times with a growing wait; the state it reported stays recorded either way.
"""

from __future__ import annotations

import logging
import smtplib
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from email.message import EmailMessage
from typing import Any

from flask import current_app
from rq import Queue
from sqlalchemy import and_, delete, func, or_, select, update
from sqlalchemy.exc import IntegrityError

from portal import audit, vault
from portal.extensions import db
from portal.jobs import purge_at
from portal.lifecycle import SETTLED, Status
from portal.models import AlertRule, AlertSent, AlertState, Authorization, Job, JobEvent, User
from portal.models.types import utcnow
from portal.queues import redis_connection
from providers import CATALOG, get_provider, known_providers, slack
from providers.base import ProviderError
from providers.http import http_call

log = logging.getLogger(__name__)

EVALUATE_SECONDS = 15
PURGE_SOON = timedelta(days=3)
RETRIES = 3  # delivery attempts in all
STUCK_AFTER = timedelta(minutes=10)  # a delivery "sending" this long lost its worker
DELIVER_FUNCTION = "workers.runner.deliver_alert"

SCOPES = {"all": "All jobs", "provider": "Jobs of one provider",
          "job_type": "Jobs of one type", "job": "One job"}
CONDITIONS = {
    "failed": "Became Failed",
    "erroring": "Started having errors",
    "rate_limited": "Held back by a rate limit for longer than N minutes",
    "recovered": "Back to normal (a recovery notice)",
    "purge_soon": "About to be deleted by the purge",
}
CHANNELS = {"email": "Email", "slack": "Slack", "webhook": "Webhook"}
# When several hold at once, the first one here is the one reported.
PRIORITY = ("purge_soon", "failed", "rate_limited", "erroring")
OK = "ok"


class AlertError(ValueError):
    """Input a rule cannot take; `errors` maps field names to messages."""

    def __init__(self, errors: dict[str, str]):
        super().__init__("; ".join(errors.values()))
        self.errors = errors


# --- rules -------------------------------------------------------------------------------

@dataclass
class RuleInput:
    name: str
    scope: str
    scope_value: str
    conditions: list[str]
    rate_limit_minutes: int
    channel: str
    emails: str = ""
    slack_authorization_id: int | None = None
    slack_channel: str = ""
    webhook_url: str = ""
    enabled: bool = True


def _job_type_keys() -> set[str]:
    return {job_type.key for provider in known_providers() for job_type in provider.job_types}


def scope_suggestions(limit: int = 200) -> list[tuple[str, str]]:
    """What the form's "provider, job type or job number" field suggests: (value, label)
    of every provider, every job type and the newest jobs."""
    found = [(provider.key, f"{provider.name} (provider)") for provider in CATALOG.values()]
    found += sorted({(job_type.key, f"{job_type.name} (job type, {provider.name})")
                     for provider in CATALOG.values() for job_type in provider.job_types})
    found += [(str(job_id), f"{name} (job)") for job_id, name in db.session.execute(
        select(Job.id, Job.name).order_by(Job.id.desc()).limit(limit))]
    return found


def _check(entered: RuleInput) -> tuple[dict[str, Any], dict[str, str]]:
    """The channel target of a rule, and field-level errors."""
    errors: dict[str, str] = {}
    if not entered.name.strip():
        errors["name"] = "Give the rule a name, such as “Failed imports to the ops team”."
    if entered.scope not in SCOPES:
        errors["scope"] = "Choose which jobs the rule watches."
    elif entered.scope == "provider" and get_provider(entered.scope_value) is None:
        errors["scope_value"] = "Enter a provider's key, such as mailchimp or s3."
    elif entered.scope == "job_type" and entered.scope_value not in _job_type_keys():
        errors["scope_value"] = "Enter a job type's key, such as import_file (the field " \
                                "suggests them as you type)."
    elif entered.scope == "job":
        value = entered.scope_value.strip()
        if not (value.isascii() and value.isdigit() and len(value) < 12
                and db.session.get(Job, int(value)) is not None):
            errors["scope_value"] = "Enter the number of an existing job (its summary's URL " \
                                    "ends with it)."
    if not entered.conditions or any(c not in CONDITIONS for c in entered.conditions):
        errors["conditions"] = "Tick at least one change to be told about."
    if not 1 <= entered.rate_limit_minutes <= 10080:
        errors["rate_limit_minutes"] = "Enter a number of minutes from 1 to 10,080 (a week)."
    target: dict[str, Any] = {}
    if entered.channel == "email":
        emails = [e.strip() for e in entered.emails.replace(";", ",").split(",") if e.strip()]
        bad = [e for e in emails if "@" not in e or " " in e or len(e) > 320]
        if not emails or bad or len(emails) > 20:
            errors["emails"] = ("Enter up to 20 email addresses separated by commas"
                                + (f"; “{bad[0][:60]}” is not one." if bad else "."))
        target = {"emails": emails}
    elif entered.channel == "slack":
        authorization = (db.session.get(Authorization, entered.slack_authorization_id)
                         if entered.slack_authorization_id else None)
        if authorization is None or authorization.provider != "slack":
            errors["slack_authorization_id"] = "Choose a Slack authorization from the Vault."
        channel = entered.slack_channel.strip()
        if not channel or len(channel) > 80 or " " in channel:
            errors["slack_channel"] = "Enter a channel, such as #ops-alerts or C0123456789."
        target = {"authorization_id": entered.slack_authorization_id, "channel": channel}
    elif entered.channel == "webhook":
        url = entered.webhook_url.strip()
        if not url.startswith(("http://", "https://")) or len(url) > 500 or "@" in url:
            errors["webhook_url"] = "Enter an address starting with https:// (no user or " \
                                    "password in it)."
        target = {"url": url}
    else:
        errors["channel"] = "Choose where to send alerts."
    return target, errors


def save_rule(entered: RuleInput, *, by: User, rule: AlertRule | None = None) -> AlertRule:
    """Create a rule, or change `rule`; audited. Raises AlertError with field messages."""
    if rule is not None and rule.channel == "webhook" and entered.channel == "webhook":
        kept = str((rule.target or {}).get("url", ""))
        if entered.webhook_url.strip() == shown_url(kept):
            entered.webhook_url = kept  # the form shows it without its query: unchanged
    target, errors = _check(entered)
    if errors:
        raise AlertError(errors)
    creating = rule is None
    if rule is None:
        rule = AlertRule(created_by_id=by.id, created_at=utcnow())
        db.session.add(rule)
    rule.name = entered.name.strip()[:200]
    rule.scope = entered.scope
    rule.scope_value = "" if entered.scope == "all" else entered.scope_value.strip()[:200]
    rule.conditions = [c for c in CONDITIONS if c in entered.conditions]
    rule.rate_limit_minutes = entered.rate_limit_minutes
    rule.channel = entered.channel
    rule.target = target
    rule.enabled = entered.enabled
    rule.updated_at = utcnow()
    db.session.flush()
    audit.record("alert_rule_created" if creating else "alert_rule_changed", "alert_rule",
                 rule.id, rule.name, by=by, summary=f"{'Created' if creating else 'Changed'} "
                 f"the alert rule “{rule.name}” ({describe_target(rule)}).")
    return rule


def set_enabled(rule: AlertRule, enabled: bool, *, by: User) -> None:
    rule.enabled = enabled
    rule.updated_at = utcnow()
    audit.record("alert_rule_enabled" if enabled else "alert_rule_disabled", "alert_rule",
                 rule.id, rule.name, by=by,
                 summary=f"{'Enabled' if enabled else 'Disabled'} the alert rule “{rule.name}”.")


def delete_rule(rule: AlertRule, *, by: User) -> None:
    audit.record("alert_rule_deleted", "alert_rule", rule.id, rule.name, by=by,
                 summary=f"Deleted the alert rule “{rule.name}”.")
    db.session.execute(delete(AlertState).where(AlertState.rule_id == rule.id))
    db.session.delete(rule)


def shown_url(url: str) -> str:
    """A webhook's address as pages show it: its query string and fragment may carry a
    token, so they never show."""
    return url.split("?", 1)[0].split("#", 1)[0]


def describe_target(rule: AlertRule) -> str:
    """Where a rule sends, safe to show: a webhook's address without its query string."""
    target = rule.target or {}
    if rule.channel == "email":
        return "email to " + ", ".join(target.get("emails", []))
    if rule.channel == "slack":
        return f"Slack {target.get('channel', '')}"
    url = str(target.get("url", ""))
    return "webhook " + shown_url(url)[:200]


def describe_scope(rule: AlertRule) -> str:
    if rule.scope == "all":
        return "All jobs"
    if rule.scope == "job":
        return f"Job #{rule.scope_value}"
    return f"{SCOPES[rule.scope]}: {rule.scope_value}"


def covers(rule: AlertRule, job: Job) -> bool:
    if rule.scope == "provider":
        return job.provider == rule.scope_value
    if rule.scope == "job_type":
        return job.job_type == rule.scope_value
    if rule.scope == "job":
        return str(job.id) == rule.scope_value
    return True


def rules_covering(job: Job) -> int:
    """How many enabled rules watch this job (the summary says so)."""
    rules = db.session.scalars(select(AlertRule).where(AlertRule.enabled.is_(True))).all()
    return sum(1 for rule in rules if covers(rule, job))


# --- states ------------------------------------------------------------------------------

def _rate_limited_since(job: Job) -> datetime | None:
    """When the job's current rate-limit hold began: the first of the Sleeping events
    (not a quiet window) written since its last other event; None if it is not held."""
    events = db.session.execute(
        select(JobEvent.kind, JobEvent.code, JobEvent.at).where(JobEvent.job_id == job.id)
        .order_by(JobEvent.id.desc()).limit(50)
    ).all()
    since = None
    for kind, code, at in events:
        if kind != "sleeping" or code == "quiet":
            break
        since = at
    return since


def job_states(job: Job, now: datetime, purge_days: int) -> set[str]:
    """Every trouble that holds for the job now (rate_limited: with the hold's start in
    `rate_limited_since`, checked against each rule's N by `state_for`)."""
    states: set[str] = set()
    if job.status == Status.FAILED:
        states.add("failed")
    elif job.error_count > 0:
        states.add("erroring")
    if job.status in SETTLED:
        due = purge_at(job, purge_days)
        if due is not None and due - now <= PURGE_SOON:
            states.add("purge_soon")
    return states


def state_for(rule: AlertRule, troubles: set[str], limited_for: timedelta | None) -> str:
    """The state this rule cares about, from what holds for the job."""
    held = set(troubles)
    if limited_for is not None and limited_for >= timedelta(minutes=rule.rate_limit_minutes):
        held.add("rate_limited")
    for state in PRIORITY:
        if state in held and state in rule.conditions:
            return state
    return OK


def _candidates(now: datetime, purge_days: int) -> list[Job]:
    """The jobs that may be in trouble, plus those a rule last reported in trouble: every
    other job is ok and was last notified as ok (or never), so it needs no look."""
    purge_from = now - timedelta(days=purge_days) + PURGE_SOON
    troubled = select(AlertState.job_id).where(AlertState.state != OK)
    return list(db.session.scalars(select(Job).where(or_(
        Job.status == Status.FAILED,
        Job.error_count > 0,
        Job.status == Status.SLEEPING,
        and_(Job.status.in_([str(s) for s in SETTLED]), Job.keep.is_(False),
             Job.terminal_at <= purge_from),
        Job.id.in_(troubled),
    )).order_by(Job.id)))


def _last_sleep_events(jobs: list[Job]) -> set[int]:
    """Ids of the sleeping jobs whose latest event is a Sleeping one (not a quiet window),
    in one query: only these can be on a rate-limit hold."""
    ids = [job.id for job in jobs if job.status == Status.SLEEPING and job.error_count == 0]
    found: set[int] = set()
    for start in range(0, len(ids), 500):
        chunk = ids[start:start + 500]
        latest = (select(func.max(JobEvent.id)).where(JobEvent.job_id.in_(chunk))
                  .group_by(JobEvent.job_id))
        found |= set(db.session.scalars(
            select(JobEvent.job_id).where(JobEvent.id.in_(latest), JobEvent.kind == "sleeping",
                                          JobEvent.code != "quiet")))
    return found


def evaluate(now: datetime | None = None) -> int:
    """One evaluation over every enabled rule; returns how many alerts it queued."""
    now = now or utcnow()
    purge_days = current_app.config["PORTAL_PURGE_DAYS"]
    rules = db.session.scalars(select(AlertRule).where(AlertRule.enabled.is_(True))
                               .order_by(AlertRule.id)).all()
    if not rules:
        return 0
    jobs = _candidates(now, purge_days)
    # Purged jobs: their states go (nothing to recover from).
    existing = {job.id for job in jobs}
    db.session.execute(delete(AlertState).where(
        AlertState.state != OK, AlertState.job_id.not_in(select(Job.id))))
    notified = {(s.rule_id, s.job_id): s for s in db.session.scalars(
        select(AlertState).where(AlertState.job_id.in_(existing)))} if existing else {}
    may_be_limited = _last_sleep_events(jobs)
    made: list[AlertSent] = []
    for job in jobs:
        if job.status == Status.RUNNING and job.error_count == 0:
            continue  # under way: how it ends is not known yet, so nothing changes now
        troubles = job_states(job, now, purge_days)
        limited_for = None
        if job.id in may_be_limited:
            since = _rate_limited_since(job)
            limited_for = now - since if since else None
        for rule in rules:
            if not covers(rule, job):
                continue
            row = notified.get((rule.id, job.id))
            before = row.state if row else OK
            after = state_for(rule, troubles, limited_for)
            if after == before:
                continue
            if not _claim_change(rule, job, row, before, after, now):
                continue  # another pass recorded this change first
            if after != OK or "recovered" in rule.conditions:
                made.append(_alert(rule, job, after, before, now, limited_for))
    db.session.commit()
    for sent in made:
        _enqueue(sent)
    return len(made)


def _claim_change(rule: AlertRule, job: Job, row: AlertState | None, before: str, after: str,
                  now: datetime) -> bool:
    """Record the new state with a compare-and-set: only one pass wins a change."""
    if row is None:
        try:
            with db.session.begin_nested():
                db.session.add(AlertState(rule_id=rule.id, job_id=job.id, state=after,
                                          changed_at=now))
        except IntegrityError:
            return False
        return True
    won = db.session.execute(
        update(AlertState).where(AlertState.id == row.id, AlertState.state == before)
        .values(state=after, changed_at=now).execution_options(synchronize_session=False))
    return won.rowcount == 1


# --- messages ----------------------------------------------------------------------------

def job_link(job_id: int) -> str:
    return f"{current_app.config['PORTAL_BASE_URL'].rstrip('/')}/jobs/{job_id}"


def last_error(job_id: int) -> str:
    """The message of the job's latest Error event (what went wrong, not "Failed: ...")."""
    event = db.session.scalars(
        select(JobEvent).where(JobEvent.job_id == job_id, JobEvent.kind == "error")
        .order_by(JobEvent.id.desc()).limit(1)).first()
    return event.message if event is not None else ""


def _minutes(span: timedelta | None) -> str:
    minutes = int(span.total_seconds() // 60) if span else 0
    return f"{minutes} minute{'s' if minutes != 1 else ''}"


def words(job: Job, state: str, before: str, now: datetime,
          limited_for: timedelta | None = None) -> tuple[str, str]:
    """The subject and the one-line "what changed" of a notification, in plain words."""
    name = f"“{job.name}”"
    if state == OK:
        was = {"failed": "failed", "erroring": "having errors",
               "rate_limited": "held back by a rate limit",
               "purge_soon": "about to be deleted"}.get(before, "in trouble")
        return (f"Back to normal: {job.name}",
                f"The job {name} was {was} and is working normally again.")
    if state == "failed":
        return (f"Job failed: {job.name}",
                f"The job {name} has failed and stopped. It stays stopped until someone "
                "fixes the cause and resumes it.")
    if state == "erroring":
        return (f"Job has errors: {job.name}",
                f"The job {name} ran into an error ({job.error_count} in a row so far). It "
                "keeps retrying by itself; it fails if the errors go on.")
    if state == "rate_limited":
        return (f"Job held back by a rate limit: {job.name}",
                f"The provider has asked the job {name} to slow down, and it has been "
                f"waiting for {_minutes(limited_for)}. It carries on by itself when the "
                "provider allows.")
    due = purge_at(job, current_app.config["PORTAL_PURGE_DAYS"])
    return (f"Job about to be deleted: {job.name}",
            f"The job {name} ({job.status}) will be deleted with its logs on "
            f"{due:%Y-%m-%d %H:%M} UTC by the regular clean-up. Switch on Keep on its "
            "summary to keep it.")


def compose(subject: str, change: str, error: str, link: str) -> str:
    lines = [change, ""]
    if error:
        lines += [f"Last error: {error}", ""]
    lines += [f"Job summary: {link}"]
    return "\n".join(lines)


def _alert(rule: AlertRule, job: Job, state: str, before: str, now: datetime,
           limited_for: timedelta | None) -> AlertSent:
    subject, change = words(job, state, before, now, limited_for)
    link = job_link(job.id)
    sent = AlertSent(
        rule_id=rule.id, rule_name=rule.name, job_id=job.id, job_name=job.name,
        condition="recovered" if state == OK else state, recovery=state == OK,
        channel=rule.channel, target_shown=describe_target(rule)[:300], subject=subject[:300],
        body=compose(subject, change, last_error(job.id), link), link=link, status="pending",
        error="", attempts=0, sent_at=now, queued_at=now)
    db.session.add(sent)
    return sent


def send_test(rule: AlertRule, *, by: User) -> AlertSent:
    """A test notification through the rule's channel, queued like a real one."""
    now = utcnow()
    link = current_app.config["PORTAL_BASE_URL"].rstrip("/") + "/alerts"
    sent = AlertSent(
        rule_id=rule.id, rule_name=rule.name, job_id=None, job_name="", condition="test",
        recovery=False, channel=rule.channel, target_shown=describe_target(rule)[:300],
        subject=f"Test alert: {rule.name}",
        body=compose("", f"This is a test of the alert rule “{rule.name}”, sent by "
                     f"{by.email}. Real alerts look like this, with the job's last error "
                     "and a link to its summary.", "", link).replace("Job summary:", "Alerts:"),
        link=link, status="pending", error="", attempts=0, sent_at=now, queued_at=now)
    db.session.add(sent)
    db.session.commit()
    _enqueue(sent)
    return sent


# --- delivery ----------------------------------------------------------------------------

def _rq_id(sent: AlertSent) -> str:
    return f"portal-alert-{sent.id}-{sent.attempts}"


def _enqueue(sent: AlertSent) -> None:
    """Queue the delivery of a committed row; the id makes a second enqueue a no-op."""
    Queue("default", connection=redis_connection()).enqueue(
        DELIVER_FUNCTION, args=(sent.id, sent.attempts), job_id=_rq_id(sent),
        result_ttl=600, failure_ttl=86400, job_timeout=120, description=f"deliver alert {sent.id}")


def retry_due(now: datetime | None = None) -> int:
    """Queue again the deliveries due for a retry, those whose queue entry Redis lost
    (pending for over a minute) and those whose worker died while sending."""
    now = now or utcnow()
    waiting = and_(AlertSent.status == "pending", or_(
        AlertSent.next_attempt_at <= now,
        and_(AlertSent.next_attempt_at.is_(None),
             AlertSent.queued_at < now - timedelta(minutes=1))))
    stuck = and_(AlertSent.status == "sending", AlertSent.queued_at < now - STUCK_AFTER)
    rows = db.session.scalars(select(AlertSent).where(or_(waiting, stuck))).all()
    for sent in rows:
        sent.status = "pending"
        sent.queued_at = now
        sent.next_attempt_at = None
    db.session.commit()
    for sent in rows:
        _enqueue(sent)
    return len(rows)


def deliver(sent_id: int, attempt: int = 0) -> str:
    """Send one alert (the RQ task workers.runner.deliver_alert). A compare-and-set on its
    row (pending, at this attempt) makes a redelivered or doubly queued task send nothing."""
    now = utcnow()
    won = db.session.execute(
        update(AlertSent).where(AlertSent.id == sent_id, AlertSent.status == "pending",
                                AlertSent.attempts == attempt)
        .values(status="sending", attempts=attempt + 1, queued_at=now)
        .execution_options(synchronize_session=False))
    db.session.commit()
    if won.rowcount != 1:
        return "already handled"
    sent = db.session.get(AlertSent, sent_id)
    rule = db.session.get(AlertRule, sent.rule_id) if sent.rule_id else None
    secrets: list[str] = []
    try:
        if rule is None:
            raise ProviderError("the alert rule was deleted before this could be sent",
                                code="no_rule")
        _send(rule, sent, secrets)
    except Exception as exc:  # every failure is recorded on the row, never raised
        message = vault.redact(str(exc) or type(exc).__name__, secrets)[:1000]
        sent.error = message
        if sent.attempts < RETRIES and rule is not None:
            sent.status = "pending"
            sent.next_attempt_at = now + timedelta(minutes=2 ** sent.attempts)
        else:
            sent.status = "failed"
        log.warning("alert %s: delivery attempt %s failed: %s", sent.id, sent.attempts,
                    message)
        db.session.commit()
        return sent.status
    sent.status = "sent"
    sent.error = ""
    sent.delivered_at = utcnow()
    db.session.commit()
    return "sent"


def _send(rule: AlertRule, sent: AlertSent, secrets: list[str]) -> None:
    target = rule.target or {}
    if rule.channel == "email":
        send_email(target.get("emails", []), sent.subject, sent.body, secrets)
    elif rule.channel == "slack":
        authorization = db.session.get(Authorization, target.get("authorization_id"))
        if authorization is None:
            raise ProviderError("the Slack authorization was deleted from the Vault")
        credentials = vault.credentials_for(authorization, actor=f"alert rule {rule.id}",
                                            purpose=f"alert {sent.id}")
        secrets += vault.secret_values(vault.method_of(authorization)[1], credentials)
        slack.send_message(authorization.method, credentials, target.get("channel", ""),
                           f"*{sent.subject}*\n{sent.body}")
    else:
        http_call("POST", str(target.get("url", "")), service="the alert webhook",
                  json=webhook_payload(sent))


def webhook_payload(sent: AlertSent) -> dict[str, Any]:
    return {"type": "job_alert", "alert_id": sent.id, "rule": sent.rule_name,
            "job": {"id": sent.job_id, "name": sent.job_name, "url": sent.link},
            "condition": sent.condition, "recovery": sent.recovery, "subject": sent.subject,
            "message": sent.body, "at": sent.sent_at.isoformat()}


def send_email(recipients: Iterable[str], subject: str, body: str, secrets: list[str]) -> None:
    """Send a plain-text email through the configured SMTP server."""
    config = current_app.config
    host = config["PORTAL_SMTP_HOST"]
    if not host:
        raise ProviderError("no mail server is set up: set PORTAL_SMTP_HOST (and the other "
                            "PORTAL_SMTP_* settings)", code="no_smtp")
    password = config["PORTAL_SMTP_PASSWORD"]
    if password:
        secrets.append(password)
    message = EmailMessage()
    message["From"] = config["PORTAL_SMTP_FROM"]
    message["To"] = ", ".join(recipients)
    message["Subject"] = subject
    message.set_content(body)
    try:
        with smtplib.SMTP(host, config["PORTAL_SMTP_PORT"], timeout=20) as smtp:
            if config["PORTAL_SMTP_STARTTLS"]:
                smtp.starttls()
            if config["PORTAL_SMTP_USERNAME"]:
                smtp.login(config["PORTAL_SMTP_USERNAME"], password)
            smtp.send_message(message)
    except (OSError, smtplib.SMTPException) as exc:
        # Our words, with the server's reply code only: its text could echo what it read.
        code = getattr(exc, "smtp_code", None)
        raise ProviderError(f"the mail server at {host} did not take the email "
                            f"({type(exc).__name__}{f' {code}' if code else ''})",
                            code="smtp") from None


# --- the list of alerts sent ---------------------------------------------------------------

PAGE_SIZE = 50
STATUSES = ("pending", "sending", "sent", "failed")


def sent_page(*, job_id: int | None = None, rule_id: int | None = None, status: str = "",
              before: int | None = None, limit: int = PAGE_SIZE) -> tuple[list[AlertSent],
                                                                          int | None]:
    """Alerts sent, newest first, keyset-paged by id; returns the page and the next cursor."""
    query = select(AlertSent).order_by(AlertSent.id.desc())
    if job_id is not None:
        query = query.where(AlertSent.job_id == job_id)
    if rule_id is not None:
        query = query.where(AlertSent.rule_id == rule_id)
    if status in STATUSES:
        query = query.where(AlertSent.status == status)
    if before is not None:
        query = query.where(AlertSent.id < before)
    rows = list(db.session.scalars(query.limit(limit + 1)))
    more = len(rows) > limit
    rows = rows[:limit]
    return rows, (rows[-1].id if more else None)
