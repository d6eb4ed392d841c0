"""The job creation wizard: provider tile -> job type -> authorization -> configure ->
schedule -> review. Each step has its own URL. From the configure step on, what the
person entered lives in a server-side Draft (listed under "Drafts", resumable), and
nothing becomes a job until Create on the review step.

"Edit configuration" of an existing job is the same configure and schedule steps with a
Draft tied to the job (Draft.job_id), pre-filled from it: POST /jobs/<id>/edit starts
one; its review step shows the changes and Save applies them (portal.jobs.save_edit).
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, abort, current_app, flash, render_template, request, url_for
from flask_login import current_user
from sqlalchemy import select
from werkzeug.exceptions import HTTPException

from portal import audiences, configsecrets, htmx, jobconfig, params, schedule, vault
from portal.access import role_required
from portal.datastore import (
    check_config,
    file_problem,
    safe_filename,
    store_upload,
    upload_for,
)
from portal.extensions import db
from portal.jobs import EditRefused, can_edit, create_job, save_edit, start_edit
from portal.lifecycle import RETRY_SCHEMA, RetryPolicy, Status, Trigger, can
from portal.models import Authorization, Draft, Job, Stream, Upload
from portal.models.types import utcnow
from portal.schemaform import (
    coerce,
    defaults,
    destinations_said,
    name_errors,
    ordered_fields,
    prefixed,
    validate,
)
from portal.ui import redact_secrets
from providers import CATALOG, get_provider
from providers.base import JobType, Provider, ProviderError
from providers.files import RecordError, guess_timestamp_field

bp = Blueprint("wizard", __name__, url_prefix="/jobs/new")
edit_bp = Blueprint("edit", __name__, url_prefix="/jobs")

STEPS = ("Provider", "Job type", "Authorization", "Configure", "Schedule", "Review")
EDIT_STEPS = ("Configure", "Schedule", "Review")


def _provider(provider_key: str) -> Provider:
    provider = get_provider(provider_key)
    if provider is None:
        abort(404, description=f"There is no provider called {provider_key!r}. "
                               "Pick one of the tiles on the first step.")
    return provider


def _job_type(provider_key: str, job_type_key: str) -> tuple[Provider, JobType]:
    provider = _provider(provider_key)
    job_type = provider.job_type(job_type_key)
    if job_type is None:
        abort(404, description=f"{provider.name} has no job type {job_type_key!r}.")
    return provider, job_type


def _authorizations(provider: Provider) -> list[Authorization]:
    return list(db.session.scalars(
        select(Authorization).where(Authorization.provider == provider.key)
        .order_by(Authorization.label)
    ))


def _matches(provider: Provider, query: str, category: str) -> bool:
    if category and provider.category != category:
        return False
    words = query.lower().split()
    text = " ".join([provider.name, provider.category, provider.description,
                     *(f"{jt.name} {jt.kind}" for jt in provider.job_types)]).lower()
    return all(word in text for word in words)


@bp.get("")
@role_required("operator")
def providers():
    """Step 1: the provider tiles, searched as you type (name, category, job types)."""
    query = request.args.get("q", "").strip()
    category = request.args.get("category", "")
    found = [provider for provider in CATALOG.values() if _matches(provider, query, category)]
    categories = sorted({provider.category for provider in CATALOG.values()})
    drafts = db.session.scalar(select(db.func.count()).select_from(Draft)
                               .where(Draft.owner_id == current_user.id))
    context = {"providers": found, "query": query, "category": category,
               "categories": categories, "steps": STEPS, "step": 0, "drafts": drafts}
    if htmx.target() == "tile-results":
        return htmx.fragment("wizard/_tiles.html", **context)
    return htmx.render("wizard/page.html", "wizard/_providers.html", **context)


@bp.get("/<provider_key>")
@role_required("operator")
def job_types(provider_key: str):
    """Step 2: what this provider can do."""
    return htmx.render("wizard/page.html", "wizard/_job_types.html",
                       provider=_provider(provider_key), steps=STEPS, step=1)


@bp.get("/<provider_key>/<job_type_key>")
@role_required("operator")
def authorization(provider_key: str, job_type_key: str):
    """Step 3: pick an authorization; skipped where the provider needs none."""
    provider, job_type = _job_type(provider_key, job_type_key)
    if not provider.needs_authorization:
        return htmx.redirect(url_for("wizard.configure", provider_key=provider.key,
                                     job_type_key=job_type.key, authorization="none"))
    return _authorization_step(
        provider, job_type, chosen_id=params.id_arg(request.args, "authorization", strict=False))


def _authorization_step(provider: Provider, job_type: JobType, *, chosen_id: int | None = None,
                        error: str | None = None):
    return htmx.render("wizard/page.html", "wizard/_authorization.html",
                       status=422 if error else 200, provider=provider, job_type=job_type,
                       steps=STEPS, step=2, authorizations=_authorizations(provider),
                       error=error, chosen_id=chosen_id)


def _chosen_authorization(provider: Provider, raw: str) -> tuple[bool, Authorization | None]:
    """(valid, authorization) for the ?authorization= value of the configure step."""
    if raw == "none":
        return not provider.needs_authorization, None
    if (authorization_id := params.parse_int(raw)) is not None:
        found = db.session.get(Authorization, authorization_id)
        if found is not None and found.provider == provider.key:
            return True, found
    return False, None


def _upload_for(upload_id: Any, job: Job | None = None) -> Upload | None:
    return upload_for(upload_id, current_user, job)


def _draft(draft_id: int, *, of_a_job: bool = True) -> Draft:
    draft = db.session.get(Draft, draft_id)
    if draft is None:
        # A page of the draft left open after Create (the browser's Back) says where it went.
        job = db.session.scalar(select(Job).where(Job.draft_id == draft_id,
                                                  Job.created_by_id == current_user.id))
        if job is not None:
            abort(htmx.render("wizard/page.html", "wizard/_created.html", status=410,
                              job=job))
    if draft is None or draft.owner_id != current_user.id:
        abort(404, description="There is no such draft: it was created, discarded, or is "
                               "someone else's. Start again from the provider tiles.")
    if of_a_job:
        _edited_job(draft)
    return draft


def _edited_job(draft: Draft | None) -> Job | None:
    """The job an edit draft changes (None for a new job's draft); 404 once the job is
    gone, 403 when the person may no longer edit it."""
    if draft is None or draft.job_id is None:
        return None
    job = db.session.get(Job, draft.job_id)
    if job is None:
        abort(404, description="The job this edit was for has been deleted.")
    if not can_edit(job, current_user):
        abort(403, description="Only the operator who created this job, or an admin, may "
                               "change its configuration.")
    return job


def _steps(draft: Draft | None, step: int) -> dict[str, Any]:
    """The step bar's labels and position: the wizard's six, or an edit's last three."""
    if draft is not None and draft.job_id is not None:
        return {"steps": EDIT_STEPS, "step": step - 3, "edit_job": _edited_job(draft)}
    return {"steps": STEPS, "step": step, "edit_job": None}


def _options(job_type: JobType, authorization: Authorization | None,
             upload: Upload | None) -> tuple[dict[str, list], dict[str, str]]:
    """Choices of the x-options fields, and why any could not be loaded (by field)."""
    options: dict[str, list] = {"upload_fields": upload.fields if upload else [],
                                "streams": list(db.session.scalars(
                                    select(Stream.name).order_by(Stream.name))),
                                "audiences": [(audience.slug, audience.name) for audience
                                              in audiences.all_audiences()]}
    problems: dict[str, str] = {}
    credentials: dict[str, Any] | None = None  # decrypted (and audited) once, if needed
    for name, prop in ordered_fields(job_type.config_schema):
        source = prop.get("x-options", "")
        if not source.startswith("provider:"):
            continue
        loader = job_type.option_sources.get(source.split(":", 1)[1])
        if loader is None or authorization is None:
            continue
        try:
            if credentials is None:
                credentials = vault.credentials_for(authorization, actor=current_user.email,
                                                    by=current_user, purpose="the job wizard")
            options[source] = loader(credentials)
        except (ProviderError, vault.VaultError) as exc:
            problems[name] = (f"Could not load the choices from the provider: {exc} Type the "
                              "value instead, or fix the authorization and reload.")
    return options, problems


def _configure_page(provider: Provider, job_type: JobType, draft: Draft | None,
                    authorization: Authorization | None, auth_param: str,
                    values: dict[str, Any], errors: dict[str, str], upload: Upload | None,
                    choices: tuple[dict[str, list], dict[str, str]]):
    options, problems = choices
    response = htmx.render(
        "wizard/page.html", "wizard/_configure.html", status=422 if errors else 200,
        provider=provider, job_type=job_type, authorization=authorization,
        auth_param=auth_param, draft=draft, **_steps(draft, 3),
        authorizations=_authorizations(provider) if provider.needs_authorization else [],
        fields=ordered_fields(job_type.config_schema), values=values, errors=errors,
        upload=upload, options=options, option_problems=problems, upload_limit=_upload_limit(),
        upload_refusal=_too_large(),
        destinations=destinations_said(job_type.config_schema),
        has_file=any(prop.get("x-widget") == "upload"
                     for _, prop in ordered_fields(job_type.config_schema)),
    )
    if draft is not None:
        htmx.push_url(response, url_for("wizard.configure", provider_key=provider.key,
                                        job_type_key=job_type.key, authorization=auth_param,
                                        draft=draft.id))
    return response


@bp.route("/<provider_key>/<job_type_key>/configure", methods=["GET", "POST"])
@role_required("operator")
def configure(provider_key: str, job_type_key: str):
    """Step 4: the job type's configuration, a form made from its JSON Schema."""
    provider, job_type = _job_type(provider_key, job_type_key)
    draft_id = params.id_arg(request.values, "draft", strict=False)
    draft = _draft(draft_id) if draft_id is not None else None
    if draft is not None and (draft.provider, draft.job_type) != (provider.key, job_type.key):
        abort(404, description="That draft is for another job type.")
    job = _edited_job(draft)
    # An edit chooses its authorization on this step (a menu in the form); the wizard on
    # the step before (in the query string).
    auth_param = request.form.get("authorization") or request.args.get("authorization", "none")
    valid, chosen = _chosen_authorization(provider, auth_param)
    errors: dict[str, str] = {}
    if not valid and job is None:
        return _authorization_step(
            provider, job_type, error="That authorization does not exist or does not fit "
                                      "this provider; choose one from the list.")
    if not valid:
        errors["authorization"] = ("That authorization does not exist or is for another "
                                   "provider; choose one from the list.")
        auth_param = str(draft.authorization_id or "none")
        valid, chosen = _chosen_authorization(provider, auth_param)
    schema = job_type.config_schema
    if request.method == "GET" or errors:
        return _configure_kept(provider, job_type, draft, chosen, auth_param, errors)
    values, errors = coerce(schema, request.form)
    if job is not None:  # what the form does not show (set through the API) stays as it is
        known = {name for name, _ in ordered_fields(schema)} | {"upload_id"}
        values = {**{key: value for key, value in draft.config.items() if key not in known},
                  **values}
    upload = _upload_for(values.get("upload_id"), job)
    if values.get("upload_id") is not None and upload is None:
        values.pop("upload_id")
        errors["upload_id"] = "That file is no longer available; upload it again."
    sent = request.files.get("file")
    if sent is not None and sent.filename:
        try:
            upload, info = store_upload(sent.filename, sent.read(), by=current_user)
        except RecordError as exc:
            errors["upload_id"] = f"{safe_filename(sent.filename)}: {exc}"
            upload = None
            values.pop("upload_id", None)
        else:
            errors.pop("upload_id", None)
            values.update(upload_id=upload.id, delimiter=info.delimiter)
            if values.get("timestamp_field") not in upload.fields:
                values["timestamp_field"] = guess_timestamp_field(
                    upload.content, upload.format, info.delimiter, upload.fields)
    choices = _options(job_type, chosen, upload)
    # Secrets are sealed before they are kept; a blank password box keeps the one set.
    values, plain, earlier = _sealed_config(schema, values,
                                            keep=draft.config if draft else {},
                                            errors=errors)
    action = request.form.get("action")
    if action not in ("upload", "save"):  # "save": kept as typed, checked on Next
        for field, message in validate(schema, plain, choices[0]).items():
            errors.setdefault(field, message)
        if upload is not None and not errors.keys() & {"upload_id", "timestamp_field",
                                                         "delimiter"}:
            # The whole file, read as the import will read it: its problems now, on the
            # file's field, rather than as a Failed job later.
            if problem := file_problem(upload, check_config(upload, values)):
                errors["upload_id"] = problem
    # A secret with a mistake is not kept; the one set before it stays (unless where it
    # goes changed: then it must be entered again).
    values = configsecrets.seal_config(schema, values, keep=earlier, drop=errors, refused=errors)
    draft = _save_config(draft, provider, job_type, chosen, values, upload,
                         done=not errors and action not in ("upload", "save"))
    if action == "save":
        return _saved(draft, url_for("wizard.configure", provider_key=provider.key,
                                     job_type_key=job_type.key, authorization=auth_param,
                                     draft=draft.id))
    if errors or action == "upload":
        return _configure_page(provider, job_type, draft, chosen, auth_param, values, errors,
                               upload, choices)
    return htmx.redirect(url_for("wizard.plan", draft_id=draft.id))


def _configure_kept(provider: Provider, job_type: JobType, draft: Draft | None,
                    chosen: Authorization | None, auth_param: str, errors: dict[str, str]):
    """The configure step with what the draft keeps (the defaults before there is one)."""
    schema = job_type.config_schema
    values = dict(draft.config) if draft else defaults(schema)
    if draft:
        values = _sealed_config(schema, values, keep=values, errors=errors)[0]
    upload = _upload_for(values.get("upload_id"), _edited_job(draft))
    return _configure_page(provider, job_type, draft, chosen, auth_param, values, errors,
                           upload, _options(job_type, chosen, upload))


def _upload_limit() -> str:
    """The largest request the portal takes (PORTAL_MAX_UPLOAD_MB), in words."""
    limit = current_app.config["MAX_CONTENT_LENGTH"]
    return f"{limit / 2**20:,.4g} MB" if limit >= 2**20 else f"{limit / 2**10:,.4g} KB"


def _too_large() -> str:
    """What the file field says of a file over the limit (here, and in the browser before
    such a file is sent: a very large upload may be cut off before the server can answer)."""
    return (f"This file is larger than the {_upload_limit()} this portal accepts; split it, "
            "or ask an administrator to raise PORTAL_MAX_UPLOAD_MB.")


@bp.errorhandler(413)
def too_large(error: HTTPException):
    """A request over the upload limit: on the configure step, that step again with the
    refusal on the file field (htmx shows no error page); elsewhere the error page."""
    message = _too_large()
    if request.endpoint != "wizard.configure" or request.view_args is None:
        return render_template("error.html", code=413, title="File too large",
                               message=message), 413
    # Only the query string can be read: the form is the body that was refused.
    provider, job_type = _job_type(**request.view_args)
    auth_param = request.args.get("authorization", "none")
    valid, chosen = _chosen_authorization(provider, auth_param)
    draft_id = params.id_arg(request.args, "draft", strict=False)
    try:
        draft = _draft(draft_id) if draft_id is not None else None
    except HTTPException:  # not the person's draft (any more): no step to show it on
        draft, valid = None, False
    if not valid or (draft is not None and draft.job_type != job_type.key):
        return render_template("error.html", code=413, title="File too large",
                               message=message), 413
    response = _configure_kept(provider, job_type, draft, chosen, auth_param,
                               {"upload_id": message})
    if not htmx.is_htmx():
        response.status_code = 413
    return response


def _saved(draft: Draft, url: str):
    """The answer to a step's save-as-you-type: the draft's id for the form's next request,
    and the step's URL with the draft in it, so a reload shows what was typed."""
    return htmx.replace_url(htmx.fragment("wizard/_draft_id.html", draft=draft), url)


def _sealed_config(schema: dict[str, Any], values: dict[str, Any], *, keep: dict[str, Any],
                   errors: dict[str, str]
                   ) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """(the config as it is kept, secrets sealed; the same in plain text, to check it;
    `keep` less what is lost). A kept secret that no key opens any more is dropped, with
    a message on its field; so is one whose destination (e.g. a URL) changed."""
    stored, lost = configsecrets.seal_config(schema, values, keep=keep, refused=errors), []
    plain = configsecrets.open_config(schema, stored, what="this draft", lost=lost)
    for path in lost:
        errors[path] = "This secret can no longer be decrypted; enter it again."
    return (configsecrets.seal_config(schema, stored, drop=lost), plain,
            configsecrets.seal_config(schema, keep, drop=lost))


def _save_config(draft: Draft | None, provider: Provider, job_type: JobType,
                 authorization: Authorization | None, values: dict[str, Any],
                 upload: Upload | None, done: bool) -> Draft:
    """Keep what was entered so far (even with mistakes), so nothing is lost."""
    if draft is None:
        draft = Draft(owner_id=current_user.id, provider=provider.key, job_type=job_type.key,
                      schedule={**defaults(schedule.SCHEMA), **job_type.default_schedule}
                      if job_type.recurring else {"kind": "once"},
                      retry_policy=defaults(RETRY_SCHEMA))
        db.session.add(draft)
    draft.authorization_id = authorization.id if authorization else None
    draft.config = values
    draft.updated_at = utcnow()
    if done:
        draft.step = "schedule"
        if not draft.name:
            detail = upload.filename if upload else (authorization.label if authorization
                                                     else provider.name)
            draft.name = f"{job_type.name}: {detail}"[:200]
    db.session.commit()
    return draft


def _plan_context(draft: Draft, **extra: Any) -> dict[str, Any]:
    provider, job_type = _job_type(draft.provider, draft.job_type)
    return {"draft": draft, "provider": provider, "job_type": job_type, **_steps(draft, 4),
            "schedule_fields": ordered_fields(schedule.SCHEMA),
            "retry_fields": ordered_fields(RETRY_SCHEMA), "errors": {}, **extra}


@bp.route("/drafts/<int:draft_id>/schedule", methods=["GET", "POST"])
@role_required("operator")
def plan(draft_id: int):
    """Step 5: name, description, cadence, retry policy, and whether to start paused."""
    draft = _draft(draft_id)
    if request.method == "GET":
        return htmx.render("wizard/page.html", "wizard/_schedule.html",
                           **_plan_context(draft))
    _, job_type = _job_type(draft.provider, draft.job_type)
    errors: dict[str, str] = {}
    parts = [("retry", RETRY_SCHEMA)]
    if job_type.recurring:  # one pass over its input: nothing to schedule
        parts.append(("schedule", schedule.SCHEMA))
    plans = {"schedule": {"kind": "once"}}
    for prefix, sub_schema in parts:
        plans[prefix], sub_errors = _subform(prefix, sub_schema)
        errors.update(sub_errors)
    draft.name = request.form.get("name", "").strip()[:200]
    draft.description = request.form.get("description", "").strip()
    errors.update(name_errors(request.form.get("name", "").strip(), draft.description,
                              missing="Give the job a name."))
    draft.schedule, draft.retry_policy = plans["schedule"], plans["retry"]
    draft.create_paused = request.form.get("create_paused") in ("on", "true", "1")
    draft.updated_at = utcnow()
    action = request.form.get("action")
    if action in ("save", "back"):  # kept as typed; checked on Next
        if errors and draft.step == "review":  # no Create with an unchecked plan
            draft.step = "schedule"
        db.session.commit()
        if action == "save":
            return _saved(draft, url_for("wizard.plan", draft_id=draft.id))
        return htmx.redirect(url_for("wizard.configure", provider_key=draft.provider,
                                     job_type_key=draft.job_type,
                                     authorization=draft.authorization_id or "none",
                                     draft=draft.id))
    if not errors:
        draft.step = "review"
    db.session.commit()
    if errors:
        return htmx.render("wizard/page.html", "wizard/_schedule.html", status=422,
                           **_plan_context(draft, errors=errors))
    return htmx.redirect(url_for("wizard.review", draft_id=draft.id))


def _subform(prefix: str, schema: dict[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    """Values and messages of the fields named `prefix-<field>` (schedule, retry policy)."""
    values, errors = coerce(schema, prefixed(request.form, prefix))
    if not errors:
        errors = validate(schema, values)
    if prefix == "schedule":
        errors = {**schedule.problems(values), **errors}
    return values, {f"{prefix}-{field}": message for field, message in errors.items()}


@bp.get("/drafts/<int:draft_id>/review")
@role_required("operator")
def review(draft_id: int):
    """Step 6: everything at a glance, the configuration as JSON (secrets hidden)."""
    draft = _draft(draft_id)
    if draft.step != "review":
        return htmx.redirect(_resume_url(draft))
    provider, job_type = _job_type(draft.provider, draft.job_type)
    job = _edited_job(draft)
    upload = _upload_for(draft.config.get("upload_id"), job)
    edit: dict[str, Any] = {}
    if job is not None:
        edit = {"changes": jobconfig.differences(job_type.config_schema,
                                                 jobconfig.Settings.of(job),
                                                 jobconfig.Settings.of(draft)),
                "new_file": jobconfig.upload_changed(job_type.config_schema, job.config,
                                                     draft.config),
                "can_resume": can(job, Trigger.RESUME) or can(job, Trigger.RUN_AGAIN)}
    return htmx.render(
        "wizard/page.html", "wizard/_review.html", draft=draft, provider=provider,
        job_type=job_type, **_steps(draft, 5), **edit, upload=upload,
        preview=check_config(upload, draft.config) if upload else None,
        config=redact_secrets(job_type.config_schema, draft.config),
        cadence=schedule.describe(schedule.from_dict(draft.schedule)),
        retry=RetryPolicy.from_dict(draft.retry_policy).describe(),
    )


@bp.post("/drafts/<int:draft_id>/create")
@role_required("operator")
def create(draft_id: int):
    """Create: the draft becomes a job (paused if asked), and is gone."""
    draft = _draft(draft_id)
    if draft.job_id is not None:  # an edit is saved, never created as another job
        return htmx.redirect(url_for("wizard.review", draft_id=draft.id))
    provider, job_type = _job_type(draft.provider, draft.job_type)
    try:
        config_errors = validate(job_type.config_schema, configsecrets.open_config(
            job_type.config_schema, draft.config, what="this draft"))
    except vault.KeyUnavailable:  # configure says which secret to enter again
        config_errors = {"secret": "cannot be decrypted"}
    if config_errors:  # back to the step that can mend it, not to this one again
        draft.step = "configure"
        db.session.commit()
    if draft.step != "review":
        return htmx.redirect(_resume_url(draft))
    if provider.needs_authorization and draft.authorization is None:
        return htmx.redirect(url_for("wizard.authorization", provider_key=provider.key,
                                     job_type_key=job_type.key))
    job = create_job(
        provider=provider, job_type=job_type, authorization=draft.authorization,
        name=draft.name, description=draft.description, config=draft.config,
        created_by=current_user, schedule=draft.schedule, retry_policy=draft.retry_policy,
        paused=draft.create_paused, draft=draft,
    )
    return htmx.redirect(url_for("jobs.summary", job_id=job.id))


def _resume_url(draft: Draft) -> str:
    if draft.step == "review":
        return url_for("wizard.review", draft_id=draft.id)
    if draft.step == "schedule":
        return url_for("wizard.plan", draft_id=draft.id)
    return url_for("wizard.configure", provider_key=draft.provider, job_type_key=draft.job_type,
                   authorization=draft.authorization_id or "none", draft=draft.id)


@bp.get("/drafts")
@role_required("operator")
def drafts():
    """Wizards left before Create, newest first, to resume or discard."""
    found = db.session.scalars(select(Draft).where(Draft.owner_id == current_user.id)
                               .order_by(Draft.updated_at.desc(), Draft.id.desc())).all()
    return htmx.render("wizard/drafts.html", drafts=found, resume_url=_resume_url)


@bp.post("/drafts/<int:draft_id>/discard")
@role_required("operator")
def discard(draft_id: int):
    db.session.delete(_draft(draft_id, of_a_job=False))  # even an edit of a deleted job
    db.session.commit()
    return htmx.redirect(url_for("wizard.drafts"))


@bp.post("/drafts/<int:draft_id>/save")
@role_required("operator")
def save(draft_id: int):
    """Save an edit: the job takes the draft's configuration, schedule and authorization
    (with "resume", a failed or paused job then resumes, a completed one runs again).
    Refused changes go back to the step that can mend them, with field messages."""
    draft = _draft(draft_id)
    job = _edited_job(draft)
    if job is None:
        abort(404, description="That draft is not an edit of a job.")
    if draft.step != "review":
        return htmx.redirect(_resume_url(draft))
    provider, job_type = _job_type(draft.provider, draft.job_type)
    try:
        saved = save_edit(job, job_type, jobconfig.Settings.of(draft), by=current_user,
                          base_version=draft.base_version, draft=draft,
                          resume=request.form.get("resume") == "1")
    except EditRefused as refused:
        draft.step = refused.step
        db.session.commit()
        if refused.step == "schedule":
            return htmx.render("wizard/page.html", "wizard/_schedule.html", status=422,
                               **_plan_context(draft, errors=refused.errors))
        valid, chosen = _chosen_authorization(provider, str(draft.authorization_id or "none"))
        return _configure_kept(provider, job_type, draft, chosen if valid else None,
                               str(draft.authorization_id or "none"), dict(refused.errors))
    flash(_saved_notice(saved), "success" if saved.changes or saved.resumed else "info")
    return htmx.redirect(url_for("jobs.summary", job_id=job.id))


def _saved_notice(saved) -> str:
    """What Save did, and when the job feels it."""
    if not saved.changes:
        said = "Nothing changed."
    else:
        said = f"Saved: {', '.join(change['label'] for change in saved.changes)}."
    if saved.resumed:
        return f"{said} The job runs now."
    if saved.changes and saved.status == Status.RUNNING:
        return (f"{said} The job is running: the unit of work under way finishes with the "
                "configuration it started with; the next one uses the new one.")
    if saved.changes and saved.status in (Status.FAILED, Status.COMPLETED, Status.PAUSED):
        return f"{said} The job stays {saved.status} until it is resumed."
    return said


@edit_bp.route("/<int:job_id>/edit", methods=["GET", "POST"])
@role_required("operator")
def start(job_id: int):
    """Edit configuration: POST starts an edit of the job from what it holds now (GET
    resumes one the person left unsaved, or goes back to the job)."""
    job = db.session.get(Job, job_id)
    if job is None:
        abort(404, description=f"There is no job #{job_id}.")
    if not can_edit(job, current_user):
        abort(403, description="Only the operator who created this job, or an admin, may "
                               "change its configuration.")
    if get_provider(job.provider) is None or get_provider(job.provider).job_type(
            job.job_type) is None:
        abort(404, description=f"This portal no longer offers {job.provider}/{job.job_type}.")
    if request.method == "GET":
        draft = db.session.scalar(select(Draft).where(Draft.job_id == job.id,
                                                      Draft.owner_id == current_user.id))
        return htmx.redirect(_resume_url(draft) if draft else url_for("jobs.summary",
                                                                      job_id=job.id))
    return htmx.redirect(_resume_url(start_edit(job, by=current_user)))


@edit_bp.get("/<int:job_id>/changes")
@role_required("viewer")
def changes(job_id: int):
    """A page of the job's Changes (?before= a version: the page of older ones)."""
    job = db.session.get(Job, job_id)
    if job is None:
        abort(404, description=f"There is no job #{job_id}.")
    return htmx.fragment("jobs/_changes.html", job=job, **jobconfig.changes_context(
        job, params.id_arg(request.args, "before")))
