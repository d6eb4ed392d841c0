"""In Debian's chromium: sign in, create a file import through the wizard, and watch the
job become Completed on its summary page without a reload, with real worker processes."""

from __future__ import annotations

import os
import re
import shutil

import pytest
from playwright.sync_api import Page, expect

from providers import CATALOG
from tests.browser import faults_job, seed_for_walk, settled, sign_in
from tests.conftest import TEST_PASSWORD, canary
from tests.loopback import LoopbackServer

pytestmark = pytest.mark.browser


def test_wizard_to_completed_without_reload(page: Page, live_server, make_user, spawn,
                                            tmp_path):
    user = make_user("operator")
    rows = "".join(f"user{n}@x.io,2024-01-{n % 28 + 1:02d}T10:00:00Z,pro\n" for n in range(40))
    upload = tmp_path / "people.csv"
    upload.write_text("email,ts,plan\n" + rows)

    page.goto(f"{live_server}/jobs/new")
    expect(page).to_have_url(f"{live_server}/login?next=%2Fjobs%2Fnew")
    page.get_by_label("Email").fill(user.email)
    page.get_by_label("Password").fill(TEST_PASSWORD)
    page.get_by_role("button", name="Sign in").click()

    # Step 1: the tiles, searched as you type.
    search = page.get_by_label("Search providers")
    search.fill("zzz")
    expect(page.locator("#tiles-empty")).to_contain_text("No provider matches “zzz”")
    search.fill("stream")  # job type names count: files import to one, webhook sends one
    expect(page.locator("#provider-tiles [data-provider]")).to_have_count(2)
    # The keyboard reaches the tiles and the arrow keys move between them.
    search.focus()
    page.keyboard.press("Tab")  # the category menu
    page.keyboard.press("Tab")  # the first tile
    expect(page.locator('[data-provider="files"]')).to_be_focused()
    page.keyboard.press("ArrowRight")
    expect(page.locator('[data-provider="webhook"]')).to_be_focused()
    search.fill("upload")
    expect(page.locator("#provider-tiles [data-provider]")).to_have_count(1)
    expect(page).to_have_url(f"{live_server}/jobs/new?q=upload&category=")
    settled(page)
    page.get_by_role("link", name="CSV & JSON files").click()
    # Step 2: the job type; step 3 is skipped (reading an upload needs no authorization).
    expect(page).to_have_url(f"{live_server}/jobs/new/files")
    page.get_by_role("link", name="Import file").click()

    # Step 4: upload; the timestamp menu is built from the file's own header.
    expect(page.get_by_role("heading", name="Configure")).to_be_visible()
    settled(page)
    page.locator("#field-upload_id").set_input_files(str(upload))
    expect(page.locator("#field-upload_id-current")).to_contain_text("people.csv")
    expect(page.locator("#field-timestamp_field")).to_have_value("ts")
    expect(page.locator(".upload-busy")).to_have_css("opacity", "0")  # the request is over
    expect(page.locator("#field-timestamp_field option")).to_have_text(
        ["— none —", "email", "ts", "plan"])
    settled(page)
    page.locator("#field-stream").fill("People!")  # a mistake, corrected below
    page.get_by_role("button", name="Next: schedule").click()
    expect(page.locator("#field-stream-error")).to_contain_text("lower-case")
    expect(page.locator("#field-upload_id-current")).to_contain_text("people.csv")
    settled(page)
    page.locator("#field-stream").fill("people")
    page.get_by_role("button", name="Next: schedule").click()

    # Step 5, then once back to step 4 with the browser: everything is still there.
    expect(page.get_by_role("heading", name="Name and schedule")).to_be_visible()
    expect(page.get_by_label("Job name")).to_have_value("Import file: people.csv")
    page.go_back()
    expect(page.get_by_role("heading", name="Configure")).to_be_visible()
    expect(page.locator("#field-stream")).to_have_value("people")
    expect(page.locator("#field-upload_id-current")).to_contain_text("people.csv")
    settled(page)
    page.get_by_role("button", name="Next: schedule").click()
    expect(page.get_by_role("heading", name="Name and schedule")).to_be_visible()
    settled(page)
    page.get_by_label("Job name").fill("People from the CRM export")
    page.get_by_role("button", name="Next: review").click()

    # Step 6: the review, then Create.
    expect(page.locator("#review-name")).to_have_text("People from the CRM export")
    expect(page.locator("#review-config")).to_contain_text('"stream": "people"')
    settled(page)
    page.get_by_role("button", name="Create job").click()

    # The summary: no worker runs yet, so the job waits as Running.
    expect(page).to_have_url(re.compile(r"/jobs/\d+$"))
    from sqlalchemy import select

    from portal.extensions import db
    from portal.models import Job

    made = db.session.scalars(select(Job.id).where(
        Job.name == "People from the CRM export")).all()
    assert len(made) == 1 and page.url == f"{live_server}/jobs/{made[0]}"
    expect(page.locator("#job-status [data-status]")).to_have_attribute("data-status", "running")
    page.evaluate("window.notReloaded = true")

    spawn("worker")
    spawn("dispatcher")
    expect(page.locator("#job-status [data-status]")).to_have_attribute(
        "data-status", "completed", timeout=30_000)
    expect(page.locator("#metric-added")).to_have_text("40")
    expect(page.locator("#log-rows tr").first).to_have_attribute("data-kind", "completed")
    expect(page.locator('#log-rows tr[data-kind="started"]')).to_have_count(1)
    expect(page.locator('#log-rows tr[data-kind="synced"]')).to_have_count(19)
    assert page.evaluate("window.notReloaded") is True, "the page updated itself"
    page.screenshot(path=str(tmp_path / "summary.png"), full_page=True)
    if os.environ.get("PORTAL_SCREENSHOTS"):
        shutil.copy(tmp_path / "summary.png", os.environ["PORTAL_SCREENSHOTS"])


