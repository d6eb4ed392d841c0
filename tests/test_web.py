"""Pages: sign-in, roles, CSRF, htmx fragments, the wizard's checks, the live summary."""

from __future__ import annotations

import io

import pytest
from sqlalchemy import select

from portal.extensions import db
from portal.models import Draft, Job, JobEvent, Upload
from tests.conftest import TEST_PASSWORD, csrf_token
from tests.test_job_path import CONFIGURE, CSV, create_import

PAGES = ["/jobs", "/jobs/new", "/jobs/new/files", "/jobs/new/files/import_file",
         "/jobs/new/files/import_file/configure", "/vault", "/data", "/admin"]
ROLE_ACCESS = {  # page: lowest role that may see it
    "/jobs": "viewer", "/data": "viewer", "/jobs/new": "operator",
    "/jobs/new/files/import_file/configure": "operator", "/vault": "viewer", "/admin": "admin",
}
HX = {"HX-Request": "true"}


@pytest.mark.parametrize("path", PAGES)
def test_every_page_needs_sign_in(client, path):
    response = client.get(path)
    assert response.status_code == 302
    assert response.headers["Location"].startswith("/login?next=")


def test_root_goes_to_the_job_list(client, auth):
    auth.login("viewer")
    assert client.get("/").headers["Location"] == "/jobs"


@pytest.mark.parametrize("role", ["viewer", "operator", "admin"])
def test_roles(client, auth, role):
    auth.login(role)
    order = ["viewer", "operator", "admin"]
    for path, lowest in ROLE_ACCESS.items():
        expected = 200 if order.index(role) >= order.index(lowest) else 403
        assert client.get(path).status_code == expected, (role, path)
    page = client.get("/jobs").get_data(as_text=True)
    assert ('href="/admin"' in page) == (role == "admin")
    assert 'href="/vault"' in page
    assert ("+ Create New" in page) == (role != "viewer")


def test_wrong_password_is_refused_with_a_message(client, make_user):
    user = make_user("viewer")
    response = client.post("/login", data={"email": user.email, "password": "nope",
                                           "csrf_token": csrf_token(client)})
    assert response.status_code == 422
    assert "The email or password is not right." in response.get_data(as_text=True)
    assert client.get("/jobs").status_code == 302


def test_sign_in_never_redirects_off_site(client, make_user):
    user = make_user("viewer")
    response = client.post("/login?next=//evil.example/x", data={
        "email": user.email.upper(), "password": TEST_PASSWORD, "csrf_token": csrf_token(client)})
    assert response.headers["Location"] == "/jobs"


def test_logout_is_a_post(client, auth):
    auth.login("viewer")
    assert client.get("/logout").status_code == 405
    response = client.post("/logout", data={"csrf_token": auth.csrf()})
    assert response.status_code == 303
    assert client.get("/jobs").status_code == 302


def test_posts_without_a_csrf_token_are_refused(client, auth, make_user):
    user = make_user("admin", "a@example.com")
    response = client.post("/login", data={"email": user.email, "password": TEST_PASSWORD})
    assert response.status_code == 400 and "Form expired" in response.get_data(as_text=True)
    auth.login()
    response = client.post(CONFIGURE, data={"name": "x", "stream": "s"})
    assert response.status_code == 400
    # the token in hx-headers is what htmx sends
    response = client.post(CONFIGURE, data={"name": "x"}, headers={"X-CSRFToken": auth.csrf()})
    assert response.status_code == 422


def test_htmx_gets_fragments_and_history_restore_gets_the_page(client, auth):
    auth.login("viewer")
    full = client.get("/jobs")
    fragment = client.get("/jobs", headers=HX)
    restore = client.get("/jobs", headers={**HX, "HX-History-Restore-Request": "true"})
    assert "<html" in full.get_data(as_text=True)
    assert "<html" not in fragment.get_data(as_text=True)
    assert 'id="jobs-empty"' in fragment.get_data(as_text=True)
    assert "<html" in restore.get_data(as_text=True)
    assert all("HX-Request" in r.headers["Vary"] for r in (full, fragment, restore))


def test_wizard_steps_link_forward(client, auth):
    auth.login()
    assert 'href="/jobs/new/files"' in client.get("/jobs/new").get_data(as_text=True)
    assert 'href="/jobs/new/files/import_file"' in client.get("/jobs/new/files").get_data(
        as_text=True)
    # The files provider needs no authorization: its step is skipped.
    step3 = client.get("/jobs/new/files/import_file")
    assert step3.status_code == 303 and step3.headers["Location"] == CONFIGURE
    step4 = client.get(CONFIGURE).get_data(as_text=True)
    for field in ("timestamp_field", "stream", "delimiter"):
        assert f'id="field-{field}"' in step4
    assert 'type="file"' in step4


