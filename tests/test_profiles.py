"""Profiles (newest event time wins, identity merges, rebuild) and the streams' running
totals, through the real write path (write_messages) on the test database."""

from __future__ import annotations

import random
import re
import threading
from datetime import UTC, datetime, timedelta

import pytest
from flask_migrate import upgrade
from sqlalchemy import create_engine, func, select, text

from portal import profiles
from portal.datastore import write_messages
from portal.extensions import db
from portal.models import Message, Profile, ProfileIdentity, Stream, StreamField
from providers.base import OutMessage
from tests.conftest import _make_app

T0 = datetime(2024, 1, 1, tzinfo=UTC)
_keys = iter(range(10**9))


def at(minutes: int) -> datetime:
    return T0 + timedelta(minutes=minutes)


def send(stream: str, *messages: tuple[int, dict], source: str = "job:1") -> tuple[int, int]:
    """Write (minute, payload) messages as one batch and commit."""
    result = write_messages(stream, [OutMessage(f"k{next(_keys)}", at(minute), payload)
                                     for minute, payload in messages], source=source)
    db.session.commit()
    return result


def attributes(key: str, value: str) -> dict:
    found = profiles.find(key, value)
    assert found is not None, f"no profile for {key}={value}"
    return {attribute.name: attribute.value for attribute in found.attributes}


def profile_count() -> int:
    return db.session.scalar(select(func.count()).select_from(Profile))


def test_the_newest_event_time_wins_whatever_the_arrival_order(app):
    send("s", (10, {"email": "a@x.io", "plan": "pro", "city": "Oslo"}))
    send("s", (5, {"email": "a@x.io", "plan": "free", "name": "Ann"}))  # older, later
    send("s", (20, {"email": "a@x.io", "city": "Rome"}))
    send("s", (1, {"email": "a@x.io", "city": "Paris", "plan": "trial"}))
    assert attributes("email", "a@x.io") == {"email": "a@x.io", "plan": "pro",
                                              "city": "Rome", "name": "Ann"}
    found = profiles.find("email", "a@x.io")
    times = {attribute.name: attribute.event_time for attribute in found.attributes}
    assert times == {"email": at(20), "plan": at(10), "city": at(20), "name": at(5)}
    assert profile_count() == 1


def test_within_one_batch_the_newest_wins_too(app):
    send("s", (3, {"email": "a@x.io", "plan": "b"}), (9, {"email": "a@x.io", "plan": "c"}),
         (1, {"email": "a@x.io", "plan": "a"}))
    assert attributes("email", "a@x.io")["plan"] == "c"


def test_a_tie_goes_to_the_higher_message_id_whatever_the_order_applied(app):
    send("s", (0, {"email": "seed@x.io"}))
    stream_id = db.session.scalar(select(Stream.id))
    # Same event time: message 900 beats 700, applied in either order.
    profiles.apply([profiles.Fact(900, stream_id, at(5), {"email": "t@x.io", "plan": "high"})])
    profiles.apply([profiles.Fact(700, stream_id, at(5), {"email": "t@x.io", "plan": "low"})])
    profiles.apply([profiles.Fact(800, stream_id, at(5), {"user_id": 1, "plan": "mid"}),
                    profiles.Fact(799, stream_id, at(5), {"user_id": 1, "plan": "lower"})])
    assert attributes("email", "t@x.io")["plan"] == "high"
    assert attributes("user_id", "1")["plan"] == "mid"
    # Through write_messages: the later write has the higher id and wins the tie.
    send("s", (7, {"email": "w@x.io", "plan": "first"}))
    send("s", (7, {"email": "w@x.io", "plan": "second"}))
    assert attributes("email", "w@x.io")["plan"] == "second"


