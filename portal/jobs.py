"""Creating jobs and finding them; no request objects here."""

from __future__ import annotations

import base64
import hashlib
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from functools import cache
from typing import Any

from redis.exceptions import RedisError
from sqlalchemy import (
    JSON,
    Connection,
    Select,
    Text,
    bindparam,
    cast,
    delete,
    func,
    literal,
    select,
    tuple_,
)

from portal import audit, configsecrets, jobconfig, lifecycle, schedule, vault
from portal.extensions import db
from portal.lifecycle import SETTLED, Event, Status
from portal.logsearch import find_events
from portal.models import (
    Authorization,
    Draft,
    Job,
    JobEvent,
    JobRun,
    JobStatusCount,
    User,
)
from portal.models.jobs import NO_RUN
from portal.models.types import UTCDateTime, utcnow
from portal.params import parse_int
from portal.queues import enqueue
from portal.schemaform import (
    destination_paths,
    holder_of,
    moved_destinations,
    name_errors,
    secret_slots,
    validate,
)
from portal.textsearch import holds
from providers.base import KINDS, JobType, Provider

log = logging.getLogger(__name__)


def create_job(
    *,
    provider: Provider,
    job_type: JobType,
    authorization: Authorization | None,
    name: str,
    description: str,
    config: dict[str, Any],
    created_by: User,
    schedule: dict[str, Any] | None = None,
    retry_policy: dict[str, Any] | None = None,
    paused: bool = False,
    draft: Draft | None = None,
) -> Job:
    """Insert and commit the job, then put it on its queue (never the other way round).
    Secret fields of the configuration are stored sealed by the Vault.

    `paused`: created Paused, to be resumed by a person. `draft`: the wizard draft it came
    from, deleted in the same transaction."""
    now = utcnow()
    job = Job(
        name=name,
        description=description,
        provider=provider.key,
        job_type=job_type.key,
        kind=job_type.kind,
        queue=job_type.queue,
        authorization_id=authorization.id if authorization else None,
        config=configsecrets.seal_config(job_type.config_schema, config),
        schedule=schedule or {"kind": "once"},
        retry_policy=retry_policy or {},
        status=Status.PAUSED if paused else Status.RUNNING,
        status_changed_at=now,
        created_by_id=created_by.id,
        created_at=now,
        updated_by_id=created_by.id,
        updated_at=now,
        draft_id=draft.id if draft is not None else None,
    )
    db.session.add(job)
    db.session.flush()
    lifecycle.record(job, Event.CREATED,
                     f"Created by {created_by.email}" + (", paused" if paused else ""),
                     now=now, by=created_by)
    jobconfig.record_version(job, by=created_by, summary="Created", changes=[], now=now)
    if draft is not None:
        db.session.delete(draft)
    audit.record("created", "job", job.id, job.name, by=created_by,
                 summary=f"Created ({provider.key}/{job_type.key})"
                 + (", paused" if paused else ""))
    db.session.commit()
    if not paused:
        _enqueue_committed(job)
    return job


LOG_PAGE = 100


@dataclass(frozen=True)
class LogFilter:
    """Which events of a job's log to show: one kind, and text in the message or code."""

    kind: str = ""
    q: str = ""
    run: int = 0  # one run's events (JobRun.id); 0: every run

    @classmethod
    def from_args(cls, args: Mapping[str, str]) -> LogFilter:
        kind = args.get("kind", "")
        # A run id that does not parse names no run: the filter is dropped, as for a kind.
        return cls(kind=kind if kind in set(Event) else "", q=args.get("q", "").strip()[:200],
                   run=parse_int(args.get("run", "")) or 0)

    def args(self) -> dict[str, str]:
        return {key: str(value) for key, value in
                (("kind", self.kind), ("q", self.q), ("run", self.run)) if value}


TAIL_BATCH = 500


