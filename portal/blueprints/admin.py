"""Administration: the people who can sign in."""

from __future__ import annotations

from flask import Blueprint
from sqlalchemy import select

from portal import htmx
from portal.access import role_required
from portal.extensions import db
from portal.models import User

bp = Blueprint("admin", __name__, url_prefix="/admin")


@bp.get("")
@role_required("admin")
def index():
    """Users and their roles."""
    users = db.session.scalars(select(User).order_by(User.email)).all()
    return htmx.render("admin/index.html", users=users)