def test_create_an_authorization_from_the_job_wizard_and_come_back(page: Page, live_server,
                                                                   make_user):
    from tests.conftest import canary

    user = make_user("operator")
    token = canary("tok-browser-wizard-31337")
    page.goto(f"{live_server}/login?next=/jobs/new")
    page.get_by_label("Email").fill(user.email)
    page.get_by_label("Password").fill(TEST_PASSWORD)
    page.get_by_role("button", name="Sign in").click()

    page.get_by_role("link", name="Webhook").click()
    page.get_by_role("link", name="Send stream to webhook").click()
    expect(page.get_by_text("No authorization for Webhook yet.")).to_be_visible()
    expect(page.get_by_role("button", name="Continue")).to_be_disabled()
    page.get_by_role("link", name="Create new authorization").click()

    # The Vault's wizard, told where to come back to.
    expect(page.locator("#return-note")).to_be_visible()
    page.get_by_role("link", name="Bearer token").click()
    settled(page)
    page.get_by_label("Label").fill("CRM endpoint")
    page.get_by_label("Endpoint URL").fill("not a url")
    page.get_by_label("Token").fill(token)
    page.get_by_role("button", name="Save authorization").click()
    expect(page.locator("#field-cred-url-error")).to_contain_text("https://")
    expect(page.get_by_label("Token")).to_have_value("")  # a secret is never sent back
    settled(page)
    page.get_by_label("Endpoint URL").fill("https://crm.example.com/hooks/portal")
    page.get_by_label("Token").fill(token)
    page.get_by_role("button", name="Save authorization").click()

    # Back on the job wizard's authorization step, with the new one chosen.
    expect(page).to_have_url(f"{live_server}/jobs/new/webhook/send_stream?authorization=1")
    chosen = page.get_by_role("radio", name="CRM endpoint")
    expect(chosen).to_be_checked()
    expect(page.locator('[data-authorization="1"] .health-badge')).to_have_text("Unknown")
    page.get_by_role("button", name="Continue").click()
    expect(page.get_by_role("heading", name="Configure")).to_be_visible()
    expect(page.get_by_text("CRM endpoint")).to_be_visible()


def test_a_search_typed_before_the_scripts_load_is_not_lost(page: Page, live_server,
                                                            make_user):
    """The search box is on the page before the deferred scripts run; what is typed into
    it then must still filter the tiles once htmx is there."""
    user = make_user("operator")
    sign_in(page, live_server, user)
    held = []
    page.route("**/vendor/htmx.min.js", lambda route: held.append(route))  # hold the script back
    page.goto(f"{live_server}/jobs/new", wait_until="commit")
    page.get_by_label("Search providers").fill("mailchimp")
    assert len(held) == 1, "the typing happened while htmx was still held back"
    expect(page.locator("#provider-tiles [data-provider]")).to_have_count(len(CATALOG))  # not yet
    held[0].continue_()
    expect(page.locator("#provider-tiles [data-provider]")).to_have_count(1)
    expect(page.locator('[data-provider="mailchimp"]')).to_be_visible()
    expect(page).to_have_url(f"{live_server}/jobs/new?q=mailchimp&category=")


