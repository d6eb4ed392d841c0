"""Edit configuration of an existing job: the wizard's configure, schedule and review
steps pre-filled from the job, secrets kept when left blank (unless where they go
changed), another authorization of the same provider, who may edit, versions with their
differences, and what a running, failed or completed job does with the new configuration."""

from __future__ import annotations

import io
import json
import threading
import time

import pytest
from sqlalchemy import select
from werkzeug.wrappers import Response

from portal import configsecrets, vault
from portal.datastore import store_upload, write_messages
from portal.extensions import db
from portal.jobconfig import Settings, differences
from portal.jobs import EditRefused, create_job, save_edit
from portal.models import AuditEntry, Draft, Job, JobConfigVersion, JobEvent, Message, Stream
from portal.models.types import utcnow
from portal.schemaform import defaults
from providers import get_provider
from providers.base import OutMessage
from providers.faults import SHOWCASE_SCHEMA
from tests.conftest import canary
from tests.loopback import AnsweringServer

HX = {"HX-Request": "true"}
ENDPOINT = "https://a.example.com/in"


def post(client, auth, url: str, headers=None, **fields):
    return client.post(url, data={"csrf_token": auth.csrf(), **fields}, headers=headers or {})


def showcase_job(owner, token: str, **config) -> Job:
    provider = get_provider("faults")
    return create_job(
        provider=provider, job_type=provider.job_type("showcase"), authorization=None,
        name="Showcase", description="", created_by=owner, paused=True,
        config={**defaults(SHOWCASE_SCHEMA), "title": "T", "limits": {"daily": 5, "note": "n/a"},
                "endpoint": ENDPOINT, "token": token, **config})


# What the configure form of a showcase job sends back unchanged (the password box blank).
FORM = {"title": "T", "count": "3", "enabled": "on", "mode": "safe", "limits.daily": "5",
        "limits.note": "n/a", "endpoint": ENDPOINT}


def start(client, auth, job: Job) -> str:
    """Press "Edit configuration": the configure step's URL of the new edit draft."""
    response = post(client, auth, f"/jobs/{job.id}/edit")
    assert response.status_code == 303, response.get_data(as_text=True)
    return response.headers["Location"]


def through_to_review(client, auth, job: Job, **changed) -> str:
    """Configure (with changes) and schedule as they are: the review step's URL."""
    configure = start(client, auth, job)
    response = post(client, auth, configure, **{**FORM, **changed})
    assert response.status_code == 303, response.get_data(as_text=True)
    plan = response.headers["Location"]
    response = post(client, auth, plan, name=job.name, description=job.description)
    assert response.status_code == 303, response.get_data(as_text=True)
    return response.headers["Location"]


def draft_of(job: Job) -> Draft:
    return db.session.scalar(select(Draft).where(Draft.job_id == job.id))


def versions_of(job: Job) -> list[JobConfigVersion]:
    return list(db.session.scalars(select(JobConfigVersion).where(
        JobConfigVersion.job_id == job.id).order_by(JobConfigVersion.version)))


def test_the_edit_is_prefilled_with_the_secret_blank(client, auth):
    user = auth.login()
    token = canary("edit-token-1111")
    job = showcase_job(user, token, title="Old title", count=7)
    configure = start(client, auth, job)
    assert configure.startswith("/jobs/new/faults/showcase/configure?")
    page = client.get(configure).get_data(as_text=True)
    assert "Edit configuration of “Showcase”" in page
    assert 'value="Old title"' in page and 'value="7"' in page
    assert "Set. Leave blank to keep it. If you change “Endpoint”, enter it again." in page
    assert "Create paused" not in client.get(f"/jobs/new/drafts/{draft_of(job).id}/schedule",
                                             ).get_data(as_text=True)
    assert [v.summary for v in versions_of(job)] == ["Created"], "creation is version 1"


