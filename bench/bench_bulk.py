"""Bulk imports and real-time collect (portal/bulk.py). Prints:

- `bulk_import_ratio=`: rows per second of a bulk CSV import (receive + the backfill task:
  checking pass, writing pass, dedupe; the profiles it queues afterwards are timed apart
  and logged) against a bare SQLAlchemy Core bulk insert of the
  same rows into the same database in the same run (the bare side reads the same CSV file
  with the csv module, parses each timestamp and inserts batches of the same size, one
  transaction each). Higher is better; the target is >= 0.5. On SQLite always, and also
  on PostgreSQL (`bulk_import_ratio_postgresql=`) when BENCH_DATABASE_URL names one (its
  public schema is dropped and rebuilt).
- `bulk_memory_ratio=`: peak RSS of a child process importing BENCH_BULK_ROWS rows against
  one importing a tenth of them. The target is <= 1.2.
- `realtime_isolation_ratio=`: p95 latency from collect() to the message being in its
  stream, during a BENCH_BULK_ROWS-row backfill (writing its rows, then building profiles
  from them) against idle, with separate worker
  processes for the realtime and backfill queues (the backfill one niced, as the Procfile
  runs it). The target is <= 2.

BENCH_BULK_ROWS (default 1,000,000; 20,000 with BENCH_QUICK=1) sets the size. Comment
lines (#) go to stderr.
"""

from __future__ import annotations

import csv
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from redis import Redis  # noqa: E402
from rq import Queue, SimpleWorker  # noqa: E402
from sqlalchemy import create_engine, delete, insert, text  # noqa: E402

from bench.common import bench_app, log, postgres_maintenance, size, start_redis  # noqa: E402
from portal import bulk  # noqa: E402
from portal.extensions import db  # noqa: E402
from portal.models import Message, Stream  # noqa: E402
from portal.models.types import utcnow  # noqa: E402

ROWS = size("BENCH_BULK_ROWS", 1_000_000, 20_000)
VAULT_KEYS = "bench:" + "A" * 43 + "="
IDLE_SAMPLES = size("BENCH_IDLE_SAMPLES", 200, 50)


def make_csv(path: Path, rows: int) -> None:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    with open(path, "w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(["email", "name", "plan", "score", "ts"])
        for n in range(rows):
            writer.writerow([f"user{n}@example.com", f"User {n}", ("free", "pro", "team")[n % 3],
                             n % 1000, (start + timedelta(seconds=n)).isoformat()])


def app_for(folder: Path, url: str, redis_url: str):
    return bench_app(str(folder), SQLALCHEMY_DATABASE_URI=url, REDIS_URL=redis_url)


def import_ours(path: Path, stream: str, redis_url: str) -> float:
    started = time.perf_counter()
    with open(path, "rb") as body:
        import_id = bulk.receive(stream, body, content_type="text/csv",
                                 timestamp_field="ts").id
    connection = Redis.from_url(redis_url)
    worker = SimpleWorker([Queue("backfill", connection=connection)], connection=connection)
    worker.work(burst=True, max_jobs=1, logging_level="WARNING")  # the import task only
    elapsed = time.perf_counter() - started
    status = bulk.import_status(import_id)
    assert status["status"] == "completed", status
    # Then the profiles, which the import queued for afterwards (not part of the ratio).
    started = time.perf_counter()
    worker.work(burst=True, logging_level="WARNING")
    db.session.expire_all()
    status = bulk.import_status(import_id)
    assert status["profiles"]["status"] == "built", status
    log(f"profiles from {ROWS:,} rows built {time.perf_counter() - started:.1f} s after "
        "the import completed")
    return elapsed


def import_bare(path: Path, stream: str, batch_size: int) -> float:
    started = time.perf_counter()
    stream_row = Stream(name=stream)
    db.session.add(stream_row)
    db.session.commit()
    now = utcnow()
    with open(path, newline="", encoding="utf-8") as source:
        reader = csv.DictReader(source)
        batch = []
        for line, row in enumerate(reader, start=2):
            batch.append({"stream_id": stream_row.id, "dedupe_key": f"bare:{line}",
                          "event_time": datetime.fromisoformat(row["ts"]), "ingested_at": now,
                          "source": "bare", "payload": row})
            if len(batch) >= batch_size:
                db.session.execute(insert(Message), batch)
                db.session.commit()
                batch = []
        if batch:
            db.session.execute(insert(Message), batch)
            db.session.commit()
    return time.perf_counter() - started


def import_ratio(folder: Path, url: str, path: Path, redis_url: str) -> tuple[float, str]:
    app = app_for(folder, url, redis_url)
    with app.app_context():
        dialect = db.engine.dialect.name
        bare = import_bare(path, "bare", bulk.batch_size())
        # The same starting point for ours: the bare rows go before it runs.
        db.session.execute(delete(Message))
        db.session.commit()
        postgres_maintenance("VACUUM ANALYZE messages")
        ours = import_ours(path, "ours", redis_url)
        db.session.remove()
        db.engine.dispose()
    log(f"{ROWS:,} rows on {dialect}: ours {ours:.1f} s ({ROWS / ours:,.0f} rows/s), bare "
        f"Core insert {bare:.1f} s ({ROWS / bare:,.0f} rows/s)")
    return bare / ours, dialect


def memory_child(path: str, folder: str, redis_url: str) -> None:
    """In a child process: import `path` into a fresh SQLite database; print peak RSS (KiB)."""
    app = app_for(Path(folder), f"sqlite:///{folder}/memory.db", redis_url)
    with app.app_context():
        with open(path, "rb") as body:
            import_id = bulk.receive("memory", body, content_type="text/csv",
                                     timestamp_field="ts").id
        assert bulk.process_import(import_id) == "completed"
    print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)


