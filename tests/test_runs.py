"""Runs: one row per run of a job (claim to stop), summing its units and counts."""

from __future__ import annotations

import re
from datetime import timedelta

from sqlalchemy import select

from portal import lifecycle
from portal.datastore import write_messages
from portal.extensions import db
from portal.jobs import create_job
from portal.models import Job, JobEvent, JobRun
from portal.models.types import utcnow
from providers import get_provider
from providers.base import OutMessage
from tests.loopback import WebhookReceiver
from tests.test_engine import START, advance, clock, make_job  # noqa: F401  (fixtures)
from tests.test_job_path import create_import, fresh
from tests.test_vault import webhook_authorization
from workers import runner
from workers.dispatcher import dispatch_once
from workers.runner import Runner


def runs(job: Job) -> list[JobRun]:
    return list(db.session.scalars(select(JobRun).where(JobRun.job_id == job.id)
                                   .order_by(JobRun.id)))


def export_job(owner, hook: WebhookReceiver, messages: int, batch_size: int) -> Job:
    token = "tok-runs-export-2718"
    authorization = webhook_authorization(owner, hook.url, token)
    write_messages("signups", [OutMessage(f"k{n}", utcnow(), {"n": n})
                               for n in range(messages)], source="test")
    db.session.commit()
    provider = get_provider("webhook")
    return create_job(provider=provider, job_type=provider.job_types[0],
                      authorization=authorization, name="export", description="",
                      config={"stream": "signups", "batch_size": batch_size},
                      created_by=owner, schedule={"kind": "interval", "every_minutes": 60})


def test_a_multi_unit_export_is_one_run_with_summed_counts(app, make_user, work,
                                                          monkeypatch):
    # Every unit hands the job back to the queue: still the same run.
    monkeypatch.setattr(runner, "TIME_SLICE", timedelta(0))
    with WebhookReceiver(token="tok-runs-export-2718") as hook:
        job = export_job(make_user("operator"), hook, messages=250, batch_size=100)
        work()
        assert len(hook.received) == 3
    job = fresh(job)
    [run] = runs(job)
    assert job.status == "sleeping"
    assert (run.units, run.added, run.removed, run.omitted) == (3, 250, 0, 0)
    assert run.outcome == "sleeping" and run.ended_at is not None and not run.error
    assert run.started_at <= run.ended_at and run.duration is not None
    in_run = db.session.scalars(select(JobEvent.kind).where(JobEvent.run_id == run.id)
                                .order_by(JobEvent.id)).all()
    assert in_run == ["started", "synced", "synced", "synced"]
    outside = db.session.scalars(select(JobEvent.kind).where(
        JobEvent.job_id == job.id, JobEvent.run_id.is_(None))).all()
    assert outside == ["created"]


def test_an_error_run_keeps_its_error_and_the_retry_is_a_new_run(clock, make_job, work):  # noqa: F811
    job = make_job(script=["error:1"], units=2, rows_per_unit=3,
                   retry={"backoff_base_seconds": 10})
    work()
    [failed] = runs(job)
    assert failed.outcome == "error" and failed.units == 1 and failed.added == 0
    assert "injected error in unit 0" in failed.error and failed.error_code == "injected"
    job = advance(clock, job, work)
    assert job.status == "completed"
    first, second = runs(job)
    assert first.id == failed.id
    assert (second.outcome, second.units, second.added, second.error) == (
        "completed", 2, 6, "")


def test_a_fatal_error_fails_the_run(make_job, work):  # noqa: F811
    job = make_job(script=["fatal"], units=1)
    work()
    [run] = runs(job)
    assert run.outcome == "failed" and "injected fatal error" in run.error


def test_pausing_a_run_under_way_ends_it_paused(client, auth, app):
    user = auth.login()
    job = create_import(client, auth)
    claiming = Runner(job.id)
    claimed, outcome = claiming.claim()
    assert outcome == "claimed"
    assert claiming.unit(claimed) == "more"
    with app.app_context():  # a person pauses it from the web meanwhile
        lifecycle.pause(db.session.get(Job, job.id), by=db.session.get(type(user), user.id),
                        now=utcnow())
        db.session.commit()
    assert claiming.renew(claimed) is False
    [run] = runs(fresh(job))
    assert run.outcome == "paused" and run.ended_at is not None
    assert (run.units, run.added) == (1, 2)
    assert (run.done, run.total) == (2, 5), "an import knows its size"


def test_a_lost_worker_ends_its_run_as_lost(make_job):  # noqa: F811
    job = make_job(units=1)
    claimed, outcome = Runner(job.id).claim()
    assert outcome == "claimed"
    dispatch_once(utcnow() + timedelta(minutes=30))  # the lease ran out long ago
    [run] = runs(fresh(job))
    assert run.outcome == "lost" and run.error.startswith("Worker lost")


def test_consecutive_idle_runs_fold_into_one_row(clock, make_job, work):  # noqa: F811
    job = make_job(units=0, more_now=False, rows_per_unit=0,
                   schedule={"kind": "interval", "every_minutes": 1})
    work()
    for _ in range(3):
        job = advance(clock, job, work)
    [run] = runs(job)
    assert run.idle and run.outcome == "idle" and run.runs == 4 and run.units == 4
    job.config = {**job.config, "rows_per_unit": 2}
    db.session.commit()
    job = advance(clock, job, work)
    job.config = {**job.config, "rows_per_unit": 0}
    db.session.commit()
    job = advance(clock, job, work)
    job = advance(clock, job, work)
    idle, busy, idle_again = runs(job)
    assert (busy.outcome, busy.added, busy.runs) == ("sleeping", 2, 1)
    assert idle_again.runs == 2 and idle_again.idle and idle.runs == 4


