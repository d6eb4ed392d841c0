"""The REST API's request and response shapes, as marshmallow schemas: requests are
loaded through them (unknown or mistyped fields give field messages), responses are
dumped through them (job_data, log_data...), and the OpenAPI document is generated from
them (portal/apidoc.py).
"""

from __future__ import annotations

from typing import Any

from marshmallow import RAISE, Schema, fields, validate

from portal import jobs
from portal.models import Audience, Authorization, Job, JobEvent
from portal.ui import redacted_config
from providers.base import Provider


class _Strict(Schema):
    class Meta:
        unknown = RAISE


_TEXT = fields.String(validate=validate.Length(max=5000))


class JobIn(_Strict):
    """A job as POST, PUT and PATCH take it (ours and Lytics' names)."""

    provider = fields.String(validate=validate.Length(max=64))
    job_type = fields.String(validate=validate.Length(max=64))
    workflow = fields.String(validate=validate.Length(max=64),
                             metadata={"description": "Lytics' name for the job type key."})
    name = fields.String(validate=validate.Length(max=200))
    description = _TEXT
    authorization_id = fields.Integer(allow_none=True, strict=True,
                                      validate=validate.Range(min=1, max=2**63 - 1))
    auth_ids = fields.List(fields.Integer(strict=True, validate=validate.Range(
        min=1, max=2**63 - 1)), validate=validate.Length(max=1),
        metadata={"description": "Lytics' list of authorization ids (one)."})
    config = fields.Dict(keys=fields.String(), metadata={
        "description": "The job type's config_schema; secret fields are write-only."})
    schedule = fields.Dict(keys=fields.String())
    retry_policy = fields.Dict(keys=fields.String())


class JobOut(Schema):
    id = fields.Integer()
    name = fields.String()
    description = fields.String()
    provider = fields.String()
    job_type = fields.String()
    workflow = fields.String()
    kind = fields.String()
    status = fields.String()
    authorization_id = fields.Integer(allow_none=True)
    auth_ids = fields.List(fields.Integer())
    config = fields.Dict(metadata={"description": "Secret fields are shown as set, never "
                                                  "their values."})
    schedule = fields.Dict()
    retry_policy = fields.Dict()
    quiet_time_of_day = fields.String()
    quiet_timezone = fields.String()
    quiet_period = fields.String()
    created = fields.DateTime()
    updated = fields.DateTime()
    next_run_at = fields.DateTime(allow_none=True)
    last_run_at = fields.DateTime(allow_none=True)
    added = fields.Integer()
    removed = fields.Integer()
    omitted = fields.Integer()


class LogContext(Schema):
    added = fields.Integer()
    removed = fields.Integer()
    omitted = fields.Integer()
    user_email = fields.String(allow_none=True)


class LogEntry(Schema):
    id = fields.Integer()
    job_id = fields.Integer()
    timestamp = fields.DateTime()
    level = fields.String()
    code = fields.String()
    kind = fields.String()
    message = fields.String()
    context = fields.Nested(LogContext)


class AuthMethodOut(Schema):
    key = fields.String()
    name = fields.String()
    schema = fields.Dict(allow_none=True)


class JobTypeOut(Schema):
    key = fields.String()
    name = fields.String()
    kind = fields.String()
    description = fields.String()
    config_schema = fields.Dict()


class ProviderOut(Schema):
    key = fields.String()
    name = fields.String()
    category = fields.String()
    description = fields.String()
    auth_methods = fields.List(fields.Nested(AuthMethodOut))
    job_types = fields.List(fields.Nested(JobTypeOut))


class AuthIn(_Strict):
    provider = fields.String(required=True, validate=validate.Length(max=64))
    method = fields.String(required=True, validate=validate.Length(max=64))
    label = fields.String(required=True, validate=validate.Length(max=200))
    description = _TEXT
    credentials = fields.Dict(keys=fields.String(), load_default=dict, metadata={
        "description": "Write-only: never returned."})


class AuthOut(Schema):
    id = fields.Integer()
    provider = fields.String()
    method = fields.String()
    label = fields.String()
    description = fields.String()
    health = fields.String()
    public = fields.Dict(metadata={"description": "Which secrets are set, and the "
                                                 "non-secret values; never a secret."})
    created = fields.DateTime()


