"""In Debian's chromium: accessibility (issue 11, part 7). axe-core (vendored for the
tests, tests/vendor/) checks every main page and every wizard step for serious or critical
violations, and the wizard and the list's bulk actions are walked with the keyboard alone.
The browser and server fixtures are in tests/conftest.py."""

from __future__ import annotations

from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from tests.browser import faults_job, seed_for_walk, settled, sign_in, tab_to

pytestmark = pytest.mark.browser


AXE = Path(__file__).parent / "vendor" / "axe.min.js"
# The portal's policy allows scripts from its own origin only (script-src 'self'), and the
# test keeps that policy on: axe is served as if from the portal, at an address the portal
# itself does not have, and the browser loads it like any of the portal's scripts.
AXE_PATH = "/__tests__/axe.min.js"
BLOCKING = ("serious", "critical")


class Axe:
    """Runs axe-core on the page as it is and collects serious and critical violations."""

    def __init__(self, page: Page, origin: str) -> None:
        self.page = page
        self.url = origin + AXE_PATH
        page.route(self.url, lambda route: route.fulfill(
            path=str(AXE), content_type="text/javascript; charset=utf-8"))

    def violations(self) -> list[str]:
        self.page.wait_for_load_state()
        settled(self.page)
        if not self.page.evaluate("() => typeof window.axe === 'object'"):
            self.page.add_script_tag(url=self.url)
        found = self.page.evaluate("""async () => {
          const result = await axe.run(document, {resultTypes: ["violations"]});
          return result.violations.map((v) => ({
            id: v.id, impact: v.impact, help: v.help,
            nodes: v.nodes.map((n) => n.target.join(" ") + " — " + n.failureSummary)}));
        }""")
        return [f"{self.page.url}: [{v['impact']}] {v['id']}: {v['help']}\n    "
                + "\n    ".join(v["nodes"][:5])
                for v in found if v["impact"] in BLOCKING]

    def check(self, problems: list[str]) -> None:
        problems.extend(self.violations())


def test_axe_finds_a_violation_when_there_is_one(page: Page, live_server,
                                                 make_user):
    """The check can fail: a button with no name is a critical violation."""
    sign_in(page, live_server, make_user("viewer"))
    axe = Axe(page, live_server)
    assert axe.violations() == []
    page.evaluate("""() => { const b = document.createElement("button");
                             document.querySelector("main").append(b); }""")
    found = axe.violations()
    assert any("button-name" in line for line in found), found


def kept_and_stream(owner):
    """A completed job due for the purge (its banner and Keep switch) and a stream with
    messages (the Data page of one stream)."""
    from datetime import timedelta

    from portal.datastore import write_messages
    from portal.extensions import db
    from portal.models import Job
    from portal.models.types import utcnow
    from providers.base import OutMessage

    write_messages("signups", [OutMessage(f"k{n}", utcnow(), {"email": f"u{n}@x.io"})
                               for n in range(3)], source="job:1")
    job = db.session.scalars(db.select(Job).where(Job.status == "completed")).one()
    job.terminal_at = utcnow() - timedelta(days=3)
    db.session.commit()
    return job


def test_the_wizard_and_the_bulk_actions_work_from_the_keyboard(page: Page,
                                                                 live_server, make_user):
    from tests.test_browser_wizard import webhook_authorization

    user = make_user("operator")
    authorization = webhook_authorization(user)
    jobs = [faults_job(user, f"job {n}", script=["ok"], units=0, more_now=False,
                       rate_limited_until="2999-01-01T00:00:00+00:00") for n in range(3)]
    sign_in(page, live_server, user)

    # The list: select two jobs, open the bulk confirmation, confirm; keys only.
    for job in jobs[:2]:
        box = page.get_by_label(f"Select {job.name}")
        tab_to(page, box)
        page.keyboard.press("Space")
        expect(box).to_be_checked()
    settled(page)
    tab_to(page, page.get_by_role("button", name="Pause selected"))
    page.keyboard.press("Enter")
    confirm = page.get_by_role("button", name="Pause 2 jobs")
    expect(confirm).to_be_visible()
    settled(page)
    tab_to(page, confirm)
    page.keyboard.press("Enter")
    expect(page.locator("#bulk-result")).to_contain_text("Pause: 2 of 2 jobs done")
    for job in jobs[:2]:
        expect(page.locator(f"#job-status-{job.id} [data-status]")).to_have_attribute(
            "data-status", "paused")

    # The wizard, from the tiles to Create job, for a webhook export; keys only.
    page.goto(f"{live_server}/jobs/new")
    page.wait_for_load_state()
    tab_to(page, page.get_by_label("Search providers"))
    page.keyboard.type("webhook")
    expect(page.locator("#provider-tiles [data-provider]")).to_have_count(1)
    settled(page)
    tab_to(page, page.get_by_role("link", name="Webhook"))
    page.keyboard.press("Enter")
    expect(page).to_have_url(f"{live_server}/jobs/new/webhook")
    tab_to(page, page.get_by_role("link", name="Send stream to webhook"))
    page.keyboard.press("Enter")
    radio = page.get_by_role("radio", name="Open hook")
    tab_to(page, radio)
    page.keyboard.press("Space")
    expect(radio).to_be_checked()
    tab_to(page, page.get_by_role("button", name="Continue"))
    page.keyboard.press("Enter")
    expect(page.get_by_role("heading", name="Configure")).to_be_visible()
    page.wait_for_load_state()
    settled(page)
    tab_to(page, page.get_by_role("button", name="Next: schedule"))
    page.keyboard.press("Enter")
    expect(page.get_by_role("heading", name="Name and schedule")).to_be_visible()
    page.wait_for_load_state()
    settled(page)
    name = page.get_by_label("Job name")
    tab_to(page, name)
    page.keyboard.press("ControlOrMeta+a")
    page.keyboard.type("Signups to the CRM hook")
    tab_to(page, page.get_by_role("button", name="Next: review"))
    page.keyboard.press("Enter")
    expect(page.locator("#review-name")).to_have_text("Signups to the CRM hook")
    page.wait_for_load_state()
    settled(page)
    tab_to(page, page.get_by_role("button", name="Create job"))
    page.keyboard.press("Enter")
    expect(page.get_by_role("heading", name="Signups to the CRM hook")).to_be_visible()
    assert authorization.id


