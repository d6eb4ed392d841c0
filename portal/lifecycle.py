"""The job state machine. Every status change of a job goes through `transition()`.

The allowed moves are the TRANSITIONS table below (data, not scattered ifs); any other
move raises IllegalTransition. Statuses and events are the reference page's, plus the
events that record what a person did (created, paused, resumed).
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from sqlalchemy import func, select

from portal import metrics  # noqa: F401  (rolls up the counts of every event written)
from portal.extensions import db
from portal.models import Job, JobEvent, JobRun, User


class Status(StrEnum):
    RUNNING = "running"
    SLEEPING = "sleeping"
    FAILED = "failed"
    PAUSED = "paused"
    COMPLETED = "completed"


class Event(StrEnum):
    STARTED = "started"
    SYNCED = "synced"
    ERROR = "error"
    SLEEPING = "sleeping"
    FAILED = "failed"
    COMPLETED = "completed"
    CREATED = "created"
    PAUSED = "paused"
    RESUMED = "resumed"
    RUN_NOW = "run_now"
    EDITED = "edited"


class Trigger(StrEnum):
    UNIT_MORE = "unit done, more work now"
    UNIT_SCHEDULED = "unit done, next run per cadence"
    UNIT_IDLE = "unit found nothing to do, next run per cadence"
    UNIT_DONE = "unit done, nothing left"
    ERROR_RETRY = "error, retry after backoff"
    ERROR_EXHAUSTED = "error, streak spans the failure window"
    ERROR_FATAL = "error that no retry can fix"
    RATE_LIMITED = "provider rate limit"
    QUIET = "inside the quiet window"
    WAKE = "next run time reached"
    RUN_NOW = "user runs it now"
    PAUSE = "user pauses"
    RESUME = "user resumes"
    RUN_AGAIN = "user runs a completed job again after an edit"
    SCHEDULE_BROKEN = "the schedule gives no next run"
    WORKER_LOST = "its worker stopped answering, queued again at once"
    WORKER_LOST_TOO_OFTEN = "its worker stopped answering too many times in a row"


@dataclass(frozen=True)
class Transition:
    sources: frozenset[Status]
    target: Status
    event: Event | None


def _t(sources: set[Status], target: Status, event: Event | None) -> Transition:
    return Transition(frozenset(sources), target, event)


R, S, F, P, C = Status.RUNNING, Status.SLEEPING, Status.FAILED, Status.PAUSED, Status.COMPLETED

TRANSITIONS: dict[Trigger, Transition] = {
    Trigger.UNIT_MORE: _t({R}, R, Event.SYNCED),
    Trigger.UNIT_SCHEDULED: _t({R}, S, Event.SYNCED),
    # An idle run (nothing moved, nothing to say) writes no event: a job that runs every
    # minute with nothing to do would bury its log. Its last_run_at still moves.
    Trigger.UNIT_IDLE: _t({R}, S, None),
    Trigger.UNIT_DONE: _t({R}, C, Event.COMPLETED),
    Trigger.ERROR_RETRY: _t({R}, S, Event.ERROR),
    Trigger.ERROR_EXHAUSTED: _t({R}, F, Event.FAILED),
    Trigger.ERROR_FATAL: _t({R}, F, Event.FAILED),
    Trigger.RATE_LIMITED: _t({R}, S, Event.SLEEPING),
    Trigger.QUIET: _t({R}, S, Event.SLEEPING),
    Trigger.WAKE: _t({S}, R, None),
    Trigger.RUN_NOW: _t({S}, R, Event.RUN_NOW),
    Trigger.PAUSE: _t({R, S}, P, Event.PAUSED),
    Trigger.RESUME: _t({P, F}, R, Event.RESUMED),
    Trigger.RUN_AGAIN: _t({C}, R, Event.RESUMED),
    Trigger.SCHEDULE_BROKEN: _t({R}, F, Event.FAILED),
    # A lost worker is not the job's fault: no backoff, the job stays Running and the
    # dispatcher queues it again in the same pass. Losses count in the error streak, and
    # PORTAL_LOST_WORKER_LIMIT of them in a row fail the job.
    Trigger.WORKER_LOST: _t({R}, R, Event.ERROR),
    Trigger.WORKER_LOST_TOO_OFTEN: _t({R}, F, Event.FAILED),
}

# Statuses a job leaves only when a person acts: nothing to poll for.
SETTLED = frozenset({F, P, C})

LEVELS = {Event.ERROR: "error", Event.FAILED: "error", Event.SLEEPING: "warning"}


class RunOutcome(StrEnum):
    """How a run ended (JobRun.outcome): the status it left the job in, told apart where
    that says more (an error before a retry, a rate limit, a worker that vanished)."""

    SLEEPING = "sleeping"
    IDLE = "idle"
    COMPLETED = "completed"
    ERROR = "error"
    FAILED = "failed"
    PAUSED = "paused"
    HELD_BACK = "held_back"
    LOST = "lost"


# The run a move ends, and how: every move out of Running, and a lost worker (the job
# stays Running; its next claim opens a new run). Other moves that stay Running end none.
RUN_OUTCOMES: dict[Trigger, RunOutcome] = {
    Trigger.UNIT_SCHEDULED: RunOutcome.SLEEPING,
    Trigger.UNIT_IDLE: RunOutcome.IDLE,
    Trigger.UNIT_DONE: RunOutcome.COMPLETED,
    Trigger.ERROR_RETRY: RunOutcome.ERROR,
    Trigger.ERROR_EXHAUSTED: RunOutcome.FAILED,
    Trigger.ERROR_FATAL: RunOutcome.FAILED,
    Trigger.SCHEDULE_BROKEN: RunOutcome.FAILED,
    Trigger.RATE_LIMITED: RunOutcome.HELD_BACK,
    Trigger.QUIET: RunOutcome.HELD_BACK,
    Trigger.PAUSE: RunOutcome.PAUSED,
    Trigger.WORKER_LOST: RunOutcome.LOST,
    Trigger.WORKER_LOST_TOO_OFTEN: RunOutcome.FAILED,
}

WORKER_LOST_CODE = "worker_lost"
DATABASE_UNAVAILABLE_CODE = "database_unavailable"


@dataclass(frozen=True)
class RetryPolicy:
    """How a job retries: the backoff doubles from base up to cap (with jitter), and
    consecutive errors spanning the failure window fail the job."""

    backoff_base_seconds: int = 30
    backoff_cap_seconds: int = 3600
    failure_window_hours: float = 10

    @classmethod
    def of(cls, job: Job) -> RetryPolicy:
        return cls.from_dict(job.retry_policy)

    @classmethod
    def from_dict(cls, values: dict[str, Any] | None) -> RetryPolicy:
        known = {k: v for k, v in (values or {}).items() if k in cls.__dataclass_fields__}
        return cls(**known)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def failure_window(self) -> timedelta:
        return timedelta(hours=self.failure_window_hours)

    def describe(self) -> str:
        return (f"Backoff from {self.backoff_base_seconds:,} s doubling up to "
                f"{self.backoff_cap_seconds:,} s; fails after {self.failure_window_hours:g} h "
                "of consecutive errors")


RETRY_SCHEMA: dict[str, Any] = {
    "type": "object",
    "x-order": ["backoff_base_seconds", "backoff_cap_seconds", "failure_window_hours"],
    "properties": {
        "backoff_base_seconds": {
            "type": "integer", "title": "First retry after (seconds)", "minimum": 1,
            "maximum": 86400, "default": RetryPolicy.backoff_base_seconds,
            "description": "After an error the job sleeps this long, doubling with each "
            "further error in a row (with some jitter)."},
        "backoff_cap_seconds": {
            "type": "integer", "title": "Longest wait between retries (seconds)", "minimum": 1,
            "maximum": 604800, "default": RetryPolicy.backoff_cap_seconds,
            "description": "The doubling stops here."},
        "failure_window_hours": {
            "type": "number", "title": "Fail after errors for (hours)", "minimum": 0.01,
            "maximum": 720, "default": RetryPolicy.failure_window_hours,
            "description": "When errors follow each other for this long, the job becomes "
            "Failed and stops until someone resumes it."},
    },
}


class IllegalTransition(Exception):
    """A move the state machine does not allow."""

    def __init__(self, job: Job, trigger: Trigger):
        super().__init__(f"job {job.id}: cannot apply '{trigger}' to a {job.status} job")
        self.job_id = job.id
        self.status = job.status
        self.trigger = trigger


def can(job: Job, trigger: Trigger) -> bool:
    """Whether `trigger` is allowed from the job's current status."""
    return Status(job.status) in TRANSITIONS[trigger].sources


