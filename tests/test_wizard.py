"""The job wizard: tiles and search, forms from JSON Schema for every field type, drafts,
the schedule and review steps, dynamic choices, and bad input on the step it belongs to."""

from __future__ import annotations

import json
import re

import pytest
from sqlalchemy import select

from portal import configsecrets, keys, vault
from portal.extensions import db
from portal.models import Draft, Job, JobEvent
from portal.queues import pending_ids
from portal.schemaform import coerce, constraint_hint, defaults, validate
from providers import get_provider
from providers.faults import SHOWCASE_SCHEMA
from tests.conftest import canary
from tests.loopback import MailchimpServer

HX = {"HX-Request": "true"}
SHOWCASE = "/jobs/new/faults/showcase/configure?authorization=none"


def post(client, auth, url: str, headers=None, **fields):
    return client.post(url, data={"csrf_token": auth.csrf(), **fields}, headers=headers or {})


# --- tiles --------------------------------------------------------------------------------

@pytest.mark.parametrize("query,category,expected", [
    ("", "", {"files", "hubspot", "mailchimp", "s3", "slack", "webhook", "postgresql",
              "mysql"}),
    ("mail", "", {"mailchimp"}),
    ("IMPORT", "", {"files", "hubspot", "mailchimp", "s3", "postgresql", "mysql"}),  # any case
    ("export stream", "", {"webhook"}),            # every word must match
    ("", "Email marketing", {"mailchimp"}),
    ("list", "CRM", {"hubspot"}),
    ("import", "Developer tools", set()),
])
def test_tiles_search_by_name_category_and_job_types(client, auth, query, category, expected):
    auth.login()
    response = client.get("/jobs/new", query_string={"q": query, "category": category},
                          headers={**HX, "HX-Target": "tile-results"})
    page = response.get_data(as_text=True)
    assert page.lstrip().startswith('<div id="tile-results"'), "only the results fragment"
    assert set(re.findall(r'data-provider="([a-z0-9_-]+)"', page)) == expected
    if not expected:
        assert "No provider matches" in page
    assert "faults" not in page


def test_the_tiles_page_has_search_category_and_drafts(client, auth):
    auth.login()
    page = client.get("/jobs/new").get_data(as_text=True)
    assert 'id="tile-search"' in page and "Email marketing" in page
    assert 'hx-trigger="input changed delay:250ms' in page, "debounced search as you type"
    assert "Drafts (" not in page


# --- schema forms ---------------------------------------------------------------------------

def test_every_field_type_renders_from_the_schema(client, auth):
    auth.login()
    page = client.get(SHOWCASE).get_data(as_text=True)
    order = [page.index(f'id="field-{name}-group"') for name in
             ("title", "count", "ratio", "enabled", "mode", "channels", "ids", "limits",
              "token")]
    assert order == sorted(order), "fields come in x-order"
    assert 'name="title"' in page and 'value="Hello"' in page and "Help text for the title." in page
    assert 'type="number" id="field-count" name="count" value="3"' in page
    assert 'min="1"' in page and 'max="10"' in page and 'step="any"' in page
    assert re.search(r'type="checkbox" id="field-enabled" name="enabled"\s+checked', page)
    assert '<option value="safe" selected>Safe</option>' in page
    assert page.count('name="channels"') == 3 and 'value="sms"' in page
    assert '<textarea class="form-control" id="field-ids" name="ids"' in page
    assert '<legend class="h6 float-none w-auto px-2">Limits</legend>' in page
    assert 'name="limits.daily"' in page and 'name="limits.note"' in page
    assert 'type="password" id="field-token" name="token"' in page
    # The schema's limits are said up front, next to any help text.
    def helped(name: str) -> str:
        return page.split(f'id="field-{name}-help">')[1].split("</div>")[0]

    assert helped("title") == "Help text for the title. At most 40 characters."
    assert helped("count") == "From 1 to 10." and helped("ratio") == "From 0 to 1."
    assert helped("ids") == "At most 3 lines." and helped("limits-daily") == "At least 1."
    assert helped("token") == "At least 4 characters."
    assert 'id="field-mode-help"' not in page and 'id="field-enabled-help"' not in page


