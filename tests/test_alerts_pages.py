"""The alert pages: roles, the rule form with field-level errors, enable / disable /
delete audited, "send a test" delivered by a real worker, the list of alerts sent with
its filters and pages, and no secret on any of them."""

from __future__ import annotations

import pytest
from playwright.sync_api import Page, expect
from sqlalchemy import select

from portal import vault
from portal.extensions import db
from portal.jobs import create_job
from portal.models import AlertRule, AlertSent, AuditEntry
from providers import get_provider
from tests.browser import settled, sign_in
from tests.conftest import canary
from tests.loopback import WebhookReceiver
from tests.test_browser_a11y import Axe

HX = {"HX-Request": "true"}


def rule_form(csrf: str, **values) -> dict:
    return {"csrf_token": csrf, "name": "Ops", "scope": "all", "scope_value": "",
            "conditions": ["failed", "recovered"], "rate_limit_minutes": "30",
            "channel": "email", "emails": "ops@example.com", "slack_authorization_id": "",
            "slack_channel": "", "webhook_url": "", "enabled": "y", **values}


def test_viewers_read_operators_change(client, auth):
    auth.login("viewer")
    page = client.get("/alerts")
    assert page.status_code == 200 and "No alert rules yet" in page.get_data(as_text=True)
    assert 'href="/alerts"' in client.get("/jobs").get_data(as_text=True)  # in the navigation
    assert client.get("/alerts/new").status_code == 403
    assert client.post("/alerts/new", data=rule_form(auth.csrf())).status_code == 403
    assert client.get("/alerts/sent").status_code == 200


def test_create_edit_disable_delete_are_audited(client, auth):
    auth.login("operator")
    response = client.post("/alerts/new", data=rule_form(auth.csrf()))
    assert response.status_code == 303
    rule = db.session.scalars(select(AlertRule)).one()
    assert (rule.name, rule.conditions, rule.target) == (
        "Ops", ["failed", "recovered"], {"emails": ["ops@example.com"]})
    page = client.get("/alerts").get_data(as_text=True)
    assert "email to ops@example.com" in page and "Became Failed" in page
    edit = client.get(f"/alerts/{rule.id}/edit").get_data(as_text=True)
    assert 'value="ops@example.com"' in edit
    response = client.post(f"/alerts/{rule.id}/edit",
                           data=rule_form(auth.csrf(), name="Ops team", conditions=["failed"]))
    assert response.status_code == 303
    assert client.post(f"/alerts/{rule.id}/disable", headers={"X-CSRFToken": auth.csrf()}
                       ).status_code == 303
    db.session.expire_all()
    assert (rule.name, rule.conditions, rule.enabled) == ("Ops team", ["failed"], False)
    assert client.post(f"/alerts/{rule.id}/enable", data={"csrf_token": auth.csrf()},
                       headers=HX).headers["HX-Redirect"] == "/alerts"
    assert client.post(f"/alerts/{rule.id}/delete", data={"csrf_token": auth.csrf()}
                       ).status_code == 303
    assert db.session.scalars(select(AlertRule)).all() == []
    actions = db.session.scalars(select(AuditEntry.action).order_by(AuditEntry.id)).all()
    assert [a for a in actions if a.startswith("alert_rule")] == [
        "alert_rule_created", "alert_rule_changed", "alert_rule_disabled",
        "alert_rule_enabled", "alert_rule_deleted"]


def test_a_state_change_without_csrf_is_refused(client, auth):
    auth.login("operator")
    assert client.post("/alerts/new", data={**rule_form(""), "csrf_token": ""}
                       ).status_code in (400, 422)
    assert db.session.scalars(select(AlertRule)).all() == []


