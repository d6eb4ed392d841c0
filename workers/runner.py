"""Runs a job: claim it, do units of work, record events, ask lifecycle for the next state.

`run_job` is what RQ executes (by dotted path). It never trusts the queue: the job row
decides whether there is anything to run, and a compare-and-set lease on the row makes
sure one job never runs twice at once. While a unit runs, the process's lease keeper
thread keeps the lease fresh; a worker that dies stops renewing, and the dispatcher
notices.
"""

from __future__ import annotations

import copy
import logging
import os
import socket
import threading
import time
import traceback
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from flask import current_app
from redis.exceptions import RedisError
from rq import get_current_job
from sqlalchemy import func, or_, select, update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError

from portal import alerts, background, configsecrets, lifecycle, membership, schedule, vault
from portal.datastore import read_messages, stored_file, write_messages
from portal.extensions import db
from portal.lifecycle import Event, Status, Trigger
from portal.models import Authorization, Job, JobRun
from portal.models.types import utcnow
from portal.queues import dispatch, enqueue, take_waiting
from providers import get_job_type
from providers.base import (
    AudienceChanges,
    AuthError,
    ConfigError,
    InMessage,
    MembersPage,
    OutMessage,
    ProviderError,
    RateLimited,
    StoredFile,
    WorkResult,
)

log = logging.getLogger(__name__)

# How long one RQ job keeps running units before it hands the job back to the queue,
# so that a long import does not hold a worker away from every other job.
TIME_SLICE = timedelta(seconds=20)

# How long one RQ job goes on running the next portal jobs waiting on its queue after its
# own (queues.take_waiting), each claimed and run as if a worker had dequeued it.
CHAIN = timedelta(seconds=5)
CHAIN_BATCH = 16  # most jobs taken and claimed at once
QUICK_RUN = timedelta(milliseconds=250)  # a run this short lets the next batch grow

# Set when this process was told to stop (workers/__main__.py): a run hands its job back
# to the queue after the unit under way instead of going on.
STOPPING = threading.Event()


class UnitAbandoned(BaseException):
    """Raised in a unit that its stopping worker gave up on (workers/__main__.py). A
    BaseException, so that no provider's `except Exception` swallows it."""


def worker_identity() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


@background.task
def run_job(job_id: int, force: bool = False) -> str:
    """RQ entry point; `force` (run now, resume) ignores the quiet window.

    Then, for up to CHAIN, runs the portal jobs waiting next on the same queue (taken off
    it, so no other worker runs them too): a burst of short jobs then costs one RQ job, not
    one each. Returns a short word on what happened (kept as the RQ result)."""
    started = time.monotonic()
    outcome = Runner(job_id, force=force).run()
    rq_job = get_current_job()
    if rq_job is None:  # called directly, not by a worker
        return outcome
    more = run_waiting(rq_job.origin, deadline=started + CHAIN.total_seconds())
    return f"{outcome} (and {more} more from the queue)" if more else outcome


def run_waiting(queue_name: str, *, deadline: float) -> int:
    """Run the portal jobs waiting next on `queue_name` until `deadline` (time.monotonic()),
    in batches claimed in one transaction; returns how many ran.

    A batch grows (1, 2, 4, ... CHAIN_BATCH) while every run in it was quick, and drops
    back to one job after a slow run, so that few jobs ever wait behind a long one: the
    jobs of a batch not yet run when time is up, the worker is told to stop or a run was
    slow or ended abnormally go back on the queue at once (their leases let go)."""
    size, ran = 1, 0
    while not STOPPING.is_set() and time.monotonic() < deadline:
        try:
            taken = take_waiting(queue_name, size)
        except RedisError:
            break  # the worker's own loop deals with Redis; the dispatcher re-queues
        if not taken:
            break
        owner = worker_identity()
        runners = [Runner(job_id, force=force, owner=owner) for job_id, force in taken]
        try:
            claims = Runner.claim_all(runners)
        except DBAPIError as exc:  # nothing was claimed: the dispatcher re-queues them
            db.session.remove()
            log.warning("jobs %s: could not be claimed (%s); the dispatcher queues them again",
                        [runner.job_id for runner in runners], exc.orig)
            break
        batch = [(runner, job) for runner, (job, _) in zip(runners, claims, strict=True)
                 if job is not None]
        done, quick = _run_batch(batch, deadline)
        ran += done
        if done < len(batch):
            break
        size = min(size * 2, CHAIN_BATCH) if quick else 1
    return ran


