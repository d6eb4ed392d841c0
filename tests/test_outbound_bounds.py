"""Bounds on outbound requests: a slow resolver, a huge or compressed-huge reply and a reply
that drips slowly cannot tie up a worker or fill its memory. Every server here is on
127.0.0.1 (a raw socket server, so it can answer in ways no framework would)."""

from __future__ import annotations

import gzip
import socket
import socketserver
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest
import requests

from providers import outbound
from providers.base import ProviderError
from providers.http import http_call

MB = 1024 * 1024


class _Handler(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        self.request.settimeout(10)
        try:
            self.request.recv(65536)  # the request (small; its body is not needed)
            self.server.answer(self.request)  # type: ignore[attr-defined]
        except OSError:
            pass  # the client went away: what these tests want


@contextmanager
def raw_server(answer: Callable[[socket.socket], None]) -> Iterator[str]:
    """A server on 127.0.0.1 that reads a request, then lets `answer` write to the socket."""
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _Handler)
    server.daemon_threads = True
    server.answer = answer  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


def _head(sock: socket.socket, *headers: str) -> None:
    sock.sendall(("HTTP/1.1 200 OK\r\n" + "".join(f"{h}\r\n" for h in headers)
                  + "\r\n").encode())


def _big_body(declared: bool) -> Callable[[socket.socket], None]:
    size = outbound.MAX_RESPONSE_BYTES * 2

    def answer(sock: socket.socket) -> None:
        if declared:
            _head(sock, f"Content-Length: {size}")
        else:  # no length: the body ends when the connection does
            _head(sock, "Connection: close")
        block = b"x" * MB
        for _ in range(size // MB):
            sock.sendall(block)
    return answer


@pytest.mark.parametrize("declared", [True, False], ids=["content-length", "until-close"])
def test_a_reply_larger_than_the_limit_is_not_read(declared):
    with raw_server(_big_body(declared)) as url:
        with pytest.raises(ProviderError) as raised:
            http_call("GET", url, service="the endpoint")
    assert raised.value.code == "response_too_large"
    assert f"{outbound.MAX_RESPONSE_BYTES:,}" in str(raised.value)


def test_a_compressed_reply_is_bounded_by_its_decoded_size():
    bomb = gzip.compress(b"\0" * (outbound.MAX_RESPONSE_BYTES * 3))
    assert len(bomb) < MB  # small on the wire, three times the limit once decoded

    def answer(sock: socket.socket) -> None:
        _head(sock, "Content-Encoding: gzip", f"Content-Length: {len(bomb)}")
        sock.sendall(bomb)

    with raw_server(answer) as url:
        with pytest.raises(ProviderError) as raised:
            http_call("GET", url, service="the endpoint")
    assert raised.value.code == "response_too_large"


def test_a_small_compressed_reply_still_reads():
    document = b'{"ok": true, "pad": "' + b"a" * 100_000 + b'"}'
    packed = gzip.compress(document)

    def answer(sock: socket.socket) -> None:
        _head(sock, "Content-Type: application/json", "Content-Encoding: gzip",
              f"Content-Length: {len(packed)}")
        sock.sendall(packed)

    with raw_server(answer) as url:
        response = http_call("GET", url, service="the endpoint")
    assert response.content == document
    assert response.json()["ok"] is True


def _drip(in_headers: bool) -> Callable[[socket.socket], None]:
    def answer(sock: socket.socket) -> None:
        if in_headers:  # the status line, then a header a byte at a time
            sock.sendall(b"HTTP/1.1 200 OK\r\nX-Slow: ")
            drip, end = b"a" * 30, b"\r\nContent-Length: 2\r\n\r\nok"
        else:
            _head(sock, "Content-Length: 30")
            drip, end = b"a" * 30, b""
        for byte in drip:  # 30 bytes, one every 0.2 s: each read is quick, the whole is not
            sock.sendall(bytes([byte]))
            time.sleep(0.2)
        sock.sendall(end)
    return answer


@pytest.mark.parametrize("in_headers", [False, True], ids=["body", "headers"])
def test_a_reply_that_drips_ends_at_the_total_time(monkeypatch, in_headers):
    monkeypatch.setattr(outbound, "TOTAL_SECONDS", 1.5)
    with raw_server(_drip(in_headers)) as url:
        started = time.monotonic()
        with pytest.raises(ProviderError) as raised:
            http_call("GET", url, service="the endpoint")
        took = time.monotonic() - started
    assert raised.value.code == "timeout"
    assert took < 3.5  # the whole drip takes 6 s


def test_a_slow_resolver_is_given_up_on(monkeypatch):
    # The system resolver, made slow (the stand-in is the C library's, not the portal's).
    real = socket.getaddrinfo

    def slow(*args, **kwargs):
        time.sleep(3)
        return real("127.0.0.1", *args[1:], **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", slow)
    monkeypatch.setattr(outbound, "DNS_SECONDS", 0.5)
    started = time.monotonic()
    with pytest.raises(OSError, match="within 0.5 seconds"):
        outbound.resolve("slow.example", 80, policy=outbound.Policy.parse("127.0.0.0/8"))
    assert time.monotonic() - started < 2


def test_a_resolver_failure_is_still_an_oserror():
    with pytest.raises(OSError):
        outbound.resolve("no-such-host.invalid", 80)


def test_the_requests_session_reads_no_more_than_the_limit():
    # Authlib's token exchange and refresh use a guarded requests session.
    for declared in (True, False):
        with raw_server(_big_body(declared)) as url:
            session = outbound.guard_session(requests.Session())
            with pytest.raises(outbound.ResponseTooLarge):
                session.get(url, timeout=10)
            session.close()


def test_the_requests_session_still_reads_a_normal_reply():
    def answer(sock: socket.socket) -> None:
        _head(sock, "Content-Type: application/json", "Content-Length: 11")
        sock.sendall(b'{"a": "ok"}')

    with raw_server(answer) as url:
        with outbound.guard_session(requests.Session()) as session:
            assert session.get(url, timeout=10).json() == {"a": "ok"}


@pytest.mark.parametrize("written", ["http://user:pass@127.0.0.1:{port}/",
                                     "http://evil.example@127.0.0.1:{port}/"])
def test_credentials_written_into_an_address_are_not_sent(written):
    asked: list[bytes] = []

    def answer(sock: socket.socket) -> None:
        asked.append(b"request")
        _head(sock, "Content-Length: 2")
        sock.sendall(b"ok")

    with raw_server(answer) as url:
        port = url.rsplit(":", 1)[1].strip("/")
        with pytest.raises(ProviderError) as raised:
            http_call("GET", written.format(port=port), service="the endpoint")
        assert raised.value.code == "userinfo_in_url"
        with outbound.guard_session(requests.Session()) as session:
            with pytest.raises(ProviderError, match="user name or password"):
                session.get(written.format(port=port), timeout=10)
        with pytest.raises(ProviderError, match="user name or password"):
            outbound.check_url(written.format(port=port))
    assert asked == []


def test_the_webhook_form_refuses_credentials_in_its_url():
    from portal.schemaform import validate
    from providers.webhook import AUTH_METHODS

    schema = AUTH_METHODS[0].schema
    good = {"url": "https://hooks.example.com/in?x=a@b", "token": "t0ken-value"}
    assert validate(schema, good) == {}
    errors = validate(schema, {**good, "url": "https://me:pw@hooks.example.com/in"})
    assert "no user name or password" in errors["url"]
