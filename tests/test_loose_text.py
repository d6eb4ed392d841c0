"""Loose text: names refuse control, invisible and text-direction characters with a field
message; uploaded file names are stored with them made visible."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from portal.extensions import db
from portal.jobs import create_job
from portal.models import Authorization, Job, Upload
from portal.schemaform import name_errors
from providers import get_provider
from tests.test_web import CSV, post_configure, to_schedule_step

HX = {"HX-Request": "true"}

REFUSED = {  # character: what the message calls it
    "\x07": "U+0007 (a control character)",
    "\n": "U+000A (a line break)",
    "\x1b": "U+001B (a control character)",
    "\x7f": "U+007F (a control character)",
    "\x85": "U+0085 (a control character)",
    "\u202e": "U+202E RIGHT-TO-LEFT OVERRIDE",
    "\u202a": "U+202A LEFT-TO-RIGHT EMBEDDING",
    "\u2066": "U+2066 LEFT-TO-RIGHT ISOLATE",
    "\u2069": "U+2069 POP DIRECTIONAL ISOLATE",
    "\u200b": "U+200B ZERO WIDTH SPACE",
    "\u200f": "U+200F RIGHT-TO-LEFT MARK",
    "\ufeff": "U+FEFF ZERO WIDTH NO-BREAK SPACE",
    "\u2028": "U+2028 LINE SEPARATOR",
    "\U000e0041": "U+E0041 TAG LATIN CAPITAL LETTER A",
}


@pytest.mark.parametrize("char", list(REFUSED))
def test_names_refuse_control_invisible_and_direction_characters(char):
    errors = name_errors(f"invoice{char}fdp.exe", "", missing="Name it.")
    assert errors["name"].startswith(f"Remove the character {REFUSED[char]}:")


@pytest.mark.parametrize("name", [
    "Nightly import", "Café ☕ sync", "نام‌خانوادگی", "👩‍💻 team", "Ünïcödé — “quoted”",
])
def test_names_keep_ordinary_text_and_the_joiners_writing_needs(name):
    assert name_errors(name, "") == {}


def test_descriptions_may_have_lines_and_tabs_but_nothing_hidden():
    assert name_errors("n", "first line\r\nsecond\tline") == {}
    assert "U+202E" in name_errors("n", "a\u202eb")["description"]
    assert "U+0000" in name_errors("n", "a\x00b")["description"]


def test_the_wizard_refuses_a_spoofing_job_name_next_to_its_field(client, auth):
    auth.login()
    step = to_schedule_step(client, auth)
    response = client.post(step, data={"csrf_token": auth.csrf(),
                                       "name": "Payroll\u202efdp.exe", "description": "x"})
    page = response.get_data(as_text=True)
    assert response.status_code == 422
    message = page.split('id="field-name-error">', 1)[1].split("</div>", 1)[0]
    assert "U+202E RIGHT-TO-LEFT OVERRIDE" in message
    assert db.session.scalar(select(Job)) is None


def test_inline_edit_refuses_a_control_character(client, auth, make_user):
    user = auth.login("admin")
    provider = get_provider("faults")
    job = create_job(provider=provider, job_type=provider.job_type("script"),
                     authorization=None, name="x", description="", config={},
                     created_by=user, paused=True)
    response = client.post(f"/jobs/{job.id}/name", headers=HX,
                           data={"csrf_token": auth.csrf(), "value": "bell\x07"})
    assert "U+0007" in response.get_data(as_text=True)
    response = client.post(f"/jobs/{job.id}/description", headers=HX,
                           data={"csrf_token": auth.csrf(), "value": "two\nlines"})
    db.session.expire_all()
    assert (job.name, job.description) == ("x", "two\nlines")


def test_the_vault_refuses_an_isolate_in_a_label(client, auth):
    auth.login()
    response = client.post("/vault/new/webhook/open", headers=HX, data={
        "csrf_token": auth.csrf(), "label": "Hook\u2066", "description": "",
        "cred-url": "https://hooks.example.com/in"})
    assert "U+2066 LEFT-TO-RIGHT ISOLATE" in response.get_data(as_text=True)
    assert db.session.scalar(select(Authorization)) is None


def test_schema_text_fields_refuse_a_trailing_newline_in_a_stream_name(client, auth):
    # "people\n" matches the stream pattern (its "$" allows a final newline).
    auth.login()
    response = post_configure(client, auth, CSV, stream="people\n")
    page = response.get_data(as_text=True)
    assert "U+000A (a line break)" in page.split('id="field-stream-error"', 1)[1]


@pytest.mark.parametrize("sent,kept", [
    ("a\x00b.csv", "a\ufffdb.csv"),
    ("photo\u202egpj.csv", "photo\ufffdgpj.csv"),
    ("tab\there.csv", "tab\ufffdhere.csv"),
    ("C:\\Users\\ada\\people.csv", "people.csv"),
    ("../../etc/people.csv", "people.csv"),
    ("\u200b", "\ufffd"),
    ("x" * 300 + ".csv", "x" * 255),
])
def test_upload_names_are_kept_with_hidden_characters_made_visible(sent, kept):
    from portal.datastore import safe_filename

    assert safe_filename(sent) == kept


def test_an_upload_whose_name_holds_a_nul_and_an_override_is_stored_safely(client, auth):
    auth.login()
    response = post_configure(client, auth, CSV, filename="pay\x00roll\u202egpj.csv",
                              headers=HX, action="upload")
    assert response.status_code in (200, 422)
    upload = db.session.scalar(select(Upload))
    assert upload.filename == "pay\ufffdroll\ufffdgpj.csv"
    assert "\u202e" not in response.get_data(as_text=True)


def test_a_refused_upload_names_the_file_safely(client, auth):
    auth.login()
    response = post_configure(client, auth, b"", filename="empty\u202evsc.csv", headers=HX,
                              action="upload")
    page = response.get_data(as_text=True)
    assert "empty\ufffdvsc.csv: line 1: the file is empty" in page
    assert "\u202e" not in page


def test_a_big_upload_id_in_a_stored_config_finds_no_file(app):
    from portal.datastore import stored_file
    from providers.base import ConfigError

    for upload_id in (2**70, "7", None, -1):
        with pytest.raises(ConfigError):
            stored_file(upload_id)

