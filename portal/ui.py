"""Template helpers: the one place that formats statuses, times and navigation."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from flask import Flask, has_request_context, request, url_for
from flask_login import current_user
from markupsafe import Markup, escape

from portal.jobs import RETRYING
from portal.models.types import utcnow
from portal.params import parse_int
from portal.schedule import known_timezones
from portal.schemaform import constraint_hint, ordered_fields, secret_slots
from providers import get_job_type, get_provider

# Colour per job status: a `text-bg-<style>` class of portal.css, where each style is one
# of the portal's status colours; every status badge uses this. "retrying" is no stored
# status but how a sleeping job in an error streak shows: amber, so a job that keeps
# failing never looks like a healthy one. The colours mean the same wherever they show:
# run outcomes, log levels and an authorization's health use the same styles.
STATUS_STYLES = {
    "running": "running",
    "sleeping": "sleeping",
    RETRYING: "retrying",
    "failed": "failed",
    "paused": "paused",
    "completed": "completed",
}
LEVEL_STYLES = {"error": "failed", "warning": "retrying", "info": "idle"}
# A log event that says a job reached a state wears that state's colour; others their
# level's (event_style).
EVENT_STYLES = {"started": "running", "sleeping": "sleeping", "failed": "failed",
                "paused": "paused", "completed": "completed"}
HEALTH_STYLES = {"healthy": "completed", "unhealthy": "failed", "unknown": "idle"}
# Colour per run outcome (JobRun.outcome; None: under way).
OUTCOME_STYLES = {
    None: "running",
    "sleeping": "sleeping",
    "idle": "idle",
    "completed": "completed",
    "error": "retrying",
    "failed": "failed",
    "paused": "paused",
    "held_back": "sleeping",
    "lost": "failed",
}

# Human words for internal names that reach the screen: log event kinds, audit actions and
# object types. A name not listed reads as itself with spaces ("signed_out" → "Signed out");
# list the ones that would read badly that way.
LABELS = {
    "kept": "Kept from the purge",
    "unkept": "No longer kept",
    "run_now": "Run now",
    "config_changed": "Configuration changed",
    "held_back": "Held back",
    "lost": "Worker lost",
    "sign_in_failed": "Sign-in failed",
    "sign_in_throttled": "Sign-in throttled",
    "signed_in": "Signed in",
    "signed_out": "Signed out",
    "user_id": "User ID",
}


def human_label(name: str | None) -> str:
    """An internal name (`run_now`, `sign_in_failed`) as words for the screen."""
    if not name:
        return ""
    return LABELS.get(name) or name.replace("_", " ").capitalize()


NAVIGATION = (
    ("jobs.index", "Jobs", "viewer"),
    ("data.index", "Data", "viewer"),
    ("vault.index", "Vault", "viewer"),
    ("alerts.index", "Alerts", "viewer"),
    ("admin.index", "Admin", "admin"),
    ("admin.operations_page", "Operations", "admin"),
)
# The views each navigation link stands for, when not all of its blueprint's: the link
# whose prefix matches the current view longest is the active one.
NAVIGATION_PREFIXES = {"admin.operations_page": "admin.operations"}


def active_navigation(current: str | None, endpoints: list[str]) -> str | None:
    """Which of the navigation `endpoints` the view `current` belongs to."""
    if not current:
        return None
    prefixes = {endpoint: NAVIGATION_PREFIXES.get(endpoint, endpoint.split(".")[0] + ".")
                for endpoint in endpoints}
    matching = [endpoint for endpoint, prefix in prefixes.items() if current.startswith(prefix)]
    return max(matching, key=lambda endpoint: len(prefixes[endpoint]), default=None)


def operations_banner():
    """The warning on every signed-in page when no worker or dispatcher runs (or Redis is
    unreachable); None otherwise, and for someone not signed in."""
    if not (has_request_context() and current_user.is_authenticated):
        return None
    from portal import operations

    return operations.banner() or None


def event_style(kind: str, level: str) -> str:
    """The colour of a log event's badge: its state's, else its level's."""
    return EVENT_STYLES.get(kind) or LEVEL_STYLES.get(level, "idle")


