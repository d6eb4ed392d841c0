"""Junk in URLs and forms gets a clear answer, never a 500."""

from __future__ import annotations

import base64
import io
import json
import re
from urllib.parse import quote

import pytest
from sqlalchemy import select
from sqlalchemy.exc import StatementError
from werkzeug.datastructures import ImmutableMultiDict

from portal import params
from portal.extensions import db
from portal.jobs import SORTS, TIME_SORTS, JobFilter, create_job, list_jobs
from providers import get_provider
from tests.conftest import TEST_PASSWORD, csrf_token

HX = {"HX-Request": "true"}


@pytest.fixture
def a_job(app, make_user):
    provider = get_provider("faults")
    job = create_job(provider=provider, job_type=provider.job_type("script"),
                     authorization=None, name="x", description="", config={},
                     created_by=make_user("operator", "owner@example.com"), paused=True)
    db.session.commit()
    return job


@pytest.mark.parametrize("path", [
    "/jobs?after=%%%garbage", "/jobs?after=eyJ4IjoxfQ",
    "/jobs?sort=created&after=WyJub3QgYSBkYXRlIiwgMV0",
    "/jobs?authorization=abc&type=nope&status=zzz&dir=sideways&completed=maybe",
    "/jobs?q=%25_%5C", "/jobs/statuses?ids=a,,1,-3", "/jobs/{id}/logs?after=abc",
    "/jobs/{id}/logs/older?before=abc&kind=nope", "/jobs/{id}/logs/view?q=%25%25",
    "/jobs/{id}/metrics?frame=", "/jobs/{id}/logs.ndjson?kind=nope", "/jobs/{id}/name?edit=2",
    "/jobs/new?q=%00&category=%FF", "/jobs/new/drafts/0/review", "/vault/0", "/vault/new/x/y",
    "/vault/oauth/mailchimp/callback?state=&code=", "/vault/oauth/nope/callback",
    "/admin/audit?user=x&before=y&object_type=%00", "/jobs/999999/logs.csv",
    "/jobs?q=%00", "/jobs/{id}/logs/view?q=a%00b",
    "/admin/operations?x=%00", "/admin/operations/live?x=%FF",
])
def test_junk_urls_get_an_answer_not_a_500(client, auth, a_job, path):
    auth.login("admin")
    for headers in ({}, HX):
        response = client.get(path.format(id=a_job.id), headers=headers)
        assert response.status_code < 500, (path, response.status_code)
        response.get_data()


def rows_the_forms_name(auth):
    """Signed in as an admin: an authorization and a wizard draft at its schedule step, so
    a form's junk reaches its view instead of a 404 for a missing row."""
    from portal import vault
    from portal.models import Draft

    admin = auth.login("admin")
    provider = get_provider("faults")
    authorization = vault.create(provider, provider.auth_method("api_key"), label="Faults",
                                 description="", credentials={"api_key": "k-not-secret"},
                                 by=admin)
    draft = Draft(owner_id=admin.id, provider="faults", job_type="script", config={},
                  name="d", step="schedule", schedule={"kind": "once"}, retry_policy={})
    db.session.add(draft)
    db.session.commit()
    return authorization, draft


@pytest.mark.parametrize("path,data", [
    ("/jobs/bulk", {"action": "explode"}),
    ("/jobs/bulk", {"action": "pause", "ids": ["x", "", "-1"]}),
    ("/jobs/bulk/confirm", {}),
    ("/jobs/{id}/name", {}),
    ("/jobs/{id}/description", {"value": "x" * 5000}),
    ("/jobs/{id}/delete", {}),
    ("/vault/{authorization}/credentials", {"version": "abc"}),
    ("/vault/new/webhook/bearer", {"label": "x", "cred-url": "ftp://x", "cred-token": ""}),
    ("/jobs/new/faults/showcase/configure?authorization=none", {"count": "1e999",
                                                               "limits.daily": "-5"}),
    ("/jobs/new/drafts/{draft}/schedule", {"name": ""}),
])
def test_junk_forms_get_an_answer_not_a_500(client, auth, a_job, path, data):
    authorization, draft = rows_the_forms_name(auth)
    response = client.post(path.format(id=a_job.id, authorization=authorization.id,
                                       draft=draft.id), headers=HX,
                           data={"csrf_token": auth.csrf(), **data})
    # The junk reaches the view: the rows the path names exist, so no 404 stands in for
    # the view's own answer.
    assert response.status_code not in (404, 405), (path, response.status_code)
    assert response.status_code < 500, (path, response.status_code)