def test_emails_compare_without_case_or_spaces_and_numbers_as_text(app):
    send("s", (1, {"email": "Ann@Example.COM", "a": 1}))
    send("s", (2, {"email": "  ann@example.com ", "b": 2}))
    send("s", (3, {"user_id": 42, "c": 3}), (4, {"user_id": " 42", "d": 4}),
         (5, {"user_id": 42.0, "e": 5}))
    assert profile_count() == 2
    assert set(attributes("email", "ANN@example.com")) == {"email", "a", "b"}
    assert set(attributes("user_id", "42")) == {"user_id", "c", "d", "e"}
    identities = db.session.scalars(select(ProfileIdentity.value).order_by(
        ProfileIdentity.value)).all()
    assert identities == ["42", "ann@example.com"]
    # A user_id is not an email: its case is kept.
    send("s", (6, {"user_id": "AbC"}), (7, {"user_id": "abc"}))
    assert profile_count() == 4


@pytest.mark.parametrize("value", ["", "   ", None, True, [1], {"a": 1}, "x" * 256])
def test_a_value_that_is_no_identity_makes_no_profile(app, value):
    send("s", (1, {"email": value, "plan": "pro"}), (2, {"plan": "no keys at all"}))
    assert profile_count() == 0


def test_a_message_naming_two_profiles_merges_them_attribute_by_attribute(app):
    send("s", (10, {"email": "a@x.io", "plan": "pro", "city": "Oslo"}))
    send("s", (20, {"user_id": "u1", "plan": "free", "name": "Ann"}))
    assert profile_count() == 2
    send("s", (15, {"email": "A@x.io", "user_id": "u1", "city": "Bergen"}))
    assert profile_count() == 1
    merged = attributes("email", "a@x.io")
    assert merged == {"email": "A@x.io", "user_id": "u1", "plan": "free", "city": "Bergen",
                      "name": "Ann"}
    assert attributes("user_id", "u1") == merged
    found = profiles.find("user_id", "u1")
    assert found.identities == [("email", "a@x.io"), ("user_id", "u1")]
    # The older profile (lower id) survives.
    assert found.id == 1


def test_merges_chain_inside_one_batch_and_across_batches(app):
    send("s", (1, {"email": "a@x.io", "n": 1}), (2, {"user_id": "b", "n": 2}),
         (3, {"email": "c@x.io", "n": 3}))
    assert profile_count() == 3
    send("s", (4, {"email": "a@x.io", "user_id": "b"}), (0, {"user_id": "b", "email": "c@x.io"}),
         (5, {"email": "new@x.io", "user_id": "fresh"}), (6, {"user_id": "fresh", "m": 1}))
    assert profile_count() == 2
    assert attributes("email", "c@x.io")["n"] == 3
    assert attributes("email", "c@x.io")["user_id"] == "b"  # minute 4 beats minute 0
    assert attributes("email", "new@x.io")["m"] == 1


def test_the_identity_keys_are_a_setting(app):
    app.config["PORTAL_IDENTITY_KEYS"] = "customer_email, account"
    send("s", (1, {"email": "a@x.io", "customer_email": "Z@X.io", "plan": "a"}))
    send("s", (2, {"account": "acc-1", "customer_email": "z@x.io", "plan": "b"}))
    assert profile_count() == 1
    assert profiles.find("email", "a@x.io") is None
    assert attributes("account", "acc-1")["plan"] == "b"
    assert attributes("customer_email", "z@x.io")["email"] == "a@x.io"


def random_history(count: int, seed: int, people: int = 12) -> list[tuple[int, dict]]:
    """Messages about a few people with overlapping identities, in random event order."""
    rng = random.Random(seed)
    messages = []
    for n in range(count):
        person = rng.randrange(people)
        payload = {"plan": rng.choice(["free", "pro", "team", None]), f"f{n % 5}": n}
        if rng.random() < 0.7:
            payload["email"] = f"P{person}@x.io" if rng.random() < 0.5 else f"p{person}@x.io"
        if rng.random() < 0.5 or "email" not in payload:
            payload["user_id"] = person if rng.random() < 0.5 else str(person)
        messages.append((rng.randrange(50), payload))
    return messages


