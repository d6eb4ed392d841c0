"""What the browser tests share: waiting for htmx to settle, signing in, and seeding jobs.
Their fixtures (Debian's chromium, a live server on loopback) are in tests/conftest.py."""

from __future__ import annotations

from playwright.sync_api import Page, expect

from tests.conftest import TEST_PASSWORD


def settled(page: Page) -> None:
    """Wait until htmx has settled what it swapped in: it wires up the new content's
    hx-* attributes only then (20 ms after the swap), and a change made before is lost."""
    expect(page.locator(".htmx-settling, .htmx-swapping, .htmx-request")).to_have_count(0)


def sign_in(page: Page, live_server: str, user) -> None:
    page.goto(f"{live_server}/login?next=/jobs")
    page.get_by_label("Email").fill(user.email)
    page.get_by_label("Password").fill(TEST_PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    expect(page).to_have_url(f"{live_server}/jobs")
    page.wait_for_load_state()  # htmx wires the page up on DOMContentLoaded


def faults_job(owner, name: str, **config):
    from portal.jobs import create_job
    from providers import get_provider

    provider = get_provider("faults")
    return create_job(provider=provider, job_type=provider.job_type("script"),
                      authorization=None, name=name, description="", config=config,
                      created_by=owner)


def seed_for_walk(owner):
    """Jobs of every status, one with metrics, an error and many log events, and a Webhook
    authorization: something on each page the walk visits."""
    from datetime import timedelta

    from portal import vault
    from portal.extensions import db
    from portal.models import JobEvent
    from portal.models.types import utcnow
    from providers import get_provider

    now = utcnow()
    jobs = {status: faults_job(owner, f"{status} job") for status in
            ("running", "sleeping", "paused", "failed", "completed")}
    for status, job in jobs.items():
        job.status = status
    summary = jobs["failed"]
    summary.description = "Nightly import of the CRM export"
    events = [JobEvent(job_id=summary.id, at=now - timedelta(hours=n), kind="synced",
                       message=f"Batch {n}", context={"added": 10 * n, "removed": n,
                                                     "omitted": n % 3})
              for n in range(1, 30)]
    events.append(JobEvent(job_id=summary.id, at=now - timedelta(minutes=5), kind="error",
                           level="error", code="http_500", message="The endpoint answered 500"))
    events.append(JobEvent(job_id=summary.id, at=now - timedelta(minutes=1), kind="failed",
                           level="error", message="Failing since 10 hours"))
    db.session.add_all(events)
    provider = get_provider("webhook")
    authorization = vault.create(provider, provider.auth_method("open"), label="CRM endpoint",
                                 description="", by=owner,
                                 credentials={"url": "https://crm.example.com/hook"})
    db.session.commit()
    return summary, authorization


def tab_to(page: Page, target, limit: int = 60) -> None:
    """Press Tab (and nothing else) until `target` has the focus; fail if it never does."""
    for _ in range(limit):
        if target.evaluate("(element) => element === document.activeElement"):
            return
        page.keyboard.press("Tab")
    raise AssertionError(f"Tab never reached {target}")
