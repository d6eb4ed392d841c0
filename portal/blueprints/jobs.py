"""The job list and the job summary, with live status and logs."""

from __future__ import annotations

import io
import json
import time
from pathlib import Path

from flask import (
    Blueprint,
    Response,
    abort,
    current_app,
    flash,
    request,
    send_from_directory,
    stream_with_context,
    url_for,
)
from flask_login import current_user
from sqlalchemy import select
from sqlalchemy.orm import joinedload

import providers
from portal import (
    alerts,
    audiences,
    audit,
    htmx,
    lifecycle,
    membership,
    params,
    pollgate,
    schedule,
)
from portal import metrics as metrics_series
from portal.access import background, role_required
from portal.csvcells import SafeDictWriter
from portal.extensions import db
from portal.jobconfig import changes_context
from portal.jobs import (
    ACTIONS,
    JobBusy,
    JobFilter,
    LogFilter,
    can_edit,
    delete_job,
    delete_refusal,
    edit_job,
    iter_events,
    last_problem,
    last_runs,
    list_jobs,
    live_state,
    log_page,
    metrics,
    newest_event_id,
    newest_run,
    purge_at,
    retrying_count,
    run_progress,
    runs_page,
    set_keep,
    status_counts,
    tail_batch,
)
from portal.lifecycle import SETTLED, Event, IllegalTransition, RetryPolicy, Status, Trigger
from portal.models import Authorization, Job
from portal.models.types import utcnow
from portal.queues import waiting_reason
from portal.ui import human_label
from providers import CATALOG, get_provider
from providers.base import KINDS

LOGOS = Path(providers.__file__).parent / "logos"

bp = Blueprint("jobs", __name__, url_prefix="/jobs")

ACTION_TRIGGERS = {"pause": Trigger.PAUSE, "resume": Trigger.RESUME, "run-now": Trigger.RUN_NOW}
NOTICES = {"pause": "Paused.", "resume": "Resumed: the job runs now.",
           "run-now": "The job runs now."}
REFUSED = {"pause": "paused", "resume": "resumed", "run-now": "run now", "delete": "deleted"}
# What the status block shows of a job besides its row, read in the same query: the block
# is polled every second by every open summary.
LIVE_LOADS = (joinedload(Job.authorization), joinedload(Job.created_by),
              joinedload(Job.updated_by))


def get_job(job_id: int, *options) -> Job:
    """The job, or 404. `options`: loader options, such as LIVE_LOADS."""
    return db.get_or_404(Job, job_id, options=options,
                         description=f"There is no job #{job_id}.")


@bp.get("")
@role_required("viewer")
def index():
    """The job list: filters, search and sort in the URL, keyset pages, live status."""
    job_filter = JobFilter.from_args(request.args)
    jobs, next_cursor = list_jobs(job_filter, after=request.args.get("after", ""))
    context = {
        "jobs": jobs, "next_cursor": next_cursor, "filter": job_filter,
        "last_run_of": last_runs([job.id for job in jobs]),
        "counts": status_counts(job_filter), "statuses": list(Status),
        "retrying": retrying_count(job_filter),
        "paged": bool(request.args.get("after")),
        "menus": {  # (value, label) pairs of the filter menus
            "type": [(kind, kind.capitalize()) for kind in KINDS],
            "provider": sorted(((p.key, p.name) for p in CATALOG.values()),
                               key=lambda pair: pair[1]),
            "authorization": db.session.execute(
                select(Authorization.id, Authorization.label)
                .order_by(Authorization.label)).all(),
        },
        "can_act": current_user.has_role("operator"),
    }
    return htmx.render("jobs/index.html", "jobs/_table.html", **context)


@bp.get("/statuses")
@background  # polled by the page: not the person's activity
@role_required("viewer")
def statuses():
    """Fresh status cells for the listed rows that can still change; polled by the list
    while any can, and stopped (286) once none can."""
    ids = params.ids_of(request.args.get("ids", "").split(","), limit=200)
    jobs = db.session.scalars(select(Job).where(Job.id.in_(ids))).all() if ids else []
    moving = [job.id for job in jobs if job.status not in SETTLED]
    return htmx.fragment("jobs/_status_cells.html", jobs=jobs, moving=moving,
                         stop_polling=not moving, last_run_of=last_runs(ids))


def _bulk_request() -> tuple[str, list[Job]]:
    """The bulk action asked for and the selected jobs (400 for an unknown action)."""
    action = request.form.get("action", "")
    if action not in BULK:
        abort(400, description="Choose pause, resume, run now or delete.")
    ids = params.ids_of(request.form.getlist("ids"), limit=500)
    jobs = db.session.scalars(select(Job).where(Job.id.in_(ids)).order_by(Job.id))
    return action, list(jobs)


