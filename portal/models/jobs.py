"""Jobs and their log of events."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import BigInteger, ForeignKey, Index, String, Text, false, func
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import Mapped, mapped_column, relationship
from sqlalchemy.sql.expression import ColumnElement

from portal.extensions import db
from portal.models.types import NEVER_REUSE_IDS, JSONDict, UTCDateTime, utcnow
from portal.models.users import User
from portal.models.vault import Authorization


# What the list sorts a job that never ran (or has no next run) by: the epoch, as stored
# text, written into the SQL itself so the expression indexes below and the list's ORDER
# BY are the same expression (a bound parameter would not match an index on SQLite).
class _NoRun(ColumnElement):
    """The epoch as a constant of the column's type, written as each database writes it
    back when it describes the index (so migrations and models compare equal)."""

    type = UTCDateTime()
    inherit_cache = True


@compiles(_NoRun)
def _no_run_text(element, compiler, **kw) -> str:
    return "'1970-01-01 00:00:00.000000'"  # as SQLite stores UTCDateTime


@compiles(_NoRun, "postgresql")
def _no_run_timestamp(element, compiler, **kw) -> str:
    return "'1970-01-01 00:00:00'::timestamp without time zone"


NO_RUN = _NoRun()


class Job(db.Model):
    __tablename__ = "jobs"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text, default="")
    provider: Mapped[str] = mapped_column(String(64), index=True)
    job_type: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(20))  # import / export / enrichment
    queue: Mapped[str] = mapped_column(String(32), default="default")
    authorization_id: Mapped[int | None] = mapped_column(ForeignKey("authorizations.id"))
    config: Mapped[dict[str, Any]] = mapped_column(JSONDict, default=dict)
    schedule: Mapped[dict[str, Any]] = mapped_column(JSONDict, default=lambda: {"kind": "once"})
    retry_policy: Mapped[dict[str, Any]] = mapped_column(JSONDict, default=dict)
    status: Mapped[str] = mapped_column(String(20))
    cursor: Mapped[dict[str, Any]] = mapped_column(JSONDict, default=dict)
    next_run_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # Dispatch bookkeeping: each dispatch bumps the counter, which names the RQ job.
    dispatch_count: Mapped[int] = mapped_column(default=0)
    enqueued_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # A worker holds the job while its lease runs; nobody else may run it meanwhile.
    lease_owner: Mapped[str | None] = mapped_column(String(120))
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    error_streak_started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    error_count: Mapped[int] = mapped_column(default=0)
    # Running totals of the counts in the job's events (kept by lifecycle.record), so the
    # summary never sums a log of a million events.
    added_total: Mapped[int] = mapped_column(default=0, server_default="0")
    removed_total: Mapped[int] = mapped_column(default=0, server_default="0")
    omitted_total: Mapped[int] = mapped_column(default=0, server_default="0")
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_run_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    status_changed_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    terminal_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # The wizard draft it was created from (deleted then; its id is never handed out again).
    draft_id: Mapped[int | None] = mapped_column(index=True)
    # Kept by a person: the purge of settled jobs passes it over.
    keep: Mapped[bool] = mapped_column(default=False, server_default=false())
    # The label of its authorization ("" for none), here so the list sorts by it through
    # an index of this table. Database triggers keep it (migration b8d0f2a4c6e8): set on
    # every insert and change of authorization_id, and when an authorization is renamed,
    # whatever writes the row; nothing in Python sets it.
    authorization_label: Mapped[str] = mapped_column(String(200), default="",
                                                     server_default="")

    authorization: Mapped[Authorization | None] = relationship()
    created_by: Mapped[User | None] = relationship(foreign_keys=[created_by_id])
    updated_by: Mapped[User | None] = relationship(foreign_keys=[updated_by_id])

    # Status first serves every query by status; error_count after it makes the Retrying
    # tab's count (sleeping, with errors) read only the retrying jobs.
    # The list's sorts read their first page in index order: one (sort column, id) index
    # each (portal.jobs._sort_expression); next/last run sort NULLs as the epoch, so their
    # indexes are on that same expression.
    __table_args__ = (Index("ix_jobs_created_at_id", "created_at", "id"),
                      Index("ix_jobs_status_error_count", "status", "error_count"),
                      Index("ix_jobs_name_id", "name", "id"),
                      Index("ix_jobs_provider_id", "provider", "id"),
                      Index("ix_jobs_kind_id", "kind", "id"),
                      Index("ix_jobs_status_id", "status", "id"),
                      Index("ix_jobs_authorization_label_id", "authorization_label", "id"),
                      Index("ix_jobs_last_run_id", func.coalesce(last_run_at, NO_RUN), id),
                      Index("ix_jobs_next_run_id", func.coalesce(next_run_at, NO_RUN), id),
                      NEVER_REUSE_IDS)


class JobEvent(db.Model):
    """One line of a job's log. `context` holds the added/removed/omitted counts."""

    __tablename__ = "job_events"

    id: Mapped[int] = mapped_column(primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    kind: Mapped[str] = mapped_column(String(20))
    level: Mapped[str] = mapped_column(String(10), default="info")
    code: Mapped[str] = mapped_column(String(64), default="")
    message: Mapped[str] = mapped_column(Text, default="")
    context: Mapped[dict[str, Any]] = mapped_column(JSONDict, default=dict)
    # The run it was written in (None for events outside a run: created, paused, ...).
    run_id: Mapped[int | None] = mapped_column(index=True)
    # Set instead of run_id for a run not yet written, so one flush writes both.
    run: Mapped[JobRun | None] = relationship(
        primaryjoin="foreign(JobEvent.run_id) == JobRun.id")

    __table_args__ = (Index("ix_job_events_job_id_id", "job_id", "id"),
                      Index("ix_job_events_job_id_at", "job_id", "at"), NEVER_REUSE_IDS)


class JobMetricHour(db.Model):
    """The added/removed/omitted counts of a job's events in one UTC hour (`hour` is its
    start), kept by portal.metrics as events are written: the metrics chart reads these
    instead of every event of its frame."""

    __tablename__ = "job_metric_hours"

    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"),
                                        primary_key=True)
    hour: Mapped[datetime] = mapped_column(UTCDateTime, primary_key=True)
    added: Mapped[int] = mapped_column(BigInteger, default=0)
    removed: Mapped[int] = mapped_column(BigInteger, default=0)
    omitted: Mapped[int] = mapped_column(BigInteger, default=0)