def record(
    job: Job,
    kind: Event,
    message: str,
    *,
    now: datetime,
    code: str = "",
    level: str | None = None,
    counts: dict[str, int] | None = None,
    by: User | None = None,
    run: JobRun | None = None,
) -> JobEvent:
    """Add one event to the job's log (in the current transaction), in the run under way:
    `run` when the caller holds it (a worker does), else looked up."""
    context: dict[str, Any] = {"added": 0, "removed": 0, "omitted": 0}
    context.update(counts or {})
    job.added_total = (job.added_total or 0) + int(context["added"])
    job.removed_total = (job.removed_total or 0) + int(context["removed"])
    job.omitted_total = (job.omitted_total or 0) + int(context["omitted"])
    if by is not None:
        context["user_email"] = by.email
    run = run or current_run(job)
    if run is not None:
        run.added += int(context["added"])
        run.removed += int(context["removed"])
        run.omitted += int(context["omitted"])
        if kind in (Event.ERROR, Event.FAILED) and not run.error:
            run.error, run.error_code = message, code  # the first one says what went wrong
    event = JobEvent(
        job_id=job.id,
        run_id=run.id if run is not None else None,
        # A run opened in this transaction has no id yet: the flush writes it first.
        **({"run": run} if run is not None and run.id is None else {}),
        at=now,
        kind=str(kind),
        level=level or LEVELS.get(kind, "info"),
        code=code,
        message=message,
        context=context,
    )
    db.session.add(event)
    return event


