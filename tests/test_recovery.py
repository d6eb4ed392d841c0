"""Crashes and outages with real processes: a worker killed with SIGKILL in the middle of
a unit, Redis losing every queue, and two dispatchers running at once."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable

import pytest
from redis import Redis
from rq import Queue
from sqlalchemy import func, select

from portal.extensions import db
from portal.jobs import create_job
from portal.models import Job, JobEvent, Message
from providers import get_job_type

# A short lease and quick passes, so that losses show within seconds.
FAST = {"PORTAL_LEASE_SECONDS": "3", "PORTAL_DISPATCH_INTERVAL": "1",
        "PORTAL_ENQUEUE_GRACE_SECONDS": "2"}


@pytest.fixture
def make_job(app, make_user):
    owner = make_user("operator", "owner@example.com")

    def make(**config) -> int:
        provider, kind = get_job_type("faults", "script")
        job = create_job(provider=provider, job_type=kind, authorization=None, name="f",
                         description="", config=config, created_by=owner,
                         retry_policy={"backoff_base_seconds": 1, "backoff_cap_seconds": 2})
        return job.id

    return make


def wait_for(check: Callable[[], object], timeout: float, what: str) -> float:
    """Poll until `check()` is truthy; returns the seconds it took."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        db.session.expire_all()
        db.session.rollback()
        if check():
            return time.monotonic() - started
        time.sleep(0.2)
    raise AssertionError(f"not within {timeout} s: {what}")


def job_row(job_id: int) -> Job:
    return db.session.get(Job, job_id)


def messages() -> int:
    return db.session.scalar(select(func.count()).select_from(Message))


def test_sigkill_mid_unit_is_recovered_without_loss_or_duplicates(make_job, spawn, tmp_path):
    mid_unit = tmp_path / "mid-unit"
    job_id = make_job(script=["slow:1", "ok"], units=2, rows_per_unit=5, slow_seconds=60,
                      mid_unit_file=str(mid_unit))
    worker = spawn("worker", **FAST)
    spawn("dispatcher", **FAST)
    # The unit says so once it has written its messages and is waiting to commit them.
    wait_for(mid_unit.exists, 30, "the worker to be inside the slow unit")
    assert mid_unit.read_text() == "0:0", "unit 0, first attempt"
    assert job_row(job_id).lease_owner, "the worker holds the lease while the unit runs"
    worker.send_signal(signal.SIGKILL)
    worker.wait(10)
    assert worker.returncode == -signal.SIGKILL, "killed mid-unit, not finished"
    took = wait_for(lambda: db.session.scalar(select(JobEvent).where(
        JobEvent.job_id == job_id, JobEvent.code == "worker_lost")), 60, "a worker-lost Error")
    # A lease of 3 s and a dispatcher pass every second: seen well before the timeout.
    assert took < 12, f"the lost worker was noticed after {took:.1f} s"
    lost = db.session.scalar(select(JobEvent).where(JobEvent.code == "worker_lost"))
    assert lost.kind == "error" and "Worker lost" in lost.message
    assert messages() == 0, "the killed worker's uncommitted batch did not land"
    assert job_row(job_id).status in ("sleeping", "running")
    spawn("worker", **FAST)
    wait_for(lambda: job_row(job_id).status == "completed", 60, "the job to complete")
    assert messages() == 10, "each message exactly once"
    keys = db.session.scalars(select(Message.dedupe_key)).all()
    assert len(set(keys)) == 10


def test_jobs_come_back_after_redis_loses_everything(make_job, spawn, redis_url):
    running = [make_job(units=1, key=f"job{n}") for n in range(3)]
    Redis.from_url(redis_url).flushall()
    started = time.monotonic()
    spawn("dispatcher", **FAST)
    spawn("worker", **FAST)
    wait_for(lambda: all(job_row(i).status == "completed" for i in running), 60,
             "every job to run after the flush")
    # Queued again after the 2 s grace by a dispatcher passing every second.
    took = time.monotonic() - started
    assert took < 20, f"the flushed jobs ran again only after {took:.1f} s"
    assert messages() == 3


def test_two_dispatchers_enqueue_each_job_once(make_job, spawn, redis_url):
    jobs = [make_job(units=1) for _ in range(20)]
    connection = Redis.from_url(redis_url)
    connection.flushall()  # every job now needs the dispatcher
    spawn("dispatcher", **FAST)
    spawn("dispatcher", **FAST)
    queue = Queue("default", connection=connection)

    def queued() -> list[str]:  # the dispatcher also queues its daily health check
        return sorted(i for i in queue.job_ids if i.startswith("portal-job-"))

    wait_for(lambda: len(queued()) >= 20, 30, "the jobs to be queued again")
    time.sleep(4)  # several more passes of both dispatchers
    assert queued() == sorted(f"portal-job-{i}-2" for i in jobs)
    assert all(job_row(i).dispatch_count == 2 for i in jobs)


def test_a_unit_longer_than_the_lease_keeps_it(make_job, spawn):
    """The worker renews the lease while a unit runs: a unit three leases long is not
    taken for a lost worker by the dispatcher checking every second."""
    job_id = make_job(script=["slow", "ok"], units=2, rows_per_unit=0, slow_seconds=9)

    def lost() -> int:
        return db.session.scalar(select(func.count()).select_from(JobEvent).where(
            JobEvent.job_id == job_id, JobEvent.code == "worker_lost"))

    spawn("worker", **FAST)
    spawn("dispatcher", **FAST)
    wait_for(lambda: job_row(job_id).status == "completed" or lost(), 60,
             "the job to complete (or be taken for lost)")
    assert lost() == 0
    assert job_row(job_id).status == "completed"
