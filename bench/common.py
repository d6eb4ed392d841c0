"""What the benchmarks share: an app on a throwaway database with the current schema."""

from __future__ import annotations

import os

from flask import Flask
from flask_migrate import upgrade
from sqlalchemy import text

from portal import create_app
from portal.extensions import db


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
