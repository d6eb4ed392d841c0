"""PostgreSQL and MySQL (MariaDB): import a table or a SELECT into a stream, a batch at a
time by an "updated at" column; export an audience to a table.

Two providers share this module, "postgresql" (psycopg 3) and "mysql" (PyMySQL), both used
through SQLAlchemy Core. The authorization holds host, port, database, username, password
and a TLS mode: disable, require (encrypted, the server's certificate not checked) or
verify-full (the certificate must be valid for the host, checked against the system's CAs).
Host, port and TLS mode are destination fields: changing one asks for the password again.

Outbound policy: every connection first resolves the host with `outbound.resolve(host,
port)` (each address checked) and then connects to the first checked address, never
resolving the name again:
- psycopg: `host=<name>, hostaddr=<checked address>`; libpq connects to hostaddr and still
  uses the name for TLS (SNI and the verify-full host name check);
- PyMySQL: we open the TCP socket to the checked address ourselves and hand it to
  `Connection.connect(sock)`; PyMySQL's `host` stays the name, which TLS uses as the
  server name to verify.
Timeouts: connecting 5 s; a statement 30 s (PostgreSQL statement_timeout; MariaDB
max_statement_time / MySQL max_execution_time, plus a 60 s socket read timeout).

Import ("Import table or query"): a table (the menu lists the database's tables and views)
or one read-only SELECT (the whole unit runs in a READ ONLY transaction, and the SELECT
must be a single statement: no ";", no comments). Each unit reads

    SELECT * FROM <table or (query) AS src>
    WHERE u > :t OR (u = :t AND k > :k) ORDER BY u, k LIMIT n

where u is the "updated at" column and k a unique, non-null key column that breaks ties;
the cursor keeps (t, k) of the last row written, so rows sharing a timestamp across a batch
boundary are neither lost nor read twice. Rows whose u is NULL are never read. Values are
made JSON-safe (Decimal -> number or text, dates -> ISO 8601, bytes -> base64, UUID ->
text). A message's dedupe key is source, key and u: re-reading a row writes nothing, a
changed row (a later u) is a new message.

Export ("Export audience to table"): each unit takes the next window of the audience's
changes (what this job last sent), upserts the added members by identifier and deletes the
removed ones, in one transaction, then records the window as sent. The table is created
when missing: identifier (text, primary key), fields (JSON), updated_at.

Errors: rejected credentials -> AuthError; unknown database, table or column, a refused
statement -> ConfigError naming it; refused connection, timeout, dropped connection ->
ProviderError (retried); "too many connections" -> RateLimited (30 s). No message holds
the password.
"""

from __future__ import annotations

import base64
import json
import re
import socket
import ssl
import uuid
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import mysql as mysql_dialect
from sqlalchemy.dialects import postgresql as pg_dialect
from sqlalchemy.pool import NullPool

from providers import outbound
from providers.base import (
    AuthError,
    AuthMethod,
    ConfigError,
    JobType,
    OutMessage,
    Provider,
    ProviderError,
    RateLimited,
    RunContext,
    WorkResult,
    audience_field,
)
from providers.files import STREAM_PATTERN

CONNECT_SECONDS = 5
STATEMENT_SECONDS = 30
READ_SECONDS = 60
DEFAULT_BATCH = 500
MAX_BATCH = 5000
TLS_MODES = ("disable", "require", "verify-full")
IDENTIFIER_PATTERN = "^[A-Za-z_][A-Za-z0-9_$]{0,62}(\\.[A-Za-z_][A-Za-z0-9_$]{0,62})?$"
COLUMN_PATTERN = "^[A-Za-z_][A-Za-z0-9_$]{0,62}$"


# -- Connecting ---------------------------------------------------------------------------

def _auth_schema(default_port: int) -> dict[str, Any]:
    properties: dict[str, Any] = {
        "host": {
            "type": "string", "title": "Host", "x-destination": True,
            "description": "The database server's host name or IP address.",
            "pattern": "^[A-Za-z0-9]([A-Za-z0-9.:-]{0,252})$",
            "x-pattern-message": "Enter a host name or IP address, without a scheme or port.",
        },
        "port": {
            "type": "integer", "title": "Port", "x-destination": True,
            "minimum": 1, "maximum": 65535, "default": default_port,
        },
        "database": {
            "type": "string", "title": "Database", "minLength": 1, "maxLength": 128,
            "description": "The database to connect to.",
        },
        "username": {"type": "string", "title": "Username", "minLength": 1,
                     "maxLength": 128},
        "password": {
            "type": "string", "title": "Password", "writeOnly": True, "minLength": 1,
            "description": "Give the portal a user of its own, with only the rights its jobs "
            "need (SELECT for imports; CREATE, INSERT, UPDATE, DELETE on the export table).",
        },
        "tls": {
            "type": "string", "title": "TLS", "x-destination": True,
            "enum": list(TLS_MODES),
            "x-enum-labels": ["Off (trusted network only)", "Required, certificate not checked",
                              "Required, certificate checked for the host"],
            "default": "verify-full",
        },
    }
    return {"type": "object", "required": list(properties), "additionalProperties": False,
            "x-order": list(properties), "properties": properties}


