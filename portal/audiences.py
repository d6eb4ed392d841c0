"""Audiences: named filters over profile attributes, evaluated in SQL.

An audience has a name, a slug (how the API and export jobs name it), a description,
`match` ("all" or "any") and up to MAX_CONDITIONS conditions {"field", "op", "value"} on
the profiles' attributes (portal/profiles.py: every top-level field of a message is an
attribute). An audience with no conditions matches nobody.

Stable entry points (the web pages, the API and export jobs rely on them):

    check(data, *, audience=None) -> (cleaned, errors)
        Validate {"name", "slug", "description", "match", "conditions"}; `errors` maps a
        field path ("name", "conditions.2.value", ...) to a message, `cleaned` is what
        create()/update() take. `audience`: the one being edited (its own slug and name
        are no duplicates).
    member_filter(match, conditions) -> SQLAlchemy boolean over Profile.id
    count(match, conditions) -> int
    preview(match, conditions, limit=20) -> list[Member]
    members(audience, *, identifier, after_profile_id=0, limit=1000)
        -> list[tuple[int, str | None]]
        Members in profile-id order after `after_profile_id`, each with the text of its
        attribute `identifier` (a string as stored, a number as its decimal text, a
        boolean as "true"/"false"); None when the profile lacks it or it is null or blank.
    audiences_of(profile_id) -> list[Audience]
    create(cleaned, *, by) / update(audience, cleaned, *, by) / delete(audience, *, by)
        Audited. delete() raises AudienceInUse while a job that is not completed or
        failed has config["audience"] == the audience's slug (jobs_using()).

Operators (OPS) and what they mean:

- equals: the same value. Text against text compares trimmed and case-insensitively; a
  number against a number or numeric text (NUMBER_TEXT) compares as numbers, so the number
  42 equals "42" and " 42.0 " and the text "42" equals the numbers 42 and 42.0 (but not the
  text "42.0"); true/false equal the texts "true"/"false" and the other way round.
- contains: a string attribute holds the text (case-insensitive); a list attribute has an
  element that equals the value.
- exists: the attribute is there and neither null nor blank.
- gt / lt ("greater than" / "less than"): with a number, attributes holding a number or a
  numeric string compare as numbers and others never match; with an ISO 8601 date or
  date-time (2024-05-01, 2024-05-01T10:00:00+02:00; no offset means UTC), attributes
  holding such text compare as instants and others never match.
- in ("is one of"): equals any value of a non-empty list.

Every condition is one EXISTS over profile_attributes; nothing is loaded into Python.
SQLite and PostgreSQL give the same answers: numeric text and ISO dates are recognised by
the same grammar on both (a regular expression on PostgreSQL, GLOB patterns on SQLite),
instants are computed as whole microseconds since 1970 by the same arithmetic, and case
is folded by PostgreSQL's lower() and, on SQLite, by a `portal_lower` function registered
on every connection (SQLite's own lower() knows ASCII only).
"""

from __future__ import annotations

import math
import re
import sqlite3
import unicodedata
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    BigInteger,
    Integer,
    Numeric,
    and_,
    case,
    cast,
    event,
    false,
    func,
    literal,
    literal_column,
    or_,
    select,
)
from sqlalchemy.engine import Engine
from sqlalchemy.orm import aliased
from sqlalchemy.sql.elements import ColumnElement

from portal import audit
from portal.extensions import db
from portal.lifecycle import Status
from portal.models import (
    Audience,
    Job,
    Profile,
    ProfileAttribute,
    ProfileIdentity,
    StreamField,
    User,
)
from portal.models.types import utcnow

OPS = {"equals": "equals", "contains": "contains", "exists": "exists",
       "gt": "greater than", "lt": "less than", "in": "is one of"}
MATCHES = {"all": "all conditions", "any": "any condition"}
MAX_CONDITIONS = 50
MAX_IN_VALUES = 500
MAX_VALUE_LENGTH = 1000
MAX_NAME = 200
MAX_DESCRIPTION = 5000
MAX_FIELD = 255  # attribute names are at most this long (portal/profiles.py)
SLUG = re.compile(r"[a-z0-9_-]{1,64}")
# A job that may still run holds on to the audience it names (as datastore.jobs_using).
ENDED = (str(Status.COMPLETED), str(Status.FAILED))

