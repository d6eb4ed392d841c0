"""Profiles: the people the messages describe, joined by identity keys.

A message whose payload holds one or more identity keys (PORTAL_IDENTITY_KEYS, by default
"email,user_id") belongs to the profile that owns any of those values; a message that
names two profiles merges them. Every top-level field of the message is a candidate
attribute, and an attribute keeps the value with the newest event time, ties going to the
higher message id. The result depends only on the set of messages, never on the order
they arrive in: `rebuild` (messages in id order) gives what the incremental path gave.

Identity values are normalised before they are compared or stored: strings are trimmed
and put in Unicode NFC form, values of a key whose name contains "email" are lower-cased,
whole numbers count as their decimal text (user_id 42 and "42" are the same person);
empty values, booleans, objects, lists and values over 255 characters are no identity.

Concurrency: on PostgreSQL the profiles a batch touches are locked (SELECT ... FOR UPDATE,
in id order) before they change, and new identity values go in with ON CONFLICT DO
NOTHING, so two writers that meet on one person merge rather than duplicate. Attributes
are written with a conditional upsert (only where the stored event time is older), so an
update can never replace newer data even without the lock. SQLite runs one writer at a
time: write_messages reaches this code after its first write, holding the write lock.
"""

from __future__ import annotations

import json
import unicodedata
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from flask import current_app
from sqlalchemy import ARRAY, String, cast, delete, func, select, text, update

from portal.extensions import db
from portal.models import Message, Profile, ProfileAttribute, ProfileIdentity, Stream
from portal.models.types import stored_time, utcnow

Identity = tuple[str, str]
CHUNK = 500  # rows per statement: well under SQLite's bound-parameter limit


@dataclass(frozen=True)
class Fact:
    """A stored message as profiles read it."""

    message_id: int
    stream_id: int
    event_time: datetime
    payload: Any


def identity_keys() -> tuple[str, ...]:
    raw = current_app.config.get("PORTAL_IDENTITY_KEYS") or "email,user_id"
    return tuple(dict.fromkeys(key.strip() for key in raw.split(",") if key.strip()))


def normalise(key: str, value: Any) -> str | None:
    """The identity value as profiles compare it, or None when it is no identity."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int) or (isinstance(value, float) and value.is_integer()):
        found = str(int(value))
    elif isinstance(value, str):
        found = unicodedata.normalize("NFC", value.strip())
    else:
        return None
    if "email" in key.lower():
        found = found.lower()
    return found if found and len(found) <= 255 else None


def _owners(identities: set[Identity]) -> dict[Identity, int]:
    by_key: dict[str, list[str]] = defaultdict(list)
    for key, value in identities:
        by_key[key].append(value)
    found: dict[Identity, int] = {}
    postgres = db.session.get_bind().dialect.name == "postgresql"
    for key, values in by_key.items():
        # PostgreSQL: one array parameter for all the values (= ANY), one statement.
        step = len(values) if postgres else CHUNK
        for start in range(0, len(values), step):
            chunk = values[start:start + step]
            match = (ProfileIdentity.value == func.any(cast(chunk, ARRAY(String))) if postgres
                     else ProfileIdentity.value.in_(chunk))
            found.update({(key, row.value): row.profile_id for row in db.session.execute(
                select(ProfileIdentity.value, ProfileIdentity.profile_id).where(
                    ProfileIdentity.key == key, match))})
    return found


def _lock(profile_ids: set[int]) -> None:
    """Row locks on these profiles until the transaction ends (PostgreSQL; SQLite has one
    writer at a time and ignores FOR UPDATE). One statement, in id order: two writers
    locking overlapping sets wait for each other instead of deadlocking."""
    ordered = sorted(profile_ids)
    for start in range(0, len(ordered), CHUNK):
        db.session.execute(select(Profile.id).where(Profile.id.in_(ordered[start:start + CHUNK]))
                           .order_by(Profile.id).with_for_update()).all()


def _locked_owners(identities: set[Identity], locked: set[int]) -> dict[Identity, int]:
    """The owners of these identity values, each locked; read again after locking, since a
    merge committed while we waited may have moved a value to another profile."""
    while True:
        owners = _owners(identities)
        missing = set(owners.values()) - locked
        if not missing:
            return owners
        _lock(missing)
        locked |= missing


# The rows go in ONE statement, as one JSON array (one parameter, passed as it is): a
# statement per row (executemany) costs more than the writes themselves, and PostgreSQL
# array parameters are escaped element by element in Python. Times are text in the form
# UTCDateTime stores them, so they compare as stored. The WHERE of the DO UPDATE is the
# rule: only an older value (same event time: lower message id) is replaced.
NEWER = """
ON CONFLICT (profile_id, name) DO UPDATE SET value = excluded.value,
    event_time = excluded.event_time, stream_id = excluded.stream_id,
    message_id = excluded.message_id
