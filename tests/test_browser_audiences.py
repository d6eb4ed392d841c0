"""An audience built in a real browser: the live count follows the conditions as they
are typed, rows are added and removed without a reload, and the audience is saved."""

from __future__ import annotations

from datetime import timedelta

from playwright.sync_api import Page, expect

from portal.datastore import write_messages
from portal.extensions import db
from portal.models.types import utcnow
from providers.base import OutMessage
from tests.browser import settled, sign_in
from tests.test_browser_a11y import Axe


def test_an_operator_builds_an_audience_and_watches_the_count(page: Page, live_server,
                                                                make_user):
    now = utcnow()
    write_messages("people", [
        OutMessage(f"k{n}", now - timedelta(minutes=n),
                   {"email": f"u{n}@x.io", "plan": "pro" if n % 3 == 0 else "free", "age": n})
        for n in range(30)], source="job:1")
    db.session.commit()
    sign_in(page, live_server, make_user("operator"))
    axe = Axe(page, live_server)
    problems: list[str] = []
    page.goto(f"{live_server}/data")
    page.get_by_role("link", name="New audience").click()
    expect(page.locator("#preview-nobody")).to_be_visible()
    page.get_by_label("Name", exact=True).fill("Older pros")
    page.get_by_label("Field of condition 1").fill("plan")
    page.get_by_label("Value of condition 1").fill("pro")
    expect(page.locator("#preview-count")).to_have_text("10")  # 0, 3, ..., 27
    axe.check(problems)

    page.get_by_role("button", name="Add a condition").click()
    expect(page.get_by_label("Field of condition 2")).to_be_visible()
    settled(page)
    page.get_by_label("Field of condition 2").fill("age")
    page.get_by_label("Operator of condition 2").select_option("gt")
    page.get_by_label("Value of condition 2").fill("soon")
    expect(page.locator("#preview-problems")).to_contain_text("Condition 2, value")
    page.get_by_label("Value of condition 2").fill("14")
    expect(page.locator("#preview-count")).to_have_text("5")  # 15, 18, 21, 24, 27
    page.get_by_label("any condition").check()
    expect(page.locator("#preview-count")).to_have_text("20")  # pros, and 15..29
    page.get_by_label("all conditions").check()
    expect(page.locator("#preview-count")).to_have_text("5")

    page.get_by_role("button", name="Remove condition 1").click()
    expect(page.locator(".condition-row")).to_have_count(1)
    expect(page.locator("#preview-count")).to_have_text("15")  # 15..29
    settled(page)
    page.get_by_role("button", name="Add a condition").click()
    expect(page.locator(".condition-row")).to_have_count(2)
    settled(page)
    page.get_by_label("Field of condition 2").fill("plan")
    page.get_by_label("Value of condition 2").fill("PRO")
    expect(page.locator("#preview-count")).to_have_text("5")
    page.get_by_role("button", name="Create audience").click()
    expect(page.locator("h1")).to_have_text("Older pros")
    expect(page.locator("#preview-count")).to_have_text("5")
    axe.check(problems)
    page.get_by_role("link", name="Audiences").first.click()
    expect(page.locator('tr[data-audience="older-pros"] .audience-size')).to_have_text("5")
    assert problems == []
