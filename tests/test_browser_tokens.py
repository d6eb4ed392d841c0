"""The API tokens page in a real browser: create (shown once, with Copy), use, revoke."""

from __future__ import annotations

import httpx
from playwright.sync_api import Page, expect

from tests.browser import sign_in
from tests.test_browser_a11y import Axe


def test_admin_creates_uses_and_revokes_a_token(page: Page, live_server, make_user):
    sign_in(page, live_server, make_user("admin"))
    axe = Axe(page, live_server)
    problems: list[str] = []
    page.goto(f"{live_server}/admin")
    page.get_by_role("link", name="API tokens").click()
    page.get_by_role("button", name="Create token").click()  # no name: a field message
    expect(page.locator("#token-name-error")).to_be_visible()
    page.get_by_label("Name").fill("Nightly export")
    page.get_by_label("Role").select_option("operator")
    page.get_by_label("Expires").select_option("7")
    page.get_by_role("button", name="Create token").click()
    token = page.locator("#token-value").inner_text()
    expect(page.get_by_role("button", name="Copy")).to_be_visible()
    axe.check(problems)
    answer = httpx.get(f"{live_server}/api/v2/job", headers={"Authorization": token})
    assert answer.status_code == 200 and answer.json()["data"] == []

    page.goto(f"{live_server}/admin/tokens")  # shown once: not on the page again
    assert token not in page.content()
    page.get_by_role("link", name="Revoke").click()
    axe.check(problems)
    page.get_by_role("button", name="Revoke").click()
    expect(page.locator("#tokens")).to_contain_text("Revoked")
    answer = httpx.get(f"{live_server}/api/v2/job", headers={"Authorization": f"Bearer {token}"})
    assert answer.status_code == 401
    assert problems == []