def tail_batch(job: Job, after: int, log_filter: LogFilter = LogFilter(),
               limit: int = TAIL_BATCH) -> tuple[list[JobEvent], int, bool]:
    """The live tail's next rows: the filtered events newer than `after`, newest first,
    the id to go on from, and whether more are waiting.

    The newest id is read first and the rows up to it second, so an event written in
    between is not passed over. The rows are the oldest `limit` of those waiting: when
    more than `limit` arrive between two polls, the next poll goes on from the last one
    shown instead of skipping to the newest."""
    newest = newest_event_id(job, after)
    rows = find_events(db.session, job.id, log_filter, after=after, before=newest + 1,
                       oldest_first=True, limit=limit + 1)
    more = len(rows) > limit
    rows = rows[:limit]
    return rows[::-1], (rows[-1].id if more else newest), more


def newest_event_id(job: Job, after: int = 0) -> int:
    """The id of the job's newest event, whatever the log filter (`after` when there is
    none newer): where the live tail goes on from."""
    return db.session.scalar(select(func.max(JobEvent.id))
                             .where(JobEvent.job_id == job.id, JobEvent.id > after)) or after


def log_page(job: Job, log_filter: LogFilter, before: int | None = None,
             limit: int = LOG_PAGE) -> tuple[list[JobEvent], int | None]:
    """A page of the log, newest first, and the id to page on from (None at the start)."""
    rows = find_events(db.session, job.id, log_filter, before=before, limit=limit + 1)
    return rows[:limit], (rows[limit - 1].id if len(rows) > limit else None)


RUNS_PAGE = 10


def runs_page(job: Job, before: int | None = None, limit: int = RUNS_PAGE
              ) -> tuple[list[JobRun], int | None]:
    """A page of the job's runs, newest first, and the id to page on from (None at the
    start). Keyset on the (job_id, id) index."""
    query = select(JobRun).where(JobRun.job_id == job.id)
    if before is not None:
        query = query.where(JobRun.id < before)
    rows = list(db.session.scalars(query.order_by(JobRun.id.desc()).limit(limit + 1)))
    return rows[:limit], (rows[limit - 1].id if len(rows) > limit else None)


def newest_run(job: Job) -> JobRun | None:
    """The job's newest run, under way or ended."""
    return db.session.scalars(select(JobRun).where(JobRun.job_id == job.id)
                              .order_by(JobRun.id.desc()).limit(1)).first()


# The status block is rendered afresh at least this often, changed or not (what it shows
# that moves with time alone: the time left of a run, "waiting for a worker", the days
# left before a purge).
LIVE_EVERY = 10


@dataclass(frozen=True)
class LiveState:
    """What the status block of a job shows, as a fingerprint (`marker`), and the viewer's
    row as the database has it now (None in each when there is no such user)."""

    marker: str
    viewer_active: bool | None
    viewer_generation: int | None
    viewer_role: str | None


# Job columns the status block does not show: left out of its fingerprint, so that a unit
# that only moved the cursor, say, does not draw the block again.
NOT_DRAWN = frozenset({"description", "config", "cursor", "dispatch_count", "enqueued_at",
                       "lease_owner", "draft_id"})


