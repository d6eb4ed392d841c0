"""The job engine on a real Redis and a real RQ worker, with the clock under control:
retries and the failure window, rate limits shared per authorization, cadence, quiet
windows, pause / resume / run now, purge, and what the summary says while jobs wait."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from redis import Redis
from rq import Queue
from rq.job import Job as RQJob
from sqlalchemy import func, select

from portal import vault
from portal.extensions import db
from portal.jobs import create_job
from portal.models import Authorization, Job, JobEvent, Message
from portal.queues import dispatch, pending_ids, rq_job_id, take_waiting
from providers import CATALOG, get_job_type, get_provider
from tests.test_job_path import fresh, kinds
from workers.dispatcher import dispatch_once

START = datetime(2026, 6, 1, 8, 0, tzinfo=UTC)
HX = {"HX-Request": "true"}


@pytest.fixture
def clock():
    with time_machine.travel(START, tick=True) as traveller:
        yield traveller


@pytest.fixture
def make_job(app, make_user):
    owner = make_user("operator", "owner@example.com")

    def make(job_type: str = "script", authorization=None, schedule=None, retry=None,
             **config) -> Job:
        provider, kind = get_job_type("faults", job_type)
        return create_job(provider=provider, job_type=kind, authorization=authorization,
                          name=f"faults {job_type}", description="", config=config,
                          created_by=owner, schedule=schedule, retry_policy=retry)

    return make


def advance(clock, job: Job, work) -> Job:
    """Move the clock to the job's next run, let the dispatcher wake it, run the worker."""
    job = fresh(job)
    clock.move_to(job.next_run_at + timedelta(seconds=1))
    dispatch_once()
    work()
    return fresh(job)


def runs_of(job: Job) -> list:
    from portal.models import JobRun

    return list(db.session.scalars(select(JobRun).where(JobRun.job_id == job.id)
                                   .order_by(JobRun.id)))


def shared_key(make_user, key: str = "sk-shared-0123456789") -> Authorization:
    provider = get_provider("faults")
    shared = vault.create(provider, provider.auth_method("api_key"), label="Shared key",
                          description="", credentials={"api_key": key},
                          by=make_user("admin", "keys@example.com"))
    db.session.commit()
    return shared


def last_event(job: Job) -> JobEvent:
    return db.session.scalars(select(JobEvent).where(JobEvent.job_id == job.id)
                              .order_by(JobEvent.id.desc())).first()


def test_the_fault_provider_is_not_a_tile(client, auth):
    assert "faults" not in CATALOG
    auth.login()
    assert "Fault injection" not in client.get("/jobs/new").get_data(as_text=True)


def test_ten_hours_of_errors_fail_the_job(clock, make_job, work):
    job = make_job(script=["error"] * 1000)
    work()
    job = fresh(job)
    assert job.status == "sleeping" and job.error_count == 1
    assert (last_event(job).kind, last_event(job).code) == ("error", "injected")
    while job.status == "sleeping":
        job = advance(clock, job, work)
    assert job.status == "failed"
    spent = job.terminal_at - START
    assert timedelta(hours=10) <= spent < timedelta(hours=11)
    assert kinds(job)[-2:] == ["error", "failed"]
    error, failed = db.session.scalars(select(JobEvent).where(JobEvent.job_id == job.id)
                                       .order_by(JobEvent.id.desc()).limit(2)).all()[::-1]
    assert (error.code, error.message) == ("injected", "injected error in unit 0")
    assert failed.code == "injected"
    assert failed.message.startswith(f"Failed: {job.error_count} errors in a row since "
                                     f"{START:%Y-%m-%d %H:%M} UTC, over the 10 h failure window")
    runs = runs_of(job)
    assert [r.outcome for r in runs] == ["error"] * (len(runs) - 1) + ["failed"]
    assert runs[-1].error_code == "injected"
    assert "over the 10 h failure window" in last_event(job).message
    # Failed jobs are not run again until resumed.
    clock.shift(timedelta(days=1))
    assert dispatch_once() == 0 and fresh(job).status == "failed"


