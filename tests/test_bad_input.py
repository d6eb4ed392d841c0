"""Junk in URLs and forms gets a clear answer, never a 500."""

from __future__ import annotations

import re
from urllib.parse import quote

import pytest
from werkzeug.datastructures import ImmutableMultiDict

from portal.extensions import db
from portal.jobs import create_job
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
])
def test_junk_urls_get_an_answer_not_a_500(client, auth, a_job, path):
    auth.login("admin")
    for headers in ({}, HX):
        response = client.get(path.format(id=a_job.id), headers=headers)
        assert response.status_code < 500, (path, response.status_code)
        response.get_data()


@pytest.mark.parametrize("path,data", [
    ("/jobs/bulk", {"action": "explode"}),
    ("/jobs/bulk", {"action": "pause", "ids": ["x", "", "-1"]}),
    ("/jobs/bulk/confirm", {}),
    ("/jobs/{id}/name", {}),
    ("/jobs/{id}/description", {"value": "x" * 5000}),
    ("/jobs/{id}/delete", {}),
    ("/vault/1/credentials", {"version": "abc"}),
    ("/vault/new/webhook/bearer", {"label": "x", "cred-url": "ftp://x", "cred-token": ""}),
    ("/jobs/new/faults/showcase/configure?authorization=none", {"count": "1e999",
                                                               "limits.daily": "-5"}),
    ("/jobs/new/drafts/1/schedule", {"name": ""}),
])
def test_junk_forms_get_an_answer_not_a_500(client, auth, a_job, path, data):
    auth.login("admin")
    response = client.post(path.format(id=a_job.id), headers=HX,
                           data={"csrf_token": auth.csrf(), **data})
    assert response.status_code < 500, (path, response.status_code)


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
    "other scripts' digits": "١٢٣",
    "negative": "-1",
    "zero": "0",
    "decimal": "1.5",
    "exponent": "1e999",
    "nan": "nan",
    "words": "abc",
    "blank": "",
    "5000 digits": "1" * 5000,
    "a json list": "[1, 2]",
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
        "name": "A name", "description": "Words", "label": "A label", "state": "s",
        "code": "c", "next": "/jobs/new/", "category": "Files", "completed": "1",
        "count": "3", "ratio": "0.5", "limits.daily": "5", "title": "t",
        "stream": "s", "timestamp_field": "ts", "delimiter": ",",
        "retry-backoff_base_seconds": "60", "retry-backoff_cap_seconds": "600",
        "retry-failure_window_hours": "10", "schedule-kind": "every",
        "schedule-every_minutes": "60", "cred-url": "http://127.0.0.1:9/hook",
        "cred-token": "t", "cred-api_key": "k", "email": "nobody@example.com",
        "password": "x", "create_paused": "on",
    }


def _world(owner, admin, world: dict[str, int]) -> dict[str, int]:
    """The rows the routes act on, made again when a request deleted one."""
    from portal import vault
    from portal.datastore import store_upload, write_messages
    from portal.models import Authorization, Draft, Job, Upload
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
    world["admin"] = admin.id
    db.session.commit()
    return world


# Path values by argument name; the wizard's and the Vault's provider routes take one
# provider each that needs no network (faults has no connection test, webhook gets no
# credentials that pass).
PATH_VALUES = {"field": "name", "action": "pause", "fmt": "ndjson", "name": "s",
               "filename": "portal.css", "method_key": "bearer"}
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
    values = {"job_id": world["job"], "draft_id": world["draft"],
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
        for path, params, where in attempts:
            if method == "POST":  # it may have deleted what the next one needs
                _world(owner, admin, world)
            response = _send(client, method, path, params, csrf)
            if response.status_code >= 500:
                failures.append(f"{role} {method} {rule.rule} {where}={junk_class}: "
                                f"{response.status_code}")
    return failures