def _need(credentials: dict[str, Any], name: str) -> Any:
    value = credentials.get(name)
    if value in (None, ""):
        raise ConfigError(f"The connection has no {name}; edit the connection and enter it.",
                          code="missing_credentials")
    return value


class _Target:
    """Where and how to connect, from an authorization's credentials."""

    def __init__(self, kind: str, credentials: dict[str, Any]):
        self.kind = kind
        self.host = str(_need(credentials, "host")).strip()
        try:
            self.port = int(credentials.get("port") or DEFAULT_PORTS[kind])
        except (TypeError, ValueError):
            raise ConfigError("The connection's port must be a number.") from None
        self.database = str(_need(credentials, "database"))
        self.username = str(_need(credentials, "username"))
        self.password = str(credentials.get("password") or "")
        self.tls = credentials.get("tls") or "verify-full"
        if self.tls not in TLS_MODES:
            raise ConfigError(f"The connection's TLS mode must be one of {', '.join(TLS_MODES)}.")

    @property
    def where(self) -> str:
        return f"{self.host}:{self.port}/{self.database}"

    def address(self) -> str:
        try:
            return str(outbound.resolve(self.host, self.port)[0])
        except OSError as exc:
            raise ProviderError(f"Cannot resolve the database host {self.host}: {exc}") from None

    def connect_postgresql(self):
        import psycopg

        options = {"disable": {"sslmode": "disable"}, "require": {"sslmode": "require"},
                   "verify-full": {"sslmode": "verify-full", "sslrootcert": "system"}}
        return psycopg.connect(
            host=self.host, hostaddr=self.address(), port=self.port, dbname=self.database,
            user=self.username, password=self.password, connect_timeout=CONNECT_SECONDS,
            options=f"-c statement_timeout={STATEMENT_SECONDS * 1000}",
            application_name="portal", **options[self.tls])

    def connect_mysql(self):
        import pymysql

        tls: ssl.SSLContext | None = None
        if self.tls == "require":
            tls = ssl.create_default_context()
            tls.check_hostname = False
            tls.verify_mode = ssl.CERT_NONE
        elif self.tls == "verify-full":
            tls = ssl.create_default_context()
        connection = pymysql.connect(
            host=self.host, port=self.port, user=self.username, password=self.password,
            database=self.database, ssl=tls, connect_timeout=CONNECT_SECONDS,
            read_timeout=READ_SECONDS, write_timeout=READ_SECONDS, charset="utf8mb4",
            defer_connect=True)
        sock = socket.create_connection((self.address(), self.port), timeout=CONNECT_SECONDS)
        try:
            connection.connect(sock)
        except BaseException:
            sock.close()
            raise
        with connection.cursor() as cursor:
            try:  # MariaDB (seconds), else MySQL (milliseconds)
                cursor.execute(f"SET SESSION max_statement_time = {STATEMENT_SECONDS}")
            except pymysql.MySQLError:
                cursor.execute(f"SET SESSION max_execution_time = {STATEMENT_SECONDS * 1000}")
        return connection

    def engine(self) -> sa.Engine:
        if self.kind == "postgresql":
            return sa.create_engine("postgresql+psycopg://", creator=self.connect_postgresql,
                                    poolclass=NullPool)
        return sa.create_engine("mysql+pymysql://", creator=self.connect_mysql,
                                poolclass=NullPool)


DEFAULT_PORTS = {"postgresql": 5432, "mysql": 3306}
NAMES = {"postgresql": "PostgreSQL", "mysql": "MySQL"}


def _clean(text: str, target: _Target) -> str:
    first = (text.strip().splitlines() or [""])[0].strip()
    if target.password and len(target.password) >= 3:
        first = first.replace(target.password, "[secret]")
    return first[:300]