def peak_rss(path: Path, folder: Path, redis_url: str) -> int:
    folder.mkdir(mode=0o700)
    done = subprocess.run([sys.executable, __file__, "--memory-child", str(path), str(folder),
                           redis_url], capture_output=True, text=True, check=True, cwd=ROOT)
    return int(done.stdout.strip().splitlines()[-1])


def percentile(values: list[float], share: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[int(share * 100) - 1]


def isolation(folder: Path, url: str, path: Path, redis_url: str) -> float:
    app = app_for(folder, url, redis_url)
    env = {**os.environ, "DATABASE_URL": url, "REDIS_URL": redis_url, "SECRET_KEY": "bench",
           "PORTAL_VAULT_KEYS": VAULT_KEYS, "PORTAL_INSTANCE_PATH": str(folder / "workers")}
    # As the Procfile runs them: the backfill worker at a lower CPU priority (nice).
    workers = [subprocess.Popen([*prefix, sys.executable, "-m", "workers", "worker", queue],
                                cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
               for queue, prefix in (("realtime", []), ("backfill", ["nice", "-n", "10"]))]
    engine = create_engine(url)
    try:
        with app.app_context(), engine.connect() as watch:
            def latency() -> float:
                started = time.perf_counter()
                key = bulk.collect("live", {"email": "rt@example.com"})["id"] + ":0"
                while True:
                    found = watch.execute(text(
                        "SELECT 1 FROM messages JOIN streams ON streams.id = messages.stream_id"
                        " WHERE streams.name = 'live' AND messages.dedupe_key = :key"),
                        {"key": key}).first()
                    watch.rollback()
                    if found:
                        return time.perf_counter() - started
                    if time.perf_counter() - started > 60:
                        raise RuntimeError("a collected message did not arrive in 60 s")
                    time.sleep(0.0005)

            for _ in range(20):  # warm up: workers started, stream made
                latency()
            idle = [latency() for _ in range(IDLE_SAMPLES)]
            with open(path, "rb") as body:
                import_id = bulk.receive("backfill", body, content_type="text/csv",
                                         timestamp_field="ts").id
            during, writing, building = [], [], []
            started = time.perf_counter()
            while True:
                db.session.rollback()
                status = bulk.import_status(import_id)
                if status["status"] in ("completed", "failed") and status["profiles"][
                        "status"] in ("built", "none"):
                    break  # the rows written and the profiles built from them
                sample = latency()
                during.append(sample)
                if status["status"] == "running" and status["rows"]["written"]:
                    writing.append(sample)
                elif status["profiles"]["status"] == "building":
                    building.append(sample)
                time.sleep(0.01)
            assert status["status"] == "completed", status
            took = time.perf_counter() - started
            db.session.remove()
            db.engine.dispose()
    finally:
        engine.dispose()
        for worker in workers:
            worker.terminate()
        for worker in workers:
            worker.wait(10)
    p95_idle, p95_during = percentile(idle, 0.95), percentile(during, 0.95)
    log(f"real time on {engine.dialect.name}: median idle "
        f"{statistics.median(idle) * 1000:.1f} ms, during {statistics.median(during) * 1000:.1f}"
        f" ms; p95 idle {p95_idle * 1000:.1f} ms ({len(idle)} samples), during a "
        f"{ROWS:,}-row backfill ({took:.0f} s) "
        f"{p95_during * 1000:.1f} ms ({len(during)} samples); while it wrote rows "
        f"{percentile(writing, 0.95) * 1000 if len(writing) > 1 else float('nan'):.1f} ms "
        f"({len(writing)} samples), while it built profiles "
        f"{percentile(building, 0.95) * 1000 if len(building) > 1 else float('nan'):.1f} ms "
        f"({len(building)} samples)")
    return p95_during / p95_idle


def main() -> None:
    with tempfile.TemporaryDirectory() as name:
        folder = Path(name)
        redis, redis_url = start_redis(folder)
        try:
            big, small = folder / "big.csv", folder / "small.csv"
            make_csv(big, ROWS)
            make_csv(small, ROWS // 10)
            log(f"{ROWS:,} rows: {big.stat().st_size / 1e6:.0f} MB of CSV")

            databases = [f"sqlite:///{folder}/bulk.db"]
            if os.environ.get("BENCH_DATABASE_URL"):
                databases.append(os.environ["BENCH_DATABASE_URL"])
            for number, url in enumerate(databases):
                (folder / f"ratio{number}").mkdir(mode=0o700)
                ratio, dialect = import_ratio(folder / f"ratio{number}", url, big, redis_url)
                suffix = "" if dialect == "sqlite" else f"_{dialect}"
                print(f"bulk_import_ratio{suffix}={ratio:.3f}", flush=True)

            small_rss = peak_rss(small, folder / "memory-small", redis_url)
            big_rss = peak_rss(big, folder / "memory-big", redis_url)
            log(f"peak RSS: {small_rss / 1024:.0f} MiB for {ROWS // 10:,} rows, "
                f"{big_rss / 1024:.0f} MiB for {ROWS:,}")
            print(f"bulk_memory_ratio={big_rss / small_rss:.3f}", flush=True)

            for number, url in enumerate(databases):
                Redis.from_url(redis_url).flushdb()
                (folder / f"iso{number}").mkdir(mode=0o700)
                if url.startswith("sqlite"):
                    url = f"sqlite:///{folder}/iso{number}/iso.db"
                ratio = isolation(folder / f"iso{number}", url, big, redis_url)
                suffix = "" if url.startswith("sqlite") else "_postgresql"
                print(f"realtime_isolation_ratio{suffix}={ratio:.3f}", flush=True)
        finally:
            redis.terminate()
            redis.wait(10)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--memory-child"]:
        memory_child(*sys.argv[2:5])
    else:
        main()
