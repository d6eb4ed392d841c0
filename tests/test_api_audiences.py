"""/api/v2/audience and /api/v2/entity/user: shapes, checks with details per field path,
lookups by id and slug, and a profile with its fields' times, sources and audiences."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import select

from portal import apischemas
from portal.datastore import write_messages
from portal.extensions import db
from portal.models import Audience, AuditEntry
from providers.base import OutMessage
from tests.test_api import call, envelope_ok

T0 = datetime(2024, 3, 1, 12, tzinfo=UTC)


def people() -> None:
    write_messages("crm", [
        OutMessage("1", T0, {"email": "Ann@X.io", "user_id": 7, "plan": "pro", "age": 41}),
        OutMessage("2", T0.replace(hour=13), {"email": "ann@x.io", "city": "Oslo"}),
        OutMessage("3", T0, {"email": "bob@x.io", "plan": "free", "age": 19})],
        source="job:4")
    db.session.commit()


PROS = {"name": "Pros", "description": "Paying", "match": "all", "conditions": [
    {"field": "plan", "op": "equals", "value": "PRO"}, {"field": "age", "op": "gt", "value": 30}]}


def test_create_list_and_get_by_id_or_slug(client, token_for):
    people()
    raw = token_for("operator")
    created = envelope_ok(call(client, "post", "/api/v2/audience", raw, json=PROS), 201)
    assert not apischemas.AudienceEnvelope().validate(created)
    data = created["data"]
    assert (data["slug"], data["size"], data["match"]) == ("pros", 1, "all")
    assert data["conditions"][1] == {"field": "age", "op": "gt", "value": 30}
    assert data["conditions"][0]["value"] == "PRO"  # as sent; matched without case
    for key in (str(data["id"]), "pros"):
        got = envelope_ok(call(client, "get", f"/api/v2/audience/{key}", raw), 200)["data"]
        assert got == data
    envelope_ok(call(client, "post", "/api/v2/audience", raw, json={
        "name": "Everyone", "slug": "all-people", "match": "any",
        "conditions": [{"field": "email", "op": "exists"}]}), 201)
    listed = envelope_ok(call(client, "get", "/api/v2/audience?limit=1", raw), 200)
    assert [a["slug"] for a in listed["data"]] == ["pros"] and listed["next"]
    rest = envelope_ok(call(client, "get", f"/api/v2/audience?next={listed['next']}", raw),
                       200)
    assert [(a["slug"], a["size"]) for a in rest["data"]] == [("all-people", 2)]
    assert rest["next"] is None
    assert not apischemas.AudienceListEnvelope().validate(rest)
    entry = db.session.scalar(select(AuditEntry).where(AuditEntry.action == "audience_created"))
    assert entry.actor == "boss@example.com"  # the token acts for the admin who made it
    for missing in ("999", "nope", "x" * 65, str(2**70)):
        assert envelope_ok(call(client, "get", f"/api/v2/audience/{missing}", raw),
                           404)["error"]["code"] == "not_found"


def test_mistakes_come_back_as_422_with_field_paths(client, token_for):
    raw = token_for("operator")
    envelope_ok(call(client, "post", "/api/v2/audience", raw, json=PROS), 201)
    cases = [
        ({**PROS, "name": "PROS"}, "name", "already an audience"),
        ({"name": "X", "slug": "pros"}, "slug", "taken"),
        ({"name": "X", "slug": "Big One"}, "slug", "lower-case"),
        ({"name": "X", "conditions": [{"field": "a", "op": "in", "value": []}]},
         "conditions.0.value", "non-empty list"),
        ({"name": "X", "conditions": [{"field": "a", "op": "gt", "value": "later"}]},
         "conditions.0.value", "number"),
        ({"name": "X", "conditions": [{"field": "", "op": "exists"}]},
         "conditions.0.field", "profile field"),
        ({"name": "X", "conditions": [{"field": "a", "op": "near", "value": 1}]},
         "conditions.0.op", "Unknown operator"),
        ({"name": "X", "conditions": [{"field": "a", "op": "exists", "extra": 1}]},
         "conditions.0.extra", "Unknown field"),
        ({"name": "X", "match": "most"}, "match", "Must be one of"),
        ({"name": "X", "conditions": [{"field": "a", "op": "exists"}] * 51}, "conditions",
         "Longer than maximum"),
        ({"conditions": []}, "name", "required"),
        ({"name": 5}, "name", "Not a valid string"),
    ]
    for body, where, words in cases:
        response = call(client, "post", "/api/v2/audience", raw, json=body)
        details = envelope_ok(response, 422)["error"]["details"]
        assert words in details.get(where, ""), (body, details)
    assert db.session.scalar(select(Audience).where(Audience.name == "X")) is None
    assert envelope_ok(call(client, "post", "/api/v2/audience", raw, data="name=x",
                            content_type="application/x-www-form-urlencoded"), 415)


def test_entity_user_shows_fields_with_their_time_source_and_audiences(client, token_for):
    people()
    raw = token_for("viewer")
    admin = token_for("admin")
    envelope_ok(call(client, "post", "/api/v2/audience", admin, json=PROS), 201)
    body = envelope_ok(call(client, "get", "/api/v2/entity/user/email/ANN@x.io ", raw), 200)
    assert not apischemas.EntityEnvelope().validate(body)
    data = body["data"]
    assert data["identities"] == {"email": ["ann@x.io"], "user_id": ["7"]}
    assert data["fields"] == {"email": "ann@x.io", "user_id": 7, "plan": "pro", "age": 41,
                              "city": "Oslo"}
    assert data["fields_meta"]["city"] == {"event_time": "2024-03-01T13:00:00+00:00",
                                           "stream": "crm", "source": "job:4",
                                           "message_id": data["fields_meta"]["city"][
                                               "message_id"]}
    assert data["fields_meta"]["plan"]["event_time"] == "2024-03-01T12:00:00+00:00"
    assert data["audiences"] == ["pros"]
    by_id = envelope_ok(call(client, "get", "/api/v2/entity/user/user_id/7", raw), 200)
    assert by_id["data"]["id"] == data["id"]
    bob = envelope_ok(call(client, "get", "/api/v2/entity/user/email/bob@x.io", raw), 200)
    assert bob["data"]["audiences"] == []
    missing = envelope_ok(call(client, "get", "/api/v2/entity/user/email/zed@x.io", raw), 404)
    assert missing["error"]["code"] == "not_found"
    wrong = envelope_ok(call(client, "get", "/api/v2/entity/user/plan/pro", raw), 400)
    assert "email, user_id" in wrong["message"] and wrong["error"]["code"] == "bad_parameter"