def test_junk_in_a_form_reaches_its_handler_and_is_named(client, auth):
    """Two forms whose junk used to be answered by a 404 for a missing row."""
    from portal.models import Draft

    authorization, draft = rows_the_forms_name(auth)
    response = client.post(f"/vault/{authorization.id}/credentials", headers=HX,
                           data={"csrf_token": auth.csrf(), "version": "abc"})
    assert response.status_code == 400
    assert "lacks the version it edits" in response.get_data(as_text=True)
    response = client.post(f"/jobs/new/drafts/{draft.id}/schedule", headers=HX,
                           data={"csrf_token": auth.csrf(), "name": ""})
    assert response.status_code == 200, "htmx swaps only 2xx: the step shows the message"
    assert "Give the job a name." in response.get_data(as_text=True)
    db.session.expire_all()
    assert db.session.get(Draft, draft.id).step == "schedule", "not moved on to review"


def test_a_nul_character_is_refused_with_a_clear_message(client, auth, a_job):
    auth.login("admin")
    response = client.get("/jobs?q=a%00b")
    assert response.status_code == 400
    assert "NUL character" in response.get_data(as_text=True)
    response = client.post(f"/jobs/{a_job.id}/name", headers=HX,
                           data={"csrf_token": auth.csrf(), "value": "bad\x00name"})
    assert response.status_code == 400
    db.session.expire_all()
    assert a_job.name == "x"


def test_a_file_with_a_nul_character_is_refused_on_upload(client, auth):
    import io

    auth.login("operator")
    response = client.post(
        "/jobs/new/files/import_file/configure?authorization=none", headers=HX,
        data={"csrf_token": auth.csrf(), "stream": "s", "action": "upload",
              "file": (io.BytesIO(b"email,ts\na@x.io\x00,2024-01-01\n"), "nul.csv")},
        content_type="multipart/form-data")
    page = response.get_data(as_text=True)
    assert response.status_code == 200 and 'id="field-upload_id-error"' in page
    assert "NUL" in page


def test_a_provider_payload_with_nul_characters_is_stored_readably(app):
    from sqlalchemy import select

    from portal.datastore import write_messages
    from portal.models import Message
    from portal.models.types import utcnow
    from providers.base import OutMessage

    added, _ = write_messages("nul", [OutMessage("k1", utcnow(), {
        "name\x00": "Ada\x00", "tags": ["a\x00b"], "nested": {"x": "\x00"}, "n": 1})],
        source="test")
    db.session.commit()
    assert added == 1
    payload = db.session.scalar(select(Message.payload))
    assert payload == {"name\ufffd": "Ada\ufffd", "tags": ["a\ufffdb"],
                       "nested": {"x": "\ufffd"}, "n": 1}


# --- Every route, every id, number and cursor it reads, each class of junk -------------
# The walk finds the routes in app.url_map and the parameters each one reads by watching
# a first request with good values (a request class whose parameter dicts note every key
# looked up), so a route or a parameter added later is walked too.

JUNK = {
    "above 2**63": str(2**70),
    "2**63": str(2**63),
    "superscript digits": "²³",
    "negative": "-1",
    "zero": "0",
    "exponent": "1e999",
    "nan": "nan",
    "words": "abc",
    "blank": "",
    "5000 digits": "1" * 5000,
    "bidi override": "\u202eabc",
}