def test_every_main_page_and_wizard_step_has_no_serious_violation(page: Page,
                                                                   live_server, make_user,
                                                                   tmp_path):
    admin = make_user("admin")
    summary, authorization = seed_for_walk(admin)
    completed = kept_and_stream(admin)
    axe = Axe(page, live_server)
    problems: list[str] = []
    # Contrast is judged on settled colours: with motion reduced, Bootstrap's buttons do not
    # fade between their hover and resting colours while axe looks (a button left behind
    # when the bulk bar takes the focus would otherwise be caught halfway).
    page.emulate_media(reduced_motion="reduce")

    page.goto(f"{live_server}/login")
    axe.check(problems)
    sign_in(page, live_server, admin)
    for path in ("/jobs", f"/jobs/{summary.id}", f"/jobs/{completed.id}", "/vault",
                 f"/vault/{authorization.id}", "/vault/new", "/vault/new/webhook",
                 "/vault/new/webhook/bearer", "/data",
                 "/data/streams/signups", "/data/streams/signups/delete",
                 "/data/profiles?key=email&value=u1@x.io",
                 "/data/profiles?key=email&value=nobody@x.io", "/data/profiles?key=x&value=",
                 "/settings",
                 "/admin", "/admin/audit", "/admin/operations", "/jobs/no-such-page"):
        response = page.goto(live_server + path)
        assert response.ok or path == "/jobs/no-such-page", (path, response.status)
        axe.check(problems)

    # The list with a bulk confirmation open.
    page.goto(f"{live_server}/jobs")
    settled(page)
    page.get_by_label("Select paused job").check()
    page.get_by_role("button", name="Resume selected").click()
    expect(page.locator("#bulk-confirm")).to_be_visible()
    axe.check(problems)

    # Every wizard step: tiles, job types, authorization, configure, preview, schedule,
    # review; a webhook export for the authorization step, a file import for the rest.
    page.goto(f"{live_server}/jobs/new")
    axe.check(problems)
    page.goto(f"{live_server}/jobs/new/webhook")
    axe.check(problems)
    page.goto(f"{live_server}/jobs/new/webhook/send_stream")
    axe.check(problems)
    page.goto(f"{live_server}/jobs/new/webhook/send_stream/configure"
              f"?authorization={authorization.id}")
    axe.check(problems)
    upload = tmp_path / "people.csv"
    upload.write_text("email,signed_up_at\na@x.io,2024-01-01T10:00:00Z\n")
    page.goto(f"{live_server}/jobs/new/files/import_file/configure?authorization=none")
    settled(page)
    page.locator("#field-upload_id").set_input_files(str(upload))
    expect(page.locator("#field-upload_id-current")).to_contain_text("people.csv")
    expect(page.locator(".upload-busy")).to_have_css("opacity", "0")
    axe.check(problems)
    page.get_by_role("button", name="Next: schedule").click()
    page.wait_for_url("**/drafts/**")
    axe.check(problems)
    if page.get_by_role("heading", name="Name and schedule").count() == 0:
        # the import preview comes first: on to the schedule
        page.get_by_role("button", name="Next: schedule").click()
        expect(page.get_by_role("heading", name="Name and schedule")).to_be_visible()
        axe.check(problems)
    settled(page)
    page.get_by_role("button", name="Next: review").click()
    expect(page.locator("#review-name")).to_be_visible()
    axe.check(problems)
    page.goto(f"{live_server}/jobs/new/drafts")
    axe.check(problems)
    assert not problems, "\n".join(problems)