BULK = {"pause": "Pause", "resume": "Resume", "run-now": "Run now", "delete": "Delete"}


def _refusal(job: Job, action: str) -> str:
    """Why the action cannot be done to this job as it is now ("" when it can)."""
    if action == "delete":
        return delete_refusal(job)
    if lifecycle.can(job, ACTION_TRIGGERS[action]):
        return ""
    return f"a {job.status} job cannot be {REFUSED[action]}"


@bp.post("/bulk/confirm")
@role_required("operator")
def bulk_confirm():
    """Step one of a bulk action: say which of the selected jobs it will be done to, which
    it cannot be done to and why, and ask (only for the first)."""
    action, selected = _bulk_request()
    jobs, skipped = [], []
    for job in selected:
        if reason := _refusal(job, action):
            skipped.append((job, reason))
        else:
            jobs.append(job)
    return htmx.fragment("jobs/_bulk.html", action=action, label=BULK[action], jobs=jobs,
                         skipped=skipped, selected=len(selected), refused=REFUSED[action],
                         results=None)


@bp.get("/bulk/cancel")
@role_required("operator")
def bulk_cancel():
    return htmx.fragment("jobs/_empty.html")


@bp.post("/bulk")
@role_required("operator")
def bulk():
    """Step two: do it to each job and report each job's result."""
    action, jobs = _bulk_request()
    results = []
    for job in jobs:
        name = job.name
        try:
            if action == "delete":
                delete_job(job, by=current_user)
            else:
                ACTIONS[action](job, by=current_user)
            results.append((name, True, "done"))
        except IllegalTransition:
            db.session.rollback()
            results.append((name, False, f"a {job.status} job cannot be {REFUSED[action]}"))
        except JobBusy as exc:
            results.append((name, False, str(exc)))
    response = htmx.fragment("jobs/_bulk.html", action=action, label=BULK[action], jobs=[],
                             results=results)
    response.headers["HX-Trigger"] = "jobs-changed"
    return response


def _marker(job_id: int) -> str:
    """The fingerprint of the job's status block for this viewer, now ("" for no job)."""
    state = live_state(db.session.connection(), job_id, current_user.id, time.time())
    return state.marker if state else ""


def _live_context(job: Job, notice: str = "", marker: str | None = None) -> dict:
    # The fingerprint first: the block drawn below is then at least as new as it, so a
    # poll holding it never misses a change (portal/pollgate.py answers "nothing new").
    marker = _marker(job.id) if marker is None else marker
    now = utcnow()
    purge_on = purge_at(job, current_app.config["PORTAL_PURGE_DAYS"])
    held = job.lease_until is not None and job.lease_until > now
    run = newest_run(job)
    totals = metrics(job)
    return {
        "job": job,
        "metrics": totals,
        "totals": "{added}-{removed}-{omitted}".format(**totals),
        "progress": run_progress(run, now),
        "run_state": f"{run.id}-{run.outcome}-{run.units}-{run.runs}" if run else "",
        "settled": job.status in SETTLED,
        "cadence": schedule.describe(schedule.from_dict(job.schedule)),
        "retry": RetryPolicy.of(job).describe(),
        "problem": last_problem(job),
        "purge_on": purge_on,
        "purge_days_left": max((purge_on - now).days, 0) if purge_on else None,
        "waiting": waiting_reason(job) if job.status == Status.RUNNING and not held else "",
        "finishing": job.status == Status.PAUSED and held,
        "actions": ([name for name, trigger in ACTION_TRIGGERS.items()
                     if lifecycle.can(job, trigger)]
                    + ([] if delete_refusal(job) else ["delete"])
                    ) if current_user.has_role("operator") else [],
        "notice": notice,
        "can_keep": can_edit(job, current_user),
        "marker": marker,
    }


@bp.get("/<int:job_id>")
@role_required("viewer")
def summary(job_id: int):
    """The job summary: header, metrics, configuration and logs."""
    job = get_job(job_id)
    context = {**_live_context(job), **_logs_context(job), **_metrics_context(job),
               **_runs_context(job, params.id_arg(request.args, "runs_before", strict=False))}
    return htmx.render("jobs/summary.html", **context, can_edit=can_edit(job, current_user),
                       history=audit.entries_for("job", job.id, limit=20),
                       alert_rules=alerts.rules_covering(job), **changes_context(job, None))


def _runs_context(job: Job, before: int | None) -> dict:
    runs, older = runs_page(job, before)
    return {"runs": runs, "older_runs": older, "runs_before": before}


@bp.get("/<int:job_id>/runs")
@role_required("viewer")
def runs(job_id: int):
    """A page of the Runs table (?before= a run id: the page of older runs)."""
    job = get_job(job_id)
    return htmx.fragment("jobs/_runs.html", job=job,
                         **_runs_context(job, params.id_arg(request.args, "before")))


