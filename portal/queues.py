"""Redis and the RQ queues. The database row is the truth; RQ only carries "run job N"."""

from __future__ import annotations

from datetime import timedelta

from flask import current_app
from redis import Redis
from redis.exceptions import RedisError
from rq import Queue, Worker
from rq.exceptions import NoSuchJobError
from rq.job import Job as RQJob
from rq.job import JobStatus
from sqlalchemy import update

from portal.extensions import db
from portal.models import Job
from portal.models.types import utcnow

QUEUE_NAMES = ("realtime", "default", "backfill")
RUN_FUNCTION = "workers.runner.run_job"
_PENDING = {JobStatus.QUEUED, JobStatus.STARTED, JobStatus.DEFERRED, JobStatus.SCHEDULED}


def redis_connection() -> Redis:
    """One Redis client per app, made on first use."""
    client = current_app.extensions.get("portal_redis")
    if client is None:
        client = Redis.from_url(current_app.config["REDIS_URL"])
        current_app.extensions["portal_redis"] = client
    return client


def rq_job_id(job_id: int, dispatch: int) -> str:
    """A deterministic RQ id: the same dispatch of the same job never gets two ids."""
    return f"portal-job-{job_id}-{dispatch}"


def is_pending(job: Job) -> bool:
    """Whether this job's latest dispatch still waits in, or runs from, a queue."""
    if job.dispatch_count == 0:
        return False
    try:
        rq_job = RQJob.fetch(rq_job_id(job.id, job.dispatch_count), connection=redis_connection())
    except NoSuchJobError:
        return False
    return rq_job.get_status(refresh=False) in _PENDING


def claim_dispatch(job: Job) -> int | None:
    """Reserve the next dispatch number with a compare-and-set on the row, and commit.

    Two dispatchers racing for the same job: only one gets a number, so the job is
    enqueued once. Returns None when another process won.
    """
    now = utcnow()
    result = db.session.execute(
        update(Job)
        .where(Job.id == job.id, Job.dispatch_count == job.dispatch_count)
        .values(dispatch_count=Job.dispatch_count + 1, enqueued_at=now)
    )
    db.session.commit()
    if result.rowcount != 1:
        return None
    db.session.refresh(job)
    return job.dispatch_count


def enqueue(job: Job, *, force: bool = False) -> bool:
    """Commit a dispatch for the job, then put it on its queue. False if another won.

    `force` (run now, resume) lets the run ignore the job's quiet window."""
    dispatch = claim_dispatch(job)
    if dispatch is None:
        return False
    queue = Queue(job.queue, connection=redis_connection())
    queue.enqueue(
        RUN_FUNCTION,
        job.id,
        force,
        job_id=rq_job_id(job.id, dispatch),
        job_timeout=int(timedelta(hours=1).total_seconds()),
        result_ttl=600,
        failure_ttl=int(timedelta(days=1).total_seconds()),
        description=f"run portal job {job.id} ({job.name[:60]})",
    )
    return True


def waiting_reason(job: Job) -> str:
    """Why a running job that no worker holds has not started, in words for the summary."""
    try:
        workers = Worker.count(queue=Queue(job.queue, connection=redis_connection()))
    except RedisError:
        return ("Waiting: the queue (Redis) does not answer. The job runs once it is back; "
                "nothing is lost meanwhile.")
    if workers == 0:
        return (f"Waiting for a worker: none is serving the “{job.queue}” queue. Start one "
                f"with `python -m workers worker {job.queue}`.")
    return f"Queued: waiting for one of {workers} worker(s) on the “{job.queue}” queue."
