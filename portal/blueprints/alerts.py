"""The alert pages: rules (operators and admins change them, viewers read) and the list of
alerts sent. The rules themselves live in portal/alerts.py."""

from __future__ import annotations

from flask import Blueprint, flash, request, url_for
from flask_login import current_user
from flask_wtf import FlaskForm
from sqlalchemy import select
from wtforms import (
    BooleanField,
    IntegerField,
    SelectField,
    SelectMultipleField,
    StringField,
    URLField,
)
from wtforms.fields.choices import SelectChoice
from wtforms.validators import InputRequired, Length, NumberRange, Optional
from wtforms.widgets import CheckboxInput, ListWidget

from portal import alerts, htmx, params
from portal.access import role_required
from portal.extensions import db
from portal.models import AlertRule, Authorization

bp = Blueprint("alerts", __name__, url_prefix="/alerts")


def _choices(labels: dict[str, str]) -> list[SelectChoice]:
    return [SelectChoice(value, label) for value, label in labels.items()]


class RuleForm(FlaskForm):
    name = StringField("Name", validators=[Length(max=200)])
    scope = SelectField("Which jobs", choices=_choices(alerts.SCOPES),
                        validate_choice=False)
    scope_value = StringField("Provider, job type or job number", validators=[Length(max=200)])
    conditions = SelectMultipleField(
        "Tell me when a job", choices=_choices(alerts.CONDITIONS), validate_choice=False,
        widget=ListWidget(prefix_label=False), option_widget=CheckboxInput())
    rate_limit_minutes = IntegerField(
        "N: minutes a rate limit may last before it is worth an alert", default=30,
        validators=[InputRequired("Enter a number of minutes, such as 30."),
                    NumberRange(1, 10080, "Enter a number of minutes from 1 to 10,080.")])
    channel = SelectField("Send to", choices=_choices(alerts.CHANNELS),
                          validate_choice=False)
    emails = StringField("Email addresses (separated by commas)",
                         validators=[Length(max=2000)])
    slack_authorization_id = SelectField("Slack authorization", validate_choice=False,
                                         validators=[Optional()])
    slack_channel = StringField("Slack channel", validators=[Length(max=80)])
    webhook_url = URLField("Webhook address", validators=[Length(max=500)])
    enabled = BooleanField("Enabled", default=True)


def _slack_choices() -> list[SelectChoice]:
    found = db.session.scalars(select(Authorization).where(Authorization.provider == "slack")
                               .order_by(Authorization.label)).all()
    return [SelectChoice("", "Choose…")] + [SelectChoice(str(a.id), a.label) for a in found]


def _rule(rule_id: int) -> AlertRule:
    return db.get_or_404(AlertRule, rule_id,
                         description="There is no such alert rule; it may have been deleted.")


def _form(rule: AlertRule | None = None) -> RuleForm:
    if rule is None or request.method == "POST":
        form = RuleForm()
    else:
        target = rule.target or {}
        form = RuleForm(
            name=rule.name, scope=rule.scope, scope_value=rule.scope_value,
            conditions=rule.conditions, rate_limit_minutes=rule.rate_limit_minutes,
            channel=rule.channel, emails=", ".join(target.get("emails", [])),
            slack_authorization_id=str(target.get("authorization_id") or ""),
            slack_channel=target.get("channel", ""),
            webhook_url=alerts.shown_url(str(target.get("url", ""))),
            enabled=rule.enabled)
    form.slack_authorization_id.choices = _slack_choices()
    return form


