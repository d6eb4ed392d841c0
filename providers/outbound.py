"""The outbound request policy: which addresses the portal's own requests may reach.

The portal makes requests to addresses people type (a webhook URL) or settings name (an
OAuth token endpoint, a provider's API). Without a policy, whoever can type a URL can make
the server reach what only the server can reach: its own Redis and pages, the cloud's
metadata service, the office network (server-side request forgery). So every outbound
connection goes through here: the host is resolved once, EVERY address it resolves to is
checked, and the connection is made to the address that was checked, never resolved
again (a name cannot answer a public address to the check and a private one to the
connection: DNS rebinding).

Refused unless allowed: loopback, link-local (169.254.169.254, the cloud metadata
service, included), private, shared (carrier-grade NAT), unspecified, multicast, reserved
and documentation addresses, and the IPv6 forms that carry such an IPv4 address
(IPv4-mapped, IPv4-compatible, NAT64, 6to4).

PORTAL_OUTBOUND_ALLOW lists what is allowed all the same, separated by commas:

    10.0.0.0/8, 192.168.1.20, fd00::/8, ::1     an address or a network
    hooks.internal, *.corp.example              a host name (with *.: the names below it)
    10.0.0.0/8:443, hooks.internal:8443,        any of those on one port only
    [fd00::1]:8443, [fd00::/8]:443              (IPv6 with a port: in brackets)

A listed name may resolve to any address. The list replaces the default, which
portal/config.py sets: loopback only (127.0.0.0/8, ::1) in development, nothing in
production. create_app passes the setting to `configure` in every process (web and
workers).

The HTTP clients: `transport()` for httpx (providers/http.py) and `guard_session()` for a
requests session (Authlib's OAuth token exchange and refresh). Proxies named in the
environment (HTTP_PROXY...) are not used: a proxy would resolve the name again.

Bounds, so that no endpoint can tie up a worker or fill its memory: a name is resolved
within DNS_SECONDS (the system resolver has no timeout of its own); a request and its
whole reply take at most TOTAL_SECONDS however slowly the bytes drip (the per-read timeout
alone restarts with every byte); a reply body is read up to MAX_RESPONSE_BYTES, and past
that the request fails (ResponseTooLarge) instead of reading on.
"""

from __future__ import annotations

import ipaddress
import re
import socket
import threading
import time
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpcore
import httpx
import requests
from requests.adapters import HTTPAdapter
from urllib3.exceptions import ConnectTimeoutError

from providers.base import ConfigError, ProviderError

SETTING = "PORTAL_OUTBOUND_ALLOW"
LOOPBACK = "127.0.0.0/8,::1"
DNS_SECONDS = 5.0  # for resolving one name
TOTAL_SECONDS = 60.0  # for one request and its whole reply, connecting included
MAX_RESPONSE_BYTES = 10 * 1024 * 1024  # of one reply's body, as received

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

# Networks that are never public, listed as well as asked of `ipaddress` (whose is_global
# differs between Python versions and says True of multicast).
_NOT_PUBLIC = tuple(ipaddress.ip_network(net) for net in (
    "0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16",
    "172.16.0.0/12", "192.0.0.0/24", "192.0.2.0/24", "192.88.99.0/24", "192.168.0.0/16",
    "198.18.0.0/15", "198.51.100.0/24", "203.0.113.0/24", "224.0.0.0/4", "240.0.0.0/4",
    "::/128", "::1/128", "64:ff9b:1::/48", "100::/64", "2001::/23", "2001:db8::/32",
    "fc00::/7", "fe80::/10", "fec0::/10", "ff00::/8",
))
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_COMPATIBLE = ipaddress.ip_network("::/96")
_SHARED = ipaddress.ip_network("100.64.0.0/10")
_METADATA = ipaddress.ip_address("169.254.169.254")
_HOST_NAME = re.compile(r"(\*\.)?([a-z0-9_]([a-z0-9_-]*[a-z0-9_])?\.)*"
                        r"[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?")
_INET_ATON = re.compile(r"[0-9a-fx.]+")