def _logs_context(job: Job) -> dict:
    log_filter = LogFilter.from_args(request.args)
    # The newest id first, then the page up to it: the live tail goes on from that id, so
    # an event written in between is shown by its first poll, not passed over.
    newest = newest_event_id(job)
    before = params.id_arg(request.args, "before")
    events, older = log_page(job, log_filter, newest + 1 if before is None else before)
    return {"job": job, "events": events, "older": older, "log_filter": log_filter,
            "last_event_id": newest,
            "settled": job.status in SETTLED,
            "event_kinds": [(kind, human_label(kind)) for kind in Event]}


@bp.get("/<int:job_id>/metrics")
@role_required("viewer")
def metrics_chart(job_id: int):
    """The metrics chart for a time frame (24h, 7d, 30d, 90d)."""
    job = get_job(job_id)
    frame = request.args.get("frame", metrics_series.DEFAULT_FRAME)
    if frame not in metrics_series.FRAMES:
        abort(404, description="Choose a time frame of 24h, 7d, 30d or 90d.")
    return htmx.fragment("jobs/_metrics.html", job=job, **_metrics_context(job, frame))


def _metrics_context(job: Job, frame: str = "") -> dict:
    frame = frame or metrics_series.DEFAULT_FRAME
    slug = (job.config or {}).get("audience") if job.kind == "export" else None
    exported = None
    if isinstance(slug, str):
        exported = {"slug": slug, "audience": audiences.by_slug(slug),
                    "members": membership.exported_count(job.id)}
    return {"chart": metrics_series.series(job.id, frame, utcnow()),
            "frames": metrics_series.FRAME_CHOICES, "exported": exported}


@bp.get("/<int:job_id>/logs/view")
@role_required("viewer")
def log_view(job_id: int):
    """The logs box with a filter (kind, text) applied: the newest page and a live tail.
    The summary's address gets the filter, so a reload or a shared link keeps it."""
    context = _logs_context(get_job(job_id))
    filters = context["log_filter"].args()
    return htmx.push_url(htmx.fragment("jobs/_logs.html", **context),
                         url_for("jobs.summary", job_id=job_id, **filters,
                                 _anchor="job-logs-box" if filters else None))


@bp.get("/<int:job_id>/logs/older")
@role_required("viewer")
def log_older(job_id: int):
    """The next page back in the (filtered) log, appended under what is shown."""
    return htmx.fragment("jobs/_log_older.html", **_logs_context(get_job(job_id)))


