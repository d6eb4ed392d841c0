"""Amazon S3 (providers/s3.py) end to end: real RQ workers, a real S3 (moto's server on
loopback, behind tests/loopback_s3.py's proxy that injects errors)."""

from __future__ import annotations

import csv
import gzip
import io
import json
from datetime import UTC, datetime, timedelta

import boto3
import pytest
from sqlalchemy import select

from portal import vault
from portal.extensions import db
from portal.jobs import create_job, run_job_now
from portal.models import JobEvent, Message
from providers import get_provider, outbound, s3
from providers.base import AuthError, ConfigError, RateLimited
from tests.conftest import canary
from tests.loopback_s3 import REJECTED_KEY, S3Server
from tests.test_audience_export import make_audience, say

BUCKET = "portal-in"
SECRET = "s3-secret-Zq81vXk2PmWt"


@pytest.fixture
def server(monkeypatch):
    with S3Server() as running:
        monkeypatch.setenv(s3.ENDPOINT_ENV, running.url)
        running.client = boto3.client(
            "s3", endpoint_url=running.url, region_name="us-east-1",
            aws_access_key_id="AKIATESTTEST", aws_secret_access_key="x")
        running.client.create_bucket(Bucket=BUCKET)
        yield running


@pytest.fixture
def owner(make_user):
    return make_user("operator")


def credentials(**changes) -> dict:
    return {"access_key_id": "AKIATESTTEST", "secret_access_key": canary(SECRET),
            "region": "us-east-1", "bucket": BUCKET, "endpoint_url": "", **changes}


def job_for(owner, job_type: str, config: dict, **creds):
    provider = get_provider("s3")
    authorization = vault.create(provider, provider.auth_method("access_key"), label="S3",
                                 description="", credentials=credentials(**creds), by=owner)
    job = create_job(provider=provider, job_type=provider.job_type(job_type),
                     authorization=authorization, name=f"S3 {job_type}", description="",
                     config=config, created_by=owner,
                     schedule={"kind": "interval", "every_minutes": 60})
    db.session.commit()
    return job


def put(server, key: str, body: bytes) -> None:
    server.client.put_object(Bucket=BUCKET, Key=key, Body=body)


def csv_rows(*emails: str, day: int = 1) -> bytes:
    lines = ["email,ts"] + [f"{email},2026-01-{day:02d}T10:00:{n:02d}Z"
                            for n, email in enumerate(emails)]
    return ("\n".join(lines) + "\n").encode()


def stored() -> list[dict]:
    rows = db.session.scalars(select(Message).order_by(Message.id)).all()
    return [row.payload for row in rows]


def run_now(job, owner) -> None:
    db.session.refresh(job)
    assert job.status == "sleeping", job.status
    run_job_now(job, by=owner)


IMPORT = {"prefix": "in/", "timestamp_field": "ts", "stream": "s3in"}


def test_import_reads_csv_ndjson_and_gzip_and_later_runs_only_new_files(app, work, owner,
                                                                       server):
    put(server, "in/a.csv", csv_rows("a1@x.io", "a2@x.io", "a3@x.io"))
    ndjson = b'{"email": "b1@x.io", "ts": 1767261600}\n\n{"email": "b2@x.io", "ts": 1767261601}\n'
    put(server, "in/b.ndjson.gz", gzip.compress(ndjson))
    put(server, "in/c.jsonl", gzip.compress(b'{"email": "c1@x.io", "ts": "2026-01-03"}\n'))
    put(server, "in/notes.pdf", b"%PDF")  # not a file the import reads
    put(server, "other/z.csv", csv_rows("z@x.io"))  # outside the prefix
    job = job_for(owner, "import", IMPORT)
    assert work()
    emails = [payload["email"] for payload in stored()]
    assert sorted(emails) == ["a1@x.io", "a2@x.io", "a3@x.io", "b1@x.io", "b2@x.io",
                              "c1@x.io"]
    times = {row.payload["email"]: row.event_time
             for row in db.session.scalars(select(Message))}
    assert times["a2@x.io"] == datetime(2026, 1, 1, 10, 0, 1, tzinfo=UTC)
    assert times["b1@x.io"] == datetime.fromtimestamp(1767261600, UTC)
    db.session.refresh(job)
    assert job.added_total == 6 and job.cursor["after"][1] in {
        "in/a.csv", "in/b.ndjson.gz", "in/c.jsonl"} and "file" not in job.cursor

    # Nothing new: the next run writes nothing; a new file: only its rows.
    gets_before = len([r for r in server.requests if r[1].startswith(f"/{BUCKET}/in/")])
    run_now(job, owner)
    assert work()
    assert len(stored()) == 6
    assert len([r for r in server.requests if r[1].startswith(f"/{BUCKET}/in/")]) == gets_before
    put(server, "in/d.csv", csv_rows("d1@x.io", day=4))
    run_now(job, owner)
    assert work()
    assert [payload["email"] for payload in stored()][6:] == ["d1@x.io"]

    # Even read again from the start, nothing is written twice (dedupe keys).
    db.session.refresh(job)
    job.cursor = {}
    db.session.commit()
    run_now(job, owner)
    assert work()
    assert len(stored()) == 7
    db.session.refresh(job)
    assert job.omitted_total == 7 and job.added_total == 7