def display_status(status: str, error_count: int = 0) -> str:
    """The state a job shows: its stored status, or "retrying" for a job sleeping between
    the retries of an error streak."""
    return RETRYING if status == "sleeping" and error_count else status


def status_label(status: str, error_count: int = 0) -> str:
    """The words of a job's status badge: "Retrying (3 errors in a row)" or "Sleeping"."""
    if display_status(status, error_count) == RETRYING:
        return f"Retrying ({error_count} error{'' if error_count == 1 else 's'} in a row)"
    return status.capitalize()


def format_number(value: Any) -> str:
    """A count as the portal writes every count: 3,000 (a blank or missing one as 0)."""
    try:
        return f"{int(value or 0):,}"
    except (TypeError, ValueError):
        return str(value)


def format_duration(value: timedelta | float | None) -> str:
    """A duration as people say it: "45 s", "3 min 20 s", "2 h 5 min" ("—" when none)."""
    if value is None:
        return "—"
    seconds = int(round(value.total_seconds() if isinstance(value, timedelta) else value))
    if seconds < 60:
        return f"{max(seconds, 0)} s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {seconds} s" if seconds else f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    return f"{hours:,} h {minutes} min" if minutes else f"{hours:,} h"


def user_timezone() -> str:
    """The IANA name of the zone the signed-in person reads times in ("UTC" without one, or
    when the stored name is no longer known). Looked up once a request: a page of times
    asks for it on every row (the settings page redirects after a change)."""
    if not has_request_context():
        return "UTC"
    name = request.environ.get(_ZONE_KEY)
    if name is None:
        name = "UTC"
        if current_user.is_authenticated:
            name = getattr(current_user, "timezone", None) or "UTC"
        name = request.environ[_ZONE_KEY] = name if name in known_timezones() else "UTC"
    return name


_ZONE_KEY = "portal.user_timezone"


def format_time(value: datetime | None, zone: str | None = None) -> str:
    """An exact time in the person's zone, the zone named: "2026-11-29 14:05:03 UTC", or
    "2026-11-29 15:05:03 Europe/Paris (UTC+01:00)"."""
    if not value:
        return "—"
    zone = zone or user_timezone()
    if zone == "UTC":
        return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    local = value.astimezone(ZoneInfo(zone))
    offset = local.strftime("%z")
    return f"{local:%Y-%m-%d %H:%M:%S} {zone} (UTC{offset[:3]}:{offset[3:]})"


MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def relative_time(value: datetime, now: datetime, zone: str = "UTC") -> str:
    """A time as a table shows it, from `now`: "just now", "3 min ago", "in 5 min",
    "2 h ago", "yesterday 14:05", "tomorrow 09:00", "27 Nov 14:05", "27 Nov 2025".
    Days are the person's calendar days. portal.js (relativeTime) words it the same way
    when it brings the text up to date in an open page: change both together."""
    seconds = (value - now).total_seconds()
    ahead = seconds > 0
    distance = abs(seconds)
    if distance < 45:
        return "just now"
    minutes = max(1, int(distance / 60 + 0.5))  # rounds halves up, as Math.round in portal.js
    if minutes < 60:
        return f"in {minutes} min" if ahead else f"{minutes} min ago"
    tz = ZoneInfo(zone)
    local, today = value.astimezone(tz), now.astimezone(tz).date()
    days = (local.date() - today).days
    if days == 0:
        hours = int(distance // 3600)
        return f"in {hours} h" if ahead else f"{hours} h ago"
    if days in (-1, 1):
        return f"{'tomorrow' if ahead else 'yesterday'} {local:%H:%M}"
    day = f"{local.day} {MONTHS[local.month - 1]}"
    return f"{day} {local:%H:%M}" if local.year == today.year else f"{day} {local.year}"


def time_tag(value: datetime | None) -> Markup:
    """The one way a table shows a time: relative words, the exact time in the person's
    zone on hover, the UTC instant in `datetime` (portal.js keeps the words true)."""
    if not value:
        return Markup("—")
    zone = user_timezone()
    instant = value.astimezone(UTC).replace(microsecond=0)
    return Markup(f'<time class="when" datetime="{instant:%Y-%m-%dT%H:%M:%SZ}" '
                  f'title="{escape(format_time(value, zone))}">'
                  f'{escape(relative_time(value, utcnow(), zone))}</time>')


def message_source(source: str | None) -> Markup:
    """Where a message came from: "job:12" as a link to job 12, anything else ("api") as
    text."""
    kind, _, raw = (source or "").partition(":")
    job_id = parse_int(raw) if kind == "job" else None
    if job_id is None:
        return Markup("{}").format(source or "—")
    return Markup('<a href="{}">Job {}</a>').format(
        url_for("jobs.summary", job_id=job_id), job_id)


def pretty_json(value: Any) -> str:
    return json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False)