class OutboundRefused(ConfigError):
    """The policy does not let the portal connect to this address; retrying cannot help."""

    code = "outbound_refused"


class ResponseTooLarge(ProviderError):
    """A reply body went past MAX_RESPONSE_BYTES; the rest of it was not read."""

    code = "response_too_large"


class DeadlinePassed(OSError):
    """A request and its reply took longer than TOTAL_SECONDS (raised by the readers here;
    the HTTP clients see it as a timeout)."""


# --- addresses ------------------------------------------------------------------------

def parse_address(text: str) -> Address | None:
    """The IP address a host string stands for, or None for a name. Normalizes the forms
    the C resolver also reads as IPv4 ("2130706433", "0177.0.0.1", "0x7f.1", "127.1") and
    IPv4-mapped IPv6 (::ffff:127.0.0.1 is 127.0.0.1)."""
    host = text.strip().lower().removeprefix("[").removesuffix("]")
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        address = None
        if _INET_ATON.fullmatch(host) and not host.endswith("."):
            try:
                address = ipaddress.IPv4Address(socket.inet_aton(host))
            except OSError:
                return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        return address.ipv4_mapped
    return address


def _embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address carries (NAT64, IPv4-compatible, 6to4)."""
    if address in _NAT64 or (address in _COMPATIBLE and int(address) > 1):
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return address.sixtofour


def kind_of(address: Address) -> str | None:
    """What kind of non-public address this is ("loopback", "private"...), or None when
    it is public."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped:
            return kind_of(address.ipv4_mapped)
        carried = _embedded_ipv4(address)
        if carried is not None:
            inner = kind_of(carried)
            if inner:
                return f"{inner} (in an IPv6 address)"
            if address not in _COMPATIBLE:  # NAT64 and 6to4 of a public address
                return None
    public = (address.is_global and not any(address in net for net in _NOT_PUBLIC)
              and not (address.is_multicast or address.is_reserved or address.is_private))
    if public:
        return None
    if address.is_loopback:
        return "loopback"
    if address == _METADATA:
        return "link-local (the cloud metadata service)"
    if address.is_link_local:
        return "link-local"
    if address.is_unspecified:
        return "unspecified"
    if address.is_multicast:
        return "multicast"
    if address in _SHARED:
        return "shared (carrier-grade NAT)"
    if address.is_private and not address.is_reserved:
        return "private"
    return "reserved"


# --- the policy ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Allowance:
    """One entry of PORTAL_OUTBOUND_ALLOW: a network or a host name, on one port or all."""

    network: Network | None = None
    host: str | None = None  # lower case; "*.x" stands for every name below x
    port: int | None = None

    def admits_name(self, host: str, port: int) -> bool:
        if self.host is None or self.port not in (None, port):
            return False
        if self.host.startswith("*."):
            return host.endswith(self.host[1:])
        return host == self.host

    def admits_address(self, address: Address, port: int) -> bool:
        return (self.network is not None and self.port in (None, port)
                and address.version == self.network.version and address in self.network)


def _allowance(entry: str) -> Allowance:
    target, port = entry, None
    bracketed = re.fullmatch(r"\[([^\]]+)\](?::([^:]*))?", entry)
    if bracketed:
        target, port = bracketed[1], bracketed[2]
    elif entry.count(":") == 1:
        target, _, port = entry.partition(":")
    number = None
    if port is not None:
        if not (port.isascii() and port.isdigit() and 0 < int(port) < 65536):
            raise ValueError(f"{SETTING}: {entry!r} has no valid port after the colon "
                             "(1 to 65535).")
        number = int(port)
    try:
        return Allowance(network=ipaddress.ip_network(target), port=number)
    except ValueError as exc:
        if "/" in target or parse_address(target) is not None or ":" in target:
            raise ValueError(f"{SETTING}: {entry!r} is not a valid address or network "
                             f"({exc}).") from None
    host = target.lower().rstrip(".")
    if not _HOST_NAME.fullmatch(host):
        raise ValueError(f"{SETTING}: {entry!r} is neither an address, a network "
                         "(10.0.0.0/8) nor a host name (hooks.internal).")
    return Allowance(host=host, port=number)


