"""Ids are never handed out twice: a new row never inherits a deleted row's URL, log or
audit trail (AUTOINCREMENT on SQLite, by migration b3d9f2a6c8e1; sequences on
PostgreSQL)."""

from __future__ import annotations

import pytest
from flask_migrate import downgrade, upgrade
from sqlalchemy import inspect, select, text

from portal.extensions import db
from portal.jobs import create_job, delete_job
from portal.models import AuditEntry, JobEvent
from providers import get_provider
from tests.conftest import _make_app

REVISION, BEFORE = "b3d9f2a6c8e1", "a7c1e0f3b2d4"
TABLES = ("users", "authorizations", "authorization_versions", "jobs", "job_events",
          "job_drafts", "uploads", "streams", "messages", "audit_entries")


def make_job(owner, name: str):
    provider = get_provider("faults")
    return create_job(provider=provider, job_type=provider.job_type("script"),
                      authorization=None, name=name, description="", config={},
                      created_by=owner, paused=True)


def test_a_new_job_never_gets_a_deleted_jobs_id_or_history(client, auth):
    admin = auth.login("admin")
    make_job(admin, "first")
    newest = make_job(admin, "deleted one")
    deleted_id, deleted_event = newest.id, max(db.session.scalars(select(JobEvent.id)))
    delete_job(newest, by=admin)
    job = make_job(admin, "new one")
    assert job.id > deleted_id
    assert min(db.session.scalars(select(JobEvent.id).where(JobEvent.job_id == job.id))) > (
        deleted_event)
    trail = db.session.scalars(select(AuditEntry.summary).where(
        AuditEntry.object_type == "job", AuditEntry.object_id == job.id)).all()
    assert trail == ["Created (faults/script), paused"], "none of the deleted job's trail"
    page = client.get(f"/jobs/{job.id}").get_data(as_text=True)
    assert "new one" in page and "deleted one" not in page


def test_every_table_with_ids_in_view_never_reuses_them(app):
    if db.engine.dialect.name != "sqlite":
        pytest.skip("PostgreSQL's sequences never reuse an id")
    with db.engine.connect() as connection:
        schema = dict(connection.execute(text(
            "SELECT name, sql FROM sqlite_master WHERE type = 'table'")).all())
    assert {name for name in TABLES if "AUTOINCREMENT" not in schema[name]} == set()


def fill(connection, rows: int = 3) -> None:
    """Rows in every table, made from what the schema requires (as a database in use)."""
    names = inspect(connection)
    for table in TABLES:
        columns = [c for c in names.get_columns(table) if c["name"] != "id" and
                   not c["nullable"] and c.get("default") is None]
        references = {fk["constrained_columns"][0] for fk in names.get_foreign_keys(table)}
        for n in range(1, rows + 1):
            values = {}
            for column in columns:
                kind = str(column["type"]).upper()
                values[column["name"]] = (
                    1 if column["name"] in references else n if "INT" in kind or "BOOL" in kind
                    else "{}" if "JSON" in kind else "2026-01-01 00:00:00" if "DATE" in kind
                    else f"{table}-{n}")
            if table == "jobs":
                values["status"] = "paused"
            connection.execute(text(
                f"INSERT INTO {table} ({', '.join(values)}) "
                f"VALUES ({', '.join(':' + name for name in values)})"), values)


def shape(connection) -> dict:
    names = inspect(connection)
    return {table: (
        [(c["name"], str(c["type"]), c["nullable"], c.get("default"))
         for c in names.get_columns(table)],
        # (AUTOINCREMENT goes on the id column itself, where the key's name cannot)
        names.get_pk_constraint(table)["constrained_columns"],
        sorted(names.get_foreign_keys(table), key=str),
        sorted(names.get_indexes(table), key=str),
        sorted(names.get_unique_constraints(table), key=str),
        connection.execute(text(f"SELECT * FROM {table} ORDER BY 1")).all(),
    ) for table in TABLES}


def test_the_migration_rebuilds_tables_with_data_and_keeps_everything(database_url,
                                                                      redis_url, tmp_path):
    if not database_url.startswith("sqlite"):
        pytest.skip("on PostgreSQL the migration does nothing")
    app = _make_app(f"sqlite:///{tmp_path / 'older.db'}", redis_url, tmp_path / "instance")
    with app.app_context():
        upgrade(revision=BEFORE)
        with db.engine.begin() as connection:
            fill(connection)
            before = shape(connection)
            counts = connection.execute(text("SELECT * FROM job_status_counts")).all()
            connection.execute(text("DELETE FROM jobs WHERE id = 3"))  # id 3 would come back
            connection.execute(text(
                "INSERT INTO audit_entries (at, actor, action, object_type, object_id, "
                "object_label, details, summary) VALUES ('2026-01-01 00:00:00', 'a', "
                "'deleted', 'job', 3, 'three', '{}', 'Deleted')"))
        upgrade(revision=REVISION)
        with db.engine.begin() as connection:
            assert connection.execute(text("PRAGMA foreign_keys")).scalar() == 1
            after = shape(connection)
            for table in TABLES:
                assert after[table][:5] == before[table][:5], f"{table}: schema kept"
                if table not in ("jobs", "job_events", "audit_entries"):
                    assert after[table][5] == before[table][5], f"{table}: rows kept"
            assert [row[0] for row in after["jobs"][5]] == [1, 2]
            assert 3 not in {row.job_id for row in connection.execute(
                text("SELECT job_id FROM job_events"))}, "the cascade ran before"
            assert connection.execute(text(
                "SELECT jobs FROM job_status_counts WHERE status = 'paused'")).scalar() == 2
            fill_one = {**dict(before["jobs"][5][0]._mapping), "status": "failed"}
            fill_one.pop("id")
            connection.execute(text(
                f"INSERT INTO jobs ({', '.join(fill_one)}) "
                f"VALUES ({', '.join(':' + name for name in fill_one)})"), fill_one)
            new_id = connection.execute(text("SELECT max(id) FROM jobs")).scalar()
            assert new_id == 4, "not 3: the audit trail still tells of deleted job 3"
            connection.execute(text(f"DELETE FROM jobs WHERE id = {new_id}"))
            connection.execute(text(
                f"INSERT INTO jobs ({', '.join(fill_one)}) "
                f"VALUES ({', '.join(':' + name for name in fill_one)})"), fill_one)
            assert connection.execute(text("SELECT max(id) FROM jobs")).scalar() == 5, (
                "the newest job deleted, the next one does not get its id")
            assert dict(connection.execute(text("SELECT status, jobs FROM job_status_counts"))
                        .all())["failed"] == 1, "the status-count triggers survived"
            connection.execute(text("DELETE FROM jobs WHERE id = 1"))
            assert not connection.execute(text(
                "SELECT 1 FROM job_events WHERE job_id = 1")).all(), "cascades still work"
        assert len(counts) == 5
        downgrade(revision=BEFORE)
        upgrade(revision=REVISION)
        db.engine.dispose()
