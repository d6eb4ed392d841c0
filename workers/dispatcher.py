"""Wakes sleeping jobs whose time has come and puts on a queue every running job that
is neither queued nor held by a worker. The database is the truth: if Redis loses its
queues, the next pass puts the jobs back. One dispatcher is active at a time (a lock in
Redis); a second one waits as a standby.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from datetime import datetime, timedelta

from flask import current_app
from redis.exceptions import LockError, RedisError
from rq import Queue, Retry
from sqlalchemy import or_, select

from portal import alerts, background, bulk, lifecycle
from portal.extensions import db
from portal.jobs import purge, purge_drafts
from portal.lifecycle import Status
from portal.models import Job
from portal.models.types import utcnow
from portal.queues import dispatch, pending_ids, queue_due_retries, redis_connection

log = logging.getLogger(__name__)
LOCK_NAME = "portal:dispatcher"
PURGE_KEY = "portal:purge:daily"
HEALTH_KEY = "portal:health:last"
BULK_PROFILES_KEY = "portal:bulk-profiles:last"
BULK_IMPORTS_KEY = "portal:bulk-imports:last"
ALERTS_KEY = "portal:alerts:last"
# Read by the operations page (portal/operations.py): the active dispatcher's last
# completed pass ({"at": epoch seconds, "by": identity}), and every dispatcher's last
# sign of life, active or standby (a sorted set scored by epoch seconds).
PASS_KEY = "portal:dispatcher:pass"
SEEN_KEY = "portal:dispatcher:seen"
SEEN_FORGET_SECONDS = 3600
HEALTH_FUNCTION = "workers.runner.check_authorizations"


def recover_lost(now: datetime) -> list[Job]:
    """Running jobs whose worker stopped renewing its lease: log an Error ("worker lost")
    and return those to queue again at once (not the job's fault: no backoff). A job that
    lost its worker PORTAL_LOST_WORKER_LIMIT times in a row fails instead."""
    limit = current_app.config["PORTAL_LOST_WORKER_LIMIT"]
    lost = db.session.scalars(
        select(Job).where(Job.status == Status.RUNNING, Job.lease_owner.is_not(None),
                          Job.lease_until < now)
        .with_for_update(skip_locked=True)
    ).all()
    again = []
    for job in lost:
        owner = job.lease_owner
        job.lease_owner = job.lease_until = None
        if lifecycle.worker_lost(
            job, now=now, limit=limit,
            message=f"Worker lost: {owner} stopped answering while it ran this job; the "
            "batch it had not committed will be done again",
        ):
            again.append(job)
    db.session.commit()
    if lost:
        log.warning("dispatcher: %d job(s) lost their worker; %d queued again at once",
                    len(lost), len(again))
    return again


def dispatch_once(now: datetime | None = None) -> int:
    """One pass; returns how many jobs it put on a queue."""
    now = now or utcnow()
    grace = timedelta(seconds=current_app.config["PORTAL_ENQUEUE_GRACE_SECONDS"])
    lost = recover_lost(now)
    due = db.session.scalars(
        select(Job).where(Job.status == Status.SLEEPING, Job.next_run_at <= now)
    ).all()
    for job in due:
        lifecycle.wake(job, now=now)
    db.session.commit()
    # A lost job's last dispatch still shows as started in RQ (its worker died holding
    # it): a new dispatch, not the candidates below, puts it back.
    enqueued = dispatch([*lost, *due])

    candidates = db.session.execute(
        select(Job.id, Job.dispatch_count, Job.queue, Job.name)
        .where(
            Job.status == Status.RUNNING,
            or_(Job.lease_until.is_(None), Job.lease_until < now),
            or_(Job.enqueued_at.is_(None), Job.enqueued_at < now - grace),
        )
        .order_by(Job.id)
    ).all()
    pending = pending_ids(candidates)
    return enqueued + dispatch([job for job in candidates if job.id not in pending])


def _first_in(key: str, now: datetime, seconds: int) -> bool:
    """True for the first caller in each period of `seconds`, across dispatchers."""
    return bool(redis_connection().set(key, now.isoformat(), nx=True, ex=seconds))


def health_checks_due(now: datetime) -> bool:
    """Queue the check of every authorization once per PORTAL_HEALTH_CHECK_HOURS; a worker
    runs it, so slow providers never hold up dispatching."""
    hours = current_app.config["PORTAL_HEALTH_CHECK_HOURS"]
    if hours <= 0 or not _first_in(HEALTH_KEY, now, hours * 3600):
        return False
    Queue("default", connection=redis_connection()).enqueue(
        HEALTH_FUNCTION, job_id=f"portal-health-{now:%Y%m%d%H%M}", result_ttl=86400,
        description="check the health of every authorization",
        retry=Retry(max=3, interval=[60, 300, 900]))  # the database away, its worker killed
    return True


def purge_daily(now: datetime) -> int:
    """Purge settled jobs past their retention, at most once a day across dispatchers."""
    if not _first_in(PURGE_KEY, now, 24 * 3600):
        return 0
    count = purge(now=now, days=current_app.config["PORTAL_PURGE_DAYS"])
    purge_drafts(now=now, days=current_app.config["PORTAL_PURGE_DAYS"])
    if count:
        log.info("dispatcher: purged %d job(s)", count)
    return count


def bulk_profiles_due(now: datetime) -> int:
    """Once a minute across dispatchers: queue again the profile builds of bulk imports
    that Redis lost (portal.bulk.queue_pending_profiles)."""
    if not _first_in(BULK_PROFILES_KEY, now, 60):
        return 0
    return bulk.queue_pending_profiles()


def bulk_imports_due(now: datetime) -> int:
    """Once a minute across dispatchers: queue again the bulk imports whose task Redis lost
    or whose worker died (portal.bulk.queue_lost_imports)."""
    if not _first_in(BULK_IMPORTS_KEY, now, 60):
        return 0
    return bulk.queue_lost_imports(now)


def alerts_due(now: datetime) -> int:
    """Every alerts.EVALUATE_SECONDS across dispatchers: evaluate the alert rules and queue
    again the deliveries due for a retry."""
    if not _first_in(ALERTS_KEY, now, alerts.EVALUATE_SECONDS):
        return 0
    alerts.retry_due(now)
    return alerts.evaluate(now)


def identity() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def record_pass(me: str) -> None:
    """Say that a pass completed, for the operations page and its banner."""
    redis_connection().set(PASS_KEY, json.dumps({"at": time.time(), "by": me}),
                           ex=7 * 24 * 3600)


def record_seen(me: str) -> None:
    """Say this dispatcher (active or standby) is alive; forget long-gone ones."""
    now = time.time()
    with redis_connection().pipeline() as pipe:
        pipe.zadd(SEEN_KEY, {me: now})
        pipe.zremrangebyscore(SEEN_KEY, 0, now - SEEN_FORGET_SECONDS)
        pipe.expire(SEEN_KEY, SEEN_FORGET_SECONDS)
        pipe.execute()


def serve(stop_after: float | None = None) -> None:
    """Run passes forever (or for `stop_after` seconds) while holding the dispatcher lock.

    Survives Redis going away: it stands by until Redis answers, then takes the lock."""
    interval = current_app.config["PORTAL_DISPATCH_INTERVAL"]
    lock = redis_connection().lock(LOCK_NAME, timeout=max(10, interval * 5))
    deadline = None if stop_after is None else time.monotonic() + stop_after
    holding = False
    me = identity()
    while deadline is None or time.monotonic() < deadline:
        try:
            record_seen(me)
            if holding:
                lock.reacquire()
            else:
                holding = lock.acquire(blocking=False)
                if holding:
                    log.info("dispatcher: active")
        except LockError:
            holding = False
            log.warning("dispatcher: lost the lock, standing by")
        except RedisError as exc:
            holding = False
            log.warning("dispatcher: Redis does not answer (%s); waiting", exc)
        if holding:
            try:
                with background.ended_session("dispatcher pass"):
                    now = utcnow()
                    count = dispatch_once(now)
                    purge_daily(now)
                    health_checks_due(now)
                    bulk_profiles_due(now)
                    bulk_imports_due(now)
                    alerts_due(now)
                    retried = queue_due_retries()
                    record_pass(me)
                if count:
                    log.info("dispatcher: enqueued %d job(s)", count)
                if retried:
                    log.info("dispatcher: %d failed task(s) queued again for a retry", retried)
            except Exception as exc:
                if background.database_down(exc):
                    pass  # ended_session said so, in those words; the next pass retries
                else:
                    log.exception("dispatcher: pass failed, trying again")
        time.sleep(interval)
    if holding:
        try:
            lock.release()
        except (LockError, RedisError):
            pass
