"""The status poll's short answers (portal/pollgate.py): 204 when the block the page holds
is still current, the block another viewer's poll rendered when it changed, and the full
path — with its checks of who asks — for everything else."""

from __future__ import annotations

import html
import re
import time
from datetime import timedelta

import pytest
import time_machine
from sqlalchemy import insert, update

from portal.extensions import db
from portal.jobs import LIVE_EVERY, create_job, edit_job, live_state
from portal.models import Authorization, Job, JobRun, User
from portal.models.types import utcnow
from portal.pollgate import ANSWERED_BY
from providers import get_provider
from tests.conftest import TEST_PASSWORD, csrf_token

HX = {"HX-Request": "true"}


@pytest.fixture(autouse=True)
def _one_time_slot(request):
    """Each test (but the browser's, which allows for it) starts at the beginning of a
    LIVE_EVERY slot, so that no slot turns over in its middle by chance: that draws the
    block afresh (a 200) where the test waits for a 204."""
    if request.node.get_closest_marker("browser"):
        yield
        return
    start = (int(time.time()) // LIVE_EVERY + 1) * LIVE_EVERY
    with time_machine.travel(start + 0.1, tick=True):
        yield


@pytest.fixture
def job(app, make_user) -> Job:
    owner = make_user("admin", "owner@example.com")
    provider = get_provider("faults")
    made = create_job(provider=provider, job_type=provider.job_type("script"),
                      authorization=None, name="Nightly", description="", config={},
                      created_by=owner, paused=True)
    made.status = "sleeping"  # not settled: its page polls
    db.session.commit()
    return made


def poll_url(body: str) -> str:
    """The next poll's URL, as htmx reads it from the block."""
    found = re.search(r'id="job-live"[^>]*hx-get="([^"]+)"', body)
    assert found, body[:500]
    return html.unescape(found.group(1))


def first_block(client: Browser, job_id: int) -> str:
    response = client.get(f"/jobs/{job_id}/live", headers=HX)
    assert response.status_code == 200
    assert ANSWERED_BY not in response.headers  # no fingerprint yet: the full path
    return poll_url(response.get_data(as_text=True))


class Browser:
    """Another person's browser: its requests in an app context of their own, as in a
    server (the test's own context would share `g`, and the signed-in user, with them)."""

    def __init__(self, app, user: User):
        self.app, self.client = app, app.test_client()
        with app.app_context():
            response = self.client.post("/login", data={
                "email": user.email, "password": TEST_PASSWORD,
                "csrf_token": csrf_token(self.client)})
        assert response.status_code == 303

    def get(self, url: str, **kwargs):
        with self.app.app_context():
            return self.client.get(url, **kwargs)

    def post(self, url: str, **kwargs):
        with self.app.app_context():
            return self.client.post(url, **kwargs)


@pytest.fixture
def signed_in(app, make_user):
    """A browser signed in as a new user of `role`."""
    def sign_in(role: str, email: str | None = None) -> tuple[Browser, User]:
        user = make_user(role, email)
        return Browser(app, user), user

    return sign_in


def test_nothing_new_is_204_and_a_change_brings_the_block(signed_in, job):
    client, _user = signed_in("operator")
    url = first_block(client, job.id)
    for _ in range(3):
        response = client.get(url, headers=HX)
        assert response.status_code == 204
        assert response.headers[ANSWERED_BY] == "unchanged"
        assert response.get_data() == b""
        # The same security headers as every answer, and the session is not written.
        assert "default-src 'self'" in response.headers["Content-Security-Policy"]
        assert response.headers["Cache-Control"] == "no-store"
        assert response.headers["X-Frame-Options"] == "DENY"
        assert "Set-Cookie" not in response.headers

    edit_job(job, field="name", value="Renamed nightly", by=job.created_by)
    db.session.commit()
    response = client.get(url, headers=HX)
    assert response.status_code == 200
    body = response.get_data(as_text=True)
    assert "Renamed nightly" in body
    assert poll_url(body) != url
    assert client.get(poll_url(body), headers=HX).status_code == 204


@pytest.mark.parametrize("change", ["status", "counters", "run started", "run progress",
                                    "authorization health", "editor's email"])
def test_every_row_the_block_is_drawn_from_moves_its_fingerprint(signed_in, job, change):
    client, viewer = signed_in("viewer")
    authorization = Authorization(provider="files", method="none", label="Keys",
                                  owner_id=job.created_by_id)
    db.session.add(authorization)
    db.session.flush()
    job.authorization_id, job.updated_by_id = authorization.id, job.created_by_id
    db.session.add(JobRun(job_id=job.id, started_at=utcnow(), total=100, done=1))
    db.session.commit()
    url = first_block(client, job.id)
    assert client.get(url, headers=HX).status_code == 204
    statements = {
        "status": update(Job).values(status="running"),
        "counters": update(Job).values(added_total=7),
        "run started": insert(JobRun).values(job_id=job.id, started_at=utcnow()),
        "run progress": update(JobRun).values(done=50),
        "authorization health": update(Authorization).values(health="unhealthy",
                                                             health_message="Token revoked"),
        "editor's email": update(User).where(User.id == job.created_by_id)
        .values(email="new-owner@example.com"),
    }
    db.session.execute(statements[change])
    db.session.commit()
    response = client.get(url, headers=HX)
    assert response.status_code == 200, change
    assert ANSWERED_BY not in response.headers  # the first to see it renders it
    assert viewer.role == "viewer"
    if change == "authorization health":
        assert "Token revoked" in response.get_data(as_text=True)


def test_other_viewers_get_the_block_rendered_once(app, signed_in, job, make_user):
    client, first = signed_in("operator")
    url = first_block(client, job.id)
    second, _user = signed_in("operator", "second@example.com")
    other_zone = make_user("operator", "paris@example.com")
    other_zone.timezone = "Europe/Paris"
    db.session.commit()
    third = Browser(app, other_zone)
    job.added_total = 5
    db.session.commit()

    rendered = client.get(url, headers=HX)
    assert rendered.status_code == 200 and ANSWERED_BY not in rendered.headers
    # The page said 0-0-0: the metrics chart is told to reload.
    assert rendered.headers["HX-Trigger"] == "metrics-changed"
    kept = second.get(url, headers=HX)
    assert kept.status_code == 200
    assert kept.headers[ANSWERED_BY] == "kept"
    assert kept.get_data() == rendered.get_data()
    assert kept.headers["HX-Trigger"] == "metrics-changed"
    assert kept.headers["Content-Type"] == "text/html; charset=utf-8"
    assert "default-src 'self'" in kept.headers["Content-Security-Policy"]
    # A page that already shows the new totals is not told to reload its chart.
    current = poll_url(kept.get_data(as_text=True))
    stale_marker = re.sub(r"v=[0-9a-f]+", "v=0", current)
    assert "HX-Trigger" not in second.get(stale_marker, headers=HX).headers
    # Another time zone shows other times: its own render.
    assert ANSWERED_BY not in third.get(url, headers=HX).headers
    assert first.timezone == "UTC"


@pytest.mark.parametrize("case", ["signed out elsewhere", "user disabled", "idle session",
                                  "tampered cookie", "another role's block"])
def test_the_short_answers_check_who_asks_as_the_full_path_does(signed_in, job, case):
    client, user = signed_in("operator")
    url = first_block(client, job.id)
    assert client.get(url, headers=HX).status_code == 204
    if case == "signed out elsewhere":
        user.end_sessions()
        db.session.commit()
    elif case == "user disabled":
        user.active = False
        db.session.commit()
    elif case == "tampered cookie":
        value = client.client.get_cookie("session").value
        client.client.set_cookie("session",
                                 value[:-2] + ("AA" if value[-2:] != "AA" else "BB"))
    elif case == "another role's block":
        user.role = "viewer"  # no Pause or Delete for a viewer: another block
        db.session.commit()
    if case == "idle session":
        with time_machine.travel(time.time() + 121 * 60, tick=False):
            response = client.get(url, headers=HX)
    else:
        response = client.get(url, headers=HX)
    assert ANSWERED_BY not in response.headers
    if case == "another role's block":
        assert response.status_code == 200
        assert 'id="job-actions"' not in response.get_data(as_text=True)
    else:  # signed out: htmx is sent to the sign-in page
        assert response.status_code == 401
        assert response.headers["HX-Redirect"].startswith("/login")


@pytest.mark.parametrize("case", ["not htmx", "history restore", "repeated argument",
                                  "post", "job deleted"])
def test_requests_htmx_would_not_poll_with_go_the_full_way(signed_in, job, case):
    client, _user = signed_in("admin")
    url = first_block(client, job.id)
    headers = dict(HX)
    if case == "not htmx":
        headers = {}
    elif case == "history restore":
        headers["HX-History-Restore-Request"] = "true"
    elif case == "repeated argument":
        url += "&v=" + url.rsplit("v=", 1)[1]
    elif case == "job deleted":
        db.session.delete(job)
        db.session.commit()
    if case == "post":
        response = client.post(url, headers=headers)
        assert response.status_code == 405
    else:
        response = client.get(url, headers=headers)
        assert response.status_code == (404 if case == "job deleted" else 200)
    assert ANSWERED_BY not in response.headers


def test_the_fingerprint_is_per_kind_of_viewer_and_time_slot(app, job, make_user):
    one, two = make_user("operator", "one@example.com"), make_user("operator", "two@example.com")
    viewer, creator = make_user("viewer"), job.created_by
    start = (int(time.time()) // LIVE_EVERY) * LIVE_EVERY
    with db.engine.connect() as connection:
        def marker(user, at=start):
            return live_state(connection, job.id, user.id, at).marker

        assert marker(one) == marker(two)  # the same block for both
        assert marker(one) == marker(one, start + LIVE_EVERY - 1)
        assert marker(one) != marker(one, start + LIVE_EVERY)  # drawn afresh each slot
        assert marker(one) != marker(viewer)  # no actions for a viewer
        assert marker(creator) != marker(make_user("admin", "other-admin@example.com"))
        state = live_state(connection, job.id, one.id, start)
        assert (state.viewer_active, state.viewer_generation, state.viewer_role) == (
            True, one.session_generation, "operator")
        assert live_state(connection, job.id + 1000, one.id, start) is None
        nobody = live_state(connection, job.id, 10**9, start)
        assert (nobody.viewer_active, nobody.viewer_role) == (None, None)


def test_a_new_time_slot_renders_the_block_again(signed_in, job):
    client, _user = signed_in("operator")
    with time_machine.travel(time.time(), tick=False) as clock:
        url = first_block(client, job.id)
        assert client.get(url, headers=HX).status_code == 204
        clock.shift(timedelta(seconds=LIVE_EVERY))
        assert client.get(url, headers=HX).status_code == 200


@pytest.mark.browser
def test_in_chromium_the_block_stays_put_on_204_and_swaps_on_a_change(page, live_server,
                                                                      make_user):
    from playwright.sync_api import expect

    from tests.browser import faults_job, sign_in

    owner = make_user("operator")
    made = faults_job(owner, "watched job")
    made.status = "sleeping"
    db.session.commit()
    answers: list[tuple[int, str | None]] = []
    page.on("response", lambda response: answers.append(
        (response.status, response.headers.get(ANSWERED_BY.lower())))
        if "/live" in response.url else None)
    sign_in(page, live_server, owner)
    page.goto(f"{live_server}/jobs/{made.id}")
    # It polls every second; with nothing new, htmx keeps the block it has. The block is
    # drawn afresh once every LIVE_EVERY seconds too (a 200): if one falls in the watch,
    # watch again. The element is read before the answers, as a swap follows its answer.
    drawn = "document.getElementById('job-live').dataset.drawn"
    for _attempt in range(3):
        page.evaluate(f"{drawn} = 'first'")
        start, deadline = len(answers), time.time() + 15
        while (answers[start:].count((204, "unchanged")) < 2
               and time.time() < deadline):
            page.wait_for_timeout(250)
        kept = page.evaluate(drawn)
        since = answers[start:]
        if any(answer != (204, "unchanged") for answer in since):
            continue  # a new time slot's render came in between
        assert since.count((204, "unchanged")) >= 2, answers
        assert kept == "first"
        break
    else:
        raise AssertionError(f"no two 204s in a row in three tries: {answers}")
    edit_job(made, field="name", value="Renamed while watched", by=owner)
    db.session.commit()
    expect(page.locator("#job-live")).to_contain_text("Renamed while watched", timeout=10_000)
    assert page.evaluate(drawn) is None
    assert (200, None) in answers  # the change came the full way
