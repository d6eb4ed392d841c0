"""The log search's text index (portal.logsearch, migration c9e1f3a5b7d0): every way of
reading a filtered log gives exactly the events a plain read of the whole log gives, the
index is what answers beyond the first events read, and every write keeps it."""

from __future__ import annotations

import re

import pytest
from flask_migrate import downgrade, upgrade
from sqlalchemy import delete, event, insert, select, text, update

from portal import jobs, logsearch
from portal.extensions import db
from portal.jobs import LogFilter, create_job
from portal.logsearch import SCAN_FIRST, events_query, find_events
from portal.models import Job, JobEvent, JobRun, User
from portal.models.types import utcnow
from portal.textsearch import holds
from providers import get_provider
from tests.conftest import _make_app

HX = {"HX-Request": "true"}
# Text placed at known spots of a log of LOG_SIZE events (n: the event's place, 0 oldest).
LOG_SIZE = 3 * SCAN_FIRST
PLACED = {
    "Quota": lambda n: n % 50 == 7,  # often, everywhere: a plain read finds a page of it
    "rare needle": lambda n: n % 400 == 123,  # seldom: the index finds the rest
    "old only": lambda n: n < 40,  # only at the far end of the log
    "recent only": lambda n: n >= LOG_SIZE - 60,  # only at the near end (on PostgreSQL:
    # dense enough there that a second plain read is tried before the index)
    '50% off_"sale"/now': lambda n: n % 300 == 1,  # LIKE's wildcards, quotes, the escape
    "Übergröße": lambda n: n % 500 == 3,  # not ASCII
    # Letters SQLite's FTS5 folds otherwise than Python's lower(): "İ" lowers to "i" and a
    # combining dot, Greek Yot is newer than SQLite's tables.
    "Ärzte İstanbul": lambda n: n % 600 == 5,
    "Ϳota": lambda n: n % 700 == 9,
}
QUERIES = ["quota", "QUOTA", "rare needle", "RARE", "old only", "recent only", "50% off",
           '_"sale"/', "off_", "%", "_", "Übergröße", "übergröße", "gröSS",
           "no event says this", "E4", "E42", "unit 1", "unit 2999", "ra", "q",
           "ärzte i", "ÄRZTE İ", "ärzte", "ϳota", "JOTA"]


def make_job(owner) -> Job:
    provider = get_provider("faults")
    return create_job(provider=provider, job_type=provider.job_type("script"),
                      authorization=None, name="Search me", description="", config={},
                      created_by=owner, paused=True)


def fill_log(job: Job, size: int = LOG_SIZE, *, run_id: int | None = None) -> None:
    """`size` events: each says its place; the PLACED texts where they belong; one in
    five an error with code E42."""
    now = utcnow()
    rows = []
    for n in range(size):
        placed = " ".join(phrase for phrase, here in PLACED.items() if here(n))
        rows.append({"job_id": job.id, "at": now, "kind": "error" if n % 5 == 0 else "synced",
                     "level": "info", "code": "E42" if n % 5 == 0 else "",
                     "message": f"unit {n} wrote a batch {placed}".strip(),
                     "context": {}, "run_id": run_id if n % 2 else None})
    db.session.execute(insert(JobEvent), rows)
    db.session.commit()


def read_everything(job_id: int, log_filter: LogFilter, oldest_first: bool = False) -> list[int]:
    """The plain read of the whole log: what every search must agree with."""
    return list(db.session.scalars(events_query(db.session, job_id, log_filter,
                                                oldest_first=oldest_first)
                                   .with_only_columns(JobEvent.id)))


@pytest.fixture
def log_job(app, make_user):
    owner = make_user("admin")
    other = make_job(owner)
    fill_log(other, 500)  # another job's events, interleaved, never in this job's results
    job = make_job(owner)
    run = JobRun(job_id=job.id, started_at=utcnow())
    db.session.add(run)
    db.session.commit()
    fill_log(job, run_id=run.id)
    fill_log(other, 500)
    return job, run


def test_the_index_was_made(app):
    assert logsearch._has_index(db.session), "the migration made the text index here"