@dataclass(frozen=True)
class Policy:
    """What outbound connections may reach besides public addresses."""

    allowances: tuple[Allowance, ...] = ()

    @classmethod
    def parse(cls, spec: str) -> Policy:
        """Read PORTAL_OUTBOUND_ALLOW; ValueError says what is wrong with it."""
        entries = [entry.strip() for entry in (spec or "").split(",")]
        return cls(tuple(_allowance(entry) for entry in entries if entry))

    def admits_name(self, host: str, port: int) -> bool:
        return any(allowance.admits_name(host, port) for allowance in self.allowances)

    def admits_address(self, address: Address, port: int) -> bool:
        return any(allowance.admits_address(address, port) for allowance in self.allowances)


_policy = Policy.parse(LOOPBACK)


def configure(spec: str) -> Policy:
    """Set the policy of this process from PORTAL_OUTBOUND_ALLOW (create_app calls it);
    ValueError when the setting cannot be read."""
    global _policy
    _policy = Policy.parse(spec)
    return _policy


def current() -> Policy:
    return _policy


@contextmanager
def using(policy: Policy) -> Iterator[Policy]:
    """Apply `policy` inside the block, then the one before (for tests and tools)."""
    global _policy
    before, _policy = _policy, policy
    try:
        yield policy
    finally:
        _policy = before


def _refuse(host: str, port: int, kind: str) -> OutboundRefused:
    shown = f"[{host}]" if ":" in host else host
    return OutboundRefused(
        f"The portal does not connect to {shown}:{port}: it is a {kind} address, which "
        f"could expose the portal's own network. If this endpoint is meant to be reached, "
        f"an administrator can allow it with the setting {SETTING} (for example "
        f"\"{shown}:{port}\" or its network).")


def check_address(address: Address | str, port: int, *, host: str | None = None,
                  policy: Policy | None = None) -> Address:
    """The address, normalized, when the policy lets the portal connect to it on `port`;
    else OutboundRefused. `host` is the name it was resolved from, if any (named in the
    message, and a listed name allows any of its addresses)."""
    policy = policy or _policy
    parsed = parse_address(address) if isinstance(address, str) else address
    if parsed is None:
        raise ValueError(f"not an IP address: {address!r}")
    if isinstance(parsed, ipaddress.IPv6Address) and parsed.ipv4_mapped:
        parsed = parsed.ipv4_mapped
    name = (host or "").lower().rstrip(".")
    if name and policy.admits_name(name, port):
        return parsed
    kind = kind_of(parsed)
    if kind is None or policy.admits_address(parsed, port):
        return parsed
    raise _refuse(name or str(parsed), port, kind)


def resolve(host: str, port: int, *, policy: Policy | None = None) -> list[Address]:
    """Resolve `host` once and check every address it has; returns them, to connect to in
    this order. OutboundRefused when any of them is refused (a name that answers a public
    and a private address is trusted with neither); OSError when it cannot be resolved."""
    if not host:
        raise OSError("no host to resolve")
    literal = parse_address(host)
    if literal is not None:
        return [check_address(literal, port, host=host, policy=policy)]
    # "Example.com." is the name example.com (and /etc/hosts knows no trailing dots).
    found = _getaddrinfo(host.lower().rstrip("."), port, DNS_SECONDS)
    addresses = list(dict.fromkeys(ipaddress.ip_address(info[4][0]) for info in found))
    if not addresses:
        raise OSError(f"{host} has no address")
    checked = [check_address(address, port, host=host, policy=policy) for address in addresses]
    return list(dict.fromkeys(checked))


