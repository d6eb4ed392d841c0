"""What the benchmarks share: an app on a throwaway database with the current schema, a
private Redis, a free port, the no-op jobs of the engine benchmarks, and the sizes they
run at (full, or shrunk by BENCH_QUICK=1 for a smoke run)."""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

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

# BENCH_QUICK=1: every size shrinks so the whole `make bench` is a smoke run of a few
# minutes. The ratios it prints prove the scripts work, not the product's speed.
QUICK = os.environ.get("BENCH_QUICK", "").lower() in ("1", "true", "yes")


def size(variable: str, full: int, quick: int) -> int:
    """A size: the environment variable when set, else `quick` in quick mode, else `full`."""
    return int(os.environ.get(variable) or (quick if QUICK else full))


def _with_schema(url: str, schema: str) -> str:
    """A PostgreSQL URL whose connections use `schema` (search_path) instead of public."""
    parts = urlsplit(url)
    query = [(key, value) for key, value in parse_qsl(parts.query) if key != "options"]
    query.append(("options", f"-csearch_path={schema}"))
    return urlunsplit(parts._replace(query=urlencode(query)))


def bench_app(folder: str, name: str = "bench", **settings) -> Flask:
    """The app on SQLite in `folder` (the file `<name>.db`), or on BENCH_DATABASE_URL,
    migrated to the current schema. On PostgreSQL the default name uses the public schema
    and any other name a schema of that name (so one run can hold two databases); either
    is dropped and rebuilt. Call inside nothing; returns the app (push its context
    yourself)."""
    url = os.environ.get("BENCH_DATABASE_URL")
    schema = "public" if name == "bench" else f"bench_{name}"
    if url and schema != "public":
        url = _with_schema(url, schema)
    url = url or f"sqlite:///{folder}/{name}.db"
    app = create_app({"INSTANCE_PATH": folder, "SQLALCHEMY_DATABASE_URI": url,
                      "SECRET_KEY": "bench", "PORTAL_VAULT_KEYS": "bench:" + "A" * 43 + "=",
                      **settings})
    with app.app_context():
        if db.engine.dialect.name == "postgresql":
            with db.engine.begin() as connection:
                connection.execute(text(f"DROP SCHEMA IF EXISTS {schema} CASCADE; "
                                        f"CREATE SCHEMA {schema}"))
        logging.disable(logging.INFO)  # Alembic's step-by-step lines are not results
        try:
            upgrade()
        finally:
            logging.disable(logging.NOTSET)
    return app


def postgres_maintenance(command: str) -> None:
    """Run VACUUM or ANALYZE (which refuse a transaction) on the app's database when it is
    PostgreSQL; nothing on SQLite. Call inside the app context."""
    if db.engine.dialect.name == "postgresql":
        with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text(command))


def log(message: str) -> None:
    """A comment line of a benchmark's output (stderr; stdout holds the name=value lines)."""
    print(f"# {message}", file=sys.stderr, flush=True)


def free_port() -> int:
    """A TCP port free on loopback right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def make_jobs(owner_id: int, units: int) -> None:
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
