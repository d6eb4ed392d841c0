"""The job summary: inline edits with roles and history, delete, logs (filters, older
pages, downloads) and the metrics chart."""

from __future__ import annotations

import csv
import io
import json
import re
from datetime import timedelta

import pytest
from sqlalchemy import insert, select

from portal.extensions import db
from portal.jobs import create_job
from portal.models import AuditEntry, Job, JobEvent
from portal.models.types import utcnow
from providers import get_provider

HX = {"HX-Request": "true"}


@pytest.fixture
def job_of(app):
    def make(owner, status: str = "sleeping", name: str = "Nightly") -> Job:
        provider = get_provider("faults")
        job = create_job(provider=provider, job_type=provider.job_type("script"),
                         authorization=None, name=name, description="first", config={},
                         created_by=owner, paused=True)
        job.status = status
        db.session.commit()
        return job

    return make


@pytest.mark.parametrize("role,creator,allowed", [
    ("viewer", False, False), ("operator", False, False), ("operator", True, True),
    ("admin", False, True),
])
def test_who_may_edit_names(client, auth, make_user, job_of, role, creator, allowed):
    user = auth.login(role)
    owner = user if creator else make_user("operator", "creator@example.com")
    job = job_of(owner)
    page = client.get(f"/jobs/{job.id}").get_data(as_text=True)
    assert ('id="edit-name-button"' in page) == allowed
    assert ('id="edit-description-button"' in page) == allowed
    response = client.post(f"/jobs/{job.id}/name", headers=HX,
                           data={"csrf_token": auth.csrf(), "value": "Renamed"})
    assert response.status_code == (200 if allowed else 403)
    assert client.get(f"/jobs/{job.id}/name?edit=1").status_code == (200 if allowed else 403)
    db.session.expire_all()
    assert db.session.get(Job, job.id).name == ("Renamed" if allowed else "Nightly")


def test_edits_are_checked_kept_in_history_and_shown_as_text(client, auth, job_of):
    user = auth.login("operator")
    job = job_of(user)
    form = {"csrf_token": auth.csrf()}
    editing = client.get(f"/jobs/{job.id}/name?edit=1", headers=HX).get_data(as_text=True)
    assert 'id="edit-name"' in editing and 'value="Nightly"' in editing
    assert 'hx-trigger="edit-cancel" hx-params="none" data-inline-edit' in editing  # Escape
    cancelled = client.get(f"/jobs/{job.id}/name", headers=HX).get_data(as_text=True)
    assert '<h1 class="h3 mb-0" id="job-name">Nightly</h1>' in cancelled
    for value, words in (("   ", "Give the job a name."), ("x" * 201, "at most 200")):
        page = client.post(f"/jobs/{job.id}/name", headers=HX,
                           data={**form, "value": value}).get_data(as_text=True)
        assert words in page and 'id="edit-name"' in page, "the input stays, with the message"
    page = client.post(f"/jobs/{job.id}/description", headers=HX,
                       data={**form, "value": "y" * 2001}).get_data(as_text=True)
    assert "at most 2,000" in page
    markup = "<script>alert('x')</script> Zürich 東京 🚀"
    page = client.post(f"/jobs/{job.id}/name", headers=HX,
                       data={**form, "value": markup}).get_data(as_text=True)
    assert "&lt;script&gt;" in page and "<script>alert" not in page
    client.post(f"/jobs/{job.id}/description", headers=HX,
                data={**form, "value": "second\nline"})
    db.session.expire_all()
    job = db.session.get(Job, job.id)
    assert job.name == markup and job.description == "second\nline"
    assert job.updated_by_id == user.id
    edits = db.session.scalars(select(AuditEntry).where(AuditEntry.action == "edited")
                               .order_by(AuditEntry.id)).all()
    assert [(e.details["field"], e.details["before"], e.details["after"]) for e in edits] == [
        ("name", "Nightly", markup), ("description", "first", "second\nline")]
    for path in (f"/jobs/{job.id}", "/jobs"):
        page = client.get(path).get_data(as_text=True)
        assert "<script>alert" not in page and "&lt;script&gt;alert" in page
    summary = client.get(f"/jobs/{job.id}").get_data(as_text=True)
    assert "“Nightly” →" in summary, "the history shows before and after"
    kinds = db.session.scalars(select(JobEvent.kind).where(JobEvent.job_id == job.id)).all()
    assert kinds.count("edited") == 2


