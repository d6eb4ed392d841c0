"""Redis and the RQ queues. The database row is the truth; RQ only carries "run job N"."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta

from flask import current_app
from redis import Redis
from redis.exceptions import RedisError
from rq import Queue, Worker
from rq.job import Job as RQJob
from rq.job import JobStatus
from rq.scheduler import RQScheduler
from sqlalchemy import Row, tuple_, update

from portal.extensions import db
from portal.models import Job
from portal.models.types import utcnow

QUEUE_NAMES = ("realtime", "default", "backfill")
RUN_FUNCTION = "workers.runner.run_job"
DISPATCH_CHUNK = 500  # (id, dispatch number) pairs per compare-and-set statement
RQ_ID_PREFIX = "portal-job-"
_PENDING = {JobStatus.QUEUED, JobStatus.STARTED, JobStatus.DEFERRED, JobStatus.SCHEDULED}


def redis_connection() -> Redis:
    """One Redis client per app, made on first use."""
    client = current_app.extensions.get("portal_redis")
    if client is None:
        client = Redis.from_url(current_app.config["REDIS_URL"])
        current_app.extensions["portal_redis"] = client
    return client


def queue_due_retries() -> int:
    """Put every task whose retry is due (RQ's scheduled registries: a failed task enqueued
    with a Retry, such as a collect write) back on its queue; how many. RQ leaves this to a
    worker started with its scheduler; here the one active dispatcher does it each pass."""
    connection = redis_connection()
    due = sum(len(Queue(name, connection=connection).scheduled_job_registry
                  .get_jobs_to_schedule()) for name in QUEUE_NAMES)
    if due:
        scheduler = RQScheduler(QUEUE_NAMES, connection=connection)
        scheduler.prepare_registries(QUEUE_NAMES)
        scheduler.enqueue_scheduled_jobs()
    return due


def rq_job_id(job_id: int, dispatch: int) -> str:
    """A deterministic RQ id: the same dispatch of the same job never gets two ids."""
    return f"{RQ_ID_PREFIX}{job_id}-{dispatch}"


# Takes the next runs of portal jobs (up to ARGV[3]) off the head of a queue, where a
# worker's next dequeue would find them, and deletes their RQ jobs, in one step: no other
# worker can dequeue them too, and nothing is left saying they wait (pending_ids then finds
# none). It stops at the first task of another kind (left in place), and takes nothing while
# a queue ahead (KEYS[2:]) has work, so a worker never runs a backfill before real time.
# ARGV: the RQ job id prefix, the prefix of RQ job keys, the count. Returns {id, fields...}
# per job taken.
_TAKE = """
for i = 2, #KEYS do
  if redis.call('LLEN', KEYS[i]) > 0 then return {} end
end
local taken = {}
for n = 1, tonumber(ARGV[3]) do
  local id = redis.call('LPOP', KEYS[1])
  if not id then break end
  if string.sub(id, 1, string.len(ARGV[1])) ~= ARGV[1] then
    redis.call('LPUSH', KEYS[1], id)
    break
  end
  local key = ARGV[2] .. id
  local fields = redis.call('HGETALL', key)
  redis.call('DEL', key)
  table.insert(fields, 1, id)
  table.insert(taken, fields)
end
return taken
"""


def take_waiting(queue_name: str, count: int = 1) -> list[tuple[int, bool]]:
    """The next portal jobs (up to `count`) waiting on `queue_name`, each as (job id,
    force), taken off the queue for the caller to run now; none when the queue is empty,
    its head is another kind of task, or a queue ahead of it has work. A worker that just
    ran a short job goes on with the next ones this way instead of ending its RQ job and
    dequeuing the next: most of the cost of a one-unit job is RQ's own bookkeeping around
    it (see bench_engine.py)."""
    connection = redis_connection()
    ahead = QUEUE_NAMES[:QUEUE_NAMES.index(queue_name)] if queue_name in QUEUE_NAMES else ()
    keys = [Queue(name, connection=connection).key for name in (queue_name, *ahead)]
    taken = []
    for found in connection.eval(_TAKE, len(keys), *keys, RQ_ID_PREFIX,
                                 RQJob.redis_job_namespace_prefix, count):
        rq_id, fields = found[0].decode(), found[1:]
        rq_job = RQJob(rq_id, connection=connection)
        rq_job.restore(dict(zip(fields[::2], fields[1::2], strict=True)))
        job_id, force = rq_job.args
        taken.append((int(job_id), bool(force)))
    return taken


def pending_ids(jobs: Sequence[Job | Row]) -> set[int]:
    """Ids of the jobs whose latest dispatch still waits in, or runs from, a queue."""
    dispatched = [job for job in jobs if job.dispatch_count]
    found = RQJob.fetch_many([rq_job_id(job.id, job.dispatch_count) for job in dispatched],
                             connection=redis_connection())
    return {job.id for job, rq_job in zip(dispatched, found, strict=True)
            if rq_job is not None and rq_job.get_status(refresh=False) in _PENDING}


def dispatch(jobs: Sequence[Job | Row], *, force: bool = False) -> int:
    """Reserve the next dispatch number of each job with a compare-and-set on its row,
    commit, then put the jobs that were won on their queues in one round trip.

    Two dispatchers racing for the same job: only one gets the number, so the job is
    enqueued once. `force` (run now, resume) lets the run ignore the job's quiet window.
    Returns how many jobs were enqueued."""
    now = utcnow()
    names = {job.id: (job.queue, job.name) for job in jobs}
    wanted = [(job.id, job.dispatch_count) for job in jobs]
    won = []
    for start in range(0, len(wanted), DISPATCH_CHUNK):  # one statement per chunk
        chunk = wanted[start:start + DISPATCH_CHUNK]
        won += db.session.execute(
            update(Job)
            .where(tuple_(Job.id, Job.dispatch_count).in_(chunk))
            .values(dispatch_count=Job.dispatch_count + 1, enqueued_at=now)
            .returning(Job.id, Job.dispatch_count)
            .execution_options(synchronize_session=False)
        ).all()
    db.session.commit()
    by_queue: dict[str, list] = {}
    for job_id, dispatch_number in sorted(won):
        queue_name, name = names[job_id]
        by_queue.setdefault(queue_name, []).append(Queue.prepare_data(
            RUN_FUNCTION, args=(job_id, force), job_id=rq_job_id(job_id, dispatch_number),
            timeout=int(timedelta(hours=1).total_seconds()), result_ttl=600,
            failure_ttl=int(timedelta(days=1).total_seconds()),
            description=f"run portal job {job_id} ({name[:60]})",
        ))
    connection = redis_connection()
    with connection.pipeline() as pipe:
        for queue_name, datas in by_queue.items():
            Queue(queue_name, connection=connection).enqueue_many(datas, pipeline=pipe)
        pipe.execute()
    return len(won)


def enqueue(job: Job, *, force: bool = False) -> bool:
    """Dispatch one job; False when another process dispatched it first."""
    return dispatch([job], force=force) == 1


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
