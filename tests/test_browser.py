"""In Debian's chromium: sign in, create a file import through the wizard, and watch the
job become Completed on its summary page without a reload, with real worker processes."""

from __future__ import annotations

import os
import shutil
import threading
from collections.abc import Iterator

import pytest
from playwright.sync_api import Page, expect
from werkzeug.serving import make_server

from tests.conftest import TEST_PASSWORD

pytestmark = pytest.mark.browser


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args):
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.fail("Debian's chromium is missing: `make test` installs it (apt-get install "
                    "chromium); browser tests are never skipped.")
    return {
        **browser_type_launch_args,
        "executable_path": chromium,
        "args": ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"],
    }


@pytest.fixture
def live_server(app) -> Iterator[str]:
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    thread.join(10)


def settled(page: Page) -> None:
    """Wait until htmx has settled what it swapped in: it wires up the new content's
    hx-* attributes only then (20 ms after the swap), and a change made before is lost."""
    expect(page.locator(".htmx-settling, .htmx-swapping, .htmx-request")).to_have_count(0)


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
    search.fill("import")  # job type names count: files and Mailchimp both import
    expect(page.locator("#provider-tiles [data-provider]")).to_have_count(2)
    # The keyboard reaches the tiles and the arrow keys move between them.
    search.focus()
    page.keyboard.press("Tab")  # the category menu
    page.keyboard.press("Tab")  # the first tile
    expect(page.locator('[data-provider="files"]')).to_be_focused()
    page.keyboard.press("ArrowRight")
    expect(page.locator('[data-provider="mailchimp"]')).to_be_focused()
    search.fill("csv")
    expect(page.locator("#provider-tiles [data-provider]")).to_have_count(1)
    expect(page).to_have_url(f"{live_server}/jobs/new?q=csv&category=")
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
    expect(page).to_have_url(f"{live_server}/jobs/1")
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


def sign_in(page: Page, live_server: str, user) -> None:
    page.goto(f"{live_server}/login?next=/jobs")
    page.get_by_label("Email").fill(user.email)
    page.get_by_label("Password").fill(TEST_PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    expect(page).to_have_url(f"{live_server}/jobs")
    page.wait_for_load_state()  # htmx wires the page up on DOMContentLoaded


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
    expect(page.locator("#provider-tiles [data-provider]")).to_have_count(3)  # not yet
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


def faults_job(owner, name: str, **config):
    from portal.jobs import create_job
    from providers import get_provider

    provider = get_provider("faults")
    return create_job(provider=provider, job_type=provider.job_type("script"),
                      authorization=None, name=name, description="", config=config,
                      created_by=owner)


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
    field.press("Escape")
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