def test_delete_from_the_summary(client, auth, job_of):
    user = auth.login("operator")
    busy = job_of(user, status="running", name="busy")
    assert 'data-action="delete"' not in client.get(f"/jobs/{busy.id}").get_data(as_text=True)
    page = client.post(f"/jobs/{busy.id}/delete", headers=HX,
                       data={"csrf_token": auth.csrf()}).get_data(as_text=True)
    assert "Not deleted: it is running; pause it first" in page
    done = job_of(user, status="completed", name="done")
    assert 'data-action="delete"' in client.get(f"/jobs/{done.id}").get_data(as_text=True)
    response = client.post(f"/jobs/{done.id}/delete", headers=HX,
                           data={"csrf_token": auth.csrf()})
    assert response.headers["HX-Redirect"] == "/jobs"
    assert db.session.get(Job, done.id) is None
    assert db.session.scalars(select(JobEvent).where(JobEvent.job_id == done.id)).all() == []


def seed_events(job: Job, count: int) -> None:
    now = utcnow()
    kinds = ("synced", "error", "synced", "sleeping")
    db.session.execute(insert(JobEvent), [
        {"job_id": job.id, "at": now - timedelta(seconds=count - n), "kind": kinds[n % 4],
         "level": "error" if kinds[n % 4] == "error" else "info",
         "code": "E42" if kinds[n % 4] == "error" else "",
         "message": f"event {n}" + (" timeout talking to the API" if n % 4 == 1 else ""),
         "context": {"added": n % 3, "removed": 0, "omitted": 1}}
        for n in range(count)])
    db.session.commit()


def row_ids(page: str) -> list[int]:
    return [int(i) for i in re.findall(r'id="event-(\d+)"', page)]


def test_logs_filter_page_back_and_download(client, auth, job_of):
    user = auth.login("viewer")
    job = job_of(user)
    seed_events(job, 250)
    page = client.get(f"/jobs/{job.id}").get_data(as_text=True)
    first = row_ids(page)
    assert len(first) == 100 and first == sorted(first, reverse=True)
    seen = list(first)
    older = re.search(r'hx-get="([^"]+/logs/older[^"]*)"', page).group(1).replace("&amp;", "&")
    while older:
        fragment = client.get(older, headers=HX).get_data(as_text=True)
        seen += row_ids(fragment)
        found = re.search(r'hx-get="([^"]+/logs/older[^"]*)"', fragment)
        older = found.group(1).replace("&amp;", "&") if found else ""
    total = db.session.scalars(select(JobEvent.id).where(JobEvent.job_id == job.id)).all()
    assert sorted(seen) == sorted(total), "every event once, none skipped"
    errors = client.get(f"/jobs/{job.id}/logs/view?kind=error", headers=HX).get_data(
        as_text=True)
    assert len(row_ids(errors)) == 63 and 'data-kind="synced"' not in errors
    assert "kind=error" in errors, "the live tail and downloads keep the filter"
    assert client.get(f"/jobs/{job.id}/logs/view?kind=error&q=time", headers=HX).headers[
        "HX-Push-Url"] == f"/jobs/{job.id}?kind=error&q=time#job-logs-box", "in the address"
    assert client.get(f"/jobs/{job.id}/logs/view", headers=HX).headers[
        "HX-Push-Url"] == f"/jobs/{job.id}"
    shared = client.get(f"/jobs/{job.id}?kind=error&q=time").get_data(as_text=True)
    assert len(row_ids(shared)) == 63 and re.search(r'value="error"\s+selected', shared)
    assert 'value="time"' in shared
    text = client.get(f"/jobs/{job.id}/logs/view?q=TIMEOUT", headers=HX).get_data(as_text=True)
    assert len(row_ids(text)) == 63
    assert len(row_ids(client.get(f"/jobs/{job.id}/logs/view?q=E42",
                                  headers=HX).get_data(as_text=True))) == 63, "error codes too"
    ndjson = client.get(f"/jobs/{job.id}/logs.ndjson?kind=error")
    assert ndjson.headers["Content-Disposition"] == (
        f'attachment; filename="job-{job.id}-logs.ndjson"')
    lines = [json.loads(line) for line in ndjson.get_data(as_text=True).splitlines()]
    assert len(lines) == 63 and {line["event"] for line in lines} == {"error"}
    assert set(lines[0]) >= {"job_id", "timestamp", "level", "code", "message", "added"}
    rows = list(csv.DictReader(io.StringIO(client.get(
        f"/jobs/{job.id}/logs.csv").get_data(as_text=True))))
    assert len(rows) == 251 and rows[0]["event"] in {"synced", "error", "sleeping", "created"}


def poller(fragment: str) -> tuple[str, str]:
    """The live tail's next request and its trigger, from a page or a poll answer."""
    row = re.search(r'<tr id="log-poller"[^>]*>', fragment).group(0)
    url = re.search(r'hx-get="([^"]+)"', row)
    trigger = re.search(r'hx-trigger="([^"]+)"', row)
    return (url.group(1).replace("&amp;", "&") if url else "",
            trigger.group(1) if trigger else "")