def test_a_success_resets_the_streak(clock, make_job, work):
    job = make_job(script=["error:2", "ok", "error"], units=5,
                   retry={"backoff_base_seconds": 10})
    work()
    job = advance(clock, job, work)
    assert fresh(job).error_count == 2
    job = advance(clock, job, work)  # third attempt of unit 0 succeeds; unit 1 too; unit 2 fails
    assert job.error_count == 1, "the streak started afresh after the successes"
    assert job.error_streak_started_at > START + timedelta(seconds=10)
    assert kinds(job).count("synced") == 2


def test_the_retry_policy_is_per_job_and_shown(clock, make_job, work, client, auth):
    auth.login("viewer")
    job = make_job(script=["error"] * 10, retry={"backoff_base_seconds": 600,
                                                 "backoff_cap_seconds": 900,
                                                 "failure_window_hours": 1})
    work()
    job = fresh(job)
    assert START + timedelta(seconds=300) <= job.next_run_at <= START + timedelta(
        seconds=601)
    page = client.get(f"/jobs/{job.id}").get_data(as_text=True)
    assert "Backoff from 600 s doubling up to 900 s; fails after 1 h" in page
    assert "1 error in a row since" in page
    while job.status == "sleeping":
        job = advance(clock, job, work)
    assert job.status == "failed"
    # Failed once the window of 1 h had passed, not before and not much after.
    assert timedelta(hours=1) <= job.terminal_at - START < timedelta(hours=2)


def test_rate_limit_sleeps_without_an_error_and_holds_the_authorization(clock, make_job,
                                                                         work, make_user):
    shared = shared_key(make_user)
    limited = make_job(authorization=shared,
                       rate_limited_until=(START + timedelta(seconds=120)).isoformat())
    work()
    limited = fresh(limited)
    assert limited.status == "sleeping" and limited.error_count == 0
    event = last_event(limited)
    assert (event.kind, event.level, event.code) == ("sleeping", "warning", "rate_limited")
    until = START + timedelta(seconds=120)
    # Both ways: the job sleeps for the provider's Retry-After, not less and not more.
    assert abs(limited.next_run_at - until) < timedelta(seconds=5), limited.next_run_at
    authorization = db.session.get(Authorization, shared.id, populate_existing=True)
    assert abs(authorization.rate_limited_until - until) < timedelta(seconds=5)
    assert event.message.startswith(
        "Provider rate limit: injected 429; sleeping until 2026-06-01 08:0"), event.message
    assert abs(limited.last_run_at - START) < timedelta(seconds=5), "it did run"
    assert limited.lease_owner is None and limited.lease_until is None, "lease let go"
    [run] = runs_of(limited)
    assert (run.units, run.outcome, run.error_code) == (1, "held_back", ""), "a unit ran into it"
    # Another job on the same authorization holds back too, with its own Sleeping event.
    other = make_job(authorization=shared, script=["ok"])
    work()
    other = fresh(other)
    assert other.status == "sleeping" and other.error_count == 0
    assert last_event(other).message.startswith(
        "Holding back: authorization “Shared key” is rate limited; sleeping until "
        "2026-06-01 08:0")
    assert abs(other.next_run_at - until) < timedelta(seconds=5)
    assert other.lease_owner is None and other.last_run_at is None, "it never ran a unit"
    assert [run.units for run in runs_of(other)] == [], "held back before its first run"
    assert db.session.scalar(select(func.count()).select_from(Message)) == 0
    # When the limit passes, both run.
    clock.move_to(until + timedelta(seconds=5))
    dispatch_once()
    work()
    assert fresh(other).status == "completed"
    assert fresh(limited).status == "completed", "unit 0 is retried and succeeds"


