"""The job state machine: every allowed and every forbidden move, and the error rules."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest

from portal import lifecycle
from portal.extensions import db
from portal.lifecycle import TRANSITIONS, Event, IllegalTransition, RetryPolicy, Status, Trigger
from portal.models import Job, JobEvent

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)

EXPECTED = {
    # trigger: (allowed sources, target, event)
    Trigger.UNIT_MORE: ({"running"}, "running", "synced"),
    Trigger.UNIT_SCHEDULED: ({"running"}, "sleeping", "synced"),
    Trigger.UNIT_IDLE: ({"running"}, "sleeping", None),
    Trigger.UNIT_DONE: ({"running"}, "completed", "completed"),
    Trigger.ERROR_RETRY: ({"running"}, "sleeping", "error"),
    Trigger.ERROR_EXHAUSTED: ({"running"}, "failed", "failed"),
    Trigger.ERROR_FATAL: ({"running"}, "failed", "failed"),
    Trigger.RATE_LIMITED: ({"running"}, "sleeping", "sleeping"),
    Trigger.QUIET: ({"running"}, "sleeping", "sleeping"),
    Trigger.WAKE: ({"sleeping"}, "running", None),
    Trigger.RUN_NOW: ({"sleeping"}, "running", "run_now"),
    Trigger.PAUSE: ({"running", "sleeping"}, "paused", "paused"),
    Trigger.RESUME: ({"paused", "failed"}, "running", "resumed"),
    Trigger.RUN_AGAIN: ({"completed"}, "running", "resumed"),
    Trigger.SCHEDULE_BROKEN: ({"running"}, "failed", "failed"),
    Trigger.WORKER_LOST: ({"running"}, "running", "error"),
    Trigger.WORKER_LOST_TOO_OFTEN: ({"running"}, "failed", "failed"),
}
CASES = [(trigger, status) for trigger in Trigger for status in Status]


@pytest.fixture
def make_job(app, make_user):
    owner = make_user("operator")

    def make(status: str) -> Job:
        job = Job(name="j", provider="files", job_type="import_file", kind="import",
                  status=status, created_by_id=owner.id)
        db.session.add(job)
        db.session.flush()
        return job

    return make


def events_of(job: Job) -> list[JobEvent]:
    return list(db.session.scalars(db.select(JobEvent).where(JobEvent.job_id == job.id)
                                   .order_by(JobEvent.id)))


def test_table_is_the_documented_one():
    assert {t: ({str(s) for s in m.sources}, str(m.target), m.event and str(m.event))
            for t, m in TRANSITIONS.items()} == EXPECTED


@pytest.mark.parametrize(("trigger", "status"), CASES, ids=[f"{t.name}-{s}" for t, s in CASES])
def test_every_move(make_job, trigger, status):
    job = make_job(status)
    sources, target, event = EXPECTED[trigger]
    if status in sources:
        written = lifecycle.transition(job, trigger, now=NOW, message="why")
        assert job.status == target
        assert job.status_changed_at == NOW
        assert job.terminal_at == (NOW if target in ("failed", "paused", "completed") else None)
        if event is None:
            assert written is None and events_of(job) == []
        else:
            assert [e.kind for e in events_of(job)] == [event]
            assert written.message == "why"
    else:
        with pytest.raises(IllegalTransition) as raised:
            lifecycle.transition(job, trigger, now=NOW)
        assert job.status == status, "a refused move changes nothing"
        assert raised.value.trigger is trigger
        assert events_of(job) == []


def test_event_context_carries_counts_and_who(make_job, make_user):
    job = make_job("running")
    admin = make_user("admin")
    lifecycle.transition(job, Trigger.UNIT_MORE, now=NOW, counts={"added": 3, "omitted": 1})
    lifecycle.pause(job, by=admin, now=NOW)
    synced, paused = events_of(job)
    assert synced.context == {"added": 3, "removed": 0, "omitted": 1}
    assert paused.context["user_email"] == admin.email
    assert paused.message == f"Paused by {admin.email}"


def test_backoff_doubles_up_to_the_cap_with_jitter():
    policy = RetryPolicy(backoff_base_seconds=30, backoff_cap_seconds=3600)
    rng = random.Random(7)
    for count, full in [(1, 30), (2, 60), (3, 120), (4, 240), (8, 3600), (10**6, 3600)]:
        delays = {lifecycle.backoff(policy, count, rng).total_seconds() for _ in range(50)}
        assert all(full / 2 <= d <= full for d in delays), (count, delays)
        assert len(delays) > 1, "jitter spreads retries"


class _Ends(random.Random):
    """A random source that answers the low end of a range, then the high end."""

    def __init__(self) -> None:
        super().__init__(0)
        self.asked: list[tuple[float, float]] = []

    def uniform(self, a: float, b: float) -> float:
        self.asked.append((a, b))
        return a if len(self.asked) % 2 else b


def test_backoff_jitter_spans_exactly_the_second_half():
    policy = RetryPolicy(backoff_base_seconds=30, backoff_cap_seconds=3600)
    for count, full in [(1, 30), (2, 60), (5, 480), (8, 3600), (40, 3600)]:
        ends = _Ends()
        low, high = (lifecycle.backoff(policy, count, ends).total_seconds() for _ in range(2))
        assert (low, high) == (full / 2, full), count
        assert ends.asked == [(0, full / 2)] * 2


def test_retryable_error_sleeps_with_backoff_and_keeps_the_streak(make_job):
    job = make_job("running")
    lifecycle.unit_failed(job, now=NOW, message="boom", code="http_500", retryable=True)
    assert job.status == "sleeping"
    assert NOW + timedelta(seconds=15) <= job.next_run_at <= NOW + timedelta(seconds=30)
    assert job.error_count == 1 and job.error_streak_started_at == NOW
    (event,) = events_of(job)
    assert (event.kind, event.level, event.code) == ("error", "error", "http_500")
    assert event.message.startswith("boom")


@pytest.mark.parametrize("window_hours", [10, 0.5])
def test_errors_spanning_the_failure_window_fail_the_job(make_job, window_hours):
    job = make_job("running")
    job.retry_policy = {"failure_window_hours": window_hours}
    window = timedelta(hours=window_hours)
    moment = NOW
    while job.status != "failed":
        lifecycle.unit_failed(job, now=moment, message="boom", code="x", retryable=True)
        if job.status == "sleeping":
            assert moment - NOW < window, "still inside the window: it sleeps and retries"
            moment = job.next_run_at
            lifecycle.wake(job, now=moment)
    assert window <= moment - NOW < window + timedelta(hours=1)
    kinds = [e.kind for e in events_of(job)]
    assert kinds[-2:] == ["error", "failed"]
    assert kinds.count("error") == job.error_count
    assert f"over the {window_hours:g} h failure window" in events_of(job)[-1].message


def test_success_resets_the_streak(make_job):
    job = make_job("running")
    lifecycle.unit_failed(job, now=NOW, message="boom", code="x", retryable=True)
    lifecycle.wake(job, now=NOW)
    lifecycle.unit_succeeded(job, now=NOW, done=False, more_now=True, next_run_at=None,
                             message="ok", counts={"added": 1})
    assert job.error_count == 0 and job.error_streak_started_at is None


def test_fatal_error_fails_at_once_with_error_then_failed(make_job):
    job = make_job("running")
    lifecycle.unit_failed(job, now=NOW, message="file.csv, line 3: bad", code="bad_input",
                          retryable=False)
    assert job.status == "failed" and job.terminal_at == NOW
    error, failed = events_of(job)
    assert (error.kind, error.message) == ("error", "file.csv, line 3: bad")
    assert failed.kind == "failed" and "retrying cannot fix this error" in failed.message


def test_unit_succeeded_picks_the_move(make_job):
    done, more, later = make_job("running"), make_job("running"), make_job("running")
    lifecycle.unit_succeeded(done, now=NOW, done=True, more_now=False, next_run_at=None,
                             message="", counts={})
    lifecycle.unit_succeeded(more, now=NOW, done=False, more_now=True, next_run_at=None,
                             message="", counts={})
    lifecycle.unit_succeeded(later, now=NOW, done=False, more_now=False,
                             next_run_at=NOW + timedelta(hours=1), message="", counts={})
    assert (done.status, more.status, later.status) == ("completed", "running", "sleeping")
    assert later.next_run_at == NOW + timedelta(hours=1)
    assert [e.kind for e in events_of(done)] == [Event.COMPLETED]


def test_a_job_that_runs_once_completes_when_nothing_more_is_left_now(make_job):
    # A recurring job type (an export) on the "once" cadence: no next run to sleep until,
    # so having nothing more to do now completes it instead of running it again at once.
    job = make_job("running")
    lifecycle.unit_succeeded(job, now=NOW, done=False, more_now=False, next_run_at=None,
                             message="Nothing new", counts={})
    assert job.status == "completed" and job.terminal_at == NOW


def test_resume_resets_the_streak_and_names_who(make_job, make_user):
    job = make_job("failed")
    job.error_count, job.error_streak_started_at = 7, NOW
    user = make_user("admin")
    lifecycle.resume(job, by=user, now=NOW)
    assert job.status == "running" and job.error_count == 0
    assert job.error_streak_started_at is None and job.terminal_at is None
    assert events_of(job)[-1].context["user_email"] == user.email


def test_a_lost_worker_queues_the_job_again_at_once_and_the_limit_fails_it(make_job):
    job = make_job("running")
    for loss in (1, 2):
        moment = NOW + timedelta(seconds=loss)
        again = lifecycle.worker_lost(job, now=moment, message="Worker lost: w1", limit=3)
        assert again is True
        assert job.status == "running" and job.next_run_at is None, "no backoff"
        assert job.error_count == loss and job.error_streak_started_at == NOW + timedelta(seconds=1)
        event = events_of(job)[-1]
        assert (event.kind, event.code) == ("error", "worker_lost")
        assert f"loss {loss} of 3 in a row" in event.message
    again = lifecycle.worker_lost(job, now=NOW + timedelta(seconds=3), message="Worker lost: w1",
                                  limit=3)
    assert again is False
    assert job.status == "failed" and job.terminal_at == NOW + timedelta(seconds=3)
    error, failed = events_of(job)[-2:]
    assert (error.kind, error.code) == ("error", "worker_lost")
    assert failed.kind == "failed" and "lost 3 times in a row" in failed.message


def test_a_success_between_losses_starts_the_count_again(make_job):
    job = make_job("running")
    lifecycle.worker_lost(job, now=NOW, message="Worker lost", limit=2)
    lifecycle.unit_succeeded(job, now=NOW + timedelta(seconds=1), done=False, more_now=True,
                             next_run_at=None, message="ok", counts={"added": 1})
    assert lifecycle.worker_lost(job, now=NOW + timedelta(seconds=2), message="Worker lost",
                                 limit=2) is True
    assert job.status == "running"
    assert lifecycle.worker_lost(job, now=NOW + timedelta(seconds=3), message="Worker lost",
                                 limit=2) is False
    assert job.status == "failed"


def test_a_database_outage_is_an_error_but_no_move(make_job):
    job = make_job("running")
    lifecycle.database_unavailable(job, now=NOW, message="Database unavailable: x")
    assert job.status == "running" and job.error_count == 0
    (event,) = events_of(job)
    assert (event.kind, event.code, event.message) == (
        "error", "database_unavailable", "Database unavailable: x")