class _Watched(ImmutableMultiDict):
    """Request parameters that note which keys a view reads."""

    read: set[str] = set()

    def get(self, key, default=None, type=None):
        _Watched.read.add(key)
        return super().get(key, default, type)

    def getlist(self, key, type=None):
        _Watched.read.add(key)
        return super().getlist(key, type)

    def __getitem__(self, key):
        _Watched.read.add(key)
        return super().__getitem__(key)

    def __contains__(self, key):
        _Watched.read.add(key)
        return super().__contains__(key)

    def items(self, multi=False):  # sub-forms (retry-*, cred-*) are read by walking them
        for key, value in super().items(multi=multi):
            if "-" in key:
                _Watched.read.add(key)
            yield key, value


def _good_values(world: dict[str, int]) -> dict[str, str]:
    """A value for every parameter any route reads that gets it past its first check."""
    return {
        "ids": str(world["job"]), "after": "", "before": "", "version": "1",
        "target": str(world["authorization"]), "authorization": str(world["authorization"]),
        "upload_id": str(world["upload"]), "draft": str(world["draft"]), "limit": "10",
        "frame": "7d", "kind": "error", "q": "x", "sort": "name", "dir": "asc",
        "status": "paused", "type": "import", "provider": "faults", "user": str(world["admin"]),
        "object_type": "job", "action": "pause", "edit": "1", "value": "A name",
        "field": "plan", "op": "equals", "match": "any", "slug": "", "remove": "0", "add": "",
        "name": "A name", "description": "Words", "label": "A label", "state": "s",
        "code": "c", "next": "/jobs/new/", "category": "Files", "completed": "1",
        "count": "3", "ratio": "0.5", "limits.daily": "5", "title": "t",
        "stream": "s", "timestamp_field": "ts", "delimiter": ",",
        "retry-backoff_base_seconds": "60", "retry-backoff_cap_seconds": "600",
        "retry-failure_window_hours": "10", "schedule-kind": "every",
        "schedule-every_minutes": "60", "cred-url": "http://127.0.0.1:9/hook",
        "cred-token": "t", "cred-api_key": "k", "email": "nobody@example.com",
        "password": "x", "create_paused": "on",
        "scope": "all", "scope_value": "", "conditions": "failed", "rate_limit_minutes": "30",
        "channel": "email", "emails": "ops@example.com", "slack_authorization_id": "",
        "slack_channel": "", "webhook_url": "", "enabled": "y", "job": str(world["job"]),
        "rule": str(world["rule"]),
    }


def _world(owner, admin, world: dict[str, int]) -> dict[str, int]:
    """The rows the routes act on, made again when a request deleted one."""
    from portal import alerts, audiences, tokens, vault
    from portal.datastore import store_upload, write_messages
    from portal.models import (
        AccessToken,
        AlertRule,
        Audience,
        Authorization,
        Draft,
        Job,
        Upload,
    )
    from portal.models.types import utcnow
    from providers.base import OutMessage

    provider = get_provider("faults")
    if db.session.get(Authorization, world.get("authorization", 0)) is None:
        world["authorization"] = vault.create(
            provider, provider.auth_method("api_key"), label="Faults", description="",
            credentials={"api_key": "k-not-secret"}, by=owner).id
    if db.session.get(Job, world.get("job", 0)) is None:
        world["job"] = create_job(
            provider=provider, job_type=provider.job_type("script"),
            authorization=db.session.get(Authorization, world["authorization"]), name="x",
            description="", config={}, created_by=owner, paused=True).id
    if db.session.get(Draft, world.get("draft", 0)) is None:
        draft = Draft(owner_id=admin.id, provider="faults", job_type="showcase", config={},
                      name="d", step="review", schedule={"kind": "once"}, retry_policy={})
        db.session.add(draft)
        db.session.flush()
        world["draft"] = draft.id
    if db.session.get(Upload, world.get("upload", 0)) is None:
        world["upload"] = store_upload("p.csv", b"email,ts\na@x.io,2024-01-01\n", by=admin)[0].id
        write_messages("s", [OutMessage("k", utcnow(), {"a": 1})], source="test")
    if db.session.get(Audience, world.get("audience", 0)) is None:
        cleaned, _ = audiences.check({"name": f"Pros {len(world)}", "conditions": [
            {"field": "a", "op": "gt", "value": 0}]})
        world["audience"] = audiences.create(cleaned, by=owner).id
    if db.session.get(AccessToken, world.get("token", 0)) is None:
        world["token"] = tokens.create(name="t", description="", role="viewer", days=None,
                                       by=admin)[0].id
    if db.session.get(AlertRule, world.get("rule", 0)) is None:
        world["rule"] = alerts.save_rule(alerts.RuleInput(
            name="Ops", scope="all", scope_value="", conditions=["failed"],
            rate_limit_minutes=30, channel="email", emails="ops@example.com"), by=admin).id
    world["admin"] = admin.id
    db.session.commit()
    return world


