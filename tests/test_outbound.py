"""The outbound request policy (server-side request forgery): the address check with every
form an address can take (no traffic), then real requests to loopback servers only: refused
before any connection, allowed by PORTAL_OUTBOUND_ALLOW, the connection made to the address
that was checked (DNS rebinding), redirects, what of a reply a message may repeat, and the
same policy on Test connection, the OAuth token exchange and refresh, and worker processes."""

from __future__ import annotations

import socket
import socketserver
import ssl
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
import requests
from authlib.integrations.requests_client import OAuth2Session
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from sqlalchemy import select
from werkzeug.serving import make_server
from werkzeug.wrappers import Request, Response

from portal import create_app, vault
from portal.config import ConfigError as SettingsError
from portal.config import load_settings
from portal.datastore import write_messages
from portal.extensions import db
from portal.jobs import create_job
from portal.models import Authorization, JobEvent
from portal.models.types import utcnow
from providers import get_provider, outbound, webhook
from providers.base import ConfigError, OutMessage, ProviderError
from providers.http import http_call
from providers.outbound import OutboundRefused, Policy
from tests.conftest import canary
from tests.loopback import AnsweringServer, WebhookReceiver, problem
from tests.test_oauth_flow import consent, oauth, signed_in, start  # noqa: F401  (fixture)
from tests.test_vault import HX, form, webhook_authorization

NOTHING = Policy()  # production's default: no non-public address at all


def ok(_request: Request) -> Response:
    return Response("fine", status=200)


# --- the address check (no traffic) ------------------------------------------------------

@pytest.mark.parametrize(("written", "meant"), [
    ("2130706433", "127.0.0.1"), ("0177.0.0.1", "127.0.0.1"), ("0x7f.1", "127.0.0.1"),
    ("127.1", "127.0.0.1"), ("0x7f000001", "127.0.0.1"), ("[::ffff:127.0.0.1]", "127.0.0.1"),
    ("::ffff:7f00:1", "127.0.0.1"), ("012.0.0.1", "10.0.0.1"), ("169.254.43518", "169.254.169.254"),
    ("[::1]", "::1"), ("8.8.8.8", "8.8.8.8"),
])
def test_odd_address_forms_are_read_as_the_resolver_reads_them(written, meant):
    assert str(outbound.parse_address(written)) == meant


@pytest.mark.parametrize("name", ["hooks.example.com", "localhost", "127.0.0.1.nip.io", ""])
def test_names_are_not_addresses(name):
    assert outbound.parse_address(name) is None


@pytest.mark.parametrize(("address", "kind"), [
    ("127.0.0.1", "loopback"), ("127.255.0.9", "loopback"), ("::1", "loopback"),
    ("169.254.169.254", "cloud metadata"), ("169.254.0.7", "link-local"),
    ("fe80::1", "link-local"), ("10.0.0.1", "private"), ("172.16.0.1", "private"),
    ("172.31.255.255", "private"), ("192.168.1.1", "private"), ("fc00::1", "private"),
    ("fd12:3456::1", "private"), ("100.64.0.1", "carrier-grade NAT"),
    ("0.0.0.0", "unspecified"), ("::", "unspecified"), ("0.1.2.3", "private"),
    ("224.0.0.1", "multicast"), ("239.255.255.250", "multicast"), ("ff02::1", "multicast"),
    ("240.0.0.1", "reserved"), ("255.255.255.255", "reserved"), ("192.0.2.10", "private"),
    ("198.18.0.1", "private"), ("2001:db8::1", "private"), ("fec0::1", ""),
    ("::ffff:10.0.0.1", "private"), ("::ffff:169.254.169.254", "metadata"),
    ("64:ff9b::7f00:1", "loopback (in an IPv6 address)"),
    ("2002:a00:1::", "private (in an IPv6 address)"), ("::7f00:1", "loopback"),
])
def test_non_public_addresses_are_refused(address, kind):
    with pytest.raises(OutboundRefused) as caught:
        outbound.check_address(address, 80, policy=NOTHING)
    message = str(caught.value)
    assert kind in message and "PORTAL_OUTBOUND_ALLOW" in message
    assert caught.value.code == "outbound_refused" and not caught.value.retryable
    assert isinstance(caught.value, ConfigError)  # a job fails at once and says why


@pytest.mark.parametrize("address", [
    "8.8.8.8", "1.1.1.1", "93.184.216.34", "2606:4700:4700::1111", "64:ff9b::808:808",
    "::ffff:8.8.4.4",
])
def test_public_addresses_pass(address):
    assert outbound.check_address(address, 443, policy=NOTHING)