def test_interval_cadence_sleeps_until_the_next_run(clock, make_job, work, client, auth):
    auth.login("viewer")
    job = make_job(units=0, more_now=False, schedule={"kind": "interval", "every_minutes": 30})
    work()
    job = fresh(job)
    assert job.status == "sleeping"
    assert abs(job.next_run_at - (START + timedelta(minutes=30))) < timedelta(seconds=5)
    page = client.get(f"/jobs/{job.id}").get_data(as_text=True)
    assert "Every 30 minutes" in page and f"{job.next_run_at:%Y-%m-%d %H:%M}" in page
    clock.move_to(START + timedelta(minutes=10))
    assert dispatch_once() == 0 and fresh(job).status == "sleeping", "not before its time"
    job = advance(clock, job, work)
    assert job.status == "sleeping" and job.cursor["unit"] == 2


def test_quiet_window_holds_runs_and_run_now_overrides_it(clock, make_job, work, client, auth):
    user = auth.login("operator")
    job = make_job(units=0, more_now=False, schedule={
        "kind": "interval", "every_minutes": 5, "quiet_start": "07:00", "quiet_end": "12:00"})
    work()
    job = fresh(job)
    assert job.status == "sleeping" and job.next_run_at == START.replace(hour=12)
    assert last_event(job).kind == "sleeping" and "Quiet window" in last_event(job).message
    assert job.started_at is None and not kinds(job).count("started"), "held back, not started"
    response = client.post(f"/jobs/{job.id}/run-now", headers={**HX, "X-CSRFToken": auth.csrf()})
    assert "The job runs now." in response.get_data(as_text=True)
    work()
    job = fresh(job)
    assert job.cursor["unit"] == 1, "run now ran it inside the quiet window"
    assert job.started_at is not None and kinds(job).count("started") == 1
    run_now = db.session.scalar(select(JobEvent).where(JobEvent.job_id == job.id,
                                                       JobEvent.kind == "run_now"))
    assert run_now.context["user_email"] == user.email


def test_pause_and_resume_from_the_summary(clock, make_job, work, client, auth):
    user = auth.login("operator")
    job = make_job(units=1)
    token = auth.csrf()
    paused = client.post(f"/jobs/{job.id}/pause", headers={**HX, "X-CSRFToken": token})
    body = paused.get_data(as_text=True)
    assert "Paused." in body and 'data-status="paused"' in body and 'data-action="resume"' in body
    again = client.post(f"/jobs/{job.id}/pause", headers={**HX, "X-CSRFToken": token})
    assert "Nothing changed: a paused job cannot be paused." in again.get_data(as_text=True)
    work()
    assert kinds(job) == ["created", "paused"], "the queued run finds it paused and skips it"
    clock.shift(timedelta(hours=2))
    assert dispatch_once() == 0, "a paused job is not woken"
    resumed = client.post(f"/jobs/{job.id}/resume", headers={**HX, "X-CSRFToken": token})
    assert 'hx-swap-oob="true"' in resumed.get_data(as_text=True), "log polling restarts"
    work()
    job = fresh(job)
    assert job.status == "completed" and job.error_count == 0
    who = db.session.scalars(select(JobEvent.context).where(
        JobEvent.job_id == job.id, JobEvent.kind.in_(["paused", "resumed"]))).all()
    assert [c["user_email"] for c in who] == [user.email, user.email]


def test_viewers_cannot_act(make_job, client, auth):
    auth.login("viewer")
    job = make_job()
    assert 'id="job-actions"' not in client.get(f"/jobs/{job.id}").get_data(as_text=True)
    assert client.post(f"/jobs/{job.id}/pause", headers={"X-CSRFToken": auth.csrf()}
                       ).status_code == 403
    assert fresh(job).status == "running"


def test_waiting_for_a_worker_is_said_plainly(make_job, client, auth):
    auth.login("viewer")
    job = make_job()
    page = client.get(f"/jobs/{job.id}/live", headers=HX).get_data(as_text=True)
    assert "Waiting for a worker: none is serving the “default” queue" in page