def _run_batch(batch: list[tuple[Runner, Job]], deadline: float) -> tuple[int, bool]:
    """Run the claimed jobs of a batch in turn, keeping the leases of those waiting fresh;
    returns (how many ran, whether every run was quick)."""
    for runner, job in batch:
        _leases.hold(db.engine, job.id, runner.owner, runner.lease)
    ran, quick = 0, True
    try:
        for runner, job in batch:
            if ran and (STOPPING.is_set() or time.monotonic() > deadline or not quick):
                break
            _leases.release(job.id, runner.owner)
            began = time.monotonic()
            try:
                outcome = runner.run(claimed=job)
            except Exception:  # its lease runs out and the dispatcher takes it back
                log.exception("job %s (taken from the queue) raised", job.id)
                ran += 1
                break
            ran += 1
            quick = quick and time.monotonic() - began < QUICK_RUN.total_seconds()
            if outcome == "database unavailable":
                break
    finally:
        _hand_back(batch[ran:])
    return ran, quick


def _hand_back(waiting: list[tuple[Runner, Job]]) -> None:
    """Let go of the leases of claimed jobs that will not run here, and queue them again."""
    if not waiting:
        return
    owner = waiting[0][0].owner
    ids = [job.id for _, job in waiting]
    for job_id in ids:
        _leases.release(job_id, owner)
    try:
        db.session.execute(update(Job).where(Job.id.in_(ids), Job.lease_owner == owner)
                           .values(lease_owner=None, lease_until=None))
        db.session.commit()
    except DBAPIError as exc:
        log.warning("jobs %s: could not let go of their leases (%s); the dispatcher takes "
                    "them back once the leases expire", ids, exc.orig)
        return
    finally:
        db.session.remove()
    try:
        dispatch([job for _, job in waiting])
    except RedisError as exc:
        log.warning("jobs %s: Redis does not answer (%s); the dispatcher queues them again "
                    "when it does", ids, exc)


@background.task
def check_authorizations() -> int:
    """RQ entry point of the daily health check: test every authorization's connection."""
    return vault.check_all()


@background.task
def deliver_alert(sent_id: int, attempt: int = 0) -> str:
    """RQ entry point: deliver one alert (portal.alerts.deliver)."""
    return alerts.deliver(sent_id, attempt)


class _Sink:
    def __init__(self, source: str):
        self.source = source

    def write(self, stream: str, messages: list[OutMessage]) -> tuple[int, int]:
        return write_messages(stream, messages, source=self.source)


class _Files:
    def get(self, upload_id: int) -> StoredFile:
        return stored_file(upload_id)


class _Source:
    def __init__(self, job_id: int):
        self.job_id = job_id

    def messages(self, stream: str, *, after_id: int, limit: int) -> list[InMessage]:
        return read_messages(stream, after_id=after_id, limit=limit)

    def audience_changes(self, audience: str, *, identifier: str, after_profile_id: int,
                         limit: int) -> AudienceChanges:
        return membership.changes(self.job_id, audience, identifier=identifier,
                                  after_profile_id=after_profile_id, limit=limit)

    def audience_members(self, audience: str, *, identifier: str, after_profile_id: int,
                         limit: int) -> MembersPage:
        return membership.members_page(audience, identifier=identifier,
                                       after_profile_id=after_profile_id, limit=limit)

    def audience_sent(self, changes: AudienceChanges) -> None:
        membership.record(self.job_id, changes)


class _Context:
    """What a job type's run() sees: its config, cursor and the portal's data plane."""

    def __init__(self, job: Job, batch_size: int):
        self.job_id = job.id
        self.config: dict[str, Any] = dict(job.config or {})
        self.auth_method = job.authorization.method if job.authorization else "none"
        self.credentials: dict[str, Any] = {}
        # A deep copy: a run that changes a nested value in place must not change the
        # stored cursor too (the ORM would then see no change and write none).
        self.cursor: dict[str, Any] = copy.deepcopy(job.cursor or {})
        self.sink = _Sink(source=f"job:{job.id}")
        self.source = _Source(job.id)
        self.files = _Files()
        self.batch_size = batch_size
        self.error_count = job.error_count
        self.notes: list[str] = []

    def log(self, message: str) -> None:
        self.notes.append(message)

    def should_stop(self) -> bool:
        """True once a person paused the job: stop at the next batch boundary."""
        status = db.session.scalar(select(Job.status).where(Job.id == self.job_id))
        return status != Status.RUNNING

    def now(self) -> datetime:
        return utcnow()


