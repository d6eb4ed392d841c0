"""Mailchimp "Export audience to list": an audience's changes go to a Mailchimp list as
batch operations, run by a real RQ worker (or worker process) against the loopback
Mailchimp of tests/loopback.py."""

from __future__ import annotations

import hashlib
import io
import json
import signal
import tarfile
import time
from datetime import timedelta

import pytest
from sqlalchemy import select
from werkzeug.wrappers import Response

from portal import membership, vault
from portal.extensions import db
from portal.jobs import create_job
from portal.models import Authorization, JobEvent
from portal.models.types import utcnow
from providers import get_provider, mailchimp
from providers.base import ConfigError, ProviderError
from tests.loopback import TEST_API_KEY, AnsweringServer, MailchimpServer
from tests.oauth_server import OAuthServer
from tests.test_audience_export import make_audience, run_now, say
from tests.test_job_path import fresh, kinds
from tests.test_oauth_flow import CALLBACK, LatestToken, oauth_settings, record_tokens, signed_in

LIST = "list1"
PRO = [{"field": "plan", "op": "equals", "value": "pro"}]
PEOPLE = [
    {"email": "ann@example.com", "plan": "pro", "city": "Oslo"},
    {"email": "bob@example.com", "plan": "free"},
    {"user_id": 7, "plan": "pro"},  # no email: omitted
    {"email": "Cy@Example.com", "plan": "pro"},
]


@pytest.fixture
def owner(make_user):
    return make_user("operator")


@pytest.fixture
def server(monkeypatch):
    with MailchimpServer() as running:
        running.members[LIST] = []
        running.list_names[LIST] = "Newsletter"
        monkeypatch.setenv(mailchimp.API_URL_ENV, running.api_url)
        yield running


def key_authorization(owner, api_key: str = TEST_API_KEY) -> Authorization:
    provider = get_provider("mailchimp")
    authorization = vault.create(provider, provider.auth_method("api_key"), label="MC key",
                                 description="", credentials={"api_key": api_key}, by=owner)
    db.session.commit()
    return authorization


def export_job(owner, audience, authorization=None, retry_policy="default", **config):
    provider = get_provider("mailchimp")
    extra = {} if retry_policy == "default" else {"retry_policy": retry_policy}
    job = create_job(provider=provider, job_type=provider.job_type("export"),
                     authorization=authorization or key_authorization(owner),
                     name="Pro to Mailchimp", description="",
                     config={"audience": audience.slug, "list_id": LIST,
                             "status": "subscribed", "batch_size": 500, **config},
                     created_by=owner, schedule={"kind": "interval", "every_minutes": 60},
                     **extra)
    db.session.commit()
    return job


def events(job) -> list[JobEvent]:
    return list(db.session.scalars(select(JobEvent).where(JobEvent.job_id == fresh(job).id)
                                   .order_by(JobEvent.id)))


def operations(server) -> list[tuple[str, str]]:
    """(method, subscriber hash) of every operation of every batch, in order."""
    return [(op["method"], op["path"].rsplit("/", 1)[1])
            for batch in server.posted_batches() for op in batch["operations"]]


def md5(email: str) -> str:
    return hashlib.md5(email.lower().encode()).hexdigest()


def test_the_export_adds_members_in_one_batch_and_later_runs_send_only_changes(
        app, work, owner, server):
    say(*PEOPLE)
    audience = make_audience(owner, PRO)
    job = export_job(owner, audience, merge_fields=["plan=PLAN", "city=CITY"])
    assert work()
    job = fresh(job)
    assert job.status == "sleeping" and "error" not in kinds(job)
    [batch] = server.posted_batches()
    assert [(op["method"], op["operation_id"]) for op in batch["operations"]] == [
        ("PUT", op["operation_id"]) for op in batch["operations"]] and len(
        batch["operations"]) == 2
    assert [op["path"] for op in batch["operations"]] == [
        f"/lists/{LIST}/members/{md5('ann@example.com')}",
        f"/lists/{LIST}/members/{md5('cy@example.com')}"]  # lower-cased before hashing
    assert server.members_of(LIST, "subscribed") == ["ann@example.com", "Cy@Example.com"]
    ann = server.members[LIST][0]
    assert ann["merge_fields"] == {"PLAN": "pro", "CITY": "Oslo"}
    assert (job.added_total, job.removed_total, job.omitted_total) == (2, 0, 1)
    assert membership.exported_count(job.id) == 2
    assert job.cursor == {"after_profile_id": 0}
    done = [e for e in events(job) if "added" in e.message and "Mailchimp list" in e.message]
    assert "2 added, 0 removed, 1 omitted (no email)" in done[-1].message
    # The batch was polled until finished; the results archive was not needed.
    assert ("GET", "/3.0/batches/b0001", "basic") in server.requests
    assert not any(path.startswith("/batch-results") for _, path, _ in server.requests)

    # Nothing changed: the next run sends no batch.
    run_now(job, owner)
    assert work()
    assert len(server.posted_batches()) == 1
    # Bob joins, Ann leaves: one batch, one PUT and one DELETE (Mailchimp archives Ann).
    say({"email": "bob@example.com", "plan": "pro"},
        {"email": "ann@example.com", "plan": "free"}, at=100)
    run_now(job, owner)
    assert work()
    assert operations(server)[2:] == [("DELETE", md5("ann@example.com")),
                                      ("PUT", md5("bob@example.com"))]
    assert server.members_of(LIST, "archived") == ["ann@example.com"]
    assert server.members_of(LIST, "subscribed") == ["Cy@Example.com", "bob@example.com"]
    job = fresh(job)
    assert (job.added_total, job.removed_total) == (3, 1)
    assert membership.exported_count(job.id) == 2


