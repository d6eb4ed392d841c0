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

How: the (at, context) rows of that job within the frame are fetched and bucketed in Python.
Bucketing in SQL would need per-dialect date arithmetic (strftime on SQLite, extract/
date_trunc on PostgreSQL) and per-dialect casts of the JSON counts; in Python the counts
are read as `portal.jobs.metrics` reads them (int()), a missing or odd one counting 0.
The rows are chosen by `at` itself, not by the order of ids: an event's `at` is the `now`
of the code that wrote it, so ids follow time only roughly, and a cut by id could drop or
take events near the frame's start. The query reaches the job's events through the
(job_id, id) index and checks `at` on each; an index on (job_id, at) would make it a pure
range scan if a job's log ever grows large enough for that to matter.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select

from portal.extensions import db
from portal.models import JobEvent

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

    rows = db.session.execute(
        select(JobEvent.at, JobEvent.context)
        .where(JobEvent.job_id == job_id, JobEvent.at > start, JobEvent.at <= now)
        .execution_options(yield_per=1000)
    )
    for at, context in rows:
        index = (at - first) // spec.bucket  # 0 .. buckets - 1, as start < at <= now
        for key in COUNTS:
            counts[key][index] += _count((context or {}).get(key))

    total = {key: sum(values) for key, values in counts.items()}
    return {
        "frame": frame,
        "labels": labels,
        **counts,
        "total": total,
        "empty": not any(total.values()),
    }


def _count(value: Any) -> int:
    """A count from an event's context; anything that is not a number counts 0."""
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0