def _translate(exc: BaseException, target: _Target) -> ProviderError:
    """A driver error as the contract's error, its message free of the password."""
    if isinstance(exc, ProviderError):
        return exc
    orig = getattr(exc, "orig", None) or exc
    name = NAMES[target.kind]
    where = target.where
    if isinstance(orig, OSError) and not hasattr(orig, "sqlstate"):
        return ProviderError(f"Cannot reach {name} at {where}: {_clean(str(orig), target)}")
    text = _clean(str(orig), target)
    sqlstate = getattr(orig, "sqlstate", None)
    number = orig.args[0] if target.kind == "mysql" and getattr(orig, "args", None) else None
    lowered = text.lower()
    if sqlstate == "53300" or number in (1040, 1203, 1226) or "too many connections" in lowered:
        return RateLimited(f"{name} at {where} has too many connections: {text}",
                           retry_after=30)
    if sqlstate in ("28P01", "28000") or number in (1045, 1698) or \
            "password authentication failed" in lowered or \
            ("role" in lowered and "does not exist" in lowered):
        return AuthError(f"{name} at {where} refused the credentials: {text}")
    if number == 1044:  # MySQL says the same of a database that is missing or forbidden
        return ConfigError(f"{name} at {where}: the database {target.database!r} does not "
                           f"exist or this user may not use it: {text}",
                           code="unknown_database")
    if sqlstate == "3D000" or number == 1049 or \
            ("database" in lowered and "does not exist" in lowered):
        return ConfigError(f"{name} at {where}: {text}", code="unknown_database")
    if sqlstate in ("42P01", "42703", "42601", "42883", "25006", "42501", "42804") or \
            number in (1146, 1054, 1064, 1142, 1143, 1792, 1109, 1327):
        return ConfigError(f"{name} at {where}: {text}", code="bad_statement")
    return ProviderError(f"{name} at {where}: {text}")


class _Session:
    """A connection for one unit of work, errors translated."""

    def __init__(self, kind: str, credentials: dict[str, Any]):
        self.target = _Target(kind, credentials)
        self.engine = self.target.engine()

    def __enter__(self) -> _Session:
        return self

    def __exit__(self, *exc_info) -> None:
        self.engine.dispose()

    def fail(self, exc: BaseException) -> ProviderError:
        return _translate(exc, self.target)


# -- Values -------------------------------------------------------------------------------