def test_coerce_and_validate_every_type():
    from werkzeug.datastructures import MultiDict

    form = MultiDict([("title", "Hi"), ("count", "4"), ("ratio", "0.5"), ("enabled", "on"),
                      ("mode", "fast"), ("channels", "email"), ("channels", "push"),
                      ("ids", "1\n2\n"), ("limits.daily", "7"), ("token", "tttt")])
    values, errors = coerce(SHOWCASE_SCHEMA, form)
    assert errors == {}
    assert values == {"title": "Hi", "count": 4, "ratio": 0.5, "enabled": True, "mode": "fast",
                      "channels": ["email", "push"], "ids": [1, 2],
                      "limits": {"daily": 7, "note": "n/a"}, "token": "tttt"}
    assert validate(SHOWCASE_SCHEMA, values) == {}
    bad, errors = coerce(SHOWCASE_SCHEMA, MultiDict([("count", "x"), ("ids", "1\nb")]))
    assert errors == {"count": "Enter a whole number.", "ids": "Put one number on each line."}
    problems = validate(SHOWCASE_SCHEMA, {**values, "count": 11, "ids": [1, 2, 3, 4],
                                          "limits": {}, "channels": ["fax"]})
    assert problems == {"count": "Must be maximum 10.", "ids": "[1, 2, 3, 4] is too long",
                        "limits.daily": "This field is required.",
                        "channels": "Choose one of the options."}
    assert defaults(SHOWCASE_SCHEMA)["limits"] == {"note": "n/a"}


def test_errors_show_next_to_nested_fields_and_input_is_kept(client, auth):
    auth.login()
    token = canary("showcase-secret-7777")
    response = post(client, auth, SHOWCASE, headers=HX, title="Kept title", count="12",
                    channels="sms", token=token)
    page = response.get_data(as_text=True)
    assert response.status_code == 200  # htmx swaps only 2xx; the page says what is wrong
    assert "Must be maximum 10." in page.split('id="field-count-error">')[1]
    assert "This field is required." in page.split('id="field-limits-daily-error">')[1]
    assert 'value="Kept title"' in page and re.search(r'value="sms"\s+checked', page)
    assert "Set. Leave blank to keep it." in page, "the secret is kept, not shown"
    draft = db.session.scalar(select(Draft))
    assert draft.config["title"] == "Kept title" and draft.step == "configure"
    assert response.headers["HX-Push-Url"].endswith(f"draft={draft.id}")


def test_a_secret_is_kept_sealed_and_a_blank_box_keeps_it(client, auth):
    auth.login()
    token = canary("showcase-secret-9999")
    response = post(client, auth, SHOWCASE, headers=HX, title="T", count="12", token=token)
    assert "Set. Leave blank to keep it." in response.get_data(as_text=True)
    draft = db.session.scalar(select(Draft))
    assert token not in json.dumps(draft.config) and configsecrets.is_sealed(draft.config["token"])
    # The browser sends the password box back empty: the secret set before stays.
    url = f"{SHOWCASE}&draft={draft.id}"
    response = post(client, auth, url, title="T", count="3", **{"limits.daily": "5"})
    assert response.status_code == 303, response.get_data(as_text=True)
    db.session.expire_all()
    assert configsecrets.open_config(SHOWCASE_SCHEMA, draft.config, what="t")["token"] == token
    # A new secret with a mistake of its own is not kept: the one set before stays.
    page = post(client, auth, url, headers=HX, title="T", count="3", token="abc",
                **{"limits.daily": "5"}).get_data(as_text=True)
    assert "at least 4" in page.split('id="field-token-error">')[1].split("</")[0]
    assert "Set. Leave blank to keep it." in page
    db.session.expire_all()
    assert configsecrets.open_config(SHOWCASE_SCHEMA, draft.config, what="t")["token"] == token
    # A secret that no key opens any more (the key was removed): enter it again, and
    # Create sends the person back to the configure step to do so.
    client.application.extensions["portal_keyring"] = keys.Keyring(
        "other:" + "B" * 43 + "=")
    draft.step = "review"
    db.session.commit()
    response = post(client, auth, f"/jobs/new/drafts/{draft.id}/create")
    assert response.headers["Location"].startswith("/jobs/new/faults/showcase/configure?")
    page = client.get(response.headers["Location"]).get_data(as_text=True)
    assert "can no longer be decrypted" in page and "Set. Leave blank" not in page
    page = post(client, auth, url, headers=HX, title="T", count="3",
                **{"limits.daily": "5"}).get_data(as_text=True)
    assert "can no longer be decrypted" in page
    db.session.expire_all()
    assert "token" not in draft.config, "the secret no key opens is gone, not kept"
    assert db.session.scalar(select(Job)) is None