def test_a_failure_in_the_middle_of_a_file_resumes_from_the_cursor(app, work, owner, server):
    put(server, "in/big.csv", csv_rows(*[f"p{n}@x.io" for n in range(7)]))
    job = job_for(owner, "import", IMPORT)
    server.fail_after = 2  # two batches of 2 rows read, then the server fails
    work()
    assert len(stored()) == 4
    db.session.refresh(job)
    assert job.status == "sleeping" and job.error_count == 1
    assert job.cursor["file"]["key"] == "in/big.csv" and job.cursor["file"]["row"] == 4
    server.fail_after = None
    run_now(job, owner)
    assert work()
    emails = [payload["email"] for payload in stored()]
    assert emails == [f"p{n}@x.io" for n in range(7)]  # each once, in order
    db.session.refresh(job)
    assert job.added_total == 7 and job.omitted_total == 0


def test_a_bad_row_fails_the_job_naming_the_object_and_line(app, work, owner, server):
    put(server, "in/bad.csv", b"email,ts\nx@x.io,not a time\n")
    job = job_for(owner, "import", IMPORT)
    work()
    db.session.refresh(job)
    assert job.status == "failed"
    event = db.session.scalars(select(JobEvent).where(JobEvent.job_id == job.id,
                                                      JobEvent.code == "bad_input")).first()
    assert "in/bad.csv" in event.message and "not a time" in event.message


def test_slow_down_sleeps_until_retry_after(app, work, owner, server):
    put(server, "in/a.csv", csv_rows("a@x.io"))
    job = job_for(owner, "import", IMPORT)
    server.fail_next = [(503, "SlowDown", {"Retry-After": "120"})]
    started = datetime.now(UTC)
    work()
    db.session.refresh(job)
    assert job.status == "sleeping" and job.error_count == 0
    assert timedelta(seconds=110) < job.next_run_at - started < timedelta(seconds=135)
    assert stored() == []
    with pytest.raises(RateLimited) as raised:
        server.fail_next = [(503, "SlowDown", {"Retry-After": "9"})]
        s3.check("access_key", credentials())
    assert raised.value.retry_after == 9


def test_rejected_credentials_mark_the_authorization_unhealthy(app, work, owner, server):
    put(server, "in/a.csv", csv_rows("a@x.io"))
    job = job_for(owner, "import", IMPORT, access_key_id=REJECTED_KEY)
    work()
    db.session.refresh(job)
    assert job.authorization.health == "unhealthy"
    assert "refused the credentials" in job.authorization.health_message
    assert SECRET not in job.authorization.health_message
    assert stored() == []
    with pytest.raises(AuthError, match="InvalidAccessKeyId|403"):
        s3.check("access_key", credentials(access_key_id=REJECTED_KEY))


def test_test_connection_heads_the_bucket_and_names_a_missing_one(app, server):
    assert s3.check("access_key", credentials()) .startswith(f"Bucket '{BUCKET}' is reachable")
    with pytest.raises(ConfigError, match="no bucket 'not-there'"):
        s3.check("access_key", credentials(bucket="not-there"))
    with pytest.raises(ConfigError, match="secret access key"):
        s3.check("access_key", {**credentials(), "secret_access_key": ""})


