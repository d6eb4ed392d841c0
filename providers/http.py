"""The one place HTTP providers make a request: `http_call` sets timeouts and maps
transport failures and HTTP errors to AuthError / RateLimited / ConfigError / ProviderError,
with messages that never carry a credential."""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urlsplit

import httpx

from providers.base import AuthError, ConfigError, ProviderError, RateLimited

TIMEOUT_SECONDS = 30.0
TIMEOUT = httpx.Timeout(TIMEOUT_SECONDS, connect=10.0)
USER_AGENT = "jobs-portal/0.1"
DEFAULT_RETRY_AFTER = 60.0
DETAIL_LIMIT = 200  # characters of a response body a message may quote
HIDDEN = "[hidden]"




def _sentence(text: str) -> str:
    return text[:1].upper() + text[1:]


def _redact(text: str, secrets: Iterable[str]) -> str:
    for secret in sorted({s for s in secrets if s}, key=len, reverse=True):
        text = text.replace(secret, HIDDEN)
    return text


def _detail(response: httpx.Response, secrets: list[str]) -> str:
    """A short, secret-free line from an error response: its problem title/detail, else text."""
    text = ""
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        keys = ("title", "detail", "message", "error", "error_description")
        parts = [str(body[key]) for key in keys if isinstance(body.get(key), str | int)]
        text = ": ".join(dict.fromkeys(part for part in parts if part))
    if not text:
        text = response.text
        if "html" in response.headers.get("content-type", ""):
            text = re.sub(r"<[^>]*>", " ", text)
    text = _redact(" ".join(text.split()), secrets)
    return text if len(text) <= DETAIL_LIMIT else text[: DETAIL_LIMIT - 1] + "…"


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
        response = httpx.request(
            method, url, headers=headers, timeout=TIMEOUT, follow_redirects=False, **kwargs
        )
    except httpx.TimeoutException:
        raise ProviderError(
            f"{_sentence(service)} did not answer within {TIMEOUT_SECONDS:.0f} seconds; "
            "it will be tried again.",
            code="timeout",
        ) from None
    except (httpx.HTTPError, httpx.InvalidURL) as exc:
        reason = _redact(str(exc), hidden) or type(exc).__name__
        raise ProviderError(
            f"Could not reach {service} ({reason}); it will be tried again. If this goes on, "
            "check the address and that the service is up.",
            code="unreachable",
        ) from None

    status = response.status_code
    if status < 300:
        return response
    detail = _detail(response, hidden)
    said = f": {detail}" if detail else ""
    if status in (401, 403):
        message = f"{_sentence(service)} refused the credentials (HTTP {status}{said})."
        raise AuthError(f"{message} {auth_hint}".strip())
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
        target = urlsplit(response.headers.get("location", "")).hostname or "another address"
        raise ProviderError(
            f"{_sentence(service)} redirected the request (HTTP {status}) to {target}; "
            "enter the final address instead.",
            code="redirect",
        )
    raise ProviderError(f"{_sentence(service)} answered HTTP {status}{said}", code=f"http_{status}")
