"""Issue 11, part 4: the import's own check of a whole file before the job exists (every
problem of the first ones with its line, the first rows as they will be stored), and the
timestamp column guessed from its values as well as its name."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import select

from portal.datastore import check_upload, store_upload
from portal.extensions import db
from portal.models import Draft
from portal.queues import redis_connection
from providers.files import NO_ROWS, check_file, guess_timestamp_field, inspect
from tests.test_wizard import HX, post

CONFIGURE = "/jobs/new/files/import_file/configure?authorization=none"


def rows(count: int, start: int = 0) -> str:
    return "".join(f"u{n}@x.io,2024-01-{n % 28 + 1:02d}T10:00:00Z,{n}\n"
                   for n in range(start, start + count))


def test_the_check_reads_on_past_bad_rows_and_lists_them_with_their_lines():
    data = ("email,ts,score\n" + rows(3) + "bad@x.io,yesterday,1\n" + "short@x.io\n"
            + rows(30, 3) + 'q@x.io,"2024-01-01,2\n').encode()
    checked = check_file(data, "csv", ",", "ts")
    assert [(error.line, error.problem[:24]) for error in checked.errors] == [
        (5, "field 'ts' has 'yesterda"), (6, "has 1 fields but the hea"),
        (37, "the row cannot be read a")]
    assert checked.rows == 36 and checked.complete
    assert [row.line for row in checked.sample] == [2, 3, 4, *range(7, 24)]
    assert checked.sample[0].event_time == datetime(2024, 1, 1, 10, tzinfo=UTC)
    assert checked.sample[0].data == {"email": "u0@x.io", "ts": "2024-01-01T10:00:00Z",
                                      "score": "0"}


def test_ndjson_problems_are_listed_too_and_the_pass_stops_at_max_errors():
    data = b'{"t": 1700000000}\n{"t": \n[1]\n{"t": "x"}\n{"t": 1700000001000}\n'
    checked = check_file(data, "ndjson", ",", "t")
    assert [error.line for error in checked.errors] == [2, 3, 4]
    assert [row.event_time.year for row in checked.sample] == [2023, 2023]
    stopped = check_file(data, "ndjson", ",", "t", max_errors=2)
    assert [error.line for error in stopped.errors] == [2, 3] and not stopped.complete


@pytest.mark.parametrize("data", [b"email,ts\n", b"email,ts\n\n\n"])
def test_a_header_without_rows_is_a_problem(data):
    checked = check_file(data, "csv", ",", "")
    assert [(error.line, error.problem) for error in checked.errors] == [(1, NO_ROWS)]


def test_without_a_timestamp_field_rows_get_the_time_of_import():
    checked = check_file(b"a\n1\n2\n", "csv", ",", "")
    assert [(row.line, row.event_time) for row in checked.sample] == [(2, None), (3, None)]


@pytest.mark.parametrize(("header", "line", "expected"), [
    # The case: a name no list holds, with ISO dates.
    ("email,signed_up_at,plan", "a@x.io,2024-03-01T09:00:00+01:00,pro", "signed_up_at"),
    ("id,when", "12,2024-03-01", "when"),  # a date alone
    ("id,seen", "12,1709280000", "seen"),  # Unix seconds
    ("id,seen", "12,1709280000123", "seen"),  # Unix milliseconds
    ("score,id", "17,4", ""),  # small numbers are not times from 1970
    ("ts,other", "soon,2024-03-01T09:00:00Z", "other"),  # a usual name with other values
    ("first,updated_at", "2024-03-01,2024-03-02", "updated_at"),  # the usual name first
    ("a,b", "x,", ""),
])
def test_the_timestamp_column_is_guessed_from_its_values(header, line, expected):
    data = f"{header}\n{line}\n{line}\n".encode()
    info = inspect("x.csv", data)
    assert guess_timestamp_field(data, "csv", ",", info.fields) == expected


def test_one_value_that_is_no_time_in_the_first_rows_rules_a_column_out():
    data = ("id,at\n" + "1,2024-01-01\n" * 5 + "2,later\n").encode()
    assert guess_timestamp_field(data, "csv", ",", ["id", "at"]) == ""


def test_the_check_of_an_upload_is_kept_and_agrees_with_a_fresh_one(app, make_user):
    user = make_user("operator")
    data = ("email,ts,score\n" + rows(25) + "bad@x.io,never,1\n").encode()
    upload, _ = store_upload("people.csv", data, by=user)
    db.session.commit()
    first = check_upload(upload, ",", "ts")
    assert [error.line for error in first.errors] == [27] and first.rows == 26
    assert len(redis_connection().keys("portal:upload-check:*")) == 1
    again = check_upload(upload, ",", "ts")
    assert (again.rows, again.complete, again.sample) == (first.rows, True, first.sample)
    assert [str(error) for error in again.errors] == [str(error) for error in first.errors]
    other = check_upload(upload, ",", "")  # other settings: another check
    assert not other.errors and other.rows == 26


def upload_file(client, auth, content: bytes, name: str = "people.csv", **fields):
    from io import BytesIO

    return client.post(CONFIGURE, headers=HX, content_type="multipart/form-data", data={
        "csrf_token": auth.csrf(), "action": "upload", "stream": "people",
        "file": (BytesIO(content), name), **fields})


def test_next_refuses_a_header_only_file_on_the_file_field(client, auth):
    auth.login()
    page = upload_file(client, auth, b"email,signed_up_at\n").get_data(as_text=True)
    draft = db.session.scalar(select(Draft))
    url = f"{CONFIGURE}&draft={draft.id}"
    response = post(client, auth, url, headers=HX, upload_id=str(draft.config["upload_id"]),
                    stream="people", timestamp_field="", delimiter=",")
    page = response.get_data(as_text=True)
    assert 'id="field-upload_id-error"' in page
    assert "people.csv has a header but no rows: there is nothing to import" in page
    db.session.refresh(draft)
    assert draft.step == "configure", "not a step further"


def test_next_lists_the_first_bad_rows_and_the_review_previews_the_rest(client, auth):
    auth.login()
    bad = ("email,signed_up_at,score\n" + rows(2) + "x@x.io,tomorrow,1\n" + "y@x.io\n")
    page = upload_file(client, auth, bad.encode()).get_data(as_text=True)
    assert '<option value="signed_up_at" selected>' not in page, "'tomorrow' is no time"
    draft = db.session.scalar(select(Draft))
    url = f"{CONFIGURE}&draft={draft.id}"
    fields = {"upload_id": str(draft.config["upload_id"]), "stream": "people",
              "timestamp_field": "signed_up_at", "delimiter": ","}
    page = post(client, auth, url, headers=HX, **fields).get_data(as_text=True)
    assert ("people.csv cannot be imported; its first 2 problems: line 4: field "
            "&#39;signed_up_at&#39; has &#39;tomorrow&#39;") in page
    assert "line 5: has 1 fields but the header has 3" in page

    good = "email,signed_up_at,score\n" + rows(30)
    page = upload_file(client, auth, good.encode(), draft=str(draft.id)).get_data(as_text=True)
    assert '<option value="signed_up_at" selected>' in page, "guessed from its values"
    db.session.refresh(draft)
    fields["upload_id"] = str(draft.config["upload_id"])
    response = post(client, auth, url, **fields)
    assert response.status_code == 303
    post(client, auth, response.headers["Location"], name="People")
    page = client.get(f"/jobs/new/drafts/{draft.id}/review").get_data(as_text=True)
    assert "All 30 rows read without a problem" in page
    assert "The first 20, as they will be stored in stream <strong>people</strong>" in page
    assert page.count("<tr>") == 21  # the header row and 20 rows
    assert "2024-01-01 10:00:00+00:00" in page and "u19@x.io" in page
    assert "u20@x.io" not in page