def test_a_mistake_is_said_on_its_field_and_nothing_is_saved(client, auth):
    user = auth.login()
    job = showcase_job(user, canary("edit-token-2222"))
    before = dict(job.config)
    configure = start(client, auth, job)
    response = post(client, auth, configure, **{**FORM, "count": "12"})
    page = response.get_data(as_text=True)
    assert response.status_code == 422
    assert "maximum 10" in page.split('id="field-count-error">')[1].split("</div>")[0]
    db.session.expire_all()
    assert job.config == before and len(versions_of(job)) == 1


def test_a_blank_secret_is_kept_and_the_change_is_a_version(client, auth):
    user = auth.login()
    token = canary("edit-token-3333")
    job = showcase_job(user, token)
    sealed = job.config["token"]
    review = through_to_review(client, auth, job, title="New title")
    page = client.get(review).get_data(as_text=True)
    assert "Review the changes" in page and 'data-field="title"' in page
    assert "Save and resume" in page, "a paused job can be resumed on Save"
    response = post(client, auth, review.replace("/review", "/save"))
    assert response.headers["Location"] == f"/jobs/{job.id}"
    db.session.expire_all()
    assert job.config["title"] == "New title" and job.config["token"] == sealed
    assert job.status == "paused", "Save alone leaves the status as it was"
    assert draft_of(job) is None, "the edit draft is gone once saved"
    created, edited = versions_of(job)
    assert (created.version, edited.version) == (1, 2)
    assert edited.by_id == user.id and edited.changes == [
        {"field": "title", "label": "Title", "before": "T", "after": "New title"}]
    event = db.session.scalar(select(JobEvent).where(JobEvent.job_id == job.id,
                                                     JobEvent.kind == "edited"))
    assert event.message == f"Configuration changed by {user.email}: Title"
    entry = db.session.scalar(select(AuditEntry).where(AuditEntry.action == "config_changed"))
    assert entry.object_id == job.id and entry.details["fields"] == ["title"]
    summary = client.get(f"/jobs/{job.id}").get_data(as_text=True)
    assert "Saved: Title." in summary
    changes = summary.split('id="job-changes"')[1].split("</section>")[0]
    assert "Version 2" in changes and "“T” → “New title”" in changes and "Created" in changes


def test_a_new_secret_is_only_said_to_have_changed(client, auth):
    user = auth.login()
    old, new = canary("edit-token-4444"), canary("edit-token-5555")
    job = showcase_job(user, old)
    review = through_to_review(client, auth, job, token=new)
    assert "<em>changed</em>" in client.get(review).get_data(as_text=True)
    post(client, auth, review.replace("/review", "/save"))
    db.session.expire_all()
    assert configsecrets.open_config(SHOWCASE_SCHEMA, job.config, what="t")["token"] == new
    change = versions_of(job)[-1].changes
    assert change == [{"field": "token", "label": "Token", "secret": True}]
    stored = json.dumps([change, [e.message for e in db.session.scalars(select(JobEvent))],
                         [e.details for e in db.session.scalars(select(AuditEntry))]])
    assert old not in stored and new not in stored and "$sealed" not in stored
    page = client.get(f"/jobs/{job.id}").get_data(as_text=True)  # scanned for canaries too
    assert "Token: <em>changed</em>" in page


def test_a_blank_secret_is_not_kept_when_its_destination_changed(client, auth):
    user = auth.login()
    token = canary("edit-token-6666")
    job = showcase_job(user, token)
    configure = start(client, auth, job)
    page = post(client, auth, configure, headers=HX,
                **{**FORM, "endpoint": "https://b.example.com/in"}).get_data(as_text=True)
    assert "“Endpoint” changed: enter this secret again" in page.split(
        'id="field-token-error">')[1].split("</div>")[0]
    # Save checks it again against the job itself: a draft that kept the sealed secret
    # with a new endpoint (however it came to be) is refused, nothing saved.
    provider = get_provider("faults")
    moved = Settings.of(job)
    moved = Settings(moved.authorization_id, {**moved.config, "endpoint": "https://c.example"},
                     moved.schedule, moved.retry_policy, moved.name, moved.description)
    with pytest.raises(EditRefused) as refused:
        save_edit(job, provider.job_type("showcase"), moved, by=user)
    assert "enter this secret again" in refused.value.errors["token"]
    db.session.expire_all()
    assert job.config["endpoint"] == ENDPOINT and len(versions_of(job)) == 1


