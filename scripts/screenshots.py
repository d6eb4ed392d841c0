"""Screenshots of the portal for docs/screenshots/: the job list (and its bulk bar), a job
summary, a stream's messages and the wizard's steps, taken in Debian's chromium from a
freshly seeded portal.

Everything stays on this machine: a temporary instance (SQLite file, its own Redis on a
free loopback port), the app served on 127.0.0.1, and a real worker and dispatcher
(`python -m workers ...`, as `make run` starts them) so the summary shows a job that
really ran and no page warns that nothing runs jobs. Nothing is sent anywhere else: the only jobs
that run read an uploaded file; the webhook export is created paused.

    PYTHONPATH=. .venv/bin/python scripts/screenshots.py [--out docs/screenshots]
"""

from __future__ import annotations

import argparse
import base64
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from datetime import timedelta
from pathlib import Path

from flask_migrate import upgrade
from playwright.sync_api import Page, expect, sync_playwright
from redis import Redis
from werkzeug.serving import make_server

from portal import create_app
from portal.extensions import db
from portal.queues import QUEUE_NAMES
from workers import redis_server

ROOT = Path(__file__).resolve().parent.parent
EMAIL = "ada@example.com"
VIEWPORT = {"width": 1280, "height": 820}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_redis(data_dir: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    process = subprocess.Popen(redis_server.command(data_dir, port=port, persist=False),
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"redis://127.0.0.1:{port}/0"
    deadline = time.monotonic() + 10
    while True:
        try:
            Redis.from_url(url).ping()
            return process, url
        except Exception:
            if time.monotonic() > deadline or process.poll() is not None:
                process.kill()
                raise SystemExit("the bundled redis-server did not start") from None
            time.sleep(0.05)


def seed_people(path: Path, rows: int = 1200) -> None:
    plans = ("free", "pro", "team")
    lines = [f"user{n}@example.com,2026-{n % 12 + 1:02d}-{n % 28 + 1:02d}T10:00:00Z,"
             f"{plans[n % 3]}" for n in range(rows)]
    path.write_text("email,signed_up_at,plan\n" + "\n".join(lines) + "\n")


def start_background(tmp: Path, settings: dict) -> list[subprocess.Popen]:
    """A worker on every queue and the dispatcher, on the same database, Redis and keys."""
    env = {**os.environ, "DATABASE_URL": settings["SQLALCHEMY_DATABASE_URI"],
           "REDIS_URL": settings["REDIS_URL"], "SECRET_KEY": settings["SECRET_KEY"],
           "PORTAL_VAULT_KEYS": settings["PORTAL_VAULT_KEYS"],
           "PORTAL_INSTANCE_PATH": settings["INSTANCE_PATH"], "PYTHONPATH": str(ROOT)}
    return [subprocess.Popen([sys.executable, "-m", "workers", *command], cwd=ROOT, env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            for command in (["worker", *QUEUE_NAMES], ["dispatcher"])]


def settled(page: Page) -> None:
    expect(page.locator(".htmx-settling, .htmx-swapping, .htmx-request")).to_have_count(0)


def seed_more(app, owner_email: str) -> None:
    """More jobs for the list, in other states, with a history: a failed import with its
    errors, a paused one, a webhook export (created paused, so nothing is ever sent)."""
    from portal import vault
    from portal.jobs import create_job
    from portal.models import Job, JobEvent, Upload, User
    from portal.models.types import utcnow
    from providers import get_provider

    with app.app_context():
        owner = db.session.scalar(db.select(User).where(User.email == owner_email))
        upload = db.session.scalars(db.select(Upload)).first()
        files = get_provider("files")
        now = utcnow()
        config = {"upload_id": upload.id, "stream": "trial_signups",
                  "timestamp_field": "signed_up_at", "delimiter": ","}
        failed = create_job(provider=files, job_type=files.job_type("import_file"),
                            authorization=None, name="Trial sign-ups (EU)",
                            description="", config=config, created_by=owner, paused=True)
        paused = create_job(provider=files, job_type=files.job_type("import_file"),
                            authorization=None, name="Webinar attendees",
                            description="", config=dict(config, stream="webinar"),
                            created_by=owner, paused=True)
        webhook = get_provider("webhook")
        hook = vault.create(webhook, webhook.auth_method("open"), label="CRM endpoint",
                            description="The CRM's inbound hook",
                            credentials={"url": "https://crm.example.com/hooks/portal"},
                            by=owner)
        db.session.commit()
        create_job(provider=webhook, job_type=webhook.job_type("send_stream"),
                   authorization=hook, name="Sign-ups to the CRM",
                   description="", config={"stream": "people"}, created_by=owner,
                   schedule={"kind": "interval", "every_minutes": 15}, paused=True)
        from portal import audiences

        cleaned, errors = audiences.check({
            "name": "Paying customers", "match": "all",
            "description": "Everyone on a paid plan, for the CRM's nurture list.",
            "conditions": [{"field": "plan", "op": "in", "value": ["pro", "team"]},
                           {"field": "signed_up_at", "op": "gt", "value": "2026-03-01"}]})
        assert not errors, errors
        paying = audiences.create(cleaned, by=owner)
        create_job(provider=webhook, job_type=webhook.job_type("send_audience"),
                   authorization=hook, name="Paying customers to the CRM",
                   description="", config={"audience": paying.slug, "identifier": "email"},
                   created_by=owner, schedule={"kind": "interval", "every_minutes": 60},
                   paused=True)
        job = db.session.get(Job, failed.id)
        job.status, job.terminal_at, job.error_count = "failed", now, 5
        job.error_streak_started_at = now - timedelta(hours=10)
        db.session.add_all([
            JobEvent(job_id=job.id, at=now - timedelta(minutes=3), kind="error",
                     level="error", code="bad_input",
                     message="trial-eu.csv, line 214: the signed_up_at value is not a time"),
            JobEvent(job_id=job.id, at=now - timedelta(minutes=2), kind="failed",
                     level="error", message="Failed after 5 errors in a row"),
        ])
        db.session.get(Job, paused.id).status_changed_at = now - timedelta(hours=2)
        db.session.commit()


def take(out: Path) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="portal-shots-"))
    redis_process, redis_url = start_redis(tmp / "redis")
    server = None
    background: list[subprocess.Popen] = []
    try:
        settings = {
            "INSTANCE_PATH": str(tmp / "instance"),
            "SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp / 'portal.db'}",
            "REDIS_URL": redis_url,
            "SECRET_KEY": secrets.token_hex(32),
            "PORTAL_VAULT_KEYS": "shots:" + base64.b64encode(secrets.token_bytes(32)).decode(),
        }
        app = create_app({**settings, "PORTAL_REDIS_EMBEDDED": False})
        password = secrets.token_urlsafe(18)
        with app.app_context():
            upgrade()
            from portal.models import User

            user = User(email=EMAIL, name="Ada", role="admin")
            user.set_password(password)
            db.session.add(user)
            db.session.commit()
        background = start_background(tmp, settings)
        server = make_server("127.0.0.1", 0, app, threaded=True)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        site = f"http://127.0.0.1:{server.server_port}"
        upload = tmp / "crm-export.csv"
        seed_people(upload)
        out.mkdir(parents=True, exist_ok=True)

        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(
                executable_path=shutil.which("chromium"),
                args=["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                      "--disable-component-update", "--disable-sync", "--no-first-run"])
            page = browser.new_page(viewport=VIEWPORT)

            def shot(name: str, full: bool = False) -> None:
                settled(page)
                page.screenshot(path=str(out / f"{name}.png"), full_page=full)

            page.goto(f"{site}/login?next=/jobs/new")
            page.get_by_label("Email").fill(EMAIL)
            page.get_by_label("Password").fill(password)
            page.get_by_role("button", name="Sign in").click()
            expect(page.locator("#provider-tiles")).to_be_visible()
            shot("wizard-1-provider")
            page.get_by_role("link", name="CSV & JSON files").click()
            page.get_by_role("link", name="Import file").click()
            expect(page.get_by_role("heading", name="Configure")).to_be_visible()
            settled(page)
            page.locator("#field-upload_id").set_input_files(str(upload))
            expect(page.locator("#field-upload_id-current")).to_contain_text(upload.name)
            expect(page.locator(".upload-busy")).to_have_css("opacity", "0")
            settled(page)
            page.locator("#field-stream").fill("people")
            shot("wizard-2-configure")
            page.get_by_role("button", name="Next: schedule").click()
            page.wait_for_url("**/drafts/**")
            if page.get_by_role("heading", name="Name and schedule").count() == 0:
                shot("wizard-3-preview", full=True)
                settled(page)
                page.get_by_role("button", name="Next: schedule").click()
            expect(page.get_by_role("heading", name="Name and schedule")).to_be_visible()
            settled(page)
            page.get_by_label("Job name").fill("People from the CRM export")
            shot("wizard-4-schedule")
            page.get_by_role("button", name="Next: review").click()
            expect(page.locator("#review-name")).to_be_visible()
            shot("wizard-5-review")
            page.get_by_role("button", name="Create job").click()
            page.wait_for_url("**/jobs/1")
            expect(page.locator("#job-status [data-status]")).to_have_attribute(
                "data-status", "completed", timeout=30_000)
            seed_more(app, EMAIL)
            page.reload()
            page.wait_for_function(
                "() => window.Chart && Chart.getChart(document.querySelector("
                "'canvas[data-metrics]'))")
            page.wait_for_timeout(1500)  # Chart.js grows its bars for a second
            shot("summary", full=True)
            page.goto(f"{site}/jobs")
            expect(page.locator("#jobs tbody tr")).to_have_count(5)
            shot("list")
            page.get_by_label("Select all jobs on this page").check()
            settled(page)
            page.get_by_role("button", name="Resume selected").click()
            expect(page.locator("#bulk-confirm")).to_be_visible()
            shot("list-bulk")
            page.goto(f"{site}/data/streams/people")
            expect(page.locator("#messages")).to_be_visible()
            shot("data-stream")
            page.goto(f"{site}/data")
            shot("data")
            page.goto(f"{site}/data/audiences/1")
            expect(page.locator("#preview-members")).to_be_visible()
            shot("audience", full=True)
            page.goto(f"{site}/data/profiles?key=email&value=user4%40example.com")
            expect(page.locator("#profile-attributes")).to_be_visible()
            shot("find-a-user", full=True)
            page.goto(f"{site}/alerts/new")
            shot("alert-rule", full=True)
            page.goto(f"{site}/admin/users")
            shot("users", full=True)
            page.goto(f"{site}/admin/operations")
            shot("operations", full=True)
            browser.close()
    finally:
        if server is not None:
            server.shutdown()
        for process in background:
            process.terminate()
            process.wait(10)
        redis_process.terminate()
        redis_process.wait(10)
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "screenshots")
    take(parser.parse_args().out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
