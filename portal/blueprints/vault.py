"""The Vault: authorizations that jobs use to reach providers."""

from __future__ import annotations

from flask import Blueprint
from sqlalchemy import func, select

from portal import htmx
from portal.access import role_required
from portal.extensions import db
from portal.models import Authorization, Job

bp = Blueprint("vault", __name__, url_prefix="/vault")


@bp.get("")
@role_required("operator")
def index():
    """Every authorization with the number of jobs that use it."""
    uses = dict(db.session.execute(
        select(Job.authorization_id, func.count()).group_by(Job.authorization_id)
    ).all())
    authorizations = db.session.scalars(select(Authorization).order_by(Authorization.label)).all()
    return htmx.render("vault/index.html", authorizations=authorizations, uses=uses)