@dataclass
class _Held:
    engine: Engine
    lease: timedelta
    due: float  # time.monotonic() of the next renewal


class _LeaseKeeper:
    """Renews the leases of the units running in this process, each a third of a lease
    after the last renewal, from one thread that lives as long as the process (started
    with the first unit). A thread per unit cost more than a short unit itself.

    A renewal may land just after its unit let go: it only extends a lease still held by
    the same owner (the runner extends it anyway when it goes on), so it is harmless.
    """

    def __init__(self) -> None:
        self.changed = threading.Condition()
        self.held: dict[tuple[int, str], _Held] = {}
        self.thread: threading.Thread | None = None

    @contextmanager
    def holding(self, engine: Engine, job_id: int, owner: str, lease: timedelta):
        """Keep the lease of `job_id` held by `owner` fresh for the duration."""
        self.hold(engine, job_id, owner, lease)
        try:
            yield
        finally:
            self.release(job_id, owner)

    def hold(self, engine: Engine, job_id: int, owner: str, lease: timedelta) -> None:
        """Keep the lease of `job_id` held by `owner` fresh until release()."""
        with self.changed:
            self.held[(job_id, owner)] = _Held(engine, lease,
                                               time.monotonic() + lease.total_seconds() / 3)
            if self.thread is None or not self.thread.is_alive():
                self.thread = threading.Thread(target=self._keep, daemon=True,
                                               name="lease-keeper")
                self.thread.start()
            self.changed.notify()

    def release(self, job_id: int, owner: str) -> None:
        with self.changed:
            self.held.pop((job_id, owner), None)

    def _keep(self) -> None:
        while True:
            with self.changed:
                now = time.monotonic()
                due = [(key, held) for key, held in self.held.items() if held.due <= now]
                if not due:
                    soonest = min((held.due for held in self.held.values()), default=None)
                    self.changed.wait(None if soonest is None else soonest - now)
                    continue
                for _, held in due:
                    held.due = now + held.lease.total_seconds() / 3
            for (job_id, owner), held in due:  # outside the lock: a write may wait
                try:
                    with held.engine.begin() as connection:
                        connection.execute(
                            update(Job).where(Job.id == job_id, Job.lease_owner == owner)
                            .values(lease_until=utcnow() + held.lease)
                        )
                except Exception as exc:  # the next renewal tries again; the lease has slack
                    if background.database_error(exc):
                        log.warning("job %s: lease renewal failed: database unavailable (%s)",
                                    job_id, exc.orig)
                    else:
                        log.warning("job %s: lease renewal failed", job_id, exc_info=True)


_leases = _LeaseKeeper()


