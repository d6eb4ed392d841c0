"""Crashes and outages with real processes: a worker killed with SIGKILL in the middle of
a unit, Redis losing every queue, and two dispatchers running at once."""

from __future__ import annotations

import io
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from redis import Redis
from redis.exceptions import RedisError
from rq import Queue
from sqlalchemy import func, select, text

from portal.extensions import db
from portal.jobs import create_job
from portal.models import Job, JobEvent, JobRun, Message
from portal.models.types import utcnow
from providers import get_job_type
from tests.conftest import free_port
from workers import redis_server

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


def _pid(owner: str | None) -> int | None:
    """The process id in a lease owner ("host:pid:nonce")."""
    return int(owner.split(":")[1]) if owner else None


def test_a_lost_worker_is_queued_again_within_a_lease_and_a_pass(app, make_user, spawn):
    """No backoff after a lost worker: with the default retry policy (30 s first) the job
    runs again once its lease (3 s) expired and a pass (1 s) found it."""
    provider, kind = get_job_type("faults", "script")
    job_id = create_job(provider=provider, job_type=kind, authorization=None, name="f",
                        description="", created_by=make_user("operator", "o@example.com"),
                        config={"script": ["slow:1"], "units": 2, "rows_per_unit": 5,
                                "slow_seconds": 60}).id
    workers = {spawn("worker", **FAST), spawn("worker", **FAST)}
    spawn("dispatcher", **FAST)
    wait_for(lambda: job_row(job_id).lease_owner and messages() == 0, 30,
             "a worker to start the slow unit")
    holder = _pid(job_row(job_id).lease_owner)
    (victim,) = [worker for worker in workers if worker.pid == holder]
    victim.send_signal(signal.SIGKILL)
    victim.wait(10)
    killed = utcnow()
    wait_for(lambda: job_row(job_id).status == "completed", 30, "the job to complete")
    lost_run, again = db.session.scalars(select(JobRun).where(JobRun.job_id == job_id)
                                         .order_by(JobRun.id)).all()
    assert lost_run.outcome == "lost" and again.outcome == "completed"
    took = (again.started_at - killed).total_seconds()
    assert took <= 3 + 1 + 2.5, f"claimed again {took:.1f} s after the kill: lease 3 s + " \
        "pass 1 s + margin"
    lost = db.session.scalar(select(JobEvent).where(JobEvent.code == "worker_lost"))
    assert "queued again now" in lost.message and "loss 1 of 5" in lost.message
    assert messages() == 10
    assert len(set(db.session.scalars(select(Message.dedupe_key)))) == 10


def test_a_job_that_kills_its_worker_every_time_fails_saying_so(make_job, spawn):
    job_id = make_job(script=["crash"], units=1, rows_per_unit=3)
    settings = {**FAST, "PORTAL_LOST_WORKER_LIMIT": "3"}
    spawn("dispatcher", **settings)
    workers = []
    deadline = time.monotonic() + 90
    while job_row(job_id).status != "failed" and time.monotonic() < deadline:
        if not workers or workers[-1].poll() is not None:
            workers.append(spawn("worker", **settings))  # the last one crashed: a new one
        time.sleep(0.3)
        db.session.expire_all()
        db.session.rollback()
    job = job_row(job_id)
    assert job.status == "failed"
    events = db.session.scalars(select(JobEvent).where(JobEvent.job_id == job_id)
                                .order_by(JobEvent.id)).all()
    assert [e.code for e in events if e.kind == "error"] == ["worker_lost"] * 3
    assert events[-1].kind == "failed"
    assert "its worker was lost 3 times in a row (the limit is 3)" in events[-1].message
    assert len([w for w in workers if w.returncode == -signal.SIGKILL]) == 3
    assert messages() == 0, "a crashed unit's batch never lands"