def test_the_whole_wizard_with_a_paused_job_and_redacted_review(client, auth):
    auth.login()
    token = canary("showcase-secret-8888")
    response = post(client, auth, SHOWCASE, title="T", **{"limits.daily": "5"}, token=token,
                    ids="4\n5")
    assert response.status_code == 303
    schedule_url = response.headers["Location"]
    draft = db.session.scalar(select(Draft))
    assert schedule_url == f"/jobs/new/drafts/{draft.id}/schedule"
    page = client.get(schedule_url).get_data(as_text=True)
    assert 'value="Form showcase: Fault injection (tests only)"' in page, "a sensible name"
    response = post(client, auth, schedule_url, name="Showcase", description="d",
                    create_paused="on", **{"schedule-kind": "interval",
                                           "schedule-every_minutes": "15"})
    assert response.status_code == 303
    review = client.get(response.headers["Location"]).get_data(as_text=True)
    assert "Every 15 minutes" in review and "Paused: it runs when you resume it" in review
    assert "•••••• (set)" in review and "&#34;daily&#34;: 5" in review
    assert db.session.scalar(select(Job)) is None, "nothing is a job before Create"
    response = post(client, auth, f"/jobs/new/drafts/{draft.id}/create")
    job = db.session.scalar(select(Job))
    assert response.headers["Location"] == f"/jobs/{job.id}"
    assert job.status == "paused" and token not in json.dumps(job.config)
    assert configsecrets.open_config(SHOWCASE_SCHEMA, job.config, what="t")["token"] == token
    assert job.schedule["every_minutes"] == 15 and pending_ids([job]) == set()
    created = db.session.scalar(select(JobEvent).where(JobEvent.job_id == job.id))
    assert created.message.endswith(", paused")
    assert db.session.get(Draft, draft.id) is None, "the draft became the job"


# --- drafts -----------------------------------------------------------------------------------

def test_drafts_are_listed_resumed_and_discarded(client, auth):
    auth.login()
    post(client, auth, SHOWCASE, title="Draft one")  # with a mistake: stays on configure
    draft = db.session.scalar(select(Draft))
    assert "Drafts (1)" in client.get("/jobs/new").get_data(as_text=True)
    page = client.get("/jobs/new/drafts").get_data(as_text=True)
    resume = re.search(r'href="([^"]+)">Resume', page).group(1).replace("&amp;", "&")
    assert resume == f"{SHOWCASE}&draft={draft.id}"
    assert 'value="Draft one"' in client.get(resume).get_data(as_text=True)
    response = post(client, auth, f"/jobs/new/drafts/{draft.id}/discard", headers=HX)
    assert response.headers["HX-Redirect"] == "/jobs/new/drafts"
    assert db.session.scalar(select(Draft)) is None


def test_someone_elses_or_an_unknown_draft_is_a_clear_404(client, auth, make_user):
    auth.login()
    other = make_user("operator", "other@example.com")
    draft = Draft(owner_id=other.id, provider="faults", job_type="showcase", config={})
    db.session.add(draft)
    db.session.commit()
    for url in (f"/jobs/new/drafts/{draft.id}/schedule", f"/jobs/new/drafts/{draft.id}/review",
                "/jobs/new/drafts/999/schedule", f"{SHOWCASE}&draft={draft.id}"):
        response = client.get(url)
        assert response.status_code == 404 and "There is no such draft" in response.get_data(
            as_text=True), url
    assert "Draft one" not in client.get("/jobs/new/drafts").get_data(as_text=True)