def test_test_connection_through_the_vault_page(app, client, auth, server):
    user = auth.login("operator")
    provider = get_provider("s3")
    authorization = vault.create(provider, provider.auth_method("access_key"), label="S3",
                                 description="", credentials=credentials(), by=user)
    db.session.commit()
    tested = client.post(f"/vault/{authorization.id}/test",
                         headers={"X-CSRFToken": auth.csrf(), "HX-Request": "true"})
    assert tested.status_code == 200
    assert 'data-health="healthy"' in tested.get_data(as_text=True)


def test_the_timestamp_menu_lists_fields_from_a_sample_of_files(app, server):
    put(server, "in/a.csv", csv_rows("a@x.io"))
    put(server, "in/b.ndjson", b'{"email": "b@x.io", "signed_up": "2026-01-01"}\n')
    options = s3.sample_fields(credentials())
    assert options[0][0] == ""
    assert {value for value, _ in options[1:]} == {"email", "ts", "signed_up"}


def test_every_request_passes_the_outbound_policy(app):
    class Request:
        url = "http://169.254.169.254/latest/meta-data/"

    with pytest.raises(outbound.OutboundRefused):
        s3._check_request(Request())
    with pytest.raises(outbound.OutboundRefused):
        outbound.check_address("10.1.2.3", 443)


def read_csv(server, key: str) -> list[dict]:
    body = server.client.get_object(Bucket=BUCKET, Key=key)["Body"].read().decode()
    return list(csv.DictReader(io.StringIO(body)))


def test_export_writes_the_audience_as_csv_parts_and_a_manifest(app, work, owner, server):
    say(*[{"email": f"p{n}@x.io", "plan": "pro", "n": n} for n in range(5)],
        {"user_id": 9, "plan": "pro"}, {"email": "free@x.io", "plan": "free"})
    audience = make_audience(owner, [{"field": "plan", "op": "equals", "value": "pro"}])
    job = job_for(owner, "export", {"audience": audience.slug, "prefix": "out",
                                    "batch_size": 2})
    assert work()
    keys = sorted(item["Key"] for item in server.client.list_objects_v2(
        Bucket=BUCKET, Prefix="out/")["Contents"])
    run = keys[0].split("/")[2]
    assert keys == [f"out/{audience.slug}/{run}/{name}" for name in (
        "_manifest.json", "part-00001.csv", "part-00002.csv", "part-00003.csv")]
    rows = [row for key in keys[1:] for row in read_csv(server, key)]
    assert [row["email"] for row in rows] == [f"p{n}@x.io" for n in range(5)]
    assert rows[0]["plan"] == "pro" and rows[0]["n"] == "0" and rows[0]["profile_id"]
    manifest = json.loads(server.client.get_object(Bucket=BUCKET, Key=keys[0])["Body"].read())
    assert manifest["members"] == 5 and manifest["omitted"] == 1 and manifest["parts"] == 3
    db.session.refresh(job)
    assert (job.added_total, job.omitted_total) == (5, 1)
    assert job.cursor == {"after_profile_id": 0}


def test_an_export_unit_that_fails_is_written_again_to_the_same_part(app, work, owner,
                                                                     server):
    say(*[{"email": f"p{n}@x.io", "plan": "pro"} for n in range(3)])
    audience = make_audience(owner, [{"field": "plan", "op": "equals", "value": "pro"}])
    job = job_for(owner, "export", {"audience": audience.slug, "prefix": "out",
                                    "batch_size": 2})
    server.fail_next = [(500, "InternalError", {})]  # the first PUT fails
    work()
    db.session.refresh(job)
    assert job.status == "sleeping" and job.error_count == 1
    run_now(job, owner)
    assert work()
    keys = sorted(item["Key"] for item in server.client.list_objects_v2(
        Bucket=BUCKET, Prefix="out/")["Contents"])
    assert [key.rsplit("/", 1)[1] for key in keys] == [
        "_manifest.json", "part-00001.csv", "part-00002.csv"]
    assert sum(len(read_csv(server, key)) for key in keys[1:]) == 3