def _start_redis(data: Path, port: int) -> subprocess.Popen:
    process = subprocess.Popen(redis_server.command(data, port=port, persist=False),
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    client = Redis(port=port)
    deadline = time.monotonic() + 10
    while True:
        try:
            client.ping()
            return process
        except RedisError:
            assert time.monotonic() < deadline and process.poll() is None, "no redis-server"
            time.sleep(0.05)


def test_a_worker_told_to_stop_while_redis_is_down_exits_and_loses_nothing(
        make_job, spawn, tmp_path):
    """Redis goes away while a worker runs a long unit; SIGTERM: the worker abandons the
    unit after PORTAL_WORKER_STOP_SECONDS (2 s) and exits instead of waiting for Redis;
    once Redis is back the dispatcher takes the job back and it runs to the end."""
    port = free_port()
    redis = _start_redis(tmp_path / "redis", port)
    url = f"redis://127.0.0.1:{port}/0"
    try:
        job_id = make_job(script=["slow:1"], units=1, rows_per_unit=5, slow_seconds=60)
        settings = {**FAST, "REDIS_URL": url, "PORTAL_WORKER_STOP_SECONDS": "2"}
        worker = spawn("worker", **settings)  # its log: worker-0.log
        spawn("dispatcher", **settings)
        # The job is queued on the test's Redis: the dispatcher finds it on the private one.
        wait_for(lambda: job_row(job_id).lease_owner, 30, "the worker to start the unit")
        redis.terminate()
        redis.wait(10)
        time.sleep(0.5)
        worker.send_signal(signal.SIGTERM)
        asked = time.monotonic()
        worker.wait(15)
        took = time.monotonic() - asked
        log = (tmp_path / "worker-0.log").read_text()
        assert took < 5, f"the worker took {took:.1f} s to stop"
        assert worker.returncode == 0, log
        assert "did not finish within 2 s of the stop request; abandoning it" in log
        assert "unit abandoned as the worker stops" in log
        assert "stopped as asked; Redis does not answer" in log
        assert messages() == 0, "nothing of the abandoned unit landed"
        redis = _start_redis(tmp_path / "redis", port)
        spawn("worker", **settings)
        wait_for(lambda: job_row(job_id).status == "completed", 30,
                 "the dispatcher to take the job back and a worker to finish it")
        assert messages() == 5
        assert db.session.scalar(select(func.count()).select_from(JobEvent).where(
            JobEvent.code == "worker_lost")) == 1, "taken back once its lease expired"
        assert "Traceback" not in log
    finally:
        redis.terminate()
        redis.wait(10)


def test_an_idle_worker_told_to_stop_while_redis_is_down_exits(app, spawn, tmp_path):
    port = free_port()
    redis = _start_redis(tmp_path / "redis", port)
    worker = spawn("worker", REDIS_URL=f"redis://127.0.0.1:{port}/0")
    deadline = time.monotonic() + 30
    while "Listening on" not in (tmp_path / "worker-0.log").read_text():
        assert time.monotonic() < deadline, "the worker did not start"
        time.sleep(0.2)
    redis.terminate()
    redis.wait(10)
    time.sleep(1.5)  # it now retries Redis
    worker.send_signal(signal.SIGTERM)
    asked = time.monotonic()
    worker.wait(15)
    assert time.monotonic() - asked < 5
    log = (tmp_path / "worker-0.log").read_text()
    assert worker.returncode == 0 and "stopped as asked" in log and "Traceback" not in log


# --- PostgreSQL restarts: what a restart does to a pooled connection is what
# pg_terminate_backend does to it. SQLite has no server to lose.
OTHER_BACKENDS = ("FROM pg_stat_activity WHERE datname = current_database() "
                  "AND pid <> pg_backend_pid()")


@pytest.fixture
def postgresql(app):
    if db.engine.dialect.name != "postgresql":
        pytest.skip("PostgreSQL only (TEST_DATABASE_URL): SQLite has no server to restart")


def idle_in_transaction() -> int:
    count = db.session.scalar(text(
        f"SELECT count(*) {OTHER_BACKENDS} AND state LIKE 'idle in transaction%'"))
    db.session.rollback()
    return count


def terminate_other_backends() -> int:
    killed = db.session.scalar(text(
        f"SELECT count(pg_terminate_backend(pid)) {OTHER_BACKENDS} AND backend_type = "
        "'client backend'"))
    db.session.commit()
    return killed


def test_a_database_restart_costs_the_worker_nothing(postgresql, make_job, spawn, redis_url,
                                                    tmp_path):
    worker = spawn("worker", **FAST)  # no dispatcher: the test queues what runs
    first = make_job(units=1, rows_per_unit=2, key="first")
    wait_for(lambda: job_row(first).status == "completed", 30, "the first job to complete")
    health = Queue("default", connection=Redis.from_url(redis_url)).enqueue(
        "workers.runner.check_authorizations")
    wait_for(lambda: health.get_status() == "finished", 30, "the health check to run")
    time.sleep(0.5)
    assert idle_in_transaction() == 0, "every unit of background work ended its transaction"
    assert terminate_other_backends() >= 1, "the worker's pooled connection was killed"
    second = make_job(units=1, rows_per_unit=2, key="second")
    wait_for(lambda: job_row(second).status == "completed", 30, "the next job to complete")
    assert worker.poll() is None
    log = (tmp_path / "worker-0.log").read_text()
    assert "Worker lost" not in log and "Traceback" not in log, log
    assert db.session.scalar(select(func.count()).select_from(JobEvent).where(
        JobEvent.level == "error")) == 0
    assert messages() == 4


def test_a_database_lost_mid_unit_reads_as_database_unavailable(postgresql, make_job, spawn,
                                                                tmp_path):
    job_id = make_job(script=["slow"], units=1, rows_per_unit=5, slow_seconds=3)
    spawn("worker", **FAST)
    spawn("dispatcher", **FAST)
    wait_for(lambda: job_row(job_id).lease_owner, 30, "the worker to start the slow unit")
    time.sleep(0.5)  # its messages are written, not committed
    assert terminate_other_backends() >= 1
    wait_for(lambda: job_row(job_id).status == "completed", 30, "the job to complete")
    events = db.session.scalars(select(JobEvent).where(JobEvent.job_id == job_id,
                                                       JobEvent.level == "error")).all()
    assert [e.code for e in events] == ["database_unavailable"]
    assert events[0].message.startswith("Database unavailable: the database could not be "
                                        "reached")
    assert messages() == 5 and len(set(db.session.scalars(select(Message.dedupe_key)))) == 5
    assert job_row(job_id).error_count == 0
    log = (tmp_path / "worker-0.log").read_text()
    assert "database unavailable: the database could not be reached" in log
    assert "Worker lost" not in log and "unit of work raised" not in log


def test_redis_gone_as_a_job_ends_costs_no_traceback_and_the_worker_comes_back(
        make_job, spawn, tmp_path):
    """Found by scripts/drills.py (redis): Redis stopped while a unit ran, so RQ could not
    record the job's end. RQ's own loop logged that as an unhandled exception (a traceback);
    the worker now says so in a line and serves again once Redis is back."""
    port = free_port()
    redis = _start_redis(tmp_path / "redis", port)
    try:
        job_id = make_job(script=["slow"], units=1, rows_per_unit=5, slow_seconds=3)
        settings = {**FAST, "REDIS_URL": f"redis://127.0.0.1:{port}/0"}
        worker = spawn("worker", **settings)  # its log: worker-0.log
        spawn("dispatcher", **settings)
        wait_for(lambda: job_row(job_id).lease_owner, 30, "the worker to start the unit")
        redis.terminate()
        redis.wait(10)
        wait_for(lambda: job_row(job_id).status == "completed", 30, "the unit to end")
        log_path = tmp_path / "worker-0.log"
        wait_for(lambda: "could not record the end of" in log_path.read_text(), 10,
                 "the worker to find Redis gone")
        redis = _start_redis(tmp_path / "redis", port)
        second = make_job(units=1, rows_per_unit=3, key="second")
        wait_for(lambda: job_row(second).status == "completed", 30,
                 "the same worker to run the next job once Redis is back")
        assert worker.poll() is None, "the worker kept running"
        log = log_path.read_text()
        assert "lost Redis" in log and "Traceback" not in log, log
        assert "found an unhandled exception" not in log
        assert messages() == 8
    finally:
        redis.terminate()
        redis.wait(10)


def test_a_database_lost_mid_bulk_import_keeps_its_body_and_it_runs_again(
        postgresql, spawn, tmp_path):
    """Found by scripts/drills.py (postgres): a restart mid-import failed the import and
    deleted its body, so the rows not yet written were lost. Now the import keeps its body,
    stays running and the dispatcher's pass runs it again; nothing is written twice."""
    from datetime import UTC, datetime, timedelta
    from pathlib import Path

    from portal import bulk
    from portal.models import BulkImport

    rows = 20_000
    body = b"email,ts\n" + b"".join(b"u%d@example.com,1767323045\n" % n for n in range(rows))
    found = bulk.receive("big", io.BytesIO(body), content_type="text/csv",
                         timestamp_field="ts")
    spool = Path(found.spool_path)
    spawn("worker", "backfill", PORTAL_BULK_BATCH_SIZE="50")
    wait_for(lambda: messages() > 0, 30, "the import to write its first batches")
    db.session.commit()
    # Kill the worker's connection mid-batch, not between batches (there the pool's ping
    # would reconnect and the worker would never notice): hold the table so its next
    # batch waits inside its transaction, then end every other connection.
    db.session.execute(text("LOCK TABLE messages IN SHARE MODE"))
    deadline = time.monotonic() + 30  # wait_for would roll back, and so let go of the table
    while not db.session.scalar(text("SELECT count(*) FROM pg_locks WHERE NOT granted "
                                     "AND relation = 'messages'::regclass")):
        assert time.monotonic() < deadline, "the worker's next batch never waited"
        time.sleep(0.1)
    assert terminate_other_backends() >= 1  # commits, which lets go of the table
    log = tmp_path / "worker-backfill-0.log"
    wait_for(lambda: "bulk import 1: database unavailable" in log.read_text(), 30,
             "the worker to lose the database")
    upload = db.session.get(BulkImport, found.id)
    assert upload.status == "running"
    assert spool.exists() and upload.spool_path == str(spool), "its body is kept"
    later = datetime.now(UTC) + timedelta(minutes=2)
    wait_for(lambda: bulk.queue_lost_imports(later) == 1, 20, "the import to be queued again")
    wait_for(lambda: db.session.get(BulkImport, found.id).status == "completed", 60,
             "the import to run again to the end")
    keys = db.session.scalars(select(Message.dedupe_key)).all()
    assert len(keys) == len(set(keys)) == rows
    assert not spool.exists()
    assert "Traceback" not in log.read_text()