def redact_secrets(schema: dict[str, Any], config: dict[str, Any]) -> dict[str, Any]:
    """A configuration for display: fields the schema marks secret (writeOnly) show as set,
    never their value; nested objects too."""
    shown = json.loads(json.dumps(config or {}))
    for _, holder, name in secret_slots(schema, shown):
        if holder.get(name):
            holder[name] = "•••••• (set)"
    return shown


def redacted_config(job: Any) -> dict[str, Any]:
    """A job's configuration for display, secrets hidden."""
    found = get_job_type(job.provider, job.job_type)
    return redact_secrets(found[1].config_schema if found else {}, job.config)


def format_timestamp(value: float | int | None) -> str:
    """A Unix timestamp (an OAuth token's expires_at) as a time."""
    return format_time(datetime.fromtimestamp(float(value), UTC)) if value else "—"


def method_name(provider_key: str, method_key: str) -> str:
    provider = get_provider(provider_key)
    method = provider.auth_method(method_key) if provider else None
    return method.name if method else method_key


def provider_name(key: str) -> str:
    provider = get_provider(key)
    return provider.name if provider else key


def job_type_name(provider_key: str, job_type_key: str) -> str:
    found = get_job_type(provider_key, job_type_key)
    return found[1].name if found else job_type_key


def register(app: Flask) -> None:
    app.jinja_env.filters["time"] = format_time
    app.jinja_env.filters["when"] = time_tag
    app.jinja_env.filters["source"] = message_source
    app.jinja_env.filters["pretty_json"] = pretty_json
    app.jinja_env.filters["timestamp"] = format_timestamp
    app.jinja_env.filters["label"] = human_label
    app.jinja_env.filters["number"] = format_number
    app.jinja_env.filters["duration"] = format_duration
    app.jinja_env.globals.update(
        STATUS_STYLES=STATUS_STYLES,
        display_status=display_status,
        status_label=status_label,
        LEVEL_STYLES=LEVEL_STYLES,
        event_style=event_style,
        HEALTH_STYLES=HEALTH_STYLES,
        OUTCOME_STYLES=OUTCOME_STYLES,
        method_name=method_name,
        redacted_config=redacted_config,
        ordered_fields=ordered_fields,
        constraint_hint=constraint_hint,
        provider_name=provider_name,
        job_type_name=job_type_name,
        user_timezone=user_timezone,
        operations_banner=operations_banner,
    )

    @app.context_processor
    def navigation() -> dict[str, Any]:
        if not current_user.is_authenticated:
            return {"navigation": [], "navigation_active": None}
        links = [(endpoint, label) for endpoint, label, role in NAVIGATION
                 if current_user.has_role(role)]
        return {"navigation": links, "navigation_active": active_navigation(
            request.endpoint, [endpoint for endpoint, _ in links])}
