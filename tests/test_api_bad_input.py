"""No body, parameter or header the API can be sent gets a 500: each gets a 4xx envelope."""

from __future__ import annotations

import json

import pytest

from tests.test_api import call, envelope_ok, new_job, webhook_auth

BASE = {"provider": "webhook", "job_type": "send_stream", "name": "Send",
        "config": {"stream": "events"}}
BODIES = [
    {**BASE, "name": "a\x00b"},
    {**BASE, "name": "\ud800"},
    {**BASE, "name": ""},
    {**BASE, "name": "x" * 201},
    {**BASE, "description": "\x00"},
    {**BASE, "config": {"stream": "ev\x00ents"}},
    {**BASE, "config": {"stream": "\udfff"}},
    {**BASE, "config": {"stream": "events", "batch_size": 2**80}},
    {**BASE, "config": {"stream": "events", "batch_size": "ten"}},
    {**BASE, "config": {"stream": "events", "batch_size": 1.5}},
    {**BASE, "config": {"stream": "events", "extra": 1}},
    {**BASE, "config": {"stream": ["events"]}},
    {**BASE, "config": None},
    {**BASE, "config": "text"},
    {**BASE, "schedule": {"kind": "cron", "cron": "not cron"}},
    {**BASE, "schedule": {"kind": "interval", "every_minutes": "abc"}},
    {**BASE, "schedule": {"kind": "interval", "every_minutes": -5}},
    {**BASE, "schedule": {"kind": "interval", "every_minutes": 2**70}},
    {**BASE, "schedule": {"kind": "cron", "cron": "* * * * *", "timezone": "Mars/Olympus"}},
    {**BASE, "schedule": {"kind": "nope"}},
    {**BASE, "schedule": {"quiet_start": "25:99", "quiet_end": "x"}},
    {**BASE, "schedule": {"kind": None}},
    {**BASE, "schedule": []},
    {**BASE, "retry_policy": {"max_retries": "x"}},
    {**BASE, "retry_policy": {"bogus": 1}},
    {**BASE, "retry_policy": {"failure_window_hours": -1}},
    {**BASE, "authorization_id": 2**63},
    {**BASE, "authorization_id": "1"},
    {**BASE, "authorization_id": True},
    {**BASE, "auth_ids": [1, 2]},
    {**BASE, "auth_ids": ["a"]},
    {**BASE, "auth_ids": "1"},
    {**BASE, "provider": "files", "job_type": "import_file",
     "config": {"upload_id": 1, "stream": "x"}},
    {**BASE, "provider": "files", "job_type": "import_file",
     "config": {"upload_id": 2**70, "stream": "x"}},
    {**BASE, "provider": "nope"},
    {**BASE, "provider": None},
    {**BASE, "config": {"stream": {"deep": [[[["\x00"]]]]}}},
    {**BASE, "config": {"st\x00ream": "events"}},
    {"workflow": 5},
    {"name": "x", "job_type": "other"},
]


@pytest.mark.parametrize("body", BODIES, ids=[str(i) for i in range(len(BODIES))])
@pytest.mark.parametrize("how", ["post", "patch", "put"])
def test_bad_job_bodies(client, token_for, body, how):
    raw = token_for("admin")
    auth_id = envelope_ok(webhook_auth(client, raw), 201)["data"]["id"]
    if how == "post":
        response = call(client, "post", "/api/v2/job", raw, data=json.dumps(
            {"authorization_id": auth_id, **body}), content_type="application/json")
    else:
        job = envelope_ok(new_job(client, raw, auth_id), 201)["data"]
        path = (f"/api/v2/job/{job['id']}" if how == "patch"
                else f"/api/v2/job/send_stream/{job['id']}")
        response = call(client, how, path, raw, data=json.dumps(body),
                        content_type="application/json")
    assert 400 <= response.status_code < 500, response.get_data(as_text=True)
    envelope_ok(response, response.status_code)


RAW_BODIES = ["[" * 100000, "{}" * 3, '{"name": "\\ud800"}', "null", "1e999999", "",
              '{"name": NaN}', "\xff\xfe"]


@pytest.mark.parametrize("text", RAW_BODIES, ids=[str(i) for i in range(len(RAW_BODIES))])
def test_unparseable_bodies(client, token_for, text):
    raw = token_for("admin")
    response = call(client, "post", "/api/v2/job", raw, data=text.encode("utf-8", "surrogatepass"),
                    content_type="application/json")
    assert 400 <= response.status_code < 500


