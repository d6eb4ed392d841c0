"""The job creation wizard: provider tile -> job type -> authorization -> configure."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, abort, request, url_for
from flask_login import current_user
from sqlalchemy import select

from portal import htmx, schedule
from portal.access import role_required
from portal.datastore import store_upload
from portal.extensions import db
from portal.jobs import create_job
from portal.lifecycle import RETRY_SCHEMA
from portal.models import Authorization, Upload
from portal.schemaform import (
    coerce,
    defaults,
    name_errors,
    ordered_fields,
    prefixed,
    validate,
)
from providers import CATALOG, get_provider
from providers.base import JobType, Provider
from providers.files import RecordError

bp = Blueprint("wizard", __name__, url_prefix="/jobs/new")

STEPS = ("Provider", "Job type", "Authorization", "Configure")
TIMESTAMP_GUESSES = ("timestamp", "event_time", "time", "ts", "created_at", "date", "updated_at")


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


@bp.get("")
@role_required("operator")
def providers():
    """Step 1: the provider tiles."""
    return htmx.render("wizard/page.html", "wizard/_providers.html",
                       providers=list(CATALOG.values()), steps=STEPS, step=0)


@bp.get("/<provider_key>")
@role_required("operator")
def job_types(provider_key: str):
    """Step 2: what this provider can do."""
    return htmx.render("wizard/page.html", "wizard/_job_types.html",
                       provider=_provider(provider_key), steps=STEPS, step=1)


@bp.get("/<provider_key>/<job_type_key>")
@role_required("operator")
def authorization(provider_key: str, job_type_key: str):
    """Step 3: pick an authorization (or none, where the provider needs none)."""
    provider, job_type = _job_type(provider_key, job_type_key)
    chosen = request.args.get("authorization", "")
    return htmx.render("wizard/page.html", "wizard/_authorization.html",
                       provider=provider, job_type=job_type, steps=STEPS, step=2,
                       authorizations=_authorizations(provider), error=None,
                       chosen_id=int(chosen) if chosen.isdigit() else None)


def _chosen_authorization(provider: Provider, raw: str) -> tuple[bool, Authorization | None]:
    """(valid, authorization) for the ?authorization= value of the configure step."""
    if raw == "none":
        return not provider.needs_authorization, None
    if raw.isdigit():
        found = db.session.get(Authorization, int(raw))
        if found is not None and found.provider == provider.key:
            return True, found
    return False, None


def _guess_timestamp(fields: list[str]) -> str:
    lowered = {field.lower(): field for field in fields}
    return next((lowered[guess] for guess in TIMESTAMP_GUESSES if guess in lowered), "")


def _upload_for(upload_id: Any) -> Upload | None:
    """The current user's own upload with this id, or None (a tampered id finds nothing)."""
    if not isinstance(upload_id, int):
        return None
    upload = db.session.get(Upload, upload_id)
    if upload is None or upload.created_by_id != current_user.id:
        return None
    return upload


@bp.route("/<provider_key>/<job_type_key>/configure", methods=["GET", "POST"])
@role_required("operator")
def configure(provider_key: str, job_type_key: str):
    """Step 4: the job's name and its configuration, from the job type's JSON Schema."""
    provider, job_type = _job_type(provider_key, job_type_key)
    auth_param = request.values.get("authorization", "none")
    valid, chosen = _chosen_authorization(provider, auth_param)
    if not valid:
        return htmx.render(
            "wizard/page.html", "wizard/_authorization.html", status=422,
            provider=provider, job_type=job_type, steps=STEPS, step=2,
            authorizations=_authorizations(provider), chosen_id=None,
            error="That authorization does not exist or does not fit this provider; "
                  "choose one from the list.",
        )
    schema = job_type.config_schema
    errors: dict[str, str] = {}
    upload: Upload | None = None
    if request.method == "GET":
        values: dict[str, Any] = defaults(schema)
        name, description = job_type.name, ""
        plan = {"schedule": defaults(schedule.SCHEMA), "retry": defaults(RETRY_SCHEMA)}
    else:
        plan = {}
        for prefix, sub_schema in (("schedule", schedule.SCHEMA), ("retry", RETRY_SCHEMA)):
            plan[prefix], sub_errors = _subform(prefix, sub_schema)
            errors.update(sub_errors)
        if not job_type.recurring:
            plan["schedule"] = {"kind": "once"}
        values, config_errors = coerce(schema, request.form)
        errors.update(config_errors)
        name = request.form.get("name", "").strip()
        description = request.form.get("description", "").strip()
        upload = _upload_for(values.get("upload_id"))
        if values.get("upload_id") is not None and upload is None:
            values.pop("upload_id")
            errors["upload_id"] = "That file is no longer available; upload it again."
        sent = request.files.get("file")
        if sent is not None and sent.filename:
            try:
                upload, info = store_upload(sent.filename, sent.read(), by=current_user)
            except RecordError as exc:
                errors["upload_id"] = f"{sent.filename}: {exc}"
                upload = None
                values.pop("upload_id", None)
            else:
                db.session.commit()
                errors.pop("upload_id", None)
                values.update(upload_id=upload.id, delimiter=info.delimiter)
                if values.get("timestamp_field") not in upload.fields:
                    values["timestamp_field"] = _guess_timestamp(upload.fields)
                if not name or name == job_type.name:
                    name = f"{job_type.name}: {upload.filename}"[:200]
        if request.form.get("action") != "upload":
            options = {"upload_fields": upload.fields if upload else []}
            for field, message in validate(schema, values, options).items():
                errors.setdefault(field, message)
            errors.update(name_errors(name, description, missing="Give the job a name."))
            if not errors:
                job = create_job(
                    provider=provider, job_type=job_type, authorization=chosen, name=name,
                    description=description, config=values, created_by=current_user,
                    schedule=plan["schedule"], retry_policy=plan["retry"],
                )
                return htmx.redirect(url_for("jobs.summary", job_id=job.id))
    return htmx.render(
        "wizard/page.html", "wizard/_configure.html",
        status=422 if errors else 200,
        provider=provider, job_type=job_type, authorization=chosen, auth_param=auth_param,
        steps=STEPS, step=3, fields=ordered_fields(schema), values=values, errors=errors,
        upload=upload, name=name, description=description,
        choices={"upload_fields": upload.fields if upload else []},
        plan=plan, schedule_fields=ordered_fields(schedule.SCHEMA),
        retry_fields=ordered_fields(RETRY_SCHEMA),
    )


def _subform(prefix: str, schema: dict[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    """Values and messages of the fields named `prefix-<field>` (schedule, retry policy)."""
    values, errors = coerce(schema, prefixed(request.form, prefix))
    if not errors:
        errors = validate(schema, values)
    if prefix == "schedule":
        errors = {**schedule.problems(values), **errors}
    return values, {f"{prefix}-{field}": message for field, message in errors.items()}
