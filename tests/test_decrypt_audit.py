"""A job's decryptions are audited once per run, with a count, not once per unit."""

from __future__ import annotations

from sqlalchemy import select

from portal.datastore import write_messages
from portal.extensions import db
from portal.jobs import create_job
from portal.models import AuditEntry, JobEvent, JobRun
from portal.models.types import utcnow
from providers import get_provider
from providers.base import OutMessage
from tests.conftest import canary
from tests.loopback import WebhookReceiver
from tests.test_job_path import fresh
from tests.test_vault import webhook_authorization


def test_an_export_of_many_units_writes_one_decryption_row_with_the_count(app, make_user,
                                                                          work):
    owner = make_user("operator")
    token = canary("tok-decrypt-tally-31337")
    with WebhookReceiver(token=token) as hook:
        authorization = webhook_authorization(owner, hook.url, token)
        write_messages("signups", [OutMessage(f"k{n}", utcnow(), {"n": n})
                                   for n in range(60)], source="test")
        db.session.commit()
        provider = get_provider("webhook")
        job = create_job(provider=provider, job_type=provider.job_types[0],
                         authorization=authorization, name="many units", description="",
                         config={"stream": "signups", "batch_size": 2}, created_by=owner,
                         schedule={"kind": "interval", "every_minutes": 60})
        work()
        assert len(hook.received) == 30 and fresh(job).status == "sleeping"
    synced = db.session.scalars(select(JobEvent).where(JobEvent.job_id == job.id,
                                                       JobEvent.kind == "synced")).all()
    # The last unit found nothing more to send: an idle unit, which writes no event but
    # decrypted all the same; the run counts every unit.
    [run] = db.session.scalars(select(JobRun).where(JobRun.job_id == job.id)).all()
    units = run.units
    decrypted = db.session.scalars(select(AuditEntry).where(
        AuditEntry.action == "decrypted")).all()
    assert len(decrypted) == 1, "one row for the run, not one per unit"
    entry = decrypted[0]
    assert len(synced) == 30 and units == 31 and entry.details["count"] == units
    assert entry.actor == f"job {job.id}" and entry.object_id == authorization.id
    assert entry.details["version"] == 1
    assert entry.summary == f"Credentials decrypted {units} times for job {job.id}, in one run"
