"""`flask --app wsgi ...` commands: users, setup, jobs purge, vault rotate / new-key,
seed-demo."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import click
from flask import Flask, current_app
from flask.cli import AppGroup
from flask_migrate import upgrade
from sqlalchemy import func, select

from portal import audit, passwords
from portal.config import write_private
from portal.extensions import db
from portal.jobs import purge
from portal.models import ROLES, User
from portal.models.types import utcnow

users = AppGroup("users", help="Manage the people who can sign in.")
jobs = AppGroup("jobs", help="Look after jobs.")
vault_group = AppGroup("vault", help="Look after the Vault's encryption keys.")
tokens_group = AppGroup("tokens", help="API access tokens.")
data = AppGroup("data", help="Look after the data store.")
FIRST_ADMIN = "admin@localhost"


def create_user(email: str, role: str, password: str, name: str = "") -> User:
    email = email.strip().lower()
    if role not in ROLES:
        raise click.BadParameter(f"role must be one of {', '.join(ROLES)}")
    if problem := passwords.problems(password, email):
        raise click.BadParameter(problem, param_hint="'--password'")
    if db.session.scalar(select(User).where(User.email == email)):
        raise click.ClickException(f"a user with email {email} already exists")
    user = User(email=email, role=role, name=name)
    user.set_password(password)
    db.session.add(user)
    db.session.flush()
    audit.record("created", "user", user.id, user.email, actor="command line",
                 summary=f"User created with the {role} role")
    db.session.commit()
    return user


@users.command("create")
@click.argument("email")
@click.option("--role", type=click.Choice(ROLES), default="viewer", show_default=True)
@click.option("--password", prompt=True, hide_input=True, confirmation_prompt=True)
@click.option("--name", default="", help="Display name.")
def users_create(email: str, role: str, password: str, name: str) -> None:
    """Create a user who can sign in."""
    user = create_user(email, role, password, name)
    click.echo(f"Created {user.role} {user.email}.")


@users.command("set-password")
@click.argument("email")
@click.option("--password", prompt=True, hide_input=True, confirmation_prompt=True)
def users_set_password(email: str, password: str) -> None:
    """Set a user's password."""
    user = db.session.scalar(select(User).where(User.email == email.strip().lower()))
    if user is None:
        raise click.ClickException(f"no user with email {email}")
    if problem := passwords.problems(password, user.email):
        raise click.BadParameter(problem, param_hint="'--password'")
    user.set_password(password)
    audit.record("password_set", "user", user.id, user.email, actor="command line",
                 summary="Password changed")
    db.session.commit()
    initial = _initial_password_file()
    if user.email == FIRST_ADMIN and initial.exists():
        initial.unlink()
    click.echo(f"Password changed for {user.email}.")


def _initial_password_file():
    return Path(current_app.instance_path) / "initial-admin-password"


@click.command("setup")
def setup() -> None:
    """Apply database migrations and make sure someone can sign in."""
    upgrade()
    click.echo("Database is up to date.")
    if db.session.scalar(select(func.count()).select_from(User)):
        initial = _initial_password_file()
        if initial.exists():
            click.echo(f"Sign in as {FIRST_ADMIN} with the password in {initial}.")
        return
    password = passwords.generate()
    create_user(FIRST_ADMIN, "admin", password, name="Administrator")
    initial = _initial_password_file()
    write_private(initial, password + "\n")
    click.echo(
        f"Created the first admin. Sign in as {FIRST_ADMIN} with password {password}\n"
        f"(kept in {initial} until you change it with "
        f"`flask --app wsgi users set-password {FIRST_ADMIN}`)."
    )


@jobs.command("purge")
@click.option("--days", type=click.IntRange(min=0), default=None,
              help="Retention in days (default: PORTAL_PURGE_DAYS, 90).")
@click.option("--dry-run", is_flag=True, help="Only count what would be purged.")
def jobs_purge(days: int | None, dry_run: bool) -> None:
    """Delete failed, paused and completed jobs (and their events) past their retention;
    jobs switched to Keep on their summary are passed over."""
    days = current_app.config["PORTAL_PURGE_DAYS"] if days is None else days
    count = purge(now=utcnow(), days=days, dry_run=dry_run)
    verb = "Would purge" if dry_run else "Purged"
    click.echo(f"{verb} {count} job(s) settled for more than {days} days.")


