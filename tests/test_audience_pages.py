"""The audience pages: who may read and change them, the form's field-level messages, the
live preview and the row buttons (htmx), deleting, 404s and the profile's audiences."""

from __future__ import annotations

import re
from datetime import timedelta

from sqlalchemy import select

from portal import audiences
from portal.datastore import write_messages
from portal.extensions import db
from portal.models import Audience, AuditEntry, Job
from portal.models.types import utcnow
from providers.base import OutMessage

HX = {"HX-Request": "true"}


def fill(*payloads: dict) -> None:
    now = utcnow()
    write_messages("people", [OutMessage(f"k-{n}-{payload.get('email')}",
                                         now - timedelta(minutes=n), payload)
                              for n, payload in enumerate(payloads)], source="job:1")
    db.session.commit()


def form(csrf: str, name: str = "Pros", *, rows=(("plan", "equals", "pro"),), **extra) -> dict:
    return {"csrf_token": csrf, "name": name, "slug": "", "description": "", "match": "all",
            "field": [r[0] for r in rows], "op": [r[1] for r in rows],
            "value": [r[2] for r in rows], **extra}


def make(name: str = "Pros", conditions=None, by=None) -> Audience:
    cleaned, errors = audiences.check({"name": name, "conditions": conditions or [
        {"field": "plan", "op": "equals", "value": "pro"}]})
    assert errors == {}
    audience = audiences.create(cleaned, by=by)
    db.session.commit()
    return audience


def test_an_operator_creates_an_audience_and_the_list_shows_it(client, auth):
    auth.login("operator")
    fill({"email": "a@x.io", "plan": "pro"}, {"email": "b@x.io", "plan": "Pro "},
         {"email": "c@x.io", "plan": "free"})
    page = client.get("/data/audiences/new").get_data(as_text=True)
    assert 'id="audience-form"' in page and 'list="attribute-names"' in page
    assert '<option value="plan">' in page  # field names seen, suggested
    response = client.post("/data/audiences/new", data=form(
        auth.csrf(), rows=(("plan", "equals", "pro"), ("", "equals", ""))))
    assert response.status_code == 303
    audience = db.session.scalar(select(Audience))
    assert response.headers["Location"].endswith(f"/data/audiences/{audience.id}")
    assert (audience.slug, audience.conditions) == (
        "pros", [{"field": "plan", "op": "equals", "value": "pro"}])
    listing = client.get("/data/audiences").get_data(as_text=True)
    row = re.search(r'<tr data-audience="pros">.*?</tr>', listing, re.S).group(0)
    assert "plan equals “pro”" in row and '<td class="text-end audience-size">2</td>' in row
    shown = client.get(f"/data/audiences/{audience.id}").get_data(as_text=True)
    assert '<strong id="preview-count">2</strong>' in shown
    assert "a@x.io" in shown and "c@x.io" not in shown
    assert db.session.scalars(select(AuditEntry.action).where(
        AuditEntry.object_type == "audience")).all() == ["audience_created"]
    index = client.get("/data").get_data(as_text=True)
    assert 'href="/data/audiences">1 audience</a>' in index


def test_bad_input_gets_field_level_messages_and_saves_nothing(client, auth):
    auth.login("operator")
    response = client.post("/data/audiences/new", data=form(
        auth.csrf(), name="", slug="Not OK", rows=(("age", "gt", "soon"), ("", "in", "a"),
                                                  ("plan", "nearly", "x"))))
    assert response.status_code == 422
    page = response.get_data(as_text=True)
    assert re.search(r'id="audience-name-error">Give the audience a name.<', page)
    assert "lower-case letters" in re.search(r'id="audience-slug-error">([^<]*)<', page).group(1)
    assert "needs a number" in re.search(r'id="condition-value-0-error">([^<]*)<',
                                         page).group(1)
    assert "Name the profile field" in page and 'id="condition-field-1-error"' in page
    assert "Unknown operator" in re.search(r'id="condition-op-2-error">([^<]*)<',
                                           page).group(1)
    assert 'value="soon"' in page  # what was typed stays
    assert db.session.scalar(select(Audience)) is None
    # For htmx the same form comes back with 200 (htmx swaps nothing on a 4xx).
    again = client.post("/data/audiences/new", headers=HX, data=form(auth.csrf(), name=""))
    assert again.status_code == 200 and "Give the audience a name." in again.get_data(
        as_text=True)


def test_the_preview_counts_live_and_names_a_bad_condition_instead(client, auth):
    auth.login("operator")
    fill({"email": "a@x.io", "age": 30}, {"email": "b@x.io", "age": "41"},
         {"email": "c@x.io", "age": 12})
    good = client.post("/data/audiences/preview", headers=HX, data=form(
        auth.csrf(), rows=(("age", "gt", "20"),))).get_data(as_text=True)
    assert '<strong id="preview-count">2</strong>' in good and "<html" not in good
    assert "a@x.io" in good and "b@x.io" in good and "c@x.io" not in good
    bad = client.post("/data/audiences/preview", headers=HX, data=form(
        auth.csrf(), rows=(("age", "gt", "20"), ("age", "lt", "tomorrow")))).get_data(
        as_text=True)
    assert "preview-count" not in bad
    assert re.search(r"<strong>Condition 2, value</strong>: “less than” needs a number", bad)
    empty = client.post("/data/audiences/preview", headers=HX, data=form(
        auth.csrf(), rows=(("", "equals", ""),))).get_data(as_text=True)
    assert 'id="preview-nobody"' in empty and "matches nobody" in empty