# What counts as a number written as text, and as an ISO 8601 date or date-time: the same
# grammar in Python, in PostgreSQL's regular expressions and in SQLite's GLOB patterns.
NUMBER_TEXT = r"[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)"
ISO_TEXT = (r"[0-9]{4}-[0-9]{2}-[0-9]{2}"
            r"([T ][0-9]{2}:[0-9]{2}(:[0-9]{2}(\.[0-9]{1,6})?)?(Z|[+-][0-9]{2}:[0-9]{2})?)?")
_NUMBER = re.compile(NUMBER_TEXT)
_ISO = re.compile(ISO_TEXT)
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


# --- SQLite: a Unicode lower() ----------------------------------------------------------

def _lower(value: Any) -> Any:
    return value.lower() if isinstance(value, str) else value


@event.listens_for(Engine, "connect")
def _sqlite_functions(dbapi_connection, _record) -> None:
    if isinstance(dbapi_connection, sqlite3.Connection):
        dbapi_connection.create_function("portal_lower", 1, _lower, deterministic=True)


# --- Reading condition values -----------------------------------------------------------

def number_of(text: str) -> int | float | None:
    """The number a text writes (trimmed), or None: digits with an optional sign and
    decimal point, as NUMBER_TEXT."""
    text = text.strip()
    if not _NUMBER.fullmatch(text):
        return None
    if re.fullmatch(r"[+-]?[0-9]+", text):
        return int(text)
    return float(text)


def instant_of(text: str) -> datetime | None:
    """The instant an ISO 8601 date or date-time (as ISO_TEXT) names, or None; without an
    offset it is UTC, a date alone is its midnight."""
    text = text.strip()
    if not _ISO.fullmatch(text):
        return None
    try:
        if len(text) == 10:
            return datetime.fromisoformat(text).replace(tzinfo=UTC)
        found = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:  # the 30th of February, hour 24...
        return None
    return found if found.tzinfo else found.replace(tzinfo=UTC)


def micros(moment: datetime) -> int:
    """Whole microseconds since 1970-01-01T00:00:00Z: how instants compare in SQL."""
    return (moment - EPOCH) // timedelta(microseconds=1)


def _is_number(value: Any) -> bool:
    return (isinstance(value, int | float) and not isinstance(value, bool)
            and math.isfinite(value))


def _scalar(value: Any) -> bool:
    return isinstance(value, str | bool) or _is_number(value)


# --- check() ----------------------------------------------------------------------------

def slug_from(name: str) -> str:
    """A slug made from a name: ASCII letters and digits, other runs of characters as one
    "-"; a slug of digits only would read as an id, so it gets an "audience-" prefix."""
    ascii_name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    slug = re.sub(r"[^a-z0-9_]+", "-", ascii_name.lower()).strip("-_")[:64].strip("-_")
    if not slug or slug.isdigit():
        slug = f"audience-{slug}".strip("-")[:64]
    return slug


def _fold(value: ColumnElement) -> ColumnElement:
    """lower() as it works on this database for any letter (see the module docstring)."""
    return func.lower(value) if _postgres() else func.portal_lower(value)


def _slug_taken(slug: str, audience: Audience | None) -> bool:
    query = select(Audience.id).where(Audience.slug == slug)
    if audience is not None and audience.id is not None:
        query = query.where(Audience.id != audience.id)
    return db.session.scalar(query) is not None


def _name_taken(name: str, audience: Audience | None) -> bool:
    query = select(Audience.id).where(_fold(Audience.name) == name.lower())
    if audience is not None and audience.id is not None:
        query = query.where(Audience.id != audience.id)
    return db.session.scalar(query) is not None


