"""The web surface re-reviewed: what a session carries across sign-in and sign-out, what
keeps a session going, and what an htmx request gets once its session has ended."""

from __future__ import annotations

import re
import threading
import time
from collections import Counter
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
import time_machine
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select

from portal.extensions import db
from portal.jobs import create_job
from portal.models import AuditEntry
from providers import get_provider
from tests.conftest import TEST_PASSWORD, _make_app, csrf_token


@pytest.fixture
def server(app, database_url, redis_url, tmp_path) -> Iterator[Flask]:
    """The app as a web server runs it: each request in its own app context (the `app`
    fixture keeps one open, which would share the signed-in user between requests)."""
    served = _make_app(database_url, redis_url, tmp_path / "served")
    yield served
    with served.app_context():
        db.engine.dispose()


@pytest.fixture
def a_job(app, make_user):
    provider = get_provider("faults")
    job = create_job(provider=provider, job_type=provider.job_type("script"),
                     authorization=None, name="x", description="", config={},
                     created_by=make_user("operator", "owner@example.com"))
    db.session.commit()
    return job


def _sign_in(client: FlaskClient, email: str, token: str | None = None):
    return client.post("/login", data={"email": email, "password": TEST_PASSWORD,
                                       "csrf_token": token or csrf_token(client)})


def _signed_in(client: FlaskClient) -> bool:
    response = client.get("/jobs")
    assert response.status_code in (200, 302), response.status_code
    return response.status_code == 200


# --- A session is new at sign-in and empty after sign-out --------------------------------

def test_signing_in_starts_a_new_session(server, make_user):
    """What a browser held before sign-in (say, a session cookie an attacker planted on a
    shared or sibling host, with a CSRF token the attacker knows) is not carried over."""
    user = make_user("operator")
    browser = server.test_client()
    planted_token = csrf_token(browser)
    with browser.session_transaction() as session:
        session["planted"] = "by someone else"
    assert _sign_in(browser, user.email, planted_token).status_code == 303
    with browser.session_transaction() as session:
        assert "planted" not in session
        assert session.get("csrf_token") != planted_token
    # A form made with the token known before sign-in is refused.
    refused = browser.post("/logout", data={"csrf_token": planted_token})
    assert refused.status_code == 400
    assert _signed_in(browser)


def test_signing_out_leaves_nothing_of_the_session(server, make_user):
    user = make_user("operator")
    browser = server.test_client()
    _sign_in(browser, user.email)
    token = csrf_token(browser, "/jobs")
    with browser.session_transaction() as session:
        session["left"] = "over"
    assert browser.post("/logout", data={"csrf_token": token}).status_code == 303
    with browser.session_transaction() as session:
        assert "left" not in session and session.get("csrf_token") != token
    # The page says so.
    assert "You are signed out." in browser.get("/login").get_data(as_text=True)


# --- Sign-in throttling holds for attempts sent all at once -------------------------------

