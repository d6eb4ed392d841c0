"""Reading a job's log, filtered, without reading all of it; no request objects here.

Unfiltered, or filtered by kind or run, the log is a walk of the (job_id, id) index from
where the page starts. A text search cannot be: text found in one event in ten thousand,
or nowhere, used to mean reading every event of the job to fill a page (half a second at
a million events). Text of three characters or more is found in three steps:

1. The nearest `SCAN_FIRST` events of the range are read as they are (LIKE): common text
   fills its page here, cheaper than any index would.
2. On PostgreSQL only, if those events held the text often enough that a few thousand
   more would fill the page, they are read too (at most `SCAN_MORE` times as many): its
   trigram index hands back every match of the rest of the log at once, in no order, so
   for text in one event in fifty it would fetch twenty thousand rows to show a hundred.
3. The text index finds the rest: SQLite's FTS5 table (trigram tokenizer, a column naming
   the job) walks only this job's matches, newest first, and stops at a full page;
   PostgreSQL's GIN index (pg_trgm) gives the rest's matches, of which the page keeps the
   newest. Its query is fenced (a MATERIALIZED common table expression), so the planner
   cannot trade it for "walk back until enough rows match", which reads the whole log
   when the matches lie far back.

Every step matches exactly as the plain read does (the index narrows, LIKE decides), so
which step finds an event never changes whether it is found. The log is read plainly
without the index (migration c9e1f3a5b7d0 could not make it), for text shorter than a
trigram, and on SQLite for text holding a letter its FTS5 folds otherwise than Python
(`_indexed_text`).
"""

from __future__ import annotations

import sqlite3
from functools import cache
from typing import TYPE_CHECKING
from weakref import WeakKeyDictionary

from sqlalchemy import Engine, column, select, table, text
from sqlalchemy.orm import Session

from portal.models import JobEvent
from portal.textsearch import holds

if TYPE_CHECKING:
    from portal.jobs import LogFilter

SCAN_FIRST = 1000  # events read as they are before the index is asked
SCAN_MORE = 8  # PostgreSQL: a second plain read covers at most this many times SCAN_FIRST
SHORTEST_INDEXED = 3  # a trigram index finds text of three characters or more

SEARCH_TABLE = table("job_events_search", column("rowid"), column("job_events_search"))
_indexed: WeakKeyDictionary[Engine, bool] = WeakKeyDictionary()


def events_query(session: Session, job_id: int, log_filter: LogFilter, *, after: int = 0,
                 before: int | None = None, oldest_first: bool = False):
    """The job's events in (after, before), newest first (or oldest first), filtered by a
    plain read. Keyset on the (job_id, id) index, so the newest page and a page a million
    events back cost the same when most events match."""
    query = _narrowed(select(JobEvent).where(JobEvent.job_id == job_id), log_filter)
    if log_filter.q:
        query = query.where(holds(session, log_filter.q, JobEvent.message, JobEvent.code))
    if after:
        query = query.where(JobEvent.id > after)
    if before is not None:
        query = query.where(JobEvent.id < before)
    return query.order_by(JobEvent.id.asc() if oldest_first else JobEvent.id.desc())