def test_purge_after_90_days_with_warning(clock, make_job, work, client, auth, app):
    auth.login("viewer")
    job = make_job()
    work()
    assert fresh(job).status == "completed"
    clock.move_to(START + timedelta(days=89))
    page = client.get(f"/jobs/{job.id}").get_data(as_text=True)
    assert "will be purged on" in page and "(1 day left)" in page
    runner = app.test_cli_runner()
    assert "Purged 0 job(s)" in runner.invoke(args=["jobs", "purge"]).output
    clock.move_to(START + timedelta(days=90, minutes=1))
    assert "Would purge 1 job(s)" in runner.invoke(args=["jobs", "purge", "--dry-run"]).output
    assert "Purged 1 job(s)" in runner.invoke(args=["jobs", "purge"]).output
    db.session.expire_all()
    assert db.session.get(Job, job.id) is None
    assert db.session.scalar(select(func.count()).select_from(JobEvent)) == 0
    assert client.get(f"/jobs/{job.id}").status_code == 404


def test_the_dispatcher_purges_once_a_day(clock, make_job, work, app):
    from portal.models import Draft
    from workers.dispatcher import purge_daily

    job = make_job()
    work()
    owner_id = fresh(job).created_by_id
    old = Draft(owner_id=owner_id, provider="files", job_type="import_file", config={},
                updated_at=START)
    recent = Draft(owner_id=owner_id, provider="files", job_type="import_file", config={},
                   updated_at=START + timedelta(days=60))
    db.session.add_all([old, recent])
    db.session.commit()
    draft_ids = (old.id, recent.id)
    clock.move_to(START + timedelta(days=91))
    now = datetime.now(UTC)
    assert purge_daily(now) == 1
    assert purge_daily(now) == 0, "once a day"
    db.session.expire_all()
    assert db.session.get(Job, fresh_id(job)) is None
    remaining = db.session.scalars(select(Draft.id).where(Draft.id.in_(draft_ids))).all()
    assert remaining == [draft_ids[1]], "drafts untouched for 90 days go too"


def fresh_id(job: Job) -> int:
    from sqlalchemy import inspect

    return inspect(job).identity[0]


def test_idle_runs_stay_out_of_the_log(clock, make_job, work):
    """A job that runs every minute and finds nothing to do writes no Synced row per run
    (its last run time still moves); a run that moves data, or that ends an error streak,
    is logged as before."""
    job = make_job(script=["error:1"], units=0, more_now=False, rows_per_unit=0,
                   schedule={"kind": "interval", "every_minutes": 1},
                   retry={"backoff_base_seconds": 10})
    work()
    assert kinds(job) == ["created", "started", "error"]
    job = advance(clock, job, work)  # the retry succeeds with nothing to do: a recovery
    assert kinds(job)[-1] == "synced" and job.status == "sleeping"
    logged = len(kinds(job))
    runs = []
    for _ in range(3):
        job = advance(clock, job, work)
        runs.append(job.last_run_at)
        assert job.status == "sleeping" and job.next_run_at > job.last_run_at
    assert len(kinds(job)) == logged, "idle runs wrote nothing to the log"
    assert runs == sorted(set(runs)), "each idle run still moved the job's last run time"
    assert job.cursor["unit"] == 4
    job.config = {**job.config, "rows_per_unit": 2}
    db.session.commit()
    job = advance(clock, job, work)
    assert kinds(job)[-1] == "synced" and last_event(job).context["added"] == 2


def test_a_provider_error_is_the_jobs_and_a_refused_key_the_authorizations(
        clock, make_job, work, make_user):
    from portal.models import AuditEntry

    shared = shared_key(make_user)
    failing = make_job(authorization=shared, script=["error"])
    work()
    failing = fresh(failing)
    assert failing.status == "sleeping" and failing.error_count == 1
    assert abs(failing.last_run_at - START) < timedelta(seconds=5), "the time it ran"
    assert failing.lease_owner is None
    [run] = runs_of(failing)
    assert (run.units, run.outcome, run.error_code) == (1, "error", "injected")
    authorization = db.session.get(Authorization, shared.id, populate_existing=True)
    assert authorization.health != "unhealthy", "a provider error says nothing of the key"
    # A refused key marks the authorization, in the audit under the job's name.
    refused = make_job(authorization=shared, script=["auth"], secret_note="n")
    work()
    refused = fresh(refused)
    authorization = db.session.get(Authorization, shared.id, populate_existing=True)
    assert authorization.health == "unhealthy"
    [entry] = db.session.scalars(select(AuditEntry).where(AuditEntry.action == "unhealthy"))
    assert (entry.actor, entry.object_id) == (f"job {refused.id}", shared.id)
    assert abs(refused.last_run_at - START) < timedelta(seconds=5)