def test_new_members_take_the_configured_status_and_windows_go_batch_by_batch(
        app, work, owner, server):
    say(*[{"email": f"p{n}@example.com", "plan": "pro"} for n in range(5)])
    audience = make_audience(owner, PRO)
    server.add_member(LIST, "p0@example.com", status="unsubscribed")  # keeps its status
    job = export_job(owner, audience, status="pending", batch_size=2)
    assert work()
    assert [len(batch["operations"]) for batch in server.posted_batches()] == [2, 2, 1]
    assert server.members_of(LIST, "pending") == [f"p{n}@example.com" for n in range(1, 5)]
    assert server.members_of(LIST, "unsubscribed") == ["p0@example.com"]
    assert membership.exported_count(fresh(job).id) == 5


def test_refused_members_are_named_with_the_reason_and_tried_again_next_run(
        app, work, owner, server):
    say(*PEOPLE)
    audience = make_audience(owner, PRO)
    server.reject_emails = {"ann@example.com"}
    job = export_job(owner, audience)
    assert work()
    job = fresh(job)
    assert (job.added_total, job.status) == (1, "sleeping")
    message = [e.message for e in events(job) if "failed" in e.message][-1]
    assert "1 added, 0 removed, 1 omitted" in message
    assert "adding ann@example.com failed: HTTP 400 Invalid Resource" in message
    assert "looks fake or invalid" in message
    # The archive came from where the batch said, without the API key.
    fetched = [(kind) for _, path, kind in server.requests if path.startswith("/batch-")]
    assert fetched == ["none"]
    assert membership.exported_count(job.id) == 1  # Ann is not recorded as sent
    server.reject_emails = set()
    run_now(job, owner)
    assert work()
    assert operations(server)[-1] == ("PUT", md5("ann@example.com"))
    assert len(server.posted_batches()) == 2 and len(server.posted_batches()[1][
        "operations"]) == 1
    assert membership.exported_count(job.id) == 2


def test_a_member_mailchimp_no_longer_has_counts_as_removed(app, work, owner, server):
    say({"email": "ann@example.com", "plan": "pro"})
    audience = make_audience(owner, PRO)
    job = export_job(owner, audience)
    assert work()
    server.members[LIST].clear()  # someone deleted Ann in Mailchimp
    say({"email": "ann@example.com", "plan": "free"}, at=10)
    run_now(job, owner)
    assert work()
    job = fresh(job)
    assert job.removed_total == 1 and "error" not in kinds(job)
    assert membership.exported_count(job.id) == 0


def test_a_failed_poll_polls_the_same_batch_again_instead_of_sending_it_twice(
        app, work, owner, server):
    say(*PEOPLE)
    audience = make_audience(owner, PRO)
    server.batch_polls = 2
    job = export_job(owner, audience, retry_policy={"backoff_base_seconds": 1,
                                                    "backoff_cap_seconds": 1})
    server.fail_polls = [503]  # the batch is created, then its first poll fails
    work()
    job = fresh(job)
    assert job.status == "sleeping" and job.error_count == 1
    assert job.cursor["pending"]["batch_id"] == "b0001"
    assert membership.exported_count(job.id) == 0
    run_now(job, owner)
    assert work()
    job = fresh(job)
    assert len(server.posted_batches()) == 1, "the batch was sent once"
    assert server.members_of(LIST) == ["ann@example.com", "Cy@Example.com"]
    assert membership.exported_count(job.id) == 2 and "pending" not in job.cursor