def test_filter_forms_left_alone_are_not_sent_again_when_the_page_loads(page: Page,
                                                                       live_server,
                                                                       make_user):
    """The replay of what was typed before htmx started must not fire on a form nobody
    touched (buttons and hidden fields have no default value to compare with)."""
    sign_in(page, live_server, make_user("admin"))
    sent: list[str] = []

    def note(request) -> None:
        if "/static/" not in request.url:
            sent.append(request.url)

    page.on("request", note)
    for path in ("/jobs?sort=name&dir=asc", "/admin/audit"):
        sent.clear()
        page.goto(f"{live_server}{path}")
        page.wait_for_load_state("networkidle")
        assert sent == [f"{live_server}{path}"]
        expect(page).to_have_url(f"{live_server}{path}")
    page.remove_listener("request", note)


def test_the_list_shows_status_changes_without_a_reload(page: Page, live_server, make_user,
                                                          spawn):
    user = make_user("operator")
    job = faults_job(user, "slow one", script=["slow"], slow_seconds=2)
    sign_in(page, live_server, user)
    cell = page.locator(f"#job-status-{job.id} [data-status]")
    expect(cell).to_have_attribute("data-status", "running")
    page.evaluate("window.notReloaded = true")
    spawn("worker")
    spawn("dispatcher")
    expect(cell).to_have_attribute("data-status", "completed", timeout=30_000)
    expect(page.locator("#status-poller")).to_have_count(0)  # nothing left to poll
    assert page.evaluate("window.notReloaded") is True


def test_inline_edit_of_the_name_with_enter_and_escape(page: Page, live_server, make_user):
    user = make_user("operator")
    job = faults_job(user, "Old name")
    sign_in(page, live_server, user)
    page.goto(f"{live_server}/jobs/{job.id}")
    page.get_by_role("button", name="Edit the name").click()
    field = page.locator("#edit-name")
    expect(field).to_be_focused()
    settled(page)
    field.fill("Will be thrown away")
    with page.expect_request(lambda r: f"/jobs/{job.id}/name" in r.url) as cancel:
        field.press("Escape")
    assert "thrown" not in cancel.value.url  # the typed text stays out of the URL (and logs)
    expect(page.locator("#job-name")).to_have_text("Old name")
    settled(page)
    page.get_by_role("button", name="Edit the name").click()
    field = page.locator("#edit-name")
    expect(field).to_be_focused()  # htmx has wired the new form up (autofocus comes after)
    settled(page)
    field.fill("New name <b>bold</b>")
    field.press("Enter")
    expect(page.locator("#job-name")).to_have_text("New name <b>bold</b>")
    page.reload()
    expect(page.locator("#job-name")).to_have_text("New name <b>bold</b>")
    expect(page.locator("#job-history")).to_contain_text("“Old name” → “New name <b>bold</b>”")


def test_bulk_pause_of_three_jobs(page: Page, live_server, make_user):
    user = make_user("operator")
    jobs = [faults_job(user, f"job {n}", script=["ok"], units=0, more_now=False,
                       rate_limited_until="2999-01-01T00:00:00+00:00") for n in range(4)]
    sign_in(page, live_server, user)
    for job in jobs[:3]:
        page.get_by_label(f"Select {job.name}").check()
    page.get_by_role("button", name="Pause selected").click()
    expect(page.locator("#bulk-confirm")).to_contain_text("Pause 3 jobs?")
    settled(page)
    page.get_by_role("button", name="Pause 3 jobs").click()
    expect(page.locator("#bulk-result")).to_contain_text("Pause: 3 of 3 jobs done")
    for job in jobs[:3]:
        expect(page.locator(f"#job-status-{job.id} [data-status]")).to_have_attribute(
            "data-status", "paused")
    expect(page.locator(f"#job-status-{jobs[3].id} [data-status]")).to_have_attribute(
        "data-status", "running")


