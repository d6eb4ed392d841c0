"""The operations view: what the queues, the workers and the dispatcher are doing, read
from RQ's own registries (Queue, Worker.all and the job registries) and the dispatcher's
keys, with the database's view beside it as a cross-check that work is flowing.

A worker SIGKILLed (or whose machine died) leaves its Redis key behind until the key's
TTL runs out, and RQ's own state field still says "idle" or "busy": a worker is judged
alive by the age of its last heartbeat against its own rhythm (HEARTBEAT_FIELD, written by
`python -m workers worker`), never by its key being there.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from flask import current_app
from redis import Redis
from redis.exceptions import RedisError
from rq import Queue, Worker
from rq.defaults import DEFAULT_WORKER_TTL
from rq.job import Job as RQJob
from rq.registry import (
    DeferredJobRegistry,
    FailedJobRegistry,
    ScheduledJobRegistry,
    StartedJobRegistry,
)
from rq.utils import utcparse
from rq.worker_registration import REDIS_WORKER_KEYS
from sqlalchemy import func, select
from sqlalchemy.engine.url import make_url

from portal.extensions import db
from portal.lifecycle import Status
from portal.models import Job
from portal.models.types import utcnow
from portal.queues import QUEUE_NAMES
from portal.vault import redact

# The field of an RQ worker's hash that says how often it beats (seconds).
HEARTBEAT_FIELD = "portal_heartbeat_seconds"
# A worker that does not say (a plain `rq worker`) beats when idle every worker_ttl - 15 s.
RQ_IDLE_BEAT = DEFAULT_WORKER_TTL - 15
MISSED_BEATS = 2  # a worker is lost after two missed beats (and a little slack)
BEAT_SLACK = 5
# The dispatcher's keys (written by workers/dispatcher.py).
DISPATCHER_LOCK = "portal:dispatcher"
DISPATCHER_PASS = "portal:dispatcher:pass"
DISPATCHER_SEEN = "portal:dispatcher:seen"
DISPATCHER_STALE = timedelta(minutes=2)  # no pass for longer: the banner says so
OVERDUE_AFTER = timedelta(minutes=2)  # a sleeping job this far past its time is overdue
FAILED_SHOWN = 10
BANNER_CACHE_SECONDS = 5
REDIS_TIMEOUT_SECONDS = 1
_PORTAL_RQ_ID = re.compile(r"portal-job-([0-9]{1,18})-[0-9]{1,18}")


@dataclass
class QueueState:
    name: str
    queued: int
    started: int
    scheduled: int
    deferred: int
    failed: int
    oldest_queued_at: datetime | None

    @property
    def oldest_age(self) -> timedelta | None:
        return utcnow() - self.oldest_queued_at if self.oldest_queued_at else None


@dataclass
class WorkerState:
    name: str
    host: str | None
    pid: int | None
    queues: list[str]
    state: str
    current_job: str | None
    portal_job_id: int | None
    last_heartbeat: datetime | None
    beat_seconds: int
    alive: bool
    successful: int
    failed: int


@dataclass
class DispatcherState:
    lock_held: bool
    last_pass_at: datetime | None
    active: str | None
    standbys: int | None

    @property
    def stale(self) -> bool:
        return self.last_pass_at is None or utcnow() - self.last_pass_at > DISPATCHER_STALE


@dataclass
class FailedEntry:
    rq_id: str
    queue: str
    portal_job_id: int | None
    ended_at: datetime | None
    error: str


@dataclass
class Snapshot:
    taken_at: datetime
    redis_error: str | None = None
    queues: list[QueueState] = field(default_factory=list)
    workers: list[WorkerState] = field(default_factory=list)
    dispatcher: DispatcherState | None = None
    failed: list[FailedEntry] = field(default_factory=list)
    database: dict[str, int] = field(default_factory=dict)

    @property
    def alive_workers(self) -> int:
        return sum(worker.alive for worker in self.workers)


def redis_client() -> Redis:
    """A client of its own with short timeouts: a Redis that hangs must not hang pages."""
    client = current_app.extensions.get("portal_ops_redis")
    if client is None:
        client = Redis.from_url(current_app.config["REDIS_URL"],
                                socket_connect_timeout=REDIS_TIMEOUT_SECONDS,
                                socket_timeout=REDIS_TIMEOUT_SECONDS)
        current_app.extensions["portal_ops_redis"] = client
    return client


def portal_job_id(rq_id: str | None) -> int | None:
    """The portal job an RQ job runs (its ids are portal-job-<id>-<dispatch>), or None."""
    match = _PORTAL_RQ_ID.fullmatch(rq_id or "")
    return int(match.group(1)) if match else None


def _aware(value: datetime | None) -> datetime | None:
    return value.replace(tzinfo=UTC) if value and value.tzinfo is None else value


def is_alive(last_heartbeat: datetime | None, beat_seconds: int, now: datetime) -> bool:
    """Alive when the last heartbeat is younger than two of the worker's own beats."""
    if last_heartbeat is None:
        return False
    limit = timedelta(seconds=MISSED_BEATS * beat_seconds + BEAT_SLACK)
    return now - _aware(last_heartbeat) <= limit


