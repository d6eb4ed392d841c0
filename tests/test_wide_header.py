"""A wide CSV header is checked in linear time and refused past PORTAL_MAX_COLUMNS, at
upload (a field message) and in the import (a clean Failed)."""

from __future__ import annotations

import hashlib
import io
import json

from portal.extensions import db
from portal.models import Upload
from providers import files
from tests.conftest import _make_app
from tests.test_job_path import CONFIGURE, create_import, failed_with


def wide_csv(columns: int, duplicate: str | None = None) -> bytes:
    names = [f"c{n}" for n in range(columns)]
    if duplicate:
        names[-1] = duplicate
    return (",".join(names) + "\n" + ",".join("1" for _ in names) + "\n").encode()


def test_a_100000_column_upload_gets_a_field_message_at_once(client, auth):
    auth.login()
    response = client.post(CONFIGURE, data={
        "stream": "people", "action": "upload", "csrf_token": auth.csrf(),
        "file": (io.BytesIO(wide_csv(100_000)), "wide.csv")}, content_type="multipart/form-data")
    page = response.get_data(as_text=True)
    assert response.status_code == 422
    assert ("wide.csv: line 1: the header has 100,000 columns, more than the 2,000 this "
            "portal accepts") in page
    assert "PORTAL_MAX_COLUMNS" in page
    assert db.session.query(Upload).count() == 0, "nothing kept of a refused file"


def test_the_cap_is_the_setting_and_counts_ndjson_fields_too(database_url, redis_url,
                                                             tmp_path, monkeypatch):
    monkeypatch.setattr(files, "MAX_COLUMNS", files.MAX_COLUMNS)  # put back after the test
    app = _make_app(database_url, redis_url, tmp_path / "instance", PORTAL_MAX_COLUMNS=3)
    assert app.config["PORTAL_MAX_COLUMNS"] == 3 and files.MAX_COLUMNS == 3
    assert files.inspect("ok.csv", wide_csv(3)).fields == ["c0", "c1", "c2"]
    try:
        files.inspect("four.csv", wide_csv(4))
    except files.RecordError as exc:
        assert "the header has 4 columns, more than the 3 this portal accepts" in str(exc)
    else:
        raise AssertionError("a 4-column header passed a cap of 3")
    objects = b"\n".join(json.dumps({f"f{n}": n for n in range(k)}).encode()
                         for k in (2, 3, 4))
    try:
        files.inspect("wide.ndjson", objects)
    except files.RecordError as exc:
        assert exc.line == 3 and "the objects name 4 fields, more than the 3" in str(exc)
    else:
        raise AssertionError("4 NDJSON fields passed a cap of 3")


def test_a_wide_header_is_checked_in_linear_time(database_url, redis_url, tmp_path,
                                                 monkeypatch):
    monkeypatch.setattr(files, "MAX_COLUMNS", files.MAX_COLUMNS)
    # With the cap raised, 100,000 names are still checked at once (the check used to be
    # quadratic: about two minutes), and a duplicate at the far end is still found.
    _make_app(database_url, redis_url, tmp_path / "instance", PORTAL_MAX_COLUMNS=200_000)
    assert len(files.inspect("wide.csv", wide_csv(100_000)).fields) == 100_000
    try:
        files.inspect("dup.csv", wide_csv(100_000, duplicate="c7"))
    except files.RecordError as exc:
        assert str(exc) == "line 1: the header names a column twice: c7"
    else:
        raise AssertionError("a duplicate column passed")


def test_the_import_refuses_a_wide_file_stored_before_the_cap(client, auth, work):
    auth.login()
    job = create_import(client, auth)
    wide = wide_csv(3_000)
    upload = Upload(filename="wide.csv", format="csv", size=len(wide), fields=["c0"],
                    sha256=hashlib.sha256(wide).hexdigest(), content=wide)
    db.session.add(upload)
    db.session.flush()
    job.config = {**job.config, "upload_id": upload.id, "timestamp_field": ""}
    db.session.commit()
    work()
    assert failed_with(job).startswith(
        "wide.csv, line 1: the header has 3,000 columns, more than the 2,000 this portal "
        "accepts")