# --- The Content-Security-Policy in the browser -------------------------------------------
# Every violation is reported twice over: Chromium writes "Refused to …" to the console, and
# the page fires a securitypolicyviolation event, which this script (run before any of the
# page's own) writes to the console too, with the directive and what it blocked.
REPORT_VIOLATIONS = """
document.addEventListener("securitypolicyviolation", (event) => {
  console.error("CSP violation: " + event.effectiveDirective + " blocked "
                + (event.blockedURI || "inline") + " at " + event.sourceFile + ":"
                + event.lineNumber + " " + (event.sample || ""));
});
"""


class PolicyWatch:
    """Collects CSP violations, script errors and htmx errors from every page a test opens."""

    def __init__(self, page: Page) -> None:
        self.page = page
        self.problems: list[str] = []
        page.add_init_script(REPORT_VIOLATIONS)
        page.on("console", self._console)
        page.on("pageerror", lambda error: self.problems.append(f"{page.url}: {error}"))

    def _console(self, message) -> None:
        text = message.text
        if ("Content Security Policy" in text or text.startswith("CSP violation")
                or (message.type == "error" and text.startswith("htmx:"))):
            self.problems.append(f"{self.page.url}: {text}")

    def prove(self) -> None:
        """Show that a violation is caught here (a test that cannot fail proves nothing)."""
        self.page.evaluate("document.body.setAttribute('style', 'color: red')")

        def caught() -> bool:  # both: Chromium's console message and the event
            return (any("CSP violation: style-src-attr" in problem for problem in self.problems)
                    and any("Refused" in problem or "violates" in problem
                            for problem in self.problems))

        for _ in range(100):
            if caught():
                break
            self.page.wait_for_timeout(20)
        assert caught(), self.problems
        self.page.evaluate("document.body.removeAttribute('style')")
        self.problems.clear()

    def check(self) -> None:
        assert not self.problems, "\n".join(self.problems)