def test_a_worker_killed_while_polling_resumes_with_the_same_batch(
        app, owner, server, spawn):
    fast = {"PORTAL_LEASE_SECONDS": "3", "PORTAL_DISPATCH_INTERVAL": "1",
            "PORTAL_ENQUEUE_GRACE_SECONDS": "2"}
    say(*PEOPLE)
    audience = make_audience(owner, PRO)
    server.batch_polls = 10_000  # the batch stays "started" until the test says
    job = export_job(owner, audience, retry_policy={"backoff_base_seconds": 1,
                                                    "backoff_cap_seconds": 1})
    worker = spawn("worker", **fast)
    spawn("dispatcher", **fast)

    def polls() -> int:
        return sum(1 for method, path, _ in server.requests if path == "/3.0/batches/b0001")

    deadline = time.monotonic() + 60
    while polls() < 2 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert polls() >= 2, "the worker polls the batch"
    worker.send_signal(signal.SIGKILL)
    worker.wait(10)
    server.batch_polls = 0  # the batch is finished now
    spawn("worker", **fast)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        db.session.expire_all()
        db.session.rollback()
        if membership.exported_count(job.id) == 2:
            break
        time.sleep(0.3)
    assert membership.exported_count(job.id) == 2
    assert len(server.posted_batches()) == 1, "nothing was sent twice"
    assert server.members_of(LIST) == ["ann@example.com", "Cy@Example.com"]


def test_a_rate_limit_puts_the_job_to_sleep_until_retry_after(app, work, owner, server):
    say(*PEOPLE)
    audience = make_audience(owner, PRO)
    server.retry_after = "120"
    job = export_job(owner, audience)
    server.fail_next = [429]
    before = utcnow()
    work()
    job = fresh(job)
    assert job.status == "sleeping" and job.error_count == 0
    assert kinds(job)[-1] == "sleeping"
    last = events(job)[-1]
    assert last.code == "rate_limited"
    assert timedelta(seconds=110) < job.next_run_at - before < timedelta(seconds=130)
    assert server.posted_batches() == []
    assert membership.exported_count(job.id) == 0


def test_refused_credentials_mark_the_authorization_unhealthy(app, work, owner, server):
    say(*PEOPLE)
    audience = make_audience(owner, PRO)
    wrong = "f" * 32 + "-us6"
    authorization = key_authorization(owner, wrong)
    job = export_job(owner, audience, authorization=authorization)
    work()
    job = fresh(job)
    assert job.status == "sleeping" and kinds(job)[-1] == "error"
    authorization = db.session.get(Authorization, authorization.id, populate_existing=True)
    assert authorization.health == "unhealthy"
    assert wrong not in (authorization.health_message or "")
    assert wrong not in " ".join(e.message for e in events(job))
    assert server.posted_batches() == []


@pytest.fixture
def oauth(app, monkeypatch):
    """An authorization server and the Mailchimp stand-in accepting its newest token."""
    with OAuthServer(redirect_uris=[CALLBACK]) as server, MailchimpServer() as running:
        running.access_tokens = LatestToken(server)
        running.members[LIST] = []
        app.config.update(oauth_settings(server))
        monkeypatch.setenv(mailchimp.METADATA_URL_ENV, running.metadata_url)
        monkeypatch.setenv(mailchimp.API_URL_ENV, running.api_url)
        yield server, running


def test_an_expired_oauth_token_is_refreshed_before_the_export(client, auth, oauth, work):
    server, mailchimp_server = oauth
    server.access_token_lifetime = 60  # inside the refresh margin
    authorization = signed_in(client, auth, server)
    server.access_token_lifetime = 3600  # the renewed token is good for an hour
    owner = authorization.owner
    say(*PEOPLE)
    audience = make_audience(owner, PRO)
    job = export_job(owner, audience, authorization=authorization)
    work()
    record_tokens(server)
    job = fresh(job)
    assert server.refresh_count() == 1
    assert "error" not in kinds(job) and job.added_total == 2
    assert mailchimp_server.members_of(LIST) == ["ann@example.com", "Cy@Example.com"]
    assert {kind for method, path, kind in mailchimp_server.requests
            if path.startswith("/3.0/batches")} == {"bearer"}