def authorization(provider_key: str, method: str, label: str, user, **credentials):
    provider = get_provider(provider_key)
    found = vault.create(provider, provider.auth_method(method), label=label, description="",
                         credentials=credentials, by=user)
    db.session.commit()
    return found


def test_another_authorization_of_the_same_provider_only(client, auth):
    user = auth.login()
    write_messages("signups", [OutMessage("k", utcnow(), {})], source="test")
    first = authorization("webhook", "open", "Hook A", user, url="https://a.example/x")
    second = authorization("webhook", "open", "Hook B", user, url="https://b.example/x")
    other = authorization("faults", "api_key", "Faults key", user,
                          api_key=canary("edit-api-key-7777"))
    provider = get_provider("webhook")
    job = create_job(provider=provider, job_type=provider.job_type("send_stream"),
                     authorization=first, name="Hook", description="", created_by=user,
                     config={"stream": "signups", "batch_size": 100}, paused=True)
    configure = start(client, auth, job)
    page = client.get(configure).get_data(as_text=True)
    menu = page.split('id="field-authorization"')[1].split("</select>")[0]
    assert "Hook A" in menu and "Hook B" in menu and "Faults key" not in menu
    fields = {"stream": "signups", "batch_size": "100"}
    response = post(client, auth, configure, headers=HX, authorization=str(other.id), **fields)
    page = response.get_data(as_text=True)
    assert "is for another provider" in page.split('id="field-authorization-error">')[1]
    db.session.expire_all()
    assert draft_of(job).authorization_id == first.id
    response = post(client, auth, configure, authorization=str(second.id), **fields)
    assert response.status_code == 303
    response = post(client, auth, response.headers["Location"], name="Hook",
                    **{"schedule-kind": "interval", "schedule-every_minutes": "15"})
    review = response.headers["Location"]
    assert "Hook A (#" in client.get(review).get_data(as_text=True)
    post(client, auth, review.replace("/review", "/save"))
    db.session.expire_all()
    assert job.authorization_id == second.id
    labels = [change["label"] for change in versions_of(job)[-1].changes]
    assert labels == ["Authorization", "Cadence"]


def test_only_the_creator_or_an_admin_may_edit(client, auth, make_user):
    owner = make_user("operator", email="owner@example.com")
    job = showcase_job(owner, canary("edit-token-8888"))
    for role in ("operator", "viewer"):
        auth.login(role)
        assert post(client, auth, f"/jobs/{job.id}/edit").status_code == 403
        assert "Edit configuration" not in client.get(f"/jobs/{job.id}").get_data(as_text=True)
        assert client.get(f"/jobs/{job.id}/edit").status_code == 403
        post(client, auth, "/logout")
    admin = auth.login("admin")
    assert "Edit configuration" in client.get(f"/jobs/{job.id}").get_data(as_text=True)
    review = through_to_review(client, auth, job, title="By admin")
    post(client, auth, review.replace("/review", "/save"))
    db.session.expire_all()
    assert job.config["title"] == "By admin" and versions_of(job)[-1].by_id == admin.id


