"""The data store: streams and what landed in them, and the profiles built from it."""

from __future__ import annotations

from itertools import zip_longest
from typing import Any

from flask import Blueprint, abort, flash, request, url_for
from flask_login import current_user
from sqlalchemy import func, select

from portal import audiences, datastore, htmx, params, profiles
from portal.access import role_required
from portal.extensions import db
from portal.models import Audience, Stream

bp = Blueprint("data", __name__, url_prefix="/data")
PAGE_SIZE = 50


@bp.get("")
@role_required("viewer")
def index():
    """Streams with their running totals and the field names seen in them."""
    streams = db.session.scalars(select(Stream).order_by(Stream.name)).all()
    fields = datastore.stream_fields([stream.id for stream in streams])
    return htmx.render("data/index.html", streams=streams, fields=fields,
                       identity_keys=profiles.identity_keys(),
                       audience_count=db.session.scalar(
                           select(func.count()).select_from(Audience)) or 0)


@bp.get("/profiles")
@role_required("viewer")
def find_profile():
    """Find a user: the profile that owns an identity value, each attribute with its
    event time and source."""
    keys = profiles.identity_keys()
    key = request.args.get("key", keys[0])
    value = request.args.get("value", "").strip()[:255]
    errors = {}
    if key not in keys:
        errors["key"] = f"Choose one of the identity keys: {', '.join(keys)}."
    if "value" in request.args and not value:
        errors["value"] = "Enter the value to look for."
    found = profiles.find(key, value) if value and not errors else None
    return htmx.render("data/profiles.html", "data/_profile.html", keys=keys, key=key,
                       value=value, errors=errors, profile=found, searched=bool(value),
                       member_of=audiences.audiences_of(found.id) if found else [])


def _stream_or_404(name: str) -> Stream:
    found = db.session.scalar(select(Stream).where(Stream.name == name))
    if found is None:
        abort(404, description=f"There is no stream called {name!r}.")
    return found


@bp.get("/streams/<name>")
@role_required("viewer")
def stream(name: str):
    """A stream's messages, newest first, a page at a time; searchable."""
    found = _stream_or_404(name)
    limit = min(params.int_arg(request.args, "limit", default=PAGE_SIZE), 500)
    before = params.id_arg(request.args, "before")
    search = request.args.get("q", "").strip()[:200]
    messages, older = datastore.stream_page(found, before_id=before, search=search,
                                            limit=limit)
    return htmx.render("data/stream.html", "data/_messages.html", stream=found,
                       messages=messages, older=older, before=before, search=search,
                       total=datastore.message_count(found),
                       fields=datastore.stream_fields([found.id])[found.id])


@bp.get("/streams/<name>/delete")
@role_required("admin")
def confirm_delete(name: str):
    """Ask before deleting a stream: how many messages go, or which jobs stand in the way."""
    found = _stream_or_404(name)
    return htmx.render("data/delete.html", "data/_delete.html", stream=found,
                       count=datastore.message_count(found), blockers=datastore.jobs_using(found))


@bp.post("/streams/<name>/delete")
@role_required("admin")
def delete(name: str):
    """Delete a stream and its messages, unless a job that may still run uses it."""
    found = _stream_or_404(name)
    try:
        deleted = datastore.delete_stream(found, by=current_user)
    except datastore.StreamInUse as refused:
        db.session.rollback()
        return htmx.render("data/delete.html", "data/_delete.html", status=409, stream=found,
                           count=datastore.message_count(found), blockers=refused.jobs)
    db.session.commit()
    flash(f"Deleted stream {name} and its {deleted:,} messages.", "success")
    return htmx.redirect(url_for("data.index"))


# --- Audiences ------------------------------------------------------------------------
MAX_FORM_ROWS = audiences.MAX_CONDITIONS + 10  # more rows than that: check() says so