def test_a_missing_list_fails_the_job_with_a_clear_message(app, work, owner, server):
    say(*PEOPLE)
    audience = make_audience(owner, PRO)
    job = export_job(owner, audience, list_id="nolist")
    work()
    job = fresh(job)
    assert job.status == "failed"
    assert any("no audience (list) with the ID 'nolist'" in e.message for e in events(job))
    assert server.posted_batches() == []


def test_check_and_the_list_menu(server):
    assert mailchimp.check("api_key", {"api_key": TEST_API_KEY}) == (
        "Connected to Mailchimp account acme")
    job_type = get_provider("mailchimp").job_type("export")
    assert job_type.option_sources["lists"]({"api_key": TEST_API_KEY}) == [
        (LIST, f"Newsletter ({LIST})")]


def test_merge_mapping_and_subscriber_hash():
    assert mailchimp.merge_mapping(["plan=PLAN", "first_name=FNAME"]) == {
        "plan": "PLAN", "first_name": "FNAME"}
    with pytest.raises(ConfigError, match="profile field=MERGE"):
        mailchimp.merge_mapping(["plan=plan"])
    assert mailchimp.subscriber_hash("Ann@Example.COM") == md5("ann@example.com")


def test_an_unreadable_results_archive_is_a_provider_error():
    with AnsweringServer(lambda request: Response(b"not a tarball")) as junk:
        with pytest.raises(ProviderError, match="not a readable tar.gz"):
            mailchimp.batch_failures({"api_key": TEST_API_KEY}, junk.base_url + "/r.tar.gz")
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        data = json.dumps([
            {"status_code": 400, "operation_id": "add:3",
             "response": json.dumps({"title": "Invalid Resource", "detail": "bad"})},
            {"status_code": 200, "operation_id": "add:4"}]).encode()
        info = tarfile.TarInfo("x.json")
        info.size = len(data)
        archive.addfile(info, io.BytesIO(data))
    with AnsweringServer(lambda request: Response(buffer.getvalue())) as good:
        assert mailchimp.batch_failures({"api_key": TEST_API_KEY},
                                        good.base_url + "/r.tar.gz") == {
            "add:3": "HTTP 400 Invalid Resource; bad"}
        assert good.received[0].headers.get("Authorization") is None


def test_the_member_import_pages_through_the_list_then_asks_only_for_changes(
        app, work, owner, server):
    """Pages of PORTAL_IMPORT_BATCH_SIZE (2 in tests), newest change first, until the list
    is read; the next run asks only for what changed since the newest change seen."""
    from portal.models import Message

    for n in range(5):
        server.add_member(LIST, f"m{n}@example.com",
                          last_changed=f"2024-01-0{n + 1}T00:00:00+00:00")
    provider = get_provider("mailchimp")
    job = create_job(provider=provider, job_type=provider.job_type("import_members"),
                     authorization=key_authorization(owner), name="members", description="",
                     config={"list_id": LIST, "stream": "members", "status": "any"},
                     created_by=owner, schedule={"kind": "interval", "every_minutes": 60})
    db.session.commit()

    def member_pages() -> list[dict[str, str]]:
        return [query for (method, path, _), query in zip(server.requests, server.queries,
                                                           strict=True)
                if (method, path) == ("GET", f"/3.0/lists/{LIST}/members")]

    work()
    pages = member_pages()
    assert [(q["offset"], q["count"]) for q in pages] == [("0", "2"), ("2", "2"), ("4", "2")]
    assert {(q["sort_field"], q["sort_dir"]) for q in pages} == {("last_changed", "DESC")}
    assert all("since_last_changed" not in q and "status" not in q for q in pages)
    assert all(set(q["fields"].split(",")) >= {"members.email_address",
                                              "members.last_changed", "total_items"}
               for q in pages)
    stored = db.session.scalars(select(Message.payload).order_by(Message.id)).all()
    assert [p["email_address"] for p in stored] == [f"m{n}@example.com" for n in (4, 3, 2, 1, 0)]
    assert fresh(job).cursor["offset"] == 0 and fresh(job).cursor["passes"] == 1
    # A member changes; the next run asks for changes since the newest seen (less a second).
    server.members[LIST][1]["last_changed"] = "2024-02-01T00:00:00+00:00"
    seen = len(member_pages())
    run_now(job, owner)
    work()
    [again] = member_pages()[seen:]
    assert again["offset"] == "0"
    assert again["since_last_changed"] == "2024-01-04T23:59:59+00:00"
    stored = db.session.scalars(select(Message.payload).order_by(Message.id)).all()
    assert [p["email_address"] for p in stored][5:] == ["m1@example.com"], "only the change"