WHERE profile_attributes.event_time < excluded.event_time
   OR (profile_attributes.event_time = excluded.event_time
       AND profile_attributes.message_id < excluded.message_id)
"""
ATTRIBUTES = ("INSERT INTO profile_attributes "
              "(profile_id, name, value, event_time, stream_id, message_id)")
IDENTITIES = "INSERT INTO profile_identities (key, value, profile_id)"
# Each dialect's way to read the rows: "WHERE true" lets SQLite read ON CONFLICT after
# a SELECT.
UPSERTS = {
    "postgresql": {
        "attributes": text(ATTRIBUTES + """
SELECT CAST(r.value ->> 0 AS integer), r.value ->> 1, r.value -> 2,
       CAST(r.value ->> 3 AS timestamp), CAST(r.value ->> 4 AS integer),
       CAST(r.value ->> 5 AS integer)
FROM jsonb_array_elements(CAST(:rows AS jsonb)) AS r""" + NEWER),
        "identities": text(IDENTITIES + """
SELECT r.value ->> 0, r.value ->> 1, CAST(r.value ->> 2 AS integer)
FROM jsonb_array_elements(CAST(:rows AS jsonb)) AS r ON CONFLICT DO NOTHING"""),
    },
    "sqlite": {
        "attributes": text(ATTRIBUTES + """
SELECT r.value ->> 0, r.value ->> 1, r.value -> 2, r.value ->> 3, r.value ->> 4,
       r.value ->> 5
FROM json_each(:rows) AS r WHERE true""" + NEWER),
        "identities": text(IDENTITIES + """