@cache
def _live_statement() -> Select:
    """live_state's statement, built once (the poll runs it every second)."""
    jobs, runs, auths = Job.__table__, JobRun.__table__, Authorization.__table__
    creator, editor, viewer = (User.__table__.alias(name) for name in
                               ("creator", "editor", "viewer"))
    latest = runs.alias("latest")
    # max(), not ORDER BY ... LIMIT: a bound LIMIT keeps PostgreSQL planning the
    # prepared statement afresh on each run (1 ms) instead of using its generic plan.
    newest = (select(func.max(latest.c.id)).where(latest.c.job_id == jobs.c.id)
              .correlate(jobs).scalar_subquery())
    # The job's columns but those the block never shows (a new column counts until it is
    # named here); JSON as its text, which no driver has to parse.
    drawn = [cast(column, Text) if isinstance(column.type, JSON) else column
             for column in jobs.c if column.name not in NOT_DRAWN]
    shown = (*drawn, auths.c.health, auths.c.health_message, creator.c.email,
             editor.c.email, runs)
    return (select(*shown, viewer.c.active, viewer.c.session_generation, viewer.c.role,
                   viewer.c.timezone)
            .select_from(jobs.outerjoin(auths, auths.c.id == jobs.c.authorization_id)
                         .outerjoin(creator, creator.c.id == jobs.c.created_by_id)
                         .outerjoin(editor, editor.c.id == jobs.c.updated_by_id)
                         .outerjoin(runs, runs.c.id == newest)
                         .outerjoin(viewer, viewer.c.id == bindparam("viewer_id")))
            .where(jobs.c.id == bindparam("job_id")))