def test_review_or_create_before_the_steps_are_done_goes_back_to_them(client, auth):
    auth.login()
    post(client, auth, SHOWCASE, title="x")  # configure not valid yet
    draft = db.session.scalar(select(Draft))
    response = client.get(f"/jobs/new/drafts/{draft.id}/review")
    assert response.status_code == 303 and "configure" in response.headers["Location"]
    response = post(client, auth, f"/jobs/new/drafts/{draft.id}/create")
    assert response.status_code == 303 and db.session.scalar(select(Job)) is None


def test_a_tampered_draft_field_is_refused(client, auth):
    auth.login()
    response = client.get("/jobs/new/faults/showcase/configure?authorization=none&draft=abc")
    assert response.status_code == 200, "a draft id that is not a number is ignored"
    response = post(client, auth, "/jobs/new/files/import_file/configure?authorization=none"
                                  "&draft=12345", stream="x")
    assert response.status_code == 404


# --- dynamic choices ------------------------------------------------------------------------

def test_stream_choices_come_from_the_data_store(client, auth, make_user):
    from portal.datastore import write_messages
    from portal.models.types import utcnow
    from providers.base import OutMessage

    user = auth.login()
    write_messages("signups", [OutMessage("k", utcnow(), {})], source="test")
    provider = get_provider("webhook")
    authorization = vault.create(provider, provider.auth_method("open"), label="Open hook",
                                 description="", credentials={"url": "https://h.example/x"},
                                 by=user)
    db.session.commit()
    url = f"/jobs/new/webhook/send_stream/configure?authorization={authorization.id}"
    page = client.get(url).get_data(as_text=True)
    assert '<option value="signups">signups</option>' in page
    response = post(client, auth, url, headers=HX, stream="nope", batch_size="10")
    assert "Choose one of the options." in response.get_data(as_text=True)


def test_audience_choices_come_from_the_audiences(client, auth):
    from portal import audiences

    user = auth.login()
    cleaned, errors = audiences.check({"name": "Pro & Team", "match": "any", "conditions": [
        {"field": "plan", "op": "in", "value": ["pro", "team"]}]})
    assert errors == {}
    audiences.create(cleaned, by=user)
    provider = get_provider("webhook")
    authorization = vault.create(provider, provider.auth_method("open"), label="Open hook",
                                 description="", credentials={"url": "https://h.example/x"},
                                 by=user)
    db.session.commit()
    url = f"/jobs/new/webhook/send_audience/configure?authorization={authorization.id}"
    page = client.get(url).get_data(as_text=True)
    assert f'<option value="{cleaned["slug"]}">Pro &amp; Team</option>' in page
    response = post(client, auth, url, headers=HX, audience="nope", identifier="email",
                    batch_size="10")
    assert "Choose one of the options." in response.get_data(as_text=True)
    response = post(client, auth, url, headers=HX, audience=cleaned["slug"],
                    identifier="e mail", batch_size="10")
    assert "Enter a field name, without spaces." in response.get_data(as_text=True)


def test_provider_lists_fill_a_menu_and_a_failure_says_so(client, auth, monkeypatch):
    from tests.loopback import TEST_API_KEY

    user = auth.login()
    canary(TEST_API_KEY)
    with MailchimpServer() as mailchimp:
        monkeypatch.setenv("PORTAL_MAILCHIMP_API_URL", mailchimp.api_url)
        mailchimp.add_member("a1b2c3", "ada@example.com")
        mailchimp.list_names["a1b2c3"] = "Newsletter"
        provider = get_provider("mailchimp")
        authorization = vault.create(provider, provider.auth_method("api_key"), label="MC",
                                     description="", credentials={"api_key": TEST_API_KEY},
                                     by=user)
        db.session.commit()
        url = f"/jobs/new/mailchimp/import_members/configure?authorization={authorization.id}"
        page = client.get(url).get_data(as_text=True)
        assert '<option value="a1b2c3">Newsletter (a1b2c3)</option>' in page
        mailchimp.fail_next = [500, 500]
        page = client.get(url).get_data(as_text=True)
        assert 'id="field-list_id-options-error"' in page
        assert "Could not load the choices from the provider" in page
        assert 'type="text" id="field-list_id" name="list_id"' in page, "type it instead"
        mailchimp.fail_next = [500]
        response = post(client, auth, url, list_id="typed1", stream="members", status="any")
        assert response.status_code == 303, "a typed value is accepted when the list failed"