@bp.get("/<int:job_id>/logs.<any(ndjson, csv):fmt>")
@role_required("viewer")
def log_download(job_id: int, fmt: str):
    """The whole (filtered) log as NDJSON or CSV, streamed newest first."""
    job = get_job(job_id)
    log_filter = LogFilter.from_args(request.args)
    rows = (_log_record(event) for event in iter_events(job, log_filter))
    if fmt == "ndjson":
        body = (json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
        mimetype = "application/x-ndjson"
    else:
        body = _csv_lines(rows)
        mimetype = "text/csv"
    response = Response(stream_with_context(body), mimetype=mimetype)
    response.headers["Content-Disposition"] = (
        f'attachment; filename="job-{job.id}-logs.{fmt}"')
    return response


LOG_COLUMNS = ("id", "job_id", "timestamp", "event", "level", "code", "message", "added",
               "removed", "omitted", "user_email")


def _log_record(event) -> dict:
    context = event.context or {}
    return {"id": event.id, "job_id": event.job_id, "timestamp": event.at.isoformat(),
            "event": event.kind, "level": event.level, "code": event.code,
            "message": event.message, "added": int(context.get("added", 0)),
            "removed": int(context.get("removed", 0)),
            "omitted": int(context.get("omitted", 0)),
            "user_email": context.get("user_email", "")}


def _csv_lines(rows):
    buffer = io.StringIO()
    writer = SafeDictWriter(buffer, fieldnames=LOG_COLUMNS)
    writer.writeheader()
    for row in rows:
        writer.writerow(row)
        if buffer.tell() > 64_000:
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue()


@bp.route("/<int:job_id>/<any(name, description):field>", methods=["GET", "POST"])
@role_required("viewer")
def edit_field(job_id: int, field: str):
    """Inline edit of the name or description: GET ?edit=1 gives the input, GET gives the
    text back (Escape, Cancel), POST saves (Enter for a name; Save or Ctrl+Enter for a
    description). Admins edit any job, operators their own."""
    job = get_job(job_id)
    editable = can_edit(job, current_user)
    wants_edit = request.method == "POST" or request.args.get("edit") == "1"
    if wants_edit and not editable:
        abort(403, description="Only admins, and the operator who created the job, can "
                               "change its name and description.")
    errors: dict[str, str] = {}
    value = getattr(job, field)
    if request.method == "POST":
        value = request.form.get("value", "")
        errors = edit_job(job, field=field, value=value, by=current_user)
        if errors:
            db.session.rollback()
    editing = bool(errors) or (request.method == "GET" and wants_edit)
    return htmx.fragment(f"jobs/_edit_{field}.html", job=job, editing=editing, value=value,
                         error=next(iter(errors.values()), None), can_edit=editable)


@bp.post("/<int:job_id>/delete")
@role_required("operator")
def delete(job_id: int):
    job = get_job(job_id)
    try:
        delete_job(job, by=current_user)
    except JobBusy as exc:
        notice = f"Not deleted: {exc}."
        if not htmx.is_htmx():
            flash(notice, "warning")
            return htmx.redirect(url_for("jobs.summary", job_id=job.id))
        return htmx.fragment("jobs/_live.html", **_live_context(job, notice))
    flash(f"Deleted the job “{job.name}” and its log.", "info")
    return htmx.redirect(url_for("jobs.index"))


@bp.post("/<int:job_id>/keep")
@role_required("operator")
def keep(job_id: int):
    """The Keep switch: keep=1 keeps the job from the purge, no keep lets the purge have it."""
    job = get_job(job_id)
    if not can_edit(job, current_user):
        abort(403, description="Only admins, and the operator who created the job, can "
                               "keep it from the purge.")
    set_keep(job, request.form.get("keep") == "1", by=current_user)
    if not htmx.is_htmx():
        return htmx.redirect(url_for("jobs.summary", job_id=job.id))
    return htmx.fragment("jobs/_live.html", **_live_context(job))


@bp.get("/<int:job_id>/live")
@background  # polled by the page: not the person's activity
@role_required("viewer")
def live(job_id: int):
    """The status block; polled while the job can still change by itself."""
    marker = _marker(job_id)  # before the job is read (see _live_context)
    context = _live_context(get_job(job_id, *LIVE_LOADS), marker=marker)
    response = htmx.fragment("jobs/_live.html", stop_polling=context["settled"], **context)
    # The poll carries the totals and the newest run's state its page shows; when they
    # moved, the metrics chart and the Runs table reload themselves.
    shown = {"totals": context["totals"], "run": context["run_state"]}
    if hx_trigger := pollgate.triggers(request.args, shown):
        response.headers["HX-Trigger"] = hx_trigger
    if marker:  # the next viewers shown the same block get it from pollgate
        pollgate.remember(marker, response, shown)
    return response


@bp.get("/<int:job_id>/logs")
@background  # polled by the page: not the person's activity
@role_required("viewer")
def logs(job_id: int):
    """Log rows newer than ?after= (within the filter), with the poller for the next."""
    job = get_job(job_id)
    settled = job.status in SETTLED  # read before the events: nothing can follow them then
    after = params.int_arg(request.args, "after", default=0, low=0)
    log_filter = LogFilter.from_args(request.args)
    events, go_on_from, more = tail_batch(job, after, log_filter)
    return htmx.fragment(
        "jobs/_log_poll.html", job=job, events=events, settled=settled and not more,
        last_event_id=go_on_from, more=more, log_filter=log_filter,
    )


@bp.get("/providers/<provider_key>/logo.svg")
def provider_logo(provider_key: str):
    """A provider's logo, from providers/logos/."""
    provider = get_provider(provider_key)
    if provider is None:
        abort(404)
    return send_from_directory(LOGOS, provider.logo, mimetype="image/svg+xml",
                               max_age=3600)


@bp.post("/<int:job_id>/<any(pause, resume, 'run-now'):action>")
@role_required("operator")
def act(job_id: int, action: str):
    """Pause, resume or run a job now; answers with the refreshed status block."""
    job = get_job(job_id)
    was_settled = job.status in SETTLED
    last_event = newest_event_id(job)
    try:
        ACTIONS[action](job, by=current_user)
        notice = NOTICES[action]
    except IllegalTransition:
        db.session.rollback()
        notice = f"Nothing changed: a {job.status} job cannot be {REFUSED[action]}."
    if not htmx.is_htmx():
        flash(notice, "info")
        return htmx.redirect(url_for("jobs.summary", job_id=job.id))
    context = _live_context(job, notice)
    # The log poller stopped when the job settled; start it again from where it stopped,
    # with the log filter in force (the buttons send the filter form along).
    restart_logs = was_settled and not context["settled"]
    return htmx.fragment("jobs/_live.html", restart_logs=restart_logs, last_event_id=last_event,
                         log_filter=LogFilter.from_args(request.form), **context)
