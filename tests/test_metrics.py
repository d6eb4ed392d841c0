"""A job's metrics per time frame (portal.metrics.series) against real rows, and the chart
fragment rendered from it."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta, timezone

import pytest
from flask import render_template

from portal.extensions import db
from portal.metrics import FRAME_CHOICES, FRAMES, series
from portal.models import Job, JobEvent

NOW = datetime(2026, 6, 10, 14, 37, 12, 500000, tzinfo=UTC)


@pytest.fixture
def make_job(app, make_user):
    owner = make_user("operator", "owner@example.com")

    def make(name: str = "metrics job") -> Job:
        job = Job(name=name, provider="faults", job_type="script", kind="import",
                  status="running", created_by_id=owner.id, updated_by_id=owner.id)
        db.session.add(job)
        db.session.commit()
        return job

    return make


def add_event(job: Job, at: datetime, added: int = 0, removed: int = 0, omitted: int = 0,
              **context) -> None:
    db.session.add(JobEvent(job_id=job.id, at=at, kind="synced", message="",
                            context={"added": added, "removed": removed, "omitted": omitted,
                                     **context}))
    db.session.commit()


def bucket_of(chart: dict, at: datetime) -> int:
    """The index of the bucket whose ISO start is the last one not after `at`."""
    starts = [datetime.fromisoformat(label) for label in chart["labels"]]
    return max(i for i, start in enumerate(starts) if start <= at)


def test_frames_have_the_documented_buckets(make_job):
    job = make_job()
    expected = {"24h": (25, timedelta(hours=1)), "7d": (29, timedelta(hours=6)),
                "30d": (31, timedelta(days=1)), "90d": (91, timedelta(days=1))}
    assert set(FRAMES) == set(expected)
    for key, (count, size) in expected.items():
        assert FRAMES[key].buckets == count
        chart = series(job.id, key, NOW)
        assert chart["frame"] == key
        starts = [datetime.fromisoformat(label) for label in chart["labels"]]
        assert len(starts) == count
        for name in ("added", "removed", "omitted"):
            assert chart[name] == [0] * count  # zero-filled
        # Aligned to UTC boundaries, one bucket apart, the first holding the frame's start
        # and the last holding now.
        assert all(start.utcoffset() == timedelta(0) for start in starts)
        assert all((start - datetime(2026, 1, 1, tzinfo=UTC)) % size == timedelta(0)
                   for start in starts)
        assert all(b - a == size for a, b in zip(starts, starts[1:], strict=False))
        assert starts[0] <= NOW - FRAMES[key].span < starts[0] + size
        assert starts[-1] <= NOW < starts[-1] + size
        assert chart["total"] == {"added": 0, "removed": 0, "omitted": 0}
        assert chart["empty"] is True


def test_buckets_add_up_to_the_events_in_the_frame(make_job):
    job, other = make_job(), make_job("other job")
    inside = [
        (NOW, 1, 0, 0),  # now itself: the last bucket
        (NOW - timedelta(minutes=30), 2, 1, 0),  # 14:07, same bucket as now
        (NOW - timedelta(minutes=40), 4, 0, 3),  # 13:57, the bucket before
        (NOW - timedelta(hours=5), 8, 2, 0),
        (NOW - timedelta(hours=24) + timedelta(microseconds=1), 16, 0, 5),  # first bucket
    ]
    for at, added, removed, omitted in inside:
        add_event(job, at, added, removed, omitted)
    add_event(job, NOW - timedelta(hours=24), 100, 100, 100)  # the frame's start: outside
    add_event(job, NOW - timedelta(days=3), 1000, 0, 0)  # long before
    add_event(job, NOW + timedelta(seconds=1), 10000, 0, 0)  # after now
    add_event(other, NOW - timedelta(hours=1), 99999, 0, 0)  # another job's

    chart = series(job.id, "24h", NOW)

    assert chart["total"] == {"added": 31, "removed": 3, "omitted": 8}
    assert sum(chart["added"]) == 31 and sum(chart["removed"]) == 3
    assert sum(chart["omitted"]) == 8
    assert chart["empty"] is False
    assert chart["labels"][-1] == "2026-06-10T14:00:00+00:00"
    assert chart["labels"][0] == "2026-06-09T14:00:00+00:00"
    assert chart["added"][-1] == 3 and chart["removed"][-1] == 1  # now's bucket
    assert chart["added"][-2] == 4 and chart["omitted"][-2] == 3
    assert chart["added"][bucket_of(chart, NOW - timedelta(hours=5))] == 8
    assert chart["added"][0] == 16 and chart["omitted"][0] == 5
    expected_added = [0] * 25
    for at, added, _, _ in inside:
        expected_added[bucket_of(chart, at)] += added
    assert chart["added"] == expected_added

    # The wider frames take the older event and still leave out the later one.
    week = series(job.id, "7d", NOW)
    assert week["total"]["added"] == 31 + 100 + 1000
    assert week["added"][-1] == 1 + 2 + 4  # 12:00–18:00 holds 13:57, 14:07 and now
    assert series(job.id, "90d", NOW)["total"] == {"added": 1131, "removed": 103,
                                                   "omitted": 108}


def test_daily_buckets_and_frame_edges(make_job):
    job = make_job()
    add_event(job, datetime(2026, 6, 10, 0, 0, tzinfo=UTC), 5)  # today's midnight
    add_event(job, datetime(2026, 6, 9, 23, 59, 59, tzinfo=UTC), 7)  # yesterday
    add_event(job, NOW - timedelta(days=30) + timedelta(seconds=1), 11)  # 2026-05-11 14:37
    add_event(job, NOW - timedelta(days=30) - timedelta(seconds=1), 13)  # outside 30d

    chart = series(job.id, "30d", NOW)

    assert chart["labels"][0] == "2026-05-11T00:00:00+00:00"
    assert chart["labels"][-1] == "2026-06-10T00:00:00+00:00"
    assert chart["added"][-1] == 5 and chart["added"][-2] == 7
    assert chart["added"][0] == 11
    assert chart["total"]["added"] == 23


def test_counts_are_read_like_the_job_totals(make_job):
    job = make_job()
    add_event(job, NOW - timedelta(minutes=5), added="4")  # a number as text
    db.session.add(JobEvent(job_id=job.id, at=NOW - timedelta(minutes=4), kind="created",
                            context={"user_email": "owner@example.com"}))  # no counts
    db.session.add(JobEvent(job_id=job.id, at=NOW - timedelta(minutes=3), kind="synced",
                            context={"added": None, "removed": 2}))
    db.session.commit()

    assert series(job.id, "24h", NOW)["total"] == {"added": 4, "removed": 2, "omitted": 0}


def test_events_without_counts_are_no_metrics(make_job):
    job = make_job()
    add_event(job, NOW - timedelta(hours=1))  # e.g. "created": all counts 0
    chart = series(job.id, "24h", NOW)
    assert chart["empty"] is True
    assert chart["total"] == {"added": 0, "removed": 0, "omitted": 0}


def test_now_in_another_time_zone_is_the_same_moment(make_job):
    job = make_job()
    add_event(job, NOW - timedelta(minutes=10), 3)
    elsewhere = NOW.astimezone(timezone(timedelta(hours=2)))
    assert series(job.id, "24h", elsewhere) == series(job.id, "24h", NOW)


def test_unknown_frame_and_naive_now_are_refused(make_job):
    job = make_job()
    for frame in ("1h", "", "24H", None):
        with pytest.raises(ValueError):
            series(job.id, frame, NOW)
    with pytest.raises(ValueError):
        series(job.id, "24h", NOW.replace(tzinfo=None))


def render_fragment(app, job: Job, chart: dict) -> str:
    if "jobs.metrics_chart" not in app.view_functions:  # until the route exists
        app.add_url_rule("/jobs/<int:job_id>/metrics", "jobs.metrics_chart",
                         lambda job_id: "")
    with app.test_request_context():
        return render_template("jobs/_metrics.html", job=job, chart=chart,
                               frames=FRAME_CHOICES)


def test_fragment_draws_the_chart_of_a_job_with_metrics(app, make_job):
    job = make_job()
    add_event(job, NOW - timedelta(days=2), 1234, 5, 6)
    chart = series(job.id, "7d", NOW)

    html = render_fragment(app, job, chart)

    assert re.search(r'<section id="job-metrics-chart"', html)
    assert 'id="metrics-empty"' not in html
    assert re.search(r"<canvas [^>]*data-metrics", html)
    data = re.search(r'<script type="application/json" id="metrics-data">(.*?)</script>', html,
                     re.S)
    assert data and json.loads(data.group(1)) == chart
    assert 'id="metrics-total-added">1,234<' in html
    # The four frames, each fetching this fragment for its frame into its own place.
    buttons = re.findall(r"<button[^>]*>[^<]*</button>", html, re.S)
    assert [re.search(r">([^<]*)<", b).group(1) for b in buttons] == [
        "24 hours", "7 days", "30 days", "90 days"]
    for key, button in zip(("24h", "7d", "30d", "90d"), buttons, strict=True):
        assert f'hx-get="/jobs/{job.id}/metrics?frame={key}"' in button
        assert 'hx-target="#job-metrics-chart"' in button
        assert 'hx-swap="outerHTML"' in button
        assert ('aria-pressed="true"' in button) == (key == "7d")
    assert "<script>" not in html and "<script src" not in html  # no inline code


def test_fragment_shows_the_empty_state_without_metrics(app, make_job):
    job = make_job()
    add_event(job, NOW - timedelta(days=40), 9)  # only outside the frame

    html = render_fragment(app, job, series(job.id, "30d", NOW))

    assert re.search(r'<p [^>]*id="metrics-empty"[^>]*>No metrics in the last 30 days yet\.</p>',
                     html)
    assert "<canvas" not in html and "application/json" not in html
    assert 'id="job-metrics-chart"' in html and 'id="metrics-frames"' in html