def test_parallel_guesses_get_no_more_password_checks_than_the_limit(server, make_user):
    """Attempts sent at once must not all pass a check made before any of them was counted:
    with 5 per minute allowed, 5 passwords are checked however many arrive together."""
    email = make_user("viewer").email
    browsers = [server.test_client() for _ in range(30)]
    tokens = [csrf_token(browser) for browser in browsers]
    answers: Counter[int] = Counter()
    start = threading.Barrier(len(browsers))

    def guess(browser: FlaskClient, token: str) -> None:
        start.wait()
        answers[browser.post("/login", data={
            "email": email, "password": "not the password at all", "csrf_token": token,
        }).status_code] += 1

    threads = [threading.Thread(target=guess, args=pair)
               for pair in zip(browsers, tokens, strict=True)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert answers == {422: 5, 429: 25}


def _throttled_rows() -> int:
    return db.session.scalar(select(func.count()).select_from(AuditEntry).where(
        AuditEntry.action == "sign_in_throttled"))


def test_a_flood_of_refused_sign_ins_is_audited_once_per_wait(server, make_user):
    """Refused attempts cost no password check, so one client sends hundreds a second;
    writing a row for each let anyone bury the audit log without signing in."""
    email = make_user("viewer").email
    browser = server.test_client()
    token = csrf_token(browser)
    data = {"email": email, "password": "not the password at all", "csrf_token": token}
    with time_machine.travel(time.time(), tick=True) as clock:
        for _ in range(5):
            assert browser.post("/login", data=data).status_code == 422
        for _ in range(20):  # 25 in all: the address's own limit is not reached
            assert browser.post("/login", data=data).status_code == 429
        assert _throttled_rows() == 1
        clock.shift(timedelta(seconds=61))  # the next wait is recorded again
        assert browser.post("/login", data=data).status_code == 429  # the hourly limit
        assert _throttled_rows() == 2


def test_new_emails_from_a_throttled_address_do_not_flood_the_audit_log(server):
    server.config["PORTAL_LOGIN_LIMIT_ADDRESS"] = "3 per minute"
    browser = server.test_client()
    token = csrf_token(browser)
    answers = [browser.post("/login", data={
        "email": f"guess{number}@example.com", "password": "not the password at all",
        "csrf_token": token}).status_code for number in range(43)]
    assert answers == [422] * 3 + [429] * 40
    assert _throttled_rows() == 1


# --- Pages that poll do not keep an idle session going -----------------------------------

POLLS = ("/jobs/statuses?ids={id}", "/jobs/{id}/live", "/jobs/{id}/logs?after=0")


def test_polling_does_not_keep_an_idle_session_going(server, make_user, a_job):
    """A job list or summary left open polls every second or two; the idle timeout must
    still end the session of the person who walked away from it."""
    user = make_user("viewer")
    browser = server.test_client()
    hx = {"HX-Request": "true"}
    with time_machine.travel(time.time(), tick=False) as clock:
        _sign_in(browser, user.email)
        for _ in range(11):  # 110 minutes of nothing but polls
            clock.shift(timedelta(minutes=10))
            for poll in POLLS:
                assert browser.get(poll.format(id=a_job.id), headers=hx).status_code in (
                    200, 286), poll
        clock.shift(timedelta(minutes=11))  # 121 minutes after the last real request
        assert not _signed_in(browser)


def test_a_request_of_the_person_still_counts(server, make_user, a_job):
    user = make_user("viewer")
    browser = server.test_client()
    with time_machine.travel(time.time(), tick=False) as clock:
        _sign_in(browser, user.email)
        clock.shift(timedelta(minutes=100))
        assert browser.get(f"/jobs/{a_job.id}").status_code == 200  # a page opened
        clock.shift(timedelta(minutes=100))
        assert browser.get(f"/jobs/{a_job.id}/live",
                           headers={"HX-Request": "true"}).status_code in (200, 286)
        assert _signed_in(browser)


# --- An htmx request whose session ended is sent to the sign-in page --------------------

def test_an_htmx_request_without_a_session_is_sent_to_sign_in(server, a_job):
    """htmx's XMLHttpRequest follows a redirect by itself and would swap the whole sign-in
    page into a status cell; the browser is sent to the sign-in page instead, coming back
    to the page it was on."""
    browser = server.test_client()
    response = browser.get(f"/jobs/{a_job.id}/live", headers={
        "HX-Request": "true", "HX-Current-URL": f"http://localhost/jobs/{a_job.id}?kind=error"})
    assert response.status_code == 401
    assert response.headers["HX-Redirect"] == f"/login?next=/jobs/{a_job.id}?kind%3Derror"
    assert 'name="password"' not in response.get_data(as_text=True)
    assert response.headers["Content-Security-Policy"]
    for poll in POLLS:  # the page's other pollers answered the same, the message said once
        browser.get(poll.format(id=a_job.id), headers={"HX-Request": "true"})
    assert browser.get("/login").get_data(as_text=True).count("Sign in to continue.") == 1


@pytest.mark.parametrize("page", [
    "https://evil.example/jobs", "//evil.example/jobs", "javascript:alert(1)", "", "/x\x7f",
    "http://localhost:5000@evil.example/", "not a url at all",
])
def test_the_way_back_is_only_ever_a_page_of_this_site(server, page):
    response = server.test_client().get("/jobs/1/live", headers={
        "HX-Request": "true", "HX-Current-URL": page})
    assert response.status_code == 401
    assert response.headers["HX-Redirect"] == "/login"


def test_a_plain_request_without_a_session_still_gets_a_redirect(server):
    response = server.test_client().get("/jobs?status=failed")
    assert response.status_code == 302
    assert response.headers["Location"] == "/login?next=%2Fjobs%3Fstatus%3Dfailed"


# --- A NUL character is refused wherever it is in the parameters -------------------------

@pytest.mark.parametrize("query,form", [
    ("?q=ok&q=a%00b", None),              # the second value of a repeated parameter
    ("?a%00b=1", None),                   # a parameter's name
    ("", {"ids": ["1", "2\x00"]}),       # a list a view reads with getlist
    ("", {"value": "ok", "x\x00": "1"}),  # the name of a form field
])
def test_a_nul_character_anywhere_in_the_parameters_is_refused(server, make_user, a_job,
                                                                query, form):
    browser = server.test_client()
    _sign_in(browser, make_user("admin").email)
    if form is None:
        response = browser.get(f"/jobs{query}")
    else:
        token = csrf_token(browser, "/jobs")
        response = browser.post("/jobs/bulk/confirm", data={
            "csrf_token": token, "action": "pause", "ids": "1", **form})
    assert response.status_code == 400
    assert "NUL character" in response.get_data(as_text=True)


# --- Where to go next: only a page of this site, and only as sent -----------------------

ODD_NEXT = [
    "/\r\nSet-Cookie: x=1", "/jobs/\nX: 1", "/\t/evil.example", "/\\evil.example",
    "/jobs/\u2028", "/jobs/\x7f", "/jobs /x", " /jobs", "//evil.example", "/jobs/\u00a0",
]


@pytest.mark.parametrize("target", ODD_NEXT)
def test_sign_in_goes_on_only_to_a_plain_path_of_this_site(server, make_user, target):
    """A `next` with a line break reached the Location header (a 500 after signing in);
    one with a tab or a backslash is another site once a parser or a browser tidies it."""
    user = make_user("viewer")
    browser = server.test_client()
    response = browser.post("/login", query_string={"next": target}, data={
        "email": user.email, "password": TEST_PASSWORD, "csrf_token": csrf_token(browser)})
    assert response.status_code == 303
    assert response.headers["Location"] == "/jobs"


@pytest.mark.parametrize("hx", [{}, {"HX-Request": "true"}])
@pytest.mark.parametrize("target", ["/jobs/new/\r\nX: 1", "/jobs/new/\u2028", "/jobs/new/\\x",
                                    "/jobs/new/ x", "/jobs/new/\t/evil.example"])
def test_a_new_authorization_goes_back_only_to_a_plain_wizard_step(client, auth, target, hx):
    """A `next` with a line break gave a 500 once the authorization was saved; one with
    other characters went into HX-Redirect as it was (not a header value a server sends)."""
    auth.login("operator")
    response = client.post("/vault/new/webhook/bearer", headers=hx, data={
        "csrf_token": auth.csrf(), "label": "Hook", "description": "",
        "cred-url": "http://127.0.0.1:9/hook", "cred-token": "a-token-of-some-length",
        "next": target})
    where = response.headers.get("HX-Redirect") or response.headers["Location"]
    assert where.startswith("/vault/") and where.isascii() and where.isprintable()


def test_plain_wizard_steps_and_pages_are_still_where_one_goes_next(server, make_user):
    user = make_user("viewer")
    browser = server.test_client()
    response = browser.post("/login?next=/jobs/1%3Fkind%3Derror", data={
        "email": user.email, "password": TEST_PASSWORD, "csrf_token": csrf_token(browser)})
    assert response.headers["Location"] == "/jobs/1?kind=error"
    browser.post("/logout", data={"csrf_token": csrf_token(browser, "/jobs")})
    response = browser.post("/login", query_string={"next": "/data/streams/café"}, data={
        "email": user.email, "password": TEST_PASSWORD, "csrf_token": csrf_token(browser)})
    assert response.headers["Location"] == "/data/streams/caf%C3%A9"


def test_every_view_a_page_polls_is_marked_background(app):
    """A poller added later must not keep idle sessions going either: every view that a
    template polls (an hx-trigger with "every") is marked @background."""
    templates = Path(app.root_path) / "templates"
    polled = set()
    for template in templates.rglob("*.html"):
        for tag in re.findall(r"<[^>]*\bevery \d[^>]*>", template.read_text(), re.S):
            polled.update(re.findall(r"hx-get=\"\{\{\s*url_for\('([\w.]+)'", tag))
    assert polled >= {"jobs.statuses", "jobs.live", "jobs.logs"}
    unmarked = {endpoint for endpoint in polled
                if not getattr(app.view_functions[endpoint], "portal_background", False)}
    assert not unmarked
