"""The job state machine. Every status change of a job goes through `transition()`.

The allowed moves are the TRANSITIONS table below (data, not scattered ifs); any other
move raises IllegalTransition. Statuses and events are the reference page's, plus the
events that record what a person did (created, paused, resumed).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from portal.extensions import db
from portal.models import Job, JobEvent, User


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


class Trigger(StrEnum):
    UNIT_MORE = "unit done, more work now"
    UNIT_SCHEDULED = "unit done, next run per cadence"
    UNIT_DONE = "unit done, nothing left"
    ERROR_RETRY = "error, retry after backoff"
    ERROR_EXHAUSTED = "error, streak spans the failure window"
    ERROR_FATAL = "error that no retry can fix"
    RATE_LIMITED = "provider rate limit"
    WAKE = "next run time reached"
    PAUSE = "user pauses"
    RESUME = "user resumes"


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
    Trigger.UNIT_DONE: _t({R}, C, Event.COMPLETED),
    Trigger.ERROR_RETRY: _t({R}, S, Event.ERROR),
    Trigger.ERROR_EXHAUSTED: _t({R}, F, Event.FAILED),
    Trigger.ERROR_FATAL: _t({R}, F, Event.FAILED),
    Trigger.RATE_LIMITED: _t({R}, S, Event.SLEEPING),
    Trigger.WAKE: _t({S}, R, None),
    Trigger.PAUSE: _t({R, S}, P, Event.PAUSED),
    Trigger.RESUME: _t({P, F}, R, Event.RESUMED),
}

# Statuses a job leaves only when a person acts: nothing to poll for.
SETTLED = frozenset({F, P, C})

LEVELS = {Event.ERROR: "error", Event.FAILED: "error", Event.SLEEPING: "warning"}

# Retry defaults (the job engine makes these per job): backoff doubles from BASE up to
# CAP; consecutive errors spanning FAILURE_WINDOW fail the job.
BACKOFF_BASE = timedelta(seconds=30)
BACKOFF_CAP = timedelta(hours=1)
FAILURE_WINDOW = timedelta(hours=10)


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
) -> JobEvent:
    """Add one event to the job's log (in the current transaction)."""
    context: dict[str, Any] = {"added": 0, "removed": 0, "omitted": 0}
    context.update(counts or {})
    if by is not None:
        context["user_email"] = by.email
    event = JobEvent(
        job_id=job.id,
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
) -> JobEvent | None:
    """Move the job along `trigger`, or raise IllegalTransition; returns the event written."""
    if not can(job, trigger):
        raise IllegalTransition(job, trigger)
    move = TRANSITIONS[trigger]
    job.status = str(move.target)
    job.status_changed_at = now
    job.terminal_at = now if move.target in SETTLED else None
    if move.target is not Status.SLEEPING:
        job.next_run_at = None
    if move.event is None:
        return None
    return record(job, move.event, message, now=now, code=code, counts=counts, by=by)


def backoff(error_count: int) -> timedelta:
    """How long to sleep after the `error_count`-th consecutive error."""
    doublings = min(max(error_count - 1, 0), 32)  # far past the cap; keeps the number small
    return min(BACKOFF_CAP, BACKOFF_BASE * 2**doublings)


def unit_succeeded(
    job: Job, *, now: datetime, done: bool, more_now: bool, next_run_at: datetime | None,
    message: str, counts: dict[str, int],
) -> None:
    """A unit of work finished well: pick the move and reset the error streak."""
    job.error_count = 0
    job.error_streak_started_at = None
    if done:
        transition(job, Trigger.UNIT_DONE, now=now, message=message, counts=counts)
    elif more_now or next_run_at is None:
        transition(job, Trigger.UNIT_MORE, now=now, message=message, counts=counts)
    else:
        transition(job, Trigger.UNIT_SCHEDULED, now=now, message=message, counts=counts)
        job.next_run_at = next_run_at


def unit_failed(job: Job, *, now: datetime, message: str, code: str, retryable: bool) -> None:
    """A unit of work raised: log the Error, then sleep for a retry or fail the job."""
    job.error_count += 1
    if job.error_streak_started_at is None:
        job.error_streak_started_at = now
    if not retryable:
        record(job, Event.ERROR, message, now=now, code=code)
        transition(
            job, Trigger.ERROR_FATAL, now=now, code=code,
            message="Failed: retrying cannot fix this error, so the job was stopped. Correct "
            "the input or the configuration, then run the job again.",
        )
        return
    wake_at = now + backoff(job.error_count)
    if wake_at - job.error_streak_started_at > FAILURE_WINDOW:
        record(job, Event.ERROR, message, now=now, code=code)
        hours = FAILURE_WINDOW.total_seconds() / 3600
        transition(
            job, Trigger.ERROR_EXHAUSTED, now=now, code=code,
            message=f"Failed: consecutive errors for over {hours:g} hours; "
            "resume the job to try again.",
        )
        return
    transition(
        job, Trigger.ERROR_RETRY, now=now, code=code,
        message=f"{message} — retry {job.error_count} at {wake_at:%Y-%m-%d %H:%M:%S} UTC",
    )
    job.next_run_at = wake_at


def pause(job: Job, *, by: User, now: datetime) -> None:
    """A person pauses the job; a unit already running stops at its next batch boundary."""
    transition(job, Trigger.PAUSE, now=now, message=f"Paused by {by.email}", by=by)


def resume(job: Job, *, by: User, now: datetime) -> None:
    """A person resumes a paused or failed job: it runs now, with a fresh error streak."""
    job.error_count = 0
    job.error_streak_started_at = None
    transition(job, Trigger.RESUME, now=now, message=f"Resumed by {by.email}", by=by)


def wake(job: Job, *, now: datetime) -> None:
    """A sleeping job's next run time has come."""
    transition(job, Trigger.WAKE, now=now)
