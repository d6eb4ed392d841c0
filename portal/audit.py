"""The audit log: one call records who did what to which object (in the caller's
transaction, so an action and its audit entry land together or not at all)."""

from __future__ import annotations

from typing import Any

from portal.extensions import db
from portal.models import AuditEntry, User
from portal.models.types import utcnow


def record(action: str, object_type: str, object_id: int | None, object_label: str = "", *,
           by: User | None = None, actor: str = "", summary: str = "",
           **details: Any) -> AuditEntry:
    """`by` is the person; `actor` names who acted when no person did ("job 12")."""
    entry = AuditEntry(
        at=utcnow(), user_id=by.id if by is not None else None,
        actor=by.email if by is not None else (actor or "system"),
        action=action, object_type=object_type, object_id=object_id,
        object_label=object_label[:200], summary=summary, details=details,
    )
    db.session.add(entry)
    return entry


def entries_for(object_type: str, object_id: int, limit: int = 50) -> list[AuditEntry]:
    return list(db.session.scalars(
        db.select(AuditEntry)
        .where(AuditEntry.object_type == object_type, AuditEntry.object_id == object_id)
        .order_by(AuditEntry.id.desc()).limit(limit)
    ))
