"""The audit log: sign-in events are recorded, and admins can read, filter and page it."""

from __future__ import annotations

import re
from urllib.parse import parse_qs, urlsplit

import pytest
from sqlalchemy import select

from portal import audit
from portal.extensions import db
from portal.models import AuditEntry
from tests.conftest import TEST_PASSWORD, csrf_token

HX = {"HX-Request": "true"}
ROW = re.compile(r'id="audit-row-(\d+)"')
OLDER = re.compile(r'id="audit-older" href="([^"]+)"')


def _entries(action: str | None = None) -> list[AuditEntry]:
    query = select(AuditEntry).order_by(AuditEntry.id)
    if action:
        query = query.where(AuditEntry.action == action)
    return list(db.session.scalars(query))


def _rows(page: str) -> list[int]:
    return [int(found) for found in ROW.findall(page)]


# --- Sign-in events ----------------------------------------------------------------------

def test_sign_in_is_recorded(client, auth):
    user = auth.login("viewer")
    [entry] = _entries("signed_in")
    assert (entry.object_type, entry.object_id, entry.object_label) == ("user", user.id, user.email)
    assert (entry.user_id, entry.actor) == (user.id, user.email)


@pytest.mark.parametrize("known", [True, False])
def test_failed_sign_in_is_recorded_without_the_password(client, make_user, known):
    user = make_user("viewer")
    email = user.email if known else "Nobody@Example.com"
    password = "hunter2-not-right"
    response = client.post("/login", data={"email": email, "password": password,
                                           "csrf_token": csrf_token(client)})
    assert response.status_code == 422
    assert "The email or password is not right." in response.get_data(as_text=True)
    [entry] = _entries("sign_in_failed")
    assert entry.object_type == "user"
    assert entry.object_id == (user.id if known else None)
    # An unknown account is named with its local part masked (see the next test).
    shown = email.lower() if known else "n…@example.com"
    assert entry.object_label == shown and entry.actor == shown
    assert entry.user_id is None
    for text in (entry.summary, repr(entry.details), entry.object_label, entry.actor):
        assert password not in text and TEST_PASSWORD not in text
    assert not _entries("signed_in")


def test_failed_sign_in_with_a_long_email_is_named_briefly(client, make_user):
    email = "a" * 100 + "@" + "b" * 210 + ".com"
    response = client.post("/login", data={"email": email, "password": "x",
                                           "csrf_token": csrf_token(client)})
    assert response.status_code == 422
    [entry] = _entries("sign_in_failed")
    assert entry.object_label == ("a…@" + "b" * 210)[:200] and entry.actor == entry.object_label


@pytest.mark.parametrize("typed", ["Plum-Orchard-7-Kettle", "sunshine and rain 42"])
def test_a_password_typed_into_the_email_box_is_not_recorded(client, make_user, typed):
    """People type their password into the email box; it must not land in the audit log."""
    make_user("viewer")
    response = client.post("/login", data={"email": typed, "password": "x",
                                           "csrf_token": csrf_token(client)})
    assert response.status_code == 422
    [entry] = _entries("sign_in_failed")
    assert entry.object_label == entry.actor == "(not an email address)"
    for text in (entry.summary, repr(entry.details)):
        assert typed.lower() not in text.lower()


def test_sign_out_is_recorded(client, auth):
    user = auth.login("viewer")
    response = client.post("/logout", data={"csrf_token": auth.csrf()})
    assert response.status_code == 303 and response.headers["Location"] == "/login"
    [entry] = _entries("signed_out")
    assert (entry.object_type, entry.object_id, entry.user_id) == ("user", user.id, user.id)


# --- The page ------------------------------------------------------------------------------

def test_the_admin_page_links_the_audit_log(client, auth):
    auth.login("admin")
    assert 'href="/admin/audit"' in client.get("/admin").get_data(as_text=True)


@pytest.mark.parametrize("role", ["viewer", "operator"])
def test_the_audit_log_is_for_admins_only(client, auth, role):
    auth.login(role)
    assert client.get("/admin/audit").status_code == 403
    assert client.get("/admin/audit", headers=HX).status_code == 403


def test_the_audit_log_needs_sign_in(client):
    response = client.get("/admin/audit")
    assert response.status_code == 302
    assert response.headers["Location"].startswith("/login?next=")


def test_the_audit_log_shows_entries_newest_first_with_links(client, auth):
    admin = auth.login("admin")
    job = audit.record("created", "job", 7, "Nightly import", by=admin, summary="Job created.")
    vault = audit.record("edited", "authorization", 3, "Shop key", actor="job 7")
    loose = audit.record("deleted", "authorization", None, "Gone key")
    db.session.commit()
    response = client.get("/admin/audit")
    assert response.status_code == 200
    page = response.get_data(as_text=True)
    assert "<html" in page and 'id="audit-filters"' in page
    rows = _rows(page)
    assert rows[:3] == [loose.id, vault.id, job.id] and rows == sorted(rows, reverse=True)
    assert '<a href="/jobs/7">Nightly import</a>' in page
    assert '<a href="/vault/3">Shop key</a>' in page
    assert "Gone key" in page and 'href="/vault/None"' not in page
    assert "Job created." in page and "job 7" in page
    assert 'id="audit-older"' not in page and 'id="audit-newest"' not in page