def expected_profiles(messages: list[tuple[int, int, datetime, dict]]) -> dict:
    """What the profiles must hold, worked out plainly: the messages joined by shared
    identity values, each attribute the value of the newest (event time, message id)."""
    owner: dict = {}

    def find(x):
        while owner.get(x, x) != x:
            x = owner[x]
        return x

    for message_id, _, _, payload in messages:
        ids = [(k, profiles.normalise(k, payload.get(k))) for k in ("email", "user_id")]
        ids = [i for i in ids if i[1]]
        for other in ids[1:]:
            owner[find(other)] = find(ids[0])
        owner.setdefault(ids[0], ids[0])
        owner[("m", message_id)] = find(ids[0])
    groups: dict = {}
    for message_id, stream_id, event_time, payload in messages:
        group = groups.setdefault(find(("m", message_id)), {"ids": set(), "attrs": {}})
        group["ids"].update((k, profiles.normalise(k, payload.get(k))) for k in
                            ("email", "user_id") if profiles.normalise(k, payload.get(k)))
        for name, value in payload.items():
            kept = group["attrs"].get(name)
            if kept is None or (kept[1], kept[3]) < (event_time, message_id):
                group["attrs"][name] = (value, event_time, stream_id, message_id)
    return {frozenset(group["ids"]): group["attrs"] for group in groups.values()}


def stored_messages() -> list[tuple[int, int, datetime, dict]]:
    return [tuple(row) for row in db.session.execute(
        select(Message.id, Message.stream_id, Message.event_time, Message.payload)
        .order_by(Message.id))]


def test_out_of_order_batches_give_the_plain_answer_and_rebuild_gives_the_same(app):
    history = random_history(300, seed=7)
    for start in range(0, len(history), 23):
        send("mixed" if start % 2 else "other", *history[start:start + 23])
    incremental = profiles.snapshot()
    assert incremental == expected_profiles(stored_messages())
    assert 1 < len(incremental) <= 12
    result = app.test_cli_runner().invoke(args=["data", "rebuild", "--batch", "17"])
    assert result.exit_code == 0, result.output
    assert f"Rebuilt {len(incremental)} profile(s)" in result.output
    db.session.expire_all()
    assert profiles.snapshot() == incremental


def test_rebuild_reads_messages_a_batch_at_a_time(app, monkeypatch):
    send("s", *[(n, {"email": f"u{n % 4}@x.io", "n": n}) for n in range(30)])
    before = profiles.snapshot()
    seen: list[int] = []
    real = profiles.apply
    monkeypatch.setattr(profiles, "apply", lambda facts: (seen.append(len(facts)), real(facts)))
    assert profiles.rebuild(batch=8) == 4
    assert seen == [8, 8, 8, 6]
    assert profiles.snapshot() == before


def hammer(app, worker: int, rounds: list[list[tuple[int, dict]]], errors: list) -> None:
    try:
        with app.app_context():
            for n, batch in enumerate(rounds):
                # A third of the batches go to a stream both write to (its totals
                # race), the rest to the worker's own (the profiles race).
                write_messages("w0" if n % 3 == 0 else f"w{worker}", [
                    OutMessage(f"w{worker}-{n}-{i}", at(minute), payload)
                    for i, (minute, payload) in enumerate(batch)], source=f"job:{worker}")
                db.session.commit()
            db.session.remove()
    except Exception as exc:  # reported by the test
        errors.append(repr(exc))


def test_two_writers_at_once_lose_no_update_and_make_no_duplicate(app):
    """Two real threads, each with its own session and connection, write batches about
    the same people (new ones too, and messages that merge them) at the same time."""
    for name in ("w0", "w1", "w2"):  # the streams exist before the race
        send(name, (0, {"plan": "none"}))
    rounds = {worker: [random_history(6, seed=worker * 1000 + n, people=6) for n in range(60)]
              for worker in (1, 2)}
    errors: list[str] = []
    threads = [threading.Thread(target=hammer, args=(app, worker, rounds[worker], errors))
               for worker in rounds]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not errors, errors
    db.session.expire_all()
    about_someone = [m for m in stored_messages() if any(
        profiles.normalise(key, m[3].get(key)) for key in ("email", "user_id"))]
    assert profiles.snapshot() == expected_profiles(about_someone)
    # One identity value, one profile.
    assert db.session.scalar(select(func.count()).select_from(ProfileIdentity)) == len(
        {i for ids in profiles.snapshot() for i in ids})
    # The running totals lost nothing either.
    for stream in db.session.scalars(select(Stream)):
        stored = [m for m in stored_messages() if m[1] == stream.id]
        # w0: 20 batches of 6 from each worker; w1, w2: 40 of their own.
        assert stream.message_count == len(stored) == 1 + 6 * 40
        counted = dict(db.session.execute(select(StreamField.name, StreamField.count)
                                          .where(StreamField.stream_id == stream.id)).all())
        fields: dict[str, int] = {}
        for m in stored:
            for name in m[3]:
                fields[name] = fields.get(name, 0) + 1
        assert counted == fields


