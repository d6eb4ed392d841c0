"""engine_throughput_ratio: 1,000 no-op units through the whole job path (dispatcher ->
RQ -> runner bookkeeping -> events) against 1,000 no-op functions run by bare RQ with the
same worker class, in one process run. Prints `engine_throughput_ratio=<ours/bare>`
(throughput, so higher is better; the target is >= 0.5).

Both sides enqueue alike, as the portal does in production: the dispatcher puts every job
it won on its queue with one pipelined `enqueue_many` (portal/queues.py dispatch), so the
bare side prepares the same job data (same timeout, TTLs and description) and pipelines
one `enqueue_many` too. Ours is the product as it runs: a worker goes on with the jobs
waiting on its queue (workers/runner.py run_waiting), so its 1,000 units take fewer RQ
jobs than 1,000; every one of the 1,000 jobs is still claimed, run and finished with its
own events and run row (the script checks that all 1,000 completed).

Uses a private Redis from the bundled binary and a SQLite file in a temporary folder, or
BENCH_DATABASE_URL (its tables are dropped and rebuilt) when set.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

os.environ["PORTAL_TEST_PROVIDERS"] = "1"  # the no-op job type lives in the test provider
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from redis import Redis  # noqa: E402
from rq import Queue, SimpleWorker  # noqa: E402
from sqlalchemy import text  # noqa: E402

from bench.common import bench_app, free_port, make_jobs, size  # noqa: E402
from portal.extensions import db  # noqa: E402
from portal.models import User  # noqa: E402
from workers import redis_server  # noqa: E402
from workers.dispatcher import dispatch_once  # noqa: E402

UNITS = size("BENCH_UNITS", 1000, 100)
ROUNDS = size("BENCH_ROUNDS", 3, 1)


def noop() -> None:
    """What bare RQ runs."""


def drain(connection: Redis) -> None:
    queues = [Queue(name, connection=connection) for name in ("realtime", "default", "backfill")]
    SimpleWorker(queues, connection=connection).work(burst=True, logging_level="WARNING")


def ours(connection: Redis, owner_id: int) -> float:
    db.session.execute(text("DELETE FROM job_events"))
    db.session.execute(text("DELETE FROM jobs"))
    db.session.commit()
    make_jobs(owner_id, UNITS)
    connection.flushdb()
    started = time.perf_counter()
    enqueued = dispatch_once()
    drain(connection)
    elapsed = time.perf_counter() - started
    done = db.session.scalar(text("SELECT count(*) FROM jobs WHERE status = 'completed'"))
    assert enqueued == UNITS and done == UNITS, (enqueued, done)
    return elapsed


def bare(connection: Redis) -> float:
    connection.flushdb()
    queue = Queue("default", connection=connection)
    started = time.perf_counter()
    # What portal.queues.dispatch sends for each job, in one pipeline.
    datas = [Queue.prepare_data("bench_engine.noop", job_id=f"bare-{n}",
                                timeout=int(timedelta(hours=1).total_seconds()),
                                result_ttl=600, failure_ttl=int(timedelta(days=1).total_seconds()),
                                description=f"run bare job {n} (noop {n})")
             for n in range(UNITS)]
    with connection.pipeline() as pipe:
        queue.enqueue_many(datas, pipeline=pipe)
        pipe.execute()
    drain(connection)
    elapsed = time.perf_counter() - started
    assert queue.finished_job_registry.count == UNITS, queue.finished_job_registry.count
    return elapsed


def main() -> None:
    with tempfile.TemporaryDirectory() as folder:
        port = free_port()
        redis = subprocess.Popen(redis_server.command(Path(folder) / "redis", port=port,
                                                      persist=False),
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            app = bench_app(folder, REDIS_URL=f"redis://127.0.0.1:{port}/0")
            with app.app_context():
                owner = User(email="bench@example.com", role="admin", password_hash="-")
                db.session.add(owner)
                db.session.commit()
                owner_id = owner.id
                connection = Redis.from_url(app.config["REDIS_URL"])
                for _ in range(50):
                    try:
                        connection.ping()
                        break
                    except Exception:
                        time.sleep(0.1)
                ours_times, bare_times = [], []
                for _ in range(ROUNDS):  # interleaved, best of each
                    bare_times.append(bare(connection))
                    ours_times.append(ours(connection, owner_id))
                dialect = db.engine.dialect.name
            best_ours, best_bare = min(ours_times), min(bare_times)
            print(f"# {UNITS} units: ours {best_ours:.2f} s ({UNITS / best_ours:.0f}/s), "
                  f"bare RQ {best_bare:.2f} s ({UNITS / best_bare:.0f}/s), "
                  f"{dialect}", file=sys.stderr)
            print(f"engine_throughput_ratio={best_bare / best_ours:.3f}")
        finally:
            redis.terminate()
            redis.wait(10)


if __name__ == "__main__":
    main()
