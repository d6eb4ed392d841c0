"""Alerts: rules that say which jobs and which changes to tell whom about, what each rule
last told about each job, and every notification sent."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from portal.extensions import db
from portal.models.types import NEVER_REUSE_IDS, JSONDict, UTCDateTime, utcnow
from portal.models.users import User


class AlertRule(db.Model):
    """Which jobs (scope), which changes (conditions) and where to send (channel)."""

    __tablename__ = "alert_rules"
    __table_args__ = NEVER_REUSE_IDS

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    scope: Mapped[str] = mapped_column(String(20))  # all / provider / job_type / job
    scope_value: Mapped[str] = mapped_column(String(200), default="")
    conditions: Mapped[list[str]] = mapped_column(JSONDict, default=list)
    rate_limit_minutes: Mapped[int] = mapped_column(default=30)
    channel: Mapped[str] = mapped_column(String(20))  # email / slack / webhook
    # email: {"emails": [...]}; slack: {"authorization_id", "channel"}; webhook: {"url"}
    target: Mapped[dict[str, Any]] = mapped_column(JSONDict, default=dict)
    enabled: Mapped[bool] = mapped_column(default=True)
    created_by_id: Mapped[int | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    created_by: Mapped[User | None] = relationship()


class AlertState(db.Model):
    """The state a rule last notified about for one job ("ok" after a recovery). No
    foreign key to the job: a purged job's row is dropped by the next evaluation."""

    __tablename__ = "alert_states"

    id: Mapped[int] = mapped_column(primary_key=True)
    rule_id: Mapped[int] = mapped_column(ForeignKey("alert_rules.id", ondelete="CASCADE"))
    job_id: Mapped[int] = mapped_column(index=True)
    state: Mapped[str] = mapped_column(String(20), default="ok")
    changed_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    __table_args__ = (Index("ix_alert_states_rule_job", "rule_id", "job_id", unique=True),
                      NEVER_REUSE_IDS)


class AlertSent(db.Model):
    """One notification: inserted and committed before its delivery is queued; the
    delivery records how it went. Rule and job names are copied so the list outlives
    them."""

    __tablename__ = "alerts_sent"

    id: Mapped[int] = mapped_column(primary_key=True)
    rule_id: Mapped[int | None] = mapped_column(
        ForeignKey("alert_rules.id", ondelete="SET NULL"), index=True)
    rule_name: Mapped[str] = mapped_column(String(200), default="")
    job_id: Mapped[int | None] = mapped_column(index=True)
    job_name: Mapped[str] = mapped_column(String(200), default="")
    condition: Mapped[str] = mapped_column(String(20))  # the state, or "test"
    recovery: Mapped[bool] = mapped_column(default=False)
    channel: Mapped[str] = mapped_column(String(20))
    target_shown: Mapped[str] = mapped_column(String(300), default="")
    subject: Mapped[str] = mapped_column(String(300), default="")
    body: Mapped[str] = mapped_column(Text, default="")
    link: Mapped[str] = mapped_column(String(500), default="")
    # pending -> sending -> sent | failed (pending again while retries are left)
    status: Mapped[str] = mapped_column(String(20), default="pending", index=True)
    error: Mapped[str] = mapped_column(Text, default="")
    attempts: Mapped[int] = mapped_column(default=0)
    sent_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    queued_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    __table_args__ = (Index("ix_alerts_sent_sent_at_id", "sent_at", "id"), NEVER_REUSE_IDS)