@pytest.mark.parametrize("values, field, words", [
    ({"name": ""}, "name", "Give the rule a name"),
    ({"conditions": []}, "conditions", "Tick at least one"),
    ({"rate_limit_minutes": "soon"}, "rate_limit_minutes", "Enter a number of minutes"),
    ({"rate_limit_minutes": "0"}, "rate_limit_minutes", "from 1 to 10,080"),
    ({"emails": "ops at example"}, "emails", "is not one"),
    ({"scope": "job", "scope_value": "99999999999999999999"}, "scope_value", "existing job"),
    ({"scope": "job_type", "scope_value": "import_fiel"}, "scope_value", "such as import_file"),
    ({"scope": "provider", "scope_value": "mailchimpp"}, "scope_value", "such as mailchimp or s3"),
    ({"channel": "webhook", "webhook_url": "javascript:alert(1)"}, "webhook_url",
     "starting with https://"),
    ({"channel": "slack", "slack_authorization_id": "x", "slack_channel": "#a b"},
     "slack_authorization_id", "Choose a Slack authorization"),
])
def test_bad_input_shows_field_errors(client, auth, values, field, words):
    auth.login("operator")
    response = client.post("/alerts/new", data=rule_form(auth.csrf(), **values))
    assert response.status_code == 422
    page = response.get_data(as_text=True)
    assert f'id="{field}-error"' in page and words in page
    htmx = client.post("/alerts/new", data=rule_form(auth.csrf(), **values), headers=HX)
    assert htmx.status_code == 200 and 'id="rule-form"' in htmx.get_data(as_text=True)
    assert db.session.scalars(select(AlertRule)).all() == []


def test_the_scope_field_suggests_providers_job_types_and_jobs(client, auth):
    owner = auth.login("operator")
    provider = get_provider("faults")
    job = create_job(provider=provider, job_type=provider.job_type("script"),
                     authorization=None, name="Nightly <import>", description="", config={},
                     created_by=owner, paused=True)
    db.session.commit()
    page = client.get("/alerts/new").get_data(as_text=True)
    assert 'list="scope-suggestions"' in page
    listed = page[page.index('<datalist id="scope-suggestions">'):]
    listed = listed[:listed.index("</datalist>")]
    assert '<option value="mailchimp">Mailchimp (provider)</option>' in listed
    assert '<option value="import_file">' in listed
    assert f'<option value="{job.id}">Nightly &lt;import&gt; (job)</option>' in listed


def test_send_a_test_and_the_list_of_alerts_sent(client, auth, work, app):
    auth.login("operator")
    with WebhookReceiver() as hook:
        secret_path = canary("s3cr3t-hook-token-0123456789")
        url = f"{hook.url}?token={secret_path}"
        assert client.post("/alerts/new", data=rule_form(
            auth.csrf(), channel="webhook", webhook_url=url)).status_code == 303
        rule = db.session.scalars(select(AlertRule)).one()
        response = client.post(f"/alerts/{rule.id}/test", data={"csrf_token": auth.csrf()})
        assert response.status_code == 303
        assert response.headers["Location"] == f"/alerts/sent?rule={rule.id}"
        work()
        [received] = hook.received
        assert received.json["condition"] == "test"
        assert received.json["subject"] == "Test alert: Ops"
        shown = hook.url
    page = client.get(f"/alerts/sent?rule={rule.id}").get_data(as_text=True)
    assert "Test alert: Ops" in page and "Sent" in page and shown in page
    assert "token=" not in page  # the address shows without its query string
    assert "token=" not in client.get("/alerts").get_data(as_text=True)
    edit = client.get(f"/alerts/{rule.id}/edit").get_data(as_text=True)
    assert "token=" not in edit and shown in edit
    # Saving the form as shown keeps the whole address.
    assert client.post(f"/alerts/{rule.id}/edit", data=rule_form(
        auth.csrf(), channel="webhook", webhook_url=shown)).status_code == 303
    db.session.expire_all()
    assert rule.target == {"url": url}
    assert "Test alert" not in client.get("/alerts/sent?status=failed").get_data(as_text=True)
    # Filters that do not parse are ignored, never a 500.
    for query in ("job=abc", "rule=²³", "status=<b>", "before=-1", "job=99999999999999999999"):
        assert client.get(f"/alerts/sent?{query}").status_code == 200