def _getaddrinfo(host: str, port: int, seconds: float) -> list[tuple[Any, ...]]:
    """socket.getaddrinfo within `seconds`: the C resolver cannot be interrupted, so it runs
    in a thread of its own that is left to finish (or not) when the time is up."""
    outcome: dict[str, Any] = {}

    def lookup() -> None:
        try:
            outcome["found"] = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                  proto=socket.IPPROTO_TCP)
        except Exception as exc:  # handed to the caller below
            outcome["error"] = exc

    thread = threading.Thread(target=lookup, name=f"resolve {host}", daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        raise OSError(f"{host} could not be resolved within {seconds:g} seconds")
    if "error" in outcome:
        raise outcome["error"]
    return outcome["found"]


USERINFO_REFUSED = (
    "The address holds a user name or password before its host (user:password@host); the "
    "portal does not send credentials written into an address, where they would show and "
    "be logged as part of it. Remove them from the address and use an authorization method "
    "that keeps them secret (e.g. username and password).")


def refuse_userinfo(username: object, password: object) -> None:
    """ConfigError when a URL carries credentials before its host."""
    if username or password:
        raise ConfigError(USERINFO_REFUSED, code="userinfo_in_url")


def check_url(url: str, *, policy: Policy | None = None) -> list[Address]:
    """The checked addresses to connect to for an http(s) URL (see `resolve`)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError("Only http:// and https:// addresses with a host can be reached.",
                          code="bad_url")
    refuse_userinfo(parts.username, parts.password)
    return resolve(parts.hostname, parts.port or _default_port(parts.scheme), policy=policy)


def _default_port(scheme: str) -> int:
    return 443 if scheme == "https" else 80


# --- httpx ---------------------------------------------------------------------------------

def _remaining(deadline: float | None, timeout: float | None) -> float | None:
    """The timeout for one network operation: the operation's own, cut to what is left
    before the deadline (DeadlinePassed when nothing is)."""
    if deadline is None:
        return timeout
    left = deadline - time.monotonic()
    if left <= 0:
        raise DeadlinePassed(f"the request took more than {TOTAL_SECONDS:g} seconds")
    return left if timeout is None else min(timeout, left)


class _DeadlineStream(httpcore.NetworkStream):
    """A connection whose every read and write ends by its backend's deadline."""

    def __init__(self, inner: httpcore.NetworkStream, backend: _DeadlineBackend):
        self._inner, self._backend = inner, backend

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        try:
            return self._inner.read(max_bytes, self._backend.timeout(timeout))
        except DeadlinePassed as exc:
            raise httpcore.ReadTimeout(str(exc)) from None

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        try:
            self._inner.write(buffer, self._backend.timeout(timeout))
        except DeadlinePassed as exc:
            raise httpcore.WriteTimeout(str(exc)) from None

    def close(self) -> None:
        self._inner.close()

    def start_tls(self, ssl_context, server_hostname=None, timeout=None):
        try:
            inner = self._inner.start_tls(ssl_context, server_hostname,
                                          self._backend.timeout(timeout))
        except DeadlinePassed as exc:
            raise httpcore.ConnectTimeout(str(exc)) from None
        return _DeadlineStream(inner, self._backend)

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)


class _DeadlineBackend(httpcore.NetworkBackend):
    """httpcore's network backend, with a deadline its transport sets for each request."""

    def __init__(self, inner: httpcore.NetworkBackend):
        self._inner = inner
        self.deadline: float | None = None

    def timeout(self, timeout: float | None) -> float | None:
        return _remaining(self.deadline, timeout)

    def connect_tcp(self, host, port, timeout=None, local_address=None, socket_options=None):
        try:
            stream = self._inner.connect_tcp(host, port, self.timeout(timeout), local_address,
                                             socket_options)
        except DeadlinePassed as exc:
            raise httpcore.ConnectTimeout(str(exc)) from None
        return _DeadlineStream(stream, self)

    def connect_unix_socket(self, path, timeout=None, socket_options=None):
        raise httpcore.ConnectError("the portal does not connect to unix sockets")

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)


