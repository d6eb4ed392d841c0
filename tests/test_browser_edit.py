"""In Debian's chromium: Edit configuration from a job's summary, through the configure,
schedule and review steps, to the Changes list (issue 11, part 1), and the wizard's
multi-line description (part 6). The browser and server fixtures are those of
tests/conftest.py."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import Page, expect

from portal import configsecrets, vault
from portal.extensions import db
from portal.jobs import create_job
from portal.schemaform import defaults
from providers import get_provider
from providers.faults import SHOWCASE_SCHEMA
from tests.browser import settled, sign_in
from tests.conftest import canary
from tests.test_browser_a11y import Axe

pytestmark = pytest.mark.browser


def test_edit_configuration_from_the_summary_to_its_changes(page: Page, live_server,
                                                            make_user):
    user = make_user("operator")
    token = canary("browser-edit-token-4242")
    provider = get_provider("faults")
    job = create_job(provider=provider, job_type=provider.job_type("showcase"),
                     authorization=None, name="Showcase", description="", created_by=user,
                     paused=True, config={**defaults(SHOWCASE_SCHEMA), "title": "T",
                                          "limits": {"daily": 5, "note": "n/a"}, "token": token})
    axe, problems = Axe(page, live_server), []
    sign_in(page, live_server, user)
    page.goto(f"{live_server}/jobs/{job.id}")
    page.get_by_role("button", name="Edit configuration").click()
    expect(page.get_by_role("heading", name="Edit configuration of “Showcase”")).to_be_visible()
    settled(page)
    axe.check(problems)
    expect(page.get_by_label("Title")).to_have_value("T")
    expect(page.get_by_label("Token")).to_have_value("")
    expect(page.locator("#field-token-note")).to_contain_text("Leave blank to keep it.")
    page.get_by_label("Title").fill("Browser title")
    page.get_by_role("button", name="Next: schedule").click()
    expect(page.get_by_role("heading", name="Name and schedule")).to_be_visible()
    settled(page)
    axe.check(problems)
    description = page.get_by_label("Description")
    expect(description).to_have_js_property("tagName", "TEXTAREA")
    description.fill("First line\nSecond line")
    page.get_by_role("button", name="Next: review").click()
    expect(page.get_by_role("heading", name="Review the changes")).to_be_visible()
    expect(page.locator('#edit-changes tr[data-field="title"]')).to_contain_text("Browser title")
    expect(page.locator('#edit-changes tr[data-field="description"]')).to_contain_text(
        "Second line")
    expect(page.get_by_role("button", name="Save and resume")).to_be_visible()
    axe.check(problems)
    page.get_by_role("button", name="Save changes").click()
    expect(page).to_have_url(f"{live_server}/jobs/{job.id}")
    expect(page.get_by_text("Saved: Title, Description.")).to_be_visible()
    changes = page.locator("#job-changes")
    expect(changes.locator("#version-2")).to_contain_text("“T” → “Browser title”")
    expect(changes.locator("#version-1")).to_contain_text("Created")
    axe.check(problems)
    assert not problems, "\n".join(problems)
    assert token not in page.content()
    db.session.expire_all()
    assert job.description == "First line\nSecond line"
    assert configsecrets.open_config(SHOWCASE_SCHEMA, job.config, what="t")["token"] == token


def test_another_authorization_reloads_the_form_and_is_saved(page: Page, live_server,
                                                             make_user):
    from portal.datastore import write_messages
    from portal.models.types import utcnow
    from providers.base import OutMessage

    user = make_user("operator")
    write_messages("signups", [OutMessage("k", utcnow(), {})], source="test")
    provider = get_provider("webhook")
    first, second = (vault.create(provider, provider.auth_method("open"), label=label,
                                  description="", credentials={"url": url}, by=user)
                     for label, url in (("Hook A", "https://a.example/x"),
                                        ("Hook B", "https://b.example/x")))
    db.session.commit()
    job = create_job(provider=provider, job_type=provider.job_type("send_stream"),
                     authorization=first, name="Hook", description="", created_by=user,
                     paused=True, config={"stream": "signups", "batch_size": 100})
    sign_in(page, live_server, user)
    page.goto(f"{live_server}/jobs/{job.id}")
    page.get_by_role("button", name="Edit configuration").click()
    settled(page)
    page.get_by_label("Authorization").select_option(label="Hook B")
    # The form comes back for the new authorization (its menus read again), nothing lost.
    expect(page.locator("#configure-form")).to_have_attribute(
        "action", re.compile(rf"authorization={second.id}&"))
    settled(page)
    page.get_by_role("button", name="Next: schedule").click()
    expect(page.get_by_role("heading", name="Name and schedule")).to_be_visible()
    page.get_by_role("button", name="Next: review").click()
    expect(page.locator('#edit-changes tr[data-field="authorization"]')).to_contain_text(
        "Hook B")
    page.get_by_role("button", name="Save changes").click()
    expect(page).to_have_url(f"{live_server}/jobs/{job.id}")
    db.session.expire_all()
    assert job.authorization_id == second.id