def test_the_sent_list_pages_and_filters(client, auth):
    auth.login("viewer")
    for n in range(55):
        db.session.add(AlertSent(rule_name="Ops", job_id=n % 2 + 1, job_name=f"job {n}",
                                 condition="failed", channel="email", subject=f"alert {n}",
                                 status="sent" if n % 5 else "failed"))
    db.session.commit()
    first = client.get("/alerts/sent").get_data(as_text=True)
    assert "alert 54" in first and "alert 4<" not in first and 'id="older"' in first
    older = client.get("/alerts/sent?before=6").get_data(as_text=True)
    assert "alert 4<" in older and "alert 5<" not in older
    failed = client.get("/alerts/sent?status=failed").get_data(as_text=True)
    assert failed.count("data-alert=") == 11
    by_job = client.get("/alerts/sent?job=2").get_data(as_text=True)
    assert by_job.count("data-alert=") == 27


def test_the_summary_says_how_many_rules_cover_the_job(client, auth):
    user = auth.login("operator")
    provider = get_provider("faults")
    job = create_job(provider=provider, job_type=provider.job_type("script"),
                     authorization=None, name="x", description="", config={},
                     created_by=user, paused=True)
    db.session.commit()
    assert "no rule covers this job" in client.get(f"/jobs/{job.id}").get_data(as_text=True)
    client.post("/alerts/new", data=rule_form(auth.csrf()))
    client.post("/alerts/new", data=rule_form(auth.csrf(), scope="provider",
                                              scope_value="faults"))
    client.post("/alerts/new", data=rule_form(auth.csrf(), scope="provider",
                                              scope_value="slack"))
    page = client.get(f"/jobs/{job.id}").get_data(as_text=True)
    assert "Alerts: 2 rules cover this job" in page
    assert f'href="/alerts/sent?job={job.id}"' in page


def test_slack_rule_shows_no_credential(client, auth, make_user):
    user = auth.login("operator")
    bot = canary("xoxb-9999-8888-fedcbafedcba")
    provider = get_provider("slack")
    authorization = vault.create(provider, provider.auth_method("bot_token"), label="Ops bot",
                                 description="", credentials={"bot_token": bot}, by=user)
    db.session.commit()
    assert client.post("/alerts/new", data=rule_form(
        auth.csrf(), channel="slack", slack_authorization_id=str(authorization.id),
        slack_channel="#ops")).status_code == 303
    assert "Slack #ops" in client.get("/alerts").get_data(as_text=True)
    rule = db.session.scalars(select(AlertRule)).one()
    assert "Ops bot" in client.get(f"/alerts/{rule.id}/edit").get_data(as_text=True)


def test_the_rule_form_in_a_browser(page: Page, live_server, make_user):
    """A real browser: a mistake shows under its field (htmx swaps the form), the fixed
    rule is saved and listed, and the pages pass axe without serious violations."""
    operator = make_user("operator")
    axe = Axe(page, live_server)
    problems: list[str] = []
    sign_in(page, live_server, operator)
    page.get_by_role("link", name="Alerts", exact=True).click()
    expect(page.get_by_text("No alert rules yet")).to_be_visible()
    axe.check(problems)
    page.get_by_role("link", name="New alert rule").click()
    page.get_by_label("Name").fill("Failed jobs to ops")
    page.get_by_label("Became Failed").check()
    page.get_by_label("Email addresses (separated by commas)").fill("ops at example")
    page.get_by_role("button", name="Save").click()
    expect(page.locator("#emails-error")).to_contain_text("is not one")
    settled(page)
    axe.check(problems)
    page.get_by_label("Email addresses (separated by commas)").fill("ops@example.com")
    page.get_by_role("button", name="Save").click()
    expect(page).to_have_url(f"{live_server}/alerts")
    expect(page.locator("#rules")).to_contain_text("Failed jobs to ops")
    expect(page.locator("#rules")).to_contain_text("email to ops@example.com")
    page.get_by_role("link", name="Alerts sent").click()
    expect(page.locator("#sent-empty")).to_be_visible()
    axe.check(problems)
    assert not problems, "\n".join(problems)