def transition(
    job: Job,
    trigger: Trigger,
    *,
    now: datetime,
    message: str = "",
    code: str = "",
    counts: dict[str, int] | None = None,
    by: User | None = None,
    run_outcome: RunOutcome | None = None,
    run: JobRun | None = None,
) -> JobEvent | None:
    """Move the job along `trigger`, or raise IllegalTransition; returns the event written.
    A move in RUN_OUTCOMES ends the run under way (`run_outcome` overrides how); `run` is
    that run when the caller holds it, else it is looked up once."""
    if not can(job, trigger):
        raise IllegalTransition(job, trigger)
    move = TRANSITIONS[trigger]
    job.status = str(move.target)
    job.status_changed_at = now
    job.terminal_at = now if move.target in SETTLED else None
    if move.target is not Status.SLEEPING:
        job.next_run_at = None
    event = None
    if move.event is not None or trigger in RUN_OUTCOMES:
        run = run or current_run(job)
    if move.event is not None:
        event = record(job, move.event, message, now=now, code=code, counts=counts, by=by,
                       run=run)
    if trigger in RUN_OUTCOMES:
        end_run(job, run_outcome or RUN_OUTCOMES[trigger], now=now, run=run)
    return event


def current_run(job: Job) -> JobRun | None:
    """The job's run under way, if any."""
    return db.session.scalars(
        select(JobRun).where(JobRun.job_id == job.id, JobRun.ended_at.is_(None))
        .order_by(JobRun.id.desc()).limit(1)
    ).first()


def start_run(job: Job, *, now: datetime, first: bool = False) -> JobRun:
    """A worker claimed the job: go on with its run under way (a hand-back to the queue
    after a time slice is the same run) or open a new one. `first`: the job's first
    claim ever, so it has no run to go on with (runs open only here)."""
    run = None if first else current_run(job)
    if run is None:
        run = JobRun(job_id=job.id, started_at=now, units=0, added=0, removed=0, omitted=0,
                     error="", error_code="", idle=False, runs=1)
        db.session.add(run)  # written with the first event of it (record)
    return run


def unit_ran(job: Job, *, progress_done: int | None = None,
             progress_total: int | None = None, run: JobRun | None = None) -> None:
    """Count one unit of work in the run under way (`run`, or looked up), with the
    progress it reported."""
    run = run or current_run(job)
    if run is None:
        return
    run.units += 1
    if progress_done is not None and progress_total is not None:
        if run.first_done is None:
            run.first_done = run.done if run.done is not None else 0
        run.done, run.total = progress_done, progress_total


def end_run(job: Job, outcome: RunOutcome, *, now: datetime,
            run: JobRun | None = None) -> JobRun | None:
    """Close the run under way (`run`, or looked up). An idle run right after another idle
    one (a job with nothing to do, every minute) is folded into that row, which counts
    them, so the Runs table stays readable."""
    run = run or current_run(job)
    if run is None:
        return None
    run.ended_at = now
    run.outcome = str(outcome)
    if outcome is RunOutcome.IDLE and not (run.added or run.removed or run.omitted):
        run.idle = True
        previous = db.session.scalars(
            select(JobRun).where(JobRun.job_id == job.id, JobRun.id < run.id)
            .order_by(JobRun.id.desc()).limit(1)
        ).first()
        if previous is not None and previous.idle:
            previous.runs += run.runs
            previous.units += run.units
            previous.ended_at = now
            db.session.execute(
                JobEvent.__table__.update().where(JobEvent.run_id == run.id)
                .values(run_id=previous.id))
            db.session.delete(run)
            return previous
    elif outcome is RunOutcome.IDLE:
        run.outcome = str(RunOutcome.SLEEPING)
    return run