@pytest.mark.parametrize("path,words", [
    ("/jobs/new/nope", "no provider called"),
    ("/jobs/new/nope/import_file", "no provider called"),
    ("/jobs/new/files/nope", "has no job type"),
    ("/jobs/new/files/nope/configure", "has no job type"),
])
def test_unknown_provider_or_job_type_says_so(client, auth, path, words):
    auth.login()
    response = client.get(path)
    assert response.status_code == 404 and words in response.get_data(as_text=True)


@pytest.mark.parametrize("value", ["7", "abc", ""])
def test_an_authorization_that_does_not_fit_is_refused_on_its_step(client, auth, value):
    auth.login()
    response = client.get(f"/jobs/new/files/import_file/configure?authorization={value}")
    assert response.status_code == 422
    assert 'id="authorization-error"' in response.get_data(as_text=True)


def post_configure(client, auth, data=None, filename="people.csv", headers=None, **fields):
    form = {"stream": "people", "timestamp_field": "ts", "action": "next",
            "csrf_token": auth.csrf(), **fields}
    if data is not None:
        form["file"] = (io.BytesIO(data), filename)
    return client.post(CONFIGURE, data=form, content_type="multipart/form-data",
                       headers=headers or {})


def test_upload_fills_the_timestamp_menu_from_the_header(client, auth):
    auth.login()
    response = post_configure(client, auth, b"email,Created_At,plan\na,2024-01-01,b\n",
                              headers=HX, action="upload", stream="")
    page = response.get_data(as_text=True)
    assert response.status_code == 200 and "<html" not in page
    for field in ("email", "Created_At", "plan"):
        assert f'<option value="{field}"' in page
    assert '<option value="Created_At" selected>' in page
    assert "invalid-feedback" not in page, "an upload alone is not judged for missing fields"
    # The draft keeps it: the step's URL now names the draft, so a reload loses nothing.
    draft = db.session.scalar(select(Draft))
    assert response.headers["HX-Push-Url"].endswith(f"&draft={draft.id}")
    reloaded = client.get(response.headers["HX-Push-Url"]).get_data(as_text=True)
    assert '<option value="Created_At" selected>' in reloaded


@pytest.mark.parametrize("data,filename,words", [
    (b"", "empty.csv", "line 1: the file is empty"),
    ("a,b\ncaf\xe9,1\n".encode("latin-1"), "latin.csv", "line 2: is not valid UTF-8"),
    (b'[{"a": 1}]', "data.json", "a JSON array is not supported"),
])
def test_unreadable_uploads_get_a_field_message(client, auth, data, filename, words):
    auth.login()
    response = post_configure(client, auth, data, filename, headers=HX)
    page = response.get_data(as_text=True)
    assert response.status_code == 200
    assert 'id="field-upload_id-error"' in page and words in page
    assert db.session.scalar(select(Job)) is None


@pytest.mark.parametrize("fields,field,words", [
    ({"stream": "Bad Stream!"}, "stream", "lower-case letters"),
    ({"stream": ""}, "stream", "This field is required."),
    ({"timestamp_field": "nope"}, "timestamp_field", "Choose one of the options."),
    ({"delimiter": "#"}, "delimiter", "Choose one of the options."),
])
def test_config_errors_show_next_to_their_field_and_keep_input(client, auth, fields, field, words):
    auth.login()
    post_configure(client, auth, CSV, action="upload")
    upload = db.session.scalar(select(Upload))
    fields = {"timestamp_field": "ts", "stream": "kept_stream", **fields}
    response = post_configure(client, auth, upload_id=str(upload.id), **fields)
    page = response.get_data(as_text=True)
    assert response.status_code == 422
    error = page.split(f'id="field-{field}-error">', 1)[1].split("</div>", 1)[0]
    assert words in error
    if field != "stream":
        assert 'value="kept_stream"' in page, "what was typed is kept"
    assert f'name="upload_id" value="{upload.id}"' in page, "the upload is kept"
    assert db.session.scalar(select(Job)) is None


def to_schedule_step(client, auth) -> str:
    response = post_configure(client, auth, CSV)
    assert response.status_code == 303, response.get_data(as_text=True)
    return response.headers["Location"]


@pytest.mark.parametrize("fields,field,words", [
    ({"name": "  "}, "name", "Give the job a name."),
    ({"name": "x" * 201}, "name", "at most 200"),
    ({"description": "x" * 2001}, "description", "at most 2,000"),
    ({"retry-backoff_base_seconds": "soon"}, "retry-backoff_base_seconds",
     "Enter a whole number."),
])
def test_schedule_step_errors_show_next_to_their_field(client, auth, fields, field, words):
    auth.login()
    step = to_schedule_step(client, auth)
    page = client.get(step).get_data(as_text=True)
    assert 'value="Import file: people.csv"' in page, "the name is prefilled from the file"
    response = client.post(step, data={"csrf_token": auth.csrf(), "name": "People",
                                       "description": "kept text", **fields})
    page = response.get_data(as_text=True)
    assert response.status_code == 422
    assert words in page.split(f'id="field-{field}-error">', 1)[1].split("</div>", 1)[0]
    if field != "description":
        assert "kept text" in page
    assert db.session.scalar(select(Job)) is None


