"""The REST API /api/v2: tokens, roles, envelope, errors, jobs, auth, OpenAPI."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from sqlalchemy import select

from portal import tokens
from portal.datastore import write_messages
from portal.extensions import db
from portal.models import AccessToken, AuditEntry, Job, JobConfigVersion
from portal.models.types import utcnow
from providers.base import OutMessage
from tests.conftest import canary

ROLES = ("viewer", "operator", "admin")


def call(client, method, path, raw=None, bearer=True, **kwargs):
    headers = kwargs.pop("headers", {})
    if raw is not None:
        headers["Authorization"] = f"Bearer {raw}" if bearer else raw
    return getattr(client, method)(path, headers=headers, **kwargs)


def webhook_auth(client, raw, secret="s3cret-token-value"):
    return call(client, "post", "/api/v2/auth", raw, json={
        "provider": "webhook", "method": "bearer", "label": "Hook",
        "credentials": {"url": "https://hooks.example.com/in", "token": secret}})


def new_job(client, raw, auth_id, **extra):
    body = {"provider": "webhook", "job_type": "send_stream", "name": "Send",
            "authorization_id": auth_id, "config": {"stream": "events"}, **extra}
    return call(client, "post", "/api/v2/job?run_job=false", raw, json=body)


def envelope_ok(response, status):
    body = response.get_json()
    assert response.status_code == status, body
    assert set(body) >= {"data", "status", "message"} and body["status"] == status
    if status >= 400:
        assert set(body["error"]) == {"code", "message", "details"}
    return body


def test_both_authorization_forms_and_envelope(client, token_for):
    raw = token_for("viewer")
    for bearer in (True, False):
        body = envelope_ok(call(client, "get", "/api/v2/job", raw, bearer=bearer), 200)
        assert body["data"] == []


@pytest.mark.parametrize("case", ["missing", "unknown", "revoked", "expired"])
def test_bad_tokens_are_401_and_audited(client, token_for, case):
    raw = token_for("admin", days=7)
    token = db.session.scalar(select(AccessToken))
    if case == "revoked":
        tokens.revoke(token, by=token.created_by)
    elif case == "expired":
        token.expires_at = utcnow() - timedelta(seconds=1)
        db.session.commit()
    sent = {"missing": None, "unknown": "pt_nope", "revoked": raw, "expired": raw}[case]
    body = envelope_ok(call(client, "get", "/api/v2/job", sent), 401)
    assert body["error"]["code"] == "unauthorized"
    assert db.session.scalar(select(AuditEntry).where(AuditEntry.action == "api_refused"))


def test_refused_tokens_are_throttled_per_address(app, client):
    app.config["PORTAL_LOGIN_LIMIT_ADDRESS"] = "3 per minute"
    for _ in range(3):
        envelope_ok(call(client, "get", "/api/v2/job", "pt_guess"), 401)
    response = call(client, "get", "/api/v2/job", "pt_guess")
    envelope_ok(response, 429)
    assert int(response.headers["Retry-After"]) >= 1
    envelope_ok(call(client, "get", "/api/v2/job", "pt_guess"), 429)
    throttled = db.session.scalars(select(AuditEntry).where(
        AuditEntry.action == "api_throttled")).all()
    assert len(throttled) == 1  # once a wait, not once a request


def test_session_cookie_is_not_accepted(client, auth):
    auth.login("admin")
    envelope_ok(client.get("/api/v2/job"), 401)


def test_token_is_stored_as_hash_only(client, token_for):
    raw = token_for("viewer")
    token = db.session.scalar(select(AccessToken))
    assert raw not in (token.token_hash, token.prefix) and raw.startswith(token.prefix)


@pytest.mark.parametrize("role", ROLES)
def test_reads_for_every_role(client, token_for, role):
    raw = token_for(role)
    for path in ("/api/v2/job", "/api/v2/job/logs", "/api/v2/provider", "/api/v2/auth",
                 "/api/v2/stream", "/api/v2/openapi.json"):
        assert call(client, "get", path, raw).status_code == 200, path


@pytest.mark.parametrize("role", ROLES)
def test_writes_need_operator(client, token_for, role):
    raw = token_for(role)
    response = webhook_auth(client, raw)
    if role == "viewer":
        assert envelope_ok(response, 403)["error"]["code"] == "forbidden"
        assert envelope_ok(new_job(client, raw, 1), 403)
        return
    auth_id = envelope_ok(response, 201)["data"]["id"]
    job = envelope_ok(new_job(client, raw, auth_id), 201)["data"]
    assert job["status"] == "paused"  # run_job=false
    for action, status in (("resume", "running"), ("pause", "paused")):
        body = envelope_ok(call(client, "post", f"/api/v2/job/{job['id']}/{action}", raw), 200)
        assert body["data"]["status"] == status
    logs = envelope_ok(call(client, "get", f"/api/v2/job/{job['id']}/logs", raw), 200)["data"]
    assert {"added", "removed", "omitted", "user_email"} <= set(logs[0]["context"])
    assert logs[0]["context"]["user_email"] == "boss@example.com"
    envelope_ok(call(client, "post", f"/api/v2/job/{job['id']}/bounce", raw), 200)
    assert envelope_ok(call(client, "post", f"/api/v2/job/{job['id']}/resume", raw),
                       409)["error"]["code"] == "conflict"
    envelope_ok(call(client, "post", f"/api/v2/job/{job['id']}/kill", raw), 409)  # running
    envelope_ok(call(client, "post", f"/api/v2/job/{job['id']}/pause", raw), 200)
    envelope_ok(call(client, "post", f"/api/v2/job/{job['id']}/kill", raw), 200)
    assert db.session.get(Job, job["id"]) is None
    assert db.session.scalar(select(AuditEntry).where(AuditEntry.action == "deleted"))


def test_secrets_never_come_back(client, token_for):
    raw = token_for("operator")
    secret = canary("canary-webhook-token-4711")
    body = envelope_ok(webhook_auth(client, raw, secret), 201)
    assert body["data"]["public"]["set"] == ["token"]
    listed = call(client, "get", "/api/v2/auth", raw).get_data(as_text=True)
    assert secret not in listed


def test_patch_changes_only_fields_sent_and_put_resets(client, token_for):
    raw = token_for("admin")
    auth_id = envelope_ok(webhook_auth(client, raw), 201)["data"]["id"]
    job = envelope_ok(new_job(client, raw, auth_id, description="keep me",
                              config={"stream": "events", "batch_size": 7}), 201)["data"]
    patched = envelope_ok(call(client, "patch", f"/api/v2/job/{job['id']}", raw,
                               json={"name": "Renamed"}), 200)["data"]
    assert patched["name"] == "Renamed" and patched["description"] == "keep me"
    assert patched["config"]["batch_size"] == 7
    put = envelope_ok(call(client, "put", f"/api/v2/job/send_stream/{job['id']}", raw,
                           json={"name": "Whole", "authorization_id": auth_id,
                                 "config": {"stream": "events"}}), 200)["data"]
    assert put["description"] == "" and put["config"]["batch_size"] != 7
    versions = db.session.scalars(select(JobConfigVersion).where(
        JobConfigVersion.job_id == job["id"])).all()
    assert len(versions) == 3  # created, patched, put


def test_operator_cannot_edit_anothers_job(client, token_for, make_user):
    admin_raw = token_for("admin")
    auth_id = envelope_ok(webhook_auth(client, admin_raw), 201)["data"]["id"]
    job = envelope_ok(new_job(client, admin_raw, auth_id), 201)["data"]
    other = make_user("admin", "other@example.com")
    _, raw = tokens.create(name="op", description="", role="operator", days=None, by=other)
    envelope_ok(call(client, "patch", f"/api/v2/job/{job['id']}", raw, json={"name": "x"}), 403)


def test_lytics_shaped_script(client, token_for):
    """workflow + auth_ids, the workflow path, run_job=false, default schedule, filters."""
    raw = token_for("operator")
    auth_id = envelope_ok(webhook_auth(client, raw), 201)["data"]["id"]
    body = envelope_ok(call(client, "post", "/api/v2/job/send_stream?run_job=false", raw,
                            json={"name": "Lytics", "auth_ids": [auth_id],
                                  "config": {"stream": "events"}}), 201)["data"]
    assert body["workflow"] == "send_stream" and body["auth_ids"] == [auth_id]
    assert body["schedule"]["kind"] == "interval" and body["schedule"]["every_minutes"] == 15
    got = envelope_ok(call(client, "get", f"/api/v2/job/send_stream/{body['id']}", raw), 200)
    assert got["data"]["id"] == body["id"]
    envelope_ok(call(client, "get", f"/api/v2/job/other_flow/{body['id']}", raw), 404)
    listed = envelope_ok(call(client, "get", f"/api/v2/job?workflow=send_stream&auth_ids="
                                             f"{auth_id}", raw), 200)["data"]
    assert [job["id"] for job in listed] == [body["id"]]


def test_list_pages_with_next(client, token_for):
    raw = token_for("operator")
    auth_id = envelope_ok(webhook_auth(client, raw), 201)["data"]["id"]
    ids = [envelope_ok(new_job(client, raw, auth_id), 201)["data"]["id"] for _ in range(3)]
    first = envelope_ok(call(client, "get", "/api/v2/job?limit=2&show_all=true", raw), 200)
    second = envelope_ok(call(client, "get", f"/api/v2/job?limit=2&show_all=true&next="
                                             f"{first['next']}", raw), 200)
    assert [j["id"] for j in first["data"] + second["data"]] == sorted(ids, reverse=True)


@pytest.mark.parametrize("method,path,kwargs,status,code", [
    ("get", "/api/v2/job/999", {}, 404, "not_found"),
    ("get", "/api/v2/nothing", {}, 404, "not_found"),
    ("delete", "/api/v2/job", {}, 405, "method_not_allowed"),
    ("post", "/api/v2/job", {"data": "x", "content_type": "text/plain"}, 415,
     "unsupported_media_type"),
    ("post", "/api/v2/job", {"data": "{bad", "content_type": "application/json"}, 400,
     "invalid_json"),
    ("post", "/api/v2/job", {"json": ["a list"]}, 400, "invalid_json"),
    ("post", "/api/v2/job", {"json": {"nope": 1}}, 422, "invalid"),
    ("post", "/api/v2/job", {"json": {"name": 5}}, 422, "invalid"),
    ("post", "/api/v2/job", {"json": {"workflow": "no_such", "name": "x"}}, 422, "invalid"),
    ("post", "/api/v2/job", {"json": {"provider": "webhook", "job_type": "send_stream",
                                      "name": "x", "authorization_id": 12345}}, 422, "invalid"),
    ("get", "/api/v2/job?limit=0", {}, 400, "bad_parameter"),
    ("get", "/api/v2/job?limit=abc", {}, 400, "bad_parameter"),
    ("get", "/api/v2/job?show_all=maybe", {}, 400, "bad_parameter"),
    ("get", "/api/v2/job?status=bogus", {}, 400, "bad_parameter"),
    ("get", "/api/v2/job?auth_ids=x", {}, 400, "bad_parameter"),
    ("get", "/api/v2/job/logs?next=%C2%B2", {}, 400, "bad_parameter"),
    ("get", "/api/v2/job/99999999999999999999999", {}, 404, "not_found"),
    ("get", "/api/v2/job?q=%00", {}, 400, "bad_request"),
    ("post", "/api/v2/job/1/fly", {}, 404, "not_found"),
    ("post", "/api/v2/auth", {"json": {"provider": "webhook", "method": "bearer",
                                       "label": "x", "credentials": {"url": "ftp://x"}}},
     422, "invalid"),
])
def test_every_error_class(client, token_for, method, path, kwargs, status, code):
    raw = token_for("admin")
    body = envelope_ok(call(client, method, path, raw, **kwargs), status)
    assert body["error"]["code"] == code
    if code == "invalid":
        assert body["error"]["details"]


def test_invalid_body_names_fields(client, token_for):
    raw = token_for("operator")
    auth_id = envelope_ok(webhook_auth(client, raw), 201)["data"]["id"]
    body = envelope_ok(new_job(client, raw, auth_id, config={"stream": "events",
                                                             "batch_size": 0}), 422)
    assert "config.batch_size" in body["error"]["details"]


def test_openapi_lists_every_route_with_its_methods(app, client, token_for):
    raw = token_for("viewer")
    document = envelope = call(client, "get", "/api/v2/openapi.json", raw).get_json()
    assert envelope["openapi"].startswith("3.")
    for rule in app.url_map.iter_rules():
        if not rule.rule.startswith("/api/v2"):
            continue
        path = re.sub(r"<(?:[^:>]+:)?(\w+)>", r"{\1}", rule.rule)
        assert path in document["paths"], path
        for method in rule.methods - {"HEAD", "OPTIONS"}:
            assert method.lower() in document["paths"][path], (path, method)


def test_responses_match_documented_schemas(client, token_for):
    from portal import apischemas

    raw = token_for("operator")
    auth = envelope_ok(webhook_auth(client, raw), 201)
    assert not apischemas.AuthEnvelope().validate(auth)
    job = envelope_ok(new_job(client, raw, auth["data"]["id"]), 201)
    assert not apischemas.JobEnvelope().validate(job)
    for path, schema in (("/api/v2/job", apischemas.JobListEnvelope),
                         ("/api/v2/provider", apischemas.ProviderListEnvelope),
                         ("/api/v2/job/logs", apischemas.LogListEnvelope)):
        assert not schema().validate(call(client, "get", path, raw).get_json()), path


def test_admin_creates_and_revokes_a_token_in_the_ui(client, auth):
    from tests.conftest import csrf_token

    auth.login("admin")
    page = client.post("/admin/tokens", data={
        "name": "CI", "description": "", "role": "viewer", "days": "30",
        "csrf_token": csrf_token(client, "/admin/tokens")}).get_data(as_text=True)
    token = db.session.scalar(select(AccessToken))
    assert token.prefix in page and 'id="copy-token"' in page
    raw = re.search(r'id="token-value"[^>]*>([^<]+)<', page).group(1)
    assert call(client, "get", "/api/v2/job", raw).status_code == 200
    response = client.post(f"/admin/tokens/{token.id}/revoke",
                           data={"csrf_token": csrf_token(client, "/admin/tokens")})
    assert response.status_code == 303
    client.post("/logout", data={"csrf_token": csrf_token(client, "/admin/tokens")})
    assert call(client, "get", "/api/v2/job", raw).status_code == 401
    assert client.get("/admin/tokens").get_data(as_text=True).count(raw) == 0


def test_cli_prints_the_token_once(app, make_user):
    make_user("admin", "root@example.com")
    result = app.test_cli_runner().invoke(
        args=["tokens", "create", "deploy", "--role", "operator", "--days", "7"])
    assert result.exit_code == 0, result.output
    raw = result.stdout.strip()
    token = db.session.scalar(select(AccessToken))
    assert raw.startswith(token.prefix) and token.expires_at is not None


def test_config_secrets_are_write_only_and_sealed(client, token_for):
    raw = token_for("operator")
    secret = canary("canary-config-secret-8812")
    job = envelope_ok(call(client, "post", "/api/v2/job?run_job=false", raw, json={
        "provider": "faults", "job_type": "script", "name": "Secret",
        "config": {"secret_note": secret}}), 201)["data"]
    assert job["config"]["secret_note"] != secret
    stored = db.session.get(Job, job["id"]).config["secret_note"]
    assert secret not in str(stored)  # sealed by portal/configsecrets.py
    patched = call(client, "patch", f"/api/v2/job/{job['id']}", raw,
                   json={"description": "other"})
    assert patched.status_code == 200
    db.session.expire_all()
    assert db.session.get(Job, job["id"]).config["secret_note"] == stored  # kept
    for response in (patched, call(client, "get", f"/api/v2/job/{job['id']}", raw),
                     call(client, "get", f"/api/v2/job/{job['id']}/logs", raw)):
        assert secret not in response.get_data(as_text=True)


# (method, path, body, least role); {job} and {auth} are filled in.
MATRIX = [
    ("get", "/api/v2/job", None, "viewer"),
    ("get", "/api/v2/job/{job}", None, "viewer"),
    ("get", "/api/v2/job/send_stream/{job}", None, "viewer"),
    ("get", "/api/v2/job/{job}/logs", None, "viewer"),
    ("get", "/api/v2/job/logs", None, "viewer"),
    ("get", "/api/v2/provider", None, "viewer"),
    ("get", "/api/v2/auth", None, "viewer"),
    ("get", "/api/v2/stream", None, "viewer"),
    ("get", "/api/v2/openapi.json", None, "viewer"),
    ("post", "/api/v2/auth", "auth", "operator"),
    ("post", "/api/v2/job?run_job=false", "job", "operator"),
    ("post", "/api/v2/job/send_stream?run_job=false", "job", "operator"),
    ("put", "/api/v2/job/send_stream/{job}", "job", "operator"),
    ("patch", "/api/v2/job/{job}", "job", "operator"),
    ("post", "/api/v2/job/{job}/resume", None, "operator"),
    ("post", "/api/v2/job/{job}/pause", None, "operator"),
    ("post", "/api/v2/job/{job}/bounce", None, "operator"),
    ("post", "/api/v2/job/{job}/pause", None, "operator"),
    ("post", "/api/v2/job/{job}/kill", None, "operator"),
    ("post", "/api/v2/collect/json/events", "collect", "operator"),
    ("post", "/api/v2/collect/bulk/events", "bulk", "operator"),
    ("get", "/api/v2/import/{bulk}", None, "viewer"),
    ("get", "/api/v2/audience", None, "viewer"),
    ("get", "/api/v2/audience/{audience}", None, "viewer"),
    ("get", "/api/v2/audience/everyone", None, "viewer"),
    ("post", "/api/v2/audience", "audience", "operator"),
    ("get", "/api/v2/entity/user/email/a@example.com", None, "viewer"),
]


@pytest.mark.parametrize("role", ROLES)
def test_every_endpoint_for_every_role(app, client, token_for, make_user, role):
    """Each endpoint refuses the roles below its own (403) and serves its own and above.
    The job belongs to the admin every token acts for, so an operator may change it."""
    admin_raw = token_for("admin")
    raw = admin_raw if role == "admin" else token_for(role)
    auth_id = envelope_ok(webhook_auth(client, admin_raw), 201)["data"]["id"]
    job_id = envelope_ok(new_job(client, admin_raw, auth_id), 201)["data"]["id"]
    bodies = {"auth": {"provider": "webhook", "method": "basic", "label": "B", "credentials": {
        "url": "https://b.example.com", "username": "u", "password": "pw-1234"}},
        "job": {"provider": "webhook", "job_type": "send_stream", "name": "M",
                "authorization_id": auth_id, "config": {"stream": "events"}},
        "collect": {"email": "a@example.com"},
        "audience": {"name": f"By {role}", "conditions": [
            {"field": "email", "op": "contains", "value": "@"}]}}
    audience_id = envelope_ok(call(client, "post", "/api/v2/audience", admin_raw, json={
        "name": "Everyone", "conditions": [{"field": "email", "op": "exists"}]}),
        201)["data"]["id"]
    write_messages("events", [OutMessage("a", utcnow(), {"email": "a@example.com"})],
                   source="test")
    db.session.commit()
    bulk_id = call(client, "post", "/api/v2/collect/bulk/events", admin_raw,
                   data="email\na@example.com\n", content_type="text/csv").get_json()["data"]["id"]
    order = ("viewer", "operator", "admin")
    assert {rule.rule for rule in app.url_map.iter_rules()
            if rule.rule.startswith("/api/v2")} <= {
        "/api/v2/job", "/api/v2/job/<int:job_id>", "/api/v2/job/<workflow>/<int:job_id>",
        "/api/v2/job/<int:job_id>/logs", "/api/v2/job/logs", "/api/v2/provider",
        "/api/v2/auth", "/api/v2/stream", "/api/v2/openapi.json", "/api/v2/job/<workflow>",
        "/api/v2/collect/json/<stream>", "/api/v2/collect/bulk/<stream>",
        "/api/v2/import/<int:import_id>", "/api/v2/audience", "/api/v2/audience/<id_or_slug>",
        "/api/v2/entity/user/<field>/<path:value>",
        *(f"/api/v2/job/<int:job_id>/{action}" for action in ("pause", "resume", "bounce",
                                                              "kill"))}
    for method, path, body, least in MATRIX:
        path = path.format(job=job_id, bulk=bulk_id, audience=audience_id)
        kwargs = ({"data": "email\nb@example.com\n", "content_type": "text/csv"}
                  if body == "bulk" else {"json": bodies[body]} if body else {})
        response = call(client, method, path, raw, **kwargs)
        if order.index(role) < order.index(least):
            assert response.status_code == 403, (method, path)
        else:
            assert response.status_code in (200, 201, 202), (method, path, response.get_json())
        assert "Set-Cookie" not in response.headers


def test_a_disabled_creator_ends_the_token(client, token_for):
    raw = token_for("admin")
    token = db.session.scalar(select(AccessToken))
    token.created_by.active = False
    db.session.commit()
    envelope_ok(call(client, "get", "/api/v2/job", raw), 401)


@pytest.mark.parametrize("case", ["revoked", "expired"])
def test_every_endpoint_refuses_a_revoked_or_expired_token(client, token_for, case):
    admin_raw = token_for("admin")
    auth_id = envelope_ok(webhook_auth(client, admin_raw), 201)["data"]["id"]
    job_id = envelope_ok(new_job(client, admin_raw, auth_id), 201)["data"]["id"]
    raw = token_for("admin", days=30)
    token = db.session.scalars(select(AccessToken).order_by(AccessToken.id.desc())).first()
    if case == "revoked":
        tokens.revoke(token, by=token.created_by)
    else:
        token.expires_at = utcnow() - timedelta(minutes=1)
        db.session.commit()
    for method, path, body, _ in MATRIX:
        kwargs = {"json": {"name": "x"}} if body else {}
        response = call(client, method, path.format(job=job_id, bulk=1, audience=1), raw,
                        **kwargs)
        assert envelope_ok(response, 401)["message"] == f"The API token is {case}."
    assert db.session.get(Job, job_id) is not None  # kill did nothing


def test_405_names_the_allowed_methods(client, token_for):
    response = call(client, "delete", "/api/v2/job/1", token_for("viewer"))
    envelope_ok(response, 405)
    assert set(response.headers["Allow"].split(", ")) >= {"GET", "PATCH"}
