"""Cron expressions are checked when saved (five fields, runs to come, one minute apart),
and a stored schedule that cannot work fails its job with the reason, never a worker."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import select

from portal.extensions import db
from portal.jobs import create_job
from portal.models import Draft, Job
from portal.schedule import Schedule, next_run, problems
from providers import get_job_type
from tests.test_job_path import events, fresh
from tests.test_wizard import SHOWCASE, post
from workers.dispatcher import dispatch_once

NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize("expression,words", [
    ("0 0 31 2 *", "never runs in the next five years"),
    ("0 0 30 2 *", "never runs in the next five years"),
    ("0 0 29 2 *", "runs only once in the next five years"),  # 2028, then 2032
    ("* * * * * *", "not 6: seconds and years are not supported"),
    ("*/5 * * * * * 2027", "not 7: seconds and years are not supported"),
    ("@reboot", "“@reboot” is not supported"),
    ("R * * * *", "R (random) values are not supported"),
    ("H * * * *", "Not a valid cron expression"),
    ("every day", "Not a valid cron expression"),
])
def test_cron_expressions_that_cannot_work_are_refused(expression, words):
    found = problems({"kind": "cron", "cron": expression, "timezone": "Europe/Paris"}, NOW)
    assert words in found["cron"]


@pytest.mark.parametrize("expression", [
    "0 3 * * *", "* * * * *", "@hourly", "@daily", "0 12 * jan-mar thu", "0 0 L * *",
    "0 0 * * 1#1", "* * 29 2 *"])
def test_cron_expressions_that_run_are_accepted(expression):
    assert problems({"kind": "cron", "cron": expression, "timezone": "Europe/Paris"}, NOW) == {}


def test_a_nickname_runs_as_its_five_fields():
    assert next_run(Schedule(kind="cron", cron="@daily"), NOW) == datetime(2026, 11, 30,
                                                                         tzinfo=UTC)


def test_the_schedule_step_says_what_is_wrong_with_the_cron(client, auth):
    auth.login()
    assert post(client, auth, SHOWCASE, title="T", **{"limits.daily": "5"}).status_code == 303
    draft = db.session.scalar(select(Draft))
    response = post(client, auth, f"/jobs/new/drafts/{draft.id}/schedule", name="Feb",
                    **{"schedule-kind": "cron", "schedule-cron": "0 0 31 2 *",
                       "schedule-timezone": "UTC"})
    page = response.get_data(as_text=True)
    assert response.status_code == 422
    assert "never runs in the next five years" in page.split(
        'id="field-schedule-cron-error">')[1].split("</")[0]
    db.session.expire_all()
    assert draft.step != "review", "not on to Create with it"


@pytest.fixture
def stored_schedule_job(app, make_user):
    """A job whose schedule an older database holds as it is, without today's checks."""

    def make(stored: dict) -> Job:
        provider, kind = get_job_type("faults", "script")
        job = create_job(provider=provider, job_type=kind, authorization=None,
                         name="old schedule", description="", config={"units": 0,
                                                                      "more_now": False},
                         created_by=make_user("operator", "old@example.com"))
        job.schedule = stored
        db.session.commit()
        return job

    return make


@pytest.mark.parametrize("stored,ran,words", [
    ({"kind": "cron", "cron": "0 0 31 2 *"}, True,
     "The cron expression “0 0 31 2 *” never fires again"),
    ({"kind": "cron", "cron": "* * * * * *"}, False,
     "The cron expression “* * * * * *” cannot run: Use five fields"),
    ({"kind": "interval", "every_minutes": 0, "quiet_start": "01:00", "quiet_end": "02:00"},
     False, "The schedule's interval 0 is not a whole number of minutes"),
    ({"kind": "interval", "every_minutes": 10**12}, False,
     "The schedule's interval 1000000000000 is not a whole number of minutes from 1"),
    ({"kind": "cron", "cron": "0 3 * * *", "quiet_start": "25:00", "quiet_end": "02:00"},
     False, "The quiet window's time '25:00' is not HH:MM"),
    ({"kind": "cron", "cron": "0 3 * * *", "timezone": "Mars/Base"}, False,
     "The schedule's timezone 'Mars/Base' is unknown"),
])
def test_a_stored_schedule_that_cannot_work_fails_the_job_saying_why(
        stored_schedule_job, work, stored, ran, words):
    job = stored_schedule_job(stored)
    work()
    job = fresh(job)
    assert job.status == "failed" and job.lease_owner is None
    found = events(job)
    expected = ["created", "started", "synced"] if ran else ["created"]
    assert [event.kind for event in found] == [*expected, "error", "failed"]
    error = found[-2]
    assert error.code == "bad_schedule" and error.message.startswith(words)
    assert "create it again from the wizard" in error.message
    assert "the error before this says why" in found[-1].message
    dispatch_once()
    work()
    assert [event.kind for event in events(job)] == [event.kind for event in found], (
        "no worker lost, no retry loop: it stays Failed")


def test_the_five_year_horizon_includes_its_last_moment():
    from datetime import timedelta

    from portal.schedule import HORIZON, cron_problem

    # Leap days at noon: 2028-02-29, then 2032-02-29, exactly HORIZON after `now`.
    now = datetime(2032, 2, 29, 12, 0, tzinfo=UTC) - HORIZON
    assert cron_problem("0 12 29 2 *", "UTC", now) is None
    assert cron_problem("0 12 29 2 *", "UTC", now - timedelta(minutes=1)) == (
        "This expression runs only once in the next five years (e.g. February 31st is a day "
        "that never comes); give one that runs at least twice in that time.")


def test_the_messages_name_what_to_use_instead():
    from portal.schedule import cron_form_problem

    assert cron_form_problem("@reboot") == (
        "“@reboot” is not supported; use five fields (minute hour day month weekday) or one "
        "of @yearly, @annually, @monthly, @weekly, @daily, @midnight, @hourly.")
    assert cron_form_problem("0 0 * * * *") == (
        "Use five fields (minute hour day month weekday), not 6: seconds and years are not "
        "supported, and runs are at least 1 minute apart.")
    assert cron_form_problem("H * * * *") == (
        "Not a valid cron expression (minute hour day month weekday).")
    assert cron_form_problem("0 0 * * r") == (
        "H (hashed) and R (random) values are not supported; give the times as numbers.")
    assert cron_form_problem(" @Daily ") is None


@pytest.mark.parametrize("data,expected", [
    ({"kind": "once", "quiet_start": "22:00"},
     {"quiet_end": "Give both ends of the quiet window, or neither."}),
    ({"kind": "once", "quiet_end": "06:00"},
     {"quiet_start": "Give both ends of the quiet window, or neither."}),
    ({"kind": "once", "quiet_start": "22:00", "quiet_end": "06:00"}, {}),
    ({"kind": "cron", "cron": "0 3 * * *", "timezone": "Mars/Olympus_Mons"},
     {"timezone": "Unknown timezone; use a name such as UTC or Europe/Paris."}),
    ({"kind": "cron"}, {"cron": "Not a valid cron expression (minute hour day month weekday)."}),
])
def test_problems_name_exactly_the_fields_at_fault(data, expected):
    assert problems(data, NOW) == expected


def test_problems_without_a_time_judge_from_now():
    assert problems({"kind": "cron", "cron": "0 3 * * *", "timezone": "Europe/Paris"}) == {}
    assert "never runs" in problems({"kind": "cron", "cron": "0 0 31 2 *"})["cron"]