def _check_value(op: str, value: Any, where: str, errors: dict[str, str]) -> Any:
    """The cleaned value of one condition, or None with a message in `errors`."""
    if op == "exists":
        return None
    if isinstance(value, str):
        value = value.strip()
        if len(value) > MAX_VALUE_LENGTH:
            errors[where] = f"Use at most {MAX_VALUE_LENGTH} characters."
            return None
    if op == "in":
        if not isinstance(value, list) or not value:
            errors[where] = ("“is one of” needs a non-empty list of values, "
                             'like ["NO", "SE"].')
            return None
        if len(value) > MAX_IN_VALUES:
            errors[where] = f"“is one of” takes at most {MAX_IN_VALUES} values."
            return None
        cleaned = []
        for n, item in enumerate(value):
            if isinstance(item, str):
                item = item.strip()
            if not _scalar(item) or item == "":
                errors[f"{where}.{n}"] = ("Each value must be a non-empty text, a number "
                                          "or true/false.")
                continue
            if isinstance(item, str) and len(item) > MAX_VALUE_LENGTH:
                errors[f"{where}.{n}"] = f"Use at most {MAX_VALUE_LENGTH} characters."
                continue
            cleaned.append(item)
        if len(cleaned) != len(value):
            errors.setdefault(where, "Some values of the list cannot be compared.")
            return None
        # Without repeats; 1 and true are different values (as keys of a dict, the same).
        return list({(type(item).__name__, item): item for item in cleaned}.values())
    if value is None or value == "":
        errors[where] = ("Give a value to compare with (to find profiles that have the field "
                         "at all, use “exists”).")
        return None
    if op == "equals":
        if not _scalar(value):
            errors[where] = "“equals” compares with one text, number or true/false."
            return None
        return value
    if op == "contains":
        if _is_number(value):
            return str(value)
        if not isinstance(value, str):
            errors[where] = "“contains” looks for a text: give one."
            return None
        return value
    # gt / lt
    if _is_number(value):
        return value
    if isinstance(value, str):
        number = number_of(value)
        if number is not None:
            return number
        if instant_of(value) is not None:
            return value
        if _ISO.fullmatch(value):
            errors[where] = f"{value} is not a real date or time: check the day and the hour."
            return None
    errors[where] = (f"“{OPS[op]}” needs a number (like 30 or 4.5) or an ISO 8601 date or "
                     "date-time (like 2024-05-01 or 2024-05-01T10:00:00Z).")
    return None


def check(data: Any, *, audience: Audience | None = None) -> tuple[dict[str, Any],
                                                                    dict[str, str]]:
    """Validate an audience (see the module docstring); (cleaned, errors)."""
    errors: dict[str, str] = {}
    if not isinstance(data, dict):
        return {}, {"": "Send an object with name, match and conditions."}
    cleaned: dict[str, Any] = {}

    name = data.get("name")
    if not isinstance(name, str) or not name.strip():
        errors["name"] = "Give the audience a name."
    elif len(name.strip()) > MAX_NAME:
        errors["name"] = f"Use at most {MAX_NAME} characters."
    elif _name_taken(name.strip(), audience):
        errors["name"] = (f"There is already an audience called “{name.strip()}”: "
                          "choose another name.")
    else:
        cleaned["name"] = name.strip()

    slug = data.get("slug")
    if slug in (None, ""):
        if audience is not None:
            cleaned["slug"] = audience.slug
        elif "name" in cleaned:
            base = slug_from(cleaned["name"])
            cleaned["slug"], n = base, 2
            while _slug_taken(cleaned["slug"], audience):
                suffix = f"-{n}"
                cleaned["slug"], n = base[:64 - len(suffix)] + suffix, n + 1
    elif not isinstance(slug, str) or not SLUG.fullmatch(slug.strip()):
        errors["slug"] = ("Use 1 to 64 lower-case letters, digits, “_” or “-” "
                          "(like active-customers).")
    elif slug.strip().isdigit():
        errors["slug"] = "Use at least one letter: a slug of digits only reads as an id."
    elif _slug_taken(slug.strip(), audience):
        errors["slug"] = f"The slug “{slug.strip()}” is taken: choose another."
    elif audience is not None and slug.strip() != audience.slug and (using := jobs_using(audience)):
        errors["slug"] = (f"Jobs name this audience by its slug “{audience.slug}”: "
                          f"{_job_list(using)}. Keep the slug or change those jobs first.")
    else:
        cleaned["slug"] = slug.strip()

    description = data.get("description")
    if description is None:
        cleaned["description"] = ""
    elif not isinstance(description, str):
        errors["description"] = "The description is a text."
    elif len(description) > MAX_DESCRIPTION:
        errors["description"] = f"Use at most {MAX_DESCRIPTION} characters."
    else:
        cleaned["description"] = description.strip()

    match = data.get("match", "all")
    if match not in MATCHES:
        errors["match"] = "Choose “all” (every condition must hold) or “any” (one is enough)."
    else:
        cleaned["match"] = match

    conditions = data.get("conditions", [])
    if conditions is None:
        conditions = []
    if not isinstance(conditions, list):
        errors["conditions"] = "Conditions are a list of {field, op, value}."
        return cleaned, errors
    if len(conditions) > MAX_CONDITIONS:
        errors["conditions"] = (f"An audience has at most {MAX_CONDITIONS} conditions; this "
                                f"one has {len(conditions)}.")
        return cleaned, errors
    kept = []
    for n, condition in enumerate(conditions):
        where = f"conditions.{n}"
        if not isinstance(condition, dict):
            errors[where] = "Each condition is an object with field, op and value."
            continue
        problems = len(errors)
        field = condition.get("field")
        if not isinstance(field, str) or not field.strip():
            errors[f"{where}.field"] = "Name the profile field this condition looks at."
        elif len(field.strip()) > MAX_FIELD:
            errors[f"{where}.field"] = f"Field names have at most {MAX_FIELD} characters."
        op = condition.get("op")
        if op not in OPS:
            known = ", ".join(f"{key} ({label})" for key, label in OPS.items())
            errors[f"{where}.op"] = (f"Unknown operator {op!r}: use one of {known}."
                                     if op not in (None, "") else
                                     f"Choose an operator: one of {known}.")
            continue
        value = _check_value(op, condition.get("value"), f"{where}.value", errors)
        if len(errors) == problems:
            kept.append({"field": field.strip(), "op": op, "value": value})
    cleaned["conditions"] = kept
    return cleaned, errors


