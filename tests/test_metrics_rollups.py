"""The hourly rollups behind the metrics chart (portal.metrics, job_metric_hours) always
equal the sums of the events they stand for: written with each event, gone with the job,
added up (not overwritten) by concurrent writers, and filled by the migration from the
events already there."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from flask_migrate import upgrade
from sqlalchemy import create_engine, select, text

from portal import jobs, lifecycle
from portal.extensions import db
from portal.lifecycle import Event
from portal.metrics import COUNTS, series
from portal.models import Job, JobEvent, JobMetricHour
from tests.conftest import _make_app

NOW = datetime(2026, 6, 10, 14, 37, 12, 500000, tzinfo=UTC)


@pytest.fixture
def make_job(app, make_user):
    owner = make_user("operator", "owner@example.com")

    def make(name: str = "rollup job", status: str = "running") -> Job:
        job = Job(name=name, provider="faults", job_type="script", kind="import",
                  status=status, created_by_id=owner.id, updated_by_id=owner.id)
        db.session.add(job)
        db.session.commit()
        return job

    return make


def rollups(job_id: int | None = None) -> dict[tuple[int, datetime], tuple[int, int, int]]:
    query = select(JobMetricHour)
    if job_id is not None:
        query = query.where(JobMetricHour.job_id == job_id)
    return {(row.job_id, row.hour): (row.added, row.removed, row.omitted)
            for row in db.session.scalars(query)}


def number(value) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0


def sums_of_events() -> dict[tuple[int, datetime], tuple[int, int, int]]:
    """What the rollups must hold, summed in Python from every event."""
    found: dict[tuple[int, datetime], list[int]] = {}
    for event in db.session.scalars(select(JobEvent)):
        hour = event.at.replace(minute=0, second=0, microsecond=0)
        counts = [number((event.context or {}).get(key)) for key in COUNTS]
        total = found.setdefault((event.job_id, hour), [0, 0, 0])
        for n, value in enumerate(counts):
            total[n] += value
    return {key: tuple(value) for key, value in found.items() if any(value)}


def test_record_rolls_up_each_hour_in_the_same_transaction(make_job):
    job, other = make_job(), make_job("other")
    lifecycle.record(job, Event.SYNCED, "a", now=NOW, counts={"added": 3, "omitted": 1})
    lifecycle.record(job, Event.SYNCED, "b", now=NOW + timedelta(minutes=20),
                     counts={"added": 2, "removed": 5})
    lifecycle.record(job, Event.SYNCED, "c", now=NOW - timedelta(hours=1), counts={"added": 7})
    lifecycle.record(job, Event.EDITED, "no counts", now=NOW - timedelta(hours=3))
    lifecycle.record(other, Event.SYNCED, "d", now=NOW, counts={"removed": 4})
    db.session.commit()

    hour = datetime(2026, 6, 10, 14, tzinfo=UTC)
    assert rollups(job.id) == {(job.id, hour): (5, 5, 1),
                               (job.id, hour - timedelta(hours=1)): (7, 0, 0)}
    assert rollups(other.id) == {(other.id, hour): (0, 4, 0)}
    assert rollups() == sums_of_events()

    # Rolled back with the event that made it.
    lifecycle.record(job, Event.SYNCED, "undone", now=NOW, counts={"added": 100})
    db.session.rollback()
    assert rollups(job.id)[(job.id, hour)] == (5, 5, 1)


def test_series_reads_the_same_from_rollups_at_every_edge(make_job):
    """Events on both sides of each edge of the frame, at every minute of the hours the
    frame cuts, for frames whose start falls early and late in its hour."""
    job = make_job()
    for minutes in range(-24 * 60 - 70, 70, 7):
        lifecycle.record(job, Event.SYNCED, "", now=NOW + timedelta(minutes=minutes,
                                                                    seconds=minutes % 13),
                         counts={"added": 1, "removed": minutes % 3, "omitted": 2})
    db.session.commit()
    for now in (NOW, NOW.replace(minute=5), NOW.replace(minute=55), NOW.replace(minute=0,
                second=0, microsecond=0)):
        for frame in ("24h", "7d", "30d"):
            chart = series(job.id, frame, now)
            start = now - (timedelta(hours=24) if frame == "24h" else
                           timedelta(days=7 if frame == "7d" else 30))
            inside = [event for event in db.session.scalars(select(JobEvent))
                      if start < event.at <= now]
            assert chart["total"] == {key: sum(int(event.context[key]) for event in inside)
                                      for key in COUNTS}, (now, frame)
            first = datetime.fromisoformat(chart["labels"][0])
            size = datetime.fromisoformat(chart["labels"][1]) - first
            for key in COUNTS:
                expected = [0] * len(chart["labels"])
                for event in inside:
                    expected[(event.at - first) // size] += int(event.context[key])
                assert chart[key] == expected, (now, frame, key)


def test_a_job_delete_and_the_purge_take_its_rollups(make_job, make_user):
    admin = make_user("admin", "admin@example.com")
    kept, deleted, purged = make_job("kept"), make_job("deleted", "paused"), make_job(
        "purged", "completed")
    for job in (kept, deleted, purged):
        lifecycle.record(job, Event.SYNCED, "", now=NOW, counts={"added": 1})
    purged.terminal_at = NOW - timedelta(days=100)
    db.session.commit()
    assert {job_id for job_id, _ in rollups()} == {kept.id, deleted.id, purged.id}

    jobs.delete_job(deleted, by=admin)
    assert jobs.purge(now=NOW, days=90) == 1

    assert {job_id for job_id, _ in rollups()} == {kept.id}
    assert rollups() == sums_of_events()


def test_concurrent_writers_of_the_same_hour_add_up(app, make_job):
    job_ids = [make_job(f"job {n}").id for n in range(2)]
    writers, per_writer = 4, 15
    failures: list[BaseException] = []
    barrier = threading.Barrier(writers)

    def write(n: int) -> None:
        try:
            with app.app_context():
                barrier.wait(10)
                for i in range(per_writer):
                    job = db.session.get(Job, job_ids[(n + i) % 2])
                    lifecycle.record(job, Event.SYNCED, f"{n}/{i}",
                                     now=NOW + timedelta(seconds=i),
                                     counts={"added": 1, "removed": n})
                    for attempt in range(50):  # SQLite may answer "locked" meanwhile
                        try:
                            db.session.commit()
                            break
                        except Exception:
                            db.session.rollback()
                            if attempt == 49:
                                raise
                            job = db.session.get(Job, job_ids[(n + i) % 2])
                            lifecycle.record(job, Event.SYNCED, f"{n}/{i}",
                                             now=NOW + timedelta(seconds=i),
                                             counts={"added": 1, "removed": n})
                db.session.remove()
        except BaseException as error:  # noqa: BLE001 - reported below
            failures.append(error)

    threads = [threading.Thread(target=write, args=(n,)) for n in range(writers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not failures, failures
    db.session.expire_all()
    hour = datetime(2026, 6, 10, 14, tzinfo=UTC)
    assert sum(rollups()[(job_id, hour)][0] for job_id in job_ids) == writers * per_writer
    assert rollups() == sums_of_events()


def test_the_migration_fills_the_rollups_from_the_events(database_url, redis_url, tmp_path):
    """Events written before the rollups existed (the previous revision's schema) are
    rolled up by the migration exactly as they would have been when written."""
    if database_url.startswith("postgresql"):
        schema = "rollup_backfill"
        engine = create_engine(database_url)
        with engine.begin() as connection:
            connection.execute(text(f"DROP SCHEMA IF EXISTS {schema} CASCADE; "
                                    f"CREATE SCHEMA {schema}"))
        url = database_url + ("&" if "?" in database_url else "?") + \
            f"options=-csearch_path%3D{schema}"
    else:
        url = f"sqlite:///{Path(tmp_path) / 'backfill.db'}"
    app = _make_app(url, redis_url, tmp_path / "instance")
    with app.app_context():
        upgrade(revision="e6a8c0b2d4f6")
        with db.engine.begin() as connection:
            for job_id in (1, 2):
                connection.execute(text(
                    "INSERT INTO jobs (id, name, description, provider, job_type, kind, queue,"
                    " config, schedule, retry_policy, status, cursor, dispatch_count,"
                    " error_count, added_total, removed_total, omitted_total,"
                    " status_changed_at, created_at, updated_at, keep) VALUES (:id, 'j', '',"
                    " 'faults', 'script', 'import', 'default', '{}', '{}', '{}', 'running',"
                    " '{}', 0, 0, 0, 0, 0, :t, :t, :t, false)"),
                    {"id": job_id, "t": NOW.replace(tzinfo=None)})
            contexts = ['{"added": 2, "removed": 1, "omitted": 0}',
                        '{"added": "4", "removed": null}',  # a number as text, a null
                        '{"user_email": "o@example.com"}',  # no counts
                        '{"added": 0, "removed": 0, "omitted": 0}',
                        '{"added": 1.0, "omitted": 3}',
                        '{"added": "many", "omitted": 5}']
            for n in range(60):
                connection.execute(text(
                    "INSERT INTO job_events (job_id, at, kind, level, code, message, context)"
                    " VALUES (:job, :at, 'synced', 'info', '', '', :context)"),
                    {"job": 1 + n % 2, "at": (NOW - timedelta(minutes=37 * n)).replace(
                        tzinfo=None), "context": contexts[n % len(contexts)]})
        upgrade()
        expected = sums_of_events()
        assert rollups() == expected and len(expected) > 10
        for job_id in (1, 2):
            chart = series(job_id, "30d", NOW)
            events = [event for event in db.session.scalars(
                select(JobEvent).where(JobEvent.job_id == job_id))
                if NOW - timedelta(days=30) < event.at <= NOW]
            assert chart["total"]["omitted"] == sum(
                number(event.context.get("omitted")) for event in events)
        db.session.remove()
        db.engine.dispose()
    if database_url.startswith("postgresql"):
        with engine.begin() as connection:
            connection.execute(text(f"DROP SCHEMA {schema} CASCADE"))
        engine.dispose()