def test_a_set_secret_inside_a_group_says_so_and_never_shows(app):
    from flask import render_template_string

    schema = {"type": "object", "properties": {
        "host": {"type": "string"}, "password": {"type": "string", "writeOnly": True}}}
    with app.test_request_context():
        sealed = configsecrets.seal_config({"type": "object", "properties": {"remote": schema}},
                                   {"remote": {"host": "h", "password": "pw-7f3a9"}})
        page = render_template_string(
            '{% from "macros/forms.html" import schema_field %}'
            '{{ schema_field("remote", prop, value) }}', prop=schema, value=sealed["remote"])
    assert page.count("Set. Leave blank to keep it.") == 1 and 'value="h"' in page
    assert 'id="field-remote-password"' in page and "$sealed" not in page
    assert "pw-7f3a9" not in page and sealed["remote"]["password"]["$sealed"] not in page


@pytest.mark.parametrize("prop,said", [
    ({"type": "integer", "minimum": 1, "maximum": 1440}, "From 1 to 1,440."),
    ({"type": "number", "minimum": 0.01, "maximum": 720}, "From 0.01 to 720."),
    ({"type": "number", "maximum": 1234567.5}, "At most 1,234,567.5."),
    ({"type": "number", "minimum": 0, "exclusiveMaximum": 1}, "At least 0. Less than 1."),
    ({"type": "number", "exclusiveMinimum": 0}, "More than 0."),
    ({"type": "string", "minLength": 2, "maxLength": 40}, "From 2 to 40 characters."),
    ({"type": "string", "minLength": 1}, ""),  # "required" says it
    ({"type": "string", "maxLength": 1}, "At most 1 character."),
    ({"type": "string", "enum": ["a"], "maxLength": 3}, ""),
    ({"type": "array", "items": {"type": "string"}, "minItems": 0}, ""),
    ({"type": "array", "items": {"type": "string"}, "minItems": 1}, "At least 1 line."),
    ({"type": "boolean"}, ""),
])
def test_constraint_hints_say_the_limits_in_words(prop, said):
    assert constraint_hint(prop) == said


# --- issue 11: the wizard as a new user meets it ---------------------------------------------

def test_every_job_type_default_schedule_reads_as_its_default_cadence():
    from portal import schedule
    from portal.schemaform import defaults as schema_defaults
    from providers import CATALOG

    for provider in CATALOG.values():
        for job_type in provider.job_types:
            chosen = schedule.from_dict({**schema_defaults(schedule.SCHEMA),
                                         **job_type.default_schedule})
            assert schedule.describe(chosen) == job_type.default_cadence, job_type.key
            assert not schedule.problems({**schema_defaults(schedule.SCHEMA),
                                          **job_type.default_schedule}), job_type.key


def test_a_message_that_is_the_description_is_not_repeated_under_the_field(app):
    from flask import render_template_string

    prop = {"type": "string", "title": "Code", "pattern": "^[a-z]+$",
            "description": "Lower-case letters only."}
    failed = validate({"type": "object", "properties": {"code": prop}}, {"code": "A1"})
    assert failed == {"code": "Lower-case letters only."}
    with app.test_request_context():
        page = render_template_string(
            '{% from "macros/forms.html" import schema_field %}'
            '{{ schema_field("code", prop, "A1", failed["code"]) }}', prop=prop, failed=failed)
    assert page.count("Lower-case letters only.") == 1
    assert 'id="field-code-error"' in page


