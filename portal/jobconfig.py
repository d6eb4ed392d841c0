"""The versions of a job's configuration: what an edit may change (configuration,
authorization, schedule, retries, name, description), the difference between two states
field by field with the schema's titles, and the version rows that keep it.

A secret field (writeOnly in the schema) is compared by its sealed value and only ever
named as changed: neither its plain text nor its ciphertext goes into a difference. No
request objects here.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import func, select

from portal import schedule
from portal.extensions import db
from portal.lifecycle import RetryPolicy
from portal.models import Authorization, Draft, Job, JobConfigVersion, Upload, User
from portal.models.types import utcnow
from portal.schemaform import ordered_fields, secret_paths

SHOWN_LIMIT = 300  # characters of a value kept in a difference


@dataclass(frozen=True)
class Settings:
    """What an edit may change, as a job or an edit draft holds it (secrets sealed)."""

    authorization_id: int | None
    config: dict[str, Any]
    schedule: dict[str, Any]
    retry_policy: dict[str, Any]
    name: str
    description: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, holder: Job | Draft) -> Settings:
        return cls(holder.authorization_id, dict(holder.config or {}),
                   dict(holder.schedule or {}), dict(holder.retry_policy or {}),
                   holder.name or "", holder.description or "")


def _empty(value: Any) -> bool:
    """A value that says nothing: missing, blank, an empty list or object."""
    return value is None or value == "" or value == [] or value == {}


def _shown(value: Any) -> str:
    """A value as the Changes list shows it."""
    if _empty(value):
        text = "—"
    elif isinstance(value, bool):
        text = "Yes" if value else "No"
    elif isinstance(value, list):
        text = ", ".join(str(item) for item in value)
    elif isinstance(value, dict):
        text = json.dumps(value, sort_keys=True, ensure_ascii=False)
    else:
        text = str(value)
    return text if len(text) <= SHOWN_LIMIT else text[:SHOWN_LIMIT - 1] + "…"


def _authorization_shown(authorization_id: int | None) -> str:
    if authorization_id is None:
        return "None"
    found = db.session.get(Authorization, authorization_id)
    return f"{found.label} (#{authorization_id})" if found else f"#{authorization_id}"


def _upload_shown(upload_id: Any) -> str:
    found = db.session.get(Upload, upload_id) if isinstance(upload_id, int) else None
    return f"{found.filename} (#{upload_id})" if found else _shown(upload_id)


def _config_changes(schema: dict[str, Any], before: dict[str, Any], after: dict[str, Any],
                    secrets: set[str], prefix: str = "", title: str = "") -> list[dict]:
    changes: list[dict] = []
    known = [name for name, _ in ordered_fields(schema)]
    extra = sorted((set(before) | set(after)) - set(known))  # kept by an edit, not in the form
    props = schema.get("properties") or {}
    for name in known + extra:
        prop = props.get(name, {})
        path, label = prefix + name, title + str(prop.get("title") or name)
        old, new = before.get(name), after.get(name)
        if path in secrets:
            if old != new:  # sealed values: a kept secret is the very same token
                changes.append({"field": path, "label": label, "secret": True})
            continue
        if prop.get("type") == "object" and prop.get("properties"):
            changes += _config_changes(prop, old if isinstance(old, dict) else {},
                                       new if isinstance(new, dict) else {}, secrets,
                                       f"{path}.", f"{label} › ")
            continue
        if old == new or (_empty(old) and _empty(new)):
            continue
        shown = _upload_shown if prop.get("x-widget") == "upload" else _shown
        changes.append({"field": path, "label": label, "before": shown(old),
                        "after": shown(new)})
    return changes


def differences(schema: dict[str, Any], before: Settings, after: Settings) -> list[dict]:
    """What changed from `before` to `after`, in the order the wizard asks for it:
    [{"field", "label", "before", "after"}], or {"field", "label", "secret": True} for a
    secret (never its value)."""
    changes: list[dict] = []
    if before.authorization_id != after.authorization_id:
        changes.append({"field": "authorization", "label": "Authorization",
                        "before": _authorization_shown(before.authorization_id),
                        "after": _authorization_shown(after.authorization_id)})
    changes += _config_changes(schema, before.config, after.config, set(secret_paths(schema)))
    for name, label in (("name", "Job name"), ("description", "Description")):
        old, new = getattr(before, name), getattr(after, name)
        if old != new:
            changes.append({"field": name, "label": label, "before": _shown(old),
                            "after": _shown(new)})
    # Compared as what they mean: a stored {} and the defaults written out are the same.
    old_plan, new_plan = schedule.from_dict(before.schedule), schedule.from_dict(after.schedule)
    if schedule_changed(before.schedule, after.schedule):
        changes.append(_described("schedule", "Cadence", schedule.describe(old_plan),
                                  schedule.describe(new_plan), before.schedule,
                                  after.schedule))
    old_retry = RetryPolicy.from_dict(before.retry_policy)
    new_retry = RetryPolicy.from_dict(after.retry_policy)
    if old_retry != new_retry:
        changes.append(_described("retry_policy", "Retries", old_retry.describe(),
                                  new_retry.describe(), before.retry_policy,
                                  after.retry_policy))
    return changes


def schedule_changed(before: dict[str, Any], after: dict[str, Any]) -> bool:
    """Whether two stored schedules differ in what they mean (a one-shot is a one-shot,
    whatever interval it still carries)."""
    old, new = schedule.from_dict(before), schedule.from_dict(after)
    if old.kind == new.kind == "once":
        return False
    return old != new


def _described(name: str, label: str, old: str, new: str, old_raw: dict[str, Any],
               new_raw: dict[str, Any]) -> dict[str, Any]:
    """A change said in words, or as the stored values where the words are the same."""
    if old == new:
        old, new = _shown(old_raw), _shown(new_raw)
    return {"field": name, "label": label, "before": old, "after": new}


def upload_changed(schema: dict[str, Any], before: dict[str, Any], after: dict[str, Any]
                   ) -> bool:
    """Whether an upload field (x-widget=upload: an import's file) holds another file."""
    return any(prop.get("x-widget") == "upload" and before.get(name) != after.get(name)
               for name, prop in ordered_fields(schema))


def latest_version(job: Job) -> int:
    """The job's newest version number (0 for a job older than versions with none)."""
    return db.session.scalar(select(func.max(JobConfigVersion.version))
                             .where(JobConfigVersion.job_id == job.id)) or 0


def record_version(job: Job, *, by: User | None, summary: str, changes: list[dict],
                   now=None) -> JobConfigVersion:
    """Add the job's next version (in the caller's transaction, with the job row locked
    or just inserted, so two edits never take the same number)."""
    row = JobConfigVersion(job_id=job.id, version=latest_version(job) + 1, at=now or utcnow(),
                           by_id=by.id if by is not None else None, summary=summary[:200],
                           changes=changes)
    db.session.add(row)
    return row


VERSIONS_PAGE = 10


def versions_page(job: Job, before: int | None = None, limit: int = VERSIONS_PAGE
                  ) -> tuple[list[JobConfigVersion], int | None]:
    """A page of the job's versions, newest first, and the version to page on from (None
    at the start). Keyset on the (job_id, version) index."""
    query = select(JobConfigVersion).where(JobConfigVersion.job_id == job.id)
    if before is not None:
        query = query.where(JobConfigVersion.version < before)
    rows = list(db.session.scalars(query.order_by(JobConfigVersion.version.desc())
                                   .limit(limit + 1)))
    return rows[:limit], (rows[limit - 1].version if len(rows) > limit else None)


def changes_context(job: Job, before: int | None) -> dict[str, Any]:
    """The summary's Changes section: a page of versions, and where older ones start."""
    versions, older = versions_page(job, before)
    return {"versions": versions, "older_versions": older, "versions_before": before}