def _save(form: RuleForm, rule: AlertRule | None):
    """Validate and save, or re-render the form with a message under each field at fault."""
    if form.validate_on_submit():
        entered = alerts.RuleInput(
            name=form.name.data or "", scope=form.scope.data or "",
            scope_value=form.scope_value.data or "", conditions=form.conditions.data or [],
            rate_limit_minutes=form.rate_limit_minutes.data, channel=form.channel.data or "",
            emails=form.emails.data or "",
            slack_authorization_id=params.parse_int(form.slack_authorization_id.data or ""),
            slack_channel=form.slack_channel.data or "",
            webhook_url=form.webhook_url.data or "", enabled=form.enabled.data)
        try:
            saved = alerts.save_rule(entered, by=current_user._get_current_object(), rule=rule)
        except alerts.AlertError as exc:
            db.session.rollback()
            for name, message in exc.errors.items():
                getattr(form, name).errors = [*getattr(form, name).errors, message]
        else:
            db.session.commit()
            flash(f"Saved the alert rule “{saved.name}”.", "success")
            return htmx.redirect(url_for("alerts.index"))
    status = 200 if request.method == "GET" else 422
    return htmx.render("alerts/form.html", "alerts/_form.html", form=form, rule=rule,
                       scope_suggestions=alerts.scope_suggestions(), status=status)


@bp.get("")
@role_required("viewer")
def index():
    """Every alert rule, with what it watches and where it sends."""
    rules = db.session.scalars(select(AlertRule).order_by(AlertRule.name, AlertRule.id)).all()
    return htmx.render("alerts/index.html", rules=rules, alerts=alerts)


@bp.route("/new", methods=["GET", "POST"])
@role_required("operator")
def new():
    """Create an alert rule."""
    return _save(_form(), None)


@bp.route("/<int:rule_id>/edit", methods=["GET", "POST"])
@role_required("operator")
def edit(rule_id: int):
    """Change an alert rule."""
    rule = _rule(rule_id)
    return _save(_form(rule), rule)


@bp.post("/<int:rule_id>/enable")
@role_required("operator")
def enable(rule_id: int):
    """Switch a rule on."""
    alerts.set_enabled(_rule(rule_id), True, by=current_user._get_current_object())
    db.session.commit()
    return htmx.redirect(url_for("alerts.index"))


@bp.post("/<int:rule_id>/disable")
@role_required("operator")
def disable(rule_id: int):
    """Switch a rule off: it sends nothing until switched on again."""
    alerts.set_enabled(_rule(rule_id), False, by=current_user._get_current_object())
    db.session.commit()
    return htmx.redirect(url_for("alerts.index"))


@bp.post("/<int:rule_id>/delete")
@role_required("operator")
def delete(rule_id: int):
    """Delete a rule; the alerts it sent stay listed."""
    rule = _rule(rule_id)
    name = rule.name
    alerts.delete_rule(rule, by=current_user._get_current_object())
    db.session.commit()
    flash(f"Deleted the alert rule “{name}”.", "success")
    return htmx.redirect(url_for("alerts.index"))


@bp.post("/<int:rule_id>/test")
@role_required("operator")
def send_test(rule_id: int):
    """Queue a test notification through the rule's channel."""
    rule = _rule(rule_id)
    alerts.send_test(rule, by=current_user._get_current_object())
    flash(f"A test alert for “{rule.name}” is on its way; see below how it went.", "info")
    return htmx.redirect(url_for("alerts.sent", rule=rule.id))


@bp.get("/sent")
@role_required("viewer")
def sent():
    """The alerts sent, newest first, filtered by job, rule and delivery status."""
    job_id = params.id_arg(request.args, "job", strict=False)
    rule_id = params.id_arg(request.args, "rule", strict=False)
    status = request.args.get("status", "")
    status = status if status in alerts.STATUSES else ""
    before = params.id_arg(request.args, "before", strict=False)
    rows, next_before = alerts.sent_page(job_id=job_id, rule_id=rule_id, status=status,
                                         before=before)
    rules = db.session.scalars(select(AlertRule).order_by(AlertRule.name)).all()
    return htmx.render("alerts/sent.html", rows=rows, next_before=next_before, job_id=job_id,
                       rule_id=rule_id, status_filter=status, rules=rules,
                       statuses=alerts.STATUSES)