SELECT r.value ->> 0, r.value ->> 1, r.value ->> 2
FROM json_each(:rows) AS r WHERE true ON CONFLICT DO NOTHING"""),
    },
}


def _upsert(what: str, rows: list) -> None:
    """Run the `what` statement of this database over `rows` (lists, JSON-ready)."""
    statement = UPSERTS[db.session.get_bind().dialect.name][what]
    db.session.execute(statement, {"rows": json.dumps(rows, allow_nan=False)})


def _naive_utc(value: datetime) -> datetime:
    return value.astimezone(UTC).replace(tzinfo=None)


# An attribute value to write: (profile_id, name, value, event_time, stream_id, message_id).
AttributeRow = tuple[int, str, Any, datetime, int, int]


def _upsert_attributes(rows: list[AttributeRow]) -> None:
    """Write attribute values where none is stored or the stored one is older (same event
    time: lower message id). `rows` hold each (profile_id, name) once."""
    if not rows:
        return
    # One order for every writer, so two of them never wait on each other's rows crosswise.
    rows = sorted(rows, key=lambda row: (row[0], row[1]))
    # Each message's time converted once, not once per attribute.
    as_stored = {moment: stored_time(moment) for moment in {row[3] for row in rows}}
    _upsert("attributes", [
        [profile_id, name, value, as_stored[moment], stream_id, message_id]
        for profile_id, name, value, moment, stream_id, message_id in rows])


# n new profiles in ONE statement (an executemany is a statement per row on SQLite, and a
# multi-row VALUES is compiled afresh for every n); the ids come back in any order.
NEW_PROFILES = {
    "postgresql": text("INSERT INTO profiles (created_at) SELECT :now FROM "
                       "generate_series(1, :n) RETURNING id"),
    "sqlite": text("INSERT INTO profiles (created_at) SELECT :now FROM "
                   "json_each(:slots) WHERE true RETURNING id"),
}


def _new_profiles(n: int) -> list[int]:
    now = _naive_utc(utcnow())
    if db.session.get_bind().dialect.name == "postgresql":
        found = db.session.execute(NEW_PROFILES["postgresql"], {"now": now, "n": n})
    else:
        found = db.session.execute(NEW_PROFILES["sqlite"], {
            "now": now.isoformat(sep=" ", timespec="microseconds"),
            "slots": json.dumps([0] * n)})
    return list(found.scalars())


class _Merges:
    """Profiles merged away in this batch and the profile each went into."""

    def __init__(self) -> None:
        self.into: dict[int, int] = {}

    def resolve(self, profile_id: int) -> int:
        while profile_id in self.into:
            profile_id = self.into[profile_id]
        return profile_id

    def merge(self, a: int, b: int) -> int:
        """Merge two locked profiles into the older (lower id); returns the survivor."""
        a, b = self.resolve(a), self.resolve(b)
        if a == b:
            return a
        winner, loser = min(a, b), max(a, b)
        rows = db.session.execute(select(
            ProfileAttribute.name, ProfileAttribute.value, ProfileAttribute.event_time,
            ProfileAttribute.stream_id, ProfileAttribute.message_id,
        ).where(ProfileAttribute.profile_id == loser)).all()
        _upsert_attributes([(winner, row.name, row.value, row.event_time, row.stream_id,
                             row.message_id) for row in rows])
        db.session.execute(delete(ProfileAttribute).where(ProfileAttribute.profile_id == loser))
        db.session.execute(update(ProfileIdentity).where(ProfileIdentity.profile_id == loser)
                           .values(profile_id=winner))
        db.session.execute(delete(Profile).where(Profile.id == loser))
        self.into[loser] = winner
        return winner


def apply(facts: list[Fact]) -> None:
    """Fold stored messages into the profiles, in the caller's transaction."""
    keys = identity_keys()
    work: list[tuple[Fact, list[Identity]]] = []
    for fact in sorted(facts, key=lambda fact: fact.message_id):
        if isinstance(fact.payload, dict):
            identities = sorted({(key, value) for key in keys
                                 if (value := normalise(key, fact.payload.get(key)))})
            if identities:
                work.append((fact, identities))
    if not work:
        return
    locked: set[int] = set()
    owners = _locked_owners({identity for _, ids in work for identity in ids}, locked)

    # Group the messages: those sharing an identity value, directly or through others,
    # end in one profile (union-find over existing profiles and new ones).
    parent: dict[tuple, tuple] = {}

    def root(node: tuple) -> tuple:
        while parent.get(node, node) != node:
            node = parent[node]
        return node

    claimed: dict[Identity, tuple] = {identity: ("p", owner) for identity, owner in owners.items()}
    placed: list[tuple] = []
    for n, (_, identities) in enumerate(work):
        nodes = {root(claimed[identity]) for identity in identities if identity in claimed}
        node = min(nodes) if nodes else ("n", n)
        for other in nodes:
            parent[other] = node
        for identity in identities:
            claimed.setdefault(identity, node)
        placed.append(node)

    groups: dict[tuple, dict[str, Any]] = defaultdict(
        lambda: {"profiles": set(), "new": [], "facts": []})
    for identity, node in claimed.items():
        group = groups[root(node)]
        if node[0] == "p":
            group["profiles"].add(node[1])
        if identity not in owners:
            group["new"].append(identity)
    for (fact, _), node in zip(work, placed, strict=True):
        groups[root(node)]["facts"].append(fact)

    merges = _Merges()
    fresh = [group for group in groups.values() if not group["profiles"]]
    if fresh:
        ids = _new_profiles(len(fresh))  # any new id fits any new group
        for group, profile_id in zip(fresh, ids, strict=True):
            group["profiles"].add(profile_id)
            locked.add(profile_id)
    for group in groups.values():
        survivor = min(group["profiles"])
        for other in sorted(group["profiles"] - {survivor}):
            survivor = merges.merge(survivor, other)
        group["survivor"] = survivor

    # New identity values; another writer may have claimed one meanwhile (it committed
    # first): then that profile and ours are one person, and merge.
    new_rows = sorted((identity, group["survivor"]) for group in groups.values()
                      for identity in group["new"])
    if new_rows:
        _upsert("identities", [[key, value, profile_id]
                               for (key, value), profile_id in new_rows])
        stored = _locked_owners({identity for identity, _ in new_rows}, locked)
        for identity, profile_id in new_rows:
            if merges.resolve(stored[identity]) != merges.resolve(profile_id):
                merges.merge(stored[identity], profile_id)

    best: dict[tuple[int, str], tuple] = {}
    for group in groups.values():
        survivor = merges.resolve(group["survivor"])
        for fact in group["facts"]:
            for name, value in fact.payload.items():
                if len(name) > 255:
                    continue
                rank = (fact.event_time, fact.message_id)
                kept = best.get((survivor, name))
                if kept is None or kept[0] < rank:
                    best[(survivor, name)] = (rank, value, fact.stream_id)
    _upsert_attributes([
        (profile_id, name, value, rank[0], stream_id, rank[1])
        for (profile_id, name), (rank, value, stream_id) in best.items()])