@pytest.mark.parametrize("existing", [False, True], ids=["new-person", "known-person"])
def test_a_second_writer_waits_for_the_first_and_then_merges_into_its_profile(app, existing):
    """Writer A holds its transaction open after writing about a person; writer B, about
    the same person from another stream with an older event time, must wait for A (row
    lock or identity conflict on PostgreSQL, the write lock on SQLite) and then add to
    A's profile, not beside it, and not over A's newer value."""
    if existing:
        send("seed", (0, {"email": "x@x.io", "plan": "seed"}))
    a_written, release, b_done = threading.Event(), threading.Event(), threading.Event()
    errors: list[str] = []

    def writer_a():
        try:
            with app.app_context():
                write_messages("a", [OutMessage("a1", at(20), {"email": "x@x.io",
                                                               "plan": "new"})], source="job:1")
                a_written.set()
                release.wait(30)
                db.session.commit()
                db.session.remove()
        except Exception as exc:
            errors.append(repr(exc))
            a_written.set()

    def writer_b():
        try:
            with app.app_context():
                write_messages("b", [OutMessage("b1", at(10), {
                    "email": "X@x.io", "user_id": "u7", "plan": "old", "city": "Oslo"})],
                    source="collect")
                db.session.commit()
                db.session.remove()
                b_done.set()
        except Exception as exc:
            errors.append(repr(exc))

    first = threading.Thread(target=writer_a)
    first.start()
    assert a_written.wait(30)
    second = threading.Thread(target=writer_b)
    second.start()
    assert not b_done.wait(1.0), "the second writer did not wait for the first"
    release.set()
    first.join(30)
    second.join(30)
    assert not errors, errors
    assert b_done.is_set()
    db.session.expire_all()
    assert profile_count() == 1
    assert attributes("user_id", "u7") == {"email": "x@x.io", "plan": "new", "user_id": "u7",
                                            "city": "Oslo"}


def test_stream_totals_count_what_was_added_not_what_was_skipped(app):
    write_messages("s", [OutMessage("a", at(5), {"email": "a@x.io", "plan": "pro"}),
                         OutMessage("b", at(9), {"email": "b@x.io"})], source="import:3")
    db.session.commit()
    added, omitted = write_messages("s", [OutMessage("a", at(50), {"email": "a@x.io"}),
                                          OutMessage("c", at(2), {"x": 1})], source="collect")
    db.session.commit()
    assert (added, omitted) == (1, 1)
    stream = db.session.scalar(select(Stream))
    assert stream.message_count == 3
    assert stream.last_event_at == at(9)
    assert stream.last_ingested_at is not None
    assert dict(db.session.execute(select(StreamField.name, StreamField.count)).all()) == {
        "email": 2, "plan": 1, "x": 1}
    assert db.session.scalars(select(Message.source).order_by(Message.id)).all() == [
        "import:3", "import:3", "collect"]
    # The omitted duplicate did not touch the profile either.
    assert attributes("email", "a@x.io")["plan"] == "pro"
    assert profiles.find("email", "a@x.io").attributes[0].event_time == at(5)