# -- On the pages -------------------------------------------------------------------------


def test_the_summary_pages_its_runs_table(clock, make_job, work, client, auth):  # noqa: F811
    auth.login("viewer")
    job = make_job(units=0, more_now=False, rows_per_unit=1,  # each run moves a row
                   schedule={"kind": "interval", "every_minutes": 1})
    work()
    for _ in range(11):
        job = advance(clock, job, work)
    all_runs = runs(job)
    assert len(all_runs) == 12
    page = client.get(f"/jobs/{job.id}").get_data(as_text=True)
    shown = [run.id for run in all_runs[::-1][:10]]
    for run in all_runs:
        assert (f'id="run-{run.id}"' in page) == (run.id in shown)
    assert page.count('data-outcome="sleeping">Sleeping</span>') == 10
    older = client.get(f"/jobs/{job.id}/runs?before={shown[-1]}", headers={"HX-Request": "true"})
    body = older.get_data(as_text=True)
    assert [f'id="run-{run.id}"' in body for run in all_runs] == [True, True] + [False] * 10
    assert 'id="runs-newest"' in body and 'id="runs-older"' not in body
    assert f'runs_before={shown[-1]}' in page, "the older page has an address of its own"
    again = client.get(f"/jobs/{job.id}?runs_before={shown[-1]}").get_data(as_text=True)
    assert f'id="run-{all_runs[0].id}"' in again and f'id="run-{all_runs[5].id}"' not in again
    bad = client.get(f"/jobs/{job.id}/runs?before=%C2%B2%C2%B3", headers={"HX-Request": "true"})
    assert bad.status_code == 400 and "before" in bad.get_data(as_text=True)


def test_the_log_filtered_to_one_run(app, make_user, work, client, auth):
    auth.login("viewer")
    with WebhookReceiver(token="tok-runs-export-2718") as hook:
        job = export_job(make_user("operator"), hook, messages=30, batch_size=10)
        work()
        write_messages("signups", [OutMessage(f"x{n}", utcnow(), {"n": n})
                                   for n in range(5)], source="test")
        db.session.commit()
        job = fresh(job)
        lifecycle.wake(job, now=utcnow())
        db.session.commit()
        from portal.queues import enqueue
        enqueue(job)
        work()
    first, second = runs(job)
    assert (first.added, second.added) == (30, 5)
    page = client.get(f"/jobs/{job.id}?run={second.id}").get_data(as_text=True)
    assert "Sent 5 messages" in page and "Sent 10 messages" not in page
    assert f'name="run" value="{second.id}"' in page and 'id="log-all-runs"' in page
    view = client.get(f"/jobs/{job.id}/logs/view?run={first.id}&kind=synced",
                      headers={"HX-Request": "true"})
    body = view.get_data(as_text=True)
    assert body.count("Sent 10 messages") == 3 and "Sent 5 messages" not in body
    assert view.headers["HX-Push-Url"].endswith(f"?kind=synced&run={first.id}#job-logs-box")
    download = client.get(f"/jobs/{job.id}/logs.ndjson?run={second.id}")
    assert download.get_data(as_text=True).count('"synced"') == 1
    assert f'data-run-log="{first.id}"' in page, "each run links to its log"


def test_the_job_list_shows_the_last_run(clock, make_job, work, client, auth):  # noqa: F811
    auth.login("viewer")
    failing = make_job(script=["error"], units=1)
    done = make_job(units=1)
    never = make_job(units=1)
    never.status = "paused"
    db.session.commit()
    from tests.test_job_path import kinds
    work()
    assert kinds(fresh(never)) == ["created"]
    page = client.get("/jobs").get_data(as_text=True)
    row = {job.id: page.split(f'id="job-row-{job.id}"')[1].split("</tr>")[0]
           for job in (failing, done, never)}
    assert 'data-outcome="error">Error</span>' in row[failing.id]
    assert 'data-outcome="completed">Completed</span>' in row[done.id]
    assert " s</span>" in row[done.id], "with its duration"
    assert "run-outcome" not in row[never.id]


def test_an_import_under_way_shows_its_progress(client, auth, app):
    auth.login()
    job = create_import(client, auth)
    claiming = Runner(job.id)
    claimed, _ = claiming.claim()
    assert claiming.unit(claimed) == "more"
    live = client.get(f"/jobs/{job.id}/live", headers={"HX-Request": "true"})
    body = live.get_data(as_text=True)
    assert 'data-done="2" data-total="5"' in body and 'data-progress="40"' in body
    assert "2 of 5 rows" in body and " left" in body
    run_state = re.search(r"run=([^&\"]+)", body).group(1)  # what the next poll sends
    same = client.get(f"/jobs/{job.id}/live?run={run_state}", headers={"HX-Request": "true"})
    assert "runs-changed" not in same.headers.get("HX-Trigger", "")
    claiming.renew(claimed)
    assert claiming.unit(claimed) == "more"
    again = client.get(f"/jobs/{job.id}/live?run={run_state}", headers={"HX-Request": "true"})
    assert 'data-progress="80"' in again.get_data(as_text=True)
    assert "runs-changed" in again.headers.get("HX-Trigger", "")