class StreamOut(Schema):
    name = fields.String()
    messages = fields.Integer()
    last_message_at = fields.DateTime(allow_none=True)


class CollectOut(Schema):
    id = fields.String(metadata={"description": "The real-time write's task id."})
    stream = fields.String()
    messages = fields.Integer()


class ImportRows(Schema):
    read = fields.Integer()
    written = fields.Integer()
    duplicates = fields.Integer(metadata={"description": "There already (same row sent "
                                                         "before)."})
    rejected = fields.Integer()


class ImportError_(Schema):
    row = fields.Integer(allow_none=True)
    line = fields.Integer(allow_none=True)
    message = fields.String()


class ImportProfiles(Schema):
    status = fields.String(metadata={"description": "none (nothing written), waiting (rows "
                                                    "still being written), building, built"})
    messages = fields.Integer(metadata={"description": "Messages folded into profiles."})
    of = fields.Integer(metadata={"description": "Messages the import wrote."})


class ImportOut(Schema):
    id = fields.Integer()
    stream = fields.String()
    status = fields.String(metadata={"description": "queued, running, completed, failed"})
    format = fields.String()
    gzip = fields.Boolean()
    dryrun = fields.Boolean()
    droperrors = fields.Boolean()
    timestamp_field = fields.String()
    delimiter = fields.String()
    size = fields.Integer(metadata={"description": "Bytes received."})
    rows = fields.Nested(ImportRows)
    profiles = fields.Nested(ImportProfiles)
    errors = fields.List(fields.Nested(ImportError_), metadata={
        "description": "The first problems, with their line (CSV, NDJSON) or element."})
    message = fields.String()
    created_at = fields.DateTime()
    started_at = fields.DateTime(allow_none=True)
    finished_at = fields.DateTime(allow_none=True)


class ConditionIn(_Strict):
    field = fields.String(required=True, metadata={"description": "A profile field."})
    op = fields.String(required=True, metadata={
        "description": "equals, contains, exists, gt, lt or in (see portal/audiences.py)."})
    value = fields.Raw(allow_none=True, metadata={
        "description": "Text, number or true/false; a non-empty list for `in`; a number "
                       "or an ISO 8601 date/date-time for gt and lt; none for exists."})


class AudienceIn(_Strict):
    """An audience as POST takes it; audiences.check() says what is wrong, per field."""

    name = fields.String(required=True, validate=validate.Length(max=200))
    slug = fields.String(validate=validate.Length(max=64), metadata={
        "description": "Lower-case letters, digits, _ and -; made from the name if left out."})
    description = _TEXT
    match = fields.String(validate=validate.OneOf(["all", "any"]), metadata={
        "description": "all (default): every condition holds; any: one is enough."})
    conditions = fields.List(fields.Nested(ConditionIn), validate=validate.Length(max=50))


class ConditionOut(Schema):
    field = fields.String()
    op = fields.String()
    value = fields.Raw(allow_none=True)


class AudienceOut(Schema):
    id = fields.Integer()
    slug = fields.String()
    name = fields.String()
    description = fields.String()
    match = fields.String()
    conditions = fields.List(fields.Nested(ConditionOut))
    size = fields.Integer(metadata={"description": "Members now."})
    created = fields.DateTime()
    updated = fields.DateTime()


class FieldMeta(Schema):
    event_time = fields.DateTime()
    stream = fields.String(allow_none=True, metadata={"description": "None: deleted since."})
    source = fields.String(allow_none=True)
    message_id = fields.Integer()


class EntityOut(Schema):
    id = fields.Integer()
    identities = fields.Dict(keys=fields.String(), values=fields.List(fields.String()))
    field_values = fields.Dict(keys=fields.String(), values=fields.Raw(allow_none=True),
                               data_key="fields")
    fields_meta = fields.Dict(keys=fields.String(), values=fields.Nested(FieldMeta))
    audiences = fields.List(fields.String(), metadata={"description": "Slugs."})


class ErrorBody(Schema):
    code = fields.String()
    message = fields.String()
    details = fields.Dict()


def envelope(data: fields.Field, name: str) -> type[Schema]:
    """The envelope every answer has: {data, status, message} (+ next on lists)."""
    return Schema.from_dict({"data": data, "status": fields.Integer(),
                             "message": fields.String(),
                             "next": fields.String(allow_none=True)}, name=name)


