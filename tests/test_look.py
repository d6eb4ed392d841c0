"""Look and feel: relative times in the person's zone, the Settings page, the status
colours, the select-all box and the bulk bar."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest

from portal import ui
from portal.extensions import db
from portal.models import User

NOW = datetime(2026, 11, 29, 14, 30, 0, tzinfo=UTC)


@pytest.mark.parametrize(("offset", "zone", "words"), [
    (timedelta(seconds=-10), "UTC", "just now"),
    (timedelta(seconds=30), "UTC", "just now"),
    (timedelta(seconds=-50), "UTC", "1 min ago"),
    (timedelta(minutes=-3, seconds=-10), "UTC", "3 min ago"),
    (timedelta(minutes=-2, seconds=-30), "UTC", "3 min ago"),  # halves up, as portal.js
    (timedelta(minutes=5), "UTC", "in 5 min"),
    (timedelta(minutes=-59, seconds=-20), "UTC", "59 min ago"),
    (timedelta(hours=-2, minutes=-40), "UTC", "2 h ago"),
    (timedelta(hours=3), "UTC", "in 3 h"),
    (timedelta(hours=-20), "UTC", "yesterday 18:30"),
    (timedelta(hours=12), "UTC", "tomorrow 02:30"),
    (timedelta(days=-3), "UTC", "26 Nov 14:30"),
    (timedelta(days=-400), "UTC", "25 Oct 2025"),
    # Calendar days are the person's: 14:30 UTC is 23:30 in Tokyo, so 2 h later is
    # tomorrow there, and 10 h earlier is still today.
    (timedelta(hours=2), "Asia/Tokyo", "tomorrow 01:30"),
    (timedelta(hours=-10), "Asia/Tokyo", "10 h ago"),
    (timedelta(hours=-15), "America/New_York", "yesterday 18:30"),
])
def test_relative_words(offset, zone, words):
    assert ui.relative_time(NOW + offset, NOW, zone) == words


def test_exact_times_name_their_zone():
    assert ui.format_time(NOW, "UTC") == "2026-11-29 14:30:00 UTC"
    assert ui.format_time(NOW, "Europe/Paris") == "2026-11-29 15:30:00 Europe/Paris (UTC+01:00)"
    summer = datetime(2026, 7, 1, 12, 0, tzinfo=UTC)
    assert ui.format_time(summer, "America/New_York") == (
        "2026-07-01 08:00:00 America/New_York (UTC-04:00)")
    assert ui.format_time(None) == "—"


def test_the_time_tag(app):
    with app.test_request_context():
        tag = str(ui.time_tag(datetime(2020, 1, 2, 3, 4, 5, 678, tzinfo=UTC)))
        assert tag == ('<time class="when" datetime="2020-01-02T03:04:05Z" '
                       'title="2020-01-02 03:04:05 UTC">2 Jan 2020</time>')
        assert str(ui.time_tag(None)) == "—"


def test_message_sources(app):
    with app.test_request_context():
        assert str(ui.message_source("job:7")) == '<a href="/jobs/7">Job 7</a>'
        assert str(ui.message_source("api")) == "api"
        assert str(ui.message_source("job:<b>")) == "job:&lt;b&gt;"
        assert str(ui.message_source("job:99999999999999999999")) == "job:99999999999999999999"


def test_settings_change_the_zone_times_show_in(client, auth):
    user = auth.login("viewer")
    page = client.get("/settings").get_data(as_text=True)
    assert '<option selected value="UTC">UTC</option>' in page
    assert 'href="/settings"' in client.get("/jobs").get_data(as_text=True)
    response = client.post("/settings", data={"timezone": "Asia/Tokyo",
                                              "csrf_token": auth.csrf()})
    assert response.status_code == 303 and response.headers["Location"] == "/settings"
    assert db.session.get(User, user.id).timezone == "Asia/Tokyo"
    page = client.get("/settings").get_data(as_text=True)
    assert "Saved: times now show in Asia/Tokyo." in page
    assert 'data-timezone="Asia/Tokyo"' in page
    assert '<option selected value="Asia/Tokyo">' in page
    admin = auth.make_user("admin", "admin@example.com")
    assert admin.timezone == "UTC", "the default"


@pytest.mark.parametrize("zone", ["Mars/Olympus", "", "../../etc/passwd", "x" * 300])
def test_an_unknown_zone_is_a_field_error(client, auth, zone):
    user = auth.login("viewer")
    response = client.post("/settings", data={"timezone": zone, "csrf_token": auth.csrf()})
    assert response.status_code == 422
    page = response.get_data(as_text=True)
    assert re.search(r'class="form-select is-invalid"', page)
    assert 'id="timezone-error">Unknown time zone; pick one from the list' in page
    assert db.session.get(User, user.id).timezone == "UTC"


def test_settings_need_sign_in_and_csrf(client, auth):
    assert client.get("/settings").status_code == 302
    auth.login("viewer")
    assert client.post("/settings", data={"timezone": "Europe/Paris"}).status_code == 400


def test_table_times_follow_the_persons_zone(client, auth):
    from tests.test_data_page import fill

    user = auth.login("admin")
    fill("zoned", 1)
    for zone, shown in (("UTC", "UTC"), ("Europe/Paris", r"Europe/Paris \(UTC\+0[12]:00\)")):
        user.timezone = zone
        db.session.commit()
        for path in ("/data/streams/zoned", "/admin/audit", "/data"):
            page = client.get(path).get_data(as_text=True)
            assert re.search(rf'<time class="when" [^>]*title="[0-9-]+ [0-9:]+ {shown}"', page)


def test_every_status_colour_has_its_class():
    css = open("portal/static/portal.css").read()
    styles = (set(ui.STATUS_STYLES.values()) | set(ui.OUTCOME_STYLES.values())
              | set(ui.LEVEL_STYLES.values()) | set(ui.HEALTH_STYLES.values())
              | set(ui.EVENT_STYLES.values()))
    for style in styles:
        assert f".text-bg-{style} " in css, style
    # One meaning, one colour: a run that ended like a job status wears that status's style.
    for outcome in ("failed", "paused", "completed", "sleeping"):
        assert ui.OUTCOME_STYLES[outcome] == ui.STATUS_STYLES[outcome]
    assert ui.OUTCOME_STYLES[None] == ui.STATUS_STYLES["running"]
    # So does a log event that says a job reached a state.
    for kind in ("failed", "paused", "completed", "sleeping"):
        assert ui.event_style(kind, "info") == ui.STATUS_STYLES[kind]
    assert ui.event_style("started", "info") == ui.STATUS_STYLES["running"]
    assert ui.event_style("synced", "info") == "idle"
    assert ui.event_style("error", "error") == "failed"
    assert ui.OUTCOME_STYLES["error"] == ui.STATUS_STYLES["retrying"]


def test_the_list_has_a_labelled_select_all_box_and_the_bulk_bar(client, auth):
    from tests.browser import faults_job

    user = auth.login("operator")
    jobs = [faults_job(user, f"job {n}") for n in range(2)]
    page = client.get("/jobs").get_data(as_text=True)
    assert re.search(r'<input class="form-check-input" type="checkbox" id="select-all" '
                     r'data-select-all="#jobs input\[name=ids\]" aria-label="Select all jobs '
                     r'on this page">', page)
    confirm = client.post("/jobs/bulk/confirm", data={
        "action": "pause", "ids": [job.id for job in jobs], "csrf_token": auth.csrf()},
        headers={"HX-Request": "true"}).get_data(as_text=True)
    assert re.search(r'<div class="card bulk-bar[^"]*" id="bulk-result" role="region" '
                     r'tabindex="-1" autofocus', confirm)
    assert "Pause 2 jobs?" in confirm


def test_a_viewer_has_no_select_all(client, auth):
    from tests.browser import faults_job

    faults_job(auth.login("viewer"), "seen")
    assert 'id="select-all"' not in client.get("/jobs").get_data(as_text=True)