def test_the_main_pages_run_under_the_policy_without_a_violation(page: Page, live_server,
                                                                 make_user, tmp_path):
    """Walk every main page and what it does in the browser (filters, bulk selection, the
    chart, inline edits, the wizard with an upload, the Vault's steps, Data, the audit log,
    the sign-in page) and fail on any CSP violation, script error or htmx error."""
    admin = make_user("admin")
    summary, authorization = seed_for_walk(admin)
    watch = PolicyWatch(page)
    shots = os.environ.get("PORTAL_SCREENSHOT_DIR")

    def shot(name: str) -> None:
        if shots:
            page.screenshot(path=os.path.join(shots, f"{name}.png"), full_page=True)

    page.goto(f"{live_server}/login")
    watch.prove()
    shot("login")
    sign_in(page, live_server, admin)

    # The job list: filters typed and chosen, a status tab, bulk selection opened.
    expect(page.locator("#jobs tbody tr")).to_have_count(5)
    shot("jobs")
    settled(page)
    page.locator("#filter-completed").uncheck()
    expect(page.locator("#jobs tbody tr")).to_have_count(4)
    settled(page)  # the filter form came back with the table: wait until htmx wired it
    page.locator("#filter-q").fill("fail")
    expect(page.locator("#jobs tbody tr")).to_have_count(1)
    settled(page)
    page.locator("#filter-q").fill("")
    expect(page.locator("#jobs tbody tr")).to_have_count(4)
    settled(page)
    page.locator("#filter-provider").select_option("webhook")
    expect(page.locator("#jobs-empty")).to_be_visible()  # the jobs are of another provider
    settled(page)
    page.locator("#filter-provider").select_option("")
    expect(page.locator("#jobs tbody tr")).to_have_count(4)
    settled(page)
    page.locator('[data-status-tab="paused"]').click()
    expect(page.locator("#jobs tbody tr")).to_have_count(1)
    page.goto(f"{live_server}/jobs")
    settled(page)
    page.get_by_label("Select running job").check()
    page.get_by_label("Select paused job").check()
    page.get_by_role("button", name="Pause selected").click()
    expect(page.locator("#bulk-confirm")).to_contain_text("Pause 1 of the 2 selected jobs?")
    shot("jobs-bulk")
    watch.check()

    # A job's summary: logs, the metrics chart, its frames, the log filter, inline edits.
    page.goto(f"{live_server}/jobs/{summary.id}")
    canvas = page.locator("canvas[data-metrics]")
    expect(canvas).to_be_visible()
    page.wait_for_function(
        "() => window.Chart && Chart.getChart(document.querySelector('canvas[data-metrics]'))")
    expect(page.locator("#log-rows tr")).not_to_have_count(0)
    shot("summary")
    settled(page)
    page.locator('#metrics-frames [data-frame="30d"]').click()
    expect(page.locator("#job-metrics-chart")).to_have_attribute("data-frame", "30d")
    page.wait_for_function(
        "() => window.Chart && Chart.getChart(document.querySelector('canvas[data-metrics]'))")
    settled(page)
    page.locator("#log-q").fill("Batch 2")
    expect(page.locator("#log-rows tr").first).to_contain_text("Batch 2")
    settled(page)
    page.get_by_role("button", name="Edit the name").click()
    field = page.locator("#edit-name")
    expect(field).to_be_focused()
    settled(page)
    field.press("Escape")
    expect(page.locator("#job-name")).to_have_text("failed job")
    settled(page)
    page.get_by_role("button", name="Edit the description").click()
    field = page.locator("#edit-description")
    expect(field).to_be_focused()
    settled(page)
    field.fill("Nightly import")
    field.press("Shift+Enter")
    field.type("of the CRM")
    expect(field).to_have_value("Nightly import\nof the CRM")  # Shift+Enter: a new line
    field.press("Escape")
    expect(page.locator("#job-description")).to_have_text("Nightly import of the CRM export")
    settled(page)
    page.get_by_role("button", name="Edit the description").click()
    field = page.locator("#edit-description")
    expect(field).to_be_focused()
    settled(page)
    field.fill("Imports the CRM export every night")
    field.press("Control+Enter")  # Enter alone starts a new line
    expect(page.locator("#job-description")).to_have_text("Imports the CRM export every night")
    watch.check()

    # The wizard: tiles searched, a file uploaded, schedule, review.
    upload = tmp_path / "people.csv"
    upload.write_text("email,ts\na@x.io,2024-01-01T10:00:00Z\n")
    page.goto(f"{live_server}/jobs/new")
    shot("wizard-tiles")
    page.get_by_label("Search providers").fill("upload")
    expect(page.locator("#provider-tiles [data-provider]")).to_have_count(1)
    settled(page)
    page.get_by_role("link", name="CSV & JSON files").click()
    page.get_by_role("link", name="Import file").click()
    expect(page.get_by_role("heading", name="Configure")).to_be_visible()
    settled(page)
    page.locator("#field-upload_id").set_input_files(str(upload))
    expect(page.locator("#field-upload_id-current")).to_contain_text("people.csv")
    expect(page.locator(".upload-busy")).to_have_css("opacity", "0")
    shot("wizard-configure")
    settled(page)
    page.get_by_role("button", name="Next: schedule").click()
    expect(page.get_by_role("heading", name="Name and schedule")).to_be_visible()
    shot("wizard-schedule")
    settled(page)
    page.get_by_role("button", name="Next: review").click()
    expect(page.locator("#review-name")).to_contain_text("people.csv")
    shot("wizard-review")
    watch.check()

    # The Vault: the list, an authorization, and the steps of a new one.
    page.goto(f"{live_server}/vault")
    expect(page.locator(f'[data-authorization="{authorization.id}"]')).to_be_visible()
    shot("vault")
    page.get_by_role("link", name="CRM endpoint").click()
    expect(page).to_have_url(f"{live_server}/vault/{authorization.id}")
    shot("vault-authorization")
    page.goto(f"{live_server}/vault/new")
    page.get_by_role("link", name="Webhook").click()
    page.get_by_role("link", name="Bearer token").click()
    settled(page)
    page.get_by_label("Label").fill("Second endpoint")
    page.get_by_role("button", name="Save authorization").click()  # missing URL and token
    expect(page.locator("#field-cred-url-error")).to_be_visible()
    shot("vault-new")
    watch.check()

    # Data, Admin and its audit log (filtered), and the sign-in page once signed out.
    page.goto(f"{live_server}/data")
    expect(page.get_by_role("heading", name="Data")).to_be_visible()
    page.goto(f"{live_server}/admin")
    page.goto(f"{live_server}/admin/audit")
    expect(page.locator("#audit tbody tr")).not_to_have_count(0)
    shot("audit")
    page.locator("#audit-user").select_option(label=admin.email)
    expect(page).to_have_url(re.compile(r"/admin/audit\?user="))
    page.get_by_role("button", name="Sign out").click()
    expect(page).to_have_url(re.compile(r"/login"))
    watch.check()