# --- SQL --------------------------------------------------------------------------------

class _Json:
    """A JSON value in SQL as the dialect sees it: its type name and its scalar form."""

    def __init__(self, kind: ColumnElement, scalar: ColumnElement, postgres: bool):
        self.kind, self.scalar, self.postgres = kind, scalar, postgres

    @classmethod
    def of(cls, column: ColumnElement, postgres: bool) -> _Json:
        if postgres:
            return cls(func.jsonb_typeof(column),
                       column.op("#>>")(literal_column("'{}'::text[]")), True)
        return cls(func.json_type(column), func.json_extract(column, "$"), False)

    def is_string(self) -> ColumnElement:
        return self.kind == ("string" if self.postgres else "text")

    def is_number(self) -> ColumnElement:
        return (self.kind == "number") if self.postgres else self.kind.in_(("integer", "real"))

    def is_bool(self, value: bool) -> ColumnElement:
        if self.postgres:
            return and_(self.kind == "boolean", self.scalar == ("true" if value else "false"))
        return self.kind == ("true" if value else "false")

    def is_null(self) -> ColumnElement:
        return self.kind == "null"

    def text(self) -> ColumnElement:
        return func.trim(self.scalar)

    def lower(self, value: ColumnElement) -> ColumnElement:
        return _fold(value)

    def number(self) -> ColumnElement:
        """The value as a number: a JSON number, or a string writing one (NUMBER_TEXT);
        NULL for anything else."""
        text = self.text()
        if self.postgres:
            return case((self.is_number(), cast(self.scalar, Numeric)),
                        (and_(self.is_string(), text.regexp_match(f"^{NUMBER_TEXT}$")),
                         cast(text, Numeric)))
        unsigned = case((func.substr(text, 1, 1).in_(("+", "-")), func.substr(text, 2)),
                        else_=text)
        numeric_text = and_(self.is_string(), unsigned.not_in(("", ".")),
                            unsigned.op("NOT GLOB")("*[^0-9.]*"),
                            unsigned.op("NOT GLOB")("*.*.*"))
        return case((self.is_number(), self.scalar),
                    (numeric_text, cast(text, Numeric)))

    def iso_text(self, text: ColumnElement) -> ColumnElement:
        if self.postgres:
            return text.regexp_match(f"^{ISO_TEXT}$")
        return or_(*(text.op("GLOB")(pattern) for pattern in _iso_globs()))

    def instant(self) -> ColumnElement:
        """Microseconds since 1970 of a string holding an ISO date or date-time (ISO_TEXT,
        a real day and time); NULL for anything else."""
        text = self.text()
        return case((and_(self.is_string(), self.iso_text(text)), _micros_sql(text)))


def _iso_globs() -> list[str]:
    digit = "[0-9]"
    date = f"{digit * 4}-{digit * 2}-{digit * 2}"
    hm = f"[T ]{digit * 2}:{digit * 2}"
    times = [hm, f"{hm}:{digit * 2}"] + [f"{hm}:{digit * 2}.{digit * n}" for n in range(1, 7)]
    zones = ["", "Z", f"[+-]{digit * 2}:{digit * 2}"]
    return [date] + [date + time + zone for time in times for zone in zones]


