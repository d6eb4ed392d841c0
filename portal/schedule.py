"""When a job runs: once, every N minutes, or on a cron expression in a timezone, with an
optional quiet window (no runs between two times of day). Plain functions over a dict
that is stored on the job; times in and out are aware datetimes."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from croniter import croniter

KINDS = {"once": "Runs once", "interval": "Every N minutes", "cron": "Cron expression"}

SCHEMA: dict[str, Any] = {
    "type": "object",
    "x-order": ["kind", "every_minutes", "cron", "timezone", "quiet_start", "quiet_end"],
    "properties": {
        "kind": {"type": "string", "title": "Cadence", "enum": list(KINDS),
                 "x-enum-labels": list(KINDS.values()), "default": "once",
                 "description": "How often the job runs after its first run."},
        "every_minutes": {"type": "integer", "title": "Every (minutes)", "minimum": 1,
                          "maximum": 525600, "default": 60,
                          "description": "For “Every N minutes”."},
        "cron": {"type": "string", "title": "Cron expression", "default": "0 3 * * *",
                 "description": "For “Cron expression”: minute hour day month weekday, "
                 "e.g. 0 3 * * * for 03:00 every day."},
        "timezone": {"type": "string", "title": "Timezone", "default": "UTC",
                     "description": "The cron expression and the quiet window are read in "
                     "this timezone (e.g. Europe/Paris)."},
        "quiet_start": {"type": "string", "title": "Quiet from", "default": "",
                        "pattern": "^$|^([01][0-9]|2[0-3]):[0-5][0-9]$",
                        "x-pattern-message": "Use HH:MM (24-hour), or leave empty.",
                        "description": "Optional: no runs from this time of day (HH:MM)…"},
        "quiet_end": {"type": "string", "title": "Quiet until", "default": "",
                      "pattern": "^$|^([01][0-9]|2[0-3]):[0-5][0-9]$",
                      "x-pattern-message": "Use HH:MM (24-hour), or leave empty.",
                      "description": "…until this time of day; may wrap past midnight."},
    },
}


@dataclass(frozen=True)
class Schedule:
    kind: str = "once"
    every_minutes: int = 60
    cron: str = "0 3 * * *"
    timezone: str = "UTC"
    quiet_start: str = ""
    quiet_end: str = ""

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    @property
    def quiet(self) -> tuple[time, time] | None:
        if not (self.quiet_start and self.quiet_end) or self.quiet_start == self.quiet_end:
            return None
        return time.fromisoformat(self.quiet_start), time.fromisoformat(self.quiet_end)


def problems(data: dict[str, Any]) -> dict[str, str]:
    """Messages by field for what the JSON Schema cannot check itself."""
    errors: dict[str, str] = {}
    if data.get("timezone", "UTC") not in available_timezones() | {"UTC"}:
        errors["timezone"] = "Unknown timezone; use a name such as UTC or Europe/Paris."
    if data.get("kind") == "cron" and not croniter.is_valid(data.get("cron", "")):
        errors["cron"] = "Not a valid cron expression (minute hour day month weekday)."
    if bool(data.get("quiet_start")) != bool(data.get("quiet_end")):
        missing = "quiet_end" if data.get("quiet_start") else "quiet_start"
        errors[missing] = "Give both ends of the quiet window, or neither."
    return errors


def from_dict(data: dict[str, Any] | None) -> Schedule:
    """The schedule stored on a job (unknown keys ignored, missing ones defaulted)."""
    data = data or {}
    fields = {name: data[name] for name in Schedule.__dataclass_fields__ if name in data}
    try:
        schedule = Schedule(**fields)
        schedule.zone  # noqa: B018  (fails early on an unknown zone)
    except (TypeError, ZoneInfoNotFoundError, ValueError):
        return Schedule()
    return schedule


def in_quiet(schedule: Schedule, moment: datetime) -> datetime | None:
    """When the quiet window that holds `moment` ends, or None when it is not quiet."""
    window = schedule.quiet
    if window is None:
        return None
    start, end = window
    local = moment.astimezone(schedule.zone)
    now = local.time().replace(tzinfo=None)
    if start < end:
        quiet = start <= now < end
        end_day = local.date()
    else:  # wraps past midnight, e.g. 22:00-06:00
        quiet = now >= start or now < end
        end_day = local.date() + timedelta(days=1) if now >= start else local.date()
    if not quiet:
        return None
    return datetime.combine(end_day, end, tzinfo=schedule.zone).astimezone(moment.tzinfo)


def next_run(schedule: Schedule, after: datetime) -> datetime | None:
    """The next run after `after` per the cadence (None for a one-shot job), moved past
    a quiet window. Cron times repeated when clocks go back run once, not twice."""
    if schedule.kind == "interval":
        candidate = after + timedelta(minutes=schedule.every_minutes)
    elif schedule.kind == "cron":
        local_after = after.astimezone(schedule.zone)
        runs = croniter(schedule.cron, local_after)
        candidate = runs.get_next(datetime)
        while candidate.replace(tzinfo=None) <= local_after.replace(tzinfo=None):
            candidate = runs.get_next(datetime)
        candidate = candidate.astimezone(after.tzinfo)
    else:
        return None
    return in_quiet(schedule, candidate) or candidate


def describe(schedule: Schedule) -> str:
    if schedule.kind == "interval":
        text = f"Every {schedule.every_minutes} minutes"
    elif schedule.kind == "cron":
        text = f"Cron “{schedule.cron}” ({schedule.timezone})"
    else:
        text = "Runs once"
    if schedule.quiet:
        text += f"; quiet {schedule.quiet_start}–{schedule.quiet_end} ({schedule.timezone})"
    return text
