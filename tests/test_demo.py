"""The demo (portal/demo.py, `flask --app wsgi seed-demo`): a fresh database gets the
sample imports (one failed on a bad file, then fixed), profiles, two audiences and a
webhook export that delivers to the demo's own loopback receiver, all run by a real RQ
worker; a second run changes nothing; the receiver takes loopback clients only."""

from __future__ import annotations

import csv

import pytest
from sqlalchemy import func, select

from portal import audiences, demo, membership
from portal.extensions import db
from portal.models import (
    Audience,
    AuditEntry,
    ExportMember,
    Job,
    JobEvent,
    JobRun,
    Message,
    Profile,
    Upload,
    User,
)
from tests.conftest import free_port


def paying_emails() -> set[str]:
    """Who should be paying once both files are in, read from the sample files."""
    plans = {}
    for name in ("people.csv", "plan-changes.csv"):
        with open(demo.DATA / name, newline="", encoding="utf-8") as handle:
            for row in csv.DictReader(handle):
                plans[row["email"]] = row["plan"]
    return {email for email, plan in plans.items() if plan in ("pro", "team")}


def seed(app) -> str:
    result = app.test_cli_runner().invoke(args=["seed-demo", "--port", str(free_port())])
    assert result.exit_code == 0, result.output
    db.session.expire_all()
    return result.output


def counts() -> dict[str, int]:
    tables = (Job, JobRun, JobEvent, AuditEntry, Message, Profile, Upload, Audience,
              ExportMember, User)
    found = {table.__name__: db.session.scalar(select(func.count()).select_from(table))
             for table in tables}
    return {**found, "deliveries": len(demo.deliveries())}


@pytest.fixture
def seeded(app):
    output = seed(app)
    return output


def test_seed_demo_makes_the_world_with_real_runs(app, seeded):
    assert "Created the admin admin@localhost with password" in seeded
    admin = db.session.scalar(select(User))
    assert admin.email == "admin@localhost" and admin.role == "admin"
    jobs = {job.name: job for job in db.session.scalars(select(Job))}
    assert set(jobs) == {demo.IMPORT_PEOPLE, demo.IMPORT_CHANGES, demo.EXPORT_PAYING}
    assert jobs[demo.IMPORT_PEOPLE].status == "completed"
    assert jobs[demo.IMPORT_CHANGES].status == "completed"
    assert jobs[demo.EXPORT_PAYING].status == "sleeping"
    # The plan changes failed on the bad file, then completed with the good one.
    runs = db.session.scalars(select(JobRun).where(
        JobRun.job_id == jobs[demo.IMPORT_CHANGES].id).order_by(JobRun.id)).all()
    assert [run.outcome for run in runs] == ["failed", "completed"]
    assert "plan-changes-broken.csv, line 19" in runs[0].error
    assert runs[1].added == 40
    assert db.session.scalar(select(func.count()).select_from(Message)) == 340
    assert db.session.scalar(select(func.count()).select_from(Profile)) == 300
    # The audiences hold who the sample files say.
    paying = audiences.by_slug("paying-customers")
    expected = paying_emails()
    assert audiences.count(paying.match, paying.conditions) == len(expected)
    dormant = audiences.by_slug("dormant-users")
    assert 0 < audiences.count(dormant.match, dormant.conditions) < 300
    # The export delivered every paying customer to the receiver, over loopback.
    delivered = demo.deliveries()
    assert delivered and all(d["audience"] == "paying-customers" for d in delivered)
    assert sum(d["added"] for d in delivered) == len(expected)
    assert membership.exported_count(jobs[demo.EXPORT_PAYING].id) == len(expected)
    assert set(delivered[-1]["added_shown"]) <= expected
    assert demo.seeded()


def test_seed_demo_twice_changes_nothing(app, seeded):
    before = counts()
    output = seed(app)
    assert "already here" in output
    assert counts() == before


def test_seed_demo_uses_an_existing_admin(app, make_user):
    admin = make_user("admin")
    output = seed(app)
    assert f"Sign in as {admin.email}" in output and "password" not in output
    assert db.session.scalar(select(func.count()).select_from(User)) == 1
    assert {job.created_by_id for job in db.session.scalars(select(Job))} == {admin.id}


@pytest.mark.parametrize(("peer", "headers", "allowed"), [
    ("127.0.0.1", {}, True),
    ("127.8.9.10", {}, True),
    ("::1", {}, True),
    ("::ffff:127.0.0.1", {}, True),
    ("10.0.0.5", {}, False),
    ("192.168.1.20", {}, False),
    ("8.8.8.8", {}, False),
    ("::ffff:8.8.8.8", {}, False),
    ("2001:db8::1", {}, False),
    ("", {}, False),
    ("localhost", {}, False),
    ("127.0.0.1", {"X-Forwarded-For": "203.0.113.9"}, False),
    ("127.0.0.1", {"Forwarded": "for=203.0.113.9"}, False),
    ("127.0.0.1", {"X-Real-IP": "203.0.113.9"}, False),
])
def test_the_receiver_takes_loopback_clients_only(peer, headers, allowed):
    assert demo.is_loopback_client(peer, headers) is allowed


def test_the_receiver_is_off_until_the_demo_is_seeded(app, client):
    assert client.post("/demo/hook", json={"audience": "x", "added": []}).status_code == 404
    assert client.get("/demo").status_code == 404


def test_the_receiver_when_on(app, client, auth, seeded):
    before = len(demo.deliveries())
    # No CSRF token needed (the webhook client sends none), from loopback.
    response = client.post("/demo/hook", json={"audience": "paying-customers",
                                                "added": [{"email": "x@example.com"}]})
    assert response.status_code == 204
    assert len(demo.deliveries()) == before + 1
    refused = client.post("/demo/hook", json={"audience": "a"},
                          headers={"X-Forwarded-For": "203.0.113.9"})
    assert refused.status_code == 403
    assert client.post("/demo/hook", data="nope").status_code == 400
    assert len(demo.deliveries()) == before + 1
    assert client.get("/demo").status_code == 302  # sign-in first
    auth.login("viewer")
    page = client.get("/demo").get_data(as_text=True)
    assert "x@example.com" in page and "paying-customers" in page


def test_make_runs_offer_never_waits_without_a_terminal(app, monkeypatch):
    monkeypatch.delenv("DEMO", raising=False)
    result = app.test_cli_runner().invoke(args=["seed-demo", "--offer"], input="y\n")
    assert result.exit_code == 0, result.output
    assert "DEMO=1 make run" in result.output  # a hint, no question
    assert db.session.scalar(select(func.count()).select_from(Job)) == 0
    monkeypatch.setenv("DEMO", "0")
    result = app.test_cli_runner().invoke(args=["seed-demo", "--offer"])
    assert result.exit_code == 0 and result.output == ""
    assert not demo.seeded()