@pytest.mark.parametrize("kind,sizes", [("", [500, 500, 300]), ("error", [325])])
def test_the_live_tail_catches_up_on_a_burst_without_skipping(client, auth, job_of, kind,
                                                              sizes):
    user = auth.login("viewer")
    job = job_of(user, status="running")
    seed_events(job, 3)
    page = client.get(f"/jobs/{job.id}/logs/view?kind={kind}", headers=HX).get_data(
        as_text=True)
    shown = set(row_ids(page))
    url, trigger = poller(page)
    assert trigger == "every 1s"
    seed_events(job, 1300)  # more than one poll carries (500) arrive at once
    triggers, batches = [], []
    while True:
        fragment = client.get(url, headers=HX).get_data(as_text=True)
        ids = row_ids(fragment)
        url, trigger = poller(fragment)
        if not ids:
            break
        assert ids == sorted(ids, reverse=True), "newest first within a batch"
        assert not batches or ids[-1] > batches[-1][0], "each batch goes above the last"
        batches.append(ids)
        triggers.append(trigger)
    assert [len(ids) for ids in batches] == sizes
    assert triggers == ["load"] * (len(sizes) - 1) + ["every 1s"], "asks again at once"
    query = select(JobEvent.id).where(JobEvent.job_id == job.id, JobEvent.id.notin_(shown))
    if kind:
        query = query.where(JobEvent.kind == kind)
    new = [i for ids in batches for i in ids]
    assert sorted(new) == sorted(db.session.scalars(query)), "every new event once"


def test_metrics_chart_buckets_add_up_to_the_events(client, auth, job_of):
    user = auth.login("viewer")
    job = job_of(user)
    seed_events(job, 30)
    page = client.get(f"/jobs/{job.id}/metrics?frame=24h", headers=HX).get_data(as_text=True)
    data = json.loads(re.search(r'<script type="application/json" id="metrics-data">(.*?)'
                                r"</script>", page, re.S).group(1))
    contexts = db.session.scalars(select(JobEvent.context).where(JobEvent.job_id == job.id))
    expected = sum(int(c.get("added", 0)) for c in contexts)
    assert sum(data["added"]) == data["total"]["added"] == expected
    assert sum(data["omitted"]) == 30
    assert client.get(f"/jobs/{job.id}/metrics?frame=1y").status_code == 404
    empty = job_of(user, name="quiet")
    page = client.get(f"/jobs/{empty.id}/metrics?frame=7d", headers=HX).get_data(as_text=True)
    assert 'id="metrics-empty"' in page


def test_the_summary_puts_the_error_first_while_retrying_and_once_failed(client, auth, work):
    user = auth.login("operator")
    faults = get_provider("faults")

    def scripted(name: str, script: list[str]) -> Job:
        return create_job(provider=faults, job_type=faults.job_type("script"),
                          authorization=None, name=name, description="",
                          config={"script": script}, created_by=user)

    retrying, fatal = scripted("flaky", ["error"]), scripted("hopeless", ["fatal"])
    work()
    page = client.get(f"/jobs/{retrying.id}").get_data(as_text=True)
    box = re.search(r'id="job-problem".*?</a>', page, re.S).group(0)
    assert "Retrying after this error" in box and "<code>injected</code>" in box
    assert "injected error in unit 0 — retry 1 at" in box
    assert f'href="/jobs/{retrying.id}?kind=error#job-logs-box"' in box
    page = client.get(f"/jobs/{fatal.id}").get_data(as_text=True)
    box = re.search(r'id="job-problem".*?</a>', page, re.S).group(0)
    assert "alert-danger" in page.split('id="job-problem"')[0][-80:]
    assert "Failed after this error" in box and "injected fatal error in unit 0" in box
    # Paused mid-streak, it says so; resumed, the streak is over: nothing is put first.
    client.post(f"/jobs/{retrying.id}/pause", headers=HX, data={"csrf_token": auth.csrf()})
    assert "Paused after this error" in client.get(f"/jobs/{retrying.id}").get_data(
        as_text=True)
    resumed = client.post(f"/jobs/{fatal.id}/resume", headers=HX,
                          data={"csrf_token": auth.csrf(), "kind": "error", "q": "unit"})
    assert 'id="job-problem"' not in client.get(f"/jobs/{fatal.id}").get_data(as_text=True)
    # The log tail starts again with the filter the page shows (the buttons send it).
    poller = re.search(r'<tr id="log-poller"[^>]*>', resumed.get_data(as_text=True)).group(0)
    assert "kind=error" in poller and "q=unit" in poller
