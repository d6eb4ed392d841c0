"""The demo world: `flask --app wsgi seed-demo` makes a small, realistic portal through the
portal's own domain code, with every job really run by an RQ worker.

What it makes (once; a second call finds the demo and does nothing):
- two CSV imports of the bundled sample data (portal/demo_data/) into the stream
  "people": 300 sign-ups, then 40 plan changes - first given a file with an unreadable
  date (the run fails, as any import would), then edited with the good file and
  resumed, so it completes;
- the profiles the imports build, and two audiences: "Paying customers" (plan pro or
  team) and "Dormant users" (not seen since 1 June 2026);
- a webhook export ("Send audience to webhook") of the paying customers to the demo's
  own receiver (POST /demo/hook, portal/blueprints/demo.py), run once so it delivers.

When the demo is on: PORTAL_DEMO=1, or this database holds a seeded demo (an audit entry
of object type "demo"). The receiver is checked at request time rather than registered at
start-up because `make run` seeds after the app is built, and the export keeps running on
its schedule afterwards without anyone setting PORTAL_DEMO. A portal that never seeded the
demo (and has no PORTAL_DEMO) answers 404 there.

Deliveries the receiver takes are kept in Redis (a capped list): the receiver needs no
table, and web processes and workers already share Redis.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from portal import audiences, audit, datastore, jobconfig, passwords, vault
from portal.extensions import db
from portal.jobs import create_job, save_edit
from portal.models import AuditEntry, Job, Profile, User
from portal.models.types import utcnow
from portal.queues import redis_connection
from providers import get_provider

DATA = Path(__file__).resolve().parent / "demo_data"
STREAM = "people"
DELIVERIES_KEY = "portal:demo:deliveries"
KEEP_DELIVERIES = 50
SHOWN_MEMBERS = 5
DEMO_ADMIN = "admin@localhost"

IMPORT_PEOPLE = "Demo: import sample people"
IMPORT_CHANGES = "Demo: import plan changes"
EXPORT_PAYING = "Demo: send paying customers to webhook"
PAYING = {"name": "Paying customers", "slug": "paying-customers", "match": "any",
          "description": "People on the pro or team plan.",
          "conditions": [{"field": "plan", "op": "in", "value": ["pro", "team"]}]}
DORMANT = {"name": "Dormant users", "slug": "dormant-users", "match": "all",
           "description": "People not seen since 1 June 2026.",
           "conditions": [{"field": "last_seen_at", "op": "lt", "value": "2026-06-01"}]}
# Forwarding headers: a request that carries one came through a proxy, so its loopback
# peer address says nothing about where it came from.
FORWARDING = ("forwarded", "x-forwarded-for", "x-real-ip", "x-forwarded-host",
              "client-ip", "true-client-ip", "x-client-ip")


class DemoRefused(Exception):
    """The demo cannot be made here (said why)."""


# -- when the demo is on, and who may reach the receiver --------------------------------

def seeded() -> bool:
    """True once seed() has finished in this database."""
    return db.session.scalar(select(AuditEntry.id).where(
        AuditEntry.object_type == "demo", AuditEntry.action == "seeded").limit(1)) is not None


def started() -> bool:
    return db.session.scalar(select(AuditEntry.id).where(
        AuditEntry.object_type == "demo").limit(1)) is not None


def active(setting: bool) -> bool:
    """The receiver answers: PORTAL_DEMO=1 (`setting`), or the demo was (being) seeded."""
    return bool(setting) or started()


def is_loopback_client(peer: str | None, headers: Mapping[str, str]) -> bool:
    """True only for a request whose TCP peer is a loopback address and which names no
    other client in a forwarding header. `peer` is the socket's own address (not the
    one a proxy fix derives from X-Forwarded-For)."""
    if any(name.lower() in FORWARDING and value for name, value in headers.items()):
        return False
    try:
        address = ipaddress.ip_address((peer or "").split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        address = address.ipv4_mapped
    return address.is_loopback


# -- deliveries ------------------------------------------------------------------------

def record_delivery(document: Any, idempotency_key: str) -> dict[str, Any]:
    """Keep what the receiver took: when, the audience, counts and a few addresses."""
    document = document if isinstance(document, dict) else {}

    def listed(name: str) -> list[Any]:
        value = document.get(name)
        return value if isinstance(value, list) else []

    def shown(members: list[Any]) -> list[str]:
        return [str(member.get("email") or member.get("id") or "?")[:200]
                for member in members[:SHOWN_MEMBERS] if isinstance(member, dict)]

    added, removed = listed("added"), listed("removed")
    delivery = {
        "at": utcnow().isoformat(timespec="seconds"),
        "audience": str(document.get("audience", ""))[:200],
        "idempotency_key": idempotency_key[:200],
        "added": len(added), "removed": len(removed),
        "added_shown": shown(added), "removed_shown": shown(removed),
    }
    connection = redis_connection()
    connection.lpush(DELIVERIES_KEY, json.dumps(delivery))
    connection.ltrim(DELIVERIES_KEY, 0, KEEP_DELIVERIES - 1)
    return delivery


def deliveries() -> list[dict[str, Any]]:
    """What the receiver took, newest first."""
    return [json.loads(item) for item in
            redis_connection().lrange(DELIVERIES_KEY, 0, KEEP_DELIVERIES - 1)]


# -- seeding ---------------------------------------------------------------------------

@dataclass
class Seeded:
    existed: bool = False
    user: str = ""
    password: str = ""  # only when seed() made the user
    jobs: list[str] = field(default_factory=list)
    audiences: list[str] = field(default_factory=list)
    profiles: int = 0
    deliveries: int = 0


def _actor(result: Seeded) -> User:
    """The first active admin (else operator); a new admin when there is neither."""
    for role in ("admin", "operator"):
        user = db.session.scalars(select(User).where(User.active.is_(True), User.role == role)
                                  .order_by(User.id).limit(1)).first()
        if user is not None:
            result.user = user.email
            return user
    if db.session.scalar(select(User.id).where(User.email == DEMO_ADMIN)) is not None:
        raise DemoRefused(f"{DEMO_ADMIN} exists but cannot sign in (deactivated or viewer): "
                          "give the demo an active admin or operator first.")
    password = passwords.generate()
    user = User(email=DEMO_ADMIN, role="admin", name="Administrator")
    user.set_password(password)
    db.session.add(user)
    db.session.flush()
    audit.record("created", "user", user.id, user.email, actor="seed-demo",
                 summary="User created with the admin role for the demo")
    db.session.commit()
    result.user, result.password = user.email, password
    return user


def _import(name: str, filename: str, timestamp_field: str, by: User, description: str) -> Job:
    provider = get_provider("files")
    upload, info = datastore.store_upload(filename, (DATA / filename).read_bytes(), by=by)
    return create_job(provider=provider, job_type=provider.job_type("import_file"),
                      authorization=None, name=name, description=description,
                      config={"upload_id": upload.id, "stream": STREAM,
                              "timestamp_field": timestamp_field,
                              "delimiter": info.delimiter or ","},
                      created_by=by)


def _audience(spec: dict[str, Any], by: User):
    cleaned, errors = audiences.check(spec)
    if errors:
        raise DemoRefused(f"audience {spec['name']!r}: {'; '.join(errors.values())} "
                          "(rename or delete the one in the way)")
    audience = audiences.create(cleaned, by=by)
    db.session.commit()
    return audience


def _fix_import(job: Job, filename: str, by: User) -> None:
    """What a person does on the failed import's Edit: upload the corrected file, Save
    and resume."""
    provider = get_provider(job.provider)
    job_type = provider.job_type(job.job_type)
    upload, _info = datastore.store_upload(filename, (DATA / filename).read_bytes(), by=by)
    db.session.commit()
    before = jobconfig.Settings.of(job)
    after = replace(before, config={**before.config, "upload_id": upload.id})
    save_edit(job, job_type, after, by=by, resume=True)


def seed(*, hook_url: str, run_jobs: Callable[[], None],
         say: Callable[[str], None] = lambda _text: None) -> Seeded:
    """Make the demo world (see the module's docstring). `run_jobs` runs every queued job
    to the end (a burst RQ worker); `hook_url` is the demo receiver as the portal serves it
    on loopback. Raises DemoRefused when a half-made demo or a name is in the way."""
    result = Seeded()
    if seeded():
        result.existed = True
        return result
    if started():
        raise DemoRefused("A demo was started here but did not finish. Start from an empty "
                          "database (e.g. remove instance/portal.db) and run seed-demo again.")
    by = _actor(result)
    audit.record("seeding", "demo", None, "demo", by=by, summary="Demo seeding started")
    db.session.commit()

    say("Importing the sample people and a plan-changes file with a bad date...")
    people = _import(IMPORT_PEOPLE, "people.csv", "signed_up_at", by,
                     "300 made-up people from the demo's sample data.")
    changes = _import(IMPORT_CHANGES, "plan-changes-broken.csv", "changed_at", by,
                      "Plan changes; first uploaded with an unreadable date.")
    people_id, changes_id = people.id, changes.id
    run_jobs()
    changes = db.session.get(Job, changes_id)
    if changes is None or changes.status != "failed":
        raise DemoRefused("the broken plan-changes import did not fail as expected "
                          f"(status: {changes.status if changes else 'gone'})")
    say("The plan-changes import failed on its bad row; editing it with the good file...")
    _fix_import(changes, "plan-changes.csv", by)
    run_jobs()
    for job_id in (people_id, changes_id):
        job = db.session.get(Job, job_id)
        if job.status != "completed":
            raise DemoRefused(f"the import {job.name!r} ended {job.status}, not completed")

    say("Making the audiences and the webhook export...")
    paying = _audience(PAYING, by)
    _audience(DORMANT, by)
    provider = get_provider("webhook")
    authorization = vault.create(provider, provider.auth_method("open"),
                                 label="Demo receiver",
                                 description="The demo's own receiver (GET /demo shows it).",
                                 credentials={"url": hook_url}, by=by)
    db.session.commit()
    export = create_job(provider=provider, job_type=provider.job_type("send_audience"),
                        authorization=authorization, name=EXPORT_PAYING,
                        description="Sends who joined and left 'Paying customers', hourly.",
                        config={"audience": paying.slug}, created_by=by,
                        schedule={"kind": "interval", "every_minutes": 60})
    export_id = export.id
    before = len(deliveries())
    run_jobs()
    export = db.session.get(Job, export_id)
    result.deliveries = len(deliveries()) - before
    if export.status != "sleeping" or result.deliveries < 1:
        raise DemoRefused(f"the export did not deliver to {hook_url} (job status "
                          f"{export.status}); is that address this portal?")

    audit.record("seeded", "demo", None, "demo", by=by,
                 summary="Demo seeded: 3 jobs, 2 audiences, profiles of the sample people")
    db.session.commit()
    result.jobs = [IMPORT_PEOPLE, IMPORT_CHANGES, EXPORT_PAYING]
    result.audiences = [PAYING["name"], DORMANT["name"]]
    result.profiles = db.session.scalar(select(func.count()).select_from(Profile)) or 0
    return result