def test_a_fatal_error_fails_at_once_saying_what_to_do(clock, make_job, work):
    job = make_job(script=["fatal"])
    work()
    job = fresh(job)
    assert (job.status, job.error_count) == ("failed", 1)
    error, failed = db.session.scalars(select(JobEvent).where(
        JobEvent.job_id == job.id, JobEvent.kind.in_(("error", "failed")))
        .order_by(JobEvent.id)).all()
    assert (error.kind, error.code, error.message) == (
        "error", "injected_fatal", "injected fatal error in unit 0")
    assert (failed.kind, failed.code, failed.message) == (
        "failed", "injected_fatal",
        "Failed: retrying cannot fix this error, so the job was stopped. Correct the input "
        "or the configuration, then run the job again.")
    assert abs(error.at - START) < timedelta(seconds=5)
    [run] = runs_of(job)
    assert (run.units, run.outcome, run.error_code) == (1, "failed", "injected_fatal")
    assert job.lease_owner is None and job.next_run_at is None


# One RQ job goes on with the portal jobs waiting next on its queue (queues.take_waiting,
# runner.run_job): a burst of short jobs costs one RQ job instead of one each.
def test_one_rq_job_runs_the_jobs_waiting_behind_it(make_job, work, redis_url):
    jobs = [make_job("noop") for _ in range(4)]
    queue = Queue("default", connection=Redis.from_url(redis_url))
    assert queue.count == 4, "each job was queued on its own"
    work()
    for job in jobs:
        job = fresh(job)
        assert job.status == "completed", (job.id, job.status)
        assert kinds(job) == ["created", "started", "completed"], job.id
    finished = queue.finished_job_registry.get_job_ids()
    assert finished == [rq_job_id(jobs[0].id, 1)], "the first RQ job ran them all"
    result = queue.fetch_job(finished[0]).return_value()
    assert result == "completed (and 3 more from the queue)", result
    # The jobs it took left nothing behind that says they still wait.
    assert queue.count == 0
    assert pending_ids([fresh(job) for job in jobs]) == set()
    for job in jobs[1:]:
        assert queue.fetch_job(rq_job_id(job.id, 1)) is None


def test_taking_keeps_queue_order_and_priority(app, make_job, redis_url):
    connection = Redis.from_url(redis_url)
    default = Queue("default", connection=connection)
    first, second = make_job("noop"), make_job("noop")
    with app.app_context():
        assert take_waiting("default") == [(first.id, False)], "the head of the queue first"
        assert default.get_job_ids() == [rq_job_id(second.id, 1)]
        # Something else at the head of the queue (not a portal job) stays where it is.
        other = default.enqueue("portal.queues.redis_connection", job_id="someone-else")
        connection.lmove(default.key, default.key, "RIGHT", "LEFT")  # to the head
        assert default.get_job_ids()[0] == other.id
        assert take_waiting("default") == []
        assert default.get_job_ids() == [other.id, rq_job_id(second.id, 1)]
        other.delete()
        # Work on a queue ahead (real time before default) is never passed over.
        realtime = Queue("realtime", connection=connection)
        ahead = realtime.enqueue("portal.queues.redis_connection", job_id="real-time-task")
        assert take_waiting("default") == []
        assert take_waiting("realtime") == [], "its head is not a portal job"
        ahead.delete()
        assert take_waiting("default", 5) == [(second.id, False)]
        assert take_waiting("default") == [], "the queue is empty"
        assert not connection.exists(RQJob.key_for(rq_job_id(first.id, 1))), "deleted"


