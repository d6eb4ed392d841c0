"""In Debian's chromium: the Keep switch on a completed job's summary (issue 11, part 5).
The browser and server fixtures are in tests/conftest.py."""

from __future__ import annotations

from datetime import timedelta

import pytest
from playwright.sync_api import Page, expect

from portal.extensions import db
from tests.browser import faults_job, settled, sign_in

pytestmark = pytest.mark.browser


def test_a_completed_job_is_kept_with_the_keep_switch(page: Page, live_server,
                                                      make_user):
    from portal.models.types import utcnow

    owner = make_user("operator")
    job = faults_job(owner, "finished export")
    job.status, job.terminal_at = "completed", utcnow() - timedelta(days=10)
    db.session.commit()
    sign_in(page, live_server, owner)
    page.goto(f"{live_server}/jobs/{job.id}")
    banner = page.locator("#job-purge")
    expect(banner).to_contain_text("will be purged on")
    expect(banner).to_contain_text("Switch on Keep below to keep it.")
    expect(banner).not_to_contain_text("Resume")
    switch = page.get_by_role("switch", name="Keep")
    expect(switch).not_to_be_checked()
    settled(page)
    switch.check()
    expect(banner).to_have_text("Kept: this completed job and its logs are not purged.")
    expect(page.get_by_role("switch", name="Keep")).to_be_checked()
    page.reload()
    expect(page.get_by_role("switch", name="Keep")).to_be_checked()
    expect(page.locator("#job-purge")).to_contain_text("Kept")
    settled(page)
    page.get_by_role("switch", name="Keep").press("Space")  # the keyboard switches it off
    expect(page.locator("#job-purge")).to_contain_text("will be purged on")
    expect(page.get_by_role("switch", name="Keep")).to_be_focused()  # focus stays put
    db.session.expire_all()
    assert db.session.get(type(job), job.id).keep is False
