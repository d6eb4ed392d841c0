"""CSV downloads carry no cell a spreadsheet would evaluate as a formula (OWASP)."""

from __future__ import annotations

import csv
import io

from sqlalchemy import insert

from portal.extensions import db
from portal.jobs import create_job
from portal.models import JobEvent
from portal.models.types import utcnow
from providers import get_provider

DANGEROUS = ["=HYPERLINK(\"http://127.0.0.1/x\",\"click\")", "+1+1", "-2+3", "@SUM(A1)",
             "\t=1+1", "\r=1+1", "\n=1+1"]
HARMLESS = ["Imported 3 rows of a=b.csv", "plain text", "'already quoted"]


def test_log_download_neutralizes_formula_cells(client, auth):
    user = auth.login("viewer")
    provider = get_provider("faults")
    job = create_job(provider=provider, job_type=provider.job_type("script"),
                     authorization=None, name="Nightly", description="",
                     config={}, created_by=user, paused=True)
    now = utcnow()
    db.session.execute(insert(JobEvent), [
        {"job_id": job.id, "at": now, "kind": "error", "level": "error", "code": "-1",
         "message": message, "context": {"added": 0, "removed": 0, "omitted": 0,
                                         "user_email": "@evil.example"}}
        for message in DANGEROUS + HARMLESS])
    db.session.commit()

    body = client.get(f"/jobs/{job.id}/logs.csv?kind=error").get_data(as_text=True)
    rows = list(csv.DictReader(io.StringIO(body, newline="")))
    messages = {row["message"] for row in rows}
    assert messages == {"'" + text for text in DANGEROUS} | set(HARMLESS)
    assert {row["code"] for row in rows} == {"'-1"}
    assert {row["user_email"] for row in rows} == {"'@evil.example"}
    assert {row["added"] for row in rows} == {"0"}, "numbers stay numbers"
