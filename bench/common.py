"""What the benchmarks share: an app on a throwaway database with the current schema, a
private Redis, a free port and the no-op jobs of the engine benchmarks."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from pathlib import Path

from flask import Flask
from flask_migrate import upgrade
from redis import Redis
from redis.exceptions import RedisError
from sqlalchemy import insert, text

from portal import create_app
from portal.extensions import db
from portal.models import Job
from portal.models.types import utcnow
from workers import redis_server


def bench_app(folder: str, **settings) -> Flask:
    """The app on SQLite in `folder`, or on BENCH_DATABASE_URL (its public schema is
    dropped and rebuilt), migrated to the current schema. Call inside nothing; returns
    the app (push its context yourself)."""
    url = os.environ.get("BENCH_DATABASE_URL") or f"sqlite:///{folder}/bench.db"
    app = create_app({"INSTANCE_PATH": folder, "SQLALCHEMY_DATABASE_URI": url,
                      "SECRET_KEY": "bench", "PORTAL_VAULT_KEYS": "bench:" + "A" * 43 + "=",
                      **settings})
    with app.app_context():
        if db.engine.dialect.name == "postgresql":
            with db.engine.begin() as connection:
                connection.execute(text("DROP SCHEMA public CASCADE; CREATE SCHEMA public"))
        upgrade()
    return app


def free_port() -> int:
    """A TCP port free on loopback right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def make_jobs(owner_id: int, units: int = 1000) -> None:
    """`units` running jobs of the test-only faults provider's no-op job type, each one
    unit long, inserted at once (call inside the app context)."""
    now = utcnow()
    db.session.execute(insert(Job), [
        {"name": f"noop {n}", "provider": "faults", "job_type": "noop", "kind": "import",
         "queue": "default", "status": "running", "created_by_id": owner_id, "config": {},
         "schedule": {"kind": "once"}, "retry_policy": {}, "cursor": {}, "description": "",
         "status_changed_at": now, "created_at": now, "updated_at": now}
        for n in range(units)
    ])
    db.session.commit()


def start_redis(folder: Path) -> tuple[subprocess.Popen, str]:
    """A private Redis from the bundled binary on a free loopback port, answering;
    returns the process (terminate it yourself) and its URL."""
    port = free_port()
    process = subprocess.Popen(redis_server.command(folder / "redis", port=port, persist=False),
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"redis://127.0.0.1:{port}/0"
    for _ in range(100):
        try:
            Redis.from_url(url).ping()
            break
        except RedisError:
            time.sleep(0.1)
    return process, url