# Path values by argument name; the wizard's and the Vault's provider routes take one
# provider each that needs no network (faults has no connection test, webhook gets no
# credentials that pass).
PATH_VALUES = {"field": "name", "action": "pause", "fmt": "ndjson", "name": "s",
               "workflow": "script", "stream": "s", "import_id": "1",
               "filename": "portal.css", "method_key": "bearer", "id_or_slug": "pros",
               "value": "a@x.io", "user_id": "1",  # user_id: the owner (made first)
               "token": "not-a-link", "purpose": "invite"}
READ: dict[tuple, list[str]] = {}  # the parameters each route read, by role and method
INT_SEGMENT = re.compile(r"<int(?:\([^)]*\))?:(\w+)>")


def _targets(app, world: dict[str, int]) -> list[tuple[str, str, dict[str, str], dict]]:
    """(endpoint, method, path values, good-value overrides) for every route."""
    found = []
    for rule in sorted(app.url_map.iter_rules(), key=lambda r: (r.endpoint == "auth.logout",
                                                                 r.rule)):
        variants = [({}, {})]
        if rule.endpoint.startswith("wizard.") and "job_type_key" in rule.arguments:
            variants = [({"provider_key": "faults", "job_type_key": "showcase"}, {}),
                        ({"provider_key": "files", "job_type_key": "import_file"},
                         {"authorization": "none", "draft": ""})]
        elif "provider_key" in rule.arguments:
            variants = [({"provider_key": "webhook" if rule.endpoint.startswith("vault.")
                          else "files"}, {})]
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            for path_values, overrides in variants:
                found.append((rule, method, path_values, overrides))
    return found


def _path(rule, path_values: dict[str, str], world: dict[str, int],
          junk_arg: str = "", junk: str = "") -> str:
    values = {"job_id": world["job"], "draft_id": world["draft"], "token_id": world["token"],
              "audience_id": world["audience"], "rule_id": world["rule"],
              "authorization_id": world["authorization"], **PATH_VALUES, **path_values}
    path = rule.rule
    for arg in rule.arguments:
        value = quote(junk, safe="") if arg == junk_arg else str(values[arg])
        path = re.sub(rf"<[^>]*:{arg}>|<{arg}>", lambda _, value=value: value, path)
    return path


def _send(client, method: str, path: str, params: dict[str, str], csrf: str):
    if method == "GET":
        return client.get(path, query_string=params)
    return client.post(path, headers=HX, data={"csrf_token": csrf, **params})


@pytest.mark.parametrize("junk_class", list(JUNK))
def test_every_route_answers_junk_in_every_id_number_and_cursor_without_a_500(
        app, make_user, junk_class):
    junk = JUNK[junk_class]
    app.request_class = type("WatchedRequest", (app.request_class,),
                             {"parameter_storage_class": _Watched})
    ids = {user.role if user.role != "operator" else "owner": user.id for user in (
        make_user("operator", "owner@example.com"), make_user("admin"), make_user("viewer"))}
    failures: list[str] = []
    world: dict[str, int] = {}
    for role in ("admin", "viewer"):
        # Each role in its own app context: Flask-Login and Flask-WTF keep the signed-in
        # user and the CSRF token in `g`, which the requests would otherwise share.
        with app.app_context():
            failures += _walk(app, junk, junk_class, role, ids, world)
    assert not failures, "\n".join(failures[:30])