def _micros_sql(t: ColumnElement) -> ColumnElement:
    """Microseconds since 1970 of text already known to fit ISO_TEXT, by integer
    arithmetic that reads the same on both databases; NULL when the day or the time does
    not exist (30 February, 24:00)."""
    def part(start, length=2):
        return cast(func.substr(t, start, length), Integer)

    length = func.length(t)
    y, m, d = part(1, 4), part(6), part(9)
    timed = length >= 16
    h = case((timed, part(12)), else_=0)
    mi = case((timed, part(15)), else_=0)
    sec = case((and_(length >= 19, func.substr(t, 17, 1) == ":"), part(18)), else_=0)
    zulu = func.substr(t, length, 1) == "Z"
    offset = and_(length >= 22, func.substr(t, length - 5, 1).in_(("+", "-")))
    zone_length = case((zulu, 1), (offset, 6), else_=0)
    oh = case((offset, cast(func.substr(t, length - 4, 2), Integer)), else_=0)
    om = case((offset, cast(func.substr(t, length - 1, 2), Integer)), else_=0)
    sign = case((func.substr(t, length - 5, 1) == "-", -1), else_=1)
    fraction = case(
        (func.substr(t, 20, 1) == ".",
         cast(func.substr(func.substr(t, 21, length - zone_length - 20).concat("000000"), 1, 6),
              BigInteger)),
        else_=0)
    leap = or_(and_(y % 4 == 0, y % 100 != 0), y % 400 == 0)
    month_days = case((m == 2, case((leap, 29), else_=28)), (m.in_((4, 6, 9, 11)), 30),
                      else_=31)
    real = and_(y >= 1, m >= 1, m <= 12, d >= 1, d <= month_days, h <= 23, mi <= 59,
                sec <= 59, oh <= 23, om <= 59)
    # Days since 1970 of a proleptic Gregorian date (the civil-from-days inverse); every
    # operand is non-negative, so integer division truncates the same way on both.
    yy = cast(y - case((m <= 2, 1), else_=0), BigInteger)
    era = yy // 400
    yoe = yy - era * 400
    doy = (153 * ((m + 9) % 12) + 2) // 5 + d - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    days = era * 146097 + doe - 719468
    seconds = days * 86400 + h * 3600 + mi * 60 + sec - sign * (oh * 3600 + om * 60)
    return case((real, seconds * 1000000 + fraction))


def _bind_number(value: int | float, postgres: bool) -> ColumnElement:
    if postgres:
        return literal(Decimal(str(value)), Numeric)
    return literal(value)


def _equals(json: _Json, value: Any) -> ColumnElement:
    """`json` equals `value` (one cleaned scalar), as the module docstring says."""
    if isinstance(value, bool):
        word = "true" if value else "false"
        return or_(json.is_bool(value),
                   and_(json.is_string(), json.lower(json.text()) == word))
    if _is_number(value):
        return json.number() == _bind_number(value, json.postgres)
    text = value.strip()
    clauses = [and_(json.is_string(), json.lower(json.text()) == text.lower())]
    number = number_of(text)
    if number is not None:
        clauses.append(and_(json.is_number(), json.number() == _bind_number(number,
                                                                             json.postgres)))
    if text.lower() in ("true", "false"):
        clauses.append(json.is_bool(text.lower() == "true"))
    return or_(*clauses)


def _elements(column: ColumnElement, postgres: bool) -> tuple[Any, _Json]:
    """The elements of a list attribute as a table (nothing for a value that is no list)."""
    if postgres:
        listed = case((func.jsonb_typeof(column) == "array", column),
                      else_=literal_column("'[]'::jsonb"))
        table = func.jsonb_array_elements(listed).table_valued("value").alias("element")
        return table, _Json.of(table.c.value, True)
    listed = case((func.json_type(column) == "array", column), else_=literal("[]"))
    table = func.json_each(listed).table_valued("type", "value").alias("element")
    return table, _Json(table.c.type, table.c.value, False)


