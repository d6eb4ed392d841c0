"""Junk in URLs and forms gets a clear answer, never a 500."""

from __future__ import annotations

import pytest

from portal.extensions import db
from portal.jobs import create_job
from providers import get_provider

HX = {"HX-Request": "true"}


@pytest.fixture
def a_job(app, make_user):
    provider = get_provider("faults")
    job = create_job(provider=provider, job_type=provider.job_type("script"),
                     authorization=None, name="x", description="", config={},
                     created_by=make_user("operator", "owner@example.com"), paused=True)
    db.session.commit()
    return job


@pytest.mark.parametrize("path", [
    "/jobs?after=%%%garbage", "/jobs?after=eyJ4IjoxfQ",
    "/jobs?sort=created&after=WyJub3QgYSBkYXRlIiwgMV0",
    "/jobs?authorization=abc&type=nope&status=zzz&dir=sideways&completed=maybe",
    "/jobs?q=%25_%5C", "/jobs/statuses?ids=a,,1,-3", "/jobs/{id}/logs?after=abc",
    "/jobs/{id}/logs/older?before=abc&kind=nope", "/jobs/{id}/logs/view?q=%25%25",
    "/jobs/{id}/metrics?frame=", "/jobs/{id}/logs.ndjson?kind=nope", "/jobs/{id}/name?edit=2",
    "/jobs/new?q=%00&category=%FF", "/jobs/new/drafts/0/review", "/vault/0", "/vault/new/x/y",
    "/vault/oauth/mailchimp/callback?state=&code=", "/vault/oauth/nope/callback",
    "/admin/audit?user=x&before=y&object_type=%00", "/jobs/999999/logs.csv",
    "/jobs?q=%00", "/jobs/{id}/logs/view?q=a%00b",
])
def test_junk_urls_get_an_answer_not_a_500(client, auth, a_job, path):
    auth.login("admin")
    for headers in ({}, HX):
        response = client.get(path.format(id=a_job.id), headers=headers)
        assert response.status_code < 500, (path, response.status_code)
        response.get_data()


@pytest.mark.parametrize("path,data", [
    ("/jobs/bulk", {"action": "explode"}),
    ("/jobs/bulk", {"action": "pause", "ids": ["x", "", "-1"]}),
    ("/jobs/bulk/confirm", {}),
    ("/jobs/{id}/name", {}),
    ("/jobs/{id}/description", {"value": "x" * 5000}),
    ("/jobs/{id}/delete", {}),
    ("/vault/1/credentials", {"version": "abc"}),
    ("/vault/new/webhook/bearer", {"label": "x", "cred-url": "ftp://x", "cred-token": ""}),
    ("/jobs/new/faults/showcase/configure?authorization=none", {"count": "1e999",
                                                               "limits.daily": "-5"}),
    ("/jobs/new/drafts/1/schedule", {"name": ""}),
])
def test_junk_forms_get_an_answer_not_a_500(client, auth, a_job, path, data):
    auth.login("admin")
    response = client.post(path.format(id=a_job.id), headers=HX,
                           data={"csrf_token": auth.csrf(), **data})
    assert response.status_code < 500, (path, response.status_code)


def test_a_nul_character_is_refused_with_a_clear_message(client, auth, a_job):
    auth.login("admin")
    response = client.get("/jobs?q=a%00b")
    assert response.status_code == 400
    assert "NUL character" in response.get_data(as_text=True)
    response = client.post(f"/jobs/{a_job.id}/name", headers=HX,
                           data={"csrf_token": auth.csrf(), "value": "bad\x00name"})
    assert response.status_code == 400
    db.session.expire_all()
    assert a_job.name == "x"


def test_a_file_with_a_nul_character_is_refused_on_upload(client, auth):
    import io

    auth.login("operator")
    response = client.post(
        "/jobs/new/files/import_file/configure?authorization=none", headers=HX,
        data={"csrf_token": auth.csrf(), "stream": "s", "action": "upload",
              "file": (io.BytesIO(b"email,ts\na@x.io\x00,2024-01-01\n"), "nul.csv")},
        content_type="multipart/form-data")
    page = response.get_data(as_text=True)
    assert response.status_code == 200 and 'id="field-upload_id-error"' in page
    assert "NUL" in page


def test_a_provider_payload_with_nul_characters_is_stored_readably(app):
    from sqlalchemy import select

    from portal.datastore import write_messages
    from portal.models import Message
    from portal.models.types import utcnow
    from providers.base import OutMessage

    added, _ = write_messages("nul", [OutMessage("k1", utcnow(), {
        "name\x00": "Ada\x00", "tags": ["a\x00b"], "nested": {"x": "\x00"}, "n": 1})],
        source="test")
    db.session.commit()
    assert added == 1
    payload = db.session.scalar(select(Message.payload))
    assert payload == {"name\ufffd": "Ada\ufffd", "tags": ["a\ufffdb"],
                       "nested": {"x": "\ufffd"}, "n": 1}
