"""The operations page (/admin/operations) and the banner on every page, against real RQ
workers and a real dispatcher started as processes on the test Redis."""

from __future__ import annotations

import os
import re
import signal
import time

import pytest
from redis import Redis
from rq import Queue, Worker
from rq.registry import FailedJobRegistry

from portal import create_app
from portal.extensions import db
from tests.conftest import TEST_PASSWORD, TEST_VAULT_KEYS, csrf_token, free_port

FAST = {"PORTAL_WORKER_HEARTBEAT_SECONDS": "1"}
NO_WORKER = "No worker is running"


def wait_for(condition, timeout: float = 30, what: str = "the condition"):
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.25)


def worker_rows(html: str) -> dict[int, str]:
    """pid → "yes"/"no" (alive) of the worker rows on the page."""
    return {int(pid): alive for pid, alive in re.findall(
        r'class="operations-worker"[^>]*data-pid="(\d+)" data-alive="(yes|no)"', html)}


def registered_pids(connection: Redis) -> set[int]:
    return {worker.pid for worker in Worker.all(connection=connection)}


def test_two_workers_one_killed(app, auth, spawn, redis_url):
    auth.login("admin")
    connection = Redis.from_url(redis_url)
    failing = spawn("worker", "default", **FAST)
    busy = spawn("worker", "realtime", **FAST)
    spawn("dispatcher")
    spawn("dispatcher")  # a standby
    wait_for(lambda: {failing.pid, busy.pid} <= registered_pids(connection), what="workers")

    # A failed RQ job in the failed registry, run by the worker on "default".
    Queue("default", connection=connection).enqueue("math.sqrt", -1, job_id="sqrt-of-minus-one")
    wait_for(lambda: FailedJobRegistry("default", connection=connection).count == 1,
             what="the failed job")
    # The worker on "realtime" busy with an RQ job of portal job 7: its thread still beats.
    Queue("realtime", connection=connection).enqueue("time.sleep", 60, job_id="portal-job-7-1")
    # Three jobs waiting on a queue nobody serves.
    backfill = Queue("backfill", connection=connection)
    for number in range(3):
        backfill.enqueue("math.sqrt", number)
    wait_for(lambda: Worker.find_by_key(f"rq:worker:{_name(connection, busy.pid)}",
                                        connection=connection).get_current_job_id(),
             what="the busy worker's job")
    busy_since = time.monotonic()

    os.kill(failing.pid, signal.SIGKILL)
    failing.wait(10)

    def settled():
        html = auth.client.get("/admin/operations").get_data(as_text=True)
        rows = worker_rows(html)
        # Judged once the busy worker has run its job longer than two beats and the slack:
        # RQ itself does not beat while a SimpleWorker runs a job.
        long_enough = time.monotonic() - busy_since > 10
        return html if long_enough and rows == {failing.pid: "no", busy.pid: "yes"} else None

    # Its key lingers in Redis for minutes; two missed beats of 1 s make it "lost".
    html = wait_for(settled, timeout=20, what="one worker alive and one lost")
    assert re.search(r'id="queue-backfill" data-queued="3"', html)
    assert re.search(r'id="queue-default" data-queued="0" data-failed="1"', html)
    assert 'href="/jobs/7">Job 7</a>' in html  # the busy worker's current job
    assert "sqrt-of-minus-one" in html and "ValueError: math domain error" in html
    assert 'id="operations-dispatcher" data-stale="no"' in html
    assert "holds the lock" in html
    assert re.search(r"<dt[^>]*>Standbys</dt>\s*<dd[^>]*>1</dd>", html)
    assert NO_WORKER not in html  # one worker is alive: no banner
    assert 'id="operations-banner"' not in html
    # The polled fragment carries the same rows.
    fragment = auth.client.get("/admin/operations/live", headers={"HX-Request": "true"})
    assert fragment.status_code == 200
    assert worker_rows(fragment.get_data(as_text=True)) == {failing.pid: "no", busy.pid: "yes"}

    # The last one killed too: every page warns that jobs will not run.
    os.kill(busy.pid, signal.SIGKILL)
    busy.wait(10)
    wait_for(lambda: NO_WORKER in auth.client.get("/jobs").get_data(as_text=True),
             timeout=20, what="the banner")
    html = auth.client.get("/admin/operations").get_data(as_text=True)
    assert set(worker_rows(html).values()) == {"no"}


def _name(connection: Redis, pid: int) -> str:
    return next(worker.name for worker in Worker.all(connection=connection) if worker.pid == pid)


def test_banner_comes_and_goes_with_a_worker(app, auth, spawn):
    auth.login("viewer")
    page = auth.client.get("/jobs").get_data(as_text=True)
    assert NO_WORKER in page and "python -m workers worker" in page
    assert "The dispatcher has not passed yet" in page
    assert "/admin/operations" not in page  # the link is for admins
    spawn("worker", **FAST)
    spawn("dispatcher")
    wait_for(lambda: 'id="operations-banner"' not in auth.client.get("/jobs").get_data(
        as_text=True), timeout=30, what="the banner to go")


@pytest.mark.parametrize("role", ["viewer", "operator"])
def test_only_admins(auth, role):
    auth.login(role)
    assert auth.client.get("/admin/operations").status_code == 403
    assert auth.client.get("/admin/operations/live", headers={"HX-Request": "true"}
                           ).status_code == 403


def test_admin_navigation(auth):
    auth.login("admin")
    html = auth.client.get("/admin/operations").get_data(as_text=True)
    assert re.search(r'class="nav-link active" aria-current="page"\s+href="/admin/operations"',
                     html)
    assert not re.search(r'class="nav-link active"[^>]*\s+href="/admin"', html)
    assert 'id="operations-link"' in auth.client.get("/admin").get_data(as_text=True)


def test_redis_down_says_so(app, make_user, tmp_path):
    """Redis that does not answer: the banner says so and no page fails."""
    make_user("admin")
    down = create_app({
        "INSTANCE_PATH": str(tmp_path / "instance-down"),
        "SQLALCHEMY_DATABASE_URI": app.config["SQLALCHEMY_DATABASE_URI"],
        "REDIS_URL": f"redis://127.0.0.1:{free_port()}/0", "SECRET_KEY": "test-secret-key",
        "PORTAL_VAULT_KEYS": TEST_VAULT_KEYS, "TESTING": True,
    })
    with down.app_context():
        client = down.test_client()
        response = client.post("/login", data={"email": "admin@example.com",
                                               "password": TEST_PASSWORD,
                                               "csrf_token": csrf_token(client)})
        assert response.status_code == 303
        for path in ("/jobs", "/admin", "/admin/operations"):
            response = client.get(path)
            assert response.status_code == 200, path
            html = response.get_data(as_text=True)
            assert "Cannot reach Redis" in html, path
        assert 'id="operations-redis-down"' in html
        assert 'id="operations-database"' in html  # the database's view is still there
        db.session.remove()
        db.engine.dispose()
