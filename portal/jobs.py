"""Creating jobs and finding them; no request objects here."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any

from redis.exceptions import RedisError
from sqlalchemy import delete, select

from portal import lifecycle
from portal.extensions import db
from portal.lifecycle import SETTLED, Event, Status
from portal.models import Authorization, Draft, Job, JobEvent, User
from portal.models.types import utcnow
from portal.queues import enqueue
from providers.base import JobType, Provider

log = logging.getLogger(__name__)


def create_job(
    *,
    provider: Provider,
    job_type: JobType,
    authorization: Authorization | None,
    name: str,
    description: str,
    config: dict[str, Any],
    created_by: User,
    schedule: dict[str, Any] | None = None,
    retry_policy: dict[str, Any] | None = None,
    paused: bool = False,
    draft: Draft | None = None,
) -> Job:
    """Insert and commit the job, then put it on its queue (never the other way round).

    `paused`: created Paused, to be resumed by a person. `draft`: the wizard draft it came
    from, deleted in the same transaction."""
    now = utcnow()
    job = Job(
        name=name,
        description=description,
        provider=provider.key,
        job_type=job_type.key,
        kind=job_type.kind,
        queue=job_type.queue,
        authorization_id=authorization.id if authorization else None,
        config=config,
        schedule=schedule or {"kind": "once"},
        retry_policy=retry_policy or {},
        status=Status.PAUSED if paused else Status.RUNNING,
        status_changed_at=now,
        created_by_id=created_by.id,
        created_at=now,
        updated_by_id=created_by.id,
        updated_at=now,
    )
    db.session.add(job)
    db.session.flush()
    lifecycle.record(job, Event.CREATED,
                     f"Created by {created_by.email}" + (", paused" if paused else ""),
                     now=now, by=created_by)
    if draft is not None:
        db.session.delete(draft)
    db.session.commit()
    if not paused:
        _enqueue_committed(job)
    return job


def events_after(job: Job, after_id: int = 0, limit: int = 500) -> list[JobEvent]:
    """The job's events newer than `after_id`, newest first."""
    return list(db.session.scalars(
        select(JobEvent)
        .where(JobEvent.job_id == job.id, JobEvent.id > after_id)
        .order_by(JobEvent.id.desc())
        .limit(limit)
    ))


def metrics(job: Job) -> dict[str, int]:
    """Profiles added, removed and omitted over the job's life."""
    totals = {"added": 0, "removed": 0, "omitted": 0}
    for context in db.session.scalars(select(JobEvent.context).where(JobEvent.job_id == job.id)):
        for key in totals:
            totals[key] += int((context or {}).get(key, 0))
    return totals


def purge_at(job: Job, days: int) -> datetime | None:
    """When a settled job will be purged (None while it can still change by itself)."""
    if job.status not in SETTLED or job.terminal_at is None:
        return None
    return job.terminal_at + timedelta(days=days)


def purge(*, now: datetime, days: int, dry_run: bool = False) -> int:
    """Delete failed, paused and completed jobs that have been so for `days`, with their
    events. Returns how many jobs."""
    cutoff = now - timedelta(days=days)
    ids = list(db.session.scalars(
        select(Job.id).where(Job.status.in_([str(s) for s in SETTLED]), Job.terminal_at <= cutoff)
    ))
    if ids and not dry_run:
        for start in range(0, len(ids), 500):
            chunk = ids[start:start + 500]
            db.session.execute(delete(JobEvent).where(JobEvent.job_id.in_(chunk)))
            db.session.execute(delete(Job).where(Job.id.in_(chunk)))
        db.session.commit()
    return len(ids)


def _locked(job: Job) -> Job:
    db.session.refresh(job, with_for_update=True)
    return job


def pause_job(job: Job, *, by: User) -> None:
    """Pause now; a unit already running stops at its next batch boundary."""
    lifecycle.pause(_locked(job), by=by, now=utcnow())
    db.session.commit()


def resume_job(job: Job, *, by: User) -> None:
    """Resume a paused or failed job: it runs now, with a fresh error streak."""
    lifecycle.resume(_locked(job), by=by, now=utcnow())
    db.session.commit()
    _enqueue_committed(job, force=True)


def run_job_now(job: Job, *, by: User) -> None:
    """Run a sleeping job now instead of at its next run time."""
    lifecycle.run_now(_locked(job), by=by, now=utcnow())
    db.session.commit()
    _enqueue_committed(job, force=True)


def _enqueue_committed(job: Job, *, force: bool = False) -> None:
    """Queue a job whose row is committed. If Redis does not answer, nothing is lost:
    the dispatcher queues the job once Redis is back."""
    try:
        enqueue(job, force=force)
    except RedisError:
        log.warning("job %s: Redis unavailable, left for the dispatcher", job.id)


ACTIONS = {"pause": pause_job, "resume": resume_job, "run-now": run_job_now}
