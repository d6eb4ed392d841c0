"""The Data page: a stream's messages paged and searched, sources linked, and deleting a
stream (admins only, refused while a job that may still run uses it)."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest

from portal.datastore import write_messages
from portal.extensions import db
from portal.models import AuditEntry, Message, Stream
from portal.models.types import utcnow
from providers.base import OutMessage
from tests.browser import faults_job

HX = {"HX-Request": "true"}


def fill(name: str, count: int, *, source: str = "job:1", payload=None) -> None:
    now = utcnow()
    write_messages(name, [OutMessage(f"key-{n}", now - timedelta(minutes=n),
                                     payload(n) if payload else {"email": f"u{n}@x.io"})
                          for n in range(count)], source=source)
    db.session.commit()


def shown_keys(page: str) -> list[str]:
    return re.findall(r"<td><code>(key-[^<]*)</code></td>", page)


def test_messages_are_paged_newest_first_with_an_older_link(client, auth):
    auth.login("viewer")
    fill("signups", 120)
    page = client.get("/data/streams/signups").get_data(as_text=True)
    first = shown_keys(page)
    # Stored in one batch in key order: the newest stored is the last key.
    assert first == [f"key-{n}" for n in range(119, 69, -1)]
    assert "120 messages" in page
    link = re.search(r'href="([^"]+)" id="older-page"', page).group(1).replace("&amp;", "&")
    second = client.get(link).get_data(as_text=True)
    assert shown_keys(second) == [f"key-{n}" for n in range(69, 19, -1)]
    third_link = re.search(r'href="([^"]+)" id="older-page"', second).group(1)
    third = client.get(third_link.replace("&amp;", "&")).get_data(as_text=True)
    assert shown_keys(third) == [f"key-{n}" for n in range(19, -1, -1)]
    assert 'id="older-page"' not in third, "the last page has no Older link"
    assert 'id="newest-page"' in third
    # The fragment for htmx is the list alone.
    fragment = client.get(link, headers=HX).get_data(as_text=True)
    assert "<html" not in fragment and shown_keys(fragment) == shown_keys(second)


def test_search_folds_the_case_of_any_letter_in_dedupe_keys(client, auth):
    auth.login("viewer")
    now = utcnow()
    write_messages("letters", [OutMessage(key, now, {"n": n}) for n, key in
                               enumerate(["Ärger-1", "ärger-2", "Arger-3", "ÉTÉ-4"])],
                   source="job:1")
    db.session.commit()

    def search(text: str) -> list[str]:
        page = client.get("/data/streams/letters", query_string={"q": text})
        return re.findall(r"<td><code>([^<]*-[0-9])</code></td>", page.get_data(as_text=True))

    assert search("äRGER") == ["ärger-2", "Ärger-1"]
    assert search("été") == ["ÉTÉ-4"]
    assert search("arger") == ["Arger-3"]


def test_search_looks_in_the_payload_and_the_dedupe_key_any_case(client, auth):
    auth.login("viewer")
    def payload(n: int) -> dict:
        return {"email": f"u{n}@x.io", "plan": "Pro" if n % 10 == 3 else "free",
                "name": {5: "ZOË", 6: 'They say "hi"'}.get(n, ""),
                "note": {7: "100% sure", 9: "1000 sure"}.get(n, ""),
                "code": "a_b" if n == 8 else "axb"}

    fill("people", 30, payload=payload)

    def search(text: str) -> list[str]:
        return shown_keys(client.get("/data/streams/people", query_string={"q": text})
                          .get_data(as_text=True))

    assert search("pro") == ["key-23", "key-13", "key-3"]
    assert search("KEY-29") == ["key-29"]
    # % and _ are plain characters, not wildcards.
    assert search("100%") == ["key-7"]
    assert search("a_b") == ["key-8"]
    assert search("nothing like this") == []
    # As people read the payload, not as JSON text stores it (SQLite's JSON text holds
    # other letters than ASCII ones as \u escapes: in a payload there they are matched
    # as typed; in a dedupe key, any case, as everywhere).
    assert search("ZOË") == ["key-5"]
    assert search('say "hi"') == ["key-6"]
    # A piece of the payload copied as the page shows it, key, colon, space and value.
    assert search('"plan": "Pro"') == ["key-23", "key-13", "key-3"]
    page = client.get("/data/streams/people", query_string={"q": "zzz"}).get_data(as_text=True)
    assert 'id="messages-empty"' in page and "No messages hold “zzz”" in page


def test_search_pages_keep_the_search(client, auth):
    auth.login("viewer")
    fill("many", 130, payload=lambda n: {"kind": "even" if n % 2 == 0 else "odd"})
    page = client.get("/data/streams/many?q=even").get_data(as_text=True)
    assert len(shown_keys(page)) == 50
    link = re.search(r'href="([^"]+)" id="older-page"', page).group(1).replace("&amp;", "&")
    assert "q=even" in link
    rest = shown_keys(client.get(link).get_data(as_text=True))
    assert len(rest) == 15 and all(int(key[4:]) % 2 == 0 for key in rest)


@pytest.mark.parametrize("before", ["abc", "99999999999999999999", "-1", "²"])
def test_a_bad_cursor_is_a_400_not_a_500(client, auth, before):
    auth.login("viewer")
    fill("s", 1)
    response = client.get("/data/streams/s", query_string={"before": before})
    assert response.status_code == 400


def test_the_source_links_to_its_job_and_api_stays_text(client, auth):
    auth.login("viewer")
    fill("mixed", 1, source="job:12")
    write_messages("mixed", [OutMessage("from-api", utcnow(), {"a": 1})], source="api")
    db.session.commit()
    page = client.get("/data/streams/mixed").get_data(as_text=True)
    assert '<a href="/jobs/12">Job 12</a>' in page
    assert re.search(r'<td class="text-nowrap">api</td>', page)


def test_times_show_relative_with_the_exact_time_on_hover(client, auth):
    auth.login("viewer")
    fill("t", 1)
    page = client.get("/data/streams/t").get_data(as_text=True)
    assert re.search(r'<time class="when" datetime="[0-9T:-]+Z" title="[0-9: -]+UTC">just now'
                     r'</time>', page)


def test_an_admin_deletes_a_stream_after_a_confirmation_naming_the_count(client, auth):
    admin = auth.login("admin")
    fill("signups", 3000)
    fill("kept", 2)
    page = client.get("/data/streams/signups").get_data(as_text=True)
    assert 'id="stream-delete-button"' in page
    question = client.get("/data/streams/signups/delete", headers=HX).get_data(as_text=True)
    assert "Delete stream signups and its 3,000 messages?" in question
    response = client.post("/data/streams/signups/delete", data={"csrf_token": auth.csrf()})
    assert response.status_code == 303 and response.headers["Location"] == "/data"
    assert "Deleted stream signups and its 3,000 messages." in client.get("/data").get_data(
        as_text=True)
    assert db.session.scalar(db.select(Stream).where(Stream.name == "signups")) is None
    assert db.session.scalar(db.select(db.func.count()).select_from(Message)) == 2
    entry = db.session.scalars(db.select(AuditEntry).where(
        AuditEntry.action == "stream_deleted")).one()
    assert (entry.user_id, entry.object_label, entry.details["messages"]) == (
        admin.id, "signups", 3000)


def test_deleting_needs_the_csrf_token(client, auth):
    auth.login("admin")
    fill("s", 1)
    response = client.post("/data/streams/s/delete")
    assert response.status_code == 400
    assert db.session.scalar(db.select(Stream).where(Stream.name == "s")) is not None


@pytest.mark.parametrize("role", ["viewer", "operator"])
def test_only_admins_may_delete_a_stream(client, auth, role):
    auth.login(role)
    fill("s", 5)
    page = client.get("/data/streams/s").get_data(as_text=True)
    assert "stream-delete-button" not in page and "Delete stream" not in page
    assert client.get("/data/streams/s/delete").status_code == 403
    assert client.post("/data/streams/s/delete",
                       data={"csrf_token": auth.csrf()}).status_code == 403
    assert db.session.scalar(db.select(Stream).where(Stream.name == "s")) is not None


def test_a_stream_an_active_job_uses_is_not_deleted(client, auth):
    admin = auth.login("admin")
    fill("busy", 4)
    job = faults_job(admin, "Feeds busy", stream="busy")
    done = faults_job(admin, "Finished long ago", stream="busy")
    done.status = "completed"
    other = faults_job(admin, "Elsewhere", stream="other")
    db.session.commit()
    question = client.get("/data/streams/busy/delete").get_data(as_text=True)
    assert "cannot be deleted" in question and "Feeds busy" in question
    assert "Finished long ago" not in question and "Elsewhere" not in question
    assert "stream-delete-confirm" not in question
    response = client.post("/data/streams/busy/delete", data={"csrf_token": auth.csrf()})
    assert response.status_code == 409
    assert f'href="/jobs/{job.id}"' in response.get_data(as_text=True)
    assert db.session.scalar(db.select(db.func.count()).select_from(Message)) == 4
    # Once the job is done with it, the stream can go.
    job.status = "failed"
    db.session.commit()
    response = client.post("/data/streams/busy/delete", data={"csrf_token": auth.csrf()},
                           headers=HX)
    assert response.status_code == 200 and response.headers["HX-Redirect"] == "/data"
    assert db.session.scalar(db.select(db.func.count()).select_from(Message)) == 0
    assert other.id