def _walk(app, junk: str, junk_class: str, role: str, ids: dict[str, int],
          world: dict[str, int]) -> list[str]:
    from portal.models import User

    owner, admin, user = (db.session.get(User, ids[name]) for name in ("owner", "admin", role))
    client = app.test_client()
    client.post("/login", data={"email": user.email, "password": TEST_PASSWORD,
                                "csrf_token": csrf_token(client)})
    csrf = csrf_token(client, "/jobs")
    failures = []
    for rule, method, path_values, overrides in _targets(app, _world(owner, admin, world)):
        good = {**_good_values(_world(owner, admin, world)), **overrides}
        key = (role, rule.rule, method, tuple(path_values.items()))
        if key not in READ:  # the same for every junk class: found once
            _Watched.read = set()
            _send(client, method, _path(rule, path_values, world), good, csrf)
            READ[key] = sorted(_Watched.read - {"csrf_token"})
        attempts = [(_path(rule, path_values, world, arg, junk), good, arg)
                    for arg in INT_SEGMENT.findall(rule.rule) if junk.strip()]
        attempts += [(_path(rule, path_values, world), {**good, name: junk}, name)
                     for name in READ[key]]
        for path, sent, where in attempts:
            if method == "POST":  # it may have deleted what the next one needs
                _world(owner, admin, world)
            try:  # the test app re-raises what would be a 500
                status = _send(client, method, path, sent, csrf).status_code
            except Exception as exc:
                status = f"500 ({type(exc).__name__}: {str(exc)[:80]})"
                db.session.rollback()
            if not isinstance(status, int) or status >= 500:
                failures.append(f"{role} {method} {rule.rule} {where}={junk_class}: {status}")
    return failures


# --- The parser itself, path ids, paging values ------------------------------------------

@pytest.mark.parametrize("raw,expected", [
    ("1", 1), ("9223372036854775807", 2**63 - 1), (7, 7), (2**63 - 1, 2**63 - 1),
    ("9223372036854775808", None), (2**63, None), ("1" * 5000, None), ("0", None),
    ("-1", None), ("²³", None), ("١٢٣", None), ("１２", None), ("1_000", None),
    (" 7", None), ("7 ", None), ("+7", None), ("1.0", None), ("", None), (None, None),
    (True, None), (1.0, None), ([1], None), ("0x10", None),
])
def test_parse_int_takes_ascii_digits_within_range_only(raw, expected):
    assert params.parse_int(raw) == expected


def test_parse_int_bounds_and_signs():
    assert params.parse_int("-5", low=-10, high=10, signed=True) == -5
    assert params.parse_int("0", low=0) == 0
    assert params.parse_int("11", high=10) is None


@pytest.mark.parametrize("path", [
    "/jobs/9223372036854775808", f"/jobs/{2**70}/logs", f"/vault/{2**64}",
    f"/jobs/new/drafts/{2**63}/review", "/jobs/²³", "/jobs/١٢٣", "/jobs/" + "1" * 5000,
])
def test_path_ids_no_row_can_have_are_not_found(client, auth, a_job, path):
    auth.login("admin")
    assert client.get(path).status_code == 404


@pytest.mark.parametrize("path,name", [
    ("/jobs/{id}/logs/older?before=²³", "before"),
    ("/jobs/{id}/logs/view?before=" + str(2**64), "before"),
    ("/jobs/{id}?before=-4", "before"),
    ("/jobs/{id}/logs?after=1.5", "after"),
    ("/admin/audit?before=abc", "before"),
    ("/data/streams/s?limit=١٠", "limit"),
])
def test_malformed_paging_values_get_a_400_that_names_them(client, auth, a_job, path, name):
    from portal.datastore import get_or_create_stream

    get_or_create_stream("s")
    db.session.commit()
    auth.login("admin")
    response = client.get(path.format(id=a_job.id))
    assert response.status_code == 400
    assert f"“{name}”" in response.get_data(as_text=True)


