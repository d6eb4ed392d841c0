"""Administration of users (/admin/users): the list, creating and inviting people, roles,
disabling and enabling, password resets, and the API tokens on the same page. The rules
and the audit trail live in portal/users.py."""

from __future__ import annotations

from flask import Blueprint, flash, request, url_for
from flask_login import current_user

from portal import htmx, tokens, users
from portal.access import role_required
from portal.extensions import db
from portal.models import ROLES, User

bp = Blueprint("users", __name__, url_prefix="/admin/users")

FORM_FIELDS = ("email", "name", "role", "password", "mode")


def _page(*, status: int = 200, errors: dict[str, str] | None = None,
          form: dict[str, str] | None = None, shown_link: tuple[str, str, User] | None = None):
    return htmx.render(
        "admin/users.html", status=status, users=users.all_users(),
        invited=users.pending_invites(), roles=ROLES, errors=errors or {},
        form=form or {"email": "", "name": "", "role": "viewer", "password": "",
                      "mode": "invite"},
        shown_link=shown_link, me=current_user,
        # The tokens section (the same as /admin/tokens, whose form it posts to).
        tokens=tokens.all_tokens(), state=tokens.state, token_errors={},
        token_form={"name": "", "description": "", "role": "viewer", "days": "30"},
        created=None, expiry_days=tokens.EXPIRY_DAYS,
    )


@bp.get("")
@role_required("admin")
def index():
    """The people who can sign in, and the API tokens."""
    return _page()


@bp.post("")
@role_required("admin")
def add():
    """Create a user with a password, or invite one (the link is shown once)."""
    form = {key: request.form.get(key, "")[:1000] for key in FORM_FIELDS}
    form["email"], form["name"] = form["email"].strip(), form["name"].strip()
    by = current_user._get_current_object()
    try:
        if form["mode"] == "create":
            user = users.create(email=form["email"], name=form["name"], role=form["role"],
                                password=form["password"], by=by)
            flash(f"Created {user.email} ({user.role}).", "success")
            return htmx.redirect(url_for("users.index"))
        if form["mode"] != "invite":
            raise users.Refused({"mode": "Choose “invite” or “create with a password”."})
        user, raw = users.invite(email=form["email"], name=form["name"], role=form["role"],
                                 by=by)
    except users.Refused as exc:
        form["password"] = ""  # never sent back
        return _page(status=422, errors=exc.errors, form=form)
    link = url_for("auth.use_link", purpose="invite", token=raw, _external=True)
    return _page(shown_link=("invite", link, user))


def _user(user_id: int) -> User:
    return db.get_or_404(User, user_id, description=f"There is no user #{user_id}.")


@bp.post("/<int:user_id>/role")
@role_required("admin")
def set_role(user_id: int):
    user = _user(user_id)
    try:
        if users.set_role(user, request.form.get("role", ""), by=current_user):
            flash(f"{user.email} is now {user.role}.", "success")
    except users.Refused as exc:
        flash(f"{user.email}: {exc}", "danger")
    return htmx.redirect(url_for("users.index"))


@bp.post("/<int:user_id>/disable")
@role_required("admin")
def disable(user_id: int):
    user = _user(user_id)
    try:
        if users.set_active(user, False, by=current_user._get_current_object()):
            flash(f"Disabled {user.email}: their sessions and API tokens stopped working.",
                  "info")
    except users.Refused as exc:
        flash(f"{user.email}: {exc}", "danger")
    return htmx.redirect(url_for("users.index"))


@bp.post("/<int:user_id>/enable")
@role_required("admin")
def enable(user_id: int):
    user = _user(user_id)
    if users.set_active(user, True, by=current_user._get_current_object()):
        flash(f"Enabled {user.email}.", "success")
    return htmx.redirect(url_for("users.index"))


@bp.post("/<int:user_id>/reset")
@role_required("admin")
def reset(user_id: int):
    """Issue a one-time reset link (shown once) or set a new password; either way the
    user's sessions end."""
    user = _user(user_id)
    by = current_user._get_current_object()
    password = request.form.get("password", "")[:1000]
    try:
        if password:
            users.reset_password(user, by=by, password=password)
            flash(f"New password set for {user.email}; their sessions ended.", "success")
            return htmx.redirect(url_for("users.index"))
        raw = users.reset_password(user, by=by)
    except users.Refused as exc:
        flash(f"{user.email}: {exc}", "danger")
        return htmx.redirect(url_for("users.index"))
    link = url_for("auth.use_link", purpose="reset", token=raw, _external=True)
    return _page(shown_link=("reset", link, user))