def _value_text(value: Any) -> str:
    """A stored condition value as the form's text box shows it."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return ", ".join(_value_text(item) for item in value)
    return str(value)


def _stored_rows(audience: Audience | None) -> list[dict[str, str]]:
    conditions = audience.conditions if audience is not None else []
    return [{"field": c["field"], "op": c["op"], "value": _value_text(c.get("value"))}
            for c in conditions] or [{"field": "", "op": "equals", "value": ""}]


def _form_rows() -> list[dict[str, str]]:
    """The condition rows as the form sent them (text as typed), after any add/remove."""
    form = request.form
    rows = [{"field": (field or "").strip()[:1000], "op": (op or "").strip()[:20],
             "value": (value or "").strip()[:20000]}
            for field, op, value in zip_longest(form.getlist("field"), form.getlist("op"),
                                                form.getlist("value"))][:MAX_FORM_ROWS]
    remove = params.parse_int(form.get("remove"), low=0, high=MAX_FORM_ROWS)
    if remove is not None and remove < len(rows):
        del rows[remove]
    if form.get("add") and len(rows) < MAX_FORM_ROWS:
        rows.append({"field": "", "op": "equals", "value": ""})
    return rows


def _form_data(rows: list[dict[str, str]]) -> tuple[dict[str, Any], list[int]]:
    """What check() takes from the form, and for each condition the form row it came
    from (rows left wholly blank are no condition)."""
    conditions, origin = [], []
    for n, row in enumerate(rows):
        if not row["field"] and not row["value"]:
            continue
        value: Any = row["value"]
        if row["op"] == "in":  # the form writes a list as comma-separated values
            value = [item.strip() for item in value.split(",") if item.strip()]
        conditions.append({"field": row["field"], "op": row["op"], "value": value})
        origin.append(n)
    form = request.form
    return {"name": form.get("name", "")[:1000], "slug": form.get("slug", "").strip()[:200],
            "description": form.get("description", "")[:20000],
            "match": form.get("match", "all"), "conditions": conditions}, origin


def _row_errors(errors: dict[str, str], origin: list[int]) -> dict[str, str]:
    """check()'s messages with condition numbers turned into form row numbers."""
    found = {}
    for key, message in errors.items():
        parts = key.split(".")
        if parts[0] == "conditions" and len(parts) > 1 and parts[1].isdigit():
            parts[1] = str(origin[int(parts[1])])
            key = ".".join(parts[:3])
        found.setdefault(key, message)
    return found


def _problems(errors: dict[str, str]) -> list[tuple[str, str]]:
    """Messages about the conditions, each with where it is ("Condition 2, value")."""
    found = []
    for key, message in errors.items():
        parts = key.split(".")
        if parts[0] == "match":
            found.append(("Match", message))
        elif parts[0] == "conditions":
            where = f"Condition {int(parts[1]) + 1}" if len(parts) > 1 else "Conditions"
            found.append((where + (f", {parts[2]}" if len(parts) > 2 else ""), message))
    return found


def _preview_context(data: dict[str, Any], origin: list[int] | None = None) -> dict[str, Any]:
    """The preview of the conditions in `data` (as check() cleans them), or the messages
    about those that cannot be read (numbered as the form's rows, see `origin`)."""
    cleaned, errors = audiences.check({"name": "preview", "match": data.get("match", "all"),
                                       "conditions": data.get("conditions", [])})
    if origin is not None:
        errors = _row_errors(errors, origin)
    if problems := _problems(errors):
        return {"problems": problems, "conditions": data.get("conditions", [])}
    match, conditions = cleaned["match"], cleaned["conditions"]
    return {"problems": [], "conditions": conditions,
            "total": audiences.count(match, conditions),
            "members": audiences.preview(match, conditions, limit=10)}


def _audience_or_404(audience_id: int) -> Audience:
    return db.get_or_404(Audience, audience_id,
                         description=f"There is no audience #{audience_id}.")