def test_the_migration_backfills_the_totals_of_existing_messages(tmp_path, redis_url):
    url = f"sqlite:///{tmp_path / 'old.db'}"
    app = _make_app(url, redis_url, tmp_path / "instance")
    with app.app_context():
        upgrade(revision="f2b8d4a6c1e3")
        engine = create_engine(url)
        with engine.begin() as connection:
            connection.execute(text("INSERT INTO streams (id, name, created_at) VALUES "
                                    "(1, 'old', '2024-01-01 00:00:00.000000'), "
                                    "(2, 'empty', '2024-01-01 00:00:00.000000')"))
            for n, (when, payload) in enumerate([
                    ("2024-01-02 00:00:00.000000", '{"email": "a", "plan": "x"}'),
                    ("2024-01-05 00:00:00.000000", '{"email": "b"}'),
                    ("2024-01-03 00:00:00.000000", '[1, 2]')]):
                connection.execute(text(
                    "INSERT INTO messages (stream_id, dedupe_key, event_time, ingested_at, "
                    "source, payload) VALUES (1, :key, :when, :when, 'api', :payload)"),
                    {"key": f"k{n}", "when": when, "payload": payload})
        engine.dispose()
        upgrade()
        old = db.session.get(Stream, 1)
        assert (old.message_count, old.last_event_at) == (3, datetime(2024, 1, 5, tzinfo=UTC))
        assert db.session.get(Stream, 2).message_count == 0
        assert dict(db.session.execute(select(StreamField.name, StreamField.count)).all()) == {
            "email": 2, "plan": 1}
        db.session.remove()
        db.engine.dispose()


# --- Pages ------------------------------------------------------------------------------

def test_the_data_page_lists_totals_and_fields(client, auth):
    auth.login("viewer")
    send("signups", *[(n, {"email": f"u{n}@x.io", **({"plan": "pro"} if n < 3 else {})})
                      for n in range(10)])
    page = client.get("/data").get_data(as_text=True)
    row = re.search(r'<tr data-stream="signups">.*?</tr>', page, re.S).group(0)
    assert '<td class="text-end">10</td>' in row
    assert re.search(r"<code>email</code>&nbsp;10, <code>plan</code>&nbsp;3", row)
    assert 'id="find-profile"' in page
    stream_page = client.get("/data/streams/signups").get_data(as_text=True)
    assert "2 field names seen" in stream_page


def test_find_a_user_shows_each_attribute_with_its_time_and_source(client, auth):
    auth.login("viewer")
    send("signups", (10, {"email": "Ann@x.io", "plan": "pro", "tags": ["a", "b"]}),
         source="job:12")
    send("events", (20, {"email": "ann@x.io", "plan": "team"}), source="import:4")
    page = client.get("/data/profiles", query_string={"key": "email",
                                                      "value": " ANN@X.IO "}).get_data(
        as_text=True)
    assert 'id="profile-heading"' in page
    plan = re.search(r'<tr data-attribute="plan">.*?</tr>', page, re.S).group(0)
    assert "team" in plan and 'href="/data/streams/events"' in plan and "import:4" in plan
    assert re.search(r'<time class="when" datetime="2024-01-01T00:20:00Z"', plan)
    tags = re.search(r'<tr data-attribute="tags">.*?</tr>', page, re.S).group(0)
    assert '<a href="/jobs/12">Job 12</a>' in tags and '<code>["a", "b"]</code>' in tags


def test_find_a_user_says_clearly_when_nothing_is_found_or_the_input_is_wrong(client, auth):
    auth.login("viewer")
    send("s", (1, {"email": "a@x.io"}))
    missing = client.get("/data/profiles?key=email&value=nobody@x.io")
    assert missing.status_code == 200
    assert "No profile has email “nobody@x.io”" in missing.get_data(as_text=True)
    bad_key = client.get("/data/profiles?key=password&value=x").get_data(as_text=True)
    assert 'id="profile-key-error"' in bad_key and "Choose one of the identity keys" in bad_key
    empty = client.get("/data/profiles?key=email&value=+").get_data(as_text=True)
    assert 'id="profile-value-error"' in empty
    assert client.get("/data/profiles?key=email&value=" + "x" * 5000).status_code == 200
    assert client.get("/data/profiles").status_code == 200


def test_find_a_user_needs_a_signed_in_viewer(client, auth):
    response = client.get("/data/profiles?key=email&value=a@x.io")
    assert response.status_code in (302, 303) and "/login" in response.headers["Location"]
    auth.login("viewer")
    assert client.get("/data/profiles?key=email&value=a@x.io").status_code == 200
