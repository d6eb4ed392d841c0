"""Sign in and sign out."""

from __future__ import annotations

from urllib.parse import urlsplit

from flask import Blueprint, flash, redirect, render_template, request, url_for
from flask_login import current_user, login_required, login_user, logout_user
from flask_wtf import FlaskForm
from sqlalchemy import select
from wtforms import BooleanField, EmailField, PasswordField
from wtforms.validators import DataRequired, Length

from portal import access, audit  # noqa: F401  (access registers the user loader)
from portal.extensions import db
from portal.models import User
from portal.models.types import utcnow

bp = Blueprint("auth", __name__)


class LoginForm(FlaskForm):
    email = EmailField("Email", validators=[DataRequired(), Length(max=320)])
    password = PasswordField("Password", validators=[DataRequired(), Length(max=500)])
    remember = BooleanField("Keep me signed in")


def _safe_next(target: str | None) -> str:
    # Only paths on this site: never send a user on to another host after sign-in.
    if target and target.startswith("/") and not target.startswith("//"):
        parts = urlsplit(target)
        if not parts.scheme and not parts.netloc:
            return target
    return url_for("jobs.index")


@bp.route("/login", methods=["GET", "POST"])
def login():
    """Show the sign-in form; sign the user in when the email and password match."""
    if current_user.is_authenticated:
        return redirect(url_for("jobs.index"))
    form = LoginForm()
    if form.validate_on_submit():
        email = form.email.data.strip().lower()
        user = db.session.scalar(select(User).where(User.email == email))
        if user and user.active and user.check_password(form.password.data):
            login_user(user, remember=form.remember.data)
            user.last_login_at = utcnow()
            audit.record("signed_in", "user", user.id, user.email, by=user,
                         summary="Signed in.")
            db.session.commit()
            return redirect(_safe_next(request.args.get("next")), code=303)
        # Who tried, as typed: never the password, and never more than the columns hold.
        typed = email[:200]
        audit.record("sign_in_failed", "user", user.id if user else None, typed, actor=typed,
                     summary="Sign-in failed.")
        db.session.commit()
        form.password.errors.append("The email or password is not right.")
    status = 200 if request.method == "GET" or not form.errors else 422
    return render_template("auth/login.html", form=form), status


@bp.post("/logout")
@login_required
def logout():
    """Sign out and go back to the sign-in page."""
    user = current_user._get_current_object()
    audit.record("signed_out", "user", user.id, user.email, by=user, summary="Signed out.")
    db.session.commit()
    logout_user()
    flash("You are signed out.", "info")
    return redirect(url_for("auth.login"), code=303)