class Runner:
    def __init__(self, job_id: int, force: bool = False, owner: str | None = None):
        self.job_id = job_id
        self.force = force
        self.owner = owner or worker_identity()  # one owner for the jobs of a batch
        self.config = current_app.config
        self.lease = timedelta(seconds=self.config["PORTAL_LEASE_SECONDS"])
        self.decryptions = vault.DecryptionTally()  # one audit row for this run's units
        # The run this worker goes on with (from its claim), handed to the lifecycle so it
        # is not looked up for every event; and the job's status_changed_at as this worker
        # last left it, to notice someone else moving the job (a pause and a resume while
        # a unit ran end that run: the lifecycle then looks up what is under way).
        self.job_run: JobRun | None = None
        self.moved_at: datetime | None = None

    def run(self, claimed: Job | None = None) -> str:
        """Claim the job and run its units for up to a time slice; `claimed`: the job as
        claim_all left it, already claimed by this runner in a batch."""
        # The lease makes this process the job row's only writer until it lets go, so the
        # loaded row stays valid across commits; _still_ours re-reads it under a lock
        # before anything is decided.
        db.session().expire_on_commit = False
        job = claimed
        try:
            if job is None:
                job, outcome = self.claim()
                if job is None:
                    return outcome
            else:  # the batch's session has ended since: go on in this one
                db.session.add(job)
                if self.job_run is not None:
                    db.session.add(self.job_run)
            started = time.monotonic()
            while True:
                outcome = self.unit(job)
                if outcome != "more":
                    return outcome
                if STOPPING.is_set() or time.monotonic() - started > TIME_SLICE.total_seconds():
                    self._finish(job, keep_lease=False)
                    self._queue_again(job)
                    return "handed back"
                if not self.renew(job):
                    return "stopped"
        except DBAPIError as exc:
            if not background.database_unavailable(exc):
                raise
            return self.database_unavailable(exc, claimed=job is not None)
        except UnitAbandoned:
            log.warning("job %s: unit abandoned as the worker stops; nothing of it landed, "
                        "and the job runs again once its lease (%d s) expires", self.job_id,
                        self.lease.total_seconds())
            raise
        finally:
            db.session.remove()

    def _queue_again(self, job: Job) -> None:
        """Put the job (its lease let go) back on its queue; without Redis, the dispatcher
        does it when Redis answers again."""
        try:
            enqueue(job)
        except RedisError as exc:
            log.warning("job %s: Redis does not answer (%s); the dispatcher queues the job "
                        "again when it does", job.id, exc)

    def database_unavailable(self, exc: DBAPIError, *, claimed: bool) -> str:
        """The database could not be reached during the run: nothing uncommitted landed.
        Wait (up to a lease) for it to answer again, then say so in the job's log (an Error,
        not a move), let go of the lease and queue the job again. If it stays away, the
        lease expires and the dispatcher takes the job back."""
        log.warning("job %s: database unavailable: the database could not be reached (%s); "
                    "the unit is retried when it answers", self.job_id, exc.orig)
        deadline = time.monotonic() + self.lease.total_seconds()
        while True:
            db.session.remove()  # the dead connection goes; the pool pings the next one
            try:
                return self._after_outage(claimed)
            except DBAPIError as again:
                if not (background.database_unavailable(again)
                        or background.database_error(again)):
                    raise
                if time.monotonic() > deadline:
                    log.error("job %s: database still unavailable after %d s; the job runs "
                              "again when it answers (the dispatcher takes it back once its "
                              "lease expires)", self.job_id, self.lease.total_seconds())
                    return "database unavailable"
            time.sleep(1)

    def _after_outage(self, claimed: bool) -> str:
        job = db.session.get(Job, self.job_id, with_for_update=True, populate_existing=True)
        if job is None:
            db.session.commit()
            return "database unavailable"
        if not claimed:  # the claim itself failed: the job is still free, queue it again
            free = job.status == Status.RUNNING and (
                job.lease_until is None or job.lease_until < utcnow())
            db.session.commit()
            if free:
                self._queue_again(job)
            return "database unavailable"
        if job.lease_owner != self.owner or job.status != Status.RUNNING:
            db.session.commit()
            return "lease lost"
        lifecycle.database_unavailable(
            job, now=utcnow(),
            message="Database unavailable: the database could not be reached while a unit "
            "ran (a restart or an outage); nothing of that unit was kept, and it runs again.")
        job.lease_owner = job.lease_until = None
        db.session.commit()
        self._queue_again(job)
        return "database unavailable"

    def claim(self) -> tuple[Job | None, str]:
        """Take the lease on a running job, in one transaction with its Started event or
        its hold-back. Returns (job, "claimed"), or (None, why not)."""
        return Runner.claim_all([self])[0]

    @staticmethod
    def claim_all(runners: list[Runner]) -> list[tuple[Job | None, str]]:
        """claim() for the jobs of several runners of one owner, in one statement and one
        transaction; one (job, outcome) for each runner, in order."""
        db.session().expire_on_commit = False  # the leases keep the loaded rows true (run)
        now = utcnow()
        first = runners[0]
        claimed = (
            update(Job)
            .where(
                Job.id.in_([runner.job_id for runner in runners]),
                Job.status == Status.RUNNING,
                or_(Job.lease_until.is_(None), Job.lease_until < now),
            )
            .values(lease_owner=first.owner, lease_until=now + first.lease,
                    started_at=func.coalesce(Job.started_at, now))
        )
        # UPDATE ... RETURNING (PostgreSQL, SQLite >= 3.35): the claim and the read in one
        # round trip.
        won = {job.id: job for job in db.session.scalars(
            claimed.returning(Job).execution_options(synchronize_session=False,
                                                     populate_existing=True))}
        # A job queued twice and taken twice runs once: the first runner gets it.
        results = [runner._claimed(won.pop(runner.job_id, None), now) for runner in runners]
        db.session.commit()
        for runner, (job, _) in zip(runners, results, strict=True):
            if job is not None:
                runner.moved_at = job.status_changed_at
        return results

    def _claimed(self, job: Job | None, now: datetime) -> tuple[Job | None, str]:
        """What follows this runner's claim of `job` (None: not won), before the commit."""
        if job is None:
            return None, "skipped"
        first_run = job.started_at == now  # set by this claim
        try:
            held = self.hold_back(job, now)
        except schedule.ScheduleError as exc:  # a stored schedule that cannot work
            lifecycle.schedule_broken(job, now=now, reason=str(exc))
            job.lease_owner = job.lease_until = None
            if first_run:
                job.started_at = None
            return None, "failed"
        if held:
            job.lease_owner = job.lease_until = None
            if first_run:
                job.started_at = None
            return None, "held back"
        self.job_run = lifecycle.start_run(job, now=now, first=first_run)
        if first_run:
            lifecycle.record(
                job, Event.STARTED, f"Started: first run, picked up by worker {self.owner}",
                now=now, run=self.job_run,
            )
        return job, "claimed"

    def hold_back(self, job: Job, now: datetime) -> bool:
        """Put the job back to sleep if its authorization is rate limited or it is quiet
        time (unless a person asked to run it now)."""
        authorization = job.authorization
        if authorization and authorization.rate_limited_until and (
            authorization.rate_limited_until > now
        ):
            lifecycle.hold_back(
                job, Trigger.RATE_LIMITED, now=now, until=authorization.rate_limited_until,
                code="rate_limited",
                message=f"Holding back: authorization “{authorization.label}” is rate limited",
            )
            return True
        if not self.force and (quiet_end := schedule.in_quiet(
                schedule.load(job.schedule), now)):
            lifecycle.hold_back(job, Trigger.QUIET, now=now, until=quiet_end, code="quiet",
                                message="Quiet window")
            return True
        return False

    def renew(self, job: Job) -> bool:
        """Extend the lease before the next unit; False (and the lease let go) when the job
        was paused meanwhile or is no longer ours."""
        result = db.session.execute(
            update(Job)
            .where(Job.id == job.id, Job.lease_owner == self.owner, Job.status == Status.RUNNING)
            .values(lease_until=utcnow() + self.lease)
        )
        if result.rowcount != 1:
            db.session.execute(
                update(Job).where(Job.id == job.id, Job.lease_owner == self.owner)
                .values(lease_owner=None, lease_until=None)
            )
        else:
            # What a person's edit may have changed since the last unit ended: the next
            # unit starts with it (read under the row's lock the UPDATE took).
            db.session.refresh(job, attribute_names=["config", "authorization_id", "cursor"])
        db.session.commit()
        return result.rowcount == 1

    def unit(self, job: Job) -> str:
        """One unit of work; its data, cursor and events commit together."""
        found = get_job_type(job.provider, job.job_type)
        ctx = _Context(job, self.config["PORTAL_IMPORT_BATCH_SIZE"])
        cursor_read = job.cursor
        secrets: list[str] = []
        try:
            if found is None:
                raise ProviderError(
                    f"this portal has no job type {job.provider}/{job.job_type}",
                    code="unknown_job_type",
                )
            schema = found[1].config_schema
            try:  # the job's own secrets, opened for this unit only
                ctx.config = configsecrets.open_config(schema, job.config, what=f"job #{job.id}")
            except vault.VaultError as exc:
                raise ConfigError(str(exc), code="vault_error") from None
            secrets += configsecrets.config_secret_values(schema, ctx.config)
            if job.authorization is not None:
                # Decrypted in memory for this unit only (and renewed first if it is an
                # OAuth token about to expire); the decryption is audited.
                ctx.credentials = vault.credentials_for(
                    job.authorization, actor=f"job {job.id}", purpose=f"job {job.id}",
                    tally=self.decryptions)
                secrets += vault.secret_values(vault.method_of(job.authorization)[1],
                                               ctx.credentials)
            with _leases.holding(db.engine, job.id, self.owner, self.lease):
                result = found[1].run(ctx)
        except DBAPIError as exc:
            if background.database_unavailable(exc):
                raise  # not the job's fault: run() says so and queues it again
            return self._internal_error(job, exc, secrets)
        except RateLimited as exc:
            return self.rate_limited(job, exc)
        except AuthError as exc:
            return self.failed(job, vault.redact(str(exc), secrets), exc.code, retryable=True,
                               unhealthy=True)
        except vault.VaultError as exc:  # the credentials cannot be opened: a person must act
            return self.failed(job, str(exc), "vault_error", retryable=False, unhealthy=True)
        except ProviderError as exc:
            return self.failed(job, vault.redact(str(exc), secrets), exc.code,
                               retryable=exc.retryable)
        except Exception as exc:  # a bug or an outage we did not foresee: retry with backoff
            return self._internal_error(job, exc, secrets)
        finally:
            ctx.credentials, ctx.config = {}, {}
        result.message = vault.redact(result.message, secrets)
        return self.succeeded(job, result, [vault.redact(note, secrets) for note in ctx.notes],
                              cursor_read)

    def _internal_error(self, job: Job, exc: Exception, secrets: list[str]) -> str:
        trace = "".join(traceback.format_exception(exc))
        log.error("job %s: unit of work raised\n%s", job.id, vault.redact(trace, secrets))
        return self.failed(job, vault.redact(f"{type(exc).__name__}: {exc}", secrets),
                           "internal_error", True)

    def _still_ours(self, job: Job) -> bool:
        """Read the row afresh under a lock: a person may have paused the job, or the
        dispatcher may have declared this worker lost, while the unit ran."""
        db.session.refresh(job, with_for_update=True)
        if job.status_changed_at != self.moved_at:
            self.job_run = None  # moved by someone else: the lifecycle finds the run
        if job.lease_owner == self.owner:
            return True
        log.warning("job %s: lease lost while the unit ran; its work is discarded", job.id)
        db.session.rollback()
        return False

    def _finish(self, job: Job, keep_lease: bool) -> None:
        if not keep_lease:
            job.lease_owner = None
            job.lease_until = None
        db.session.commit()

    def succeeded(self, job: Job, result: WorkResult, notes: list[str],
                  cursor_read: dict | None = None) -> str:
        if not self._still_ours(job):
            return "lease lost"
        now = utcnow()
        if cursor_read is not None and job.cursor != cursor_read:
            # A person's edit reset the cursor while the unit ran (an import given a new
            # file): theirs wins, and the next unit starts the new file from its beginning.
            result = replace(result, cursor=None, done=False, more_now=True)
        job.cursor = result.cursor if result.cursor is not None else job.cursor
        job.last_run_at = now
        message = "; ".join([*notes, result.message] if result.message else notes)
        outcome = "stopped"
        if job.status == Status.RUNNING:
            try:  # a next run is only needed when the job goes to sleep until then
                next_run_at = None if result.done or result.more_now else schedule.next_run(
                    schedule.load(job.schedule), now)
            except schedule.ScheduleError as exc:  # never a crash: the job fails, saying why
                lifecycle.schedule_broken(job, now=now, reason=str(exc), unit_message=message,
                                          counts=result.counts, run=self.job_run)
            else:
                lifecycle.unit_succeeded(
                    job, now=now, done=result.done, more_now=result.more_now,
                    next_run_at=next_run_at, message=message, counts=result.counts,
                    idle=not notes,  # the provider logged nothing; lifecycle checks counts
                    progress_done=result.progress_done, progress_total=result.progress_total,
                    run=self.job_run,
                )
            self.moved_at = job.status_changed_at
            outcome = "more" if job.status == Status.RUNNING else job.status
        self._finish(job, keep_lease=outcome == "more")
        return outcome

    def failed(self, job: Job, message: str, code: str, retryable: bool,
               unhealthy: bool = False) -> str:
        db.session.rollback()  # nothing the unit wrote may land
        if not self._still_ours(job):
            return "lease lost"
        now = utcnow()
        job.last_run_at = now
        if unhealthy and job.authorization_id is not None:
            vault.mark_unhealthy(job.authorization_id, message, actor=f"job {job.id}")
        if job.status == Status.RUNNING:
            lifecycle.unit_failed(job, now=now, message=message, code=code, retryable=retryable,
                                  run=self.job_run)
        self._finish(job, keep_lease=False)
        return str(job.status)

    def rate_limited(self, job: Job, exc: RateLimited) -> str:
        db.session.rollback()
        if not self._still_ours(job):
            return "lease lost"
        now = utcnow()
        until = now + timedelta(seconds=max(exc.retry_after, 1))
        job.last_run_at = now
        if job.authorization_id is not None:
            # Every job on this authorization shares the provider's budget: hold them all.
            authorization = db.session.get(Authorization, job.authorization_id,
                                           with_for_update=True)
            if not authorization.rate_limited_until or authorization.rate_limited_until < until:
                authorization.rate_limited_until = until
        if job.status == Status.RUNNING:
            lifecycle.hold_back(job, Trigger.RATE_LIMITED, now=now, until=until,
                                code=exc.code, message=f"Provider rate limit: {exc}",
                                unit=True, run=self.job_run)
        self._finish(job, keep_lease=False)
        return str(job.status)
