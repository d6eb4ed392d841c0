"""ids are never reused: AUTOINCREMENT on SQLite

Revision ID: b3d9f2a6c8e1
Revises: a7c1e0f3b2d4
Create Date: 2026-11-29 18:10:00

SQLite hands the largest rowid out again once its row is deleted, so a new job took a
deleted job's id (and showed its history). AUTOINCREMENT is part of a table's CREATE
statement, so each table is rebuilt, the way SQLite documents it: foreign keys off (or
dropping the old table would cascade-delete the rows that refer to it), one transaction,
a foreign key check, then foreign keys on again. The table's triggers (jobs' status
counts) are made again on the new table, and ids the audit trail names (of rows deleted
before) are not handed out again either. PostgreSQL: nothing to do, its identity and
serial sequences never hand out an id twice.
"""
from alembic import op

# revision identifiers, used by Alembic.
revision = 'b3d9f2a6c8e1'
down_revision = 'a7c1e0f3b2d4'
branch_labels = None
depends_on = None

# Every table whose ids appear in URLs, logs, cursors, job configurations or the audit
# trail (job_status_counts is keyed by status and has no id).
TABLES = ("users", "authorizations", "authorization_versions", "jobs", "job_events",
          "job_drafts", "uploads", "streams", "messages", "audit_entries")


# Rows deleted before this migration left their ids in the audit trail: new rows start
# past those too, so they do not inherit a deleted row's history.
AUDITED = {"users": "user", "authorizations": "authorization", "jobs": "job"}


def _skip_audited_ids(raw, table: str, object_type: str) -> None:
    (used,) = raw.execute(
        "SELECT max(object_id) FROM audit_entries WHERE object_type = ?", (object_type,)
    ).fetchone()
    (current,) = raw.execute(
        "SELECT seq FROM sqlite_sequence WHERE name = ?", (table,)).fetchone() or (None,)
    if used is None or (current is not None and current >= used):
        return
    if current is None:
        raw.execute("INSERT INTO sqlite_sequence (name, seq) VALUES (?, ?)", (table, used))
    else:
        raw.execute("UPDATE sqlite_sequence SET seq = ? WHERE name = ?", (used, table))


def upgrade():
    _rebuild(autoincrement=True)


def downgrade():
    _rebuild(autoincrement=False)


def _rebuild(autoincrement: bool) -> None:
    bind = op.get_bind()
    if bind.dialect.name != "sqlite":
        return
    raw = bind.connection.dbapi_connection
    # PRAGMA foreign_keys does nothing inside a transaction: keep what the migrations
    # before this one did, then switch them off and open the rebuild's own transaction.
    raw.commit()
    raw.execute("PRAGMA foreign_keys=OFF")
    try:
        if raw.execute("PRAGMA foreign_keys").fetchone()[0]:
            raise RuntimeError("foreign keys could not be switched off; nothing was changed")
        raw.execute("BEGIN")
        for table in TABLES:
            triggers = [sql for (sql,) in raw.execute(
                "SELECT sql FROM sqlite_master WHERE type = 'trigger' AND tbl_name = ?",
                (table,))]
            with op.batch_alter_table(table, recreate="always",
                                      table_kwargs={"sqlite_autoincrement": autoincrement}):
                pass
            for sql in triggers:
                op.execute(sql)
            if autoincrement and table in AUDITED:
                _skip_audited_ids(raw, table, AUDITED[table])
        broken = raw.execute("PRAGMA foreign_key_check").fetchall()
        if broken:
            raise RuntimeError(f"rows refer to rows that do not exist: {broken[:5]}")
        raw.commit()
    except BaseException:
        raw.rollback()
        raise
    finally:
        raw.execute("PRAGMA foreign_keys=ON")
