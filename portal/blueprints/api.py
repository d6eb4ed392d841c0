"""The REST API under /api/v2, compatible with Lytics' public v2 job API (DESIGN.md).

Token auth only (`Authorization: <token>` or `Bearer <token>`): no session cookie is read
and no CSRF token asked for. Every answer is the envelope {data, status, message}; an error
adds {"error": {code, message, details}}. The views parse, call the domain code the UI
calls (portal.apijobs, portal.jobs, portal.vault), and dump through portal.apischemas.
The data plane's routes (streams, collect, bulk imports, audiences, entities) are in
portal/blueprints/api_data.py, on the same blueprint.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from functools import wraps
from typing import Any

from flask import Blueprint, Response, current_app, g, jsonify, request
from marshmallow import Schema, ValidationError
from sqlalchemy import select
from werkzeug.exceptions import HTTPException

from portal import apijobs, jobs, params, throttle, tokens, vault
from portal import apischemas as s
from portal.extensions import db
from portal.lifecycle import IllegalTransition, Status
from portal.models import Authorization, Job, JobEvent
from portal.models.types import utcnow
from providers import CATALOG, get_provider

bp = Blueprint("api", __name__, url_prefix="/api/v2")

# What each view documents in /api/v2/openapi.json: {endpoint: {method: spec}}.
DOCS: dict[str, dict[str, dict[str, Any]]] = {}
LIST_LIMIT, LIST_MAX = 50, 200


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str,
                 details: dict[str, Any] | None = None):
        super().__init__(message)
        self.status, self.code, self.message, self.details = status, code, message, details or {}


def answer(data: Any, status: int = 200, message: str = "success", **extra: Any) -> Response:
    response = jsonify({"data": data, "status": status, "message": message, **extra})
    response.status_code = status
    return response


def error(status: int, code: str, message: str, details: dict[str, Any] | None = None
          ) -> Response:
    response = jsonify({"data": None, "status": status, "message": message,
                        "error": {"code": code, "message": message, "details": details or {}}})
    response.status_code = status
    return response


HTTP_CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
              405: "method_not_allowed", 409: "conflict", 413: "too_large",
              415: "unsupported_media_type", 422: "invalid", 429: "too_many_requests"}


def http_error(exc: HTTPException) -> Response:
    """Any HTTP error under /api/ as the JSON envelope (routing's 404 and 405 too)."""
    code = exc.code or 500
    response = error(code, HTTP_CODES.get(code, "error"), exc.description or exc.name)
    if code == 405 and getattr(exc, "valid_methods", None):
        response.headers["Allow"] = ", ".join(exc.valid_methods)
    return response


@bp.errorhandler(ApiError)
def api_error(exc: ApiError) -> Response:
    return error(exc.status, exc.code, exc.message, exc.details)


def documented(summary: str, *, role: str = "viewer", body: type[Schema] | None = None,
               response: type[Schema] | None = None, status: int = 200,
               query: dict[str, str] | None = None) -> Callable:
    """Declare a view's role, request and response shapes (checked here, documented in the
    OpenAPI document). The role check is the UI's: viewer < operator < admin."""

    def decorate(view: Callable) -> Callable:
        @wraps(view)
        def wrapped(*args, **kwargs):
            if not g.api_actor.has_role(role):
                raise ApiError(403, "forbidden", f"This needs a token with the {role} role "
                                                 "or above.")
            if body is not None:
                kwargs["body"] = _load(body)
            return view(*args, **kwargs)

        wrapped.api_doc = {"summary": summary, "role": role, "body": body,
                           "response": response, "status": status, "query": query or {}}
        return wrapped

    return decorate


def _load(schema: type[Schema]) -> dict[str, Any]:
    if not request.mimetype == "application/json":
        raise ApiError(415, "unsupported_media_type", "Send the body as application/json.")
    try:
        payload = request.get_json(silent=True)
    except RecursionError:  # nested deeper than the parser goes
        payload = None
    if not isinstance(payload, dict):
        raise ApiError(400, "invalid_json", "The body must be a JSON object.")
    try:
        where = _unstorable(payload)
    except RecursionError:
        raise ApiError(400, "invalid_json", "The body is nested too deeply.") from None
    if where is not None:
        # As for forms (create_app's NUL check): no field takes a NUL, nor a lone surrogate.
        raise ApiError(400, "bad_character", "The body holds a NUL character or a lone "
                                             "surrogate, which no field accepts.",
                       {where: "Remove the character."})
    try:
        return schema().load(payload)
    except ValidationError as exc:
        raise ApiError(422, "invalid", "The body has mistakes.", _flat(exc.messages)) from None


def _unstorable(value: Any, path: str = "") -> str | None:
    """The path of the first text (a key or a value) in the JSON that no field can store,
    or None."""
    if isinstance(value, str):
        return path if _bad_text(value) else None
    if isinstance(value, dict):
        pairs = list(value.items())
    elif isinstance(value, list):
        pairs = list(enumerate(value))
    else:
        return None
    for key, item in pairs:
        where = f"{path}.{key}" if path else str(key)
        if isinstance(key, str) and _bad_text(key):
            return where
        if (found := _unstorable(item, where)) is not None:
            return found
    return None


def _bad_text(text: str) -> bool:
    return "\x00" in text or _surrogate(text)


def _surrogate(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _flat(messages: Any, prefix: str = "") -> dict[str, str]:
    flat: dict[str, str] = {}
    for key, value in (messages.items() if isinstance(messages, dict) else []):
        path = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flat(value, path + "."))
        else:
            flat[path] = " ".join(str(v) for v in value) if isinstance(value, list) else str(value)
    return flat


@bp.before_request
def authenticate():
    """Every request carries a token; a missing, bad, revoked or expired one gets 401, and
    an address that sent too many bad ones gets 429 with Retry-After."""
    address = request.remote_addr
    wait = throttle.token_retry_after(address)
    if wait:
        if throttle.first_token_refusal(address, wait):
            tokens.audit_throttled(address, wait)
        response = error(429, "too_many_requests",
                         f"Too many refused tokens from this address; try again in {wait} s.")
        response.headers["Retry-After"] = str(wait)
        return response
    raw = tokens.parse_header(request.headers.get("Authorization", ""))
    actor, why = tokens.authenticate(raw, address=address)
    if actor is None:
        throttle.count_token_failure(address)
        response = error(401, "unauthorized", f"The API token is {why}.")
        response.headers["WWW-Authenticate"] = 'Bearer realm="api"'
        return response
    g.api_actor = actor
    return None


def _arg_bool(name: str, default: bool = False) -> bool:
    raw = request.args.get(name)
    if raw is None:
        return default
    if raw.lower() in ("true", "1", "yes"):
        return True
    if raw.lower() in ("false", "0", "no", ""):
        return False
    raise ApiError(400, "bad_parameter", f"{name} must be true or false.", {name: raw[:50]})


def _limit() -> int:
    raw = request.args.get("limit")
    if raw is None:
        return LIST_LIMIT
    value = params.parse_int(raw, high=LIST_MAX)
    if value is None:
        raise ApiError(400, "bad_parameter", f"limit must be a whole number from 1 to "
                                             f"{LIST_MAX}.", {"limit": raw[:50]})
    return value


def _cursor_id(name: str = "next") -> int | None:
    raw = request.args.get(name)
    if raw is None or raw == "":
        return None
    value = params.parse_int(raw)
    if value is None:
        raise ApiError(400, "bad_parameter", f"{name} must be a cursor from a previous page.")
    return value


def _job(job_id: int, workflow: str | None = None) -> Job:
    job = db.session.get(Job, job_id)
    if job is None or (workflow is not None and workflow != job.job_type):
        raise ApiError(404, "not_found", f"There is no job {job_id}"
                       + (f" of workflow {workflow}." if workflow else "."))
    return job


# --- jobs ---------------------------------------------------------------------------------

@bp.get("/job")
@documented("List jobs", response=s.JobListEnvelope, query={
    "workflow": "job type key", "auth_ids": "authorization id(s), comma-separated",
    "show_completed": "true to include completed jobs (default false)",
    "show_all": "true to include every job", "status": "one status",
    "q": "text in name or description", "limit": "page size (1-200)",
    "next": "cursor from the previous page"})
def job_list():
    """Jobs, newest first, with Lytics' filters and ours; keyset pages via `next`."""
    status = request.args.get("status", "")
    if status and status not in set(Status) and status != jobs.RETRYING:
        raise ApiError(400, "bad_parameter", "Unknown status.", {"status": status[:50]})
    show_all = _arg_bool("show_all")
    show_completed = show_all or _arg_bool("show_completed")
    auth_ids = [part for part in request.args.get("auth_ids", "").split(",") if part]
    parsed = [params.parse_int(part) for part in auth_ids]
    if None in parsed or len(parsed) > 1:
        raise ApiError(400, "bad_parameter", "auth_ids must be one authorization id.")
    workflow = request.args.get("workflow", "")[:64]
    job_filter = jobs.JobFilter(status=status, q=request.args.get("q", "").strip()[:200],
                                show_completed=show_completed,
                                authorization=parsed[0] if parsed else None)
    limit = _limit()
    cursor = request.args.get("next", "")
    if workflow:
        found = _by_workflow(job_filter, workflow, cursor, limit)
    else:
        found = jobs.list_jobs(job_filter, after=cursor, limit=limit)
    rows, next_cursor = found
    return answer([s.job_data(job) for job in rows], next=next_cursor or None)


def _by_workflow(job_filter: jobs.JobFilter, workflow: str, cursor: str, limit: int):
    """The filter's jobs of one job type: id keyset, newest first."""
    query = job_filter.where(select(Job)).where(Job.job_type == workflow)
    before = params.parse_int(cursor) if cursor else None
    if cursor and before is None:
        raise ApiError(400, "bad_parameter", "next must be a cursor from a previous page.")
    if before is not None:
        query = query.where(Job.id < before)
    rows = list(db.session.scalars(query.order_by(Job.id.desc()).limit(limit + 1)))
    return rows[:limit], (str(rows[limit - 1].id) if len(rows) > limit else "")


@bp.get("/job/<int:job_id>")
@documented("Get a job", response=s.JobEnvelope)
def job_get(job_id: int):
    """One job."""
    return answer(s.job_data(_job(job_id)))


@bp.get("/job/<workflow>/<int:job_id>")
@documented("Get a job (Lytics' path)", response=s.JobEnvelope)
def job_get_workflow(workflow: str, job_id: int):
    """One job, by workflow and id."""
    return answer(s.job_data(_job(job_id, workflow)))


def _create(body: dict[str, Any]):
    run_job = _arg_bool("run_job", default=True)
    try:
        job = apijobs.create(body, by=g.api_actor, run_job=run_job)
    except apijobs.Invalid as exc:
        raise ApiError(422, "invalid", "The job has mistakes.", exc.errors) from None
    return answer(s.job_data(job), 201, "created")


@bp.post("/job")
@documented("Create a job (starts it unless run_job=false)", role="operator", body=s.JobIn,
            response=s.JobEnvelope, status=201, query={"run_job": "false: create it paused"})
def job_create(body: dict[str, Any]):
    """Create a job from provider + job_type (or Lytics' workflow)."""
    return _create(body)


@bp.post("/job/<workflow>")
@documented("Create a job of a workflow (Lytics' path)", role="operator", body=s.JobIn,
            response=s.JobEnvelope, status=201, query={"run_job": "false: create it paused"})
def job_create_workflow(workflow: str, body: dict[str, Any]):
    """Create a job of the workflow in the path."""
    if body.get("workflow", workflow) != workflow or body.get("job_type", workflow) != workflow:
        raise ApiError(422, "invalid", "The body names another workflow than the path.",
                       {"workflow": "Must match the path."})
    return _create({**body, "workflow": workflow})


def _edit(job: Job, body: dict[str, Any], *, whole: bool):
    if not jobs.can_edit(job, g.api_actor):
        raise ApiError(403, "forbidden", "Only the operator who created this job, or an "
                                         "admin, may change it.")
    try:
        saved = apijobs.edit(job, body, by=g.api_actor, whole=whole)
    except apijobs.Invalid as exc:
        db.session.rollback()
        raise ApiError(422, "invalid", "The change has mistakes.", exc.errors) from None
    except vault.KeyUnavailable:
        db.session.rollback()
        raise ApiError(409, "conflict", "A secret of this job can no longer be decrypted; "
                                        "send it again.") from None
    return answer(s.job_data(job), message=f"{len(saved.changes)} field(s) changed")


@bp.put("/job/<workflow>/<int:job_id>")
@documented("Replace a job (whole object, as Lytics: fields left out are reset)",
            role="operator", body=s.JobIn, response=s.JobEnvelope)
def job_put(workflow: str, job_id: int, body: dict[str, Any]):
    """Whole-object update: what is not sent goes back to its default."""
    return _edit(_job(job_id, workflow), body, whole=True)


@bp.patch("/job/<int:job_id>")
@documented("Change only the fields sent", role="operator", body=s.JobIn,
            response=s.JobEnvelope)
def job_patch(job_id: int, body: dict[str, Any]):
    """Partial update: only the fields sent change."""
    return _edit(_job(job_id), body, whole=False)


ACTIONS = {"pause": jobs.pause_job, "resume": jobs.resume_job, "bounce": apijobs.bounce}


@bp.post("/job/<int:job_id>/pause", defaults={"action": "pause"})
@bp.post("/job/<int:job_id>/resume", defaults={"action": "resume"})
@bp.post("/job/<int:job_id>/bounce", defaults={"action": "bounce"})
@bp.post("/job/<int:job_id>/kill", defaults={"action": "kill"})
@documented("Pause, resume, bounce (run now, or resume) or kill (delete) a job", role="operator",
            response=s.JobEnvelope)
def job_action(job_id: int, action: str):
    """pause/resume/bounce go through the state machine; kill deletes the job."""
    job = _job(job_id)
    if action == "kill":
        data = s.job_data(job)
        try:
            jobs.delete_job(job, by=g.api_actor)
        except jobs.JobBusy as exc:
            raise ApiError(409, "conflict", f"Not killed: {exc}.") from None
        return answer(data, message="deleted")
    try:
        ACTIONS[action](job, by=g.api_actor)
    except IllegalTransition:
        db.session.rollback()
        verb = {"pause": "paused", "resume": "resumed", "bounce": "bounced"}[action]
        raise ApiError(409, "conflict", f"A {job.status} job cannot be {verb}.") from None
    return answer(s.job_data(job), message=action)


@bp.get("/job/<int:job_id>/logs")
@documented("One job's log, newest first", response=s.LogListEnvelope,
            query={"limit": "page size (1-200)", "next": "cursor from the previous page"})
def job_logs(job_id: int):
    """The job's log entries."""
    job = _job(job_id)
    rows, older = jobs.log_page(job, jobs.LogFilter(), before=_cursor_id(), limit=_limit())
    return answer([s.log_data(row) for row in rows], next=str(older) if older else None)


@bp.get("/job/logs")
@documented("Every job's log entries of the last 24 hours, newest first",
            response=s.LogListEnvelope,
            query={"limit": "page size (1-200)", "next": "cursor from the previous page"})
def all_logs():
    """The last day's log entries of all jobs."""
    query = select(JobEvent).where(JobEvent.at >= utcnow() - timedelta(hours=24))
    if (before := _cursor_id()) is not None:
        query = query.where(JobEvent.id < before)
    limit = _limit()
    rows = list(db.session.scalars(query.order_by(JobEvent.id.desc()).limit(limit + 1)))
    more = len(rows) > limit
    rows = rows[:limit]
    return answer([s.log_data(row) for row in rows], next=str(rows[-1].id) if more else None)


# --- providers, authorizations -------------------------------------------------------------

@bp.get("/provider")
@documented("Providers with their auth methods and job types", response=s.ProviderListEnvelope)
def provider_list():
    """The provider catalog."""
    return answer([s.provider_data(provider) for provider in CATALOG.values()])


@bp.get("/auth")
@documented("Authorizations (no secrets)", response=s.AuthListEnvelope)
def auth_list():
    """Every authorization, public view only."""
    rows = db.session.scalars(select(Authorization).order_by(Authorization.id))
    return answer([s.auth_data(row) for row in rows])


@bp.post("/auth")
@documented("Create an authorization (credentials are write-only)", role="operator",
            body=s.AuthIn, response=s.AuthEnvelope, status=201)
def auth_create(body: dict[str, Any]):
    """A new authorization, sealed in the Vault with the UI's checks."""
    provider = get_provider(body["provider"])
    method = provider.auth_method(body["method"]) if provider else None
    if method is None:
        raise ApiError(422, "invalid", "Unknown provider or method.",
                       {"method" if provider else "provider": "Not offered by this portal."})
    if method.kind == "oauth2":
        raise ApiError(422, "invalid", "OAuth authorizations need a person to sign in: "
                       "create them in the Vault page.", {"method": "Not possible here."})
    errors = vault.label_errors(body["label"].strip(), body.get("description", "").strip())
    errors.update({f"credentials.{k}": v
                   for k, v in vault.check_entered(method, body["credentials"]).items()})
    if errors:
        raise ApiError(422, "invalid", "The authorization has mistakes.", errors)
    try:
        authorization = vault.create(provider, method, label=body["label"].strip(),
                                     description=body.get("description", "").strip(),
                                     credentials=body["credentials"], by=g.api_actor)
    except vault.InvalidCredentials as exc:
        db.session.rollback()
        raise ApiError(422, "invalid", "The authorization has mistakes.", {
            f"credentials.{k}": v for k, v in exc.errors.items()}) from None
    db.session.commit()
    return answer(s.auth_data(authorization), 201, "created")


@bp.get("/openapi.json")
@documented("This document")
def openapi():
    """The OpenAPI document, generated from the routes and schemas."""
    from portal import apidoc

    return jsonify(apidoc.build(current_app))


# Streams, collect, bulk imports, audiences and entities register on `bp` there.
from portal.blueprints import api_data  # noqa: E402,F401
