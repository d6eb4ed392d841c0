"""Text found anywhere in a column, upper and lower case alike for every letter, with
`%` and `_` taken as themselves: the one rule of every search box (the job list, a job's
log, a stream's messages). No request objects here.

PostgreSQL's ILIKE folds every letter (in a UTF-8 database). SQLite's LIKE folds only
ASCII ones, so there text with other letters is compared with both sides lowered by
Python (`portal_lower`, which portal.audiences registers on each SQLite connection); text
of ASCII letters keeps the plain LIKE, which is faster.
"""

from __future__ import annotations

from sqlalchemy import ColumnElement, func, or_
from sqlalchemy.orm import Session


def holds(session: Session, text: str, *columns: ColumnElement) -> ColumnElement[bool]:
    """Rows where any of `columns` holds `text`, on the session's database."""
    pattern = "%{}%".format(text.replace("/", "//").replace("%", "/%").replace("_", "/_"))
    if session.get_bind().dialect.name == "postgresql" or text.isascii():
        return or_(*(column.ilike(pattern, escape="/") for column in columns))
    return or_(*(func.portal_lower(column).like(pattern.lower(), escape="/")
                 for column in columns))