@pytest.mark.parametrize("q", QUERIES)
def test_every_read_finds_what_a_plain_read_finds(log_job, q):
    job, run = log_job
    for log_filter in (LogFilter(q=q), LogFilter(q=q, kind="error"), LogFilter(q=q, run=run.id)):
        expected = read_everything(job.id, log_filter)
        # Page by page, newest first, as the logs box and its "older" link read it.
        pages, before = [], None
        while True:
            events, before = jobs.log_page(job, log_filter, before)
            pages += [row.id for row in events]
            if before is None:
                break
        assert pages == expected, (q, log_filter)
        # Oldest first from every place, as the live tail goes on from where it was.
        for after in (0, expected[-1] if expected else 0, expected[len(expected) // 2]
                      if expected else 0):
            found = find_events(db.session, job.id, log_filter, after=after, limit=70,
                                oldest_first=True)
            assert [row.id for row in found] == [i for i in expected[::-1] if i > after][:70]
        # Downloads read it in chunks.
        assert [row.id for row in jobs.iter_events(job, log_filter, chunk=37)] == expected


def test_placed_text_is_found_where_it_was_put(log_job):
    job, _ = log_job
    for phrase, here in PLACED.items():
        found = [row.message for row in find_events(db.session, job.id, LogFilter(q=phrase),
                                                    limit=LOG_SIZE)]
        assert len(found) == sum(1 for n in range(LOG_SIZE) if here(n)) > 0, phrase
        assert all(phrase in message for message in found)
    assert find_events(db.session, job.id, LogFilter(q="no event says this"), limit=10) == []
    # Case is folded for every letter, not only ASCII ones (SQLite's LIKE folds only those).
    assert len(find_events(db.session, job.id, LogFilter(q="üBERGRÖßE"), limit=LOG_SIZE)) == 6


def asks_the_index(statement: str) -> bool:
    return "job_events_search MATCH" in statement or "MATERIALIZED" in statement


def test_beyond_the_first_events_the_index_answers(log_job):
    """Text found in the nearest SCAN_FIRST events ends the search there; text that is not
    goes to the index, with a plan that reads the index, not the log."""
    job, _ = log_job
    common = statements_of(lambda: find_events(db.session, job.id, LogFilter(q="wrote"),
                                               limit=101))
    assert not any(map(asks_the_index, common))
    for q in ("rare needle", "no event says this", "old only"):
        seen: list[tuple[str, object]] = []
        statements_of(lambda q=q: find_events(db.session, job.id, LogFilter(q=q), limit=101),
                      seen)
        indexed = [(sql, parameters) for sql, parameters in seen if asks_the_index(sql)]
        assert len(indexed) == 1, (q, seen)
        if db.engine.dialect.name == "sqlite":
            plan = plan_of(*indexed[0])
            assert re.search(r"SCAN job_events_search VIRTUAL TABLE INDEX \d+:M", plan), plan
            assert "TEMP B-TREE" not in plan, "the index's own order, not a sort"
            continue
        # PostgreSQL chooses by its statistics (a few thousand rows here are cheaper to
        # read whole). What must hold at any size: the matches are read whole, with no
        # LIMIT the planner could meet by walking back through the log ...
        lines = plan_of(*indexed[0]).splitlines()
        start = next(n for n, line in enumerate(lines) if line.strip() == "CTE hits")
        depth = len(lines[start]) - len(lines[start].lstrip())
        fence = lines[start + 1:start + 1 + next(
            (n for n, line in enumerate(lines[start + 1:])
             if len(line) - len(line.lstrip()) <= depth), len(lines))]
        assert fence and not any("Limit" in line for line in fence), lines
        # ... and the text condition is one the trigram index serves.
        alone = (select(JobEvent.id)
                 .where(holds(db.session, q, JobEvent.message, JobEvent.code))
                 .compile(db.engine))
        plan = plan_of(str(alone), alone.params, scans=False)
        assert "Bitmap Index Scan on ix_job_events_text" in plan, plan


def statements_of(work, seen: list[tuple[str, object]] | None = None) -> list[str]:
    """The SQL statements `work` runs (with their parameters into `seen`, if given)."""
    statements: list[str] = []

    def keep(conn, cursor, statement, parameters, context, executemany):
        statements.append(statement)
        if seen is not None:
            seen.append((statement, parameters))

    event.listen(db.engine, "before_cursor_execute", keep)
    try:
        work()
    finally:
        event.remove(db.engine, "before_cursor_execute", keep)
    return statements


def plan_of(sql: str, parameters, scans: bool = True) -> str:
    """EXPLAIN (QUERY PLAN) of a statement; on PostgreSQL after ANALYZE, and with
    `scans=False` with plain reads of the table priced out."""
    postgresql = db.engine.dialect.name == "postgresql"
    if postgresql:
        with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            connection.exec_driver_sql("ANALYZE job_events")
    with db.engine.connect() as connection:
        if not scans:
            connection.exec_driver_sql("SET LOCAL enable_seqscan = off; "
                                       "SET LOCAL enable_indexscan = off")
        rows = connection.exec_driver_sql(("EXPLAIN " if postgresql else "EXPLAIN QUERY PLAN ")
                                          + sql, parameters).all()
    return "\n".join(" ".join(str(part) for part in row) for row in rows)


def search_ids(job_id: int, q: str) -> list[int]:
    """The ids the index step alone gives (the first events not read as they are)."""
    return [row.id for row in logsearch._indexed_read(
        db.session, job_id, LogFilter(q=q), logsearch._indexed_text(db.session, q), after=0,
        before=None, oldest_first=False, limit=10_000)]


def in_index(job_id: int, q: str) -> list[int]:
    """What the index itself holds (SQLite's FTS5 table, asked directly: the search
    would hide a stale entry, as LIKE decides after it). On PostgreSQL, where the index
    is PostgreSQL's own to keep, what the index step gives."""
    if db.engine.dialect.name == "postgresql":
        return search_ids(job_id, q)
    return list(db.session.scalars(text(
        "SELECT rowid FROM job_events_search WHERE job_events_search MATCH :m "
        "ORDER BY rowid DESC"), {"m": f'job : "[{job_id}]" AND {{message code}} : "{q}"'}))


def test_every_write_keeps_the_index(app, make_user):
    owner = make_user("admin")
    job = make_job(owner)
    db.session.add(JobEvent(job_id=job.id, kind="synced", message="first words", context={}))
    db.session.commit()
    first = db.session.scalar(select(JobEvent.id).where(JobEvent.message == "first words"))
    assert in_index(job.id, "first words") == [first], "an insert is indexed"
    db.session.execute(update(JobEvent).where(JobEvent.id == first)
                       .values(message="second words", code="Z9Z"))
    db.session.commit()
    assert in_index(job.id, "first words") == [], "an update takes the old text out"
    assert in_index(job.id, "second words") == [first] == in_index(job.id, "z9z")
    moved_to = make_job(owner)
    db.session.execute(update(JobEvent).where(JobEvent.id == first).values(job_id=moved_to.id))
    db.session.commit()
    assert in_index(job.id, "second words") == []
    assert in_index(moved_to.id, "second words") == [first], "and follows a change of job"
    db.session.execute(delete(JobEvent).where(JobEvent.id == first))
    db.session.commit()
    assert in_index(moved_to.id, "second words") == [], "a delete takes it out"
    fill_log(job, 300)
    assert len(in_index(job.id, "wrote")) == 300
    db.session.execute(delete(Job).where(Job.id == job.id))  # cascades to its events
    db.session.commit()
    assert in_index(job.id, "wrote") == [], "a deleted job's events leave the index with it"


def test_a_rolled_back_event_leaves_no_trace(app, make_user):
    job = make_job(make_user("admin"))
    job_id = job.id
    db.session.add(JobEvent(job_id=job_id, kind="synced", message="never written", context={}))
    db.session.flush()
    assert in_index(job_id, "never written") != [], "seen inside its transaction"
    db.session.rollback()
    assert in_index(job_id, "never written") == []
    fill_log(db.session.get(Job, job_id), 10)
    assert len(in_index(job_id, "wrote")) == 10


def test_search_pages_through_the_app(client, auth, log_job):
    """The logs box and its older link, searched for text the first events do not hold."""
    auth.login("viewer")
    job, _ = log_job
    page = client.get(f"/jobs/{job.id}/logs/view?q=rare+needle", headers=HX)
    assert page.status_code == 200
    ids = [int(i) for i in re.findall(r'id="event-(\d+)"', page.get_data(as_text=True))]
    assert ids == read_everything(job.id, LogFilter(q="rare needle"))[:len(ids)]
    assert len(ids) == sum(1 for n in range(LOG_SIZE) if PLACED["rare needle"](n))
    nothing = client.get(f"/jobs/{job.id}/logs/view?q=no+event+says+this", headers=HX)
    assert nothing.status_code == 200 and 'id="event-' not in nothing.get_data(as_text=True)


def test_the_migration_indexes_events_already_there(tmp_path, redis_url):
    """Events written before the index existed are found through it after the upgrade,
    and a log with no index (before it) is searched by reading it."""
    app = _make_app(f"sqlite:///{tmp_path / 'old.db'}", redis_url, tmp_path / "instance")
    with app.app_context():
        upgrade(revision="b8d0f2a4c6e8")
        owner = _owner()
        job = make_job(owner)
        fill_log(job, 1500)
        assert not logsearch._has_index(db.session)
        without = [row.id for row in find_events(db.session, job.id, LogFilter(q="rare needle"),
                                                 limit=100)]
        assert len(without) == 4
        db.session.remove()
        logsearch._indexed.clear()
        upgrade()
        assert logsearch._has_index(db.session)
        assert search_ids(job.id, "rare needle") == without
        db.session.remove()
        downgrade(revision="b8d0f2a4c6e8")  # and back: no table, no trigger left behind
        left = db.session.scalar(text("SELECT count(*) FROM sqlite_master "
                                      "WHERE name LIKE 'job_events_search%'"))
        assert left == 0
        fill_log(job, 10)  # events are written as before
        db.engine.dispose()


def _owner() -> User:
    user = User(email="owner@example.com", role="admin", name="")
    user.set_password("a long enough password 1")
    db.session.add(user)
    db.session.commit()
    return user


def test_where_text_is_dense_postgresql_reads_on_before_asking_the_index(log_job):
    """Its index gives every match of the rest at once, in no order: text found often
    in the first events is looked for in the next ones first (at most SCAN_MORE times
    as many). SQLite's index walks the matches newest first and stops, so it goes there
    at once."""
    job, _ = log_job
    seen = statements_of(lambda: find_events(db.session, job.id, LogFilter(q="recent only"),
                                             limit=101))
    plain = [s for s in seen if "LIKE" in s and not asks_the_index(s)]
    assert len(plain) == (2 if db.engine.dialect.name == "postgresql" else 1), seen
    assert len([s for s in seen if asks_the_index(s)]) == 1
