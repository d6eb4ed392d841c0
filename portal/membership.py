"""Audience exports: what a job's destination holds, against what the audience is now.

An export job keeps the membership it last sent (export_members: profile id and the
identifier it was sent with). Each unit of work compares one window of the audience
(profile ids in order, at most `limit` members and at most `limit` stored rows) with the
stored rows of the same ids:

- added: members with an identifier that the destination does not hold by it (new
  members, and members whose identifier changed: they are removed by the old one too);
- removed: stored rows whose profile is no member now, has no identifier now, or has
  another one;
- omitted: members without the identifier the destination needs (the attribute is
  missing, null, blank, not a plain value, or longer than 255 characters).

The job sends the changes, then `record` makes the stored rows of the window the
audience's, in the unit's transaction: a unit that fails sends its window again. A pass
over every window is one run; profile ids only grow, so a pass sees every member once.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import delete, func, insert, select

from portal import audiences
from portal.extensions import db
from portal.models import ExportMember, ProfileAttribute
from providers.base import AudienceChanges, ConfigError, Member, MembersPage

IDENTIFIER_MAX = 255
CHUNK = 500


def _stored(job_id: int, after: int, limit: int) -> list[tuple[int, str]]:
    return [(row.profile_id, row.identifier) for row in db.session.execute(
        select(ExportMember.profile_id, ExportMember.identifier)
        .where(ExportMember.job_id == job_id, ExportMember.profile_id > after)
        .order_by(ExportMember.profile_id).limit(limit))]


def _fields(profile_ids: list[int]) -> dict[int, dict[str, Any]]:
    found: dict[int, dict[str, Any]] = {profile_id: {} for profile_id in profile_ids}
    for start in range(0, len(profile_ids), CHUNK):
        for row in db.session.execute(
                select(ProfileAttribute.profile_id, ProfileAttribute.name,
                       ProfileAttribute.value)
                .where(ProfileAttribute.profile_id.in_(profile_ids[start:start + CHUNK]))
                .order_by(ProfileAttribute.profile_id, ProfileAttribute.name)):
            found[row.profile_id][row.name] = row.value
    return found


def _audience(audience_slug: str):
    audience = audiences.by_slug(audience_slug)
    if audience is None:
        raise ConfigError(f"there is no audience '{audience_slug}' (any more); choose "
                          "another in the job's configuration", code="audience_missing")
    return audience


def _usable(value: str | None) -> str | None:
    return value if value and len(value) <= IDENTIFIER_MAX else None


def members_page(audience_slug: str, *, identifier: str, after_profile_id: int,
                 limit: int) -> MembersPage:
    """The next window of the audience's members as they are now, with their attributes."""
    audience = _audience(audience_slug)
    current = audiences.members(audience, identifier=identifier,
                                after_profile_id=after_profile_id, limit=max(1, limit))
    complete = len(current) < max(1, limit)
    through = current[-1][0] if current else after_profile_id
    usable = [(profile_id, _usable(value)) for profile_id, value in current]
    fields = _fields([profile_id for profile_id, value in usable if value is not None])
    return MembersPage(
        audience=audience.slug,
        members=[Member(profile_id, value, fields[profile_id])
                 for profile_id, value in usable if value is not None],
        omitted=sum(value is None for _, value in usable), through=through,
        complete=complete)


def changes(job_id: int, audience_slug: str, *, identifier: str, after_profile_id: int,
            limit: int) -> AudienceChanges:
    """The next window of the audience against the job's stored membership (see above)."""
    audience = _audience(audience_slug)
    limit = max(1, limit)
    current = audiences.members(audience, identifier=identifier,
                                after_profile_id=after_profile_id, limit=limit)
    stored = _stored(job_id, after_profile_id, limit)
    # The window ends where either list was cut short by the limit.
    ends = [rows[-1][0] for rows in (current, stored) if len(rows) == limit]
    complete = not ends
    if ends:
        through = min(ends)
        current = [row for row in current if row[0] <= through]
        stored = [row for row in stored if row[0] <= through]
    else:
        through = max([after_profile_id, *(row[0] for row in current + stored)])
    now = {profile_id: _usable(value) for profile_id, value in current}
    held = dict(stored)
    added_ids = [profile_id for profile_id, value in now.items()
                 if value is not None and held.get(profile_id) != value]
    fields = _fields(added_ids)
    return AudienceChanges(
        audience=audience.slug,
        added=[Member(profile_id, now[profile_id], fields[profile_id])
               for profile_id in added_ids],
        removed=[Member(profile_id, value) for profile_id, value in stored
                 if now.get(profile_id) != value],
        omitted=sum(value is None for value in now.values()),
        through=through, complete=complete)


def record(job_id: int, changes: AudienceChanges) -> None:
    """The destination took the window's changes: the stored rows follow, in the
    caller's transaction."""
    gone = [member.profile_id for member in changes.removed]
    gone += [member.profile_id for member in changes.added]  # replaced below
    for start in range(0, len(gone), CHUNK):
        db.session.execute(delete(ExportMember).where(
            ExportMember.job_id == job_id,
            ExportMember.profile_id.in_(gone[start:start + CHUNK])))
    if changes.added:
        db.session.execute(insert(ExportMember), [
            {"job_id": job_id, "profile_id": member.profile_id,
             "identifier": member.identifier} for member in changes.added])


def exported_count(job_id: int) -> int:
    """How many members the job's destination holds, as far as the portal knows."""
    return db.session.scalar(select(func.count()).select_from(ExportMember)
                             .where(ExportMember.job_id == job_id)) or 0