def _predicate(condition: dict[str, Any], column: ColumnElement, postgres: bool) -> ColumnElement:
    json = _Json.of(column, postgres)
    op, value = condition["op"], condition.get("value")
    if op == "exists":
        return and_(column.is_not(None), json.kind.is_not(None), ~json.is_null(),
                    or_(~json.is_string(), json.text() != ""))
    if op == "equals":
        return _equals(json, value)
    if op == "in":
        return or_(*(_equals(json, item) for item in value))
    if op == "contains":
        table, element = _elements(column, postgres)
        return or_(
            and_(json.is_string(),
                 json.lower(json.scalar).contains(value.lower(), autoescape=True)),
            select(literal(1)).select_from(table).where(_equals(element, value)).exists())
    # gt / lt
    if _is_number(value):
        found, bound = json.number(), _bind_number(value, postgres)
    else:
        moment = instant_of(value)
        found, bound = json.instant(), literal(micros(moment), BigInteger)
    return found > bound if op == "gt" else found < bound


def _postgres() -> bool:
    return db.session.get_bind().dialect.name == "postgresql"


def member_filter(match: str, conditions: list[dict[str, Any]]) -> ColumnElement:
    """A boolean over Profile.id: the profile is a member. No conditions: nobody."""
    if not conditions:
        return false()
    postgres = _postgres()
    clauses = []
    for condition in conditions:
        attribute = aliased(ProfileAttribute)
        clauses.append(select(literal(1)).where(
            attribute.profile_id == Profile.id, attribute.name == condition["field"],
            _predicate(condition, attribute.value, postgres)).exists())
    return or_(*clauses) if match == "any" else and_(*clauses)


def count(match: str, conditions: list[dict[str, Any]]) -> int:
    if not conditions:
        return 0
    return db.session.scalar(select(func.count()).select_from(Profile)
                             .where(member_filter(match, conditions))) or 0


@dataclass(frozen=True)
class Member:
    id: int
    identities: list[tuple[str, str]]
    attributes: dict[str, Any]  # the fields the conditions name, then others, a few


def preview(match: str, conditions: list[dict[str, Any]], limit: int = 20, *,
            fields: int = 6) -> list[Member]:
    """The first members (by profile id), with their identities and a few attributes."""
    if not conditions:
        return []
    ids = list(db.session.scalars(select(Profile.id).where(member_filter(match, conditions))
                                  .order_by(Profile.id).limit(limit)))
    if not ids:
        return []
    identities: dict[int, list[tuple[str, str]]] = {pid: [] for pid in ids}
    for row in db.session.execute(select(ProfileIdentity.profile_id, ProfileIdentity.key,
                                         ProfileIdentity.value)
                                  .where(ProfileIdentity.profile_id.in_(ids))
                                  .order_by(ProfileIdentity.key, ProfileIdentity.value)):
        identities[row.profile_id].append((row.key, row.value))
    named = list(dict.fromkeys(condition["field"] for condition in conditions))
    values: dict[int, dict[str, Any]] = {pid: {} for pid in ids}
    for row in db.session.execute(select(ProfileAttribute.profile_id, ProfileAttribute.name,
                                         ProfileAttribute.value)
                                  .where(ProfileAttribute.profile_id.in_(ids))
                                  .order_by(ProfileAttribute.name)):
        values[row.profile_id][row.name] = row.value
    members = []
    for pid in ids:
        found = values[pid]
        order = [name for name in named if name in found] + [
            name for name in found if name not in named]
        members.append(Member(pid, identities[pid],
                               {name: found[name] for name in order[:fields]}))
    return members


def _as_text(value: Any) -> str | None:
    if value is None or isinstance(value, dict | list):
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    text = str(value).strip()
    return text or None


def members(audience: Audience, *, identifier: str, after_profile_id: int = 0,
            limit: int = 1000) -> list[tuple[int, str | None]]:
    """The audience's members after `after_profile_id`, in profile-id order, each with
    its `identifier` attribute as text (None when missing, null, blank, a list or an
    object)."""
    if not audience.conditions:
        return []
    attribute = aliased(ProfileAttribute)
    rows = db.session.execute(
        select(Profile.id, attribute.value)
        .outerjoin(attribute, and_(attribute.profile_id == Profile.id,
                                   attribute.name == identifier))
        .where(Profile.id > after_profile_id,
               member_filter(audience.match, audience.conditions))
        .order_by(Profile.id).limit(limit)).all()
    return [(row[0], _as_text(row[1])) for row in rows]


def audiences_of(profile_id: int) -> list[Audience]:
    """The audiences this profile belongs to, by name."""
    found = []
    for audience in all_audiences():
        if audience.conditions and db.session.scalar(
                select(Profile.id).where(Profile.id == profile_id,
                                         member_filter(audience.match, audience.conditions))):
            found.append(audience)
    return found


# --- Reading and writing audiences ------------------------------------------------------