def test_an_edit_made_meanwhile_by_someone_else_is_not_overwritten(client, auth, make_user):
    user = auth.login()
    job = showcase_job(user, canary("edit-token-9999"))
    review = through_to_review(client, auth, job, title="Mine")
    provider = get_provider("faults")
    theirs = Settings.of(job)
    save_edit(job, provider.job_type("showcase"), Settings(
        None, {**theirs.config, "count": 9}, theirs.schedule, theirs.retry_policy,
        theirs.name), by=make_user("admin"))
    page = post(client, auth, review.replace("/review", "/save"), headers=HX)
    assert "Someone else changed this job" in page.get_data(as_text=True)
    db.session.expire_all()
    assert job.config["title"] == "T" and job.config["count"] == 9


def script_job(user, **config) -> Job:
    provider = get_provider("faults")
    return create_job(provider=provider, job_type=provider.job_type("script"),
                      authorization=None, name="Script", description="", created_by=user,
                      config={"units": 1, **config})


def with_config(job: Job, **config) -> Settings:
    now = Settings.of(job)
    return Settings(now.authorization_id, {**now.config, **config}, now.schedule,
                    now.retry_policy, now.name, now.description)


def test_a_failed_job_is_corrected_resumed_and_completes(client, auth, work):
    user = auth.login()
    job = script_job(user, script=["fatal"], stream="fixed")
    work()
    assert job.status == "failed"
    review = through_to_review(client, auth, job)
    page = client.get(review).get_data(as_text=True)
    assert "Save and resume" in page and "The job has failed" in page
    db.session.expire_all()
    saved = save_edit(job, get_provider("faults").job_type("script"),
                      with_config(job, script=["ok"]), by=user, resume=True)
    assert saved.resumed and [c["field"] for c in saved.changes] == ["script"]
    work()
    assert job.status == "completed"
    kinds = [e.kind for e in db.session.scalars(select(JobEvent).where(
        JobEvent.job_id == job.id).order_by(JobEvent.id))]
    assert kinds[-3:] == ["edited", "resumed", "completed"]


def test_save_and_resume_from_the_review_step(client, auth, work):
    user = auth.login()
    job = script_job(user, script=["fatal"])
    work()
    review = through_to_review(client, auth, job)
    response = post(client, auth, review.replace("/review", "/save"), resume="1")
    assert response.status_code == 303
    db.session.expire_all()
    assert job.status == "running" and "The job runs now." in client.get(
        f"/jobs/{job.id}").get_data(as_text=True)


def test_a_running_job_takes_the_new_configuration_at_its_next_unit(app, spawn, make_user):
    user = make_user("operator")
    edited = threading.Event()

    def answer(request):  # the first batch waits until the edit is saved
        edited.wait(20)
        return Response(status=204)

    with AnsweringServer(answer) as server:
        write_messages("signups", [OutMessage(f"m{n}", utcnow(), {"n": n}) for n in range(6)],
                       source="test")
        hook = authorization("webhook", "open", "Hook", user, url=server.base_url + "/hook")
        provider = get_provider("webhook")
        job = create_job(provider=provider, job_type=provider.job_type("send_stream"),
                         authorization=hook, name="Hook", description="", created_by=user,
                         config={"stream": "signups", "batch_size": 1})
        spawn("worker")
        deadline = time.monotonic() + 30
        while not server.received and time.monotonic() < deadline:
            time.sleep(0.05)
        assert server.received, "the worker never sent the first batch"
        db.session.rollback()
        saved = save_edit(job, provider.job_type("send_stream"),
                          with_config(job, batch_size=3), by=user)
        assert saved.status == "running" and job.lease_owner is not None, "mid-unit"
        edited.set()
        while sum(len(r.json["messages"]) for r in server.received) < 6 and (
                time.monotonic() < deadline):
            time.sleep(0.05)
        sizes = [len(r.json["messages"]) for r in server.received]
    # The unit under way finished with the configuration it read; the next ones used
    # the new one.
    assert sizes == [1, 3, 2]
    deadline = time.monotonic() + 10
    while job.status == "running" and time.monotonic() < deadline:
        time.sleep(0.05)
        db.session.rollback()
    assert job.config["batch_size"] == 3, "the worker did not write the old config back"