def test_filters_narrow_the_rows(client, auth, make_user):
    admin = auth.login("admin")
    other = make_user("operator")
    mine = audit.record("created", "job", 1, "Mine", by=admin)
    theirs = audit.record("created", "job", 2, "Theirs", by=other)
    edited = audit.record("edited", "authorization", 5, "Key", by=other)
    system = audit.record("unhealthy", "authorization", 5, "Key")
    db.session.commit()
    everything = _rows(client.get("/admin/audit").get_data(as_text=True))
    assert {mine.id, theirs.id, edited.id, system.id} <= set(everything)

    def rows(**query) -> set[int]:
        response = client.get("/admin/audit", query_string=query)
        assert response.status_code == 200
        return set(_rows(response.get_data(as_text=True)))

    assert rows(user=other.id) == {theirs.id, edited.id}
    assert rows(object_type="authorization") == {edited.id, system.id}
    assert rows(action="created") == {mine.id, theirs.id}
    assert rows(user=other.id, object_type="job") == {theirs.id}
    assert rows(action="created", object_type="authorization") == set()
    # blank filters mean "any", and nonsense is ignored rather than an error
    assert rows(user="", object_type="", action="") == set(everything)
    assert rows(user="nope") == set(everything)
    # the selects list the people, object types and actions, and show the ones chosen
    page = client.get("/admin/audit", query_string={"user": other.id, "action": "edited"}
                      ).get_data(as_text=True)
    assert f'<option value="{other.id}" selected>{other.email}</option>' in page
    assert '<option value="edited" selected>Edited</option>' in page
    for value in ("job", "authorization", "user"):  # shown as words, sent as names
        assert f'<option value="{value}">{value.capitalize()}</option>' in page
    assert "No entries match." in client.get(
        "/admin/audit", query_string={"action": "nothing"}).get_data(as_text=True)


def test_keyset_paging_has_no_gaps_or_overlaps_and_keeps_the_filters(client, auth):
    auth.login("admin")
    for n in range(120):
        audit.record("checked", "authorization", 9, f"Key {n}", summary=f"check {n}")
        if n % 10 == 0:  # noise the filter must keep out
            audit.record("created", "job", n, f"Job {n}")
    db.session.commit()
    seeded = [e.id for e in _entries("checked")]
    pages, url = [], "/admin/audit?action=checked&object_type=authorization"
    while url:
        page = client.get(url).get_data(as_text=True)
        pages.append(_rows(page))
        found = OLDER.search(page)
        url = found.group(1).replace("&amp;", "&") if found else None
        if url:
            query = parse_qs(urlsplit(url).query)
            assert query["action"] == ["checked"] and query["object_type"] == ["authorization"]
            assert query["before"] == [str(pages[-1][-1])]
        if len(pages) > 1:
            assert 'id="audit-newest" href="/admin/audit?' in page
            assert "before=" not in re.search(r'id="audit-newest" href="([^"]+)"', page).group(1)
    assert [len(rows) for rows in pages] == [50, 50, 20]
    together = [entry_id for rows in pages for entry_id in rows]
    assert together == sorted(seeded, reverse=True)  # every entry once, newest first


def test_labels_are_shown_as_text(client, auth):
    auth.login("admin")
    audit.record("created", "job", 4, "<script>x</script>", actor="<b>bot</b>",
                 summary="<img src=x onerror=alert(1)>")
    db.session.commit()
    page = client.get("/admin/audit").get_data(as_text=True)
    assert "<script>x</script>" not in page and "&lt;script&gt;x&lt;/script&gt;" in page
    assert "<b>bot</b>" not in page and "<img src=x" not in page


def test_htmx_gets_only_the_table(client, auth):
    auth.login("admin")
    audit.record("created", "job", 1, "A job")
    db.session.commit()
    full = client.get("/admin/audit?action=created")
    fragment = client.get("/admin/audit?action=created", headers=HX)
    assert "<html" in full.get_data(as_text=True)
    text = fragment.get_data(as_text=True)
    assert fragment.status_code == 200 and "<html" not in text
    assert 'id="audit-filters"' in text and 'id="audit"' in text and "A job" in text
    assert "HX-Request" in fragment.headers["Vary"]
    # The form asks htmx for this fragment and puts the filters in the address bar.
    assert 'hx-target="#audit-table"' in text and 'hx-push-url="true"' in text
    assert 'id="audit-table"' in full.get_data(as_text=True)


def test_job_actions_and_user_changes_are_in_the_audit_log(app, client, auth):
    from portal.jobs import create_job, pause_job
    from providers import get_provider

    admin = auth.login("admin")
    provider = get_provider("faults")
    job = create_job(provider=provider, job_type=provider.job_type("script"),
                     authorization=None, name="Audited job", description="", config={},
                     created_by=admin, paused=False)
    pause_job(job, by=admin)
    result = app.test_cli_runner().invoke(args=["users", "create", "new@example.com",
                                                "--role", "viewer", "--password", "long-enough-1"])
    assert result.exit_code == 0, result.output
    page = client.get("/admin/audit").get_data(as_text=True)
    for words in ("Audited job", "paused", "new@example.com", "command line"):
        assert words in page, words
    jobs_only = client.get("/admin/audit?object_type=job").get_data(as_text=True)
    rows = jobs_only.split("<tbody", 1)[1]
    assert "Audited job" in rows and "User created" not in rows
