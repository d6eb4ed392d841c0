"""The Keep switch (issue 11, part 5): a settled job someone keeps is passed over by the
purge (the daily one and `jobs purge`), the banner says what keeps each job, and only the
people who may edit a job may switch it, with an audit entry each time."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select

from portal.extensions import db
from portal.jobs import purge
from portal.models import AuditEntry, Job, JobEvent
from tests.test_engine import START, clock, make_job  # noqa: F401 (fixtures)
from tests.test_job_path import fresh

HX = {"HX-Request": "true"}


def switch(client, auth, job: Job, keep: bool):
    data = {"keep": "1"} if keep else {}  # an unticked checkbox sends nothing
    return client.post(f"/jobs/{job.id}/keep", data=data,
                       headers={**HX, "X-CSRFToken": auth.csrf()})


def sign_in_as_owner(client, auth, job: Job) -> None:
    from portal.models import User
    from tests.conftest import TEST_PASSWORD, csrf_token

    owner = db.session.get(User, fresh(job).created_by_id)
    response = client.post("/login", data={"email": owner.email, "password": TEST_PASSWORD,
                                           "csrf_token": csrf_token(client)})
    assert response.status_code == 303


def test_a_kept_job_is_not_purged_until_keep_is_switched_off(clock, make_job, work,  # noqa: F811
                                                               client, auth, app):
    job = make_job()
    work()
    assert fresh(job).status == "completed"
    sign_in_as_owner(client, auth, job)
    page = switch(client, auth, job, True).get_data(as_text=True)
    assert fresh(job).keep is True
    assert "Kept: this completed job and its logs are not purged." in page
    assert 'id="job-keep"' in page and "checked" in page

    clock.move_to(START + timedelta(days=400))
    runner = app.test_cli_runner()
    assert "Purged 0 job(s)" in runner.invoke(args=["jobs", "purge"]).output
    assert purge(now=START + timedelta(days=400), days=90) == 0  # what the dispatcher runs
    db.session.expire_all()
    assert db.session.get(Job, job.id) is not None

    clock.move_to(START + timedelta(days=1))  # back while the session is young
    summary = client.get(f"/jobs/{job.id}").get_data(as_text=True)
    assert "will be purged" not in summary
    page = switch(client, auth, job, False).get_data(as_text=True)
    assert fresh(job).keep is False
    assert "will be purged on" in page
    clock.move_to(START + timedelta(days=400))
    assert "Purged 1 job(s)" in runner.invoke(args=["jobs", "purge"]).output

    db.session.expire_all()
    actions = db.session.scalars(select(AuditEntry.action).where(
        AuditEntry.object_type == "job", AuditEntry.object_id == job.id)
        .order_by(AuditEntry.id)).all()
    assert actions[-2:] == ["kept", "unkept"]


def test_the_banner_names_what_keeps_each_status(clock, make_job, work, client,  # noqa: F811
                                                 auth):
    completed = make_job()
    failed = make_job(script=["fatal"])
    work()
    assert (fresh(completed).status, fresh(failed).status) == ("completed", "failed")
    sign_in_as_owner(client, auth, completed)
    page = client.get(f"/jobs/{completed.id}").get_data(as_text=True)
    assert "will be purged on" in page
    assert "Switch on Keep below to keep it." in page
    assert "Resume it" not in page, "a completed job cannot be resumed"
    page = client.get(f"/jobs/{failed.id}").get_data(as_text=True)
    assert "Resume it, or switch on Keep below, to keep it." in page
    # Switching Keep on the same way twice changes nothing and records nothing twice.
    switch(client, auth, failed, True)
    switch(client, auth, failed, True)
    entries = db.session.scalars(select(AuditEntry).where(
        AuditEntry.action == "kept", AuditEntry.object_id == failed.id)).all()
    assert len(entries) == 1 and entries[0].summary == "Kept from the purge"
    events = db.session.scalars(select(JobEvent.message).where(
        JobEvent.job_id == failed.id, JobEvent.kind == "edited")).all()
    assert any(message.startswith("Kept from the purge by ") for message in events)


def test_only_those_who_may_edit_the_job_may_keep_it(clock, make_job, work, client,  # noqa: F811
                                                     auth, make_user):
    job = make_job()
    work()
    auth.login("viewer")
    page = client.get(f"/jobs/{job.id}").get_data(as_text=True)
    assert 'id="job-keep"' not in page
    assert "The operator who created it, or an admin, can keep it" in page
    assert switch(client, auth, job, True).status_code == 403
    client.post("/logout", headers={"X-CSRFToken": auth.csrf()})
    auth.login("operator")  # an operator, not the one who created the job
    assert 'id="job-keep"' not in client.get(f"/jobs/{job.id}").get_data(as_text=True)
    assert switch(client, auth, job, True).status_code == 403
    assert fresh(job).keep is False
    client.post("/logout", headers={"X-CSRFToken": auth.csrf()})
    auth.login("admin")
    assert 'id="job-keep"' in client.get(f"/jobs/{job.id}").get_data(as_text=True)
    assert switch(client, auth, job, True).status_code == 200
    assert fresh(job).keep is True