def import_job(user, content: bytes = b"email\na@x.io\nb@x.io\nc@x.io\n") -> Job:
    upload, _ = store_upload("first.csv", content, by=user)
    provider = get_provider("files")
    job_type = provider.job_type("import_file")
    return create_job(provider=provider, job_type=job_type, authorization=None,
                      name="Import", description="", created_by=user,
                      config={**defaults(job_type.config_schema), "upload_id": upload.id,
                              "stream": "people", "delimiter": ","})


def test_a_new_file_over_the_limit_is_said_on_the_file_field(app, client, auth):
    user = auth.login()
    job = import_job(user)
    configure = start(client, auth, job)
    app.config["MAX_CONTENT_LENGTH"] = 1024
    big = {"csrf_token": auth.csrf(), "action": "upload",
           "file": (io.BytesIO(b"a,b\n" + b"1,2\n" * 1000), "big.csv")}
    page = client.post(configure, headers=HX, data=big).get_data(as_text=True)
    assert 'id="field-upload_id-error">This file is larger than the 1 KB' in page
    assert "Uploaded: <strong>first.csv</strong>" in page, "the job's file stays"
    db.session.expire_all()
    assert draft_of(job).config["upload_id"] == job.config["upload_id"]


def test_a_new_file_is_read_from_its_first_row(client, auth, work):
    user = auth.login()
    job = import_job(user)
    upload_id = job.config["upload_id"]
    work()
    assert job.status == "completed" and job.cursor["done_rows"] == 3
    configure = start(client, auth, job)
    page = client.get(configure).get_data(as_text=True)
    assert "reads the new file from its first row" in page
    form = {"upload_id": str(upload_id), "stream": "people", "delimiter": ",",
            "timestamp_field": ""}
    data = {"csrf_token": auth.csrf(), **form, "action": "upload",
            "file": (io.BytesIO(b"email\nd@x.io\ne@x.io\n"), "second.csv")}
    page = client.post(configure, data=data, headers=HX).get_data(as_text=True)
    assert "second.csv" in page
    draft = draft_of(job)
    assert draft.config["upload_id"] != upload_id
    response = post(client, auth, configure, **{**form, "upload_id": str(draft.config[
        "upload_id"])})
    assert response.status_code == 303, response.get_data(as_text=True)
    response = post(client, auth, response.headers["Location"], name="Import")
    review = response.headers["Location"]
    page = client.get(review).get_data(as_text=True)
    assert "A new file: the job reads it from its first row." in page
    assert "first.csv (#" in page and "second.csv (#" in page
    assert "Save and run again" in page, "a completed job runs again only if asked"
    post(client, auth, review.replace("/review", "/save"), resume="1")
    db.session.expire_all()
    assert job.status == "running" and job.cursor == {}
    work()
    assert job.status == "completed" and job.cursor["done_rows"] == 2
    stream = db.session.scalar(select(Stream).where(Stream.name == "people"))
    emails = sorted(m.payload["email"] for m in db.session.scalars(
        select(Message).where(Message.stream_id == stream.id)))
    assert emails == ["a@x.io", "b@x.io", "c@x.io", "d@x.io", "e@x.io"]


def test_changes_are_paged_newest_first(client, auth):
    user = auth.login()
    job = showcase_job(user, canary("edit-token-1212"))
    job_type = get_provider("faults").job_type("showcase")
    for n in range(1, 12):
        save_edit(job, job_type, with_config(job, title=f"T{n}"), by=user)
    assert versions_of(job)[-1].version == 12
    page = client.get(f"/jobs/{job.id}").get_data(as_text=True)
    assert 'id="version-12"' in page and 'id="version-3"' in page
    assert 'id="version-2"' not in page and "Older changes" in page
    older = client.get(f"/jobs/{job.id}/changes?before=3", headers=HX).get_data(as_text=True)
    assert 'id="version-2"' in older and 'id="version-1"' in older
    assert "Older changes" not in older


