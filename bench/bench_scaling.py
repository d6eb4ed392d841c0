"""Scaling across worker processes on one machine (docs/SCALING.md). Prints:

- `worker_scaling_ratio=`: units per second of the real job path (dispatcher -> RQ ->
  runner -> lifecycle, the faults provider's no-op units) with 2 worker processes
  against 1, in one run. 2.0 would be perfect scaling; 1.0 means the second worker added
  nothing.
- `write_scaling_ratio=`: the same for a job path that writes data: files-provider
  imports (4 jobs, BENCH_SCALING_ROWS rows in all, batches of PORTAL_IMPORT_BATCH_SIZE,
  messages and profiles), as rows per second.
- With BENCH_DATABASE_URL (PostgreSQL; its public schema is dropped and rebuilt) the same
  two again, suffixed `_postgresql`.

Comment lines (# on stderr) give the absolute rates, the Redis commands per unit (INFO
commandstats, reset before each measurement) and the database statements per unit
(a SQLAlchemy before_cursor_execute counter in each worker process and in the
dispatcher), and one dispatcher pass over BENCH_SCALING_DUE due jobs (default
"10000"; "10000,100000" for more). Workers are real `python -m workers worker`
processes (started through this file so that they count their statements) against a
private Redis on loopback.
"""

from __future__ import annotations

import atexit
import csv
import io
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

os.environ["PORTAL_TEST_PROVIDERS"] = "1"  # the no-op job type lives in the test provider
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from redis import Redis  # noqa: E402
from rq import Worker  # noqa: E402
from sqlalchemy import event, insert, text  # noqa: E402
from sqlalchemy.engine import Engine  # noqa: E402

from bench.common import QUICK, bench_app, log, make_jobs, size, start_redis  # noqa: E402
from portal.datastore import store_upload  # noqa: E402
from portal.extensions import db  # noqa: E402
from portal.models import Job, User  # noqa: E402
from portal.models.types import utcnow  # noqa: E402
from workers.dispatcher import dispatch_once  # noqa: E402

UNITS = size("BENCH_SCALING_UNITS", 1000, 100)
ROWS = size("BENCH_SCALING_ROWS", 40_000, 4000)
IMPORT_JOBS = 4
ROUNDS = size("BENCH_ROUNDS", 2, 1)
DUE = [int(n) for n in os.environ.get("BENCH_SCALING_DUE", "1000" if QUICK else "10000")
       .split(",") if n.strip()]
VAULT_KEYS = "bench:" + "A" * 43 + "="
TIMEOUT = 300  # seconds one measurement may take before the run gives up

STATEMENTS = Counter()


@event.listens_for(Engine, "before_cursor_execute")
def _count_statement(conn, cursor, statement, parameters, context, executemany) -> None:
    STATEMENTS["all"] += 1
    verb = statement.lstrip().split(None, 1)[0].upper() if statement.strip() else "?"
    STATEMENTS[verb] += 1


def worker_child(count_file: str, queues: list[str]) -> int:
    """In a worker process: run the portal's worker; write its statement counts at exit."""
    atexit.register(lambda: Path(count_file).write_text(json.dumps(STATEMENTS)))
    from workers.__main__ import main as workers_main

    return workers_main(["worker", *queues])


def start_workers(count: int, folder: Path, url: str, redis_url: str,
                  queues: list[str]) -> list[tuple[subprocess.Popen, Path]]:
    env = {**os.environ, "DATABASE_URL": url, "REDIS_URL": redis_url, "SECRET_KEY": "bench",
           "PORTAL_VAULT_KEYS": VAULT_KEYS, "PORTAL_INSTANCE_PATH": str(folder)}
    started = []
    for n in range(count):
        counts = folder / f"statements-{n}.json"
        process = subprocess.Popen(
            [sys.executable, __file__, "--worker", str(counts), *queues], cwd=ROOT, env=env,
            stdout=subprocess.DEVNULL, stderr=open(folder / f"worker-{n}.log", "w"))
        started.append((process, counts))
    connection = Redis.from_url(redis_url)
    deadline = time.monotonic() + 60
    while Worker.count(connection=connection) < count:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{count} worker(s) did not start in 60 s; see {folder}")
        time.sleep(0.1)
    return started


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far (Linux /proc; 0 elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def stop_workers(workers: list[tuple[subprocess.Popen, Path]]) -> Counter:
    """Stop the workers; their statement counts, and their CPU time under "cpu_ms"."""
    cpu = sum(cpu_seconds(process.pid) for process, _ in workers)
    for process, _ in workers:
        process.terminate()
    total = Counter({"cpu_ms": 0})
    for process, counts in workers:
        process.wait(30)
        total.update(json.loads(counts.read_text()))
    total["cpu_ms"] = round(cpu * 1000)
    return total


def make_csv(rows: int) -> bytes:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["email", "name", "plan", "score", "ts"])
    for n in range(rows):
        writer.writerow([f"user{n}@example.com", f"User {n}", ("free", "pro", "team")[n % 3],
                         n % 1000, (start + timedelta(seconds=n)).isoformat()])
    return out.getvalue().encode()


