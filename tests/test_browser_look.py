"""In Debian's chromium: the job list's select-all box and the bulk bar on a long list,
the time zone setting, and relative times that stay true in an open page."""

from __future__ import annotations

import re
from datetime import datetime, timedelta

import pytest
from playwright.sync_api import Page, expect

from tests.browser import faults_job, seed_for_walk, settled, sign_in, tab_to

pytestmark = pytest.mark.browser


def test_select_all_and_the_bulk_bar_in_view_on_a_long_list(
        page: Page, live_server, make_user):
    user = make_user("operator")
    for n in range(60):
        faults_job(user, f"job {n:02d}", script=["ok"], units=0, more_now=False,
                   rate_limited_until="2999-01-01T00:00:00+00:00")
    page.set_viewport_size({"width": 1280, "height": 800})
    sign_in(page, live_server, user)
    rows = page.locator("#jobs input[name=ids]")
    expect(rows).to_have_count(50)  # one page of the list
    select_all = page.get_by_label("Select all jobs on this page")

    # From the keyboard: Tab to the box, Space ticks every row on the page.
    select_all.focus()
    page.keyboard.press("Space")
    expect(page.locator("#jobs input[name=ids]:checked")).to_have_count(50)
    expect(select_all).to_be_checked()

    # Clearing one row shows "some": indeterminate, not ticked.
    page.get_by_label("Select job 30").uncheck()
    assert select_all.evaluate("(box) => box.indeterminate && !box.checked")
    select_all.check()
    assert select_all.evaluate("(box) => !box.indeterminate")
    expect(page.locator("#jobs input[name=ids]:checked")).to_have_count(50)
    select_all.uncheck()
    expect(page.locator("#jobs input[name=ids]:checked")).to_have_count(0)
    page.get_by_label("Select job 20").check()
    page.get_by_label("Select job 21").check()
    assert select_all.evaluate("(box) => box.indeterminate")

    # The question shows at the bottom of the window, with no scrolling, and has the focus.
    settled(page)
    page.get_by_role("button", name="Pause selected").click()
    bar = page.locator("#bulk-result")
    expect(page.locator("#bulk-confirm")).to_contain_text("Pause 2 jobs?")
    expect(bar).to_be_in_viewport()
    expect(bar).to_be_focused()
    assert page.evaluate("window.scrollY") == 0
    # The last rows of the list can still be scrolled out from under the bar.
    page.locator("#jobs tbody tr").last.scroll_into_view_if_needed()
    box = page.locator("#jobs tbody tr").last.bounding_box()
    assert box["y"] + box["height"] <= bar.bounding_box()["y"] + 1
    settled(page)
    confirm = page.get_by_role("button", name="Pause 2 jobs")
    tab_to(page, confirm, limit=3)  # from the bar: the list of jobs, then the button
    page.keyboard.press("Enter")
    expect(page.locator("#bulk-result")).to_contain_text("Pause: 2 of 2 jobs done")
    expect(page.locator("#bulk-result")).to_be_in_viewport()
    settled(page)
    page.locator("#bulk-close").click()
    expect(page.locator("#bulk-result")).to_have_count(0)

    # Escape closes the question too, from anywhere in the bar.
    settled(page)
    page.get_by_role("button", name="Resume selected").click()
    expect(page.locator("#bulk-none")).to_be_visible()  # the list reloaded: none selected
    expect(bar).to_be_focused()
    page.keyboard.press("Escape")
    expect(page.locator("#bulk-result")).to_have_count(0)
    expect(page.get_by_role("button", name="Pause selected")).to_be_focused()


def test_the_time_zone_setting_changes_the_hover_text(
        page: Page, live_server, make_user):
    from tests.test_data_page import fill

    user = make_user("admin")
    fill("signups", 3)
    sign_in(page, live_server, user)
    page.goto(f"{live_server}/data/streams/signups")
    first = page.locator("#messages time.when").first
    expect(first).to_have_attribute("title", re.compile(r" UTC$"))
    page.get_by_role("link", name="Settings").click()
    page.get_by_label("Time zone").select_option("Asia/Tokyo")
    page.get_by_role("button", name="Save").click()
    expect(page.get_by_text("Saved: times now show in Asia/Tokyo.")).to_be_visible()
    page.goto(f"{live_server}/data/streams/signups")
    expect(first).to_have_attribute("title", re.compile(
        r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d Asia/Tokyo \(UTC\+09:00\)$"))
    expect(first).to_have_text("just now")


def test_relative_times_keep_ticking_in_an_open_page(
        page: Page, live_server, make_user):
    from portal.models.types import utcnow
    from tests.test_data_page import fill

    user = make_user("viewer")
    fill("signups", 1)
    stored_at = utcnow()
    page.clock.install(time=stored_at)
    sign_in(page, live_server, user)
    page.goto(f"{live_server}/data/streams/signups")
    stored = page.locator("#messages tbody tr td:first-child time.when")
    expect(stored).to_have_text("just now")
    page.clock.fast_forward("03:00")
    expect(stored).to_have_text("3 min ago")
    page.clock.fast_forward("02:00:00")
    # Past midnight (UTC, the person's zone) the day is named instead.
    instant = datetime.fromisoformat(stored.get_attribute("datetime"))
    later = stored_at + timedelta(hours=2, minutes=3)
    expect(stored).to_have_text("2 h ago" if later.date() == instant.date()
                                else f"yesterday {instant:%H:%M}")
    # No request went to the server for it: the words come from the page itself.
    assert page.locator("#messages").count() == 1


def test_the_metrics_chart_reads_in_the_persons_zone(page: Page, live_server,
                                                     make_user):

    from portal.extensions import db

    user = make_user("admin")
    user.timezone = "Asia/Tokyo"
    db.session.commit()
    summary, _ = seed_for_walk(user)
    sign_in(page, live_server, user)
    page.goto(f"{live_server}/jobs/{summary.id}")
    canvas = page.locator("#metrics-canvas")
    expect(canvas).to_have_attribute("aria-label", re.compile(r"by time \(Asia/Tokyo\)$"))
    page.wait_for_function("() => window.Chart && Chart.getChart('metrics-canvas')")
    shown, sent = page.evaluate("""() => {
        const canvas = document.getElementById('metrics-canvas');
        const data = JSON.parse(canvas.parentElement.querySelector('script').textContent);
        return [Chart.getChart(canvas).data.labels, data.labels];
    }""")
    assert shown and len(shown) == len(sent)
    starts = [datetime.fromisoformat(label.replace("Z", "+00:00")) for label in sent]
    if any(start.hour for start in starts):  # hourly buckets: in Tokyo time, 9 hours on
        assert shown == [f"{start + timedelta(hours=9):%m-%d %H:%M}" for start in starts]
    else:  # daily buckets keep their UTC day
        assert shown == [f"{start:%m-%d}" for start in starts]