ErrorOut = Schema.from_dict({"data": fields.Raw(allow_none=True), "status": fields.Integer(),
                             "message": fields.String(), "error": fields.Nested(ErrorBody)},
                            name="Error")
JobEnvelope = envelope(fields.Nested(JobOut), "JobEnvelope")
JobListEnvelope = envelope(fields.List(fields.Nested(JobOut)), "JobListEnvelope")
LogListEnvelope = envelope(fields.List(fields.Nested(LogEntry)), "LogListEnvelope")
ProviderListEnvelope = envelope(fields.List(fields.Nested(ProviderOut)), "ProviderListEnvelope")
AuthEnvelope = envelope(fields.Nested(AuthOut), "AuthEnvelope")
AuthListEnvelope = envelope(fields.List(fields.Nested(AuthOut)), "AuthListEnvelope")
StreamListEnvelope = envelope(fields.List(fields.Nested(StreamOut)), "StreamListEnvelope")
AudienceEnvelope = envelope(fields.Nested(AudienceOut), "AudienceEnvelope")
AudienceListEnvelope = envelope(fields.List(fields.Nested(AudienceOut)), "AudienceListEnvelope")
EntityEnvelope = envelope(fields.Nested(EntityOut), "EntityEnvelope")
CollectEnvelope = envelope(fields.Nested(CollectOut), "CollectEnvelope")
ImportEnvelope = envelope(fields.Nested(ImportOut), "ImportEnvelope")


# --- objects as the API shows them ---------------------------------------------------

def job_data(job: Job) -> dict[str, Any]:
    plan = job.schedule or {}
    quiet = (f"{plan['quiet_start']}-{plan['quiet_end']}"
             if plan.get("quiet_start") and plan.get("quiet_end") else "")
    return JobOut().dump({
        "id": job.id, "name": job.name, "description": job.description or "",
        "provider": job.provider, "job_type": job.job_type, "workflow": job.job_type,
        "kind": job.kind, "status": job.status, "authorization_id": job.authorization_id,
        "auth_ids": [job.authorization_id] if job.authorization_id else [],
        "config": redacted_config(job), "schedule": plan, "retry_policy": job.retry_policy or {},
        "quiet_time_of_day": plan.get("quiet_start", ""),
        "quiet_timezone": plan.get("timezone", "") if quiet else "", "quiet_period": quiet,
        "created": job.created_at, "updated": job.updated_at, "next_run_at": job.next_run_at,
        "last_run_at": job.last_run_at, **jobs.metrics(job),
    })


def log_data(event: JobEvent) -> dict[str, Any]:
    context = event.context or {}
    return LogEntry().dump({
        "id": event.id, "job_id": event.job_id, "timestamp": event.at, "level": event.level,
        "code": event.code or event.kind, "kind": event.kind, "message": event.message,
        "context": {"added": int(context.get("added", 0)),
                    "removed": int(context.get("removed", 0)),
                    "omitted": int(context.get("omitted", 0)),
                    "user_email": context.get("user_email")},
    })


def auth_data(authorization: Authorization) -> dict[str, Any]:
    return AuthOut().dump({
        "id": authorization.id, "provider": authorization.provider,
        "method": authorization.method, "label": authorization.label,
        "description": authorization.description or "", "health": authorization.health,
        "public": authorization.public or {}, "created": authorization.created_at})


def provider_data(provider: Provider) -> dict[str, Any]:
    return ProviderOut().dump({
        "key": provider.key, "name": provider.name, "category": provider.category,
        "description": provider.description,
        "auth_methods": [{"key": m.key, "name": m.name, "schema": m.schema}
                         for m in provider.auth_methods],
        "job_types": [{"key": t.key, "name": t.name, "kind": t.kind,
                       "description": t.description, "config_schema": t.config_schema}
                      for t in provider.job_types]})


def audience_data(audience: Audience, size: int) -> dict[str, Any]:
    return AudienceOut().dump({
        "id": audience.id, "slug": audience.slug, "name": audience.name,
        "description": audience.description or "", "match": audience.match,
        "conditions": audience.conditions or [], "size": size,
        "created": audience.created_at, "updated": audience.updated_at})