def test_missing_file_is_a_field_error(client, auth):
    auth.login()
    response = post_configure(client, auth)
    assert "This field is required." in response.get_data(as_text=True).split(
        'id="field-upload_id-error"', 1)[1]


def test_someone_elses_upload_cannot_be_used(client, auth, app, make_user):
    auth.login()
    other = make_user("admin", "other@example.com")
    upload = Upload(filename="x.csv", format="csv", size=1, sha256="0" * 64, fields=["a"],
                    content=b"a\n1\n", created_by_id=other.id)
    db.session.add(upload)
    db.session.commit()
    response = post_configure(client, auth, upload_id=str(upload.id), timestamp_field="")
    assert "That file is no longer available" in response.get_data(as_text=True)
    assert db.session.scalar(select(Job)) is None


def test_oversized_upload_gets_a_clear_413(client, auth, app):
    auth.login()
    app.config["MAX_CONTENT_LENGTH"] = 1024 * 1024
    response = post_configure(client, auth, b"a,b\n" + b"1,2\n" * 300_000)
    assert response.status_code == 413
    # The configure step again, the refusal on the file field (issue 11).
    assert "larger than the 1 MB this portal accepts" in response.get_data(as_text=True)


def test_htmx_steps_answer_with_hx_redirect(client, auth):
    auth.login()
    response = post_configure(client, auth, CSV, headers=HX)
    draft = db.session.scalar(select(Draft))
    assert response.status_code == 200
    assert response.headers["HX-Redirect"] == f"/jobs/new/drafts/{draft.id}/schedule"
    assert db.session.scalar(select(Job)) is None, "nothing is a job before Create"


def test_summary_shows_the_reference_fields(client, auth):
    user = auth.login()
    job = create_import(client, auth, description="Nightly people load")
    page = client.get(f"/jobs/{job.id}").get_data(as_text=True)
    for label in ("Status", "Provider", "Type", "Job Name", "Authorization", "Created By",
                  "Last Updated", "Configuration", "Logs"):
        assert label in page
    assert "CSV &amp; JSON files" in page and "Import · Import file" in page
    assert user.email in page and "Nightly people load" in page
    assert "&#34;stream&#34;: &#34;people&#34;" in page, "configuration as JSON"
    assert client.get("/jobs/999999").status_code == 404


def test_live_status_polls_until_the_job_is_settled(client, auth, work):
    auth.login()
    job = create_import(client, auth)
    running = client.get(f"/jobs/{job.id}/live", headers=HX)
    assert running.status_code == 200 and 'hx-trigger="every 1s"' in running.get_data(
        as_text=True)
    work()
    done = client.get(f"/jobs/{job.id}/live", headers=HX)
    body = done.get_data(as_text=True)
    assert done.status_code == 286, "286 tells htmx to stop polling"
    assert 'data-status="completed"' in body and "hx-trigger" not in body
    assert 'id="metric-added">5<' in body


def test_log_polling_returns_only_newer_events_and_moves_its_cursor(client, auth, work):
    auth.login()
    job = create_import(client, auth)
    created = db.session.scalar(select(JobEvent.id).where(JobEvent.job_id == job.id))
    first = client.get(f"/jobs/{job.id}/logs?after={created}", headers=HX).get_data(
        as_text=True)
    assert "log-event" not in first and f"after={created}" in first
    assert 'hx-swap-oob="true"' in first and 'hx-trigger="every 1s"' in first
    work()
    later = client.get(f"/jobs/{job.id}/logs?after={created}", headers=HX).get_data(
        as_text=True)
    kinds = [part.split('"', 1)[0] for part in later.split('data-kind="')[1:]]
    assert kinds == ["completed", "synced", "synced", "started"], "newest first"
    assert "hx-get" not in later.split('id="log-poller"', 1)[1], "settled: polling stops"


def test_markup_in_names_is_shown_as_text(client, auth):
    auth.login()
    job = create_import(client, auth, name="<script>alert(1)</script>",
                        description="<b>bold</b>")
    for path in ("/jobs", f"/jobs/{job.id}", f"/jobs/{job.id}/live"):
        page = client.get(path).get_data(as_text=True)
        assert "<script>alert(1)</script>" not in page and "<b>bold</b>" not in page
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page


def test_data_pages_show_what_landed(client, auth, work):
    auth.login("operator")
    create_import(client, auth)
    work()
    index = client.get("/data").get_data(as_text=True)
    assert 'href="/data/streams/people"' in index and ">5<" in index
    stream = client.get("/data/streams/people").get_data(as_text=True)
    assert "e@x.io" in stream and "2024-01-05 00:00:00 UTC" in stream
    assert client.get("/data/streams/nope").status_code == 404