def _beat_seconds(raw: Any) -> int:
    try:
        return max(1, int(raw))
    except (TypeError, ValueError):
        return RQ_IDLE_BEAT


def _queues(connection: Redis) -> list[QueueState]:
    states = []
    for name in QUEUE_NAMES:
        queue = Queue(name, connection=connection)
        oldest = None
        first = queue.get_job_ids(0, 0)
        if first:
            job = RQJob.fetch_many(first, connection=connection)[0]
            oldest = _aware(job.enqueued_at) if job else None
        states.append(QueueState(
            name=name, queued=queue.count,
            started=StartedJobRegistry(queue=queue).count,
            scheduled=ScheduledJobRegistry(queue=queue).count,
            deferred=DeferredJobRegistry(queue=queue).count,
            failed=FailedJobRegistry(queue=queue).count,
            oldest_queued_at=oldest,
        ))
    return states


def _workers(connection: Redis, now: datetime) -> list[WorkerState]:
    states = []
    for worker in Worker.all(connection=connection):
        beat = _beat_seconds(connection.hget(worker.key, HEARTBEAT_FIELD))
        current = worker.get_current_job_id()
        states.append(WorkerState(
            name=worker.name, host=worker.hostname, pid=worker.pid,
            queues=worker.queue_names(), state=worker.get_state(), current_job=current,
            portal_job_id=portal_job_id(current),
            last_heartbeat=_aware(worker.last_heartbeat), beat_seconds=beat,
            alive=is_alive(worker.last_heartbeat, beat, now),
            successful=worker.successful_job_count, failed=worker.failed_job_count,
        ))
    # The living first, then by name: a lost worker stands out at the bottom.
    return sorted(states, key=lambda state: (not state.alive, state.name))


def _dispatcher(connection: Redis, now: datetime) -> DispatcherState:
    last_pass, active = None, None
    raw = connection.get(DISPATCHER_PASS)
    if raw:
        try:
            data = json.loads(raw)
            last_pass = datetime.fromtimestamp(float(data["at"]), UTC)
            active = str(data.get("by") or "") or None
        except (ValueError, KeyError, TypeError):
            pass
    interval = current_app.config["PORTAL_DISPATCH_INTERVAL"]
    since = now.timestamp() - max(30, interval * 5)
    seen = {member.decode() if isinstance(member, bytes) else member
            for member in connection.zrangebyscore(DISPATCHER_SEEN, since, "+inf")}
    lock_held = bool(connection.exists(DISPATCHER_LOCK))
    standbys = len(seen - {active}) if lock_held else len(seen)
    return DispatcherState(lock_held=lock_held, last_pass_at=last_pass, active=active,
                           standbys=standbys)


def _config_secrets() -> list[str]:
    """Values of the settings that could show up in an exception's text."""
    config = current_app.config
    values = [config.get("SECRET_KEY") or "", config.get("PORTAL_VAULT_KEYS") or ""]
    values += (config.get("PORTAL_VAULT_KEYS") or "").replace(":", ",").split(",")
    for name in ("SQLALCHEMY_DATABASE_URI", "REDIS_URL"):
        try:
            password = make_url(config.get(name) or "").password
        except Exception:  # not a URL SQLAlchemy reads (unix://...): no password in it
            password = None
        if password:
            values.append(str(password))
    values += [value for name, value in config.items()
               if name.startswith("PORTAL_OAUTH_") and name.endswith("_SECRET") and value]
    return [value for value in values if value]