def _render_form(audience: Audience | None, rows: list[dict[str, str]],
                 data: dict[str, Any] | None, errors: dict[str, str],
                 origin: list[int] | None = None, *, status: int = 200):
    if data is None:  # as stored
        data = {"name": audience.name if audience else "",
                "slug": audience.slug if audience else "",
                "description": audience.description if audience else "",
                "match": audience.match if audience else "all",
                "conditions": list(audience.conditions) if audience else []}
    return htmx.render("data/audience.html", status=status, audience=audience, rows=rows,
                       form=data, errors=errors, ops=audiences.OPS,
                       field_names=audiences.field_names(),
                       can_edit=current_user.has_role("operator"),
                       blockers=audiences.jobs_using(audience) if audience else [],
                       summary=audiences.summary(
                           audience.match, audience.conditions) if audience else "",
                       **_preview_context(data, origin))


@bp.get("/audiences")
@role_required("viewer")
def audience_list():
    """Every audience: its conditions in words, its size and the jobs that use it."""
    rows = [(audience, audiences.summary(audience.match, audience.conditions),
             audiences.count(audience.match, audience.conditions),
             audiences.jobs_using(audience)) for audience in audiences.all_audiences()]
    return htmx.render("data/audiences.html", rows=rows)


@bp.route("/audiences/new", methods=["GET", "POST"])
@role_required("operator")
def audience_new():
    return _audience_form(None)


@bp.route("/audiences/<int:audience_id>", methods=["GET", "POST"])
@role_required("viewer")
def audience(audience_id: int):
    found = _audience_or_404(audience_id)
    if request.method == "POST" and not current_user.has_role("operator"):
        abort(403, description="This needs the operator role or above.")
    return _audience_form(found)


def _audience_form(found: Audience | None):
    """The audience form: GET shows it, POST saves it or (no script: Add / Remove a
    condition) shows it again with the rows changed."""
    if request.method == "GET":
        return _render_form(found, _stored_rows(found), None, {})
    rows = _form_rows()
    data, origin = _form_data(rows)
    cleaned, errors = audiences.check(data, audience=found)
    errors = _row_errors(errors, origin)
    if request.form.get("add") or request.form.get("remove") is not None:
        return _render_form(found, rows, data, {
            key: message for key, message in errors.items()
            if key.startswith("conditions.")}, origin)
    if errors:
        return _render_form(found, rows, data, errors, origin, status=422)
    if found is None:
        found = audiences.create(cleaned, by=current_user)
        flash(f"Created audience {found.name}.", "success")
    else:
        audiences.update(found, cleaned, by=current_user)
        flash(f"Saved audience {found.name}.", "success")
    db.session.commit()
    return htmx.redirect(url_for("data.audience", audience_id=found.id))


@bp.post("/audiences/rows")
@role_required("operator")
def audience_rows():
    """Add or remove a condition row (htmx): the rows, and the preview out of band."""
    rows = _form_rows()
    data, origin = _form_data(rows)
    return htmx.fragment("data/_audience_rows.html", rows=rows, ops=audiences.OPS,
                         errors={}, field_names=audiences.field_names(), oob=True,
                         **_preview_context(data, origin))


@bp.post("/audiences/preview")
@role_required("viewer")
def audience_preview():
    """The live member count and first members of the conditions in the form (htmx)."""
    data, origin = _form_data(_form_rows())
    return htmx.fragment("data/_audience_preview.html", **_preview_context(data, origin))


@bp.get("/audiences/<int:audience_id>/delete")
@role_required("operator")
def audience_confirm_delete(audience_id: int):
    found = _audience_or_404(audience_id)
    return htmx.render("data/audience_delete.html", "data/_audience_delete.html",
                       audience=found, blockers=audiences.jobs_using(found))


@bp.post("/audiences/<int:audience_id>/delete")
@role_required("operator")
def audience_delete(audience_id: int):
    """Delete an audience, unless a job that may still run exports it."""
    found = _audience_or_404(audience_id)
    try:
        audiences.delete(found, by=current_user)
    except audiences.AudienceInUse as refused:
        db.session.rollback()
        return htmx.render("data/audience_delete.html", "data/_audience_delete.html",
                           status=409, audience=found, blockers=refused.jobs)
    db.session.commit()
    flash(f"Deleted audience {found.name}.", "success")
    return htmx.redirect(url_for("data.audience_list"))