@pytest.mark.parametrize("host", ["2130706433", "0177.0.0.1", "127.1", "[::ffff:127.0.0.1]",
                                  "0x7f.0.0.1"])
def test_odd_literal_hosts_are_checked_as_what_they_mean(host):
    with pytest.raises(OutboundRefused, match="loopback"):
        outbound.resolve(host, 80, policy=NOTHING)
    assert [str(a) for a in outbound.resolve(host, 80, policy=Policy.parse("127.0.0.0/8"))] == [
        "127.0.0.1"]


def test_a_name_is_checked_by_every_address_it_resolves_to():
    # localhost resolves (from /etc/hosts) to loopback addresses only.
    with pytest.raises(OutboundRefused, match="localhost:80: it is a loopback address"):
        outbound.resolve("localhost", 80, policy=NOTHING)
    with pytest.raises(OutboundRefused):
        outbound.check_url("http://LOCALHOST./x", policy=NOTHING)
    assert all(a.is_loopback for a in outbound.check_url(
        "http://localhost:8080/", policy=Policy.parse("localhost")))


def test_the_allow_list_syntax():
    policy = Policy.parse(" 10.0.0.0/8 , 192.168.1.20:8443, [fd00::1]:443, fd00:1::/32, "
                          "hooks.internal, *.corp.example:8080, ")
    allowed = [("10.9.8.7", 1), ("192.168.1.20", 8443), ("fd00::1", 443), ("fd00:1::5", 22)]
    for address, port in allowed:
        assert outbound.check_address(address, port, policy=policy)
    refused = [("192.168.1.20", 80), ("fd00::1", 80), ("172.16.0.1", 443), ("127.0.0.1", 80)]
    for address, port in refused:
        with pytest.raises(OutboundRefused):
            outbound.check_address(address, port, policy=policy)
    # A listed name may resolve to a private address; only on its port if one is given.
    assert outbound.check_address("10.0.0.1", 80, host="Hooks.Internal.", policy=policy)
    assert outbound.check_address("172.16.0.9", 8080, host="a.b.corp.example", policy=policy)
    for host, port in (("a.corp.example", 80), ("corp.example", 8080), ("xhooks.internal", 80)):
        with pytest.raises(OutboundRefused):
            outbound.check_address("172.16.0.9", port, host=host, policy=policy)
    for bad in ("10.1.2.3/8", "hooks.internal:99999", "10.0.0.0/8:", "not a host", "a:b:c/7"):
        with pytest.raises(ValueError, match="PORTAL_OUTBOUND_ALLOW"):
            Policy.parse(bad)


def test_the_setting_defaults_and_a_bad_value(tmp_path, monkeypatch, redis_url):
    monkeypatch.delenv("PORTAL_OUTBOUND_ALLOW", raising=False)
    keys = {"SECRET_KEY": "k", "PORTAL_VAULT_KEYS": "x"}
    assert load_settings(str(tmp_path))["PORTAL_OUTBOUND_ALLOW"] == "127.0.0.0/8,::1"
    production = load_settings(str(tmp_path), {"PORTAL_ENV": "production", **keys})
    assert production["PORTAL_OUTBOUND_ALLOW"] == ""
    monkeypatch.setenv("PORTAL_OUTBOUND_ALLOW", "10.0.0.0/8")
    assert load_settings(str(tmp_path))["PORTAL_OUTBOUND_ALLOW"] == "10.0.0.0/8"
    with outbound.using(outbound.current()):  # create_app sets the process's policy
        create_app({"INSTANCE_PATH": str(tmp_path), "REDIS_URL": redis_url})
        assert outbound.current() == Policy.parse("10.0.0.0/8")
        with pytest.raises(SettingsError, match="PORTAL_OUTBOUND_ALLOW: '10.1.2.3/8'"):
            create_app({"INSTANCE_PATH": str(tmp_path), "REDIS_URL": redis_url,
                        "PORTAL_OUTBOUND_ALLOW": "10.1.2.3/8"})


# --- real requests, to loopback only ------------------------------------------------------

def test_loopback_is_refused_before_any_connection_unless_allowed():
    with WebhookReceiver() as hook:
        port = hook.server_port
        for url in (hook.url, f"http://localhost:{port}/hook", f"http://2130706433:{port}/x"):
            with outbound.using(NOTHING), pytest.raises(OutboundRefused):
                webhook.check("open", {"url": url})
        with outbound.using(Policy.parse(f"127.0.0.1:{port + 1}")), pytest.raises(
                OutboundRefused):
            webhook.check("open", {"url": hook.url})  # another port only
        assert hook.received == []  # nothing reached the server
        with outbound.using(Policy.parse("127.0.0.1/32")):
            assert webhook.check("open", {"url": hook.url}) == "Endpoint answered 204"
        with outbound.using(Policy.parse(f"localhost:{port}")):
            assert webhook.check("open", {"url": f"http://localhost:{port}/hook"})
    assert len(hook.received) == 2