def json_safe(value: Any) -> Any:
    """A database value as JSON can hold it."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if value == value and value not in (float("inf"), float("-inf")) \
            else str(value)
    if isinstance(value, Decimal):
        if not value.is_finite():
            return str(value)
        return int(value) if value == value.to_integral_value() and abs(value) < 2**53 \
            else (float(value) if len(value.as_tuple().digits) <= 15 else str(value))
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, date | time):
        return value.isoformat()
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, bytes | bytearray | memoryview):
        return base64.b64encode(bytes(value)).decode()
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, dict):
        return {str(key): json_safe(item) for key, item in value.items()}
    if isinstance(value, list | tuple | set):
        return [json_safe(item) for item in value]
    return str(value)


def _encode(value: Any) -> list[Any]:
    """A cursor value, tagged with its type so it binds back as what it was."""
    if isinstance(value, datetime):
        return ["datetime", value.isoformat()]
    if isinstance(value, date):
        return ["date", value.isoformat()]
    if isinstance(value, Decimal):
        return ["decimal", str(value)]
    if isinstance(value, bytes | bytearray | memoryview):
        return ["bytes", base64.b64encode(bytes(value)).decode()]
    if isinstance(value, uuid.UUID):
        return ["uuid", str(value)]
    if isinstance(value, bool | int | float | str):
        return ["plain", value]
    return ["plain", str(value)]


def _decode(tagged: Any) -> Any:
    kind, value = tagged
    return {
        "datetime": datetime.fromisoformat, "date": date.fromisoformat, "decimal": Decimal,
        "bytes": base64.b64decode, "uuid": uuid.UUID,
    }.get(kind, lambda v: v)(value)


# -- Import -------------------------------------------------------------------------------

_SELECT = re.compile(r"^\s*select\b", re.IGNORECASE)


def checked_query(query: str) -> str:
    """The SELECT, when it is exactly one SELECT statement we can wrap; else ConfigError."""
    text = query.strip().rstrip(";").strip()
    if not _SELECT.match(text):
        raise ConfigError("The query must be one SELECT statement (it starts with SELECT).",
                          code="bad_query")
    if ";" in text:
        raise ConfigError("The query must be one SELECT statement: remove the ';' inside it.",
                          code="bad_query")
    if "--" in text or "/*" in text or "#" in text:
        raise ConfigError("The query may not hold comments (--, /* */, #); remove them.",
                          code="bad_query")
    return text


def _quote(engine: sa.Engine, name: str, what: str) -> str:
    pattern = IDENTIFIER_PATTERN if what == "table" else COLUMN_PATTERN
    if not re.match(pattern, name or ""):
        raise ConfigError(f"The {what} name {name!r} is not a plain SQL name.",
                          code="bad_name")
    prep = engine.dialect.identifier_preparer
    return ".".join(prep.quote_identifier(part) for part in name.split("."))


def _source(config: dict[str, Any]) -> tuple[str, str]:
    table = str(config.get("table") or "").strip()
    query = str(config.get("query") or "").strip()
    if bool(table) == bool(query):
        raise ConfigError("Give either a table or a query (one of them, not both).",
                          code="bad_source")
    return ("table", table) if table else ("query", checked_query(query))


def _begin_read_only(connection: sa.Connection) -> None:
    connection.exec_driver_sql("SET TRANSACTION READ ONLY")


def _dedupe_source(kind: str, value: str) -> str:
    if kind == "table":
        return value
    import hashlib

    return "q" + hashlib.sha256(value.encode()).hexdigest()[:12]


def run_import(ctx: RunContext, kind: str) -> WorkResult:
    """One unit: read the next batch after the cursor (t, k) and write it to the stream."""
    config = ctx.config
    stream = config.get("stream") or f"{kind}_rows"
    source_kind, source = _source(config)
    updated, key = str(config.get("updated_column") or ""), str(config.get("key_column") or "")
    size = max(1, min(int(config.get("batch_size") or DEFAULT_BATCH), MAX_BATCH))
    cursor = dict(ctx.cursor or {})
    with _Session(kind, ctx.credentials or {}) as session:
        engine = session.engine
        u, k = _quote(engine, updated, "column"), _quote(engine, key, "column")
        origin = (_quote(engine, source, "table") if source_kind == "table"
                  else "(" + source.replace("%", "%%") + ")")
        sql = f"SELECT * FROM {origin} AS src"
        params: tuple[Any, ...] = ()
        if cursor.get("t") is not None:
            t, last_key = _decode(cursor["t"]), _decode(cursor["k"])
            sql += f" WHERE src.{u} > %s OR (src.{u} = %s AND src.{k} > %s)"
            params = (t, t, last_key)
        else:
            sql += f" WHERE src.{u} IS NOT NULL"
        sql += f" ORDER BY src.{u}, src.{k} LIMIT {size}"
        try:
            with engine.connect() as connection:
                _begin_read_only(connection)
                result = connection.exec_driver_sql(sql, params)
                columns = list(result.keys())
                rows = [dict(zip(columns, row, strict=True)) for row in result.fetchall()]
                connection.rollback()
        except Exception as exc:
            raise session.fail(exc) from None
    if rows and (updated not in rows[0] or key not in rows[0]):
        missing = updated if updated not in rows[0] else key
        raise ConfigError(f"The rows have no column {missing!r}.", code="bad_statement")
    now = ctx.now()
    origin_key = _dedupe_source(source_kind, source)
    messages = []
    for row in rows:
        stamp = row[updated]
        event_time = stamp if isinstance(stamp, datetime) else now
        if event_time.tzinfo is None:
            event_time = event_time.replace(tzinfo=UTC)
        payload = {name: json_safe(value) for name, value in row.items()}
        dedupe = f"{origin_key}:{json.dumps(json_safe(row[key]))}:{json_safe(stamp)}"
        messages.append(OutMessage(dedupe, event_time, payload))
    added, omitted = ctx.sink.write(stream, messages) if messages else (0, 0)
    if rows:
        cursor["t"], cursor["k"] = _encode(rows[-1][updated]), _encode(rows[-1][key])
    cursor["rows"] = int(cursor.get("rows", 0)) + len(rows)
    what = f"table {source}" if source_kind == "table" else "the query"
    if not rows:
        since = json_safe(_decode(cursor["t"])) if cursor.get("t") else "the start"
        message = f"Nothing new in {what} after {since}"
    else:
        message = (f"Read {len(rows):,} row{'s' if len(rows) != 1 else ''} of {what} into "
                   f"stream '{stream}' ({added:,} new, {omitted:,} already there), through "
                   f"{updated} = {json_safe(rows[-1][updated])}")
    return WorkResult(added=added, omitted=omitted, cursor=cursor,
                      more_now=len(rows) == size, message=message)


def list_tables(kind: str, credentials: dict[str, Any]) -> list[tuple[str, str]]:
    """The tables and views of the database, for the import's menu."""
    with _Session(kind, credentials) as session:
        try:
            with session.engine.connect() as connection:
                inspector = sa.inspect(connection)
                names = inspector.get_table_names() + inspector.get_view_names()
        except Exception as exc:
            raise session.fail(exc) from None
    return [(name, name) for name in sorted(set(names))]


