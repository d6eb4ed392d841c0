"""When a job runs: once, every N minutes, or on a cron expression in a timezone, with an
optional quiet window (no runs between two times of day). Plain functions over a dict
that is stored on the job; times in and out are aware datetimes."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from functools import cache
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from croniter import CroniterBadDateError, croniter

KINDS = {"once": "Runs once", "interval": "Every N minutes", "cron": "Cron expression"}

# The shortest time between two runs, for every cadence ("every N minutes" starts at 1).
MIN_INTERVAL = timedelta(minutes=1)
# A cron expression must fire at least twice within this time from when it is saved.
HORIZON = timedelta(days=5 * 365)
HORIZON_WORDS = "five years"
CHECKED_FIRINGS = 5  # consecutive firings checked against MIN_INTERVAL at save
# The nicknames of five-field expressions that cron itself knows; @reboot and croniter's
# own extensions (seconds, years, H for hashed and R for random values) are refused.
NICKNAMES = {"@yearly": "0 0 1 1 *", "@annually": "0 0 1 1 *", "@monthly": "0 0 1 * *",
             "@weekly": "0 0 * * 0", "@daily": "0 0 * * *", "@midnight": "0 0 * * *",
             "@hourly": "0 * * * *"}
_HASHED_OR_RANDOM = re.compile(r"(?<![a-z])[hr](?![a-z])", re.IGNORECASE)
_HHMM = re.compile(r"^([01][0-9]|2[0-3]):[0-5][0-9]$")

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
                 "e.g. 0 3 * * * for 03:00 every day; or @hourly, @daily, @weekly, "
                 "@monthly, @yearly. Runs are at least a minute apart."},
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


class ScheduleError(ValueError):
    """A stored schedule cannot give a next run; the message says why and what to do."""


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


@cache
def known_timezones() -> frozenset[str]:
    """The IANA time zone names this machine knows, and UTC. Read once: listing them walks
    the tz database on disk (about 10 ms), and workers ask for every job they run."""
    return frozenset(available_timezones()) | {"UTC"}


def problems(data: dict[str, Any], now: datetime | None = None) -> dict[str, str]:
    """Messages by field for what the JSON Schema cannot check itself."""
    errors: dict[str, str] = {}
    known_zone = data.get("timezone", "UTC") in known_timezones()
    if not known_zone:
        errors["timezone"] = "Unknown timezone; use a name such as UTC or Europe/Paris."
    if data.get("kind") == "cron":
        problem = cron_problem(str(data.get("cron", "")),
                               data.get("timezone", "UTC") if known_zone else "UTC",
                               now or datetime.now(UTC))
        if problem:
            errors["cron"] = problem
    if bool(data.get("quiet_start")) != bool(data.get("quiet_end")):
        missing = "quiet_end" if data.get("quiet_start") else "quiet_start"
        errors[missing] = "Give both ends of the quiet window, or neither."
    return errors


def cron_form_problem(expression: str) -> str | None:
    """Why `expression` is not a plain five-field cron expression (or a nickname of one),
    or None. Cheap: the worker checks it before every next run."""
    text = expression.strip()
    if text.startswith("@"):
        if text.lower() in NICKNAMES:
            return None
        return (f"“{text}” is not supported; use five fields (minute hour day month weekday) "
                f"or one of {', '.join(NICKNAMES)}.")
    fields = text.split()
    if len(fields) in (6, 7):
        return (f"Use five fields (minute hour day month weekday), not {len(fields)}: seconds "
                f"and years are not supported, and runs are at least "
                f"{MIN_INTERVAL.seconds // 60} minute apart.")
    if len(fields) != 5 or not croniter.is_valid(text):
        return "Not a valid cron expression (minute hour day month weekday)."
    if _HASHED_OR_RANDOM.search(text):
        return "H (hashed) and R (random) values are not supported; give the times as numbers."
    return None


def cron_problem(expression: str, timezone: str, now: datetime) -> str | None:
    """Why the expression cannot be saved, or None: its form, then at least two runs
    within HORIZON from `now`, each CHECKED_FIRINGS runs at least MIN_INTERVAL apart."""
    if problem := cron_form_problem(expression):
        return problem
    schedule = Schedule(kind="cron", cron=expression, timezone=timezone)
    firings: list[datetime] = []
    moment = now
    try:
        while len(firings) < CHECKED_FIRINGS and moment - now <= HORIZON:
            moment = _next_cron(schedule, moment)
            firings.append(moment)
    except ScheduleError:
        pass  # fewer firings than asked: judged below
    within = [moment for moment in firings if moment - now <= HORIZON]
    if len(within) < 2:
        return (f"This expression {'runs only once' if within else 'never runs'} in the "
                f"next {HORIZON_WORDS} (e.g. February 31st is a day that never comes); give "
                "one that runs at least twice in that time.")
    gaps = [later - earlier for earlier, later in zip(firings, firings[1:], strict=False)]
    if min(gaps) < MIN_INTERVAL:
        return f"Runs must be at least {MIN_INTERVAL.seconds // 60} minute apart."
    return None


_REDO = " Give the job a schedule that works (create it again from the wizard)."


def load(data: dict[str, Any] | None) -> Schedule:
    """The schedule stored on a job, for a worker: ScheduleError (with what to do) when an
    older database holds one that cannot work, instead of guessing (`from_dict` is for
    showing it)."""
    data = data or {}
    kind = data.get("kind", "once")
    if kind not in KINDS:
        raise ScheduleError(f"The schedule's cadence {kind!r} is unknown.{_REDO}")
    if data.get("timezone", "UTC") not in known_timezones():
        raise ScheduleError(f"The schedule's timezone {data.get('timezone')!r} is unknown."
                            f"{_REDO}")
    every = data.get("every_minutes", Schedule.every_minutes)
    bounds = SCHEMA["properties"]["every_minutes"]
    if kind == "interval" and (not isinstance(every, int) or isinstance(every, bool)
                               or not bounds["minimum"] <= every <= bounds["maximum"]):
        raise ScheduleError(f"The schedule's interval {every!r} is not a whole number of "
                            f"minutes from {bounds['minimum']} to {bounds['maximum']:,}."
                            f"{_REDO}")
    for name in ("quiet_start", "quiet_end"):
        if data.get(name) and not _HHMM.match(str(data[name])):
            raise ScheduleError(f"The quiet window's time {data[name]!r} is not HH:MM.{_REDO}")
    if kind == "cron" and (problem := cron_form_problem(str(data.get("cron", "")))):
        raise ScheduleError(f"The cron expression “{data.get('cron')}” cannot run: {problem}"
                            f"{_REDO}")
    return from_dict(data)


def _next_cron(schedule: Schedule, after: datetime) -> datetime:
    """The first cron time after `after`, in after's timezone; ScheduleError when the
    expression has none (or cannot be read)."""
    local_after = after.astimezone(schedule.zone)
    expression = NICKNAMES.get(schedule.cron.strip().lower(), schedule.cron)
    try:
        runs = croniter(expression, local_after)
        candidate = runs.get_next(datetime)
        while candidate.replace(tzinfo=None) <= local_after.replace(tzinfo=None):
            candidate = runs.get_next(datetime)
    except CroniterBadDateError:
        raise ScheduleError(f"The cron expression “{schedule.cron}” never fires again (e.g. "
                            f"February 31st is a day that never comes).{_REDO}") from None
    except Exception as exc:  # any other way croniter gives up: the job must not crash
        raise ScheduleError(f"The cron expression “{schedule.cron}” cannot run "
                            f"({type(exc).__name__}: {exc}).{_REDO}") from None
    return candidate.astimezone(after.tzinfo)


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
    a quiet window. Cron times repeated when clocks go back run once, not twice.
    ScheduleError when a cron expression has no next time."""
    if schedule.kind == "interval":
        candidate = after + timedelta(minutes=schedule.every_minutes)
    elif schedule.kind == "cron":
        candidate = _next_cron(schedule, after)
    else:
        return None
    return in_quiet(schedule, candidate) or candidate


def every(minutes: int) -> str:
    """An interval in words: "Every minute", "Every 15 minutes", "Every 2 hours"."""
    if minutes == 1:
        return "Every minute"
    if minutes == 60:
        return "Every hour"
    if minutes % 60 == 0:
        return f"Every {minutes // 60} hours"
    return f"Every {minutes} minutes"


def describe(schedule: Schedule) -> str:
    if schedule.kind == "interval":
        text = every(schedule.every_minutes)
    elif schedule.kind == "cron":
        text = f"Cron “{schedule.cron}” ({schedule.timezone})"
    else:
        text = "Runs once"
    if schedule.quiet:
        text += f"; quiet {schedule.quiet_start}–{schedule.quiet_end} ({schedule.timezone})"
    return text
