"""The job list and the job summary, with live status and logs."""

from __future__ import annotations

from pathlib import Path

from flask import Blueprint, abort, current_app, flash, request, send_from_directory, url_for
from flask_login import current_user
from sqlalchemy import func, select

import providers
from portal import htmx, lifecycle, schedule
from portal.access import role_required
from portal.extensions import db
from portal.jobs import ACTIONS, events_after, metrics, purge_at
from portal.lifecycle import SETTLED, IllegalTransition, RetryPolicy, Status, Trigger
from portal.models import Job
from portal.models.types import utcnow
from portal.queues import waiting_reason
from providers import get_provider

LOGOS = Path(providers.__file__).parent / "logos"

bp = Blueprint("jobs", __name__, url_prefix="/jobs")

ACTION_TRIGGERS = {"pause": Trigger.PAUSE, "resume": Trigger.RESUME, "run-now": Trigger.RUN_NOW}
NOTICES = {"pause": "Paused.", "resume": "Resumed: the job runs now.",
           "run-now": "The job runs now."}
REFUSED = {"pause": "paused", "resume": "resumed", "run-now": "run now"}


def get_job(job_id: int) -> Job:
    """The job, or 404."""
    job = db.session.get(Job, job_id)
    if job is None:
        abort(404, description=f"There is no job #{job_id}.")
    return job


@bp.get("")
@role_required("viewer")
def index():
    """The job list, newest first, optionally filtered by status."""
    wanted = request.args.get("status", "")
    query = select(Job).order_by(Job.created_at.desc(), Job.id.desc()).limit(200)
    if wanted in set(Status):
        query = query.where(Job.status == wanted)
    else:
        wanted = ""
    counts = dict(db.session.execute(select(Job.status, func.count()).group_by(Job.status)).all())
    return htmx.render(
        "jobs/index.html", "jobs/_table.html",
        jobs=db.session.scalars(query).all(), wanted=wanted, counts=counts, statuses=list(Status),
    )


def _live_context(job: Job, notice: str = "") -> dict:
    now = utcnow()
    purge_on = purge_at(job, current_app.config["PORTAL_PURGE_DAYS"])
    held = job.lease_until is not None and job.lease_until > now
    return {
        "job": job,
        "metrics": metrics(job),
        "settled": job.status in SETTLED,
        "cadence": schedule.describe(schedule.from_dict(job.schedule)),
        "retry": RetryPolicy.of(job).describe(),
        "purge_on": purge_on,
        "purge_days_left": max((purge_on - now).days, 0) if purge_on else None,
        "waiting": waiting_reason(job) if job.status == Status.RUNNING and not held else "",
        "finishing": job.status == Status.PAUSED and held,
        "actions": [name for name, trigger in ACTION_TRIGGERS.items()
                    if lifecycle.can(job, trigger)] if current_user.has_role("operator") else [],
        "notice": notice,
    }


@bp.get("/<int:job_id>")
@role_required("viewer")
def summary(job_id: int):
    """The job summary: header, metrics, configuration and logs."""
    job = get_job(job_id)
    events = events_after(job)
    return htmx.render(
        "jobs/summary.html", **_live_context(job), events=events,
        last_event_id=events[0].id if events else 0,
    )


@bp.get("/<int:job_id>/live")
@role_required("viewer")
def live(job_id: int):
    """The status block; polled while the job can still change by itself."""
    context = _live_context(get_job(job_id))
    return htmx.fragment("jobs/_live.html", stop_polling=context["settled"], **context)


@bp.get("/<int:job_id>/logs")
@role_required("viewer")
def logs(job_id: int):
    """Log rows newer than ?after=, with the poller that asks for the next ones."""
    job = get_job(job_id)
    settled = job.status in SETTLED  # read before the events: nothing can follow them then
    after = request.args.get("after", 0, type=int)
    events = events_after(job, after)
    return htmx.fragment(
        "jobs/_log_poll.html", job=job, events=events, settled=settled,
        last_event_id=events[0].id if events else after,
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
    last_event = max((e.id for e in events_after(job, 0, 1)), default=0)
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
    # The log poller stopped when the job settled; start it again from where it stopped.
    restart_logs = was_settled and not context["settled"]
    return htmx.fragment("jobs/_live.html", restart_logs=restart_logs, last_event_id=last_event,
                         **context)