@vault_group.command("rotate")
def vault_rotate() -> None:
    """Re-encrypt every stored credentials version, and every secret in a job's or draft's
    configuration, under the active key (the first of PORTAL_VAULT_KEYS). Afterwards
    older keys can be removed from the setting."""
    from portal import keys, vault

    try:
        result = vault.rotate()
    except vault.KeyUnavailable as exc:
        db.session.rollback()
        raise click.ClickException(f"{exc} Nothing after it was re-encrypted.") from None
    click.echo(f"Re-encrypted {result.done} credentials version(s) and configuration(s) "
               f"with key “{keys.keyring().active_id}”.")
    if result.unreadable:
        raise click.ClickException(
            f"{len(result.unreadable)} configuration secret(s) could not be decrypted with "
            f"any key and were left as they were: {', '.join(result.unreadable)}. Add the "
            "key they need back after the active one and run this again, or enter them "
            "again (a job that needs one fails, saying so).")


@vault_group.command("new-key")
def vault_new_key() -> None:
    """Print a new key to put first in PORTAL_VAULT_KEYS (then run `vault rotate`)."""
    from portal import keys

    click.echo(keys.new_key())


@tokens_group.command("create")
@click.argument("name")
@click.option("--role", type=click.Choice(ROLES), required=True)
@click.option("--days", type=click.Choice(["7", "30", "90"]), default=None,
              help="Expire after this many days (default: never).")
@click.option("--description", default="")
@click.option("--by", "by_email", default=None,
              help="The admin the token acts for (default: the first active admin).")
def tokens_create(name: str, role: str, days: str | None, description: str,
                  by_email: str | None) -> None:
    """Create an API token and print it once (only its hash is stored)."""
    from portal import tokens

    query = select(User).where(User.active.is_(True), User.role == "admin")
    if by_email:
        query = query.where(func.lower(User.email) == by_email.strip().lower())
    by = db.session.scalars(query.order_by(User.id).limit(1)).first()
    if by is None:
        raise click.ClickException("No such active admin: create one with `users create`.")
    try:
        token, raw = tokens.create(name=name, description=description, role=role,
                                   days=int(days) if days else None, by=by)
    except tokens.TokenRefused as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"Token {token.id} “{token.name}” ({role}) acting for {by.email}. "
               "Copy it now; it is not shown again:", err=True)
    click.echo(raw)


@data.command("rebuild")
@click.option("--batch", type=click.IntRange(min=1), default=2000, show_default=True,
              help="Messages read at a time.")
def data_rebuild(batch: int) -> None:
    """Rebuild every profile from the stored messages (oldest first), in one transaction."""
    from portal import profiles

    count = profiles.rebuild(batch=batch)
    db.session.commit()
    click.echo(f"Rebuilt {count:,} profile(s) from the stored messages.")


@contextmanager
def _redis_up():
    """Redis as the workers use it; the bundled one started for a while when it is the
    portal's Redis and not running yet (before `make run` starts it)."""
    from redis.exceptions import RedisError

    from portal.queues import redis_connection
    from workers import redis_server

    def answers() -> bool:
        try:
            return bool(redis_connection().ping())
        except (RedisError, OSError):
            return False

    if answers():
        yield
        return
    if not current_app.config["PORTAL_REDIS_EMBEDDED"]:
        raise click.ClickException(f"Redis at {current_app.config['REDIS_URL']} does not "
                                   "answer; start it and run this again.")
    socket = Path(current_app.config["REDIS_URL"].removeprefix("unix://"))
    command = redis_server.command(Path(current_app.instance_path) / "redis", unixsocket=socket)
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               umask=0o077)
    try:
        for _ in range(100):
            if answers():
                break
            time.sleep(0.1)
        else:
            raise click.ClickException("The bundled Redis did not start.")
        yield
    finally:
        process.terminate()  # it saves its snapshot on the way out
        process.wait(30)