class _BoundedBody(httpx.SyncByteStream):
    """A reply body read up to `limit` bytes, decoded here (gzip, deflate) so that the
    limit holds for what is kept in memory, not only for what came over the wire."""

    def __init__(self, inner: httpx.SyncByteStream, limit: int, encoding: str):
        self._inner, self._limit = inner, limit
        self._decoder = (zlib.decompressobj(16 + zlib.MAX_WBITS) if encoding in GZIP
                         else zlib.decompressobj() if encoding == "deflate" else None)

    def _bounded(self, chunk: bytes, total: int) -> bytes:
        if self._decoder is not None:
            try:
                chunk = self._decoder.decompress(chunk, self._limit - total + 1)
            except zlib.error:
                raise httpx.DecodingError("the answer's compression is not valid") from None
        if total + len(chunk) > self._limit:
            raise ResponseTooLarge(
                f"The answer was larger than {self._limit:,} bytes; the rest was not read.")
        return chunk

    def __iter__(self) -> Iterator[bytes]:
        total = 0
        for chunk in self._inner:
            # A decoder stops one byte past the limit, so what it holds back is never read.
            chunk = self._bounded(chunk, total)
            total += len(chunk)
            yield chunk
        if self._decoder is not None:
            rest = self._decoder.flush()
            if total + len(rest) > self._limit:
                raise ResponseTooLarge(
                    f"The answer was larger than {self._limit:,} bytes; the rest was not read.")
            yield rest

    def close(self) -> None:
        self._inner.close()


GZIP = ("gzip", "x-gzip")


def _bound(response: httpx.Response, limit: int) -> httpx.Response:
    """The response, its body read through _BoundedBody (the encodings the portal asks
    for decoded there; any other refused)."""
    encoding = response.headers.get("content-encoding", "identity").strip().lower()
    if encoding not in (*GZIP, "deflate", "identity", ""):
        response.close()
        raise httpx.DecodingError(f"the answer came in an encoding not asked for ({encoding!r})")
    declared = response.headers.get("content-length", "")
    if declared.isascii() and declared.isdigit() and int(declared) > limit:
        response.close()
        raise ResponseTooLarge(
            f"The answer was larger than {limit:,} bytes ({int(declared):,}); it was not read.")
    headers = [(name, value) for name, value in response.headers.raw
               if name.lower() != b"content-encoding"
               and (encoding in ("identity", "") or name.lower() != b"content-length")]
    return httpx.Response(response.status_code, headers=headers,
                          stream=_BoundedBody(response.stream, limit, encoding),
                          extensions=response.extensions)


