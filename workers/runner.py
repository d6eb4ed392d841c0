"""Runs a job: claim it, do units of work, record events, ask lifecycle for the next state.

`run_job` is what RQ executes (by dotted path). It never trusts the queue: the job row
decides whether there is anything to run, and a compare-and-set lease on the row makes
sure one job never runs twice at once.
"""

from __future__ import annotations

import logging
import os
import socket
import time
import uuid
from datetime import datetime, timedelta
from functools import cache
from typing import Any

from flask import Flask, current_app, has_app_context
from sqlalchemy import or_, select, update

from portal import lifecycle
from portal.datastore import stored_file, write_messages
from portal.extensions import db
from portal.lifecycle import Event, Status
from portal.models import Job
from portal.models.types import utcnow
from portal.queues import enqueue
from providers import get_job_type
from providers.base import OutMessage, ProviderError, StoredFile, WorkResult

log = logging.getLogger(__name__)

# How long one RQ job keeps running units before it hands the job back to the queue,
# so that a long import does not hold a worker away from every other job.
TIME_SLICE = timedelta(seconds=20)


def worker_identity() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


@cache
def _standalone_app() -> Flask:
    from portal import create_app

    return create_app()


def run_job(job_id: int) -> str:
    """RQ entry point. Returns a short word on what happened (kept as the RQ result)."""
    if has_app_context():
        return Runner(job_id).run()
    with _standalone_app().app_context():
        return Runner(job_id).run()


class _Sink:
    def __init__(self, source: str):
        self.source = source

    def write(self, stream: str, messages: list[OutMessage]) -> tuple[int, int]:
        return write_messages(stream, messages, source=self.source)


class _Files:
    def get(self, upload_id: int) -> StoredFile:
        return stored_file(upload_id)


class _Context:
    """What a job type's run() sees: its config, cursor and the portal's data plane."""

    def __init__(self, job: Job, batch_size: int):
        self.job_id = job.id
        self.config: dict[str, Any] = dict(job.config or {})
        self.credentials: dict[str, Any] = {}
        self.cursor: dict[str, Any] = dict(job.cursor or {})
        self.sink = _Sink(source=f"job:{job.id}")
        self.files = _Files()
        self.batch_size = batch_size
        self.notes: list[str] = []

    def log(self, message: str) -> None:
        self.notes.append(message)

    def should_stop(self) -> bool:
        status = db.session.scalar(select(Job.status).where(Job.id == self.job_id))
        return status != Status.RUNNING

    def now(self) -> datetime:
        return utcnow()


class Runner:
    def __init__(self, job_id: int):
        self.job_id = job_id
        self.owner = worker_identity()
        self.config = current_app.config
        self.lease = timedelta(seconds=self.config["PORTAL_LEASE_SECONDS"])

    def run(self) -> str:
        try:
            job = self.claim()
            if job is None:
                return "skipped"
            started = time.monotonic()
            while True:
                outcome = self.unit(job)
                if outcome != "more":
                    return outcome
                if time.monotonic() - started > TIME_SLICE.total_seconds():
                    self.release(job)
                    enqueue(job)
                    return "handed back"
                if not self.renew(job):
                    return "stopped"
        finally:
            db.session.remove()

    def claim(self) -> Job | None:
        """Take the lease on a running job, or None when it is not ours to run."""
        now = utcnow()
        result = db.session.execute(
            update(Job)
            .where(
                Job.id == self.job_id,
                Job.status == Status.RUNNING,
                or_(Job.lease_until.is_(None), Job.lease_until < now),
            )
            .values(lease_owner=self.owner, lease_until=now + self.lease)
        )
        db.session.commit()
        if result.rowcount != 1:
            return None
        job = db.session.get(Job, self.job_id)
        if job.started_at is None:
            job.started_at = now
            lifecycle.record(
                job, Event.STARTED, f"Started: first run, picked up by worker {self.owner}",
                now=now,
            )
            db.session.commit()
        return job

    def renew(self, job: Job) -> bool:
        """Extend the lease before the next unit; False (and the lease let go) when the job
        was paused meanwhile or is no longer ours."""
        result = db.session.execute(
            update(Job)
            .where(Job.id == job.id, Job.lease_owner == self.owner, Job.status == Status.RUNNING)
            .values(lease_until=utcnow() + self.lease)
        )
        if result.rowcount != 1:
            db.session.execute(
                update(Job).where(Job.id == job.id, Job.lease_owner == self.owner)
                .values(lease_owner=None, lease_until=None)
            )
        db.session.commit()
        return result.rowcount == 1

    def release(self, job: Job) -> None:
        job.lease_owner = None
        job.lease_until = None
        db.session.commit()

    def unit(self, job: Job) -> str:
        """One unit of work; its data, cursor and events commit together."""
        found = get_job_type(job.provider, job.job_type)
        ctx = _Context(job, self.config["PORTAL_IMPORT_BATCH_SIZE"])
        try:
            if found is None:
                raise ProviderError(
                    f"this portal has no job type {job.provider}/{job.job_type}",
                    code="unknown_job_type",
                )
            result = found[1].run(ctx)
        except ProviderError as exc:
            return self.failed(job, str(exc), exc.code, retryable=exc.retryable)
        except Exception as exc:  # a bug or an outage we did not foresee: retry with backoff
            log.exception("job %s: unit of work raised", job.id)
            return self.failed(job, f"{type(exc).__name__}: {exc}", "internal_error", True)
        return self.succeeded(job, result, ctx.notes)

    def _reload_locked(self, job: Job) -> None:
        # A person may have paused the job while the unit ran: read the row afresh.
        db.session.refresh(job, with_for_update=True)

    def succeeded(self, job: Job, result: WorkResult, notes: list[str]) -> str:
        now = utcnow()
        self._reload_locked(job)
        job.cursor = result.cursor if result.cursor is not None else job.cursor
        job.last_run_at = now
        message = "; ".join([*notes, result.message] if result.message else notes)
        outcome = "stopped"
        if job.status == Status.RUNNING:
            lifecycle.unit_succeeded(
                job, now=now, done=result.done, more_now=result.more_now, next_run_at=None,
                message=message, counts=result.counts,
            )
            outcome = "more" if job.status == Status.RUNNING else job.status
        if outcome != "more":
            job.lease_owner = None
            job.lease_until = None
        db.session.commit()
        return outcome

    def failed(self, job: Job, message: str, code: str, retryable: bool) -> str:
        db.session.rollback()  # nothing the unit wrote may land
        now = utcnow()
        self._reload_locked(job)
        job.last_run_at = now
        if job.status == Status.RUNNING:
            lifecycle.unit_failed(job, now=now, message=message, code=code, retryable=retryable)
        job.lease_owner = None
        job.lease_until = None
        db.session.commit()
        return str(job.status)
