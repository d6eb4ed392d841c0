"""The jobs portal: a Flask + HTMX app. `create_app()` is the only factory."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from typing import Any

from flask import Flask, redirect, render_template, request, url_for
from flask_wtf.csrf import CSRFError
from sqlalchemy import event
from sqlalchemy.engine import Engine
from werkzeug.exceptions import HTTPException
from werkzeug.middleware.proxy_fix import ProxyFix

from portal import background
from portal.config import ConfigError, load_settings, tighten
from portal.extensions import csrf, db, htmx_headers, login_manager, migrate
from providers import files as files_provider
from providers import outbound

MIGRATIONS = Path(__file__).parent / "migrations"
# The bulk import route reads its body as a stream under its own limit (PORTAL_BULK_MAX_MB).
BULK_ENDPOINT = "api.collect_bulk"


@event.listens_for(Engine, "connect")
def _connection_settings(dbapi_connection, _record) -> None:
    # Web processes and workers share the file: WAL lets readers run beside a writer,
    # and the busy timeout makes a writer wait for the lock instead of failing.
    if isinstance(dbapi_connection, sqlite3.Connection):
        cursor = dbapi_connection.cursor()
        # The file is the owner's only (0600) before its -wal and -shm files are made:
        # SQLite gives them the database file's mode.
        for _, name, filename in cursor.execute("PRAGMA database_list").fetchall():
            if filename and name == "main":
                for suffix in ("", "-wal", "-shm"):  # no warning for a file just created
                    path = Path(filename + suffix)
                    tighten(path, warn=path.exists() and path.stat().st_size > 0)
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA busy_timeout=15000")  # datastore.SQLITE_LOCK_WAIT_SECONDS
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()
    elif type(dbapi_connection).__module__.startswith("psycopg"):
        # A plan for each execution, never a cached generic one: psycopg prepares a
        # statement run five times, and PostgreSQL may then keep a generic plan chosen while
        # a table was small (a sequential scan of profile_identities) as a bulk load grows
        # it, which slowed every real-time write beside a backfill from 0.1 ms to 6 ms.
        with dbapi_connection.cursor() as cursor:
            cursor.execute("SET plan_cache_mode = force_custom_plan")
        dbapi_connection.commit()


def create_app(overrides: dict[str, Any] | None = None) -> Flask:
    """Build the app from the environment; `overrides` replace settings (tests use them)."""
    overrides = dict(overrides or {})
    instance_path = overrides.pop("INSTANCE_PATH", None) or os.environ.get("PORTAL_INSTANCE_PATH")
    app = Flask(__name__, instance_path=instance_path and str(Path(instance_path).resolve()))
    app.config.from_mapping(load_settings(app.instance_path, overrides))

    # Audiences register their SQLite functions on every new connection.
    import portal.audiences  # noqa: F401

    db.init_app(app)
    with app.app_context():  # errors of the portal's own database are told apart
        background.watch(db.engine)
    from portal import logsearch

    migrate.init_app(app, db, directory=str(MIGRATIONS),
                     include_object=logsearch.outside_the_models)
    login_manager.init_app(app)
    csrf.init_app(app)
    htmx_headers.init_app(app)

    from portal import keys, oauth, security

    try:
        app.extensions["portal_keyring"] = keys.Keyring(app.config["PORTAL_VAULT_KEYS"])
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    oauth.init_app(app)
    from portal import sso

    sso.check_settings(app)
    try:  # where outbound requests may go, in this process (web or worker)
        outbound.configure(app.config["PORTAL_OUTBOUND_ALLOW"])
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    security.init_app(app)
    if app.config["PORTAL_MAX_COLUMNS"] < 1:
        raise ConfigError("PORTAL_MAX_COLUMNS must be at least 1.")
    files_provider.MAX_COLUMNS = app.config["PORTAL_MAX_COLUMNS"]  # providers read no settings

    from portal import models  # noqa: F401  (registers the tables)
    from portal.params import IdConverter

    # Before any route is added: every <int:...> in a path is then a bounded id.
    app.url_map.converters["int"] = IdConverter
    from portal.blueprints import admin, alerts, api, auth, data, demo, jobs, users, vault, wizard

    for blueprint in (auth.bp, jobs.bp, wizard.bp, wizard.edit_bp, vault.bp, data.bp, alerts.bp,
                      admin.bp, users.bp, api.bp, demo.bp):
        app.register_blueprint(blueprint)
    csrf.exempt(api.bp)  # token auth only: the API never reads the session cookie

    def is_api() -> bool:
        return request.path == "/api" or request.path.startswith("/api/")

    from portal import cli, ui

    cli.register(app)
    ui.register(app)

    @app.get("/")
    def index():
        """The job list is the home page."""
        return redirect(url_for("jobs.index"))

    @app.url_value_preprocessor  # before anything reads the body (before_request hooks do)
    def bulk_body_limit(endpoint: str | None, _values) -> None:
        if endpoint == BULK_ENDPOINT:  # (None would mean MAX_CONTENT_LENGTH again)
            from portal import bulk

            request.max_content_length = bulk.body_limit()

    @app.before_request
    def refuse_nul_characters():
        """No text a person sends may hold a NUL character: PostgreSQL cannot store it,
        and no field needs it. Refused up front with a clear 400, never a 500 later."""
        # Every value of a repeated parameter, and the names too: a view that reads a list
        # (getlist) or walks a form's fields must not meet one either. A bulk import's body
        # is a file, read as a stream by its view under its own size limit: no form here.
        bulk = request.endpoint == BULK_ENDPOINT
        values = [request.path, *(text for source in ((request.args,) if bulk else
                                                      (request.args, request.form))
                                   for name, texts in source.lists() for text in (name, *texts))]
        if any("\x00" in value for value in values):
            if is_api():
                return api.error(400, "bad_request", "The request contains a NUL character.")
            return render_template("error.html", code=400, title="Invalid character",
                                   message="The request contains a NUL character (\\0), "
                                           "which no field accepts. Remove it and try "
                                           "again."), 400
        return None

    @app.errorhandler(CSRFError)
    def csrf_error(error: CSRFError):
        message = "Your session expired or the form is stale. Reload the page and try again."
        return render_template("error.html", code=400, title="Form expired",
                               message=message), 400

    @app.errorhandler(413)
    def too_large(error: HTTPException):
        if is_api():
            return api.http_error(error)
        limit = app.config["MAX_CONTENT_LENGTH"] // (1024 * 1024)
        message = (f"The upload is larger than this portal accepts ({limit} MB). Split the file "
                   "or ask an administrator to raise PORTAL_MAX_UPLOAD_MB.")
        return render_template("error.html", code=413, title="File too large",
                               message=message), 413

    @app.errorhandler(HTTPException)
    def http_error(error: HTTPException):
        if is_api():
            return api.http_error(error)
        return render_template("error.html", code=error.code, title=error.name,
                               message=error.description), error.code

    from portal.pollgate import PollGate

    # A status poll with nothing new is answered before Flask (portal/pollgate.py); the
    # proxy fix-up goes around that too, so it sees the client's scheme and address.
    app.wsgi_app = PollGate(app, app.wsgi_app)
    if proxies := app.config["PORTAL_TRUSTED_PROXIES"]:
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=proxies, x_proto=proxies, x_host=proxies)
    return app