def test_stale_filters_are_still_ignored_so_a_shared_link_opens(client, auth, a_job):
    auth.login("admin")
    for path in (f"/jobs?authorization={2**70}", "/jobs?authorization=²",
                 f"/admin/audit?user={2**70}", "/jobs/statuses?ids=²,1,99999999999999999999"):
        assert client.get(path).status_code in (200, 286), path  # 286: stop polling


def _cursor(value) -> str:
    text = value if isinstance(value, str) else json.dumps(value)
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


CURSORS = {
    "id above 2**63": _cursor(["x", 2**70]),
    "id a string": _cursor(["x", "1"]),
    "id a float": _cursor(["x", 1.5]),
    "id negative": _cursor(["x", -1]),
    "id NaN": _cursor('["x", NaN]'),
    "id true": _cursor(["x", True]),
    "value a list": _cursor([["a"], 1]),
    "value an object": _cursor([{"a": 1}, 1]),
    "value a number": _cursor([1e308, 1]),
    "value null": _cursor([None, 1]),
    "value with a NUL": _cursor(["a\x00b", 1]),
    "value a lone surrogate": _cursor('["\\ud800", 1]'),
    "value too long": _cursor(["x" * 5000, 1]),
    "naive time": _cursor(["2024-01-01T00:00:00", 1]),
    "time out of range in UTC": _cursor(["0001-01-01T00:00:00+23:59", 1]),
    "time not a time": _cursor(["next tuesday", 1]),
    "three parts": _cursor(["a", 1, 2]),
    "an object": _cursor({"a": 1}),
    "nested deep": _cursor("[" * 700),
    "not base64": "%%%~",
    "not UTF-8": base64.urlsafe_b64encode(b"\xff\xfe[").decode(),
}


@pytest.mark.parametrize("sort", SORTS)
def test_job_list_cursors_of_any_wrong_type_shape_or_range_start_from_the_first_page(
        client, auth, a_job, sort):
    auth.login("viewer")
    for name, cursor in CURSORS.items():
        if "time" in name and sort not in TIME_SORTS:  # text a name may well be
            continue
        response = client.get("/jobs", query_string={"sort": sort, "after": cursor,
                                                     "dir": "asc" if sort == "name" else "desc"})
        assert response.status_code == 200, name
        assert f'href="/jobs/{a_job.id}"' in response.get_data(as_text=True), name


def test_a_good_cursor_still_pages(client, auth, make_user):
    owner = make_user("operator", "owner@example.com")
    provider = get_provider("faults")
    for number in range(3):
        create_job(provider=provider, job_type=provider.job_type("script"), authorization=None,
                   name=f"job {number}", description="", config={}, created_by=owner,
                   paused=True)
    for sort in SORTS:
        jobs, cursor = list_jobs(JobFilter(sort=sort), limit=2)
        rest, _ = list_jobs(JobFilter(sort=sort), after=cursor, limit=2)
        assert len(jobs) == 2 and len(rest) == 1, sort
        assert rest[0].id not in {job.id for job in jobs}, sort


# --- JSON that storage cannot keep, and numbers that are not finite -----------------------

BAD_LINES = {
    "nested deep": (b'{"a": ' + b"[" * 100_000 + b"\n", "is nested more than 64 levels deep"),
    "nested past 64": (b'{"a": ' + b"[" * 64 + b"]" * 64 + b"}\n",
                       "is nested more than 64 levels deep"),
    "a 5000-digit integer": (b'{"a": ' + b"1" * 5000 + b"}\n",
                             "has a number with more than 100 digits"),
    "a 200-digit decimal": (b'{"a": 0.' + b"1" * 200 + b"}\n",
                            "has a number with more than 100 digits"),
    "NaN": (b'{"a": NaN}\n', "has NaN, which is not a JSON value"),
    "Infinity": (b'{"a": -Infinity}\n', "has -Infinity, which is not a JSON value"),
    "a float past its range": (b'{"a": 1e999}\n', "has the number 1e999, too large to store"),
    "a lone surrogate": (b'{"a": "\\udc00"}\n', "has a lone surrogate escape"),
    "a NUL escape": (b'{"a\\u0000": 1}\n', "contains a NUL character"),
}
GOOD_LINE = b'{"email": "a@x.io", "ts": "2024-01-01T00:00:00Z"}\n'