def make_imports(owner: User, rows: int) -> None:
    """IMPORT_JOBS running files-provider import jobs, each of rows / IMPORT_JOBS rows of
    its own file into its own stream."""
    now = utcnow()
    jobs = []
    for n in range(IMPORT_JOBS):
        data = make_csv(rows // IMPORT_JOBS).replace(b"@example", f"@j{n}.example".encode())
        upload, _ = store_upload(f"scale{n}.csv", data, by=owner)
        db.session.flush()
        jobs.append({"name": f"import {n}", "provider": "files", "job_type": "import_file",
                     "kind": "import", "queue": "backfill", "status": "running",
                     "created_by_id": owner.id, "schedule": {"kind": "once"},
                     "config": {"upload_id": upload.id, "stream": f"scale{n}",
                                "timestamp_field": "ts", "delimiter": ","},
                     "retry_policy": {}, "cursor": {}, "description": "",
                     "status_changed_at": now, "created_at": now, "updated_at": now})
    db.session.execute(insert(Job), jobs)
    db.session.commit()


def measure(folder: Path, url: str, redis_url: str, workers: int, path: str) -> dict:
    """One measurement on a fresh database: `workers` worker processes run every job of
    `path` ("noop" or "write"); returns what it took."""
    folder.mkdir(mode=0o700)
    app = bench_app(str(folder), SQLALCHEMY_DATABASE_URI=url, REDIS_URL=redis_url)
    connection = Redis.from_url(redis_url)
    connection.flushdb()
    with app.app_context():
        owner = User(email="bench@example.com", role="admin", password_hash="-")
        db.session.add(owner)
        db.session.commit()
        if path == "noop":
            make_jobs(owner.id, UNITS)
            queues, jobs = ["default"], UNITS
        else:
            make_imports(owner, ROWS)
            queues, jobs = ["backfill"], IMPORT_JOBS
        dialect = db.engine.dialect.name
        db.session.remove()
        running = start_workers(workers, folder, url, redis_url, queues)
        try:
            cpu_before = sum(cpu_seconds(process.pid) for process, _ in running)
            load_before = os.getloadavg()[0]
            connection.config_resetstat()
            before = STATEMENTS["all"]
            started = time.perf_counter()
            enqueued = dispatch_once()
            dispatcher_statements = STATEMENTS["all"] - before
            while True:
                done = db.session.scalar(text(
                    "SELECT count(*) FROM jobs WHERE status IN ('completed', 'failed')"))
                db.session.rollback()
                if done >= jobs:
                    break
                if time.perf_counter() - started > TIMEOUT:
                    raise RuntimeError(f"{path}: {done} of {jobs} jobs done in {TIMEOUT} s")
                time.sleep(0.05)
            elapsed = time.perf_counter() - started
            commands = {name.removeprefix("cmdstat_"): stats["calls"]
                        for name, stats in connection.info("commandstats").items()}
        finally:
            statements = stop_workers(running)
        failed = db.session.scalar(text("SELECT count(*) FROM jobs WHERE status = 'failed'"))
        batch = app.config["PORTAL_IMPORT_BATCH_SIZE"]
        units = UNITS if path == "noop" else IMPORT_JOBS * -(-(ROWS // IMPORT_JOBS) // batch)
        messages = db.session.scalar(text("SELECT count(*) FROM messages"))
        db.session.remove()
        db.engine.dispose()
    assert enqueued == jobs and not failed, (path, enqueued, failed)
    if path == "write":
        assert messages == ROWS // IMPORT_JOBS * IMPORT_JOBS, messages
    # The INFO / CONFIG calls are the benchmark's own, not the portal's.
    for own in ("info", "config|resetstat", "config"):
        commands.pop(own, None)
    return {"dialect": dialect, "elapsed": elapsed, "units": units, "rows": messages,
            "redis": sum(commands.values()), "redis_by_command": commands,
            "statements": statements["all"] + dispatcher_statements,
            "statements_by_verb": statements, "workers": workers,
            "worker_cpu": statements.pop("cpu_ms") / 1000 - cpu_before,
            "load": (load_before, os.getloadavg()[0])}


def describe(result: dict, path: str) -> str:
    units = result["units"] or 1
    top = ", ".join(f"{name} {calls / units:.1f}" for name, calls in
                    sorted(result["redis_by_command"].items(), key=lambda kv: -kv[1])[:6])
    verbs = ", ".join(f"{verb} {count / units:.1f}" for verb, count in
                      result["statements_by_verb"].most_common() if verb != "all")
    rate = (f"{result['rows'] / result['elapsed']:,.0f} rows/s, " if path == "write" else "")
    return (f"{path} on {result['dialect']}, {result['workers']} worker(s): "
            f"{result['units']} units in {result['elapsed']:.2f} s "
            f"({result['units'] / result['elapsed']:.0f} units/s, {rate.rstrip(', ')}"
            f"{', ' if rate else ''}"
            f"{result['rows']:,} messages); per unit: {result['redis'] / units:.1f} Redis "
            f"commands ({top}), {result['statements'] / units:.1f} DB statements ({verbs}), "
            f"{result['worker_cpu'] / units * 1000:.1f} ms of worker CPU; load average "
            f"{result['load'][0]:.1f} before, {result['load'][1]:.1f} after")


def dispatcher_pass(folder: Path, url: str, redis_url: str, due: int) -> None:
    """One dispatcher pass over `due` sleeping jobs whose time has come: wake them all and
    put them on the queue."""
    folder.mkdir(mode=0o700)
    app = bench_app(str(folder), SQLALCHEMY_DATABASE_URI=url, REDIS_URL=redis_url)
    connection = Redis.from_url(redis_url)
    connection.flushdb()
    with app.app_context():
        owner = User(email="bench@example.com", role="admin", password_hash="-")
        db.session.add(owner)
        db.session.commit()
        now = utcnow()
        for first in range(0, due, 10_000):
            db.session.execute(insert(Job), [
                {"name": f"due {n}", "provider": "faults", "job_type": "noop",
                 "kind": "import", "queue": "default", "status": "sleeping",
                 "next_run_at": now - timedelta(seconds=1), "created_by_id": owner.id,
                 "config": {}, "schedule": {"kind": "interval", "every_minutes": 60},
                 "retry_policy": {}, "cursor": {}, "description": "",
                 "status_changed_at": now, "created_at": now, "updated_at": now}
                for n in range(first, min(due, first + 10_000))])
            db.session.commit()
        dialect = db.engine.dialect.name
        connection.config_resetstat()
        before = STATEMENTS["all"]
        started = time.perf_counter()
        enqueued = dispatch_once()
        elapsed = time.perf_counter() - started
        statements = STATEMENTS["all"] - before
        commands = sum(stats["calls"] for name, stats in connection.info("commandstats").items()
                       if name not in ("cmdstat_info", "cmdstat_config|resetstat"))
        queued = connection.llen("rq:queue:default")
        db.session.remove()
        db.engine.dispose()
    assert enqueued == due == queued, (enqueued, due, queued)
    log(f"dispatcher pass on {dialect} over {due:,} due jobs: {elapsed:.2f} s "
        f"({due / elapsed:,.0f} jobs/s), {statements:,} DB statements, {commands:,} Redis "
        "commands")


def main() -> None:
    logging.getLogger("alembic").setLevel(logging.WARNING)  # a migration per measurement
    with tempfile.TemporaryDirectory() as name:
        folder = Path(name)
        redis, redis_url = start_redis(folder)
        try:
            databases = ["sqlite"]
            if os.environ.get("BENCH_DATABASE_URL"):
                databases.append(os.environ["BENCH_DATABASE_URL"])
            run = 0
            for database in databases:
                for path in ("noop", "write"):
                    best: dict[int, dict] = {}
                    for _ in range(ROUNDS):  # interleaved, best of each
                        for workers in (1, 2):
                            run += 1
                            place = folder / f"run{run}"
                            url = (f"sqlite:///{place}/bench.db" if database == "sqlite"
                                   else database)
                            result = measure(place, url, redis_url, workers, path)
                            log(describe(result, path))
                            if workers not in best or result["elapsed"] < best[workers][
                                    "elapsed"]:
                                best[workers] = result
                    ratio = best[1]["elapsed"] / best[2]["elapsed"]
                    suffix = "" if best[1]["dialect"] == "sqlite" else "_" + best[1]["dialect"]
                    name = "worker_scaling_ratio" if path == "noop" else "write_scaling_ratio"
                    print(f"{name}{suffix}={ratio:.3f}", flush=True)
                for due in DUE:
                    run += 1
                    place = folder / f"run{run}"
                    url = f"sqlite:///{place}/bench.db" if database == "sqlite" else database
                    dispatcher_pass(place, url, redis_url, due)
        finally:
            redis.terminate()
            redis.wait(10)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--worker"]:
        sys.exit(worker_child(sys.argv[2], sys.argv[3:]))
    else:
        main()