class GuardedTransport(httpx.BaseTransport):
    """An httpx transport that resolves and checks each request's host, then connects to
    the checked address; the Host header and the TLS server name (SNI and certificate
    check) stay the name in the URL. Each request and its reply end within
    `total_seconds`, and the reply body is read up to `max_bytes` (see the module's
    docstring); a transport serves one request at a time (one deadline)."""

    def __init__(self, *, total_seconds: float | None = None, max_bytes: int | None = None,
                 **transport_options: Any):
        self._inner = httpx.HTTPTransport(**transport_options)
        # httpx offers no option for the network backend; its pool keeps it here.
        self._backend = _DeadlineBackend(self._inner._pool._network_backend)
        self._inner._pool._network_backend = self._backend
        self.total_seconds = TOTAL_SECONDS if total_seconds is None else total_seconds
        self.max_bytes = MAX_RESPONSE_BYTES if max_bytes is None else max_bytes

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self._backend.deadline = time.monotonic() + self.total_seconds
        # Only the encodings _BoundedBody can decode within its limit.
        request.headers["Accept-Encoding"] = "gzip, deflate"
        return _bound(self._send(request), self.max_bytes)

    def _send(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        refuse_userinfo(url.username, url.password)
        host = url.raw_host.decode("ascii")
        try:
            addresses = resolve(host, url.port or _default_port(url.scheme))
        except OSError:
            raise httpx.ConnectError(f"could not find the address of {host}",
                                     request=request) from None
        if url.scheme == "https" and parse_address(host) is None:
            request.extensions = {**request.extensions, "sni_hostname": host}
        try:
            for number, address in enumerate(addresses, start=1):
                request.url = url.copy_with(host=str(address))
                try:
                    return self._inner.handle_request(request)
                except (httpx.ConnectError, httpx.ConnectTimeout):
                    # Nothing was sent: the next checked address may answer (as a
                    # resolving client tries an IPv6 address, then an IPv4 one).
                    if number == len(addresses):
                        raise
            raise AssertionError("unreachable")  # resolve() returns at least one address
        finally:
            request.url = url

    def close(self) -> None:
        self._inner.close()


def transport(**transport_options: Any) -> GuardedTransport:
    """The transport every httpx client of the portal uses (options go to
    httpx.HTTPTransport, e.g. verify=)."""
    return GuardedTransport(**transport_options)


# --- requests (Authlib's OAuth sessions) ---------------------------------------------------

class GuardedAdapter(HTTPAdapter):
    """A requests adapter that does what GuardedTransport does, for each request a session
    sends (each redirect hop included)."""

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:
        deadline = time.monotonic() + TOTAL_SECONDS
        streamed = kwargs.pop("stream", False)
        response = self._send(request, stream=True, **kwargs)
        if streamed:
            return response
        # Read here, within the deadline and the size limit (requests would read it all).
        body, total = [], 0
        try:
            declared = response.headers.get("content-length", "")
            if declared.isascii() and declared.isdigit() and int(declared) > MAX_RESPONSE_BYTES:
                raise ResponseTooLarge(f"The answer was larger than {MAX_RESPONSE_BYTES:,} "
                                       f"bytes ({int(declared):,}); it was not read.")
            for chunk in response.iter_content(64 * 1024):
                total += len(chunk)
                if total > MAX_RESPONSE_BYTES:
                    raise ResponseTooLarge(f"The answer was larger than {MAX_RESPONSE_BYTES:,} "
                                           "bytes; the rest was not read.")
                if time.monotonic() > deadline:
                    raise requests.Timeout(f"the request took more than {TOTAL_SECONDS:g} "
                                           "seconds", request=request)
                body.append(chunk)
        finally:
            response.close()
        response._content = b"".join(body)  # what requests itself sets once it has read
        return response

    def _send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:
        parts = urlsplit(request.url or "")
        refuse_userinfo(parts.username, parts.password)
        host = parts.hostname or ""
        port = parts.port or _default_port(parts.scheme)
        try:
            addresses = resolve(host, port)
        except OSError:
            raise requests.ConnectionError(f"could not find the address of {host}",
                                           request=request) from None
        name = f"[{host}]" if ":" in host else host
        for number, address in enumerate(addresses, start=1):
            shown = f"[{address}]" if address.version == 6 else str(address)
            direct = request.copy()
            direct.url = urlunsplit(parts._replace(
                netloc=f"{shown}:{parts.port}" if parts.port else shown))
            direct.headers["Host"] = f"{name}:{parts.port}" if parts.port else name
            direct._portal_server_name = host  # for the TLS server name, below
            try:
                response = super().send(direct, **kwargs)
            except requests.ConnectionError as exc:
                if number == len(addresses) or not _not_connected(exc):
                    raise
                continue
            response.url, response.request = request.url, request
            return response
        raise AssertionError("unreachable")  # resolve() returns at least one address

    def build_connection_pool_key_attributes(self, request, verify, cert=None):
        host_params, pool_kwargs = super().build_connection_pool_key_attributes(
            request, verify, cert)
        name = getattr(request, "_portal_server_name", None)
        if host_params.get("scheme") == "https" and name and parse_address(name) is None:
            pool_kwargs["server_hostname"] = name
        return host_params, pool_kwargs


def _not_connected(exc: requests.ConnectionError) -> bool:
    """Whether the connection failed before anything was sent."""
    reason = getattr(exc.args[0] if exc.args else None, "reason", None)
    return isinstance(reason, ConnectTimeoutError)  # NewConnectionError is one too


def guard_session(session: requests.Session) -> requests.Session:
    """Make a requests session (Authlib's OAuth2Session) pass the policy."""
    session.trust_env = False
    for prefix in ("http://", "https://"):
        session.mount(prefix, GuardedAdapter())
    return session