def test_a_created_draft_says_which_job_it_became_and_only_to_its_owner(client, auth):
    auth.login()
    response = post(client, auth, SHOWCASE, title="T", **{"limits.daily": "5"},
                    token=canary("showcase-secret-4242"))
    draft = db.session.scalar(select(Draft))
    post(client, auth, response.headers["Location"], name="Showcase")
    response = post(client, auth, f"/jobs/new/drafts/{draft.id}/create")
    job = db.session.scalar(select(Job))
    assert job.draft_id == draft.id
    for url in (f"/jobs/new/drafts/{draft.id}/review", f"/jobs/new/drafts/{draft.id}/schedule"):
        response = client.get(url)
        assert response.status_code == 410
        assert f"This draft became job {job.id}" in response.get_data(as_text=True)
        assert client.get(url, headers=HX).status_code == 200, "htmx swaps it in"
    response = post(client, auth, f"/jobs/new/drafts/{draft.id}/create", headers=HX)
    assert f'href="/jobs/{job.id}"' in response.get_data(as_text=True)
    assert db.session.scalar(select(db.func.count()).select_from(Job)) == 1
    client.post("/logout", data={"csrf_token": auth.csrf()})
    auth.login("admin")  # another person, even an admin, learns nothing of it
    response = client.get(f"/jobs/new/drafts/{draft.id}/review")
    assert response.status_code == 404 and "became job" not in response.get_data(as_text=True)


def test_an_upload_over_the_limit_is_said_on_the_file_field(app, client, auth):
    import io

    auth.login()
    app.config["MAX_CONTENT_LENGTH"] = 1024
    url = "/jobs/new/files/import_file/configure?authorization=none"
    assert 'id="field-upload_id-note">Up to 1 KB.' in client.get(url).get_data(as_text=True)
    app.config["MAX_CONTENT_LENGTH"] = 1024 * 1024
    assert 'id="field-upload_id-note">Up to 1 MB.' in client.get(url).get_data(as_text=True)
    big = {"csrf_token": auth.csrf(), "action": "upload",
           "file": (io.BytesIO(b"a,b\n" + b"1,2\n" * 300_000), "big.csv")}
    response = client.post(url, headers=HX, data=big, content_type="multipart/form-data")
    page = response.get_data(as_text=True)
    assert response.status_code == 200, "htmx swaps it in"
    assert 'id="field-upload_id-error">This file is larger than the 1 MB' in page
    assert '<div id="wizard"' not in page, "the step, not a whole page"
    big["file"] = (io.BytesIO(b"a,b\n" + b"1,2\n" * 300_000), "big.csv")
    response = client.post(url, data=big, content_type="multipart/form-data")
    assert response.status_code == 413 and "Configure" in response.get_data(as_text=True)
    response = client.post("/jobs/new/drafts/1/schedule", data={"x": "y" * 2_000_000})
    assert response.status_code == 413 and "File too large" in response.get_data(as_text=True)
    assert db.session.scalar(select(db.func.count()).select_from(Draft)) == 0


def test_save_and_back_keep_the_schedule_step_as_typed_and_never_skip_its_checks(client, auth):
    auth.login()
    response = post(client, auth, SHOWCASE, title="T", **{"limits.daily": "5"},
                    token=canary("showcase-secret-5151"))
    schedule_url = response.headers["Location"]
    assert post(client, auth, schedule_url, name="Good").status_code == 303
    draft = db.session.scalar(select(Draft))
    assert draft.step == "review"
    response = post(client, auth, schedule_url, headers=HX, action="save", name="",
                    description="typed")
    assert response.headers["HX-Replace-Url"] == schedule_url
    assert f'id="draft-id" value="{draft.id}" hx-swap-oob="true"' in response.get_data(
        as_text=True)
    db.session.refresh(draft)
    assert (draft.name, draft.description, draft.step) == ("", "typed", "schedule")
    assert client.get(f"/jobs/new/drafts/{draft.id}/review").status_code == 303, \
        "no review of a plan that was not checked"
    response = post(client, auth, schedule_url, action="back", name="Kept")
    assert response.headers["Location"].startswith("/jobs/new/faults/showcase/configure?")
    db.session.refresh(draft)
    assert draft.name == "Kept"
