"""A job's metrics over a time frame: profiles added, removed and omitted per time bucket.

No request objects here; the route picks the frame and the template draws the chart.

Frames (the span ending at `now`, cut into buckets aligned to UTC boundaries):

    key   span       bucket      buckets
    24h   24 hours   1 hour      25
    7d    7 days     6 hours     29
    30d   30 days    1 day       31
    90d   90 days    1 day       91

A frame counts the events with `now - span < at <= now`. Its buckets are aligned to the UTC
grid (whole hours; 00:00, 06:00, 12:00, 18:00; midnights), so covering the whole span takes
span / bucket + 1 of them: the first holds the moment `now - span`, the last holds `now`;
both are partial. The count is the same whatever `now` is, and buckets without events are 0.

How: from hourly rollups. Every event with counts adds them to its job's row of the UTC
hour it falls in (JobMetricHour), in the same flush as the event itself (`roll_up`, run
for each JobEvent the ORM inserts), so a frame of a million events reads at most 24 × 90
rollup rows. Buckets are whole hours (or multiples of them), so every hour lies in one
bucket; only the frame's two edges cut an hour: the first hour holds events at or before
`now - span`, the last may hold events after `now` (a clock a little ahead). Those are
taken off again from the raw events, reading whichever side of the cut holds less time
(for the last hour, usually the empty future), so the result is exactly the events with
`now - span < at <= now`. Counts are read as `portal.jobs.metrics` reads them (int()),
a missing or odd one counting 0; events whose counts are all 0 write no rollup.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import event, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from portal.extensions import db
from portal.models import JobEvent, JobMetricHour

COUNTS = ("added", "removed", "omitted")
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)  # buckets are whole multiples of their size from here


@dataclass(frozen=True)
class Frame:
    label: str  # "24 hours": reads after "in the last"
    span: timedelta
    bucket: timedelta  # divides a day, so buckets fall on UTC hour / day boundaries

    @property
    def buckets(self) -> int:
        """How many buckets cover the span, whatever `now` is (see the module docstring)."""
        return self.span // self.bucket + 1


FRAMES: dict[str, Frame] = {
    "24h": Frame("24 hours", timedelta(hours=24), timedelta(hours=1)),
    "7d": Frame("7 days", timedelta(days=7), timedelta(hours=6)),
    "30d": Frame("30 days", timedelta(days=30), timedelta(days=1)),
    "90d": Frame("90 days", timedelta(days=90), timedelta(days=1)),
}
DEFAULT_FRAME = "24h"
# For the selector in the template: [(key, label), ...] in display order.
FRAME_CHOICES: list[tuple[str, str]] = [(key, frame.label) for key, frame in FRAMES.items()]


def get_frame(frame: str) -> Frame:
    """The frame by key; ValueError for an unknown one."""
    try:
        return FRAMES[frame]
    except (KeyError, TypeError):
        raise ValueError(f"unknown metrics frame {frame!r}; one of {', '.join(FRAMES)}") from None


def bucket_start(moment: datetime, size: timedelta) -> datetime:
    """The start of the UTC-aligned bucket of `size` that holds `moment`."""
    return EPOCH + (moment - EPOCH) // size * size


def series(job_id: int, frame: str, now: datetime) -> dict[str, Any]:
    """The job's added/removed/omitted counts per bucket of `frame`, ending at `now`.

    Returns {"frame", "labels" (ISO starts of the buckets, UTC), "added", "removed",
    "omitted" (one count per bucket, zero-filled), "total" ({"added", "removed",
    "omitted"} over the frame), "empty" (True when all three totals are 0: events with
    zero counts, such as "created", are no metrics)}. ValueError for an unknown frame or
    a naive `now`.
    """
    spec = get_frame(frame)
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("naive datetime given; use an aware one (UTC)")
    now = now.astimezone(UTC)
    start = now - spec.span
    first = bucket_start(start, spec.bucket)
    labels = [(first + i * spec.bucket).isoformat() for i in range(spec.buckets)]
    counts = {key: [0] * spec.buckets for key in COUNTS}

    hour = timedelta(hours=1)
    first_hour, last_hour = bucket_start(start, hour), bucket_start(now, hour)
    for at, *found in db.session.execute(
        select(JobMetricHour.hour, JobMetricHour.added, JobMetricHour.removed,
               JobMetricHour.omitted)
        .where(JobMetricHour.job_id == job_id, JobMetricHour.hour >= first_hour,
               JobMetricHour.hour <= last_hour)
    ):
        _add(counts, (at - first) // spec.bucket, found)
    # The first hour: take off its events at or before `start`, or, when that side of the
    # cut is the longer one, count its events after `start` instead of its rollup.
    edge = {"first": first, "size": spec.bucket}
    if start - first_hour <= first_hour + hour - start:
        _add_events(counts, job_id, JobEvent.at >= first_hour, JobEvent.at <= start,
                    sign=-1, **edge)
    else:
        _add(counts, 0, _hour_of(job_id, first_hour), sign=-1)
        _add_events(counts, job_id, JobEvent.at > start, JobEvent.at < first_hour + hour,
                    **edge)
    # The last hour: take off its events after `now` (usually none).
    _add_events(counts, job_id, JobEvent.at > now, JobEvent.at < last_hour + hour,
                sign=-1, **edge)

    total = {key: sum(values) for key, values in counts.items()}
    return {
        "frame": frame,
        "labels": labels,
        **counts,
        "total": total,
        "empty": not any(total.values()),
    }


def _add(counts: dict[str, list[int]], index: int, found, sign: int = 1) -> None:
    for key, value in zip(COUNTS, found, strict=True):
        counts[key][index] += sign * value


def _hour_of(job_id: int, hour: datetime) -> tuple[int, int, int]:
    row = db.session.execute(
        select(JobMetricHour.added, JobMetricHour.removed, JobMetricHour.omitted)
        .where(JobMetricHour.job_id == job_id, JobMetricHour.hour == hour)).first()
    return tuple(row) if row is not None else (0, 0, 0)


def _add_events(counts: dict[str, list[int]], job_id: int, *within, first: datetime,
                size: timedelta, sign: int = 1) -> None:
    """Add (or with sign=-1 take off) the counts of the job's events `within` these
    conditions on `at`, each into the frame's bucket its time falls in."""
    rows = db.session.execute(
        select(JobEvent.at, JobEvent.context).where(JobEvent.job_id == job_id, *within)
        .execution_options(yield_per=1000))
    for at, context in rows:
        _add(counts, (at - first) // size, _counts(context), sign)


def _counts(context: Any) -> tuple[int, int, int]:
    context = context if isinstance(context, dict) else {}
    return tuple(_count(context.get(key)) for key in COUNTS)


def roll_up(connection, events: list[tuple[int, datetime, Any]]) -> None:
    """Add the counts of these (job_id, at, context) events to their jobs' rollups of the
    hours they fall in (nothing for events whose counts are all 0): an upsert that
    increments, so concurrent writers of the same hour add up instead of overwriting."""
    hours: dict[tuple[int, datetime], list[int]] = {}
    for job_id, at, context in events:
        counts = _counts(context)
        if any(counts):
            found = hours.setdefault((job_id, bucket_start(at, timedelta(hours=1))), [0, 0, 0])
            for n, value in enumerate(counts):
                found[n] += value
    if not hours:
        return
    insert = pg_insert if connection.dialect.name == "postgresql" else sqlite_insert
    table = JobMetricHour.__table__
    for (job_id, hour), (added, removed, omitted) in hours.items():
        statement = insert(table).values(job_id=job_id, hour=hour, added=added,
                                         removed=removed, omitted=omitted)
        connection.execute(statement.on_conflict_do_update(
            index_elements=[table.c.job_id, table.c.hour],
            set_={key: table.c[key] + statement.excluded[key] for key in COUNTS}))


@event.listens_for(JobEvent, "after_insert")
def _event_written(mapper, connection, target: JobEvent) -> None:
    """Every event the ORM writes (lifecycle.record, or any other) is rolled up in the
    same flush, so rollups and events commit or roll back together."""
    roll_up(connection, [(target.job_id, target.at, target.context)])


@event.listens_for(Session, "do_orm_execute")
def _events_inserted(state) -> Any:
    """Events inserted in bulk (`session.execute(insert(JobEvent), rows)`, which runs no
    per-row hook) are rolled up too, in the same transaction."""
    if not (state.is_insert and state.bind_mapper is not None
            and state.bind_mapper.class_ is JobEvent):
        return None
    rows = state.parameters if isinstance(state.parameters, list) else [state.parameters or {}]
    if any("at" not in row for row in rows):
        raise ValueError("events inserted in bulk must name their time (`at`)")
    result = state.invoke_statement()
    roll_up(state.session.connection(), [(row["job_id"], row["at"], row.get("context"))
                                         for row in rows])
    return result


def _count(value: Any) -> int:
    """A count from an event's context; anything that is not a number counts 0."""
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0
