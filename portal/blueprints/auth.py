"""Sign in and sign out."""

from __future__ import annotations

import math
import re

from flask import Blueprint, flash, redirect, render_template, request, url_for
from flask_login import current_user, login_required
from flask_wtf import FlaskForm
from sqlalchemy import select
from wtforms import BooleanField, EmailField, PasswordField, SelectField
from wtforms.validators import DataRequired, Length, ValidationError

from portal import access, audit, htmx, throttle
from portal.extensions import db
from portal.models import User
from portal.models.types import utcnow
from portal.models.users import check_sign_in
from portal.schedule import known_timezones

bp = Blueprint("auth", __name__)
# Sign-in throttling and session checks belong to sign-in: bound with this blueprint.
bp.record_once(lambda state: access.check_settings(state.app))
bp.record_once(lambda state: throttle.init_app(state.app))
bp.before_app_request(access.check_session)


class LoginForm(FlaskForm):
    email = EmailField("Email", validators=[DataRequired(), Length(max=320)])
    password = PasswordField("Password", validators=[DataRequired(), Length(max=500)])
    remember = BooleanField("Keep me signed in")


def _safe_next(target: str | None) -> str:
    # Only paths on this site: never send a user on to another host after sign-in.
    return htmx.local_url(target) or url_for("jobs.index")


@bp.route("/login", methods=["GET", "POST"])
def login():
    """Show the sign-in form; sign the user in when the email and password match."""
    if current_user.is_authenticated:
        return redirect(url_for("jobs.index"))
    form = LoginForm()
    if form.validate_on_submit():
        email = form.email.data.strip().lower()
        address = request.remote_addr
        user = db.session.scalar(select(User).where(User.email == email))
        typed = attempted_account(email, user)
        # Counted before the password is checked (see portal/throttle.py).
        if wait := throttle.reserve(email, address):
            # Refused without looking at the password, right or wrong; audited once a wait.
            if throttle.first_refusal(email, address, wait):
                audit.record("sign_in_throttled", "user", user.id if user else None, typed,
                             actor=typed, summary="Sign-in refused: too many failed attempts "
                                                  "(further ones during the wait are not listed).",
                             address=address, retry_after=wait)
                db.session.commit()
            return _throttled(form, wait)
        if check_sign_in(user, form.password.data):
            access.sign_in(user, remember=form.remember.data)
            user.last_login_at = utcnow()
            audit.record("signed_in", "user", user.id, user.email, by=user,
                         summary="Signed in.")
            db.session.commit()
            throttle.clear_account(email)
            return redirect(_safe_next(request.args.get("next")), code=303)
        audit.record("sign_in_failed", "user", user.id if user else None, typed, actor=typed,
                     summary="Sign-in failed.")
        db.session.commit()
        form.password.errors.append("The email or password is not right.")
    status = 200 if request.method == "GET" or not form.errors else 422
    return render_template("auth/login.html", form=form), status


EMAIL_SHAPE = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s.]{2,}")


def attempted_account(email: str, user: User | None) -> str:
    """How the audit log names the account a failed sign-in was for: a known account by its
    email; an unknown one with its local part masked, and anything that is not an email
    address not at all — people type their password into the email box, and it must not
    land in the log in clear."""
    if user is not None:
        return user.email
    if not EMAIL_SHAPE.fullmatch(email):
        return "(not an email address)"
    local, _, domain = email.rpartition("@")
    return f"{local[:1]}…@{domain}"[:200]


def _throttled(form: LoginForm, wait: int):
    minutes = math.ceil(wait / 60)
    when = (f"{wait} seconds" if wait < 60
            else f"{minutes} minute{'s' if minutes != 1 else ''}")
    message = (f"Too many failed sign-ins for this account or from this network. "
               f"Wait {when} and try again.")
    page = render_template("auth/login.html", form=form, throttled=message)
    return page, 429, {"Retry-After": str(wait)}


@bp.post("/logout")
@login_required
def logout():
    """Sign out everywhere and go back to the sign-in page."""
    user = current_user._get_current_object()
    audit.record("signed_out", "user", user.id, user.email, by=user, summary="Signed out.")
    access.sign_out(user)
    db.session.commit()
    flash("You are signed out.", "info")
    return redirect(url_for("auth.login"), code=303)


def _known_zone(form: FlaskForm, field: SelectField) -> None:
    if field.data not in known_timezones():
        raise ValidationError("Unknown time zone; pick one from the list, such as UTC or "
                              "Europe/Paris.")


class SettingsForm(FlaskForm):
    # The list is checked by _known_zone, with a message that says what to do.
    timezone = SelectField("Time zone", validators=[_known_zone], validate_choice=False)


@bp.route("/settings", methods=["GET", "POST"])
@login_required
def settings():
    """The signed-in person's own settings: the time zone their times show in."""
    user = current_user._get_current_object()
    form = SettingsForm(timezone=user.timezone)
    form.timezone.choices = sorted(known_timezones())
    if form.validate_on_submit():
        user.timezone = form.timezone.data
        db.session.commit()
        flash(f"Saved: times now show in {user.timezone}.", "success")
        return redirect(url_for("auth.settings"), code=303)
    status = 200 if request.method == "GET" or not form.errors else 422
    return render_template("auth/settings.html", form=form), status