def rebuild(batch: int = 2000) -> int:
    """Drop every profile and build them again from the stored messages, in id order, a
    batch at a time, in the caller's transaction; how many profiles there are now. On
    PostgreSQL writers wait for it (their profile updates need the tables)."""
    if db.session.get_bind().dialect.name == "postgresql":
        db.session.execute(text("LOCK TABLE profiles, profile_identities, profile_attributes "
                                "IN EXCLUSIVE MODE"))
    db.session.execute(delete(ProfileAttribute))
    db.session.execute(delete(ProfileIdentity))
    db.session.execute(delete(Profile))
    after = 0
    while True:
        rows = db.session.execute(
            select(Message.id, Message.stream_id, Message.event_time, Message.payload)
            .where(Message.id > after).order_by(Message.id).limit(batch)).all()
        if not rows:
            break
        apply([Fact(row.id, row.stream_id, row.event_time, row.payload) for row in rows])
        after = rows[-1].id
    return db.session.scalar(select(func.count()).select_from(Profile)) or 0


@dataclass(frozen=True)
class Attribute:
    name: str
    value: Any
    event_time: datetime
    message_id: int
    stream: str | None  # None when the stream has been deleted since
    source: str | None  # the message's source ("job:12", "import:3", "collect")


@dataclass(frozen=True)
class ProfileView:
    id: int
    identities: list[Identity]
    attributes: list[Attribute]


def find(key: str, value: str) -> ProfileView | None:
    """The profile that owns this identity value (normalised first), or None."""
    normal = normalise(key, value)
    if normal is None:
        return None
    profile_id = db.session.scalar(select(ProfileIdentity.profile_id).where(
        ProfileIdentity.key == key, ProfileIdentity.value == normal))
    if profile_id is None:
        return None
    identities = [(row.key, row.value) for row in db.session.execute(
        select(ProfileIdentity.key, ProfileIdentity.value)
        .where(ProfileIdentity.profile_id == profile_id)
        .order_by(ProfileIdentity.key, ProfileIdentity.value))]
    rows = db.session.execute(
        select(ProfileAttribute, Stream.name, Message.source)
        .outerjoin(Stream, Stream.id == ProfileAttribute.stream_id)
        .outerjoin(Message, Message.id == ProfileAttribute.message_id)
        .where(ProfileAttribute.profile_id == profile_id)
        .order_by(ProfileAttribute.name)).all()
    return ProfileView(profile_id, identities, [
        Attribute(attribute.name, attribute.value, attribute.event_time, attribute.message_id,
                  stream, source) for attribute, stream, source in rows])


def snapshot() -> dict[frozenset[Identity], dict[str, tuple]]:
    """Every profile as plain data, keyed by its identity values (ids aside): what two
    ways of building profiles must agree on."""
    identities: dict[int, set[Identity]] = defaultdict(set)
    for row in db.session.execute(select(ProfileIdentity)).scalars():
        identities[row.profile_id].add((row.key, row.value))
    attributes: dict[int, dict[str, tuple]] = defaultdict(dict)
    for row in db.session.execute(select(ProfileAttribute)).scalars():
        attributes[row.profile_id][row.name] = (row.value, row.event_time, row.stream_id,
                                                row.message_id)
    profile_ids = db.session.scalars(select(Profile.id)).all()
    return {frozenset(identities[pid]): attributes[pid] for pid in profile_ids}
