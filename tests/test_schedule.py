"""Cadences, timezones, DST and quiet windows."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from portal.schedule import Schedule, describe, from_dict, in_quiet, next_run, problems

NY = ZoneInfo("America/New_York")


def test_once_has_no_next_run():
    assert next_run(Schedule(), datetime(2026, 1, 1, tzinfo=UTC)) is None


def test_interval():
    after = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
    assert next_run(Schedule(kind="interval", every_minutes=15), after) == after + timedelta(
        minutes=15)


def test_cron_in_a_timezone():
    daily = Schedule(kind="cron", cron="0 3 * * *", timezone="Europe/Paris")
    after = datetime(2026, 1, 10, 5, 0, tzinfo=UTC)  # 06:00 in Paris
    assert next_run(daily, after) == datetime(2026, 1, 11, 2, 0, tzinfo=UTC)


def test_cron_when_clocks_spring_forward():
    # 02:30 does not exist in New York on 2026-03-08: the run happens at 03:00 local.
    daily = Schedule(kind="cron", cron="30 2 * * *", timezone="America/New_York")
    after = datetime(2026, 3, 7, 12, 0, tzinfo=UTC)
    got = next_run(daily, after)
    assert got.astimezone(NY).replace(tzinfo=None) == datetime(2026, 3, 8, 3, 0)
    following = next_run(daily, got)
    assert following.astimezone(NY).replace(tzinfo=None) == datetime(2026, 3, 9, 2, 30)


def test_cron_when_clocks_fall_back_runs_once():
    # 01:30 happens twice in New York on 2026-11-01; a daily job runs once that day.
    daily = Schedule(kind="cron", cron="30 1 * * *", timezone="America/New_York")
    first = next_run(daily, datetime(2026, 10, 31, 12, 0, tzinfo=UTC))
    assert first == datetime(2026, 11, 1, 5, 30, tzinfo=UTC)  # 01:30 EDT
    second = next_run(daily, first + timedelta(minutes=1))
    assert second.astimezone(NY).date() == datetime(2026, 11, 2).date()
    assert second == datetime(2026, 11, 2, 6, 30, tzinfo=UTC)  # 01:30 EST


@pytest.mark.parametrize("start,end,local,quiet_until", [
    ("09:00", "17:00", datetime(2026, 5, 4, 12, 0), datetime(2026, 5, 4, 17, 0)),
    ("09:00", "17:00", datetime(2026, 5, 4, 17, 0), None),
    ("09:00", "17:00", datetime(2026, 5, 4, 8, 59), None),
    ("22:00", "06:00", datetime(2026, 5, 4, 23, 30), datetime(2026, 5, 5, 6, 0)),
    ("22:00", "06:00", datetime(2026, 5, 5, 2, 0), datetime(2026, 5, 5, 6, 0)),
    ("22:00", "06:00", datetime(2026, 5, 5, 12, 0), None),
])
def test_quiet_windows(start, end, local, quiet_until):
    plan = Schedule(kind="interval", timezone="America/New_York", quiet_start=start,
                    quiet_end=end)
    got = in_quiet(plan, local.replace(tzinfo=NY).astimezone(UTC))
    expected = quiet_until and quiet_until.replace(tzinfo=NY).astimezone(UTC)
    assert got == expected


def test_next_run_skips_past_the_quiet_window():
    plan = Schedule(kind="interval", every_minutes=60, quiet_start="22:00", quiet_end="06:00")
    got = next_run(plan, datetime(2026, 5, 4, 21, 30, tzinfo=UTC))
    assert got == datetime(2026, 5, 5, 6, 0, tzinfo=UTC)


def test_problems_and_description():
    assert problems({"kind": "cron", "cron": "every day", "timezone": "Mars/Base"}) == {
        "cron": "Not a valid cron expression (minute hour day month weekday).",
        "timezone": "Unknown timezone; use a name such as UTC or Europe/Paris.",
    }
    assert problems({"quiet_start": "22:00"}) == {
        "quiet_end": "Give both ends of the quiet window, or neither."}
    assert problems({"kind": "interval", "timezone": "UTC"}) == {}
    assert describe(from_dict({"kind": "interval", "every_minutes": 5, "quiet_start": "01:00",
                               "quiet_end": "02:00"})) == "Every 5 minutes; quiet 01:00–02:00 (UTC)"
    for minutes, words in ((1, "Every minute"), (15, "Every 15 minutes"), (60, "Every hour"),
                           (90, "Every 90 minutes"), (120, "Every 2 hours")):
        assert describe(from_dict({"kind": "interval", "every_minutes": minutes})) == words
    assert from_dict({"kind": "cron", "timezone": "Nope/Nope"}) == Schedule()


def test_describe_says_each_cadence_in_words():
    assert describe(Schedule()) == "Runs once"
    assert describe(Schedule(kind="interval", every_minutes=120)) == "Every 2 hours"
    assert describe(Schedule(kind="cron", cron="0 3 * * *", timezone="Europe/Paris")) == (
        "Cron “0 3 * * *” (Europe/Paris)")
    assert describe(Schedule(kind="interval", every_minutes=15, quiet_start="22:00",
                             quiet_end="06:00", timezone="Europe/Oslo")) == (
        "Every 15 minutes; quiet 22:00–06:00 (Europe/Oslo)")


def test_a_cron_time_comes_back_in_the_callers_timezone():
    tokyo = ZoneInfo("Asia/Tokyo")
    after = datetime(2026, 6, 1, 9, 0, tzinfo=tokyo)  # 00:00 UTC
    moment = next_run(Schedule(kind="cron", cron="0 3 * * *", timezone="UTC"), after)
    assert moment.tzinfo is tokyo and moment == datetime(2026, 6, 1, 12, 0, tzinfo=tokyo)
