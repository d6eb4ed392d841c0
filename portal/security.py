"""Security headers on every response: the Content-Security-Policy, framing, sniffing,
referrer and caching rules, and HSTS over HTTPS. One after_request hook owns them all."""

from __future__ import annotations

from urllib.parse import urlsplit

from flask import Flask, Response, request

from portal import vault
from providers import CATALOG

# Nothing inline and nothing evaluated: scripts and styles come only from our own files
# (htmx runs with allowEval off and its indicator styles in portal.css; Chart.js styles
# its canvas through the CSSOM, which style-src does not govern). Charts' data blocks are
# <script type="application/json">, never executed. form-action is completed per request
# with the OAuth providers' sign-in origins (see form_action_sources).
POLICY = {
    "default-src": "'self'",
    "script-src": "'self'",
    "style-src": "'self'",
    "img-src": "'self' data:",
    "connect-src": "'self'",
    "font-src": "'self'",
    "object-src": "'none'",
    "base-uri": "'self'",
    "frame-ancestors": "'none'",
}

HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",  # frame-ancestors for browsers that predate it
    # Our URLs carry job names, filters and searches: other sites learn only our origin.
    "Referrer-Policy": "same-origin",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=(), payment=(), usb=()",
}

HSTS = "max-age=31536000; includeSubDomains"

# Files that are the same for everyone and may be cached; every other answer may hold
# something of a signed-in person (or a CSRF token bound to a session), so none is stored.
CACHEABLE_ENDPOINTS = frozenset({"static", "jobs.provider_logo"})


def form_action_sources() -> list[str]:
    """'self' and the origins of the OAuth sign-in pages the portal can send a browser to.

    Starting or renewing an OAuth sign-in is a form POST answered by a redirect to the
    provider, and browsers hold that redirect to form-action too. Only providers whose
    OAuth client is configured count, with their overridden authorize URL if set.
    """
    sources = ["'self'"]
    for provider in CATALOG.values():
        for method in provider.auth_methods:
            if method.kind != "oauth2":
                continue
            try:
                url = urlsplit(vault.oauth_settings(provider, method)["authorize_url"])
            except vault.MissingOAuthSettings:
                continue
            if url.scheme in ("http", "https") and url.netloc:
                origin = f"{url.scheme}://{url.netloc}"
                if origin not in sources:
                    sources.append(origin)
    from portal import sso  # single sign-on's "Sign in with SSO" is such a form too

    for origin in sso.sign_in_origins():
        if origin not in sources:
            sources.append(origin)
    return sources


def content_security_policy() -> str:
    """The policy for this app's current settings, as one header value."""
    directives = {**POLICY, "form-action": " ".join(form_action_sources())}
    return "; ".join(f"{name} {value}" for name, value in directives.items())


def headers(*, secure: bool, cacheable: bool) -> dict[str, str]:
    """The security headers of an answer, over HTTPS or not, that may be cached or not."""
    found = {"Content-Security-Policy": content_security_policy(), **HEADERS}
    if secure:
        found["Strict-Transport-Security"] = HSTS
    if not cacheable:
        found["Cache-Control"] = "no-store"
    return found


def add_headers(response: Response) -> Response:
    """Set the security headers on an answer (pages, fragments, errors, files alike)."""
    cacheable = request.endpoint in CACHEABLE_ENDPOINTS
    # Behind a proxy, ProxyFix makes is_secure follow X-Forwarded-Proto.
    response.headers.update(headers(secure=request.is_secure, cacheable=cacheable))
    if not cacheable:
        response.headers.pop("Expires", None)
    return response


def init_app(app: Flask) -> None:
    """Register the headers hook (first, so it runs after every other after_request)."""
    app.after_request_funcs.setdefault(None, []).insert(0, add_headers)