class JobRun(db.Model):
    """One run of a job: from a worker's claim until the job stops running (sleeping,
    completed, error, failed, paused, lost). A hand-back to the queue after a time slice
    is the same run. Consecutive idle runs are folded into one row: `runs` counts them."""

    __tablename__ = "job_runs"

    id: Mapped[int] = mapped_column(primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    started_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    units: Mapped[int] = mapped_column(default=0)
    added: Mapped[int] = mapped_column(default=0)
    removed: Mapped[int] = mapped_column(default=0)
    omitted: Mapped[int] = mapped_column(default=0)
    # None while under way; then one of lifecycle.RunOutcome.
    outcome: Mapped[str | None] = mapped_column(String(20))
    error_code: Mapped[str] = mapped_column(String(64), default="")
    error: Mapped[str] = mapped_column(Text, default="")
    idle: Mapped[bool] = mapped_column(default=False)
    runs: Mapped[int] = mapped_column(default=1)
    # Progress of work with a known size (an import: rows done of the file's total).
    done: Mapped[int | None] = mapped_column()
    total: Mapped[int | None] = mapped_column()
    first_done: Mapped[int | None] = mapped_column()  # `done` when this run first said it

    __table_args__ = (Index("ix_job_runs_job_id_id", "job_id", "id"), NEVER_REUSE_IDS)

    @property
    def duration(self) -> timedelta | None:
        return self.ended_at - self.started_at if self.ended_at else None


class Draft(db.Model):
    """A job being set up in the wizard: kept on the server so a reload, a browser back or
    an interrupted session loses nothing. It becomes a job only on Create."""

    __tablename__ = "job_drafts"
    __table_args__ = NEVER_REUSE_IDS

    id: Mapped[int] = mapped_column(primary_key=True)
    owner_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"),
                                          index=True)
    provider: Mapped[str] = mapped_column(String(64))
    job_type: Mapped[str] = mapped_column(String(64))
    authorization_id: Mapped[int | None] = mapped_column(
        ForeignKey("authorizations.id", ondelete="SET NULL"))
    config: Mapped[dict[str, Any]] = mapped_column(JSONDict, default=dict)
    name: Mapped[str] = mapped_column(String(200), default="")
    description: Mapped[str] = mapped_column(Text, default="")
    schedule: Mapped[dict[str, Any]] = mapped_column(JSONDict, default=dict)
    retry_policy: Mapped[dict[str, Any]] = mapped_column(JSONDict, default=dict)
    create_paused: Mapped[bool] = mapped_column(default=False)
    step: Mapped[str] = mapped_column(String(20), default="configure")
    # An edit of an existing job ("Edit configuration" on its summary): the job, and the
    # configuration version the edit started from (Save refuses if another edit came
    # first). No foreign key, as Job.draft_id: an edit of a deleted job finds nothing.
    job_id: Mapped[int | None] = mapped_column(index=True)
    base_version: Mapped[int | None] = mapped_column()
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    owner: Mapped[User] = relationship()
    authorization: Mapped[Authorization | None] = relationship()


class JobConfigVersion(db.Model):
    """One change of a job's configuration, schedule or authorization (version 1: its
    creation): who, when, and what changed, before -> after, field by field. A secret
    field is only named as changed: neither its value nor its ciphertext is kept here."""

    __tablename__ = "job_config_versions"

    id: Mapped[int] = mapped_column(primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    version: Mapped[int] = mapped_column()
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    summary: Mapped[str] = mapped_column(String(200), default="")
    # [{"field", "label", "before", "after"} | {"field", "label", "secret": true}]
    changes: Mapped[list[dict[str, Any]]] = mapped_column(JSONDict, default=list)

    by: Mapped[User | None] = relationship()

    __table_args__ = (Index("ix_job_config_versions_job_id_version", "job_id", "version",
                            unique=True), NEVER_REUSE_IDS)


class JobStatusCount(db.Model):
    """How many jobs have each status, kept by database triggers on `jobs` (see the
    migration that creates them), so the job list's status counts cost the same with a
    hundred jobs or a million: every insert, delete and status change of a job row, from
    any code path, adjusts them in the same transaction."""

    __tablename__ = "job_status_counts"

    status: Mapped[str] = mapped_column(String(20), primary_key=True)
    jobs: Mapped[int] = mapped_column(default=0)