def test_a_run_now_keeps_its_force_when_taken(app, make_job, redis_url):
    job = make_job("noop")
    Queue("default", connection=Redis.from_url(redis_url)).empty()
    with app.app_context():
        assert dispatch([fresh(job)], force=True) == 1
        assert take_waiting("default") == [(job.id, True)]


def taken_batch(count: int) -> list:
    """Take up to `count` jobs off the default queue and claim them as one batch."""
    from workers.runner import Runner, worker_identity

    owner = worker_identity()
    runners = [Runner(job_id, force=force, owner=owner)
               for job_id, force in take_waiting("default", count)]
    claims = Runner.claim_all(runners)
    return [(runner, job) for runner, (job, _) in zip(runners, claims, strict=True)
            if job is not None]


def test_a_batch_out_of_time_hands_the_rest_back_to_the_queue(app, make_job, work,
                                                              redis_url):
    import time

    from workers.runner import _run_batch

    jobs = [make_job("noop") for _ in range(3)]
    with app.app_context():
        batch = taken_batch(3)
        assert [job.id for _, job in batch] == [job.id for job in jobs]
        ran, _ = _run_batch(batch, deadline=time.monotonic() - 1)
    assert ran == 1, "the first job of a batch always runs"
    assert fresh(jobs[0]).status == "completed"
    queue = Queue("default", connection=Redis.from_url(redis_url))
    for job in jobs[1:]:
        job = fresh(job)
        assert (job.status, job.lease_owner, job.lease_until) == ("running", None, None)
        assert kinds(job) == ["created", "started"], "claimed, then let go"
        assert queue.fetch_job(rq_job_id(job.id, 2)).get_status() == "queued"
    work()
    for job in jobs[1:]:
        assert fresh(job).status == "completed"
        assert kinds(job) == ["created", "started", "completed"], "one run, started once"
        assert len(runs_of(job)) == 1


def test_a_job_queued_twice_and_taken_twice_runs_once(app, make_job):
    job = make_job("noop")
    with app.app_context():
        assert dispatch([fresh(job)]) == 1, "a second dispatch of the same job"
        batch = taken_batch(2)
    assert [claimed.id for _, claimed in batch] == [job.id]


def test_a_stopping_worker_runs_no_more_of_its_batch(app, make_job, monkeypatch):
    import threading
    import time

    from workers import runner

    jobs = [make_job("noop") for _ in range(2)]
    with app.app_context():
        batch = taken_batch(2)
        monkeypatch.setattr(runner, "STOPPING", threading.Event())
        runner.STOPPING.set()
        assert runner._run_batch(batch, deadline=time.monotonic() + 60)[0] == 1
        assert runner.run_waiting("default", deadline=time.monotonic() + 60) == 0
    assert fresh(jobs[0]).status == "completed"
    assert (fresh(jobs[1]).status, fresh(jobs[1]).lease_owner) == ("running", None)


@pytest.mark.parametrize("quick_run_seconds, sizes", [(60, [1, 2, 4, 8]), (0, [1] * 8)])
def test_batches_grow_while_runs_are_quick_and_shrink_after_a_slow_one(
        app, make_job, monkeypatch, quick_run_seconds, sizes):
    import time

    from workers import runner

    jobs = [make_job("noop") for _ in range(7)]
    asked = []

    def take(queue_name, count=1):
        asked.append(count)
        return take_waiting(queue_name, count)

    monkeypatch.setattr(runner, "take_waiting", take)
    monkeypatch.setattr(runner, "QUICK_RUN", timedelta(seconds=quick_run_seconds))
    with app.app_context():
        assert runner.run_waiting("default", deadline=time.monotonic() + 60) == 7
    assert asked == sizes, "1, 2, 4 ... while quick (the last finds none); one if slow"
    assert all(fresh(job).status == "completed" for job in jobs)