@pytest.mark.parametrize("header", ["Bearer", "Bearer ", "Basic abc", "\x00", "Bearer \ud800",
                                    "x" * 10000, "Bearer pt_" + "a" * 43])
def test_odd_authorization_headers(client, header):
    response = client.get("/api/v2/job", headers={
        "Authorization": header.encode("utf-8", "surrogatepass").decode("latin-1")})
    assert response.status_code == 401


BAD_AUTH = [
    {"provider": "webhook", "method": "bearer", "label": "x"},
    {"provider": "webhook", "method": "bearer", "label": "", "credentials": {
        "url": "https://a.example", "token": "t"}},
    {"provider": "webhook", "method": "nope", "label": "x"},
    {"provider": "nope", "method": "bearer", "label": "x"},
    {"provider": "webhook", "method": "bearer", "label": "x\x00", "credentials": {}},
    {"provider": "webhook", "method": "bearer", "label": "x", "credentials": {
        "url": "https://a.example", "token": 5}},
    {"provider": "webhook", "method": "bearer", "label": "x", "credentials": {
        "url": "https://a.example", "token": "\x00"}},
    {"provider": "webhook", "method": "bearer", "label": "x", "credentials": "s"},
    {"provider": "mailchimp", "method": "oauth2", "label": "x"},
]


@pytest.mark.parametrize("body", BAD_AUTH, ids=[str(i) for i in range(len(BAD_AUTH))])
def test_bad_auth_bodies(client, token_for, body):
    raw = token_for("operator")
    response = call(client, "post", "/api/v2/auth", raw, json=body)
    assert response.status_code in (400, 422), response.get_data(as_text=True)
    envelope_ok(response, response.status_code)


JUNK = [str(2**70), str(2**63), "²³", "-1", "0", "1e999", "nan", "abc", "", "1" * 5000,
        "\u202eabc", "%00", "true,false", "[]"]
QUERY = ("limit", "next", "status", "q", "show_all", "show_completed", "auth_ids", "workflow",
         "run_job", "timestamp_field", "dryrun", "delimiter", "droperrors")


def test_every_api_route_takes_junk_in_every_id_and_parameter(app, client, token_for):
    import re

    raw = token_for("admin")
    auth_id = envelope_ok(webhook_auth(client, raw), 201)["data"]["id"]
    failures = []
    for rule in app.url_map.iter_rules():
        if not rule.rule.startswith("/api/v2"):
            continue
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            job_id = envelope_ok(new_job(client, raw, auth_id), 201)["data"]["id"]
            good = rule.rule.replace("<int:job_id>", str(job_id)).replace(
                "<workflow>", "send_stream").replace("<stream>", "events").replace(
                "<int:import_id>", "1").replace("<id_or_slug>", "1").replace(
                "<field>", "email").replace("<path:value>", "a@x.io")
            attempts = [(good, {name: junk}) for name in QUERY for junk in JUNK]
            if "<int:job_id>" in rule.rule:
                attempts += [(rule.rule.replace("<int:job_id>", junk or "x").replace(
                    "<workflow>", "send_stream"), {}) for junk in JUNK]
            for part in ("<int:import_id>", "<stream>", "<id_or_slug>"):
                if part in rule.rule:
                    attempts += [(rule.rule.replace(part, junk or "x"), {}) for junk in JUNK]
            if "<field>" in rule.rule:
                attempts += [(rule.rule.replace("<field>", junk or "x").replace(
                    "<path:value>", "a@x.io"), {}) for junk in JUNK]
                attempts += [(rule.rule.replace("<field>", "email").replace(
                    "<path:value>", junk or "x"), {}) for junk in JUNK]
            if "<workflow>" in rule.rule:
                attempts += [(re.sub("<workflow>", junk or "x", rule.rule).replace(
                    "<int:job_id>", str(job_id)), {}) for junk in JUNK]
            for path, query in attempts:
                response = call(client, method.lower(), path, raw, query_string=query,
                                json={"name": "n"} if method in ("POST", "PUT", "PATCH")
                                else None)
                if response.status_code >= 500 or not response.is_json:
                    failures.append(f"{method} {path} {query}: {response.status_code}")
    assert not failures, "\n".join(failures[:20])