class FramingPage(LoopbackServer):
    """Another origin's page that tries to show the portal's Vault in a frame."""

    def __init__(self, target: str) -> None:
        super().__init__()
        self.target = target

    def handle(self, request):
        from werkzeug.wrappers import Response

        return Response(f'<!doctype html><title>Framing</title>'
                        f'<iframe id="framed" src="{self.target}"></iframe>',
                        mimetype="text/html")


def test_another_origin_cannot_frame_the_portal(page: Page, live_server, make_user):
    """A page on another loopback port frames /vault while someone is signed in: the
    browser refuses to show it (frame-ancestors 'none') and says so."""
    admin = make_user("admin")
    seed_for_walk(admin)
    sign_in(page, live_server, admin)
    page.goto(f"{live_server}/vault")
    expect(page.get_by_text("CRM endpoint")).to_be_visible()  # signed in, it is there
    with FramingPage(f"{live_server}/vault") as framing:
        with page.expect_console_message(
                lambda message: "frame-ancestors" in message.text) as refusal:
            page.goto(framing.base_url)
        assert "'none'" in refusal.value.text
        framed = [frame for frame in page.frames if frame != page.main_frame]
        assert len(framed) == 1
        assert not framed[0].url.startswith(live_server), framed[0].url
        assert "CRM endpoint" not in framed[0].content()


def test_oauth_sign_in_and_reauthorize_pass_the_policy(page: Page, live_server, app,
                                                        make_user, monkeypatch):
    """Both OAuth starts are a form POST answered by a redirect to the provider (the first
    through htmx, Re-authorize as a plain form), which Chromium holds to form-action: the
    configured provider's sign-in origin is allowed, and the trip comes back signed in."""
    from tests.loopback import MailchimpServer
    from tests.oauth_server import OAuthServer
    from tests.test_oauth_flow import LatestToken, oauth_settings

    callback = f"{live_server}/vault/oauth/mailchimp/callback"
    with OAuthServer(redirect_uris=[callback]) as server, MailchimpServer() as mailchimp:
        mailchimp.access_tokens = LatestToken(server)
        app.config.update(oauth_settings(server))
        monkeypatch.setenv("PORTAL_MAILCHIMP_METADATA_URL", mailchimp.metadata_url)
        monkeypatch.setenv("PORTAL_MAILCHIMP_API_URL", mailchimp.api_url)
        watch = PolicyWatch(page)
        sign_in(page, live_server, make_user("operator"))

        page.goto(f"{live_server}/vault/new/mailchimp/oauth2")
        settled(page)
        page.get_by_label("Label").fill("Newsletter team")
        page.get_by_role("button", name="Continue to Mailchimp").click()
        expect(page).to_have_url(re.compile(rf"^{live_server}/vault/\d+$"))
        expect(page.locator("#credentials")).to_contain_text("Signed in as acme")
        issued = len(server.issued)

        page.get_by_role("button", name="Re-authorize with Mailchimp").click()
        expect(page).to_have_url(re.compile(rf"^{live_server}/vault/\d+$"))
        expect(page.locator("#credentials")).to_contain_text("Signed in as acme")
        assert len(server.issued) == issued + 1, "a second sign-in really happened"
        for token in server.issued:
            canary(token["access_token"])
            canary(token["refresh_token"])
        watch.check()


def test_show_completed_stays_ticked_when_other_filters_change(page: Page, live_server,
                                                                make_user):
    """The "Show completed" box and its hidden "off" twin send one value: changing Type,
    Provider or Search keeps the completed jobs listed and the box ticked."""
    from portal.extensions import db

    user = make_user("operator")
    done = faults_job(user, "finished import", script=["ok"])
    faults_job(user, "still going", script=["ok"])
    done.status, done.provider = "completed", "files"  # files: a provider of the menu
    db.session.commit()
    sign_in(page, live_server, user)
    box = page.get_by_label("Show completed")
    row = page.locator(f"#job-row-{done.id}")
    expect(box).to_be_checked()
    expect(row).to_be_visible()
    for change in (lambda: page.get_by_label("Type").select_option("import"),
                   lambda: page.get_by_label("Provider").select_option("files"),
                   lambda: page.get_by_label("Search").fill("i")):
        settled(page)
        change()
        expect(page).not_to_have_url(re.compile(r"completed=0"))
        expect(page).to_have_url(re.compile(r"completed=1"))
        settled(page)
        expect(page.get_by_label("Show completed")).to_be_checked()
        expect(row).to_be_visible()
    assert page.url.count("completed=") == 1
    page.get_by_label("Show completed").uncheck()
    expect(row).to_have_count(0)
    expect(page).to_have_url(re.compile(r"completed=0"))
    settled(page)
    page.get_by_label("Type").select_option("")
    expect(page).to_have_url(re.compile(r"type=&.*completed=0"))
    settled(page)
    expect(page.get_by_label("Show completed")).not_to_be_checked()
    expect(row).to_have_count(0)
    assert page.url.count("completed=") == 1