def check(kind: str, method_key: str, credentials: dict[str, Any]) -> str:
    """Test connection: connect and SELECT 1."""
    if method_key != "password":
        raise ConfigError(f"{NAMES[kind]} has no authorization method {method_key!r}.")
    with _Session(kind, credentials) as session:
        try:
            with session.engine.connect() as connection:
                connection.exec_driver_sql("SELECT 1").scalar_one()
                version = connection.dialect.server_version_info
        except Exception as exc:
            raise session.fail(exc) from None
        shown = ".".join(str(part) for part in (version or ())[:3])
        return f"Connected to {session.target.where}" + (f" (server {shown})" if shown else "")


# -- Export -------------------------------------------------------------------------------

def _export_table(name: str, schema: str | None) -> sa.Table:
    return sa.Table(
        name, sa.MetaData(),
        sa.Column("identifier", sa.String(255), primary_key=True),
        sa.Column("fields", sa.JSON, nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        schema=schema,
    )


def run_export(ctx: RunContext, kind: str) -> WorkResult:
    """One unit: the next window of the audience's changes, written to the table in one
    transaction (added upserted, removed deleted), then recorded as sent."""
    config = ctx.config
    audience = config["audience"]
    identifier = config.get("identifier") or "email"
    size = max(1, min(int(config.get("batch_size") or DEFAULT_BATCH), MAX_BATCH))
    name = str(config.get("table") or "")
    if not re.match(IDENTIFIER_PATTERN, name):
        raise ConfigError(f"The table name {name!r} is not a plain SQL name.", code="bad_name")
    schema, _, table_name = name.rpartition(".")
    cursor = dict(ctx.cursor or {})
    after = int(cursor.get("after_profile_id", 0))
    changes = ctx.source.audience_changes(audience, identifier=identifier,
                                          after_profile_id=after, limit=size)
    cursor["after_profile_id"] = 0 if changes.complete else changes.through
    table = _export_table(table_name, schema or None)
    now = ctx.now()
    with _Session(kind, ctx.credentials or {}) as session:
        try:
            with session.engine.begin() as connection:
                table.create(connection, checkfirst=True)
                if changes.added:
                    rows = [{"identifier": member.identifier,
                             "fields": json_safe(member.fields), "updated_at": now}
                            for member in changes.added]
                    if kind == "postgresql":
                        statement = pg_dialect.insert(table)
                        statement = statement.on_conflict_do_update(
                            index_elements=["identifier"],
                            set_={"fields": statement.excluded.fields,
                                  "updated_at": statement.excluded.updated_at})
                    else:
                        statement = mysql_dialect.insert(table)
                        statement = statement.on_duplicate_key_update(
                            fields=statement.inserted.fields,
                            updated_at=statement.inserted.updated_at)
                    connection.execute(statement, rows)
                gone = [member.identifier for member in changes.removed]
                if gone:
                    connection.execute(table.delete().where(table.c.identifier.in_(gone)))
        except Exception as exc:
            raise session.fail(exc) from None
    ctx.source.audience_sent(changes)
    return WorkResult(
        added=len(changes.added), removed=len(changes.removed), omitted=changes.omitted,
        cursor=cursor, more_now=not changes.complete,
        message=f"Audience '{audience}' to table {name}: {len(changes.added):,} added, "
        f"{len(changes.removed):,} removed, {changes.omitted:,} omitted (no {identifier})")


# -- The providers ------------------------------------------------------------------------

def _import_schema(kind: str) -> dict[str, Any]:
    properties: dict[str, Any] = {
        "table": {
            "type": "string", "title": "Table",
            "description": "The table or view to read (schema.table allowed). Leave empty "
            "to use a query instead.",
            "pattern": IDENTIFIER_PATTERN,
            "x-pattern-message": "Enter a table name (letters, digits, _ and $), optionally "
            "schema.table.",
            "x-options": "provider:tables",
        },
        "query": {
            "type": "string", "title": "Or a SELECT query",
            "description": "Instead of a table: one SELECT statement (no ';', no comments), "
            "run in a read-only transaction. Its result must hold the two columns below.",
            "maxLength": 20000, "x-widget": "textarea",
        },
        "updated_column": {
            "type": "string", "title": "Updated-at column",
            "description": "A column that grows when a row changes (a timestamp or a "
            "number). Each run reads rows changed since the last one; rows where it is "
            "empty are not read.",
            "pattern": COLUMN_PATTERN, "default": "updated_at",
        },
        "key_column": {
            "type": "string", "title": "Key column",
            "description": "A unique, never empty column (the primary key): it orders rows "
            "that share an updated-at value, so none is lost or read twice.",
            "pattern": COLUMN_PATTERN, "default": "id",
        },
        "stream": {
            "type": "string", "title": "Target stream",
            "description": "The stream the rows land in: lower-case letters, digits, - and _.",
            "pattern": STREAM_PATTERN, "default": f"{kind}_rows",
        },
        "batch_size": {
            "type": "integer", "title": "Rows per batch",
            "description": f"Rows read in one go (1–{MAX_BATCH:,}).",
            "minimum": 1, "maximum": MAX_BATCH, "default": DEFAULT_BATCH,
        },
    }
    return {"type": "object", "required": ["updated_column", "key_column", "stream"],
            "additionalProperties": False, "x-order": list(properties),
            "properties": properties}


def _export_schema() -> dict[str, Any]:
    properties: dict[str, Any] = {
        "audience": audience_field("Who is written: each run adds the members who joined since the "
                                   "last run and deletes those who left."),
        "table": {
            "type": "string", "title": "Table",
            "description": "Created when missing, with the columns identifier (primary key), "
            "fields (JSON) and updated_at.",
            "pattern": IDENTIFIER_PATTERN,
            "x-pattern-message": "Enter a table name (letters, digits, _ and $), optionally "
            "schema.table.",
            "default": "portal_audience",
        },
        "identifier": {
            "type": "string", "title": "Identifier field",
            "description": "The profile field that keys the rows. Members without it are "
            "omitted (counted, not written).",
            "pattern": "^[^\\s]{1,255}$", "default": "email",
            "x-pattern-message": "Enter a field name, without spaces.",
        },
        "batch_size": {
            "type": "integer", "title": "Members per transaction",
            "minimum": 1, "maximum": MAX_BATCH, "default": DEFAULT_BATCH,
        },
    }
    return {"type": "object", "required": ["audience", "table"],
            "additionalProperties": False, "x-order": list(properties),
            "properties": properties}


def _provider(kind: str, description: str) -> Provider:
    name = NAMES[kind]
    return Provider(
        key=kind, name=name, category="Databases", description=description,
        logo=f"{kind}.svg",
        auth_methods=(AuthMethod(
            "password", "Username and password", kind="basic",
            schema=_auth_schema(DEFAULT_PORTS[kind]),
            help=f"A {name} user and its password; the portal connects to the host you "
            "give, with TLS as you choose."),),
        job_types=(
            JobType(
                key="import", name="Import table or query", kind="import",
                description=f"Reads a {name} table, or the result of a SELECT, into a "
                "stream; each run reads only rows changed since the last one.",
                config_schema=_import_schema(kind),
                run=lambda ctx: run_import(ctx, kind),
                default_cadence="Every hour",
                default_schedule={"kind": "interval", "every_minutes": 60},
                option_sources={"tables": lambda credentials: list_tables(kind, credentials)},
            ),
            JobType(
                key="export", name="Export audience to table", kind="export",
                description=f"Keeps a {name} table of an audience's members up to date: "
                "members who join are upserted, those who leave are deleted.",
                config_schema=_export_schema(),
                run=lambda ctx: run_export(ctx, kind),
                default_cadence="Every hour",
                default_schedule={"kind": "interval", "every_minutes": 60},
            ),
        ),
        check=lambda method_key, credentials: check(kind, method_key, credentials),
    )


POSTGRESQL = _provider("postgresql", "Import PostgreSQL tables or queries, and export "
                       "audiences to a PostgreSQL table.")
MYSQL = _provider("mysql", "Import MySQL or MariaDB tables or queries, and export audiences "
                  "to a MySQL table.")
PROVIDER = POSTGRESQL  # the module's first provider; MYSQL is the second
