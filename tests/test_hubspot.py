"""HubSpot against a loopback HubSpot (tests/loopback_hubspot.py): test connection, the
contact import and the audience-to-list export run by a real RQ worker, rate limits,
refused credentials, a run that breaks mid-way, and the OAuth sign-in with refresh."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import jsonschema
import pytest
from sqlalchemy import select

from portal import audiences, vault
from portal.datastore import write_messages
from portal.extensions import db
from portal.jobs import create_job, run_job_now
from portal.models import Authorization, Job, Message, Stream
from portal.models.types import utcnow
from providers import get_provider, hubspot
from providers.base import AuthError, OutMessage, RateLimited
from tests.conftest import canary
from tests.loopback_hubspot import START, HubSpotServer
from tests.test_job_path import events, fresh, kinds

TOKEN = "pat-na1-0123456789abcdef0123"
WRONG = "pat-na1-wrong-token-99999999"


@pytest.fixture
def server(monkeypatch) -> Iterator[HubSpotServer]:
    canary(TOKEN)
    with HubSpotServer(access_tokens={TOKEN}) as running:
        monkeypatch.setenv(hubspot.API_URL_ENV, running.base_url)
        yield running


@pytest.fixture
def owner(make_user):
    return make_user("operator")


def connect(owner, token: str = TOKEN) -> Authorization:
    provider = get_provider("hubspot")
    authorization = vault.create(provider, provider.auth_method("private_app"),
                                 label="HubSpot", description="",
                                 credentials={"access_token": token}, by=owner)
    db.session.commit()
    return authorization


def make_job(owner, authorization, job_type: str, **config) -> Job:
    provider = get_provider("hubspot")
    job = create_job(provider=provider, job_type=provider.job_type(job_type),
                     authorization=authorization, name=f"HubSpot {job_type}", description="",
                     config=config, created_by=owner,
                     schedule={"kind": "interval", "every_minutes": 60})
    db.session.commit()
    return job


def run_now(job: Job, owner) -> None:
    job = fresh(job)
    assert job.status == "sleeping", job.status
    run_job_now(job, by=owner)


def imported(stream: str = "contacts") -> list[Message]:
    return list(db.session.scalars(
        select(Message).join(Stream, Stream.id == Message.stream_id)
        .where(Stream.name == stream).order_by(Message.id)))


# -- Definitions and test connection ------------------------------------------------------


def test_schemas_are_valid_and_the_secret_is_write_only():
    provider = hubspot.PROVIDER
    assert provider.needs_authorization
    assert provider.auth_method("private_app").secret_fields == ("access_token",)
    assert provider.auth_method("oauth2").oauth.scopes == (
        "crm.objects.contacts.read", "crm.objects.contacts.write", "crm.lists.read",
        "crm.lists.write")
    for job_type in provider.job_types:
        schema = job_type.config_schema
        jsonschema.Draft202012Validator.check_schema(schema)
        assert set(schema["x-order"]) == set(schema["properties"])
        defaults = {name: spec["default"] for name, spec in schema["properties"].items()
                    if "default" in spec}
        jsonschema.validate({**defaults, "audience": "pro"} if job_type.kind == "export"
                            else defaults, schema)


def test_check_reads_one_contact(server):
    server.add_contact("ann@example.com")
    assert hubspot.check("private_app", {"access_token": TOKEN}).startswith(
        "Connected to HubSpot")
    assert server.requests == [("GET", "/crm/v3/objects/contacts")]


def test_check_with_a_refused_token_never_shows_it(server):
    with pytest.raises(AuthError) as caught:
        hubspot.check("private_app", {"access_token": WRONG})
    assert "refused the credentials (HTTP 401" in str(caught.value)
    assert WRONG not in str(caught.value) and "Private Apps" in str(caught.value)
    with pytest.raises(AuthError, match="no access token"):
        hubspot.check("private_app", {})


def test_rate_limits_use_retry_after_or_hubspots_interval(server):
    server.fail_next = [429]  # with Retry-After: 7
    with pytest.raises(RateLimited) as caught:
        hubspot.check("private_app", {"access_token": TOKEN})
    assert caught.value.retry_after == 7
    server.hubspot_429 = 1  # X-HubSpot-RateLimit-Interval-Milliseconds: 10000, no Retry-After
    with pytest.raises(RateLimited) as caught:
        hubspot.check("private_app", {"access_token": TOKEN})
    assert caught.value.retry_after == 10


def test_the_list_menu_offers_static_lists(server):
    newsletter = server.add_list("Newsletter")
    assert hubspot.lists({"access_token": TOKEN}) == [
        (newsletter, f"Newsletter ({newsletter})")]


# -- Import -------------------------------------------------------------------------------


def test_import_reads_every_contact_then_only_changes(app, work, owner, server):
    same = START + timedelta(days=1)
    for n in range(5):  # five contacts changed in the same millisecond: pages split them
        server.add_contact(f"tie{n}@example.com", at=same, firstname=f"T{n}")
    for n in range(3):
        server.add_contact(f"p{n}@example.com", lifecyclestage="lead")
    job = make_job(owner, connect(owner), "import_contacts", stream="contacts",
                   properties="email, firstname, lifecyclestage")
    assert work()
    first = imported()
    assert sorted(m.payload["email"] for m in first) == sorted(
        [f"tie{n}@example.com" for n in range(5)] + [f"p{n}@example.com" for n in range(3)])
    ann = next(m for m in first if m.payload["email"] == "tie0@example.com")
    assert ann.payload["firstname"] == "T0" and ann.event_time == same
    assert ann.dedupe_key == f"{ann.payload['id']}:{ann.payload['updated_at']}"
    assert fresh(job).omitted_total == 0, "nothing was read twice"
    # One sort per search (HubSpot's rule), and never an offset page.
    assert all(len(body["sorts"]) == 1 and "after" not in body for body in server.searches)

    # Nothing changed: nothing new. Then one contact changes: only it comes again.
    run_now(job, owner)
    assert work()
    assert len(imported()) == 8
    contact = server.by_email("p1@example.com")
    server.touch(int(contact["id"]), START + timedelta(days=2), lifecyclestage="customer")
    run_now(job, owner)
    assert work()
    latest = imported()[8:]
    assert [(m.payload["email"], m.payload["lifecyclestage"]) for m in latest] == [
        ("p1@example.com", "customer")]
    assert fresh(job).omitted_total == 0
    assert "error" not in kinds(job)


def test_the_search_cap_is_never_paged_past(app, work, owner, server):
    server.search_cap = 4  # HubSpot's is 10,000: the windows move instead of paging
    for n in range(15):
        server.add_contact(f"c{n}@example.com")
    job = make_job(owner, connect(owner), "import_contacts", stream="contacts")
    assert work()
    assert len(imported()) == 15 and "error" not in kinds(job)


def test_rate_limited_import_sleeps_until_hubspot_allows(app, work, owner, server):
    server.add_contact("ann@example.com")
    server.hubspot_429 = 1
    job = make_job(owner, connect(owner), "import_contacts", stream="contacts")
    before = utcnow()
    work()
    job = fresh(job)
    assert job.status == "sleeping" and imported() == []
    wait = (job.next_run_at - before).total_seconds()
    assert 9 <= wait <= 15, wait  # the 10-second interval HubSpot named
    # Run now, during the hold: HubSpot is not asked again.
    calls = len(server.requests)
    run_now(job, owner)
    work()
    assert len(server.requests) == calls and imported() == []
    # The ten seconds have passed.
    authorization = db.session.get(Authorization, job.authorization_id)
    authorization.rate_limited_until = utcnow() - timedelta(seconds=1)
    db.session.commit()
    run_now(job, owner)
    assert work()
    assert [m.payload["email"] for m in imported()] == ["ann@example.com"]


def test_a_refused_token_marks_the_authorization_unhealthy(app, work, owner, server):
    canary(WRONG)
    server.add_contact("ann@example.com")
    authorization = connect(owner, WRONG)
    job = make_job(owner, authorization, "import_contacts", stream="contacts")
    work()
    assert kinds(job)[-1] == "error" and imported() == []
    authorization = db.session.get(Authorization, authorization.id, populate_existing=True)
    assert authorization.health == "unhealthy"
    assert "refused the credentials" in authorization.health_message


def test_a_run_that_breaks_midway_resumes_from_the_cursor(app, work, owner, server):
    for n in range(9):
        server.add_contact(f"c{n}@example.com")
    server.fail_after_searches = 3  # pages of 2 (the tests' batch size): 3 pages, then 500s
    job = make_job(owner, connect(owner), "import_contacts", stream="contacts")
    work()
    job = fresh(job)
    assert job.status == "sleeping" and job.error_count == 1
    done = len(imported())
    assert 0 < done < 9
    cursor = dict(job.cursor)
    searches = len(server.searches)
    server.fail_after_searches = None
    run_now(job, owner)
    assert work()
    # The first search after the break starts where the cursor says, not from the top.
    resumed = server.searches[searches]["filterGroups"][0]["filters"][0]
    assert resumed["value"] == str(cursor["time_ms"])
    assert sorted(m.payload["email"] for m in imported()) == sorted(
        f"c{n}@example.com" for n in range(9))
    assert fresh(job).omitted_total == 0, "nothing written twice"


# -- Export -------------------------------------------------------------------------------


def people(*payloads: dict, at: int = 0) -> None:
    write_messages("people", [
        OutMessage(f"m{at + n}", datetime(2026, 3, 1, tzinfo=UTC) + timedelta(seconds=at + n),
                   payload) for n, payload in enumerate(payloads)], source="test")
    db.session.commit()


def pro_audience(owner):
    cleaned, errors = audiences.check({"name": "Pro plan", "match": "all", "conditions": [
        {"field": "plan", "op": "equals", "value": "pro"}]})
    assert errors == {}
    audience = audiences.create(cleaned, by=owner)
    db.session.commit()
    return audience


def test_export_upserts_adds_and_removes_list_members(app, work, owner, server):
    existing = server.add_contact("bob@example.com")
    people({"email": "ann@example.com", "plan": "pro", "firstname": "Ann"},
           {"email": "bob@example.com", "plan": "pro"},
           {"user_id": 7, "plan": "pro"},
           {"email": "cy@example.com", "plan": "free"})
    audience = pro_audience(owner)
    job = make_job(owner, connect(owner), "export_list", audience=audience.slug,
                   list_name="Portal pros")
    assert work()
    [(list_id, made)] = server.lists.items()
    assert made["name"] == "Portal pros"
    assert server.list_emails(list_id) == ["ann@example.com", "bob@example.com"]
    assert server.by_email("ann@example.com")["properties"]["firstname"] == "Ann"
    assert server.by_email("bob@example.com")["id"] == existing["id"], "upserted by email"
    job = fresh(job)
    assert (job.added_total, job.removed_total, job.omitted_total) == (2, 0, 1)

    people({"email": "ann@example.com", "plan": "free"},
           {"email": "cy@example.com", "plan": "pro"}, at=100)
    run_now(job, owner)
    assert work()
    assert len(server.lists) == 1, "the list named is found, not made again"
    assert server.list_emails(list_id) == ["bob@example.com", "cy@example.com"]
    assert "error" not in kinds(job)


def test_export_validation_errors_name_the_contact_and_property(app, work, owner, server):
    list_id = server.add_list("Pros")
    people({"email": "ann@example.com", "plan": "pro", "lifecyclestage": "wizard"})
    audience = pro_audience(owner)
    job = make_job(owner, connect(owner), "export_list", audience=audience.slug,
                   list_id=list_id, properties="lifecyclestage")
    work()
    job = fresh(job)
    assert job.status == "failed"
    said = " ".join(event.message for event in events(job))
    assert "property lifecyclestage of contact ann@example.com" in said
    assert server.list_emails(list_id) == []


def test_export_contacts_refused_in_a_batch_fail_the_job_clearly(app, work, owner, server):
    server.multi_status = True  # HubSpot takes the good ones and names the refused (207)
    list_id = server.add_list("Pros")
    people({"email": "ann@example.com", "plan": "pro", "lifecyclestage": "lead"},
           {"email": "bob@example.com", "plan": "pro", "lifecyclestage": "wizard"})
    audience = pro_audience(owner)
    job = make_job(owner, connect(owner), "export_list", audience=audience.slug,
                   list_id=list_id, properties="lifecyclestage")
    work()
    assert fresh(job).status == "failed"
    said = " ".join(event.message for event in events(job))
    assert "property lifecyclestage of contact bob@example.com" in said
    assert "ann@example.com" not in said.split("refused some contacts")[1]
    assert server.list_emails(list_id) == []  # nothing added, the window not recorded


# -- OAuth --------------------------------------------------------------------------------

CALLBACK = "http://localhost/vault/oauth/hubspot/callback"


@pytest.fixture
def oauth(app, monkeypatch):
    """An authorization server and the HubSpot stand-in, which accepts only the newest
    access token the authorization server issued."""
    from tests.oauth_server import OAuthServer
    from tests.test_oauth_flow import LatestToken

    with OAuthServer(redirect_uris=[CALLBACK], scopes=hubspot.PROVIDER.auth_method(
            "oauth2").oauth.scopes) as issuer, HubSpotServer() as hub:
        hub.access_tokens = LatestToken(issuer)
        app.config.update({
            "PORTAL_OAUTH_HUBSPOT_CLIENT_ID": issuer.client.client_id,
            "PORTAL_OAUTH_HUBSPOT_CLIENT_SECRET": issuer.client.client_secret,
            "PORTAL_OAUTH_HUBSPOT_AUTHORIZE_URL": issuer.authorize_url,
            "PORTAL_OAUTH_HUBSPOT_TOKEN_URL": issuer.token_url,
        })
        monkeypatch.setenv(hubspot.API_URL_ENV, hub.base_url)
        yield issuer, hub


def test_oauth_sign_in_then_a_worker_refreshes_the_expiring_token(client, auth, oauth, work):
    import httpx

    from tests.test_oauth_flow import record_tokens

    issuer, hub = oauth
    issuer.access_token_lifetime = 60  # inside the refresh margin: the worker renews it
    auth.login("operator")
    response = client.post("/vault/new/hubspot/oauth2", data={
        "csrf_token": auth.csrf(), "label": "HubSpot via OAuth", "description": ""})
    assert response.status_code == 303, response.get_data(as_text=True)
    authorize = response.headers["Location"]
    assert authorize.startswith(issuer.authorize_url) and "crm.lists.write" in authorize
    answer = httpx.get(authorize, follow_redirects=False)  # the person consents
    assert answer.headers["location"].startswith(CALLBACK)
    assert client.get(answer.headers["location"].removeprefix("http://localhost")
                      ).status_code == 303
    record_tokens(issuer)
    authorization = db.session.scalars(select(Authorization)).one()
    assert vault.current_credentials(authorization)["hub_domain"] == "acme.hubspot.com"
    assert authorization.public["values"]["hub_domain"] == "acme.hubspot.com"

    hub.add_contact("ann@example.com")
    job = make_job(authorization.owner, authorization, "import_contacts", stream="contacts")
    assert work()
    record_tokens(issuer)
    assert issuer.refresh_count() == 1  # renewed before HubSpot was called with it
    assert [m.payload["email"] for m in imported()] == ["ann@example.com"]
    assert "error" not in kinds(job)
    authorization = db.session.get(Authorization, authorization.id, populate_existing=True)
    assert authorization.health != "unhealthy"
