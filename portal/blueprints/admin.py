"""Administration: the people who can sign in, and the audit log."""

from __future__ import annotations

from flask import Blueprint, flash, redirect, request, url_for
from flask_login import current_user
from sqlalchemy import select

from portal import htmx, params, tokens
from portal.access import role_required
from portal.extensions import db
from portal.models import AccessToken, AuditEntry, User
from portal.ui import human_label

bp = Blueprint("admin", __name__, url_prefix="/admin")

AUDIT_PAGE_SIZE = 50


@bp.get("")
@role_required("admin")
def index():
    """Users and their roles."""
    users = db.session.scalars(select(User).order_by(User.email)).all()
    return htmx.render("admin/index.html", users=users)


def _audit_filters() -> dict[str, int | str]:
    """The filters in the query string that are set (blank ones mean "any")."""
    filters: dict[str, int | str] = {}
    user_id = params.id_arg(request.args, "user", strict=False)  # a filter: a stale one is ignored
    if user_id is not None:
        filters["user"] = user_id
    for name in ("object_type", "action"):
        value = request.args.get(name, "").strip()
        if value:
            filters[name] = value
    return filters


def _distinct(column) -> list[tuple[str, str]]:
    return [(value, human_label(value)) for value in
            db.session.scalars(select(column).distinct().order_by(column))]


@bp.get("/audit")
@role_required("admin")
def audit():
    """The audit log, newest first, filtered by person, object type and action, in pages
    of AUDIT_PAGE_SIZE keyed on the entry id (`before`), so paging never skips or repeats."""
    filters = _audit_filters()
    query = select(AuditEntry).order_by(AuditEntry.id.desc())
    if "user" in filters:
        query = query.where(AuditEntry.user_id == filters["user"])
    if "object_type" in filters:
        query = query.where(AuditEntry.object_type == filters["object_type"])
    if "action" in filters:
        query = query.where(AuditEntry.action == filters["action"])
    before = params.id_arg(request.args, "before")
    if before is not None:
        query = query.where(AuditEntry.id < before)
    rows = list(db.session.scalars(query.limit(AUDIT_PAGE_SIZE + 1)))
    entries = rows[:AUDIT_PAGE_SIZE]
    older = entries[-1].id if len(rows) > AUDIT_PAGE_SIZE else None
    return htmx.render(
        "admin/audit.html", "admin/_audit_table.html",
        entries=entries, filters=filters, before=before, older=older,
        menus={  # (value, label) pairs of the filter menus
            "user": db.session.execute(select(User.id, User.email).order_by(User.email)).all(),
            "object_type": _distinct(AuditEntry.object_type),
            "action": _distinct(AuditEntry.action),
        },
    )


@bp.route("/tokens", methods=["GET", "POST"])
@role_required("admin")
def tokens_page():
    """API tokens: the list, and a form to create one (the new token is shown once)."""
    errors: dict[str, str] = {}
    created = None
    form = {"name": "", "description": "", "role": "viewer", "days": "30"}
    if request.method == "POST":
        form = {key: request.form.get(key, "").strip()[:5000] for key in form}
        days = params.parse_int(form["days"]) if form["days"] != "none" else None
        if form["days"] != "none" and days is None:
            errors["days"] = "Choose 7, 30 or 90 days, or no expiry."
        else:
            try:
                created = tokens.create(name=form["name"], description=form["description"],
                                        role=form["role"], days=days, by=current_user)
            except tokens.TokenRefused as exc:
                errors = exc.errors
    return htmx.render("admin/tokens.html", status=422 if errors else 200,
                       tokens=tokens.all_tokens(), state=tokens.state, errors=errors,
                       form=form, created=created, expiry_days=tokens.EXPIRY_DAYS)


def _token(token_id: int) -> AccessToken:
    return db.get_or_404(AccessToken, token_id, description=f"There is no token #{token_id}.")


@bp.route("/tokens/<int:token_id>/revoke", methods=["GET", "POST"])
@role_required("admin")
def revoke_token(token_id: int):
    """GET asks for confirmation; POST revokes the token from its next request on."""
    token = _token(token_id)
    if request.method == "GET":
        return htmx.render("admin/token_revoke.html", token=token)
    if tokens.revoke(token, by=current_user):
        flash(f"Revoked the token “{token.name}”.", "info")
    return redirect(url_for("admin.tokens_page"), 303)


# --- Operations: queues, workers and the dispatcher (portal/operations.py) ---------------

from portal import operations  # noqa: E402  (kept with its views, for merging)
from portal.access import background  # noqa: E402

OPERATIONS_POLL_SECONDS = 5


@bp.get("/operations")
@role_required("admin")
def operations_page():
    """Each queue's backlog, each worker and its heartbeat, the dispatcher's health."""
    return htmx.render("admin/operations.html", "admin/_operations.html",
                       shot=operations.snapshot(), poll_seconds=OPERATIONS_POLL_SECONDS)


@bp.get("/operations/live")
@background  # polled by the page: not the person's activity
@role_required("admin")
def operations_live():
    """The operations block, polled by its page."""
    return htmx.fragment("admin/_operations.html", shot=operations.snapshot(),
                         poll_seconds=OPERATIONS_POLL_SECONDS)