@pytest.fixture
def rebinding(monkeypatch) -> Iterator[dict]:
    """A resolver that answers "rebind.test" with 127.0.0.2 the first time and 127.0.0.1
    after: what a hostile DNS server does to get past a check made before the connection.
    (The C resolver stands in for that DNS server; our code is not replaced.)"""
    real = socket.getaddrinfo
    lookups: list[str] = []

    def hostile(host, port, *args, **kwargs):
        if host != "rebind.test":
            return real(host, port, *args, **kwargs)
        lookups.append(host)
        return real("127.0.0.2" if len(lookups) == 1 else "127.0.0.1", port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", hostile)
    with AnsweringServer(ok, host="127.0.0.2") as checked:
        with AnsweringServer(ok, port=checked.server_port) as internal:
            yield {"checked": checked, "internal": internal, "lookups": lookups,
                   "url": f"http://rebind.test:{checked.server_port}/in"}


@pytest.mark.parametrize("client", ["httpx", "requests"])
def test_the_connection_goes_to_the_address_that_was_checked(rebinding, client):
    def get() -> None:
        if client == "httpx":
            http_call("GET", rebinding["url"], service="the endpoint")
        else:
            outbound.guard_session(requests.Session()).get(rebinding["url"], timeout=10)

    with outbound.using(Policy.parse("127.0.0.2/32")):
        get()
        [seen] = rebinding["checked"].received
        assert seen.headers["Host"] == f"rebind.test:{rebinding['checked'].server_port}"
        assert rebinding["lookups"] == ["rebind.test"]  # resolved once, for the check
        with pytest.raises(OutboundRefused, match="rebind.test"):
            get()  # now the name answers 127.0.0.1
    assert rebinding["internal"].received == []


def test_redirects_are_not_followed_and_every_hop_is_checked():
    with AnsweringServer(ok) as inside:
        secret_page = inside.base_url + "/secret-page"

        def to_inside(_request: Request) -> Response:
            return Response(status=302, headers={"Location": secret_page})

        with AnsweringServer(to_inside) as outside:
            # http_call: one request, no hop; the message does not say where it pointed.
            with pytest.raises(ProviderError) as caught:
                http_call("GET", outside.base_url, service="the endpoint")
            assert caught.value.code == "redirect" and "HTTP 302 Found" in str(caught.value)
            assert "127.0.0.1" not in str(caught.value)  # nor where it pointed
            # A requests session (Authlib's) follows, and each hop passes the policy.
            session = outbound.guard_session(requests.Session())
            with outbound.using(Policy.parse(f"127.0.0.1:{outside.server_port}")):
                with pytest.raises(OutboundRefused):
                    session.get(outside.base_url, timeout=10)
            assert len(outside.received) == 2 and inside.received == []
            assert session.get(outside.base_url, timeout=10).text == "fine"  # loopback allowed
            assert [r.path for r in inside.received] == ["/secret-page"]


class _NotHttp(socketserver.BaseRequestHandler):
    """Answers like Redis does to an HTTP request."""

    def handle(self) -> None:
        self.request.recv(65536)
        self.request.sendall(b"-ERR unknown command 'POST', with args beginning with: "
                             b"'/hook' 'redis_version:6.2.6'\r\n")


def test_a_message_repeats_nothing_of_the_reply():
    with socketserver.ThreadingTCPServer(("127.0.0.1", 0), _NotHttp) as redis_like:
        threading.Thread(target=redis_like.serve_forever, daemon=True).start()
        try:
            with pytest.raises(ProviderError) as caught:
                webhook.check("open", {"url": f"http://127.0.0.1:{redis_like.server_address[1]}/"})
        finally:
            redis_like.shutdown()
    message = str(caught.value)
    assert caught.value.code == "unreachable" and "not valid HTTP" in message
    assert "ERR" not in message and "redis" not in message

    def leaky(request: Request) -> Response:
        status = 401 if request.path == "/auth" else 500
        if request.path == "/auth":
            return problem(401, "Token tok-123 unknown; users: ada, bob")
        return Response("Traceback: password=hunter2 in /srv/app.py", status=f"{status} Leaky "
                        "reason phrase with hunter2")

    with AnsweringServer(leaky) as server:
        for path, said in (("/", "HTTP 500 Internal Server Error"),
                           ("/auth", "HTTP 401 Unauthorized")):
            with pytest.raises(ProviderError) as caught:
                webhook.check("open", {"url": server.base_url + path})
            message = str(caught.value)
            assert said in message
            for word in ("hunter2", "Leaky", "Traceback", "tok-123", "ada"):
                assert word not in message, message


# --- every outbound path passes the same policy -------------------------------------------

def test_test_connection_refuses_the_portals_own_addresses(client, auth):
    user = auth.login("operator")
    with WebhookReceiver(token=canary("tok-probe-redis-0451")) as hook:
        authorization = webhook_authorization(user, hook.url, "tok-probe-redis-0451")
        with outbound.using(NOTHING):
            page = client.post(f"/vault/{authorization.id}/test", headers=HX,
                               data=form(client, auth)).get_data(as_text=True)
        assert hook.received == []
    assert "does not connect to 127.0.0.1" in page and "PORTAL_OUTBOUND_ALLOW" in page
    assert db.session.get(Authorization, authorization.id).health != "healthy"


def test_the_oauth_token_exchange_and_refresh_pass_the_policy(client, auth, oauth):  # noqa: F811
    server, _ = oauth
    auth.login("operator")
    back = consent(start(client, auth))
    with outbound.using(NOTHING):
        page = client.get(back).get_data(as_text=True)
    assert "does not connect to" in page and "PORTAL_OUTBOUND_ALLOW" in page
    assert "Nothing was saved" in page and server.token_requests == []
    assert db.session.scalars(select(Authorization)).all() == []


def test_the_worker_side_token_refresh_passes_the_policy(client, auth, oauth):  # noqa: F811
    server, _ = oauth
    server.access_token_lifetime = 60  # inside the refresh margin: each use renews it
    authorization = signed_in(client, auth, server)
    asked = len(server.token_requests)
    with outbound.using(NOTHING), pytest.raises(OutboundRefused):
        vault.credentials_for(authorization, actor="test")
    assert len(server.token_requests) == asked and server.refresh_count() == 0
    session = OAuth2Session("id", "secret")
    outbound.guard_session(session)
    with outbound.using(NOTHING), pytest.raises(OutboundRefused):
        session.fetch_token(server.token_url, grant_type="client_credentials")
    assert len(server.token_requests) == asked


def test_worker_processes_take_the_policy_from_the_setting(app, make_user, spawn):
    owner = make_user("operator")
    with WebhookReceiver() as hook:
        provider = get_provider("webhook")
        authorization = vault.create(provider, provider.auth_method("open"), label="Own",
                                     description="", credentials={"url": hook.url}, by=owner)
        job = create_job(provider=provider, job_type=provider.job_type("send_stream"),
                         authorization=authorization, name="probe", description="",
                         config={"stream": "signups", "batch_size": 10}, created_by=owner,
                         schedule=None, retry_policy=None)
        write_messages("signups", [OutMessage("m1", utcnow(), {"n": 1})], source="test")
        db.session.commit()
        spawn("worker", PORTAL_OUTBOUND_ALLOW="")
        spawn("dispatcher", PORTAL_OUTBOUND_ALLOW="")
        deadline = time.monotonic() + 60
        error = None
        while error is None and time.monotonic() < deadline:
            time.sleep(0.3)
            db.session.rollback()
            error = db.session.scalars(select(JobEvent).where(
                JobEvent.job_id == job.id, JobEvent.kind.in_(("error", "failed")))).first()
        assert error is not None, "the worker did not run the job"
        assert hook.received == []
    assert error.code == "outbound_refused" and "PORTAL_OUTBOUND_ALLOW" in error.message


def _self_signed(folder: Path, name: str) -> tuple[Path, Path]:
    """A certificate for `name` only (not for its address), and its key."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.now(UTC)
    certificate = (
        x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5)).not_valid_after(now + timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256()))
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


def test_tls_checks_the_name_in_the_url_while_connecting_to_the_checked_address(tmp_path):
    cert, key = _self_signed(tmp_path, "localhost")
    server = make_server("127.0.0.1", 0, Request.application(ok),
                         ssl_context=(str(cert), str(key)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.server_port
    try:
        trusted = ssl.create_default_context(cafile=str(cert))
        with httpx.Client(transport=outbound.transport(verify=trusted), trust_env=False) as web:
            assert web.get(f"https://localhost:{port}/").text == "fine"
            with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
                web.get(f"https://127.0.0.1:{port}/")  # the certificate names localhost only
        session = outbound.guard_session(requests.Session())
        session.verify = str(cert)
        assert session.get(f"https://localhost:{port}/", timeout=10).text == "fine"
        with pytest.raises(requests.exceptions.SSLError):
            session.get(f"https://127.0.0.1:{port}/", timeout=10)
    finally:
        server.shutdown()
