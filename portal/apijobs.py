"""Jobs as the REST API creates and changes them: the request's fields turned into the
arguments of portal.jobs (create_job, save_edit), whose rules are the UI's. Lytics' names
are accepted beside ours: `workflow` is a job type key, `auth_ids` a list holding one
authorization id. No request objects here.
"""

from __future__ import annotations

from typing import Any

from portal import configsecrets, datastore, jobconfig, jobs, lifecycle, schedule
from portal.extensions import db
from portal.lifecycle import RETRY_SCHEMA
from portal.models import Authorization, Job, User
from portal.schemaform import defaults, name_errors, validate
from providers import CATALOG, get_job_type, get_provider
from providers.base import JobType, Provider


class Invalid(ValueError):
    """A request body the API refuses: messages by field."""

    def __init__(self, errors: dict[str, str]):
        super().__init__("; ".join(f"{k}: {v}" for k, v in errors.items()))
        self.errors = errors


def find_job_type(provider_key: str | None, job_type_key: str | None,
                  workflow: str | None) -> tuple[Provider, JobType]:
    """The provider and job type a body names: `provider` and `job_type`, or Lytics'
    `workflow` alone (a job type key that only one provider offers)."""
    key = job_type_key or workflow
    if not key:
        raise Invalid({"job_type": "Name the job type (job_type, or Lytics' workflow)."})
    if provider_key:
        found = get_job_type(provider_key, key)
        if found is None:
            field = "provider" if get_provider(provider_key) is None else "job_type"
            raise Invalid({field: f"There is no job type {provider_key}/{key}."})
        return found
    offering = [p for p in CATALOG.values() if p.job_type(key) is not None]
    if len(offering) != 1:
        raise Invalid({"provider": f"Name the provider: {len(offering)} providers offer "
                                   f"the job type {key!r}."})
    return offering[0], offering[0].job_type(key)


def _authorization(provider: Provider, body: dict[str, Any]) -> Authorization | None:
    raw = body.get("authorization_id")
    if raw is None and body.get("auth_ids"):
        if len(body["auth_ids"]) != 1:
            raise Invalid({"auth_ids": "Give exactly one authorization id."})
        raw = body["auth_ids"][0]
    if raw is None:
        if provider.needs_authorization:
            raise Invalid({"authorization_id": f"{provider.name} needs an authorization."})
        return None
    found = db.session.get(Authorization, raw)
    if found is None or found.provider != provider.key:
        raise Invalid({"authorization_id": "That authorization does not exist or is for "
                                           "another provider."})
    return found


def _unknown(schema: dict[str, Any], sent: dict[str, Any] | None, field: str) -> None:
    """Refuse names the schema does not have (the wizard's forms only ever send its own)."""
    known = schema.get("properties", {})
    unknown = sorted(str(name) for name in (sent or {}) if name not in known)
    if unknown:
        raise Invalid({f"{field}.{name}": "Not a field of this object." for name in unknown})


def _schedule(job_type: JobType, sent: dict[str, Any] | None) -> dict[str, Any]:
    """The schedule sent, over the job type's default one (once, for a one-pass job)."""
    _unknown(schedule.SCHEMA, sent, "schedule")
    if not job_type.recurring:
        return {"kind": "once"}
    plan = {**defaults(schedule.SCHEMA), **job_type.default_schedule, **(sent or {})}
    # The cadence's own checks read typed values: only once the schema passes.
    errors = validate(schedule.SCHEMA, plan) or schedule.problems(plan)
    if errors:
        raise Invalid({f"schedule.{field}": message for field, message in errors.items()})
    return plan


def _retry_policy(sent: dict[str, Any] | None) -> dict[str, Any]:
    _unknown(RETRY_SCHEMA, sent, "retry_policy")
    policy = {**defaults(RETRY_SCHEMA), **(sent or {})}
    errors = validate(RETRY_SCHEMA, policy)
    if errors:
        raise Invalid({f"retry_policy.{field}": message for field, message in errors.items()})
    return policy


def _config_errors(job_type: JobType, config: dict[str, Any], by: User,
                   job: Job | None = None) -> None:
    """The wizard's checks of a configuration: its schema, and for an import of an uploaded
    file, that the file is the person's own (or the job's) and would import."""
    _unknown(job_type.config_schema, config, "config")
    errors = validate(job_type.config_schema, config)
    if not errors and "upload_id" in job_type.config_schema.get("properties", {}):
        upload = datastore.upload_for(config.get("upload_id"), by, job)
        if upload is None:
            errors["upload_id"] = "There is no upload of yours with this id."
        elif problem := datastore.file_problem(upload, datastore.check_config(upload, config)):
            errors["upload_id"] = problem
    if errors:
        raise Invalid({f"config.{field}": message for field, message in errors.items()})


