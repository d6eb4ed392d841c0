"""Sign in and sign out."""

from __future__ import annotations

import math
import re

from flask import Blueprint, abort, flash, redirect, render_template, request, session, url_for
from flask_login import current_user, login_required
from flask_wtf import FlaskForm
from sqlalchemy import select
from wtforms import BooleanField, EmailField, PasswordField, SelectField
from wtforms.validators import DataRequired, Length, ValidationError

from portal import access, audit, htmx, passwords, sso, throttle, users
from portal.extensions import db
from portal.models import User
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
    if not sso.password_login():
        if request.method == "POST":
            return _login_page(form, 403, refused="Password sign-in is switched off here: "
                                                  "use “Sign in with SSO”.")
        return _login_page(form, 200)
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
            users.record_sign_in(user, "password")
            throttle.clear_account(email)
            return redirect(_safe_next(request.args.get("next")), code=303)
        audit.record("sign_in_failed", "user", user.id if user else None, typed, actor=typed,
                     summary="Sign-in failed.")
        db.session.commit()
        form.password.errors.append("The email or password is not right.")
    status = 200 if request.method == "GET" or not form.errors else 422
    return _login_page(form, status)


def _login_page(form: LoginForm, status: int, **extra):
    return render_template("auth/login.html", form=form, sso_on=sso.configured(),
                           password_on=sso.password_login(), **extra), status


@bp.post("/login/sso")
def login_sso():
    """Start single sign-on: off to the provider, which comes back to the callback."""
    if not sso.configured():
        abort(404, description="Single sign-on is not set up here.")
    if current_user.is_authenticated:
        return redirect(url_for("jobs.index"), code=303)
    try:
        return sso.begin(url_for("auth.login_sso_callback", _external=True))
    except sso.SignInRefused as exc:
        return _login_page(LoginForm(), 502, refused=str(exc))


@bp.get("/login/sso/callback")
def login_sso_callback():
    """Finish single sign-on; any problem goes back to the sign-in page with a message."""
    if not sso.configured():
        abort(404, description="Single sign-on is not set up here.")
    try:
        user = sso.finish()
    except sso.SignInRefused as exc:
        flash(str(exc), "danger")
        return redirect(url_for("auth.login"), code=303)
    access.sign_in(user, remember=False)
    users.record_sign_in(user, "sso")
    return redirect(url_for("jobs.index"), code=303)


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
    page, status = _login_page(form, 429, throttled=message)
    return page, status, {"Retry-After": str(wait)}


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


class PasswordForm(FlaskForm):
    current_password = PasswordField("Current password", validators=[Length(max=600)])
    new_password = PasswordField("New password", validators=[Length(max=600)])
    confirm_password = PasswordField("New password again", validators=[Length(max=600)])


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
    return _settings_page(form, PasswordForm(formdata=None), status)


def _settings_page(form: SettingsForm, password_form: PasswordForm, status: int):
    form.timezone.choices = sorted(known_timezones())
    return render_template("auth/settings.html", form=form, password_form=password_form,
                           min_length=passwords.MIN_LENGTH), status


@bp.post("/settings/password")
@login_required
def change_password():
    """Change one's own password. Every session of the person ends (other browsers are
    signed out) and this browser is signed in again, so it stays signed in."""
    user = current_user._get_current_object()
    password_form = PasswordForm()
    if password_form.validate_on_submit():
        try:
            users.change_own_password(user, password_form.current_password.data or "",
                                      password_form.new_password.data or "",
                                      password_form.confirm_password.data or "")
        except users.Refused as exc:
            for name, message in exc.errors.items():
                getattr(password_form, name).errors = [message]
        else:
            remembered = str(session.get("_user_id", "")).endswith(f":{access.REMEMBERED}")
            access.sign_in(user, remember=remembered)
            flash("Password changed. Other browsers signed in as you are signed out.",
                  "success")
            return redirect(url_for("auth.settings"), code=303)
    return _settings_page(SettingsForm(formdata=None, timezone=user.timezone),
                          password_form, 422)


class SetPasswordForm(FlaskForm):
    password = PasswordField("New password", validators=[Length(max=600)])
    confirm_password = PasswordField("New password again", validators=[Length(max=600)])


@bp.route("/invite/<token>", methods=["GET", "POST"], defaults={"purpose": "invite"})
@bp.route("/reset/<token>", methods=["GET", "POST"], defaults={"purpose": "reset"})
def use_link(token: str, purpose: str):
    """An invitation or reset link: set a password, then be signed in."""
    found = users.link_user(token, purpose)
    if found is None:
        message = ("This link is not valid: it was used already, it expired or a newer one "
                   "replaced it. Ask an administrator for a new one.")
        return render_template("error.html", code=404, title="Link not valid",
                               message=message), 404
    user = found[1]
    form = SetPasswordForm()
    if form.validate_on_submit():
        if form.password.data != form.confirm_password.data:
            form.confirm_password.errors = ["The two passwords differ."]
        else:
            try:
                user = users.use_link(token, purpose, form.password.data or "")
            except users.Refused as exc:
                for name, message in exc.errors.items():
                    if name:
                        getattr(form, name).errors = [message]
                    else:
                        flash(message, "danger")
            else:
                access.sign_in(user, remember=False)
                users.record_sign_in(user, purpose)
                flash("Password set: you are signed in.", "success")
                return redirect(url_for("jobs.index"), code=303)
    status = 200 if request.method == "GET" else 422
    return render_template("auth/set_password.html", form=form, user=user, purpose=purpose,
                           min_length=passwords.MIN_LENGTH), status