def backoff(policy: RetryPolicy, error_count: int, rng: random.Random | None = None) -> timedelta:
    """How long to sleep after the `error_count`-th consecutive error: half the doubled
    delay for sure, the other half at random, so retries from many jobs spread out."""
    doublings = min(max(error_count - 1, 0), 32)  # far past any cap; keeps the number small
    delay = min(policy.backoff_cap_seconds, policy.backoff_base_seconds * 2**doublings)
    return timedelta(seconds=delay / 2 + (rng or random).uniform(0, delay / 2))


def unit_succeeded(
    job: Job, *, now: datetime, done: bool, more_now: bool, next_run_at: datetime | None,
    message: str, counts: dict[str, int], idle: bool = False,
    progress_done: int | None = None, progress_total: int | None = None,
    run: JobRun | None = None,
) -> None:
    """A unit of work finished well: pick the move and reset the error streak.

    `idle`: the unit found nothing to do and has nothing to say (no counts, no notes).
    Going back to sleep after it is not logged, unless it ends an error streak: that
    recovery is worth a line. `run`: the run under way, when the caller holds it."""
    run = run or current_run(job)
    unit_ran(job, progress_done=progress_done, progress_total=progress_total, run=run)
    recovered = job.error_count > 0
    job.error_count = 0
    job.error_streak_started_at = None
    quiet = idle and not recovered and not any((counts or {}).values())
    if more_now and not done:
        transition(job, Trigger.UNIT_MORE, now=now, message=message, counts=counts, run=run)
    elif done or next_run_at is None:
        # Nothing more now and no next run (a job that runs once): it is complete.
        transition(job, Trigger.UNIT_DONE, now=now, message=message, counts=counts, run=run)
    elif quiet:
        transition(job, Trigger.UNIT_IDLE, now=now, run=run)
        job.next_run_at = next_run_at
    else:
        transition(job, Trigger.UNIT_SCHEDULED, now=now, message=message, counts=counts,
                   run=run)
        job.next_run_at = next_run_at


def unit_failed(
    job: Job, *, now: datetime, message: str, code: str, retryable: bool,
    rng: random.Random | None = None, run: JobRun | None = None,
) -> None:
    """A unit of work raised: log the Error, then sleep for a retry or fail the job.
    `run`: the run under way, when the caller holds it."""
    run = run or current_run(job)
    unit_ran(job, run=run)
    policy = RetryPolicy.of(job)
    job.error_count += 1
    if job.error_streak_started_at is None:
        job.error_streak_started_at = now
    if not retryable:
        record(job, Event.ERROR, message, now=now, code=code, run=run)
        transition(
            job, Trigger.ERROR_FATAL, now=now, code=code, run=run,
            message="Failed: retrying cannot fix this error, so the job was stopped. Correct "
            "the input or the configuration, then run the job again.",
        )
        return
    if now - job.error_streak_started_at >= policy.failure_window:
        record(job, Event.ERROR, message, now=now, code=code, run=run)
        transition(
            job, Trigger.ERROR_EXHAUSTED, now=now, code=code, run=run,
            message=f"Failed: {job.error_count} errors in a row since "
            f"{job.error_streak_started_at:%Y-%m-%d %H:%M} UTC, over the "
            f"{policy.failure_window_hours:g} h failure window; resume the job to try again.",
        )
        return
    wake_at = now + backoff(policy, job.error_count, rng)
    transition(
        job, Trigger.ERROR_RETRY, now=now, code=code,
        message=f"{message} — retry {job.error_count} at {wake_at:%Y-%m-%d %H:%M:%S} UTC",
        run=run,
    )
    job.next_run_at = wake_at


