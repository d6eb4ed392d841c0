"""What each audience export last sent (see portal/membership.py)."""

from __future__ import annotations

from sqlalchemy import ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column

from portal.extensions import db


class ExportMember(db.Model):
    """A profile the job's destination holds as a member of the audience it exports, by
    the identifier it was sent with. The job's rows are its last exported membership."""

    __tablename__ = "export_members"

    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"),
                                        primary_key=True)
    profile_id: Mapped[int] = mapped_column(primary_key=True)  # no foreign key: profiles merge
    identifier: Mapped[str] = mapped_column(String(255))