@pytest.mark.parametrize("case", list(BAD_LINES))
def test_ndjson_that_storage_cannot_keep_is_refused_on_upload_naming_the_line(
        client, auth, case):
    line, words = BAD_LINES[case]
    auth.login("operator")
    response = client.post(
        "/jobs/new/files/import_file/configure?authorization=none", headers=HX,
        data={"csrf_token": auth.csrf(), "stream": "s", "action": "upload",
              "file": (io.BytesIO(GOOD_LINE + line), "events.ndjson")},
        content_type="multipart/form-data")
    page = response.get_data(as_text=True)
    assert response.status_code in (200, 422)
    assert f"events.ndjson: line 2: {words}" in page


@pytest.mark.parametrize("case", ["nested deep", "a 5000-digit integer", "NaN",
                                  "a lone surrogate"])
def test_ndjson_that_storage_cannot_keep_fails_the_import_naming_the_line(
        client, auth, work, case):
    from tests.test_job_path import failed_with, import_stored_otherwise, refused_by_the_wizard

    # Past the first 100 lines, which are all the wizard reads to list the fields: Next
    # reads the whole file, and a file stored some other way fails the import.
    data = GOOD_LINE * 150 + BAD_LINES[case][0] + GOOD_LINE
    auth.login()
    assert f"events.ndjson cannot be imported, line 151: {BAD_LINES[case][1]}" in \
        refused_by_the_wizard(client, auth, data, "events.ndjson").replace("&#39;", "'")
    job = import_stored_otherwise(client, auth, data, "events.ndjson")
    work()
    assert failed_with(job) == f"events.ndjson, line 151: {BAD_LINES[case][1]}" or \
        failed_with(job).startswith(f"events.ndjson, line 151: {BAD_LINES[case][1]}")


@pytest.mark.parametrize("raw", ["nan", "NaN", "inf", "-Infinity", "+inf", "1e999",
                                 "-1e400"])
def test_non_finite_numbers_get_a_field_message_and_are_never_stored(client, auth, raw):
    from portal.models import Draft

    auth.login("operator")
    response = client.post("/jobs/new/faults/showcase/configure?authorization=none",
                           headers=HX, data={"csrf_token": auth.csrf(), "ratio": raw,
                                             "count": "2", "limits.daily": "1", "title": "t"})
    assert 'id="field-ratio-error"' in response.get_data(as_text=True)
    assert "Enter a finite number." in response.get_data(as_text=True)
    drafts = list(db.session.scalars(select(Draft)))
    assert drafts, "what was entered is kept as a draft, without the bad number"
    for draft in drafts:
        json.dumps(draft.config, allow_nan=False)  # raises if NaN or Infinity were kept


def test_a_list_of_numbers_says_which_line_is_not_finite():
    from portal.schemaform import coerce

    schema = {"type": "object", "properties": {
        "xs": {"type": "array", "items": {"type": "number"}},
        "ns": {"type": "array", "items": {"type": "integer"}}}}
    _, errors = coerce(schema, {"xs": "1.5\n1e999", "ns": "1\n" + "9" * 30})
    assert errors == {"xs": "Line 2: Enter a finite number.",
                      "ns": "Line 2: That number is too large: use at most 18 digits."}


def test_json_columns_refuse_nan_and_infinity(app, a_job):
    for value in (float("nan"), float("inf")):
        a_job.config = {"x": value}
        # Refused by the JSON serializer: wrapped by SQLAlchemy (SQLite) or raised as is by
        # psycopg's JSON dumper (PostgreSQL).
        with pytest.raises((StatementError, ValueError)):
            db.session.commit()
        db.session.rollback()