def worker_lost(job: Job, *, now: datetime, message: str, limit: int) -> bool:
    """The worker holding the job stopped renewing its lease (it died, or lost the database
    for longer than a lease). Log the Error and keep the job Running, to be queued again at
    once, unless this is the `limit`-th loss in a row (or the error streak spans the failure
    window): then the job fails, saying so. Returns whether it should be queued again."""
    run = current_run(job)
    unit_ran(job, run=run)
    job.error_count += 1
    if job.error_streak_started_at is None:
        job.error_streak_started_at = now
    losses = 1 + db.session.scalar(
        select(func.count()).select_from(JobEvent).where(
            JobEvent.job_id == job.id, JobEvent.code == WORKER_LOST_CODE,
            JobEvent.at >= job.error_streak_started_at))
    policy = RetryPolicy.of(job)
    if losses >= limit:
        record(job, Event.ERROR, message, now=now, code=WORKER_LOST_CODE, run=run)
        transition(
            job, Trigger.WORKER_LOST_TOO_OFTEN, now=now, code=WORKER_LOST_CODE, run=run,
            message=f"Failed: its worker was lost {losses} times in a row (the limit is "
            f"{limit}), so the job was stopped: a unit of this job may be crashing its worker "
            "(memory, a native library). Check the workers' logs, then resume the job.",
        )
        return False
    if now - job.error_streak_started_at >= policy.failure_window:
        record(job, Event.ERROR, message, now=now, code=WORKER_LOST_CODE, run=run)
        transition(
            job, Trigger.ERROR_EXHAUSTED, now=now, code=WORKER_LOST_CODE, run=run,
            message=f"Failed: {job.error_count} errors in a row since "
            f"{job.error_streak_started_at:%Y-%m-%d %H:%M} UTC, over the "
            f"{policy.failure_window_hours:g} h failure window; resume the job to try again.",
        )
        return False
    transition(job, Trigger.WORKER_LOST, now=now, code=WORKER_LOST_CODE, run=run,
               message=f"{message} — loss {losses} of {limit} in a row; queued again now")
    return True


def database_unavailable(job: Job, *, now: datetime, message: str,
                         run: JobRun | None = None) -> JobEvent:
    """A unit could not reach the database and was abandoned (nothing of it landed). Not
    the job's fault nor a move: the Error says so, the job stays Running and its worker
    queues it again."""
    return record(job, Event.ERROR, message, now=now, code=DATABASE_UNAVAILABLE_CODE, run=run)


def schedule_broken(job: Job, *, now: datetime, reason: str, unit_message: str = "",
                    counts: dict[str, int] | None = None, run: JobRun | None = None) -> None:
    """The job's stored schedule gives no next run (an older database may hold one that
    never fires): the job fails with the reason, instead of a worker crashing over it.
    `unit_message`/`counts`: the unit that ran just before, recorded as Synced first.
    `run`: the run under way, when the caller holds it."""
    run = run or current_run(job)
    if counts is not None:
        record(job, Event.SYNCED, unit_message, now=now, counts=counts, run=run)
    job.error_count += 1
    if job.error_streak_started_at is None:
        job.error_streak_started_at = now
    record(job, Event.ERROR, reason, now=now, code="bad_schedule", run=run)
    transition(job, Trigger.SCHEDULE_BROKEN, now=now, code="bad_schedule", run=run,
               message="Failed: the job's schedule gives no next run, so the job was "
               "stopped; the error before this says why.")


def hold_back(job: Job, trigger: Trigger, *, now: datetime, until: datetime, message: str,
              code: str, unit: bool = False, run: JobRun | None = None) -> None:
    """Sleep until `until` for an outside restriction (a rate limit, a quiet window); this
    is not an error and leaves the error streak alone. `unit`: a unit ran into it. `run`:
    the run under way, when the caller holds it."""
    run = run or current_run(job)
    if unit:
        unit_ran(job, run=run)
    transition(job, trigger, now=now, code=code, run=run,
               message=f"{message}; sleeping until {until:%Y-%m-%d %H:%M:%S} UTC")
    job.next_run_at = until


def run_now(job: Job, *, by: User, now: datetime) -> None:
    """A person asks a sleeping job to run now instead of at its next run time."""
    transition(job, Trigger.RUN_NOW, now=now, message=f"Run now requested by {by.email}", by=by)


def pause(job: Job, *, by: User, now: datetime) -> None:
    """A person pauses the job; a unit already running stops at its next batch boundary."""
    transition(job, Trigger.PAUSE, now=now, message=f"Paused by {by.email}", by=by)


def resume(job: Job, *, by: User, now: datetime) -> None:
    """A person resumes a paused or failed job: it runs now, with a fresh error streak."""
    job.error_count = 0
    job.error_streak_started_at = None
    transition(job, Trigger.RESUME, now=now, message=f"Resumed by {by.email}", by=by)


def run_again(job: Job, *, by: User, now: datetime) -> None:
    """A person whose edit gives a completed job more to do (an import's new file) runs
    it again, with a fresh error streak."""
    job.error_count = 0
    job.error_streak_started_at = None
    transition(job, Trigger.RUN_AGAIN, now=now, message=f"Run again by {by.email} after an "
               "edit", by=by)


def wake(job: Job, *, now: datetime) -> None:
    """A sleeping job's next run time has come."""
    transition(job, Trigger.WAKE, now=now)