def test_rows_are_added_and_removed_with_the_preview_out_of_band(client, auth):
    auth.login("operator")
    fill({"email": "a@x.io", "plan": "pro", "age": 30})
    added = client.post("/data/audiences/rows", headers=HX, data=form(
        auth.csrf(), rows=(("plan", "equals", "pro"),), add="1")).get_data(as_text=True)
    assert added.count('class="row g-2 mb-2 condition-row"') == 2
    assert 'id="audience-preview" hx-swap-oob="innerHTML"' in added
    assert '<strong id="preview-count">1</strong>' in added
    removed = client.post("/data/audiences/rows", headers=HX, data=form(
        auth.csrf(), rows=(("plan", "equals", "free"), ("age", "gt", "20")),
        remove="0")).get_data(as_text=True)
    assert removed.count('class="row g-2 mb-2 condition-row"') == 1
    assert 'value="age"' in removed and 'value="free"' not in removed
    assert '<strong id="preview-count">1</strong>' in removed
    # Without script the buttons post the whole form: it comes back with the rows changed.
    page = client.post("/data/audiences/new", data=form(auth.csrf(), add="1"))
    assert page.status_code == 200
    assert page.get_data(as_text=True).count('class="row g-2 mb-2 condition-row"') == 2
    assert db.session.scalar(select(Audience)) is None


def test_viewers_read_but_change_nothing(client, auth):
    viewer = auth.login("viewer")
    audience = make(by=viewer)
    assert client.get("/data/audiences").status_code == 200
    page = client.get(f"/data/audiences/{audience.id}").get_data(as_text=True)
    assert 'id="audience-summary"' in page and 'id="audience-form"' not in page
    assert 'id="new-audience"' not in client.get("/data/audiences").get_data(as_text=True)
    csrf = auth.csrf()
    assert client.get("/data/audiences/new").status_code == 403
    assert client.post("/data/audiences/new", data=form(csrf)).status_code == 403
    assert client.post(f"/data/audiences/{audience.id}", data=form(csrf, "X")).status_code == 403
    assert client.post("/data/audiences/rows", data=form(csrf)).status_code == 403
    assert client.get(f"/data/audiences/{audience.id}/delete").status_code == 403
    assert client.post(f"/data/audiences/{audience.id}/delete",
                       data={"csrf_token": csrf}).status_code == 403
    assert db.session.get(Audience, audience.id).name == "Pros"


def test_signed_out_and_without_csrf_nothing_happens(client, auth):
    assert client.get("/data/audiences").status_code in (302, 303)
    auth.login("admin")
    response = client.post("/data/audiences/new", data={"name": "X", "field": "a",
                                                        "op": "exists", "value": ""})
    assert response.status_code == 400
    assert db.session.scalar(select(Audience)) is None


def test_editing_saves_changes_and_missing_audiences_are_404(client, auth):
    user = auth.login("admin")
    audience = make(by=user)
    response = client.post(f"/data/audiences/{audience.id}", data=form(
        auth.csrf(), "Top pros", rows=(("plan", "in", "pro, enterprise"),), match="any"))
    assert response.status_code == 303
    db.session.refresh(audience)
    assert (audience.name, audience.slug, audience.match) == ("Top pros", "pros", "any")
    assert audience.conditions == [{"field": "plan", "op": "in",
                                    "value": ["pro", "enterprise"]}]
    page = client.get(f"/data/audiences/{audience.id}").get_data(as_text=True)
    assert 'value="pro, enterprise"' in page
    for path in ("/data/audiences/999", "/data/audiences/999/delete",
                 "/data/audiences/99999999999999999999999", "/data/audiences/abc"):
        assert client.get(path).status_code == 404, path
    assert client.post("/data/audiences/999", data=form(auth.csrf())).status_code == 404


def test_delete_is_refused_while_a_job_exports_the_audience(client, auth):
    user = auth.login("operator")
    audience = make(by=user)
    job = Job(name="Send pros", provider="webhook", job_type="send", kind="export",
              status="sleeping", config={"audience": "pros"}, created_by_id=user.id)
    db.session.add(job)
    db.session.commit()
    question = client.get(f"/data/audiences/{audience.id}/delete").get_data(as_text=True)
    assert 'id="audience-delete-refused"' in question and "Send pros" in question
    refused = client.post(f"/data/audiences/{audience.id}/delete",
                          data={"csrf_token": auth.csrf()})
    assert refused.status_code == 409 and "Send pros" in refused.get_data(as_text=True)
    listing = client.get("/data/audiences").get_data(as_text=True)
    assert "Send pros</a> (sleeping)" in listing
    job.status = "failed"
    db.session.commit()
    done = client.post(f"/data/audiences/{audience.id}/delete",
                       data={"csrf_token": auth.csrf()})
    assert done.status_code == 303 and done.headers["Location"].endswith("/data/audiences")
    assert db.session.get(Audience, audience.id) is None


def test_find_a_user_lists_the_profiles_audiences(client, auth):
    user = auth.login("viewer")
    fill({"email": "a@x.io", "plan": "pro"}, {"email": "b@x.io", "plan": "free"})
    make(by=user)
    make("Everyone", [{"field": "email", "op": "exists"}], by=user)
    page = client.get("/data/profiles?key=email&value=a@x.io").get_data(as_text=True)
    found = re.search(r'id="profile-audiences">(.*?)</p>', page).group(1)
    assert ">Everyone</a>" in found and ">Pros</a>" in found
    other = client.get("/data/profiles?key=email&value=b@x.io").get_data(as_text=True)
    found = re.search(r'id="profile-audiences">(.*?)</p>', other).group(1)
    assert ">Everyone</a>" in found and "Pros" not in found