@contextmanager
def _receiver(port: int):
    """This app served on 127.0.0.1:`port` while the demo's export delivers to it; when
    the port is taken, the portal already running there receives."""
    from werkzeug.serving import WSGIRequestHandler, make_server

    class Quiet(WSGIRequestHandler):
        def log_request(self, *args, **kwargs) -> None:  # the summary says what arrived
            pass

    try:
        server = make_server("127.0.0.1", port, current_app._get_current_object(),
                             threaded=True, request_handler=Quiet)
    except OSError:
        click.echo(f"Port {port} is in use: the demo export delivers to the portal there.")
        yield
        return
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield
    finally:
        server.shutdown()
        thread.join(10)


def _run_jobs() -> None:
    """A burst RQ worker on the portal's Redis until the queues are empty."""
    from rq import Queue, SimpleWorker

    from portal.queues import QUEUE_NAMES, redis_connection

    connection = redis_connection()
    queues = [Queue(name, connection=connection) for name in QUEUE_NAMES]
    with current_app.app_context():  # its own session, as in a worker process
        SimpleWorker(queues, connection=connection).work(burst=True, logging_level="WARNING")
    db.session.expire_all()


def _wants_demo() -> bool:
    """`make run`'s question, asked once: DEMO=1 says yes, DEMO=0 no; without a terminal
    (or in CI) the answer is no and nothing waits."""
    from portal.models import Job

    choice = os.environ.get("DEMO", "").strip().lower()
    if choice in ("1", "yes", "true", "y"):
        return True
    if choice in ("0", "no", "false", "n"):
        return False
    asked = Path(current_app.instance_path) / "demo-offered"
    if asked.exists() or db.session.scalar(select(Job.id).limit(1)) is not None:
        return False
    if os.environ.get("CI") or not (sys.stdin.isatty() and sys.stdout.isatty()):
        click.echo("Tip: `DEMO=1 make run` (or `flask --app wsgi seed-demo`) loads a demo.")
        return False
    write_private(asked, "asked\n")
    return click.confirm("Load the demo: 300 sample people, two audiences and a webhook "
                         "export, all really run (about half a minute)?", default=False)


@click.command("seed-demo")
@click.option("--port", type=click.IntRange(1, 65535), default=None,
              help="The port the portal serves on (default: PORT, else 5000); the demo "
                   "export delivers to http://127.0.0.1:PORT/demo/hook.")
@click.option("--offer", is_flag=True,
              help="As `make run` calls it: seed when DEMO=1; else, the first time on a "
                   "portal without jobs, ask (on a terminal only; never in CI).")
def seed_demo(port: int | None, offer: bool) -> None:
    """Make the demo world (sample imports, profiles, audiences, a webhook export to the
    demo's own receiver), every job run for real. Does nothing if the demo exists."""
    from portal import demo

    if demo.seeded():
        if not offer:
            click.echo("The demo is already here: nothing to do.")
        return
    if offer and not _wants_demo():
        return
    port = port or int(os.environ.get("PORT") or 5000)
    hook_url = f"http://127.0.0.1:{port}/demo/hook"
    try:
        with _redis_up(), _receiver(port):
            result = demo.seed(hook_url=hook_url, run_jobs=_run_jobs, say=click.echo)
    except demo.DemoRefused as exc:
        db.session.rollback()
        raise click.ClickException(str(exc)) from None
    if result.existed:
        click.echo("The demo is already here: nothing to do.")
        return
    if result.password:
        click.echo(f"Created the admin {result.user} with password {result.password} "
                   "(change it with `flask --app wsgi users set-password`).")
    else:
        click.echo(f"Sign in as {result.user} (an existing user) to look around.")
    click.echo(f"Demo ready: {len(result.jobs)} jobs, {result.profiles:,} profiles, audiences "
               f"{', '.join(result.audiences)}; the receiver took {result.deliveries} "
               f"delivery(ies): see /demo.")


def register(app: Flask) -> None:
    app.cli.add_command(seed_demo)
    app.cli.add_command(tokens_group)
    app.cli.add_command(data)
    app.cli.add_command(users)
    app.cli.add_command(jobs)
    app.cli.add_command(vault_group)
    app.cli.add_command(setup)