def live_state(connection: Connection, job_id: int, viewer_id: int,
               now: float) -> LiveState | None:
    """The job's status-block fingerprint for this viewer at `now` (epoch seconds), with
    the viewer's row, in one statement; None when there is no such job.

    The fingerprint covers every row the block is drawn from (the job, its
    authorization, the people named, its newest run), what of the viewer it shows
    (their role, which picks the actions; whether they created the job, which offers
    Keep; their time zone) and a LIVE_EVERY-second time slot: it changes whenever the
    block could. A poll whose page holds the current fingerprint has nothing new to
    show, and two viewers with the same fingerprint are shown the same block."""
    row = connection.execute(_live_statement(),
                             {"job_id": job_id, "viewer_id": viewer_id}).first()
    if row is None:
        return None
    *drawn, active, generation, role, zone = row
    created_it = row.created_by_id == viewer_id
    seen = repr((drawn, role, created_it, zone, int(now // LIVE_EVERY))).encode()
    return LiveState(hashlib.blake2b(seen, digest_size=12).hexdigest(), active, generation,
                     role)


def last_runs(job_ids: list[int]) -> dict[int, JobRun]:
    """The newest run of each of these jobs (the job list's "Last run"), in one query."""
    if not job_ids:
        return {}
    newest = (select(func.max(JobRun.id)).where(JobRun.job_id.in_(job_ids))
              .group_by(JobRun.job_id))
    return {run.job_id: run for run in db.session.scalars(
        select(JobRun).where(JobRun.id.in_(newest)))}


@dataclass(frozen=True)
class Progress:
    """How far a run under way is through work of known size."""

    done: int
    total: int
    percent: int
    seconds_left: float | None  # None until the run has moved some of it


def run_progress(run: JobRun | None, now: datetime) -> Progress | None:
    """The progress of a run under way whose work has a known size, with an estimate of
    the time left from its pace so far in this run."""
    if run is None or run.ended_at is not None or not run.total or run.done is None:
        return None
    done, total = min(run.done, run.total), run.total
    moved = done - (run.first_done or 0)
    elapsed = (now - run.started_at).total_seconds()
    left = (total - done) * elapsed / moved if moved > 0 and elapsed > 0 else None
    return Progress(done, total, done * 100 // total, left)


def iter_events(job: Job, log_filter: LogFilter, chunk: int = 2000):
    """Every event of the filtered log, newest first, read in keyset chunks (downloads)."""
    before = None
    while True:
        rows = find_events(db.session, job.id, log_filter, before=before, limit=chunk)
        yield from rows
        if len(rows) < chunk:
            return
        before = rows[-1].id


def can_edit(job: Job, user: User) -> bool:
    """Admins edit any job's name and description; operators the jobs they created."""
    return user.has_role("admin") or (user.has_role("operator")
                                      and job.created_by_id == user.id)


def edit_job(job: Job, *, field: str, value: str, by: User) -> dict[str, str]:
    """Change a job's name or description; returns field messages (nothing saved then).
    The change is kept in the audit trail and the job's log, with before and after."""
    value = value.strip()
    if field == "name":
        errors = name_errors(value, "", missing="Give the job a name.")
    else:
        errors = name_errors("-", value)
    if errors:
        return errors
    before = getattr(job, field)
    if before == value:
        return {}
    now = utcnow()
    setattr(job, field, value)
    job.updated_at, job.updated_by_id = now, by.id
    audit.record("edited", "job", job.id, job.name, by=by, field=field, before=before,
                 after=value, summary=f"{field.capitalize()} changed")
    lifecycle.record(job, Event.EDITED, f"{field.capitalize()} changed by {by.email}",
                     now=now, by=by)
    db.session.commit()
    return {}


class EditRefused(Exception):
    """An edit that cannot be saved: `errors` by field (a field of the configure step, or
    of the schedule step: "schedule-...", "name"), and the step that can mend them."""

    def __init__(self, errors: dict[str, str], step: str = "configure"):
        super().__init__("; ".join(errors.values()))
        self.errors, self.step = errors, step


@dataclass(frozen=True)
class EditSaved:
    changes: list[dict]
    resumed: bool
    status: str


def start_edit(job: Job, *, by: User) -> Draft:
    """An edit draft of the job for `by`: the wizard's configure and schedule steps,
    pre-filled with what the job holds now (secrets sealed, so blank keeps them). An
    earlier unsaved edit of the same job by the same person is replaced."""
    db.session.execute(delete(Draft).where(Draft.job_id == job.id, Draft.owner_id == by.id))
    draft = Draft(owner_id=by.id, provider=job.provider, job_type=job.job_type,
                  authorization_id=job.authorization_id, config=dict(job.config or {}),
                  name=job.name, description=job.description or "",
                  schedule=dict(job.schedule or {}), retry_policy=dict(job.retry_policy or {}),
                  step="configure", job_id=job.id, base_version=jobconfig.latest_version(job))
    db.session.add(draft)
    db.session.commit()
    return draft


def _edit_problems(job: Job, job_type: JobType, after: jobconfig.Settings) -> EditRefused | None:
    """What Save refuses: a configuration that does not validate (or whose secrets no key
    opens), an authorization of another provider, a secret kept although a destination
    field changed since the job's own configuration, a schedule or name with mistakes."""
    schema = job_type.config_schema
    try:
        errors = validate(schema, configsecrets.open_config(schema, after.config, what="this edit"))
    except vault.KeyUnavailable:
        errors = {"config": "A secret can no longer be decrypted; enter it again."}
    if after.authorization_id is not None:
        found = db.session.get(Authorization, after.authorization_id)
        if found is None or found.provider != job.provider:
            errors["authorization"] = ("That authorization does not exist or is for another "
                                       "provider; choose one from the list.")
    moved = moved_destinations(schema, destination_paths(schema), job.config, after.config)
    if moved:
        for path, holder, name in secret_slots(schema, after.config):
            earlier, earlier_name = holder_of(job.config, path)
            if earlier is not None and holder.get(name) is not None and (
                    holder.get(name) == earlier.get(earlier_name)):
                errors[path] = configsecrets.enter_again(moved)
    if errors:
        return EditRefused(errors)
    later = {**schedule.problems(after.schedule),
             **name_errors(after.name, after.description, missing="Give the job a name.")}
    return EditRefused(later, step="schedule") if later else None


def save_edit(job: Job, job_type: JobType, after: jobconfig.Settings, *, by: User,
              base_version: int | None = None, draft: Draft | None = None,
              resume: bool = False) -> EditSaved:
    """Save an edit in one transaction: the job's configuration, authorization, schedule,
    retries, name and description, a version with the changes, an `edited` event in its
    log and an audit entry; the draft it came from is deleted. A new file for an import
    starts it from the file's beginning; a new schedule moves a sleeping job's next run.
    A running job takes the new configuration at its next unit (the runner re-reads the
    row after each unit). `resume`: a failed or paused job then resumes, a completed one
    runs again, through the state machine. Raises EditRefused (nothing saved)."""
    _locked(job)
    if base_version is not None and jobconfig.latest_version(job) != base_version:
        db.session.rollback()
        raise EditRefused({"config": "Someone else changed this job's configuration since "
                                     "you started editing it. Start the edit again from the "
                                     "job's summary to see their change."})
    if (problem := _edit_problems(job, job_type, after)) is not None:
        db.session.rollback()
        raise problem
    before = jobconfig.Settings.of(job)
    changes = jobconfig.differences(job_type.config_schema, before, after)
    now = utcnow()
    if changes:
        if jobconfig.upload_changed(job_type.config_schema, before.config, after.config):
            job.cursor = {}
        job.authorization_id = after.authorization_id
        job.config, job.retry_policy = after.config, after.retry_policy
        job.name, job.description = after.name, after.description
        if jobconfig.schedule_changed(before.schedule, after.schedule):
            job.schedule = after.schedule
            if job.status == Status.SLEEPING and not job.error_count:
                job.next_run_at = schedule.next_run(schedule.load(after.schedule),
                                                    job.last_run_at or now) or now
        job.updated_at, job.updated_by_id = now, by.id
        labels = ", ".join(change["label"] for change in changes)
        version = jobconfig.record_version(job, by=by, summary="Edited", changes=changes,
                                           now=now)
        lifecycle.record(job, Event.EDITED, f"Configuration changed by {by.email}: {labels}",
                         now=now, by=by)
        audit.record("config_changed", "job", job.id, job.name, by=by,
                     version=version.version, fields=[change["field"] for change in changes],
                     summary=f"Configuration changed (version {version.version}): {labels}"[:500])
    resumed = False
    if resume and lifecycle.can(job, lifecycle.Trigger.RESUME):
        lifecycle.resume(job, by=by, now=now)
        resumed = True
    elif resume and lifecycle.can(job, lifecycle.Trigger.RUN_AGAIN):
        lifecycle.run_again(job, by=by, now=now)
        resumed = True
    if resumed:
        audit.record("resumed", "job", job.id, job.name, by=by, summary="Resumed after an edit")
    if draft is not None:
        db.session.delete(draft)
    db.session.commit()
    if resumed:
        _enqueue_committed(job, force=True)
    return EditSaved(changes, resumed, str(job.status))


def set_keep(job: Job, keep: bool, *, by: User) -> None:
    """Keep a job from the purge, or let the purge have it again; audited and logged.
    The caller checks can_edit (the same people who may rename it)."""
    _locked(job)
    if job.keep == keep:
        db.session.rollback()
        return
    now = utcnow()
    job.keep = keep
    job.updated_at, job.updated_by_id = now, by.id
    said = "Kept from the purge" if keep else "No longer kept from the purge"
    audit.record("kept" if keep else "unkept", "job", job.id, job.name, by=by,
                 before=not keep, after=keep, summary=said)
    lifecycle.record(job, Event.EDITED, f"{said} by {by.email}", now=now, by=by)
    db.session.commit()


def metrics(job: Job) -> dict[str, int]:
    """Profiles added, removed and omitted over the job's life."""
    return {"added": job.added_total or 0, "removed": job.removed_total or 0,
            "omitted": job.omitted_total or 0}


def last_problem(job: Job) -> JobEvent | None:
    """The newest Error event of the job's current error streak (while it retries, or
    once it has failed): what the summary puts first. Read on the (job_id, at) index
    from the streak's start, so a long log before it is never scanned."""
    if not job.error_count or job.error_streak_started_at is None:
        return None
    return db.session.scalar(
        select(JobEvent).where(JobEvent.job_id == job.id, JobEvent.kind == Event.ERROR,
                               JobEvent.at >= job.error_streak_started_at)
        .order_by(JobEvent.at.desc(), JobEvent.id.desc()).limit(1))


def purge_at(job: Job, days: int) -> datetime | None:
    """When a settled job will be purged (None while it can still change by itself, and
    for a job someone keeps)."""
    if job.keep or job.status not in SETTLED or job.terminal_at is None:
        return None
    return job.terminal_at + timedelta(days=days)


def _delete_jobs(ids: list[int]) -> None:
    for start in range(0, len(ids), 500):
        chunk = ids[start:start + 500]
        db.session.execute(delete(JobEvent).where(JobEvent.job_id.in_(chunk)))
        db.session.execute(delete(Job).where(Job.id.in_(chunk)))


def purge(*, now: datetime, days: int, dry_run: bool = False) -> int:
    """Delete failed, paused and completed jobs that have been so for `days`, with their
    events; jobs someone keeps are passed over. Returns how many jobs."""
    cutoff = now - timedelta(days=days)
    ids = list(db.session.scalars(
        select(Job.id).where(Job.status.in_([str(s) for s in SETTLED]), Job.terminal_at <= cutoff,
                             Job.keep.is_(False))
    ))
    if ids and not dry_run:
        _delete_jobs(ids)
        db.session.commit()
    return len(ids)


def purge_drafts(*, now: datetime, days: int) -> int:
    """Delete wizard drafts nobody touched for `days`; returns how many."""
    result = db.session.execute(delete(Draft).where(Draft.updated_at <= now - timedelta(days=days)))
    db.session.commit()
    return result.rowcount or 0


class JobBusy(Exception):
    """The job is running: deleting it would pull it from under its worker."""


def delete_refusal(job: Job) -> str:
    """Why this job cannot be deleted as it is now ("" when it can)."""
    return "it is running; pause it first, then delete it" if (
        job.status == Status.RUNNING) else ""


def delete_job(job: Job, *, by: User) -> None:
    """Delete a job that is not running, with its log; the audit trail keeps the fact."""
    _locked(job)
    if refusal := delete_refusal(job):
        db.session.rollback()
        raise JobBusy(refusal)
    audit.record("deleted", "job", job.id, job.name, by=by,
                 summary=f"Deleted a {job.status} job ({job.provider}/{job.job_type})")
    _delete_jobs([job.id])
    db.session.commit()


def _locked(job: Job) -> Job:
    db.session.refresh(job, with_for_update=True)
    return job


def pause_job(job: Job, *, by: User) -> None:
    """Pause now; a unit already running stops at its next batch boundary."""
    lifecycle.pause(_locked(job), by=by, now=utcnow())
    audit.record("paused", "job", job.id, job.name, by=by, summary="Paused")
    db.session.commit()


def resume_job(job: Job, *, by: User) -> None:
    """Resume a paused or failed job: it runs now, with a fresh error streak."""
    lifecycle.resume(_locked(job), by=by, now=utcnow())
    audit.record("resumed", "job", job.id, job.name, by=by, summary="Resumed")
    db.session.commit()
    _enqueue_committed(job, force=True)


def run_job_now(job: Job, *, by: User) -> None:
    """Run a sleeping job now instead of at its next run time."""
    lifecycle.run_now(_locked(job), by=by, now=utcnow())
    audit.record("run_now", "job", job.id, job.name, by=by, summary="Run now")
    db.session.commit()
    _enqueue_committed(job, force=True)


def _enqueue_committed(job: Job, *, force: bool = False) -> None:
    """Queue a job whose row is committed. If Redis does not answer, nothing is lost:
    the dispatcher queues the job once Redis is back."""
    try:
        enqueue(job, force=force)
    except RedisError:
        log.warning("job %s: Redis unavailable, left for the dispatcher", job.id)


ACTIONS = {"pause": pause_job, "resume": resume_job, "run-now": run_job_now}


# --- the job list ---------------------------------------------------------------------

PAGE_SIZE = 50
SORTS = ("created", "name", "authorization", "provider", "type", "status", "last_run",
         "next_run")
TIME_SORTS = ("created", "last_run", "next_run")  # their cursor values are times


def _sort_expression(sort: str):
    if sort in ("last_run", "next_run"):
        column = Job.last_run_at if sort == "last_run" else Job.next_run_at
        return func.coalesce(column, NO_RUN)  # the expression of its index
    return {"created": Job.created_at, "name": Job.name, "provider": Job.provider,
            "type": Job.kind, "status": Job.status,
            "authorization": Job.authorization_label}[sort]


# Not a stored status: a job sleeping between the retries of an error streak. The list can
# filter it like a status; it is shown (portal.ui) but never stored.
RETRYING = "retrying"


def _retrying(query):
    return query.where(Job.status == Status.SLEEPING, Job.error_count > 0)


@dataclass(frozen=True)
class JobFilter:
    """What the job list shows, as read from (and written back to) its URL."""

    status: str = ""
    kind: str = ""
    provider: str = ""
    authorization: int | None = None
    q: str = ""
    sort: str = "created"
    direction: str = "desc"
    show_completed: bool = True

    @classmethod
    def from_args(cls, args: Mapping[str, str]) -> JobFilter:
        """Unknown values are ignored rather than refused: a shared link always opens."""
        status = args.get("status", "")
        raw_auth = args.get("authorization", "")
        return cls(
            status=status if status in set(Status) or status == RETRYING else "",
            kind=args.get("type", "") if args.get("type", "") in KINDS else "",
            provider=args.get("provider", "")[:64],
            authorization=parse_int(raw_auth),
            q=args.get("q", "").strip()[:200],
            sort=args.get("sort", "created") if args.get("sort") in SORTS else "created",
            direction="asc" if args.get("dir") == "asc" else "desc",
            show_completed=_last(args, "completed", "1") != "0",
        )

    def args(self, **changes: Any) -> dict[str, Any]:
        """Query-string arguments for this filter (with changes), defaults left out."""
        merged = {"status": self.status, "type": self.kind, "provider": self.provider,
                  "authorization": self.authorization, "q": self.q, "sort": self.sort,
                  "dir": self.direction, "completed": "1" if self.show_completed else "0"}
        merged.update(changes)
        defaults = {"sort": "created", "dir": "desc", "completed": "1"}
        return {key: value for key, value in merged.items()
                if value not in ("", None) and defaults.get(key) != value}

    def where(self, query):
        if self.status == RETRYING:
            query = _retrying(query)
        elif self.status:
            query = query.where(Job.status == self.status)
        if not self.show_completed and self.status != Status.COMPLETED:
            query = query.where(Job.status != Status.COMPLETED)
        if self.kind:
            query = query.where(Job.kind == self.kind)
        if self.provider:
            query = query.where(Job.provider == self.provider)
        if self.authorization is not None:
            query = query.where(Job.authorization_id == self.authorization)
        if self.q:
            query = query.where(holds(db.session, self.q, Job.name, Job.description))
        return query


def _last(args: Mapping[str, str], name: str, default: str) -> str:
    """The last value of a repeated argument: a checkbox after its hidden "off" twin
    (completed=0&completed=1) wins, as it does in the form."""
    values = args.getlist(name) if hasattr(args, "getlist") else [args.get(name, default)]
    return values[-1] if values else default


def encode_cursor(sort_value: Any, job_id: int) -> str:
    """The next page's cursor: the last row's sort value and id."""
    if isinstance(sort_value, datetime):
        sort_value = sort_value.isoformat()
    raw = json.dumps([sort_value, job_id]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


CURSOR_LIMIT = 1024  # characters; a real cursor is a name of 200 and an id, base64-coded


def _decode_cursor(cursor: str, sort: str) -> tuple[Any, int] | None:
    """The (sort value, id) a cursor holds, or None: a mangled cursor starts from the first
    page. Every part is checked for what `sort` compares it with (a time for the time
    sorts, text that storage can bind for the others, an id in range), so no shape,
    type or range of JSON reaches the query."""
    if len(cursor) > CURSOR_LIMIT:
        return None
    try:
        decoded = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (ValueError, RecursionError):
        return None
    if not isinstance(decoded, list) or len(decoded) != 2:
        return None
    value, job_id = decoded[0], parse_int(decoded[1]) if isinstance(decoded[1], int) else None
    value = _cursor_time(value) if sort in TIME_SORTS else _cursor_text(value)
    return None if value is None or job_id is None else (value, job_id)


def _cursor_time(value: Any) -> datetime | None:
    """A cursor's time: ISO 8601 with its offset, as encode_cursor writes it."""
    if not isinstance(value, str) or len(value) > 40:
        return None
    try:
        moment = datetime.fromisoformat(value)
        return None if moment.tzinfo is None else moment.astimezone(UTC)
    except (ValueError, OverflowError):  # not a time, or out of range once in UTC
        return None


def _cursor_text(value: Any) -> str | None:
    """A cursor's name, label, provider, type or status: text the database can bind (no
    NUL, no lone surrogate from a JSON escape), as long as a column holds."""
    if not isinstance(value, str) or len(value) > 200 or "\x00" in value:
        return None
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return None
    return value


def list_jobs(job_filter: JobFilter, *, after: str = "",
              limit: int = PAGE_SIZE) -> tuple[list[Job], str]:
    """One page of the list and the cursor of the next page ("" on the last one).
    Keyset pagination on (sort column, id): as fast on page 1,000 as on page 1."""
    expression = _sort_expression(job_filter.sort)
    descending = job_filter.direction == "desc"
    # The sort value comes back with each row: the cursor is made from what was sorted on.
    query = job_filter.where(
        select(Job, expression)
        .outerjoin(Authorization, Job.authorization_id == Authorization.id))
    position = _decode_cursor(after, job_filter.sort) if after else None
    if position is not None:
        value, job_id = position
        if job_filter.sort in TIME_SORTS:
            value = literal(value, UTCDateTime())
        pair, mark = tuple_(expression, Job.id), tuple_(value, job_id)
        query = query.where(pair < mark if descending else pair > mark)
    order = (expression.desc(), Job.id.desc()) if descending else (expression.asc(),
                                                                    Job.id.asc())
    rows = db.session.execute(query.order_by(*order).limit(limit + 1)).all()
    jobs = [job for job, _ in rows[:limit]]
    if len(rows) <= limit:
        return jobs, ""
    return jobs, encode_cursor(rows[limit - 1][1], jobs[-1].id)


def status_counts(job_filter: JobFilter) -> dict[str, int]:
    """Jobs per status under the other filters (the status tabs' numbers). Unfiltered,
    they come from the counts the database keeps (one row per status), so the default
    list does not count 100,000 rows on every view."""
    everything = replace(job_filter, status="", show_completed=True)
    if everything == JobFilter(sort=job_filter.sort, direction=job_filter.direction):
        return {status: jobs for status, jobs in db.session.execute(
            select(JobStatusCount.status, JobStatusCount.jobs)).all() if jobs}
    query = everything.where(select(Job.status, func.count()).select_from(Job))
    return dict(db.session.execute(query.group_by(Job.status)).all())


def retrying_count(job_filter: JobFilter) -> int:
    """Jobs retrying after errors under the other filters (the Retrying tab's number); read
    through the (status, error_count) index, so only the retrying jobs are looked at."""
    everything = replace(job_filter, status="", show_completed=True)
    query = _retrying(everything.where(select(func.count()).select_from(Job)))
    return db.session.scalar(query) or 0