def exception_line(exc_string: str | None) -> str:
    """The line of a traceback that says what went wrong (its last), secrets redacted."""
    lines = [line for line in (exc_string or "").splitlines() if line.strip()]
    line = lines[-1].strip() if lines else "(no error recorded)"
    line = redact(line, _config_secrets())
    return line if len(line) <= 300 else line[:299] + "…"


def _failed(connection: Redis) -> list[FailedEntry]:
    """The newest failed RQ jobs across the queues."""
    scored: list[tuple[float, str, str]] = []
    for name in QUEUE_NAMES:
        registry = FailedJobRegistry(name, connection=connection)
        for rq_id, score in connection.zrange(registry.key, 0, FAILED_SHOWN - 1, desc=True,
                                              withscores=True):
            scored.append((score, name, rq_id.decode() if isinstance(rq_id, bytes) else rq_id))
    scored.sort(reverse=True)
    scored = scored[:FAILED_SHOWN]
    jobs = RQJob.fetch_many([rq_id for _, _, rq_id in scored], connection=connection)
    entries = []
    for (_, name, rq_id), job in zip(scored, jobs, strict=True):
        if job is None:
            continue
        result = job.latest_result()
        entries.append(FailedEntry(
            rq_id=rq_id, queue=name, portal_job_id=portal_job_id(rq_id),
            ended_at=_aware(job.ended_at),
            error=exception_line(result.exc_string if result else None),
        ))
    return entries


def database_view(now: datetime) -> dict[str, int]:
    """Jobs running, sleeping, and sleeping well past their time (overdue)."""
    counts = dict(db.session.execute(
        select(Job.status, func.count()).where(Job.status.in_([Status.RUNNING, Status.SLEEPING]))
        .group_by(Job.status)).all())
    overdue = db.session.scalar(select(func.count()).select_from(Job).where(
        Job.status == Status.SLEEPING, Job.next_run_at < now - OVERDUE_AFTER))
    counts = {str(status): count for status, count in counts.items()}
    return {"running": counts.get("running", 0), "sleeping": counts.get("sleeping", 0),
            "overdue": overdue or 0}


def snapshot() -> Snapshot:
    """Everything the operations page shows; a Redis that does not answer is said, not
    raised (the database's view is still given)."""
    now = utcnow()
    shot = Snapshot(taken_at=now, database=database_view(now))
    connection = redis_client()
    try:
        shot.queues = _queues(connection)
        shot.workers = _workers(connection, now)
        shot.dispatcher = _dispatcher(connection, now)
        shot.failed = _failed(connection)
    except (RedisError, OSError) as exc:
        shot.redis_error = type(exc).__name__
    return shot


@dataclass
class Banner:
    redis_down: bool = False
    no_worker: bool = False
    dispatcher_stale: bool = False
    dispatcher_last: datetime | None = None

    def __bool__(self) -> bool:
        return self.redis_down or self.no_worker or self.dispatcher_stale


def _banner_now() -> Banner:
    connection = redis_client()
    now = utcnow()
    try:
        keys = [key.decode() if isinstance(key, bytes) else key
                for key in connection.smembers(REDIS_WORKER_KEYS)]
        with connection.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.hmget(key, "last_heartbeat", HEARTBEAT_FIELD)
            pipe.get(DISPATCHER_PASS)
            *beats, raw_pass = pipe.execute()
    except (RedisError, OSError):
        return Banner(redis_down=True)
    alive = False
    for last, beat in beats:
        if last:
            try:
                when = utcparse(last.decode())
            except ValueError:
                continue
            alive = alive or is_alive(when, _beat_seconds(beat), now)
    last_pass = None
    if raw_pass:
        try:
            last_pass = datetime.fromtimestamp(float(json.loads(raw_pass)["at"]), UTC)
        except (ValueError, KeyError, TypeError):
            pass
    stale = last_pass is None or now - last_pass > DISPATCHER_STALE
    return Banner(no_worker=not alive, dispatcher_stale=stale, dispatcher_last=last_pass)


def banner() -> Banner:
    """What the warning banner on every page says, checked at most every few seconds per
    process, so pages stay fast (and a Redis outage costs one short timeout, not one per
    page)."""
    cached = current_app.extensions.get("portal_ops_banner")
    if cached and time.monotonic() - cached[0] < BANNER_CACHE_SECONDS:
        return cached[1]
    state = _banner_now()
    current_app.extensions["portal_ops_banner"] = (time.monotonic(), state)
    return state