def test_a_description_of_several_lines_is_saved_with_save_or_ctrl_enter(page: Page,
                                                                          live_server,
                                                                          make_user):
    """Enter starts a new line in the description; Save and Ctrl+Enter save, Escape and
    Cancel throw the text away."""
    from portal.extensions import db
    from portal.models import Job

    user = make_user("operator")
    job = faults_job(user, "Described")
    sign_in(page, live_server, user)
    page.goto(f"{live_server}/jobs/{job.id}")
    description = page.locator("#job-description")

    def edit() -> None:
        settled(page)
        page.get_by_role("button", name="Edit the description").click()
        expect(page.locator("#edit-description")).to_be_focused()
        settled(page)

    edit()
    field = page.locator("#edit-description")
    field.press("End")
    field.type("First line")
    field.press("Enter")
    field.type("Second line")
    expect(page.locator("#edit-description")).to_be_visible()  # Enter did not leave
    page.get_by_role("button", name="Save").click()
    expect(description).to_have_text("First line\nSecond line")
    db.session.expire_all()
    assert db.session.get(Job, job.id).description == "First line\nSecond line"

    edit()
    page.locator("#edit-description").fill("Third\nversion")
    page.locator("#edit-description").press("Control+Enter")
    expect(description).to_have_text("Third\nversion")

    edit()
    page.locator("#edit-description").fill("thrown away")
    page.locator("#edit-description").press("Escape")
    expect(description).to_have_text("Third\nversion")
    edit()
    page.locator("#edit-description").fill("thrown away too")
    page.get_by_role("button", name="Cancel").click()
    expect(description).to_have_text("Third\nversion")
    page.reload()
    expect(description).to_have_text("Third\nversion")


def test_the_metrics_chart_follows_a_running_job_without_a_reload(page: Page, live_server,
                                                                   make_user, spawn):
    """The chart starts empty and shows what the header counts while the job runs and
    once it has completed, with no reload."""
    user = make_user("operator")
    job = faults_job(user, "three slow units", script=["slow", "slow", "ok"], units=3,
                     rows_per_unit=5, slow_seconds=1.5)
    sign_in(page, live_server, user)
    page.goto(f"{live_server}/jobs/{job.id}")
    expect(page.locator("#metrics-empty")).to_have_text("No metrics in the last 24 hours yet.")
    page.evaluate("window.notReloaded = true")
    spawn("worker")
    spawn("dispatcher")
    # The first unit has written its rows and is still running: the chart has them.
    expect(page.locator("#metric-added")).to_have_text("5", timeout=30_000)
    expect(page.locator("#metrics-total-added")).to_have_text("5")
    expect(page.locator("#metrics-canvas")).to_be_visible()
    expect(page.locator("#job-status [data-status]")).to_have_attribute(
        "data-status", "completed", timeout=30_000)
    expect(page.locator("#metric-added")).to_have_text("15")
    expect(page.locator("#metrics-total-added")).to_have_text("15")
    assert page.evaluate("window.notReloaded") is True


