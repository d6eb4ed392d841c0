"""The instance folder is its owner's only: the folder 0700, every file in it 0600 (the
database and its -wal/-shm, the keys, the first admin's password, the bundled Redis')."""

from __future__ import annotations

import logging
import os
import sqlite3
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from redis import Redis
from sqlalchemy import text

from portal import create_app
from portal.extensions import db
from tests.conftest import ROOT, TEST_VAULT_KEYS


@pytest.fixture
def loose_umask(monkeypatch):
    """The common umask (files 0644, folders 0755), whatever the test runner's is."""
    for name in ("SECRET_KEY", "PORTAL_VAULT_KEYS", "DATABASE_URL", "PORTAL_INSTANCE_PATH"):
        monkeypatch.delenv(name, raising=False)
    previous = os.umask(0o022)
    yield
    os.umask(previous)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def modes(instance: Path) -> dict[str, int]:
    return {str(path.relative_to(instance)): mode(path) for path in instance.rglob("*")
            if path.is_file() or path.is_socket()}


def use_database(app) -> None:
    with app.app_context():
        db.session.execute(text("CREATE TABLE IF NOT EXISTS probe (n INTEGER)"))
        db.session.execute(text("INSERT INTO probe VALUES (1)"))
        db.session.commit()
        db.session.remove()


def test_a_new_instance_folder_and_its_files_are_the_owners_only(loose_umask, tmp_path,
                                                                redis_url):
    instance = tmp_path / "instance"
    app = create_app({"INSTANCE_PATH": str(instance), "REDIS_URL": redis_url})
    with app.app_context():
        result = app.test_cli_runner().invoke(args=["setup"])  # migrations, first admin
        db.session.remove()
    assert result.exit_code == 0, result.output
    use_database(app)
    with app.app_context():  # a second connection while the first one's WAL is there
        assert db.session.execute(text("SELECT count(*) FROM probe")).scalar() == 1
        found = modes(instance)
        db.engine.dispose()
    assert mode(instance) == 0o700
    assert {"portal.db", "portal.db-wal", "portal.db-shm", "secret_key", "vault-keys",
            "initial-admin-password"} <= set(found)
    assert found == dict.fromkeys(found, 0o600)


def test_an_older_instance_open_to_others_is_tightened_with_a_warning(loose_umask, tmp_path,
                                                                      redis_url, caplog):
    instance = tmp_path / "instance"
    instance.mkdir(mode=0o755)
    os.chmod(instance, 0o755)
    with sqlite3.connect(instance / "portal.db") as connection:  # made as before: 0644
        connection.execute("CREATE TABLE probe (n INTEGER)")
    (instance / "secret_key").write_text("an older key")
    assert mode(instance / "portal.db") == 0o644 and mode(instance / "secret_key") == 0o644
    with caplog.at_level(logging.WARNING, logger="portal.config"):
        app = create_app({"INSTANCE_PATH": str(instance), "REDIS_URL": redis_url,
                          "PORTAL_VAULT_KEYS": TEST_VAULT_KEYS})
    assert app.config["SECRET_KEY"] == "an older key"
    warned = " ".join(record.getMessage() for record in caplog.records)
    assert "secret_key was open to other users (mode 644); it is now 600" in warned
    use_database(app)
    assert mode(instance) == 0o700
    found = modes(instance)
    assert "portal.db-wal" in found and found == dict.fromkeys(found, 0o600)


def test_the_bundled_redis_keeps_its_socket_and_snapshot_private(loose_umask, tmp_path):
    instance = tmp_path / "instance"
    env = {key: value for key, value in os.environ.items() if key != "REDIS_URL"}
    env.update(PORTAL_INSTANCE_PATH=str(instance), SECRET_KEY="k",
               PORTAL_VAULT_KEYS=TEST_VAULT_KEYS)
    process = subprocess.Popen([sys.executable, "-m", "workers", "redis"], cwd=ROOT, env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        socket = instance / "redis.sock"
        deadline = time.monotonic() + 15
        while not socket.exists():
            assert time.monotonic() < deadline and process.poll() is None, "no redis"
            time.sleep(0.05)
        client = Redis(unix_socket_path=str(socket))
        for _ in range(100):
            try:
                client.set("probe", "1")
                break
            except Exception:
                time.sleep(0.05)
        client.save()  # writes dump.rdb
        client.close()
        assert mode(instance) == 0o700 and mode(instance / "redis") == 0o700
        found = modes(instance)
        assert "redis/dump.rdb" in found and found["redis/dump.rdb"] == 0o600
        assert not found["redis.sock"] & 0o077
    finally:
        process.terminate()
        process.wait(10)
