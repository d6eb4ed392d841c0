"""In Debian's chromium: an import under way shows a progress bar that moves, and the Runs
table has the run once it is done, with real worker processes and no reload."""

from __future__ import annotations

import pytest
from playwright.sync_api import Page, expect

from tests.browser import sign_in
from tests.test_job_path import create_import

pytestmark = pytest.mark.browser

ROWS = 4000


def test_the_progress_bar_of_an_import_moves_and_the_run_is_recorded(
        page: Page, live_server, client, auth, spawn):
    user = auth.login("operator")
    data = b"email,ts,plan\n" + b"".join(
        b"user%d@x.io,2024-01-01T10:00:00Z,pro\n" % n for n in range(ROWS))
    job = create_import(client, auth, data=data)  # queued; no worker runs yet
    sign_in(page, live_server, user)
    page.goto(f"{live_server}/jobs/{job.id}")
    page.evaluate("window.notReloaded = true")
    spawn("worker", PORTAL_IMPORT_BATCH_SIZE="10")  # many small units
    progress = page.locator("#job-progress")
    expect(progress).to_be_visible(timeout=30_000)
    expect(progress).to_have_attribute("data-total", str(ROWS))
    first = int(progress.get_attribute("data-done"))
    # The bar moves on, or goes once the run ends (a fast worker may finish between two
    # polls; expect() would wait in vain for the bar that is gone).
    page.wait_for_function(
        "first => { const bar = document.querySelector('#job-progress');"
        " return !bar || bar.dataset.done !== String(first); }", arg=first, timeout=30_000)
    later = page.locator("#job-progress")
    if later.count():  # the run may have ended meanwhile
        assert int(later.get_attribute("data-done")) > first
        bar = page.locator("#job-progress .progress-bar")
        percent = bar.get_attribute("data-progress")
        # The width comes from data-progress (the CSP allows no inline style attribute).
        assert bar.evaluate("bar => bar.style.width") == f"{percent}%"
        expect(page.locator("#job-progress-text")).to_contain_text(f"of {ROWS:,} rows")
    expect(page.locator("#job-status [data-status]")).to_have_attribute(
        "data-status", "completed", timeout=120_000)
    expect(progress).to_have_count(0)
    run = page.locator("#runs-table tbody tr")
    expect(run).to_have_count(1, timeout=10_000)
    expect(run.locator(".run-outcome")).to_have_text("Completed")
    expect(run.locator("td").nth(5)).to_have_text(f"{ROWS:,}")
    assert page.evaluate("window.notReloaded") is True
