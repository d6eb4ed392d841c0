"""In Debian's chromium: the wizard bugs a new user met (issue 11, part 5) and the import
preview (part 4). The browser and server fixtures are in tests/conftest.py."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import Page, expect

from portal.extensions import db
from tests.browser import settled, sign_in

pytestmark = pytest.mark.browser



def webhook_authorization(user):
    from portal import vault
    from portal.datastore import write_messages
    from portal.models.types import utcnow
    from providers import get_provider
    from providers.base import OutMessage

    write_messages("signups", [OutMessage("k", utcnow(), {})], source="test")
    provider = get_provider("webhook")
    authorization = vault.create(provider, provider.auth_method("open"), label="Open hook",
                                 description="", credentials={"url": "https://h.example/x"},
                                 by=user)
    db.session.commit()
    return authorization


def test_the_webhook_schedule_step_preselects_every_15_minutes(page: Page, live_server, make_user):
    user = make_user("operator")
    authorization = webhook_authorization(user)
    sign_in(page, live_server, user)
    page.goto(f"{live_server}/jobs/new/webhook/send_stream/configure"
              f"?authorization={authorization.id}")
    settled(page)
    page.get_by_role("button", name="Next: schedule").click()
    expect(page.get_by_role("heading", name="Name and schedule")).to_be_visible()
    expect(page.locator("#schedule-fields")).to_contain_text("Default for Send stream to "
                                                             "webhook: Every 15 minutes.")
    expect(page.get_by_label("Cadence")).to_have_value("interval")
    expect(page.get_by_label("Every (minutes)")).to_have_value("15")


def files_configure(page: Page, live_server: str) -> None:
    page.goto(f"{live_server}/jobs/new/files/import_file/configure?authorization=none")
    expect(page.get_by_role("heading", name="Configure")).to_be_visible()
    settled(page)


def test_a_bad_stream_name_is_said_once(page: Page, live_server, make_user, tmp_path):
    sign_in(page, live_server, make_user("operator"))
    files_configure(page, live_server)
    page.locator("#field-stream").fill("People!")
    page.get_by_role("button", name="Next: schedule").click()
    expect(page.locator("#field-stream-error")).to_contain_text(
        "lower-case letters, digits, - and _")
    group = page.locator("#field-stream-group").inner_text()
    assert group.count("lower-case") == 1, group


def people_csv(tmp_path, rows: int = 3, header: str = "email,ts,plan"):
    upload = tmp_path / "people.csv"
    upload.write_text(header + "\n" + "".join(
        f"user{n}@x.io,2024-01-{n % 28 + 1:02d}T10:00:00Z,pro\n" for n in range(rows)))
    return upload


def upload_and_next(page: Page, upload) -> None:
    page.locator("#field-upload_id").set_input_files(str(upload))
    expect(page.locator("#field-upload_id-current")).to_contain_text(upload.name)
    settled(page)
    page.get_by_role("button", name="Next: schedule").click()
    expect(page.get_by_role("heading", name="Name and schedule")).to_be_visible()
    settled(page)


def test_back_after_create_says_the_draft_became_a_job(page: Page, live_server, make_user,
                                                       tmp_path):
    from sqlalchemy import select

    from portal.models import Job
    from tests.browser import faults_job

    user = make_user("operator")
    faults_job(user, "An earlier job")  # so the new job's id is not the draft's
    db.session.commit()
    sign_in(page, live_server, user)
    files_configure(page, live_server)
    upload_and_next(page, people_csv(tmp_path))
    page.get_by_role("button", name="Next: review").click()
    expect(page.locator("#review-name")).to_have_text("Import file: people.csv")
    review_url = page.url
    draft_id = int(re.search(r"/jobs/new/drafts/(\d+)/review$", review_url).group(1))
    # The same review in a second tab stands for a page the browser keeps (Chrome's
    # back/forward cache restores it as it was, with a live Create button).
    kept = page.context.new_page()
    kept.goto(review_url)
    settled(page)
    page.get_by_role("button", name="Create job").click()
    expect(page).to_have_url(re.compile(r"/jobs/\d+$"))
    db.session.expire_all()
    job_id = db.session.scalar(select(Job.id).where(Job.draft_id == draft_id))
    assert job_id is not None and job_id != draft_id
    expect(page).to_have_url(f"{live_server}/jobs/{job_id}")
    page.go_back()
    expect(page).to_have_url(review_url)
    expect(page.locator("#draft-created")).to_contain_text(
        f"This draft became job {job_id}, “Import file: people.csv”")
    expect(page.locator("#create-job")).to_have_count(0)
    page.get_by_role("link", name=f"Open job {job_id}").click()
    expect(page).to_have_url(f"{live_server}/jobs/{job_id}")

    settled(kept)
    kept.get_by_role("button", name="Create job").click()
    expect(kept.locator("#draft-created")).to_contain_text(f"This draft became job {job_id}")
    expect(kept.locator("#create-job")).to_have_count(0)
    kept.get_by_role("link", name=f"Open job {job_id}").click()
    expect(kept).to_have_url(f"{live_server}/jobs/{job_id}")
    assert db.session.scalar(select(db.func.count()).select_from(Job)) == 2, "made once"


def test_a_header_only_file_is_refused_and_a_good_one_is_previewed(page: Page, live_server,
                                                                   make_user, tmp_path):
    sign_in(page, live_server, make_user("operator"))
    files_configure(page, live_server)
    empty = tmp_path / "empty.csv"
    empty.write_text("email,signed_up_at,plan\n")
    page.locator("#field-upload_id").set_input_files(str(empty))
    expect(page.locator("#field-upload_id-current")).to_contain_text("empty.csv")
    settled(page)
    page.get_by_role("button", name="Next: schedule").click()
    expect(page.locator("#field-upload_id-error")).to_have_text(
        "empty.csv has a header but no rows: there is nothing to import. Upload a file with "
        "at least one row.")

    settled(page)
    good = people_csv(tmp_path, rows=25, header="email,signed_up_at,plan")
    page.locator("#field-upload_id").set_input_files(str(good))
    expect(page.locator("#field-upload_id-current")).to_contain_text("people.csv")
    # Guessed from its ISO dates: no list of usual names holds "signed_up_at".
    expect(page.get_by_label("Timestamp field")).to_have_value("signed_up_at")
    page.locator("#field-stream").fill("people")
    settled(page)
    page.get_by_role("button", name="Next: schedule").click()
    expect(page.get_by_role("heading", name="Name and schedule")).to_be_visible()
    settled(page)
    page.get_by_role("button", name="Next: review").click()
    expect(page.locator("#preview-summary")).to_contain_text(
        "All 25 rows read without a problem, as the import reads them. The first 20, as "
        "they will be stored in stream people:")
    cells = page.locator("#preview-rows tbody tr").first.locator("td")
    expect(cells).to_have_text(["2", "2024-01-01 10:00:00+00:00", "people",
                                '{"email": "user0@x.io", "plan": "pro", '
                                '"signed_up_at": "2024-01-01T10:00:00Z"}'])
    expect(page.locator("#preview-rows tbody tr")).to_have_count(20)


def test_a_file_over_the_limit_is_refused_on_the_file_field(page: Page, live_server, app, make_user,
                                                            tmp_path):
    app.config["MAX_CONTENT_LENGTH"] = 1024 * 1024
    sign_in(page, live_server, make_user("operator"))
    files_configure(page, live_server)
    expect(page.locator("#field-upload_id-note")).to_have_text("Up to 1 MB.")
    big = tmp_path / "big.csv"
    big.write_text("email,ts\n" + "someone@example.com,2024-01-01T00:00:00Z\n" * 40_000)
    posted: list[str] = []
    page.on("request", lambda request: posted.append(request.url)
            if request.method == "POST" else None)
    page.locator("#field-upload_id").set_input_files(str(big))
    expect(page.locator("#field-upload_id-error")).to_have_text(
        "This file is larger than the 1 MB this portal accepts; split it, or ask an "
        "administrator to raise PORTAL_MAX_UPLOAD_MB.")
    # Said before sending: a very large file would be cut off before the server's answer.
    assert posted == []
    expect(page.locator("#field-upload_id")).to_have_attribute(
        "aria-describedby", re.compile("field-upload_id-error"))
    expect(page.locator("#field-upload_id-note")).to_have_text("Up to 1 MB.")
    # Next with nothing uploaded says the file is missing, on the same field.
    settled(page)
    page.get_by_role("button", name="Next: schedule").click()
    expect(page.locator("#field-upload_id-error")).to_have_text("This field is required.")
    # A file within the limit is taken.
    settled(page)
    page.locator("#field-upload_id").set_input_files(str(people_csv(tmp_path)))
    expect(page.locator("#field-upload_id-current")).to_contain_text("people.csv")
    expect(page.locator("#field-upload_id-error")).to_have_count(0)


def test_back_and_reload_keep_what_was_typed(page: Page, live_server, make_user, tmp_path):
    from sqlalchemy import func, select

    from portal.models import Draft

    sign_in(page, live_server, make_user("operator"))
    files_configure(page, live_server)
    # Before the first Next: typed, then the page reloaded.
    page.locator("#field-stream").fill("crm_people")
    page.locator("#field-stream").press("Tab")
    expect(page).to_have_url(re.compile(r"/configure\?authorization=none&draft=1$"))
    page.reload()
    expect(page.locator("#field-stream")).to_have_value("crm_people")
    settled(page)
    # Typed, then a file chosen at once: one draft, both kept.
    page.locator("#field-stream").fill("crm_people2")
    page.locator("#field-upload_id").set_input_files(str(people_csv(tmp_path)))
    expect(page.locator("#field-upload_id-current")).to_contain_text("people.csv")
    expect(page.locator("#field-stream")).to_have_value("crm_people2")
    settled(page)
    page.get_by_role("button", name="Next: schedule").click()
    expect(page.get_by_role("heading", name="Name and schedule")).to_be_visible()
    settled(page)

    # The wizard's Back, then Next: the schedule step still has what was typed.
    page.get_by_label("Job name").fill("Weekly CRM people")
    page.get_by_label("Description").fill("From the CRM export")
    page.get_by_role("button", name="Back").click()
    expect(page.get_by_role("heading", name="Configure")).to_be_visible()
    expect(page.locator("#field-stream")).to_have_value("crm_people2")
    settled(page)
    page.get_by_role("button", name="Next: schedule").click()
    expect(page.get_by_label("Job name")).to_have_value("Weekly CRM people")
    expect(page.get_by_label("Description")).to_have_value("From the CRM export")
    settled(page)
    # The browser's Back after typing, then Forward: kept too.
    page.get_by_label("Job name").fill("Daily CRM people")
    page.get_by_label("Job name").press("Tab")
    page.wait_for_load_state("networkidle")
    page.go_back()
    expect(page.get_by_role("heading", name="Configure")).to_be_visible()
    page.go_forward()
    expect(page.get_by_label("Job name")).to_have_value("Daily CRM people")
    assert db.session.scalar(select(func.count()).select_from(Draft)) == 1
