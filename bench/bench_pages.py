"""list_scaling_ratio and logs_scaling_ratio: how the pages slow down as data grows.

- list: the job list's first page (default view, as a signed-in admin) with 1,000 jobs,
  then with 100,000 jobs;
- logs: a job summary's logs (the logs box the summary shows and filters) of a job with
  1,000 events against a job with 1,000,000 events, requested in turn; the whole summary
  page is timed too (printed to stderr).

Each is the median of repeated requests through the real app (Flask test client, a real
database), in one process run. Prints `name=<large/small>`; the target is <= 1.5.
Uses SQLite in a temporary folder, or BENCH_DATABASE_URL (its schema is rebuilt).
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import insert, select  # noqa: E402

from bench.common import bench_app  # noqa: E402
from portal.extensions import db  # noqa: E402
from portal.models import Job, JobEvent, User  # noqa: E402

REPEATS = int(os.environ.get("BENCH_REPEATS", 15))
PASSWORD = "bench-password-123"
START = datetime(2026, 1, 1, tzinfo=UTC)
KINDS = ("synced", "synced", "error", "sleeping")


def median_times(client, *urls: str) -> list[float]:
    """The median time of each URL, requested in turn (a, b, a, b, ...), so a moment of
    noise on the machine weighs on all of them alike."""
    times: dict[str, list[float]] = {url: [] for url in urls}
    for url in urls:
        client.get(url)  # warm caches and the statement cache
    for _ in range(REPEATS):
        for url in urls:
            started = time.perf_counter()
            response = client.get(url)
            response.get_data()
            times[url].append(time.perf_counter() - started)
            assert response.status_code == 200, (url, response.status_code)
    return [statistics.median(times[url]) for url in urls]


def add_jobs(owner_id: int, first: int, count: int) -> None:
    statuses = ("running", "sleeping", "completed", "failed", "paused")
    for start in range(first, first + count, 10_000):
        rows = [{"name": f"job {n}", "provider": "files", "job_type": "import_file",
                 "kind": "import", "queue": "default", "status": statuses[n % 5],
                 "created_by_id": owner_id, "config": {}, "schedule": {"kind": "once"},
                 "retry_policy": {}, "cursor": {}, "description": "",
                 "status_changed_at": START, "updated_at": START,
                 "created_at": START + timedelta(seconds=n)}
                for n in range(start, min(start + 10_000, first + count))]
        db.session.execute(insert(Job), rows)
        db.session.commit()


def add_events(job_id: int, first: int, count: int) -> None:
    for start in range(first, first + count, 20_000):
        rows = [{"job_id": job_id, "at": START + timedelta(seconds=n), "kind": KINDS[n % 4],
                 "level": "error" if n % 4 == 2 else "info", "code": "",
                 "message": f"unit {n}: wrote a batch", "context": {"added": 2, "removed": 0,
                                                                     "omitted": 1}}
                for n in range(start, min(start + 20_000, first + count))]
        db.session.execute(insert(JobEvent), rows)
        db.session.commit()


def main() -> None:
    with tempfile.TemporaryDirectory() as folder:
        app = bench_app(folder, WTF_CSRF_ENABLED=False,
                        REDIS_URL="redis://127.0.0.1:1/0")  # these pages read no queue
        with app.app_context():
            admin = User(email="bench@example.com", role="admin", name="Bench")
            admin.set_password(PASSWORD)
            db.session.add(admin)
            db.session.commit()
            client = app.test_client()
            client.post("/login", data={"email": admin.email, "password": PASSWORD})

            add_jobs(admin.id, 0, 1_000)
            (list_small,) = median_times(client, "/jobs")
            add_jobs(admin.id, 1_000, 99_000)
            (list_large,) = median_times(client, "/jobs")

            # Two settled jobs (nothing polls or waits on a queue), one with 1,000 events
            # and one with 1,000,000, measured in turn.
            small_job, large_job = db.session.scalars(
                select(Job.id).where(Job.status == "completed").order_by(Job.id).limit(2))
            add_events(small_job, 0, 1_000)
            add_events(large_job, 0, 1_000_000)
            logs_small, logs_large, summary_small, summary_large = median_times(
                client, f"/jobs/{small_job}/logs/view", f"/jobs/{large_job}/logs/view",
                f"/jobs/{small_job}", f"/jobs/{large_job}")
            dialect = db.engine.dialect.name
        print(f"# {dialect}: list {list_small * 1000:.1f} ms (1k jobs) -> "
              f"{list_large * 1000:.1f} ms (100k); logs {logs_small * 1000:.1f} ms (1k events) "
              f"-> {logs_large * 1000:.1f} ms (1M); whole summary "
              f"{summary_small * 1000:.1f} -> {summary_large * 1000:.1f} ms "
              f"(ratio {summary_large / summary_small:.2f})", file=sys.stderr)
        print(f"list_scaling_ratio={list_large / list_small:.3f}")
        print(f"logs_scaling_ratio={logs_large / logs_small:.3f}")


if __name__ == "__main__":
    main()
