"""Audiences: every operator's meaning, all/any, no conditions, check()'s messages, the
export side's members() and delete's refusal, on profiles built by the real write path
(write_messages) in the test database (SQLite, or PostgreSQL with TEST_DATABASE_URL)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from portal import audiences, profiles
from portal.datastore import write_messages
from portal.extensions import db
from portal.models import AuditEntry, Job, Profile
from providers.base import OutMessage

T0 = datetime(2024, 1, 1, tzinfo=UTC)
_keys = iter(range(10**9))


def people(*payloads: dict) -> None:
    """One message per payload (each with its own email), one batch, committed."""
    write_messages("people", [OutMessage(f"k{next(_keys)}", T0 + timedelta(minutes=n), payload)
                              for n, payload in enumerate(payloads)], source="job:1")
    db.session.commit()


def who(match: str, *conditions: tuple) -> set[str]:
    """The emails of the members of an audience with these (field, op, value) conditions,
    after check() cleaned them (as every caller does); count() agrees."""
    cleaned, errors = audiences.check({
        "name": "t", "match": match,
        "conditions": [{"field": f, "op": op, "value": value} for f, op, value in conditions]})
    assert errors == {}
    ids = set(db.session.scalars(select(Profile.id).where(
        audiences.member_filter(match, cleaned["conditions"]))))
    assert audiences.count(match, cleaned["conditions"]) == len(ids)
    emails = {member.identities[0][1] for member in audiences.preview(
        match, cleaned["conditions"], limit=1000)}
    assert len(emails) == len(ids)
    return {email.split("@")[0] for email in emails}


def one(field: str, op: str, value=None) -> set[str]:
    return who("all", (field, op, value))


def test_equals_is_trimmed_case_insensitive_and_numbers_equal_their_text(app):
    people({"email": "a@x.io", "plan": "Pro", "age": 42, "vip": True},
           {"email": "b@x.io", "plan": "  pro  ", "age": "42", "vip": "TRUE"},
           {"email": "c@x.io", "plan": "professional", "age": 42.0, "vip": False},
           {"email": "d@x.io", "plan": None, "age": " 42.50 ", "vip": "yes"},
           {"email": "e@x.io", "age": [42], "vip": None},
           {"email": "f@x.io", "plan": ["pro"], "age": {"n": 42}})
    assert one("plan", "equals", "PRO ") == {"a", "b"}
    assert one("age", "equals", 42) == {"a", "b", "c"}
    assert one("age", "equals", "42") == {"a", "b", "c"}
    # Text against text compares as text; a number against numeric text, as numbers.
    assert one("age", "equals", "42.0") == {"a", "c"}
    assert one("age", "equals", "042") == {"a", "c"}
    assert one("age", "equals", 42.5) == {"d"}
    assert one("vip", "equals", True) == {"a", "b"}
    assert one("vip", "equals", "true") == {"a", "b"}
    assert one("vip", "equals", "false") == {"c"}
    assert one("missing", "equals", "x") == set()


def test_equals_folds_case_beyond_ascii_on_every_database(app):
    people({"email": "a@x.io", "city": "ÅLESUND"}, {"email": "b@x.io", "city": "Ålesund"},
           {"email": "c@x.io", "city": "Alesund"})
    assert one("city", "equals", "ålesund") == {"a", "b"}
    assert one("city", "contains", "ÅLE") == {"a", "b"}


def test_contains_is_a_substring_of_text_or_an_element_of_a_list(app):
    people({"email": "a@x.io", "tags": ["News", "sale"], "bio": "Loves 100% cotton"},
           {"email": "b@x.io", "tags": "newsletter", "bio": "loves_wool"},
           {"email": "c@x.io", "tags": ["newsletter"], "bio": 100},
           {"email": "d@x.io", "tags": [1, 2, "3"], "bio": None},
           {"email": "e@x.io", "tags": {"news": True}})
    assert one("tags", "contains", "news") == {"a", "b"}  # a list element equals it
    assert one("tags", "contains", "SALE") == {"a"}
    assert one("tags", "contains", 3) == {"d"}
    assert one("tags", "contains", "2") == {"d"}
    assert one("bio", "contains", "100%") == {"a"}  # % and _ are plain characters
    assert one("bio", "contains", "s_w") == {"b"}
    assert one("bio", "contains", "1") == {"a"}  # a number attribute holds no text


def test_exists_means_present_and_neither_null_nor_blank(app):
    people({"email": "a@x.io", "phone": "555"}, {"email": "b@x.io", "phone": ""},
           {"email": "c@x.io", "phone": None}, {"email": "d@x.io"},
           {"email": "e@x.io", "phone": 0}, {"email": "f@x.io", "phone": "   "},
           {"email": "g@x.io", "phone": False}, {"email": "h@x.io", "phone": []})
    assert one("phone", "exists") == {"a", "e", "g", "h"}


def test_gt_lt_with_numbers_compare_numbers_and_numeric_text_only(app):
    people({"email": "a@x.io", "score": 10}, {"email": "b@x.io", "score": "9.5"},
           {"email": "c@x.io", "score": " 100 "}, {"email": "d@x.io", "score": "abc"},
           {"email": "e@x.io", "score": "1e3"}, {"email": "f@x.io", "score": True},
           {"email": "g@x.io", "score": None}, {"email": "h@x.io", "score": -3},
           {"email": "i@x.io", "score": "2024-01-01"}, {"email": "j@x.io", "score": "1.2.3"},
           {"email": "k@x.io", "score": ".5"}, {"email": "l@x.io", "score": [50]})
    assert one("score", "gt", 9.5) == {"a", "c"}  # "10" > "9.5" as numbers, not as text
    assert one("score", "gt", "9") == {"a", "b", "c"}  # a numeric value is a number
    assert one("score", "lt", 1) == {"h", "k"}
    assert one("score", "lt", 0) == {"h"}
    assert one("score", "gt", -1000) == {"a", "b", "c", "h", "k"}


def test_gt_lt_with_dates_compare_instants_whatever_the_offset(app):
    people({"email": "a@x.io", "seen": "2024-05-01T10:00:00Z"},
           {"email": "b@x.io", "seen": "2024-05-01T12:30:00+02:00"},  # 10:30Z
           {"email": "c@x.io", "seen": "2024-05-01T09:00:00-02:00"},  # 11:00Z
           {"email": "d@x.io", "seen": "2024-05-01"},                 # 00:00Z
           {"email": "e@x.io", "seen": "2024-05-01 10:00:00.250"},    # 10:00:00.25Z
           {"email": "f@x.io", "seen": "not a date"},
           {"email": "g@x.io", "seen": 20240501},
           {"email": "h@x.io", "seen": "2024-02-30T00:00:00Z"},       # no such day
           {"email": "i@x.io", "seen": "2024-02-29T23:59:59.999999Z"},
           {"email": "j@x.io", "seen": "2023-05-01T25:00:00Z"})       # no such hour
    assert one("seen", "gt", "2024-05-01T10:00:00Z") == {"b", "c", "e"}
    assert one("seen", "gt", "2024-05-01T10:00:00.250000+00:00") == {"b", "c"}
    assert one("seen", "lt", "2024-05-01T12:00:00+01:00") == {"a", "b", "d", "e", "i"}
    assert one("seen", "lt", "2024-05-01") == {"i"}
    assert one("seen", "gt", "2024-03-01") == {"a", "b", "c", "d", "e"}
    assert one("seen", "lt", "2024-02-29T23:59:00-00:01") == {"i"}  # = 2024-03-01T00:00Z
    assert one("seen", "lt", "2024-02-29T23:59:59.999999Z") == set()


def test_in_equals_any_of_the_list(app):
    people({"email": "a@x.io", "country": "no"}, {"email": "b@x.io", "country": "SE "},
           {"email": "c@x.io", "country": "DK"}, {"email": "d@x.io", "country": 46},
           {"email": "e@x.io"})
    assert one("country", "in", ["NO", "se", "46"]) == {"a", "b", "d"}
    people({"email": "f@x.io", "flag": True}, {"email": "g@x.io", "flag": 1},
           {"email": "h@x.io", "flag": "1"})
    assert one("flag", "in", [1, True]) == {"f", "g", "h"}  # 1 and true both kept
    assert one("flag", "in", [True]) == {"f"}


def test_all_needs_every_condition_any_one_and_no_conditions_nobody(app):
    people({"email": "a@x.io", "plan": "pro", "age": 30},
           {"email": "b@x.io", "plan": "pro", "age": 20},
           {"email": "c@x.io", "plan": "free", "age": 40}, {"email": "d@x.io"})
    assert who("all", ("plan", "equals", "pro"), ("age", "gt", 25)) == {"a"}
    assert who("any", ("plan", "equals", "pro"), ("age", "gt", 25)) == {"a", "b", "c"}
    assert who("all") == set() and who("any") == set()
    assert audiences.count("all", []) == 0 and audiences.preview("any", []) == []


def test_members_page_in_profile_order_with_the_identifier_as_text(app, make_user):
    people({"email": "a@x.io", "plan": "pro", "crm_id": 17},
           {"email": "b@x.io", "plan": "free"},
           {"email": "c@x.io", "plan": "pro", "crm_id": None},
           {"email": "d@x.io", "plan": "pro", "crm_id": " X-9 "},
           {"email": "e@x.io", "plan": "pro", "crm_id": True})
    cleaned, errors = audiences.check({"name": "Pros", "conditions": [
        {"field": "plan", "op": "equals", "value": "pro"}]})
    assert errors == {}
    audience = audiences.create(cleaned, by=make_user("operator"))
    db.session.commit()
    ids = {email: profiles.find("email", email).id
           for email in ("a@x.io", "b@x.io", "c@x.io", "d@x.io", "e@x.io")}
    first = audiences.members(audience, identifier="crm_id", limit=2)
    assert first == [(ids["a@x.io"], "17"), (ids["c@x.io"], None)]
    rest = audiences.members(audience, identifier="crm_id", after_profile_id=first[-1][0])
    assert rest == [(ids["d@x.io"], "X-9"), (ids["e@x.io"], "true")]
    assert audiences.members(audience, identifier="email", after_profile_id=ids["d@x.io"]) == [
        (ids["e@x.io"], "e@x.io")]
    assert [a.slug for a in audiences.audiences_of(ids["a@x.io"])] == ["pros"]
    assert audiences.audiences_of(ids["b@x.io"]) == []


def test_check_says_what_is_wrong_with_each_field(app, make_user):
    cleaned, _ = audiences.check({"name": "Taken One", "conditions": []})
    audiences.create(cleaned, by=make_user("operator"))
    db.session.commit()
    _, errors = audiences.check({
        "name": "taken one", "slug": "taken-one", "match": "most",
        "conditions": [
            {"field": "plan", "op": "like", "value": "x"},
            {"field": " ", "op": "equals", "value": "x"},
            {"field": "c", "op": "in", "value": []},
            {"field": "c", "op": "in", "value": "NO,SE"},
            {"field": "n", "op": "gt", "value": "soon"},
            {"field": "n", "op": "lt", "value": "2024-02-30"},
            {"field": "n", "op": "equals", "value": ""},
            {"field": "n", "op": "equals", "value": {"a": 1}},
            {"field": "n", "op": "in", "value": ["a", None]},
            "plan = pro",
            {"field": "n", "op": "", "value": 1},
        ]})
    assert "already an audience called" in errors["name"]
    assert "taken" in errors["slug"]
    assert "“all”" in errors["match"]
    assert "Unknown operator 'like'" in errors["conditions.0.op"]
    assert "Name the profile field" in errors["conditions.1.field"]
    assert "non-empty list" in errors["conditions.2.value"]
    assert "non-empty list" in errors["conditions.3.value"]
    assert "needs a number" in errors["conditions.4.value"]
    assert "not a real date" in errors["conditions.5.value"]
    assert "exists" in errors["conditions.6.value"]
    assert "one text, number" in errors["conditions.7.value"]
    assert "conditions.8.value.1" in errors
    assert "object with field" in errors["conditions.9"]
    assert "Choose an operator" in errors["conditions.10.op"]
    _, errors = audiences.check({"name": "x", "conditions": [
        {"field": "a", "op": "exists"}] * 51})
    assert "at most 50 conditions" in errors["conditions"]
    _, errors = audiences.check({"name": "", "slug": "Bad Slug"})
    assert errors["name"] == "Give the audience a name."
    assert "lower-case letters" in errors["slug"]
    _, errors = audiences.check({"name": "y", "slug": "123"})
    assert "digits only" in errors["slug"]
    assert audiences.check(["not", "an", "object"])[1]


def test_slugs_come_from_names_and_stay_unique(app, make_user):
    by = make_user("operator")
    made = []
    for name in ("Café Clients!", "CAFÉ clients!", "2024"):
        cleaned, errors = audiences.check({"name": name})
        assert errors == {} or "name" in errors
        if errors:
            continue
        made.append(audiences.create(cleaned, by=by).slug)
        db.session.commit()
    assert made == ["cafe-clients", "audience-2024"]  # the same name in other case: refused
    cleaned, errors = audiences.check({"name": "Cafe clients"})
    assert errors == {} and cleaned["slug"] == "cafe-clients-2"


def test_update_and_delete_are_audited_and_delete_refuses_while_a_job_uses_it(app, make_user):
    by = make_user("operator")
    cleaned, _ = audiences.check({"name": "Buyers", "conditions": [
        {"field": "orders", "op": "gt", "value": 0}]})
    audience = audiences.create(cleaned, by=by)
    db.session.commit()
    cleaned, errors = audiences.check({"name": "Big buyers", "match": "all", "conditions": [
        {"field": "orders", "op": "gt", "value": "10"}]}, audience=audience)
    assert errors == {} and cleaned["slug"] == "buyers"
    audiences.update(audience, cleaned, by=by)
    db.session.commit()
    assert audience.conditions == [{"field": "orders", "op": "gt", "value": 10}]
    job = Job(name="Send buyers", provider="webhook", job_type="send", kind="export",
              status="paused", config={"audience": "buyers"}, created_by_id=by.id)
    db.session.add(job)
    db.session.commit()
    with pytest.raises(audiences.AudienceInUse, match="Send buyers"):
        audiences.delete(audience, by=by)
    _, errors = audiences.check({"name": "Big buyers", "slug": "other"}, audience=audience)
    assert "Send buyers" in errors["slug"]
    job.status = "completed"
    db.session.commit()
    audiences.delete(audience, by=by)
    db.session.commit()
    assert audiences.by_slug("buyers") is None
    actions = list(db.session.scalars(select(AuditEntry.action).where(
        AuditEntry.object_type == "audience").order_by(AuditEntry.id)))
    assert actions == ["audience_created", "audience_updated", "audience_deleted"]


def test_summaries_read_as_sentences():
    assert audiences.summary("all", []) == "No conditions: matches nobody."
    assert audiences.summary("any", [{"field": "plan", "op": "equals", "value": "pro"},
                                     {"field": "age", "op": "gt", "value": 30},
                                     {"field": "c", "op": "in", "value": ["NO", 4]},
                                     {"field": "phone", "op": "exists", "value": None}]) == (
        "plan equals “pro” or age greater than 30 or c is one of “NO”, 4 or phone exists")