def create(body: dict[str, Any], *, by: User, run_job: bool = True) -> Job:
    """A new job from an API body (already shaped by the request schema). `run_job`
    False creates it paused, as Lytics' run_job=false leaves it unstarted."""
    provider, job_type = find_job_type(body.get("provider"), body.get("job_type"),
                                       body.get("workflow"))
    authorization = _authorization(provider, body)
    name, description = body.get("name", "").strip(), body.get("description", "").strip()
    errors = name_errors(name, description, missing="Give the job a name.")
    if errors:
        raise Invalid(errors)
    config = {**defaults(job_type.config_schema), **(body.get("config") or {})}
    _config_errors(job_type, config, by)
    return jobs.create_job(provider=provider, job_type=job_type, authorization=authorization,
                           name=name, description=description, config=config, created_by=by,
                           schedule=_schedule(job_type, body.get("schedule")),
                           retry_policy=_retry_policy(body.get("retry_policy")),
                           paused=not run_job)


def edit(job: Job, body: dict[str, Any], *, by: User, whole: bool) -> jobs.EditSaved:
    """Change a job through save_edit (versions, audit, log: as the UI's Save).

    `whole` (PUT, as Lytics): a field left out goes back to its default. Otherwise
    (PATCH) only the fields sent change, and a config sent is merged into the job's.
    Secret fields are write-only in both: one left out keeps its sealed value."""
    found = get_job_type(job.provider, job.job_type)
    if found is None:
        raise Invalid({"job_type": f"This portal no longer offers {job.provider}/"
                                   f"{job.job_type}."})
    provider, job_type = found
    for key, mine in (("provider", job.provider), ("job_type", job.job_type),
                      ("workflow", job.job_type)):
        if body.get(key) not in (None, mine):
            raise Invalid({key: "A job's provider and job type cannot change."})
    before = jobconfig.Settings.of(job)
    schema = job_type.config_schema
    if whole:
        authorization = _authorization(provider, body)
        authorization_id = authorization.id if authorization else None
        config = {**defaults(schema), **(body.get("config") or {})}
        plan, policy = _schedule(job_type, body.get("schedule")), _retry_policy(
            body.get("retry_policy"))
        name, description = body.get("name", ""), body.get("description", "")
    else:
        sent = "authorization_id" in body or "auth_ids" in body
        authorization_id = (_authorization(provider, body).id if sent and (
            body.get("authorization_id") is not None or body.get("auth_ids"))
            else (None if sent else before.authorization_id))
        if sent and authorization_id is None and provider.needs_authorization:
            raise Invalid({"authorization_id": f"{provider.name} needs an authorization."})
        opened = configsecrets.open_config(schema, before.config, what="this job")
        config = {**opened, **(body.get("config") or {})} if "config" in body else None
        plan = (_schedule(job_type, {**before.schedule, **(body.get("schedule") or {})})
                if "schedule" in body else before.schedule)
        policy = (_retry_policy({**before.retry_policy, **(body.get("retry_policy") or {})})
                  if "retry_policy" in body else before.retry_policy)
        name = body.get("name", before.name)
        description = body.get("description", before.description)
    if config is not None:
        # Validated in plain text, stored sealed; a secret not sent keeps its sealed value.
        plain_for_check = {**configsecrets.open_config(schema, before.config, what="this job"),
                           **{k: v for k, v in config.items() if v not in (None, "")}}
        _config_errors(job_type, plain_for_check, by, job)
        stored = configsecrets.seal_config(schema, config, keep=before.config)
    else:
        stored = before.config
    after = jobconfig.Settings(
        authorization_id, stored, plan, policy, name.strip(), description.strip())
    try:
        return jobs.save_edit(job, job_type, after, by=by)
    except jobs.EditRefused as refused:
        raise Invalid(refused.errors) from None


def bounce(job: Job, *, by: User) -> None:
    """Lytics' bounce, start the job over now: a sleeping job runs now, a paused or failed
    one resumes. A running or completed job cannot be bounced (IllegalTransition)."""
    if lifecycle.can(job, lifecycle.Trigger.RUN_NOW):
        jobs.run_job_now(job, by=by)
    else:
        jobs.resume_job(job, by=by)
