"""A text index over the job log's messages and codes, for the log search

Revision ID: c9e1f3a5b7d0
Revises: b8d0f2a4c6e8
Create Date: 2026-11-30 17:30:00

Searching a log for text read every event of the job that did not match, so a search for
text found nowhere in a log of a million events read a million rows (0.5 s on SQLite).
Now a trigram index answers "which events hold this text" (portal.logsearch uses it):

- SQLite: an FTS5 table with the trigram tokenizer (substring matching, case folded),
  contentless (it holds only the index: the text stays in job_events), with a third
  column naming the job ("[42]") so a search walks only that job's events. Triggers keep
  it on every insert, update and delete of an event (a job's deletion cascades to its
  events, which fires them too), in the same transaction as the event.
- PostgreSQL: a GIN index of pg_trgm's trigram operator class over message and code,
  which serves ILIKE '%text%'. pg_trgm ships with PostgreSQL and is a trusted extension,
  so the database's owner may create it.

A later migration that rebuilds job_events on SQLite (batch_alter_table copies the table)
drops these triggers with it and must create them again, as b3d9f2a6c8e1 does for others.

Where the database cannot have the index (an SQLite built without FTS5 or its trigram
tokenizer, or no right to create pg_trgm), the migration says so and goes on: searches
then read the log as before, only slower.
"""
import logging

from alembic import op
import sqlalchemy as sa

# revision identifiers, used by Alembic.
revision = 'c9e1f3a5b7d0'
down_revision = 'b8d0f2a4c6e8'
branch_labels = None
depends_on = None

log = logging.getLogger("alembic.runtime.migration")

# The values one event gives the index; a delete must hand back exactly these.
SQLITE_ROW = "{row}.id, {row}.message, {row}.code, '[' || {row}.job_id || ']'"
SQLITE = (
    """CREATE VIRTUAL TABLE job_events_search USING fts5(
      message, code, job, content='', columnsize=0, tokenize='trigram')""",
    f"""CREATE TRIGGER job_events_search_insert AFTER INSERT ON job_events BEGIN
      INSERT INTO job_events_search(rowid, message, code, job)
        VALUES ({SQLITE_ROW.format(row='NEW')});
    END""",
    f"""CREATE TRIGGER job_events_search_delete AFTER DELETE ON job_events BEGIN
      INSERT INTO job_events_search(job_events_search, rowid, message, code, job)
        VALUES ('delete', {SQLITE_ROW.format(row='OLD')});
    END""",
    f"""CREATE TRIGGER job_events_search_update AFTER UPDATE OF message, code, job_id
    ON job_events BEGIN
      INSERT INTO job_events_search(job_events_search, rowid, message, code, job)
        VALUES ('delete', {SQLITE_ROW.format(row='OLD')});
      INSERT INTO job_events_search(rowid, message, code, job)
        VALUES ({SQLITE_ROW.format(row='NEW')});
    END""",
    """INSERT INTO job_events_search(rowid, message, code, job)
      SELECT id, message, code, '[' || job_id || ']' FROM job_events""",
)


# GIN gathers new entries in a pending list that every search reads whole until the list
# is merged (when it outgrows this, or at a vacuum). The default of 4 MB cost a search
# about 1 ms after a busy minute; at 128 kB it costs a few pages, and writing 60,000
# events in commits of three took as long as with the default (10.7 s, 9.1 s without the
# index; with fastupdate off 15.2 s).
PENDING_LIST_KB = 128


def _sqlite_can_index(bind) -> bool:
    try:
        bind.exec_driver_sql("CREATE VIRTUAL TABLE temp.job_events_search_probe "
                             "USING fts5(x, tokenize='trigram')")
        bind.exec_driver_sql("DROP TABLE temp.job_events_search_probe")
        return True
    except sa.exc.OperationalError as error:
        log.warning("No text index for the job log (this SQLite lacks FTS5's trigram "
                    "tokenizer, SQLite 3.34 or later): log searches read the log. %s", error)
        return False


def _trigram_schema(bind) -> str | None:
    """The schema pg_trgm lives in, creating it where it is missing (None: it cannot be)."""
    query = ("SELECT n.nspname FROM pg_extension e JOIN pg_namespace n "
             "ON n.oid = e.extnamespace WHERE e.extname = 'pg_trgm'")
    schema = bind.exec_driver_sql(query).scalar()
    if schema is None:
        try:
            with bind.begin_nested():
                bind.exec_driver_sql("CREATE EXTENSION pg_trgm")
        except sa.exc.DBAPIError as error:
            log.warning("No text index for the job log (pg_trgm could not be created: a "
                        "superuser can run CREATE EXTENSION pg_trgm): log searches read "
                        "the log. %s", error.orig)
            return None
        schema = bind.exec_driver_sql(query).scalar()
    return schema


def upgrade():
    bind = op.get_bind()
    if bind.dialect.name == 'postgresql':
        schema = _trigram_schema(bind)
        if schema is not None:
            ops = f'"{schema}".gin_trgm_ops'
            op.execute(f"CREATE INDEX ix_job_events_text ON job_events "
                       f"USING gin (message {ops}, code {ops}) "
                       f"WITH (gin_pending_list_limit = {PENDING_LIST_KB})")
    elif _sqlite_can_index(bind):
        for statement in SQLITE:
            op.execute(statement)


def downgrade():
    bind = op.get_bind()
    if bind.dialect.name == 'postgresql':
        op.execute("DROP INDEX IF EXISTS ix_job_events_text")
    else:
        for name in ('job_events_search_update', 'job_events_search_delete',
                     'job_events_search_insert'):
            op.execute(f"DROP TRIGGER IF EXISTS {name}")
        op.execute("DROP TABLE IF EXISTS job_events_search")