def test_differences_name_fields_by_their_titles():
    before = Settings(None, {"limits": {"daily": 1}, "channels": ["sms"], "enabled": True},
                      {"kind": "once"}, {}, "n")
    after = Settings(None, {"limits": {"daily": 2}, "channels": ["sms", "push"],
                            "enabled": False}, {"kind": "interval", "every_minutes": 15},
                     {}, "n")
    changes = differences(SHOWCASE_SCHEMA, before, after)
    assert changes == [
        {"field": "enabled", "label": "Enabled", "before": "Yes", "after": "No"},
        {"field": "channels", "label": "Channels", "before": "sms", "after": "sms, push"},
        {"field": "limits.daily", "label": "Limits › Daily", "before": "1", "after": "2"},
        {"field": "schedule", "label": "Cadence", "before": "Runs once",
         "after": "Every 15 minutes"},
    ]


def test_moving_jobs_off_an_authorization_is_a_version_of_each(app, make_user):
    user = make_user("operator")
    first = authorization("webhook", "open", "Hook A", user, url="https://a.example/x")
    second = authorization("webhook", "open", "Hook B", user, url="https://b.example/x")
    provider = get_provider("webhook")
    job = create_job(provider=provider, job_type=provider.job_type("send_stream"),
                     authorization=first, name="Hook", description="", created_by=user,
                     config={"stream": "signups"}, paused=True)
    assert vault.reassign(first, second, by=user) == 1
    db.session.commit()
    version = versions_of(job)[-1]
    assert (version.version, version.summary) == (2, "Authorization reassigned")
    assert version.changes[0]["before"].startswith("Hook A (#")
    assert version.changes[0]["after"].startswith("Hook B (#")


def test_an_edit_of_a_deleted_job_says_so_and_can_be_discarded(client, auth):
    user = auth.login()
    job = showcase_job(user, canary("edit-token-1313"))
    configure = start(client, auth, job)
    draft = draft_of(job)
    post(client, auth, f"/jobs/{job.id}/delete")
    assert db.session.get(Job, job.id) is None
    response = client.get(configure)
    assert response.status_code == 404
    assert "The job this edit was for has been deleted." in response.get_data(as_text=True)
    assert "Edit of job #" in client.get("/jobs/new/drafts").get_data(as_text=True)
    post(client, auth, f"/jobs/new/drafts/{draft.id}/discard")
    assert db.session.get(Draft, draft.id) is None


def test_a_cursor_a_person_reset_during_a_unit_wins_over_the_units(app, spawn, make_user):
    """What a new file does to a running import (its cursor starts again), shown on a
    webhook export whose first batch is held until the cursor is reset."""
    user = make_user("operator")
    reset = threading.Event()

    def answer(request):
        reset.wait(20)
        return Response(status=204)

    with AnsweringServer(answer) as server:
        write_messages("signups", [OutMessage(f"m{n}", utcnow(), {"n": n}) for n in range(4)],
                       source="test")
        hook = authorization("webhook", "open", "Hook", user, url=server.base_url + "/hook")
        provider = get_provider("webhook")
        job = create_job(provider=provider, job_type=provider.job_type("send_stream"),
                         authorization=hook, name="Hook", description="", created_by=user,
                         config={"stream": "signups", "batch_size": 2})
        spawn("worker")
        deadline = time.monotonic() + 30
        while not server.received and time.monotonic() < deadline:
            time.sleep(0.05)
        db.session.rollback()
        job.cursor = {"after_id": 0}  # as save_edit does for an import's new file
        db.session.commit()
        reset.set()
        while len(server.received) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        batches = [[m["payload"]["n"] for m in r.json["messages"]] for r in server.received]
    assert batches[:3] == [[0, 1], [0, 1], [2, 3]], "the batch under way is sent again"
