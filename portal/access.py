"""Sign-in and role checks shared by the views."""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps

from flask import abort
from flask_login import current_user, login_required

from portal.extensions import db, login_manager
from portal.models import User

login_manager.login_view = "auth.login"
login_manager.login_message = "Sign in to continue."
login_manager.login_message_category = "info"


@login_manager.user_loader
def load_user(user_id: str) -> User | None:
    return db.session.get(User, int(user_id))


def role_required(role: str) -> Callable:
    """Sign-in required, and the user's role must be `role` or above."""

    def decorate(view: Callable) -> Callable:
        @wraps(view)
        @login_required
        def wrapped(*args, **kwargs):
            if not current_user.has_role(role):
                abort(403, description=f"This needs the {role} role or above.")
            return view(*args, **kwargs)

        return wrapped

    return decorate