def test_internal_names_read_as_words_in_the_log_and_the_audit_log(page: Page, live_server,
                                                                   make_user):
    """"run_now" and "sign_in_failed" are names for the code: the log and the audit log
    (rows and filter menus) show "Run now" and "Sign-in failed"."""
    from portal.extensions import db

    admin = make_user("admin")
    job = faults_job(admin, "waiting one")
    job.status = "sleeping"
    db.session.commit()
    page.goto(f"{live_server}/login")
    page.get_by_label("Email").fill(admin.email)
    page.get_by_label("Password").fill("not the password")
    page.get_by_role("button", name="Sign in").click()
    expect(page.locator("body")).to_contain_text("Sign in")
    sign_in(page, live_server, admin)
    page.goto(f"{live_server}/jobs/{job.id}")
    settled(page)
    page.locator('[data-action="run-now"]').click()
    expect(page.locator("#job-notice")).to_have_text("The job runs now.")
    badge = page.locator('.log-event[data-kind="run_now"] .badge')
    expect(badge).to_have_text("Run now")
    expect(page.get_by_label("Event", exact=True).locator("option[value=run_now]")
           ).to_have_text("Run now")
    page.goto(f"{live_server}/admin/audit")
    audit = page.locator("#audit")
    expect(audit.locator('[data-action="run_now"]')).to_have_text("Run now")
    expect(audit.locator('[data-action="sign_in_failed"]')).to_have_text("Sign-in failed")
    expect(page.locator("#audit-action option[value=sign_in_failed]")).to_have_text(
        "Sign-in failed")
    for name in ("run_now", "Run_now", "sign_in_failed", "Sign_in_failed"):
        expect(page.locator("main")).not_to_contain_text(name)


def test_one_way_of_writing_numbers_and_cadences_and_a_favicon(page: Page, live_server,
                                                              make_user):
    """The header, the chart and the log write 3,000 alike; a one-minute cadence reads
    "Every minute"; every page has its icon (no request fails)."""
    from portal import lifecycle
    from portal.extensions import db
    from portal.models.types import utcnow

    user = make_user("operator")
    job = faults_job(user, "big one")
    job.schedule = {"kind": "interval", "every_minutes": 1}
    lifecycle.record(job, lifecycle.Event.SYNCED, "Sent 3000 messages", now=utcnow(),
                     counts={"added": 3000, "omitted": 1200})
    db.session.commit()
    failed: list[str] = []
    page.on("response", lambda response: failed.append(response.url)
            if response.status >= 400 else None)
    sign_in(page, live_server, user)
    icon = page.locator('head link[rel="icon"]')
    expect(icon).to_have_attribute("href", "/static/favicon.svg")
    page.goto(f"{live_server}/jobs/{job.id}")
    expect(page.locator("#job-cadence")).to_have_text("Every minute")
    expect(page.locator("#metric-added")).to_have_text("3,000")
    expect(page.locator("#metrics-total-added")).to_have_text("3,000")
    row = page.locator('.log-event[data-kind="synced"]')
    expect(row.locator("td.text-end").nth(0)).to_have_text("3,000")
    expect(row.locator("td.text-end").nth(2)).to_have_text("1,200")
    favicon = page.request.get(f"{live_server}/static/favicon.svg")
    assert favicon.status == 200 and favicon.headers["content-type"].startswith("image/svg")
    page.wait_for_load_state("networkidle")
    assert failed == []


def test_idle_runs_leave_the_log_alone(page: Page, live_server, make_user, spawn):
    """A job with nothing to do runs (its last run time moves) without writing a Synced
    "nothing new" row each time."""
    user = make_user("operator")
    job = faults_job(user, "idle every minute", units=0, more_now=False, rows_per_unit=0)
    from portal.extensions import db

    job.schedule = {"kind": "interval", "every_minutes": 1}
    db.session.commit()
    sign_in(page, live_server, user)
    page.goto(f"{live_server}/jobs/{job.id}")
    spawn("worker")
    spawn("dispatcher")
    status = page.locator("#job-status [data-status]")
    # The time reads "just now" each run: its instant (whole seconds) tells them apart.
    last_run = page.locator("#job-last-run time")
    expect(status).to_have_attribute("data-status", "sleeping", timeout=30_000)
    first = last_run.get_attribute("datetime")
    assert first
    for _ in range(2):
        page.wait_for_timeout(1100)  # times show whole seconds: the next run reads apart
        settled(page)
        page.locator('[data-action="run-now"]').click()
        expect(last_run).not_to_have_attribute("datetime", first, timeout=30_000)
        expect(status).to_have_attribute("data-status", "sleeping", timeout=30_000)
        first = last_run.get_attribute("datetime")
    expect(page.locator('.log-event[data-kind="run_now"]')).to_have_count(2)
    expect(page.locator('.log-event[data-kind="synced"]')).to_have_count(0)
    expect(page.locator("#log-rows")).not_to_contain_text("unit 1")
