"""The one place HTTP providers make a request: `http_call` sets timeouts, passes every
request through the outbound policy (providers/outbound.py: no loopback, private or other
non-public address unless PORTAL_OUTBOUND_ALLOW lists it, checked after DNS resolution and
connected to as checked; bounded in DNS time, total time and reply size) and maps transport
failures and HTTP errors to AuthError / RateLimited / ConfigError / ProviderError.

What the other side said is never repeated: a message names its status line as we know
it ("HTTP 502 Bad Gateway"), never its body, reason phrase, headers or redirect target, so
an endpoint cannot use the portal's messages to show what it read (a probe of an internal
service) and a message never carries a credential it echoed."""

from __future__ import annotations

import math
from collections.abc import Iterable
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from http import HTTPStatus
from typing import Any

import httpx

from providers import outbound, redaction
from providers.base import AuthError, ConfigError, ProviderError, RateLimited

TIMEOUT_SECONDS = 30.0
TIMEOUT = httpx.Timeout(TIMEOUT_SECONDS, connect=10.0)
USER_AGENT = "jobs-portal/0.1"
DEFAULT_RETRY_AFTER = 60.0
HIDDEN = "[hidden]"

# What went wrong on the way, in our words: an exception's own text can quote what the
# other side sent (an h11 error shows the bytes of a reply that is not HTTP).
_TRANSPORT_REASONS: tuple[tuple[type[Exception], str], ...] = (
    (httpx.ConnectError, "could not connect"),
    (httpx.RemoteProtocolError, "the answer was not valid HTTP"),
    (httpx.ReadError, "the connection broke while reading the answer"),
    (httpx.WriteError, "the connection broke while sending the request"),
    (httpx.TooManyRedirects, "too many redirects"),
    (httpx.DecodingError, "the answer's encoding could not be read"),
    (httpx.InvalidURL, "the address is not a valid URL"),
    (httpx.UnsupportedProtocol, "the address does not start with http:// or https://"),
)


def _sentence(text: str) -> str:
    return text[:1].upper() + text[1:]


def _redact(text: str, secrets: Iterable[str]) -> str:
    return redaction.redact(text, secrets, mask=HIDDEN)


def status_line(status: int) -> str:
    """"HTTP 502 Bad Gateway": a status with its standard phrase (ours, not the reply's)."""
    try:
        return f"HTTP {status} {HTTPStatus(status).phrase}"
    except ValueError:
        return f"HTTP {status}"


def _reason(exc: Exception) -> str:
    for kind, reason in _TRANSPORT_REASONS:
        if isinstance(exc, kind):
            return reason
    return type(exc).__name__


def retry_after(response: httpx.Response, default: float = DEFAULT_RETRY_AFTER) -> float:
    """Seconds to wait, from a Retry-After header (seconds or an HTTP date)."""
    value = response.headers.get("retry-after", "").strip()
    if not value:
        return default
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return default
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - datetime.now(UTC)).total_seconds()
    return max(0.0, seconds) if math.isfinite(seconds) else default


def http_call(
    method: str,
    url: str,
    *,
    service: str,
    secrets: Iterable[str] = (),
    auth_hint: str = "",
    not_found: str | None = None,
    headers: dict[str, str] | None = None,
    **kwargs: Any,
) -> httpx.Response:
    """Make one request and return its 2xx response, or raise the matching provider error.

    `service` names the other side in messages ("Mailchimp", "the endpoint at x.io");
    `secrets` (and whatever the Authorization header carries) never appear in a message;
    `auth_hint` tells a person what to do after a 401/403; `not_found`, when given, turns
    a 404 into a ConfigError with that message. Other keyword arguments go to httpx.
    """
    headers = {"User-Agent": USER_AGENT, **(headers or {})}
    hidden = [*secrets]
    for name, value in headers.items():
        if name.lower() == "authorization":
            hidden += [value, value.partition(" ")[2]]
    try:
        # Redirects are not followed (a 3xx is an error below), so the one request made is
        # the one the policy checked. Proxies from the environment are not used (trust_env).
        with httpx.Client(transport=outbound.transport(), timeout=TIMEOUT,
                          follow_redirects=False, trust_env=False) as client:
            response = client.request(method, url, headers=headers, **kwargs)
    except httpx.TimeoutException:
        raise ProviderError(
            f"{_sentence(service)} did not answer in time (within {TIMEOUT_SECONDS:.0f} "
            f"seconds, or all of it within {outbound.TOTAL_SECONDS:.0f}); it will be tried "
            "again.",
            code="timeout",
        ) from None
    except outbound.ResponseTooLarge:
        raise ProviderError(
            f"{_sentence(service)} answered with more than {outbound.MAX_RESPONSE_BYTES:,} "
            "bytes; the portal stopped reading it.",
            code="response_too_large",
        ) from None
    except (httpx.HTTPError, httpx.InvalidURL) as exc:
        reason = _reason(exc)
        raise ProviderError(
            f"Could not reach {service} ({reason}); it will be tried again. If this goes on, "
            "check the address and that the service is up.",
            code="unreachable",
        ) from None

    status = response.status_code
    if status < 300:
        return response
    said = status_line(status)
    if status in (401, 403):
        message = f"{_sentence(service)} refused the credentials ({said})."
        raise AuthError(_redact(f"{message} {auth_hint}".strip(), hidden))
    if status == 429:
        wait = retry_after(response)
        raise RateLimited(
            f"{_sentence(service)} asks us to slow down (HTTP 429); trying again in "
            f"{wait:.0f} seconds.",
            retry_after=wait,
        )
    if status == 404 and not_found:
        raise ConfigError(not_found, code="not_found")
    if status < 400:
        raise ProviderError(
            f"{_sentence(service)} redirected the request ({said}); the portal does not "
            "follow redirects: enter the address it finally answers at instead.",
            code="redirect",
        )
    raise ProviderError(_redact(f"{_sentence(service)} answered {said}.", hidden),
                        code=f"http_{status}")