def all_audiences() -> list[Audience]:
    return list(db.session.scalars(select(Audience).order_by(_fold(Audience.name),
                                                             Audience.id)))


def by_slug(slug: str) -> Audience | None:
    return db.session.scalar(select(Audience).where(Audience.slug == slug))


def field_names(limit: int = 500) -> list[str]:
    """Attribute names seen in the streams (for the form's suggestions), by name."""
    return list(db.session.scalars(select(StreamField.name).distinct()
                                   .order_by(StreamField.name).limit(limit)))


def describe(condition: dict[str, Any]) -> str:
    """One condition as a person reads it: 'plan equals "pro"'."""
    def show(value: Any) -> str:
        if isinstance(value, str):
            return f"“{value}”"
        if isinstance(value, bool):
            return "true" if value else "false"
        return str(value)

    op, value = condition["op"], condition.get("value")
    label = OPS.get(op, op)
    if op == "exists":
        return f"{condition['field']} exists"
    if op == "in":
        return f"{condition['field']} {label} " + ", ".join(show(item) for item in value)
    return f"{condition['field']} {label} {show(value)}"


def summary(match: str, conditions: list[dict[str, Any]]) -> str:
    if not conditions:
        return "No conditions: matches nobody."
    return (" and " if match == "all" else " or ").join(describe(c) for c in conditions)


def jobs_using(audience: Audience) -> list[Job]:
    """Jobs that are not completed or failed and name this audience (config["audience"])."""
    candidates = db.session.scalars(
        select(Job).where(Job.status.not_in(ENDED)).order_by(Job.id)).all()
    return [job for job in candidates if (job.config or {}).get("audience") == audience.slug]


def _job_list(jobs: list[Job]) -> str:
    return ", ".join(f"“{job.name}” (#{job.id}, {job.status})" for job in jobs)


class AudienceInUse(Exception):
    """The audience cannot go: jobs that may still run export it."""

    def __init__(self, jobs: list[Job]):
        self.jobs = jobs
        super().__init__(f"Jobs still use this audience: {_job_list(jobs)}. Complete or "
                         "delete them first, or point them at another audience.")


class AudienceRefused(ValueError):
    """check() found problems; `errors` maps field paths to messages."""

    def __init__(self, errors: dict[str, str]):
        self.errors = errors
        super().__init__("; ".join(f"{key}: {message}" for key, message in errors.items()))


def create(cleaned: dict[str, Any], *, by: User) -> Audience:
    """A new audience from check()'s cleaned data, audited (the caller commits)."""
    now = utcnow()
    audience = Audience(slug=cleaned["slug"], name=cleaned["name"],
                        description=cleaned.get("description", ""),
                        match=cleaned.get("match", "all"),
                        conditions=cleaned.get("conditions", []),
                        created_by_id=by.id if by is not None else None,
                        created_at=now, updated_at=now)
    db.session.add(audience)
    db.session.flush()
    audit.record("audience_created", "audience", audience.id, audience.name, by=by,
                 summary=f"Created audience {audience.name}: "
                         f"{summary(audience.match, audience.conditions)}",
                 slug=audience.slug, match=audience.match, conditions=audience.conditions)
    return audience


def update(audience: Audience, cleaned: dict[str, Any], *, by: User) -> Audience:
    """Apply check(data, audience=audience)'s cleaned data, audited with what changed."""
    before = {"name": audience.name, "slug": audience.slug,
              "description": audience.description, "match": audience.match,
              "conditions": audience.conditions}
    changed = {key: {"before": before[key], "after": cleaned[key]} for key in before
               if key in cleaned and cleaned[key] != before[key]}
    if not changed:
        return audience
    for key, change in changed.items():
        setattr(audience, key, change["after"])
    audience.updated_at = utcnow()
    audit.record("audience_updated", "audience", audience.id, audience.name, by=by,
                 summary=f"Changed {', '.join(changed)} of audience {audience.name}.",
                 changes=changed)
    return audience


def delete(audience: Audience, *, by: User) -> None:
    """Delete an audience, audited. Raises AudienceInUse while jobs that may still run
    name it."""
    if users := jobs_using(audience):
        raise AudienceInUse(users)
    audit.record("audience_deleted", "audience", audience.id, audience.name, by=by,
                 summary=f"Deleted audience {audience.name} ({audience.slug}).",
                 slug=audience.slug, conditions=audience.conditions)
    db.session.delete(audience)

