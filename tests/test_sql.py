"""PostgreSQL and MySQL providers (providers/sql.py) against the local PostgreSQL and MariaDB
servers, end to end through a real RQ worker: incremental import with ties across batch
boundaries, a connection cut in the middle of a run, read-only queries, exports to a table,
refused credentials, too many connections, Test connection. A server that is not running
makes its tests skip, saying which."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import jsonschema
import pytest
import sqlalchemy as sa
from sqlalchemy.pool import NullPool

from portal import vault
from portal.datastore import read_messages
from portal.extensions import db
from portal.jobs import create_job, run_job_now
from portal.models import Job, JobEvent
from providers import get_provider, outbound, sql
from providers.base import AuthError, ConfigError, ProviderError, RateLimited
from tests.conftest import canary
from tests.loopback_sql import CuttingRelay
from tests.test_audience_export import make_audience, say

SOURCE_DB = "h_sql_src"
SERVERS = {
    "postgresql": {"port": int(os.environ.get("SQL_TEST_PG_PORT", "5432")),
                   "admin": "postgresql+psycopg://postgres@127.0.0.1:{port}/{db}",
                   "bootstrap_db": "postgres"},
    "mysql": {"port": int(os.environ.get("SQL_TEST_MYSQL_PORT", "3306")),
              "admin": "mysql+pymysql://root@127.0.0.1:{port}/{db}",
              "bootstrap_db": "mysql"},
}
USER = "portal_t"
PASSWORD = "Sq1-test-pa55word"
T0 = datetime(2026, 3, 1, 12, 0, 0)


def _admin(kind: str, database: str = SOURCE_DB) -> sa.Engine:
    server = SERVERS[kind]
    return sa.create_engine(server["admin"].format(port=server["port"], db=database),
                            poolclass=NullPool, isolation_level="AUTOCOMMIT",
                            connect_args={"connect_timeout": 3})


def _prepare(kind: str) -> None:
    """The source database, and on MariaDB a user with a password."""
    boot = _admin(kind, SERVERS[kind]["bootstrap_db"])
    try:
        connection = boot.connect()
    except sa.exc.OperationalError as exc:  # no server here: say so and skip
        pytest.skip(f"no {kind} server on 127.0.0.1:{SERVERS[kind]['port']} to test "
                    f"against ({str(exc.orig)[:120]})")
    with connection:
        if kind == "postgresql":
            if not connection.exec_driver_sql(
                    "SELECT 1 FROM pg_database WHERE datname = %s", (SOURCE_DB,)).first():
                connection.exec_driver_sql(f"CREATE DATABASE {SOURCE_DB}")
        else:
            connection.exec_driver_sql(f"CREATE DATABASE IF NOT EXISTS {SOURCE_DB}")
            connection.execute(sa.text(
                f"CREATE USER IF NOT EXISTS '{USER}'@'%' IDENTIFIED BY '{PASSWORD}'"))
            connection.execute(sa.text(f"GRANT ALL ON {SOURCE_DB}.* TO '{USER}'@'%'"))
    boot.dispose()


@pytest.fixture(params=["postgresql", "mysql"])
def kind(request) -> str:
    _prepare(request.param)
    return request.param


@pytest.fixture
def source(kind) -> sa.Engine:
    engine = _admin(kind)
    with engine.connect() as connection:
        for table in ("sql_people", "sql_out", "sql_limited"):
            connection.exec_driver_sql(f"DROP TABLE IF EXISTS {table}")
        money = "NUMERIC(10,2)"
        blob = "BYTEA" if kind == "postgresql" else "BLOB"
        connection.exec_driver_sql(
            f"CREATE TABLE sql_people (id INTEGER PRIMARY KEY, email VARCHAR(100), "
            f"balance {money}, born DATE, photo {blob}, updated_at TIMESTAMP NULL)")
    yield engine
    engine.dispose()


def credentials(kind: str, port: int | None = None, **changes) -> dict:
    base = {"host": "127.0.0.1", "port": port or SERVERS[kind]["port"], "database": SOURCE_DB,
            "username": "postgres" if kind == "postgresql" else USER,
            "password": canary(PASSWORD), "tls": "disable"}
    return {**base, **changes}


def insert(engine: sa.Engine, rows: list[tuple]) -> None:
    with engine.connect() as connection:
        for row in rows:
            connection.exec_driver_sql(
                "INSERT INTO sql_people (id, email, balance, born, photo, updated_at) "
                "VALUES (%s, %s, %s, %s, %s, %s)", row)


def person(n: int, at: datetime) -> tuple:
    return (n, f"p{n}@example.com", Decimal("10.50") + n, T0.date(), b"\x00\x01", at)


def make_job(owner, kind: str, creds: dict, job_type: str = "import", **config):
    provider = get_provider(kind)
    authorization = vault.create(provider, provider.auth_method("password"),
                                 label=f"{kind} db", description="", credentials=creds,
                                 by=owner)
    if job_type == "import":
        config = {"table": "sql_people", "updated_column": "updated_at", "key_column": "id",
                  "stream": "people_rows", **config}
    job = create_job(provider=provider, job_type=provider.job_type(job_type),
                     authorization=authorization, name=f"{kind} {job_type}", description="",
                     config=config, created_by=owner,
                     schedule={"kind": "interval", "every_minutes": 60})
    db.session.commit()
    return job


def events(job: Job) -> list[str]:
    return list(db.session.scalars(sa.select(JobEvent.message).where(JobEvent.job_id == job.id)))


def rows_in(stream: str) -> list[dict]:
    return [message.payload for message in read_messages(stream, after_id=0, limit=10_000)]


@pytest.fixture
def owner(make_user):
    return make_user("operator")


# -- Definitions --------------------------------------------------------------------------


@pytest.mark.parametrize("provider", [sql.POSTGRESQL, sql.MYSQL])
def test_definitions_are_valid_and_mark_secrets_and_destinations(provider):
    [method] = provider.auth_methods
    jsonschema.Draft202012Validator.check_schema(method.schema)
    assert method.secret_fields == ("password",)
    assert set(method.destination_fields) == {"host", "port", "tls"}
    assert {jt.key: jt.kind for jt in provider.job_types} == {"import": "import",
                                                              "export": "export"}
    for job_type in provider.job_types:
        jsonschema.Draft202012Validator.check_schema(job_type.config_schema)
    assert provider.logo == f"{provider.key}.svg"


@pytest.mark.parametrize("query", [
    "DELETE FROM sql_people", "SELECT 1; DROP TABLE sql_people", "select 1 -- x",
    "WITH x AS (DELETE FROM sql_people RETURNING *) SELECT * FROM x", "/* c */ SELECT 1",
])
def test_anything_but_one_select_is_refused(query):
    with pytest.raises(ConfigError, match="SELECT|comments"):
        sql.checked_query(query)
    assert sql.checked_query(" select id from t ; ") == "select id from t"


def test_values_become_json_safe():
    assert sql.json_safe(Decimal("12.50")) == 12.5 and sql.json_safe(Decimal("3")) == 3
    assert sql.json_safe(Decimal("12345678901234567890.123")) == "12345678901234567890.123"
    assert sql.json_safe(b"\x00\x01") == "AAE="
    assert sql.json_safe(T0) == "2026-03-01T12:00:00"
    assert sql.json_safe({"a": [T0.date()]}) == {"a": ["2026-03-01"]}
    for value in (T0, T0.date(), Decimal("1.5"), 7, "x"):
        assert sql._decode(sql._encode(value)) == value


def test_a_refused_address_is_never_connected_to():
    with pytest.raises(outbound.OutboundRefused):
        outbound.check_address("169.254.169.254", 5432)


# -- Test connection and errors -----------------------------------------------------------


def test_check_connects_and_selects_one(app, kind, source):
    assert sql.check(kind, "password", credentials(kind)).startswith(
        f"Connected to 127.0.0.1:{SERVERS[kind]['port']}/{SOURCE_DB}")


def test_errors_are_mapped_and_name_what_is_wrong(app, kind, source):
    wrong = {"username": "nobody_here"} if kind == "postgresql" else {"password": "wrong-pw"}
    with pytest.raises(AuthError) as caught:
        sql.check(kind, "password", credentials(kind, **wrong))
    assert PASSWORD not in str(caught.value)
    with pytest.raises(ConfigError, match="no_such_db"):
        sql.check(kind, "password", credentials(kind, database="no_such_db"))
    with CuttingRelay(SERVERS[kind]["port"], allow=0) as relay:
        with pytest.raises(ProviderError) as cut:
            sql.check(kind, "password", credentials(kind, port=relay.port))
    assert cut.value.retryable and not isinstance(cut.value, ConfigError | AuthError)
    closed = CuttingRelay(1)
    closed.__exit__()
    with pytest.raises(ProviderError) as refused:
        sql.check(kind, "password", credentials(kind, port=closed.port))
    assert type(refused.value) is ProviderError


def test_the_table_menu_lists_the_tables(app, kind, source):
    assert ("sql_people", "sql_people") in sql.list_tables(kind, credentials(kind))


# -- Import, end to end -------------------------------------------------------------------


def test_import_is_incremental_and_ties_cross_batch_boundaries(app, work, owner, kind, source):
    # 23 rows share one updated_at: batches of 5 cut through them four times.
    insert(source, [person(n, T0) for n in range(1, 24)])
    insert(source, [person(n, T0 - timedelta(hours=1)) for n in range(100, 103)])
    insert(source, [(200, "null@example.com", 1, None, None, None)])  # no updated_at: unread
    job = make_job(owner, kind, credentials(kind), batch_size=5)
    assert work()
    rows = rows_in("people_rows")
    assert sorted(row["id"] for row in rows) == [*range(1, 24), 100, 101, 102]
    assert [row["id"] for row in rows[:3]] == [100, 101, 102]  # oldest change first
    first = rows[3]
    assert first["balance"] == 11.5 and first["photo"] == "AAE=" and first["born"] == "2026-03-01"
    db.session.refresh(job)
    assert (job.added_total, job.omitted_total) == (26, 0)
    assert job.cursor["k"] == ["plain", 23] and job.cursor["t"][0] == "datetime"

    # Later: two rows change, three new rows share the newest time; nothing else is reread.
    later = T0 + timedelta(minutes=5)
    with source.connect() as connection:
        connection.exec_driver_sql(
            "UPDATE sql_people SET email = 'new@example.com', updated_at = %s "
            "WHERE id IN (2, 101)", (later,))
    insert(source, [person(n, later) for n in (300, 301, 302)])
    run_job_now(job, by=owner)
    assert work()
    rows = rows_in("people_rows")
    assert [row["id"] for row in rows[26:]] == [2, 101, 300, 301, 302]
    assert rows[26]["email"] == "new@example.com"
    db.session.refresh(job)
    assert (job.added_total, job.omitted_total) == (31, 0)

    run_job_now(job, by=owner)  # nothing new: nothing written
    assert work()
    assert len(rows_in("people_rows")) == 31


def test_a_connection_cut_mid_run_resumes_from_the_cursor(app, work, owner, kind, source):
    insert(source, [person(n, T0 + timedelta(seconds=n // 7)) for n in range(1, 41)])
    with CuttingRelay(SERVERS[kind]["port"], allow=3) as relay:
        job = make_job(owner, kind, credentials(kind, port=relay.port), batch_size=6)
        work()
        db.session.refresh(job)
        assert job.status == "sleeping" and job.error_count >= 1  # retried with backoff
        done = len(rows_in("people_rows"))
        assert done == 18  # three batches got through before the cut
        relay.allow = None
        run_job_now(job, by=owner)
        assert work()
    rows = rows_in("people_rows")
    assert sorted(row["id"] for row in rows) == list(range(1, 41))  # all, each once
    db.session.refresh(job)
    assert (job.added_total, job.omitted_total, job.error_count) == (40, 0, 0)


def test_a_query_runs_read_only_and_names_a_missing_column(app, work, owner, kind, source):
    insert(source, [person(n, T0) for n in range(1, 4)])
    job = make_job(owner, kind, credentials(kind), table="",
                   query="SELECT id, email, updated_at FROM sql_people WHERE id > 1")
    assert work()
    assert sorted(row["id"] for row in rows_in("people_rows")) == [2, 3]
    assert set(rows_in("people_rows")[0]) == {"id", "email", "updated_at"}
    db.session.refresh(job)
    assert job.status == "sleeping" and job.added_total == 2


@pytest.mark.parametrize("config, named", [
    ({"key_column": "nope"}, "nope"),
    ({"table": "sql_missing"}, "sql_missing"),
    ({"table": "", "query": "SELECT id FROM sql_people"}, "updated_at"),
])
def test_a_missing_table_or_column_fails_the_job_naming_it(app, work, owner, kind, source,
                                                          config, named):
    insert(source, [person(1, T0)])
    job = make_job(owner, kind, credentials(kind), **config)
    work()
    db.session.refresh(job)
    assert job.status == "failed"
    assert any(named in message for message in events(job))


def test_a_query_that_writes_fails_in_its_read_only_transaction(app, work, owner, source,
                                                                kind):
    if kind == "postgresql":
        with source.connect() as connection:
            connection.exec_driver_sql("CREATE SEQUENCE IF NOT EXISTS sql_seq")
        query = "SELECT id, updated_at, nextval('sql_seq') AS n FROM sql_people"
    else:  # a stored function that inserts
        with source.connect() as connection:
            connection.exec_driver_sql("DROP FUNCTION IF EXISTS sql_writes")
            connection.exec_driver_sql(
                "CREATE FUNCTION sql_writes() RETURNS INT MODIFIES SQL DATA "
                "BEGIN INSERT INTO sql_people (id) VALUES (999); RETURN 1; END")
        query = "SELECT id, updated_at, sql_writes() AS n FROM sql_people"
    insert(source, [person(1, T0)])
    job = make_job(owner, kind, credentials(kind), table="", query=query)
    work()
    db.session.refresh(job)
    assert job.status == "failed"
    assert any("read-only" in message.lower() or "read only" in message.lower()
               for message in events(job))
    with source.connect() as connection:
        assert connection.exec_driver_sql("SELECT count(*) FROM sql_people").scalar() == 1


def test_refused_credentials_mark_the_authorization_unhealthy(app, work, owner, kind, source):
    wrong = {"username": "nobody_here"} if kind == "postgresql" else {"password": "wrong-pw"}
    job = make_job(owner, kind, credentials(kind, **wrong))
    work()
    db.session.refresh(job)
    assert job.authorization.health == "unhealthy"
    assert "refused the credentials" in job.authorization.health_message


def test_too_many_connections_sleeps_until_retry_after(app, work, owner, kind, source):
    boot = _admin(kind)
    with boot.connect() as connection:
        if kind == "postgresql":
            connection.exec_driver_sql("DROP ROLE IF EXISTS portal_limited")
            connection.exec_driver_sql("CREATE ROLE portal_limited LOGIN CONNECTION LIMIT 0")
            creds = credentials(kind, username="portal_limited")
        else:
            connection.execute(sa.text("DROP USER IF EXISTS 'portal_lim'@'%'"))
            connection.execute(sa.text(
                f"CREATE USER 'portal_lim'@'%' IDENTIFIED BY '{PASSWORD}' "
                "WITH MAX_USER_CONNECTIONS 1"))
            connection.execute(sa.text(f"GRANT SELECT ON {SOURCE_DB}.* TO 'portal_lim'@'%'"))
            creds = credentials(kind, username="portal_lim")
    holder = None
    if kind == "mysql":  # the one connection the user may have, taken
        holder = sql._Target(kind, creds).connect_mysql()
    try:
        with pytest.raises(RateLimited):
            sql.check(kind, "password", creds)
        job = make_job(owner, kind, creds)
        before = datetime.now(UTC)
        work()
        db.session.refresh(job)
        assert job.status == "sleeping"
        wait = (job.next_run_at.replace(tzinfo=UTC) - before).total_seconds()
        assert 25 <= wait <= 40  # Retry-After: 30 s
    finally:
        if holder:
            holder.close()
        boot.dispose()


# -- Export, end to end -------------------------------------------------------------------


def test_export_upserts_added_and_deletes_removed(app, work, owner, kind, source):
    say({"email": "ann@example.com", "plan": "pro", "city": "Oslo"},
        {"email": "bob@example.com", "plan": "free"},
        {"user_id": 7, "plan": "pro"},
        {"email": "cy@example.com", "plan": "pro"})
    audience = make_audience(owner, [{"field": "plan", "op": "equals", "value": "pro"}])
    job = make_job(owner, kind, credentials(kind), job_type="export",
                   audience=audience.slug, table="sql_out", batch_size=1)
    assert work()

    def table() -> dict:
        with source.connect() as connection:
            found = connection.exec_driver_sql(
                "SELECT identifier, fields FROM sql_out").all()
        return {key: value if isinstance(value, dict) else __import__("json").loads(value)
                for key, value in found}

    assert table() == {"ann@example.com": {"email": "ann@example.com", "plan": "pro",
                                           "city": "Oslo"},
                       "cy@example.com": {"email": "cy@example.com", "plan": "pro"}}
    db.session.refresh(job)
    assert (job.added_total, job.removed_total, job.omitted_total) == (2, 0, 1)

    say({"email": "ann@example.com", "plan": "free"},
        {"email": "bob@example.com", "plan": "pro"}, at=100)
    run_job_now(job, by=owner)
    assert work()
    assert sorted(table()) == ["bob@example.com", "cy@example.com"]
    db.session.refresh(job)
    assert (job.added_total, job.removed_total) == (3, 1)


