"""`flask --app wsgi ...` commands and the schema's migrations."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect, select

from portal.extensions import db
from portal.models import User


def test_users_create_and_sign_in(app, client):
    runner = app.test_cli_runner()
    result = runner.invoke(args=["users", "create", "Ops@Example.com", "--role", "operator",
                                 "--password", "long enough pw"])
    assert result.exit_code == 0, result.output
    assert "Created operator ops@example.com." in result.output
    user = db.session.scalar(select(User).where(User.email == "ops@example.com"))
    assert user.role == "operator" and user.check_password("long enough pw")
    assert user.password_hash != "long enough pw"


def test_users_create_refuses_bad_input(app):
    runner = app.test_cli_runner()
    short = runner.invoke(args=["users", "create", "a@b.c", "--password", "short"])
    assert short.exit_code != 0 and "at least 12 characters" in short.output
    role = runner.invoke(args=["users", "create", "a@b.c", "--role", "root",
                               "--password", "long enough pw"])
    assert role.exit_code != 0 and "root" in role.output
    runner.invoke(args=["users", "create", "a@b.c", "--password", "long enough pw"])
    again = runner.invoke(args=["users", "create", "a@b.c", "--password", "long enough pw"])
    assert again.exit_code != 0 and "already exists" in again.output


def test_set_password(app):
    runner = app.test_cli_runner()
    runner.invoke(args=["users", "create", "a@b.c", "--password", "first password"])
    result = runner.invoke(args=["users", "set-password", "a@b.c"],
                           input="second password\nsecond password\n")
    assert result.exit_code == 0, result.output
    db.session.expire_all()
    assert db.session.scalar(select(User)).check_password("second password")
    missing = runner.invoke(args=["users", "set-password", "x@y.z", "--password", "x" * 9])
    assert missing.exit_code != 0 and "no user" in missing.output


def test_setup_creates_one_admin_and_says_how_to_sign_in(app):
    runner = app.test_cli_runner()
    first = runner.invoke(args=["setup"])
    assert first.exit_code == 0, first.output
    password = first.output.split("with password ", 1)[1].split()[0]
    admin = db.session.scalar(select(User))
    assert admin.email == "admin@localhost" and admin.role == "admin"
    assert admin.check_password(password)
    second = runner.invoke(args=["setup"])
    assert second.exit_code == 0 and "initial-admin-password" in second.output
    assert db.session.query(User).count() == 1
    runner.invoke(args=["users", "set-password", "admin@localhost",
                        "--password", "a new admin password"])
    third = runner.invoke(args=["setup"])
    assert "initial-admin-password" not in third.output


def test_migrations_match_the_models(app):
    # With the options `flask db migrate` runs with (what the models leave to migrations).
    options = app.extensions["migrate"].configure_args
    with db.engine.connect() as connection:
        diff = compare_metadata(MigrationContext.configure(connection, opts=options),
                                db.metadata)
    assert diff == []
    tables = set(inspect(db.engine).get_table_names())
    assert db.engine.dialect.name != "sqlite" or "job_events_search" in tables, (
        "the text index is there, only left out of the comparison")