def find_events(session: Session, job_id: int, log_filter: LogFilter, *, limit: int,
                after: int = 0, before: int | None = None,
                oldest_first: bool = False) -> list[JobEvent]:
    """Up to `limit` events of the filtered log in (after, before), newest first (or
    oldest first): the rows events_query would give, found without reading the log."""
    def read(low: int, high: int | None, count: int) -> list[JobEvent]:
        return list(session.scalars(events_query(session, job_id, log_filter, after=low,
                                                 before=high, oldest_first=oldest_first)
                                    .limit(count)))

    indexed = _indexed_text(session, log_filter.q) if _has_index(session) else None
    if indexed is None:
        return read(after, before, limit)
    rows: list[JobEvent] = []
    read_first = SCAN_FIRST
    postgresql = _postgresql(session)
    for _ in range(2):  # step 1, then step 2 where it pays
        edge = _edge(session, job_id, after, before, oldest_first, read_first)
        if edge is None:  # the range holds no more than that: read it all
            return rows + read(after, before, limit - len(rows))
        near = (after, edge + 1) if oldest_first else (edge - 1, before)
        rows += read(*near, limit - len(rows))
        if len(rows) >= limit:
            return rows
        after, before = (edge, before) if oldest_first else (after, edge)
        wanted = max(1, (limit - len(rows)) * SCAN_FIRST * 3 // (2 * len(rows))) if rows else 0
        if not postgresql or not rows or wanted > SCAN_MORE * SCAN_FIRST:
            break
        read_first = wanted
    return rows + _indexed_read(session, job_id, log_filter, indexed, after=after,
                                before=before, oldest_first=oldest_first,
                                limit=limit - len(rows))


def outside_the_models(_object, name: str | None, type_: str, reflected: bool,
                       compare_to) -> bool:
    """Alembic's include_object: False for the text index (the FTS5 table with its shadow
    tables, or the GIN index), which migration c9e1f3a5b7d0 makes and no model describes,
    so autogenerate neither reports it nor writes a migration that drops it."""
    return not (reflected and compare_to is None and type_ in ("table", "index")
                and (name or "").startswith(("job_events_search", "ix_job_events_text")))


def _narrowed(query, log_filter: LogFilter):
    if log_filter.kind:
        query = query.where(JobEvent.kind == log_filter.kind)
    if log_filter.run:
        query = query.where(JobEvent.run_id == log_filter.run)
    return query


def _edge(session: Session, job_id: int, after: int, before: int | None,
          oldest_first: bool, count: int) -> int | None:
    """The id of the `count`-th event of the range from its near end (the newest end, or
    the oldest for oldest_first); None when the range holds fewer. Read on the index."""
    query = select(JobEvent.id).where(JobEvent.job_id == job_id, JobEvent.id > after)
    if before is not None:
        query = query.where(JobEvent.id < before)
    order = JobEvent.id.asc() if oldest_first else JobEvent.id.desc()
    return session.scalar(query.order_by(order).offset(count - 1).limit(1))


def _indexed_read(session: Session, job_id: int, log_filter: LogFilter, indexed: str, *,
                  after: int, before: int | None, oldest_first: bool,
                  limit: int) -> list[JobEvent]:
    """The index's answer for the range; `indexed` is the part of the text SQLite's index
    may be asked for (_indexed_text)."""
    if _postgresql(session):
        hits = (events_query(session, job_id, log_filter, after=after, before=before)
                .with_only_columns(JobEvent.id).order_by(None)
                .cte("hits").prefix_with("MATERIALIZED"))
        order = hits.c.id.asc() if oldest_first else hits.c.id.desc()
        query = select(JobEvent).where(
            JobEvent.id.in_(select(hits.c.id).order_by(order).limit(limit)))
        return list(session.scalars(
            query.order_by(JobEvent.id.asc() if oldest_first else JobEvent.id.desc())))
    # SQLite: FTS5 walks this job's matches in id order (the join leaves it outside, the
    # ORDER BY on its rowid is its own), and LIMIT stops the walk.
    found = SEARCH_TABLE.c.rowid
    query = (_narrowed(select(JobEvent), log_filter)
             .join_from(SEARCH_TABLE, JobEvent, JobEvent.id == found)
             .where(SEARCH_TABLE.c.job_events_search.match(
                 f'job : "[{job_id}]" AND {{message code}} : '
                 f'({_trigrams(indexed)})'),
                    JobEvent.job_id == job_id,
                    holds(session, log_filter.q, JobEvent.message, JobEvent.code),
                    found > after))
    if before is not None:
        query = query.where(found < before)
    return list(session.scalars(
        query.order_by(found.asc() if oldest_first else found.desc()).limit(limit)))


def _trigrams(q: str) -> str:
    """An FTS5 query for the rows holding every trigram of a cover of `q` (its 1st, 4th,
    7th ... and its last): a superset of the rows holding `q`, which LIKE then decides.
    As a phrase of all its trigrams, FTS5 walked every trigram's positions: 1.95 ms
    against 0.72 ms for text in 100 of a million events."""
    starts = sorted({*range(0, len(q) - 2, 3), len(q) - 3})
    return " AND ".join('"{}"'.format(q[start:start + 3].replace('"', '""')) for start in starts)


def _indexed_text(session: Session, q: str) -> str | None:
    """The part of `q` the index may be asked for (None: it may not, so the log is read).

    A trigram index needs three characters, and on SQLite it must fold case as the
    search does. Text of ASCII characters is compared by LIKE, which folds ASCII letters
    as FTS5 does; other text by Python's lower(), which for some letters FTS5's Unicode
    tables fold otherwise (letters newer than its tables, and "İ", which lower() makes
    two characters: "i" and a combining dot) — asking the index for those would miss
    events the plain read finds."""
    if len(q) < SHORTEST_INDEXED or "\x00" in q:
        return None
    if _postgresql(session) or q.isascii():
        return q
    banned, no_last = _folded_apart()
    if any(character in banned for character in q.lower()):
        return None
    while q and q[-1].lower() in no_last:  # the start of such a letter's two
        q = q[:-1]
    return q if len(q) >= SHORTEST_INDEXED else None


@cache
def _folded_apart() -> tuple[frozenset[str], frozenset[str]]:
    """The letters on which FTS5's trigram tokenizer (in this SQLite) and Python's lower()
    disagree: found once a process by asking an in-memory FTS5 table about every letter
    that has a lower case (about 1,400; 0.2 s). Returns the characters text may not hold
    and those it may not end with."""
    cased = [(point, character.lower()) for point in range(0x110000)
             if not 0xD800 <= point <= 0xDFFF
             and (character := chr(point)).lower() != character]
    connection = sqlite3.connect(":memory:")
    try:
        connection.execute("CREATE VIRTUAL TABLE t USING fts5(x, tokenize='trigram')")
        connection.executemany("INSERT INTO t(rowid, x) VALUES (?, ?)",
                               [(point, f"<{chr(point)}>") for point, _ in cased])
        banned: set[str] = set()
        no_last: set[str] = set()
        for point, lowered in cased:
            phrase = '"<{}>"'.format(lowered.replace('"', '""'))
            if connection.execute("SELECT 1 FROM t WHERE t MATCH ? AND rowid = ?",
                                  (phrase, point)).fetchone() is None:
                banned.update({chr(point), *lowered[1:]})
                (banned if len(lowered) == 1 else no_last).add(lowered[0])
    finally:
        connection.close()
    return frozenset(banned), frozenset(no_last)


def _postgresql(session: Session) -> bool:
    return session.get_bind().dialect.name == "postgresql"


def _has_index(session: Session) -> bool:
    """Whether migration c9e1f3a5b7d0 made the text index here (kept per engine)."""
    engine = session.get_bind()
    if engine not in _indexed:
        check = ("SELECT to_regclass('ix_job_events_text') IS NOT NULL"
                 if engine.dialect.name == "postgresql" else
                 "SELECT count(*) FROM sqlite_master WHERE name = 'job_events_search'")
        _indexed[engine] = bool(session.scalar(text(check)))
    return _indexed[engine]
