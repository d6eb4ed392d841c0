"""What the benchmarks share: an app on a throwaway database with the current schema, and
the sizes they run at (full, or shrunk by BENCH_QUICK=1 for a smoke run)."""

from __future__ import annotations

import logging
import os
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from flask import Flask
from flask_migrate import upgrade
from sqlalchemy import text

from portal import create_app
from portal.extensions import db

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
